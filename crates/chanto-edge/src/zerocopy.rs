//! Sending file bodies with `sendfile(2)` over plain-TCP HTTP/1 connections:
//! the bytes go from the page cache to the socket without passing through
//! the edge's memory, as nginx's `sendfile on` does.
//!
//! hyper owns the connection and writes whatever body frames it is given,
//! so the body of such a response is made of *placeholders*: slices of one
//! static, never-written buffer ([`PLACEHOLDER`]). Each placeholder frame,
//! as the body hands it to hyper, queues a [`Job`] (file, offset, length) on
//! its connection. The connection's stream ([`ZerocopyStream`]) writes
//! ordinary bytes (the head) as usual and, when the next bytes hyper wants
//! written are a placeholder, sends the file range of the job at the front
//! of the queue instead, and reports the placeholder's bytes as written.
//!
//! This relies on hyper writing body frames as they are (its vectored
//! "queue" write strategy, which [`crate::server`] sets) and in the order it
//! polled them, one response after another. Each write checks that the
//! placeholder bytes it is asked for are exactly those of the front job; if
//! not, the connection fails rather than send bytes that are not the file's.
//! Only HTTP/1 responses use it (h2 copies frames into its own buffer).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The largest placeholder frame.
const FRAME: usize = 1 << 20;

/// Bytes no one writes or reads: body frames point into it, and only their
/// addresses and lengths are ever used. All zeros, so it costs no memory
/// (it lives in the zero-initialised segment and is never touched).
static PLACEHOLDER: [u8; FRAME] = [0; FRAME];

fn placeholder_offset(ptr: *const u8) -> Option<usize> {
    let (start, p) = (PLACEHOLDER.as_ptr() as usize, ptr as usize);
    (p >= start && p < start + FRAME).then(|| p - start)
}

/// One placeholder frame's file range.
struct Job {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// Bytes of the frame already sent.
    sent: usize,
}

/// A connection's queue of file ranges still to send, in body order.
#[derive(Clone, Default)]
pub(crate) struct Jobs(Arc<Mutex<VecDeque<Job>>>);

impl Jobs {
    fn push(&self, job: Job) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push_back(job);
    }
}

tokio::task_local! {
    /// The queue of the HTTP/1 connection whose request is being answered.
    pub(crate) static CONNECTION: Jobs;
}

/// A response body that is `len` bytes of `file` from `offset`, sent by
/// the connection with `sendfile` (see the module docs).
pub(crate) struct FileBody {
    file: Arc<File>,
    offset: u64,
    left: u64,
    jobs: Jobs,
}

impl FileBody {
    pub(crate) fn new(jobs: Jobs, file: Arc<File>, offset: u64, len: u64) -> Self {
        Self { file, offset, left: len, jobs }
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let len = self.left.min(FRAME as u64) as usize;
        let job = Job { file: self.file.clone(), offset: self.offset, len, sent: 0 };
        self.jobs.push(job);
        self.offset += len as u64;
        self.left -= len as u64;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(&PLACEHOLDER[..len])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// A plain TCP connection that sends placeholder frames from their files.
pub(crate) struct ZerocopyStream {
    inner: TcpStream,
    jobs: Jobs,
    /// Bytes already read from `inner` (by the fast path), read again first.
    read: Bytes,
}

impl ZerocopyStream {
    /// The stream, and the queue its file bodies go to; `read` are bytes
    /// already taken from `inner`, which its reader sees first.
    pub(crate) fn new(inner: TcpStream, read: Bytes) -> (Self, Jobs) {
        let jobs = Jobs::default();
        (Self { inner, jobs: jobs.clone(), read }, jobs)
    }

    /// Sends the front job's part that `slice` (a placeholder) stands for.
    fn poll_send_file(&self, cx: &mut Context<'_>, slice: &[u8]) -> Poll<io::Result<usize>> {
        let at = placeholder_offset(slice.as_ptr()).expect("called with a placeholder");
        let (file, offset, want) = {
            let jobs = self.jobs.0.lock().unwrap_or_else(|p| p.into_inner());
            match jobs.front() {
                Some(job) if job.sent == at && job.len - job.sent == slice.len() => {
                    (job.file.clone(), job.offset + job.sent as u64, slice.len())
                }
                _ => return Poll::Ready(Err(io::Error::other("zero-copy send out of step with the response body"))),
            }
        };
        let n = ready!(poll_send_with(&self.inner, cx, || {
            let mut off = offset;
            rustix::fs::sendfile(&self.inner, &*file, Some(&mut off), want)
        }))?;
        // 0 means the file ended early: hyper fails the connection (WriteZero).
        let mut jobs = self.jobs.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(job) = jobs.front_mut() {
            job.sent += n;
            if job.sent == job.len {
                jobs.pop_front();
            }
        }
        Poll::Ready(Ok(n))
    }

    /// Writes ordinary bytes that a file's bytes follow at once, with
    /// `MSG_MORE` so the kernel may hold them back to share a packet.
    fn poll_write_more(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        use rustix::net::{SendAncillaryBuffer, SendFlags};
        poll_send_with(&self.inner, cx, || {
            let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
            rustix::net::sendmsg(&self.inner, bufs, &mut SendAncillaryBuffer::default(), flags)
        })
    }
}

/// Runs the non-blocking send `send` on `stream` once it is writable, again
/// after each `EAGAIN`.
pub(crate) fn poll_send_with(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    mut send: impl FnMut() -> rustix::io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_io(Interest::WRITABLE, || send().map_err(io::Error::from)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return Poll::Ready(other),
        }
    }
}

impl AsyncRead for ZerocopyStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZerocopyStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Empty slices carry no bytes (and may point anywhere): skip them.
        let bufs = &bufs[bufs.iter().take_while(|b| b.is_empty()).count()..];
        let plain = bufs.iter().take_while(|b| placeholder_offset(b.as_ptr()).is_none()).count();
        match plain {
            0 => match bufs.first() {
                Some(first) if !first.is_empty() => self.poll_send_file(cx, first),
                _ => Poll::Ready(Ok(0)),
            },
            n if n == bufs.len() => Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            // A head, then a file: the head waits to share the file's first packet.
            n => self.poll_write_more(cx, &bufs[..n]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_by_address() {
        assert_eq!(placeholder_offset(PLACEHOLDER.as_ptr()), Some(0));
        assert_eq!(placeholder_offset(PLACEHOLDER[10..].as_ptr()), Some(10));
        let other = [0u8; 16];
        assert_eq!(placeholder_offset(other.as_ptr()), None);
        assert_eq!(placeholder_offset(PLACEHOLDER.as_ptr().wrapping_add(FRAME)), None);
    }
}

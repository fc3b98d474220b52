//! The blob batch format of `POST /api/v1/deploys/{id}/blobs`: many small
//! blobs in one request body, so a deploy of ten thousand small files makes a
//! hundred requests instead of ten thousand.
//!
//! The body is a sequence of frames, each a header of [`HEADER_LEN`] bytes
//! (the blob's 32-byte BLAKE3 hash, then its length as 8 bytes big-endian)
//! followed by that many bytes of the blob. Nothing else: no count, no
//! trailer; the body ends after the last frame.
//!
//! Pure: [`Decoder`] turns bytes received into frames, [`encode_header`]
//! writes a header; the handler and the CLI do the IO.

use bytes::{Buf, Bytes, BytesMut};
use chanto_core::ContentHash;

/// Bytes of a frame header: hash, then length.
pub const HEADER_LEN: usize = 40;

/// Largest blob a batch may carry; larger files go up one request each
/// (`PUT /deploys/{id}/blobs/{hash}`), streamed.
pub const MAX_BLOB: u64 = 1 << 20;

/// The media type of a batch body.
pub const CONTENT_TYPE: &str = "application/vnd.chanto.blobs";

/// The header of a frame carrying `len` bytes that hash to `hash`.
pub fn encode_header(hash: &ContentHash, len: u64) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..32].copy_from_slice(hash.as_bytes());
    out[32..].copy_from_slice(&len.to_be_bytes());
    out
}

/// What is wrong with a batch body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// A frame says its blob is larger than [`MAX_BLOB`].
    TooLarge {
        /// The frame's hash.
        hash: ContentHash,
        /// The length it declared.
        len: u64,
    },
    /// The body ended inside a frame.
    Truncated {
        /// Bytes of the unfinished frame received.
        have: usize,
    },
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { hash, len } => write!(
                f,
                "blob {hash} in the batch is {len} bytes; a batch carries blobs of at most {MAX_BLOB} bytes \
                 (upload larger ones with PUT /deploys/{{id}}/blobs/{{hash}})"
            ),
            Self::Truncated { have } => write!(
                f,
                "the batch ends inside a frame ({have} bytes of it arrived); each frame is a {HEADER_LEN}-byte header \
                 (hash, length) and that many bytes"
            ),
        }
    }
}

/// Cuts frames out of a body as it arrives.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole frame, if one has arrived; an error for a frame larger
    /// than [`MAX_BLOB`] (known from its header alone, before its bytes).
    pub fn next_frame(&mut self) -> Result<Option<(ContentHash, Bytes)>, BatchError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let hash = ContentHash::from_bytes(self.buf[..32].try_into().expect("32 bytes"));
        let len = u64::from_be_bytes(self.buf[32..HEADER_LEN].try_into().expect("8 bytes"));
        if len > MAX_BLOB {
            return Err(BatchError::TooLarge { hash, len });
        }
        let len = len as usize;
        if self.buf.len() < HEADER_LEN + len {
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some((hash, self.buf.split_to(len).freeze())))
    }

    /// Checks the body ended between frames.
    pub fn finish(&self) -> Result<(), BatchError> {
        if self.buf.is_empty() { Ok(()) } else { Err(BatchError::Truncated { have: self.buf.len() }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Vec<u8> {
        let mut out = encode_header(&ContentHash::of(bytes), bytes.len() as u64).to_vec();
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn frames_come_out_whatever_the_chunking() {
        let blobs: Vec<Vec<u8>> = vec![b"first".to_vec(), Vec::new(), vec![7u8; 5000], b"last".to_vec()];
        let body: Vec<u8> = blobs.iter().flat_map(|b| frame(b)).collect();
        for chunk in [1, 3, 39, 40, 41, 4096, body.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for c in body.chunks(chunk) {
                d.push(c);
                while let Some((hash, bytes)) = d.next_frame().unwrap() {
                    assert_eq!(hash, ContentHash::of(&bytes));
                    got.push(bytes.to_vec());
                }
            }
            d.finish().unwrap();
            assert_eq!(got, blobs, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_truncated_body_is_an_error() {
        let body = frame(b"some bytes");
        for cut in [1, HEADER_LEN - 1, HEADER_LEN, body.len() - 1] {
            let mut d = Decoder::default();
            d.push(&body[..cut]);
            assert_eq!(d.next_frame().unwrap(), None);
            assert_eq!(d.finish(), Err(BatchError::Truncated { have: cut }));
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header() {
        let hash = ContentHash::of(b"x");
        let mut d = Decoder::default();
        d.push(&encode_header(&hash, u64::MAX));
        let e = d.next_frame().unwrap_err();
        assert_eq!(e, BatchError::TooLarge { hash, len: u64::MAX });
        assert!(e.to_string().contains("at most 1048576 bytes"), "{e}");
    }
}

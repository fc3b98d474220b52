//! The edge's HTTP server: HTTP/1.1 with keep-alive and HTTP/2 over cleartext
//! (h2c with prior knowledge) on one port, with bounds on what a client can
//! make it hold: header size and count, time to send the headers, and a
//! graceful shutdown that lets in-flight requests finish. Plain HTTP/1.1
//! requests for small files are answered on a fast path ([`crate::fast`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// What one connection may cost the server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A client must finish sending a request's headers within this time.
    pub header_read_timeout: Duration,
    /// Most bytes of request headers buffered per HTTP/1 connection
    /// (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
    /// Most header fields per request.
    pub max_headers: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 << 10,
            max_headers: 64,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then stops
/// accepting, closes idle connections and waits (up to `drain_timeout`) for
/// open requests to finish.
///
/// Each connection starts on the HTTP/1.1 fast path ([`crate::fast`]) and
/// moves to hyper at its first request that is not plain.
pub async fn serve(
    listener: TcpListener,
    service: crate::serve::EdgeService,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Body frames are written as they are, never copied into one buffer:
        // zero-copy sends depend on it (see `crate::zerocopy`).
        .writev(true)
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(limits.max_header_bytes as u32);
    let shared = Arc::new(Shared { builder, service, limits });
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // Every connection task holds a sender; all are gone when all ended.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (shared, stopping, open) = (shared.clone(), stopping.clone(), open.clone());
        tokio::spawn(async move {
            connection(stream, peer, &shared, stopping).await;
            drop(open);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    if tokio::time::timeout(shared.limits.drain_timeout, all_closed.recv()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the drain timeout");
    }
}

/// What every connection of one listener shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    service: crate::serve::EdgeService,
    limits: ServerLimits,
}

/// One connection: the fast path, then hyper if a request needs it.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    shared: &Shared,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let edge = shared.service.edge.clone();
    let (stream, read) = match crate::fast::run(stream, &edge, &shared.limits, &mut stopping).await {
        crate::fast::Outcome::Closed => return,
        crate::fast::Outcome::Handoff(stream, read) => (stream, read),
    };
    let (stream, jobs) = crate::zerocopy::ZerocopyStream::new(stream, read);
    let service = TowerToHyperService::new(shared.service.for_connection(peer, Some(jobs)));
    let conn = shared.builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = if *stopping.borrow() {
        conn.as_mut().graceful_shutdown();
        conn.await
    } else {
        tokio::select! {
            r = conn.as_mut() => r,
            _ = stopping.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

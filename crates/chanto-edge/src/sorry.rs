//! Overload: the connection cap (`--max-connections`), per-site concurrency
//! caps (`[serve] max_concurrency` in a deploy's `chanto.toml`) and the
//! sorry page.
//!
//! Above a cap the edge answers **at once** — `503`, `Retry-After`,
//! `Cache-Control: no-store` and a sorry page (the site's `sorry.html`, or
//! the file its `[serve] sorry_page` names, else the node's) — and never
//! queues: a queue only turns overload into timeouts for everyone.
//!
//! A connection above the cap is counted apart, in a small budget of its
//! own (an eighth of the cap, 16 to 1024): it may send one request head
//! within a short time (at most [`REFUSE_READ`]) to learn which site's sorry
//! page to show, gets it with `Connection: close`, and is closed. Beyond
//! that budget too, a connection is closed at once without a word. So a
//! flood of idle connections holds at most the cap plus that budget of
//! sockets and tasks, each for at most the header-read timeout.
//!
//! Over TLS the refused connection first finishes its handshake (within the
//! same short time), then hyper reads its one request — HTTP/1.1 or HTTP/2,
//! whichever ALPN chose — and [`Refusal`] answers it; the sorry page never
//! goes as raw bytes under the TLS layer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use chanto_core::Manifest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Edge;

/// The node's own sorry page, when neither the site nor `--sorry-page` has one.
pub const DEFAULT_SORRY_PAGE: &str = "<!doctype html><meta charset=utf-8><title>Busy</title>\n<h1>This site is busy</h1>\n<p>Too many visitors at once. Please try again in a few seconds.</p>\n";

/// What `Retry-After` tells a refused client to wait, in seconds.
pub const RETRY_AFTER_SECS: u32 = 5;

/// The longest a connection above the cap may take to send its request head.
pub const REFUSE_READ: Duration = Duration::from_secs(1);

/// The longest a site's own sorry page may take to read from the blob store
/// (it is usually in memory); then the node's page goes instead.
const SORRY_BLOB_WAIT: Duration = Duration::from_millis(50);

/// Why a request or a connection was refused, as `/metrics` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The node's connection cap.
    Connections,
    /// A site's concurrency cap.
    SiteConcurrency,
    /// A filter that fails closed could not decide.
    FilterError,
}

impl Reason {
    const ALL: [Reason; 3] = [Reason::Connections, Reason::SiteConcurrency, Reason::FilterError];

    fn label(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::SiteConcurrency => "site_concurrency",
            Self::FilterError => "filter_error",
        }
    }
}

/// The caps' state on one node.
pub struct Overload {
    max_connections: usize,
    refuse_budget: usize,
    open: Arc<AtomicUsize>,
    refusing: Arc<AtomicUsize>,
    sites: Mutex<HashMap<Arc<str>, Arc<AtomicU32>>>,
    page: Bytes,
    refused: [AtomicU64; 3],
    dropped: AtomicU64,
}

impl Overload {
    pub(crate) fn new(max_connections: usize, page: Option<Bytes>) -> Self {
        let max_connections = max_connections.max(1);
        Self {
            max_connections,
            refuse_budget: (max_connections / 8).clamp(16, 1024),
            open: Arc::default(),
            refusing: Arc::default(),
            sites: Mutex::default(),
            page: page.unwrap_or_else(|| Bytes::from_static(DEFAULT_SORRY_PAGE.as_bytes())),
            refused: Default::default(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Decides what a just-accepted connection gets.
    pub(crate) fn admit(&self) -> Admission {
        if self.open.fetch_add(1, Ordering::AcqRel) < self.max_connections {
            return Admission::Serve(Slot(self.open.clone()));
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.count(Reason::Connections);
        if self.refusing.fetch_add(1, Ordering::AcqRel) < self.refuse_budget {
            return Admission::Refuse(Slot(self.refusing.clone()));
        }
        self.refusing.fetch_sub(1, Ordering::AcqRel);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        Admission::Drop
    }

    /// A permit for one request of `site`, whose cap is `max`; `None` when
    /// the site is at its cap.
    pub(crate) fn site_permit(&self, site: &Arc<str>, max: u32) -> Option<Slot32> {
        let counter = {
            let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
            sites.entry(site.clone()).or_default().clone()
        };
        if counter.fetch_add(1, Ordering::AcqRel) < max {
            return Some(Slot32(counter));
        }
        counter.fetch_sub(1, Ordering::AcqRel);
        self.count(Reason::SiteConcurrency);
        None
    }

    /// Counts one refusal.
    pub(crate) fn count(&self, reason: Reason) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections open on the edge listener now (those being refused not counted).
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Refusals so far for `reason`.
    pub fn refused(&self, reason: Reason) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// Adds the overload counters to a `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str("# HELP chanto_edge_refused_total Requests and connections refused with the sorry page (503), by cap.\n# TYPE chanto_edge_refused_total counter\n");
        for r in Reason::ALL {
            let _ = writeln!(out, "chanto_edge_refused_total{{reason=\"{}\"}} {}", r.label(), self.refused(r));
        }
        out.push_str("# HELP chanto_edge_dropped_connections_total Connections closed unanswered: above the connection cap and the budget for answering them.\n# TYPE chanto_edge_dropped_connections_total counter\n");
        let _ = writeln!(out, "chanto_edge_dropped_connections_total {}", self.dropped.load(Ordering::Relaxed));
        out.push_str("# HELP chanto_edge_open_connections Connections open on the edge listener.\n# TYPE chanto_edge_open_connections gauge\n");
        let _ = writeln!(out, "chanto_edge_open_connections {}", self.open_connections());
        out.push_str("# HELP chanto_edge_max_connections The edge listener's connection cap (--max-connections).\n# TYPE chanto_edge_max_connections gauge\n");
        let _ = writeln!(out, "chanto_edge_max_connections {}", self.max_connections);
    }
}

/// What a new connection gets.
pub(crate) enum Admission {
    /// Served; the slot is freed when it is dropped.
    Serve(Slot),
    /// Over the cap: the sorry page, then closed.
    Refuse(Slot),
    /// Over the cap and the refusal budget: closed at once.
    Drop,
}

/// One counted connection, uncounted when dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request counted against its site's cap, uncounted when dropped.
pub(crate) struct Slot32(Arc<AtomicU32>);

impl Drop for Slot32 {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's permit under the site's cap
/// until the body is done (or dropped); frames pass through untouched.
pub(crate) struct Permitted {
    inner: Body,
    _permit: Slot32,
}

impl Permitted {
    pub(crate) fn new(inner: Body, permit: Slot32) -> Self {
        Self { inner, _permit: permit }
    }
}

impl http_body::Body for Permitted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The sorry page's body and content type for a deploy: its own page if it
/// has one that is small enough to be in memory, else the node's.
pub(crate) async fn page_for(edge: &Edge, manifest: Option<&Manifest>) -> (Bytes, HeaderValue) {
    let html = || HeaderValue::from_static("text/html; charset=utf-8");
    let Some(manifest) = manifest else { return (edge.overload.page.clone(), html()) };
    let path = manifest.rules.as_ref().and_then(|r| r.serve.sorry_page.as_deref()).unwrap_or("/sorry.html");
    let Some(entry) = manifest.files.get(path.trim_start_matches('/')) else {
        return (edge.overload.page.clone(), html());
    };
    if entry.size <= edge.cache_max_blob
        && let Ok(Ok(bytes)) = tokio::time::timeout(SORRY_BLOB_WAIT, edge.cached_blob(&entry.hash)).await
        && bytes.len() as u64 == entry.size
    {
        let ct = HeaderValue::from_str(&entry.content_type).unwrap_or_else(|_| html());
        return (bytes, ct);
    }
    (edge.overload.page.clone(), html())
}

/// The sorry response (see the module docs) for a deploy's manifest, or
/// the node's page. The caller counted the refusal.
pub(crate) async fn response(edge: &Edge, manifest: Option<&Manifest>, head: bool) -> Response {
    let (body, content_type) = page_for(edge, manifest).await;
    render(body, content_type, head)
}

/// The sorry page of the site `host` names, or the node's.
async fn page_for_host(edge: &Edge, host: Option<&str>) -> (Bytes, HeaderValue) {
    let snapshot = edge.snapshot();
    let target = host.and_then(|h| crate::serve::resolve_target(edge, &snapshot, h));
    let manifest = match target.as_ref().map(|t| &t.manifest) {
        Some(crate::TargetManifest::Loaded(m)) => Some(m.clone()),
        _ => None,
    };
    page_for(edge, manifest.as_deref()).await
}

/// A `503` with the sorry page's headers (and body, unless `head`).
fn render(body: Bytes, content_type: HeaderValue, head: bool) -> Response {
    let len = body.len();
    let mut resp = Response::new(if head { Body::empty() } else { Body::from(body) });
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    resp
}

/// A connection above the cap whose requests only hyper can read (TLS,
/// where a request may be HTTP/2), as a service: each request gets the
/// sorry page of the site it names, counted, and [`Refusal::answered`]
/// resolves so the caller closes the connection. What bounds the
/// connection's time is the caller's ([`crate::server::serve_tls`]).
#[derive(Clone)]
pub(crate) struct Refusal {
    edge: Arc<Edge>,
    answered: Arc<tokio::sync::Notify>,
}

impl Refusal {
    pub(crate) fn new(edge: Arc<Edge>) -> Self {
        Self { edge, answered: Arc::default() }
    }

    /// Resolves once a request has been answered (at once if one was).
    pub(crate) async fn answered(&self) {
        self.answered.notified().await
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Refusal {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let head = req.method() == axum::http::Method::HEAD;
        // HTTP/2 names the host in `:authority`, HTTP/1 in `Host`.
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned));
        let http1 = req.version() <= axum::http::Version::HTTP_11;
        let this = self.clone();
        Box::pin(async move {
            let (body, content_type) = page_for_host(&this.edge, host.as_deref()).await;
            let sent = if head { 0 } else { body.len() as u64 };
            let mut resp = render(body, content_type, head);
            if http1 {
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            this.edge.metrics.record(503, sent, Duration::ZERO);
            this.answered.notify_one();
            Ok(resp)
        })
    }
}

/// Answers a plain-TCP connection above the cap: reads one request head (within
/// [`REFUSE_READ`] and the header-read timeout), sends the sorry page of
/// the site it names with `Connection: close`, and closes.
pub(crate) async fn refuse(mut stream: tokio::net::TcpStream, edge: &Edge, limits: &crate::server::ServerLimits) {
    let wait = REFUSE_READ.min(limits.header_read_timeout);
    let mut buf = vec![0u8; 4096];
    let mut end = 0;
    let deadline = tokio::time::Instant::now() + wait;
    let (head, host) = loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf[end..])).await;
        match read {
            Ok(Ok(n)) if n > 0 => end += n,
            // Closed, failed or silent: nothing to answer.
            _ => return,
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..end]) {
            Ok(httparse::Status::Complete(_)) => {
                let host = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("host"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_owned);
                break (req.method == Some("HEAD"), host);
            }
            Ok(httparse::Status::Partial) if end < buf.len() => {}
            // Too large or malformed: the node's page.
            _ => break (false, None),
        }
    };
    let (body, content_type) = page_for_host(edge, host.as_deref()).await;
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: ");
    out.extend_from_slice(content_type.as_bytes());
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let rest = format!(
        "\r\ncontent-length: {}\r\ncache-control: no-store\r\nretry-after: {RETRY_AFTER_SECS}\r\nconnection: close\r\ndate: {date}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(rest.as_bytes());
    if !head {
        out.extend_from_slice(&body);
    }
    edge.metrics.record(503, if head { 0 } else { body.len() as u64 }, Duration::ZERO);
    let write = async {
        stream.write_all(&out).await?;
        stream.shutdown().await?;
        // Read what the client still sends until it closes, briefly, so the
        // close does not reset the connection before it read the answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(wait, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_and_release() {
        let o = Overload::new(2, None);
        let a = o.admit();
        let b = o.admit();
        assert!(matches!(a, Admission::Serve(_)) && matches!(b, Admission::Serve(_)));
        let c = o.admit();
        assert!(matches!(c, Admission::Refuse(_)));
        assert_eq!(o.open_connections(), 2);
        drop(a);
        assert_eq!(o.open_connections(), 1);
        assert!(matches!(o.admit(), Admission::Serve(_)));
        // The refusal budget (16 at least) runs out too.
        let held: Vec<_> = (0..20).map(|_| o.admit()).collect();
        assert!(matches!(held.last(), Some(Admission::Drop)));
        drop(held);
        drop(c);
        let site: Arc<str> = Arc::from("s");
        let p1 = o.site_permit(&site, 1).unwrap();
        assert!(o.site_permit(&site, 1).is_none());
        drop(p1);
        assert!(o.site_permit(&site, 1).is_some());
        assert_eq!(o.refused(Reason::SiteConcurrency), 1);
        let mut text = String::new();
        o.render_metrics(&mut text);
        assert!(text.contains("chanto_edge_refused_total{reason=\"site_concurrency\"} 1"), "{text}");
        assert!(text.contains("chanto_edge_refused_total{reason=\"connections\"} 20"), "{text}");
    }
}

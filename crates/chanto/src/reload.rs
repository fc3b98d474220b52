//! Live reload for `chanto dev` (and only for it: `serve` and the edge never
//! load this module). The dev server answers two reserved paths itself,
//! before the site's files are looked at, so no file of the site can shadow
//! them: `/__chanto/reload` (a Server-Sent Events stream that names the
//! version being served) and `/__chanto/reload.js` (the script that listens
//! to it). Every HTML response gets one `<script>` tag for that script,
//! before the last `</body>` (at the end when there is none), carrying the
//! version it was rendered from; the script reloads the page as soon as the
//! stream names another version. A page that loaded just before a change
//! therefore still reloads (its version is already stale when it connects),
//! and a restarted `chanto dev` (a new session) reloads every open page.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use chanto_edge::EdgeService;

/// The reserved prefix: `chanto dev` answers everything under it itself.
pub const RESERVED: &str = "/__chanto/";
/// The event stream.
pub const EVENTS_PATH: &str = "/__chanto/reload";
/// The script the pages load.
pub const SCRIPT_PATH: &str = "/__chanto/reload.js";
/// Most event streams open at once; more get a 503 (each holds a socket and
/// a task for as long as the client likes).
pub const MAX_CLIENTS: usize = 64;
/// HTML bodies up to this size get the tag before their last `</body>`;
/// larger ones get it appended as the body streams, without buffering.
const MAX_BUFFERED: usize = 8 << 20;

/// The script, served at [`SCRIPT_PATH`]. A hidden tab closes its stream and
/// reconnects when shown (browsers allow six HTTP/1.1 connections to a
/// server; a stream per background tab would use them up), and a reconnect
/// that finds another version reloads.
const SCRIPT: &str = r#"// chanto dev: reloads this page when the folder being served changes.
// Injected by `chanto dev` only; `chanto serve` never adds it.
(() => {
  const me = document.currentScript;
  const served = me && me.dataset.version;
  let source = null;
  const connect = () => {
    if (source) return;
    source = new EventSource("/__chanto/reload");
    source.addEventListener("version", (e) => {
      if (e.data !== served) {
        source.close();
        location.reload();
      }
    });
  };
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      if (source) source.close();
      source = null;
    } else {
      connect();
    }
  });
  if (!document.hidden) connect();
})();
"#;

/// What every connection of the dev server shares: the version served now,
/// and the bound on open streams.
pub struct Reload {
    /// `<session>.<n>`; `None` once the server is stopping (streams end).
    version: tokio::sync::watch::Sender<Option<String>>,
    session: String,
    clients: Arc<tokio::sync::Semaphore>,
    max_clients: usize,
    keepalive: Duration,
}

impl Reload {
    /// A new session (a random name, so a restarted `chanto dev` reloads
    /// the pages of the last one).
    pub fn new(max_clients: usize, keepalive: Duration) -> Arc<Self> {
        let session = chanto_core::DeployId::from_random(chanto_store::random_bytes()).to_string();
        Arc::new(Self {
            version: tokio::sync::watch::Sender::new(Some(format!("{session}.0"))),
            session,
            clients: Arc::new(tokio::sync::Semaphore::new(max_clients)),
            max_clients,
            keepalive,
        })
    }

    /// Tells open pages that version `n` is being served. Call it only once
    /// the edge serves it, so a page reloaded because of it gets it.
    pub fn served(&self, n: u64) {
        self.version.send_replace(Some(format!("{}.{n}", self.session)));
    }

    /// Ends every stream (the server is stopping).
    pub fn close(&self) {
        self.version.send_replace(None);
    }

    fn current(&self) -> String {
        self.version.borrow().clone().unwrap_or_default()
    }

    /// `GET /__chanto/reload`: the stream, if a place is free.
    fn events(&self) -> Response {
        let Ok(permit) = self.clients.clone().try_acquire_owned() else {
            let mut r = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "chanto dev: {} live-reload connections are open already, the most it keeps; close some tabs\n",
                    self.max_clients
                ),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        };
        let mut rx = self.version.subscribe();
        let first = match rx.borrow_and_update().clone() {
            Some(v) => Bytes::from(format!("retry: 1000\nevent: version\ndata: {v}\n\n")),
            None => return plain(StatusCode::SERVICE_UNAVAILABLE, "chanto dev is stopping\n".into()),
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + self.keepalive, self.keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let rest = futures_util::stream::unfold((rx, tick, permit), |(mut rx, mut tick, permit)| async move {
            let chunk = tokio::select! {
                changed = rx.changed() => match changed.ok().and_then(|()| rx.borrow_and_update().clone()) {
                    Some(v) => format!("event: version\ndata: {v}\n\n"),
                    None => return None,
                },
                _ = tick.tick() => ": keep-alive\n\n".to_owned(),
            };
            Some((Ok::<_, Infallible>(Bytes::from(chunk)), (rx, tick, permit)))
        });
        let body = futures_util::StreamExt::chain(futures_util::stream::once(async { Ok(first) }), rest);
        let mut r = Body::from_stream(body).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // nginx and friends would otherwise hold events back in a buffer.
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        r
    }
}

/// The dev server's service: the reserved paths, else the edge with the
/// script tag added to HTML.
#[derive(Clone)]
pub struct DevService {
    /// The edge, for this connection's peer.
    pub edge: EdgeService,
    /// Live reload; `None` with `--no-reload` (then this is the edge alone).
    pub reload: Option<Arc<Reload>>,
}

impl tower::Service<Request> for DevService {
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let mut edge = self.edge.clone();
        let Some(reload) = self.reload.clone() else {
            return Box::pin(async move { tower::Service::call(&mut edge, req).await });
        };
        Box::pin(async move {
            if req.uri().path().starts_with(RESERVED) {
                return Ok(reserved(&reload, &req));
            }
            // Read before the edge answers: the page is at least this new.
            let version = reload.current();
            let head = req.method() == Method::HEAD;
            let resp = tower::Service::call(&mut edge, req).await?;
            Ok(inject_response(resp, head, &script_tag(&version)).await)
        })
    }
}

fn reserved(reload: &Reload, req: &Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "chanto dev: only GET here\n".into());
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        EVENTS_PATH => reload.events(),
        SCRIPT_PATH => {
            let mut r = SCRIPT.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            format!(
                "chanto dev keeps {RESERVED} for live reload; files of the site under it are served by `chanto serve` only\n"
            ),
        ),
    }
}

fn plain(status: StatusCode, text: String) -> Response {
    let mut r = (status, text).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The tag added to pages rendered from `version`.
pub fn script_tag(version: &str) -> String {
    // The version is `<hex>.<digits>`: nothing to escape.
    format!(r#"<script src="{SCRIPT_PATH}" data-version="{version}"></script>"#)
}

/// Whether the response is an HTML body this can edit: `text/html`, not
/// encoded, a status that carries the whole representation.
fn injectable(resp: &Response) -> bool {
    let status = resp.status();
    if status.is_informational()
        || matches!(status, StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED)
    {
        return false;
    }
    let h = resp.headers();
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"));
    let encoded = h.get(header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    html && !encoded
}

/// Adds `tag` to an HTML response, with its `Content-Length` made right and
/// validators dropped (the bytes are no longer the file's), never cached.
async fn inject_response(resp: Response, head: bool, tag: &str) -> Response {
    if !injectable(&resp) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let length = content_length(&parts.headers);
    fix_headers(&mut parts.headers);
    let body = if head {
        body
    } else if length.is_some_and(|n| n <= MAX_BUFFERED as u64) {
        match axum::body::to_bytes(body, MAX_BUFFERED).await {
            Ok(bytes) => Body::from(inject(&bytes, tag.as_bytes())),
            Err(e) => {
                tracing::warn!(error = %e, "reading a page to add the live-reload script");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    } else {
        let tail = futures_util::stream::once(std::future::ready(Ok::<_, axum::Error>(Bytes::from(tag.to_owned()))));
        Body::from_stream(futures_util::StreamExt::chain(body.into_data_stream(), tail))
    };
    match length {
        Some(n) => {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n + tag.len() as u64));
        }
        None => {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
    }
    Response::from_parts(parts, body)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn fix_headers(h: &mut HeaderMap) {
    for name in [header::ETAG, header::LAST_MODIFIED, header::ACCEPT_RANGES] {
        h.remove(name);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `html` with `tag` before its last `</body>` (any case, `</body >` too),
/// or at the end when it has none.
pub fn inject(html: &[u8], tag: &[u8]) -> Bytes {
    let at = last_body_close(html).unwrap_or(html.len());
    let mut out = BytesMut::with_capacity(html.len() + tag.len());
    out.extend_from_slice(&html[..at]);
    out.extend_from_slice(tag);
    out.extend_from_slice(&html[at..]);
    out.freeze()
}

fn last_body_close(html: &[u8]) -> Option<usize> {
    const CLOSE: &[u8] = b"</body";
    (0..html.len().saturating_sub(CLOSE.len() - 1)).rev().find(|&i| {
        html[i..i + CLOSE.len()].eq_ignore_ascii_case(CLOSE)
            && html.get(i + CLOSE.len()).is_none_or(|&c| c == b'>' || c.is_ascii_whitespace() || c == b'/')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_goes_before_the_last_body_close_or_at_the_end() {
        let t = b"<T>";
        for (html, want) in [
            ("<html><body>hi</body></html>", "<html><body>hi<T></body></html>"),
            ("<BODY>hi</BODY>", "<BODY>hi<T></BODY>"),
            ("<body>a</body >b", "<body>a<T></body >b"),
            ("<p>no body element", "<p>no body element<T>"),
            ("", "<T>"),
            ("<body><script>'</body>'</script></body>", "<body><script>'</body>'</script><T></body>"),
            ("</bodyguard>", "</bodyguard><T>"),
            ("</body", "<T></body"),
            ("é</body>", "é<T></body>"),
        ] {
            assert_eq!(&inject(html.as_bytes(), t)[..], want.as_bytes(), "{html:?}");
        }
    }

    #[test]
    fn only_whole_unencoded_html_is_edited() {
        let resp = |status: u16, ty: &str, enc: Option<&str>| {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(ty).unwrap());
            if let Some(e) = enc {
                r.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
            }
            r
        };
        assert!(injectable(&resp(200, "text/html; charset=utf-8", None)));
        assert!(injectable(&resp(404, "TEXT/HTML", None)), "a 404 page reloads too");
        assert!(injectable(&resp(200, "text/html", Some("identity"))));
        assert!(!injectable(&resp(200, "text/html", Some("br"))));
        assert!(!injectable(&resp(206, "text/html", None)));
        assert!(!injectable(&resp(304, "text/html", None)));
        assert!(!injectable(&resp(200, "text/css", None)));
        assert!(!injectable(&resp(200, "application/xhtml+xml", None)));
        assert!(!injectable(&resp(200, "text/htmlx", None)));
    }
}

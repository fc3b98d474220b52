//! Request filters that depend on something outside the node: an external
//! auth check (`--auth-request`), a shared rate-limit store. Such a thing
//! can fail — be down, slow, or in a zone that is gone — and then every
//! request it sees would fail with it. So each filter **declares** what an
//! error means ([`OnError`]): `open` lets the request through (the site
//! stays up, unguarded by this filter), `closed` answers `503` with the
//! sorry page (the site is down for as long as the dependency is). The
//! operator chooses; nothing fails by accident.
//!
//! Node-local guards — a branch's access policy (network lists, passwords)
//! and the password throttle ([`crate::access`]) — are not filters: they
//! read only the routing snapshot and this node's memory, never another
//! node or service, so no failure elsewhere can change their answer.
//!
//! The filter phase runs after the access policy and before the rules (see
//! `crate::serve::handle`); a response that passed a filter is private (no
//! shared cache may give it to someone the filter did not ask about).

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// What a filter's error means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Let the request through.
    Open,
    /// Refuse it: `503`, `Retry-After`, the sorry page.
    Closed,
}

impl OnError {
    /// `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            other => Err(format!("{other:?} is neither `open` nor `closed`")),
        }
    }
}

/// The request as a filter sees it, once routed to a site.
pub struct FilterRequest<'a> {
    /// `GET`, `HEAD` or `OPTIONS`.
    pub method: &'a Method,
    /// The host the request named.
    pub host: &'a str,
    /// The request target (path and query).
    pub uri: &'a Uri,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The client's address (from a trusted proxy's `X-Forwarded-For`).
    pub client: IpAddr,
    /// The site it routed to.
    pub site: &'a str,
}

/// A filter's decision.
pub enum Verdict {
    /// Go on.
    Allow,
    /// Answer this instead (a 401 or 403 the filter decided).
    Respond(Response),
}

/// Why a filter could not decide.
#[derive(Debug)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request filter that depends on something outside the node.
#[async_trait]
pub trait Filter: Send + Sync + fmt::Debug {
    /// The filter's name, for logs and `/metrics`.
    fn name(&self) -> &'static str;
    /// What an error means.
    fn on_error(&self) -> OnError;
    /// Decides one request; bounded in time by the filter itself.
    async fn check(&self, req: &FilterRequest<'_>) -> Result<Verdict, FilterError>;
    /// Errors so far, by what was done about them: (let through, refused).
    fn errors(&self) -> (u64, u64);
    /// Counts one error, handled per [`Filter::on_error`].
    fn count_error(&self);
}

/// Headers of the visitor's request never sent to the auth service: those
/// that describe its connection (as the proxy drops them) and its body's.
fn never_sent(name: &str) -> bool {
    crate::proxy::HOP_BY_HOP.contains(&name) || name == "content-length" || name == "expect"
}

/// `--auth-request URL`, as nginx's `auth_request`: a `GET` subrequest to
/// the auth service with the visitor's headers (cookies, `Authorization`)
/// and `X-Original-Method`, `X-Original-Host`, `X-Original-URI` and
/// `X-Forwarded-For`. A `2xx` lets the request through; a `401` or `403` is
/// the visitor's answer (with the service's `WWW-Authenticate`); anything
/// else, a redirect, a connection error or no answer within the timeout is
/// an error, handled per [`OnError`].
pub struct AuthRequest {
    url: String,
    on_error: OnError,
    timeout: Duration,
    client: reqwest::Client,
    opened: AtomicU64,
    closed: AtomicU64,
}

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("url", &self.url)
            .field("on_error", &self.on_error)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AuthRequest {
    /// A filter asking `url` (`http://` or `https://`), within `timeout`.
    /// Errors name the flag.
    pub fn new(url: &str, timeout: Duration, on_error: OnError) -> Result<Self, String> {
        let parsed: Uri = url
            .parse()
            .map_err(|_| format!("--auth-request {url:?} is not a URL; give e.g. http://127.0.0.1:9000/auth"))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none_or(str::is_empty) {
            return Err(format!(
                "--auth-request {url:?} is not an http:// or https:// URL with a host; give e.g. http://127.0.0.1:9000/auth"
            ));
        }
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(format!(
                "--auth-request-timeout {} is out of range; give more than 0s and at most 60s (default 1s)",
                humantime_like(timeout)
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("starting the --auth-request client: {e}"))?;
        Ok(Self {
            url: url.to_owned(),
            on_error,
            timeout,
            client,
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        })
    }
}

fn humantime_like(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[async_trait]
impl Filter for AuthRequest {
    fn name(&self) -> &'static str {
        "auth_request"
    }

    fn on_error(&self) -> OnError {
        self.on_error
    }

    async fn check(&self, req: &FilterRequest<'_>) -> Result<Verdict, FilterError> {
        let mut headers = HeaderMap::new();
        for (name, value) in req.headers {
            if !never_sent(name.as_str()) {
                headers.append(name.clone(), value.clone());
            }
        }
        let original = [
            ("x-original-method", req.method.as_str().to_owned()),
            ("x-original-host", req.host.to_owned()),
            ("x-original-uri", req.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned()),
            ("x-forwarded-for", req.client.to_string()),
        ];
        for (name, value) in original {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        let sent = self.client.get(&self.url).headers(headers).send();
        let resp = match tokio::time::timeout(self.timeout, sent).await {
            Err(_) => return Err(FilterError(format!("no answer within {}", humantime_like(self.timeout)))),
            Ok(Err(e)) => return Err(FilterError(without_url(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(Verdict::Allow);
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let (title, text) = if status == StatusCode::UNAUTHORIZED {
                ("Unauthorized", "401 Unauthorized")
            } else {
                ("Forbidden", "403 Forbidden")
            };
            let body = format!("<!doctype html><title>{title}</title><h1>{text}</h1>\n");
            let mut answer = (status, body).into_response();
            let h = answer.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            for v in resp.headers().get_all(header::WWW_AUTHENTICATE) {
                h.append(header::WWW_AUTHENTICATE, v.clone());
            }
            return Ok(Verdict::Respond(answer));
        }
        Err(FilterError(format!("the auth service answered {status}")))
    }

    fn errors(&self) -> (u64, u64) {
        (self.opened.load(Ordering::Relaxed), self.closed.load(Ordering::Relaxed))
    }

    fn count_error(&self) {
        match self.on_error {
            OnError::Open => self.opened.fetch_add(1, Ordering::Relaxed),
            OnError::Closed => self.closed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A client error without its URL (reqwest puts it in its message; the
/// log names the filter already).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut cause = String::new();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() { kind.to_owned() } else { format!("{kind}: {cause}") }
}

/// Renders every filter's error counters.
pub(crate) fn render_metrics(filters: &[std::sync::Arc<dyn Filter>], out: &mut String) {
    use std::fmt::Write;
    if filters.is_empty() {
        return;
    }
    out.push_str("# HELP chanto_edge_filter_errors_total Filter errors, by filter and what was done (open: let through, closed: refused with 503).\n# TYPE chanto_edge_filter_errors_total counter\n");
    for f in filters {
        let (opened, closed) = f.errors();
        let _ = writeln!(out, "chanto_edge_filter_errors_total{{filter=\"{}\",on_error=\"open\"}} {opened}", f.name());
        let _ =
            writeln!(out, "chanto_edge_filter_errors_total{{filter=\"{}\",on_error=\"closed\"}} {closed}", f.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_timeouts_are_checked_naming_the_flag() {
        for bad in ["", "auth", "ftp://x/a", "http://", "/auth", "http:// x"] {
            let e = AuthRequest::new(bad, Duration::from_secs(1), OnError::Closed).unwrap_err();
            assert!(e.starts_with("--auth-request "), "{bad}: {e}");
        }
        let e = AuthRequest::new("http://127.0.0.1:1/a", Duration::ZERO, OnError::Open).unwrap_err();
        assert!(e.starts_with("--auth-request-timeout "), "{e}");
        assert!(AuthRequest::new("http://127.0.0.1:1/a", Duration::from_secs(1), OnError::Open).is_ok());
        assert_eq!("closed".parse::<OnError>(), Ok(OnError::Closed));
        assert!("Open".parse::<OnError>().is_err());
    }
}

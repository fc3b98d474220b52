//! Rules that rewrite to an absolute URL (`/api/* https://api.example.com/:splat 200`)
//! make the edge a reverse proxy, but only to origins the operator lists
//! (`chanto serve --proxy-origin`); anything else answers 502. Requests time
//! out; hop-by-hop headers are dropped both ways; the client's address goes
//! along in `X-Forwarded-For`.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

/// Time to connect to an origin.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole proxied response.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// `scheme://host:port`, lower case, with the default port spelled out.
pub fn origin_of(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let port = authority.port_u16().or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some(format!("{scheme}://{}:{port}", authority.host().to_ascii_lowercase()))
}

/// The operator's allowed origins and the client that reaches them.
pub struct Proxy {
    allowed: Vec<String>,
    client: reqwest::Client,
}

impl Proxy {
    /// A proxy to these origins (`https://api.example.com`, `http://10.0.0.5:8080`).
    pub fn new(origins: &[String]) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for o in origins {
            let uri: Uri = o.parse().map_err(|e| format!("--proxy-origin {o:?}: {e}"))?;
            let origin = origin_of(&uri).ok_or_else(|| {
                format!("--proxy-origin {o:?}: give an http:// or https:// origin, like https://api.example.com")
            })?;
            if uri.path() != "/" && !uri.path().is_empty() {
                return Err(format!("--proxy-origin {o:?}: an origin has no path; give scheme://host[:port]"));
            }
            allowed.push(origin);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("starting the proxy client: {e}"))?;
        Ok(Self { allowed, client })
    }

    /// Whether requests may go to `uri`'s origin.
    pub fn allows(&self, uri: &Uri) -> bool {
        origin_of(uri).is_some_and(|o| self.allowed.contains(&o))
    }

    /// Fetches `url` for a visitor and streams the answer back.
    pub async fn forward(
        &self,
        url: &str,
        method: &Method,
        headers: &HeaderMap,
        client: IpAddr,
        host: &str,
    ) -> Response {
        let mut req =
            self.client.request(if method == Method::HEAD { reqwest::Method::HEAD } else { reqwest::Method::GET }, url);
        for (name, value) in headers {
            if !HOP_BY_HOP.contains(&name.as_str()) && name != "x-forwarded-for" {
                req = req.header(name.as_str(), value.as_bytes());
            }
        }
        let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {client}"),
            None => client.to_string(),
        };
        req = req
            .header("x-forwarded-for", forwarded)
            .header("x-forwarded-host", host)
            .header("x-forwarded-proto", "http");
        let upstream = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return page(
                    StatusCode::GATEWAY_TIMEOUT,
                    "504 Gateway timeout",
                    "The origin this page comes from did not answer in time.",
                );
            }
            Err(e) => {
                tracing::warn!(url, error = %e, "proxied request failed");
                return page(
                    StatusCode::BAD_GATEWAY,
                    "502 Bad gateway",
                    "The origin this page comes from could not be reached.",
                );
            }
        };
        let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut out = HeaderMap::new();
        for (name, value) in upstream.headers() {
            if HOP_BY_HOP.contains(&name.as_str()) {
                continue;
            }
            if let (Ok(n), Ok(v)) =
                (HeaderName::from_bytes(name.as_str().as_bytes()), HeaderValue::from_bytes(value.as_bytes()))
            {
                out.append(n, v);
            }
        }
        let mut resp = Response::new(Body::from_stream(upstream.bytes_stream().map_err(std::io::Error::other)));
        *resp.status_mut() = status;
        *resp.headers_mut() = out;
        resp
    }
}

/// The page when a rule proxies to an origin the operator does not allow.
pub fn not_allowed() -> Response {
    page(StatusCode::BAD_GATEWAY, "502 Bad gateway", "This site proxies to an origin this server does not allow.")
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!("<!doctype html><meta charset=utf-8><title>{title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n");
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let o = |s: &str| origin_of(&s.parse().unwrap());
        assert_eq!(o("https://API.example.com/x?y").as_deref(), Some("https://api.example.com:443"));
        assert_eq!(o("http://10.0.0.5:8080/").as_deref(), Some("http://10.0.0.5:8080"));
        assert_eq!(o("/relative"), None);
        let p = Proxy::new(&["https://api.example.com".into(), "http://127.0.0.1:9000".into()]).unwrap();
        assert!(p.allows(&"https://api.example.com:443/v1".parse().unwrap()));
        assert!(!p.allows(&"http://api.example.com/v1".parse().unwrap()), "scheme matters");
        assert!(!p.allows(&"https://evil.example.com/".parse().unwrap()));
        for bad in ["api.example.com", "ftp://x", "https://x/path"] {
            assert!(Proxy::new(&[bad.into()]).is_err(), "{bad}");
        }
    }
}

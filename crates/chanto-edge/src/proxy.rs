//! Rules that rewrite to an absolute URL (`/api/* https://api.example.com/:splat 200`)
//! make the edge a reverse proxy, but only to an origin that both the
//! operator (`chanto serve --proxy-origin`, the ceiling for every site) and
//! the site itself (`chanto sites proxy-origins`, in the routing table)
//! allow; anything else answers 502, so a fork preview cannot use an origin
//! allowed for another site. The upstream path stays under the rule's
//! target (no dot segments, however often it is decoded); the visitor's
//! credentials (`Authorization`, `Cookie`) are not forwarded, and the
//! origin's `Set-Cookie` loses its `Domain=`; requests time
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
pub(crate) const HOP_BY_HOP: [&str; 9] = [
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

/// The visitor's credentials for this site: never sent to another origin.
const CREDENTIALS: [&str; 2] = ["authorization", "cookie"];

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
            allowed.push(normalize_origin(o).map_err(|e| format!("--proxy-origin {e}"))?);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("starting the proxy client: {e}"))?;
        Ok(Self { allowed, client })
    }

    /// Whether a site that allows `site` origins may send requests to
    /// `uri`'s origin: the operator's list and the site's must both name it.
    pub fn allows(&self, uri: &Uri, site: Option<&[String]>) -> bool {
        origin_of(uri).is_some_and(|o| self.allowed.contains(&o) && site.is_some_and(|s| s.contains(&o)))
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
            if !HOP_BY_HOP.contains(&name.as_str())
                && !CREDENTIALS.contains(&name.as_str())
                && name != "x-forwarded-for"
            {
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
            let Ok(n) = HeaderName::from_bytes(name.as_str().as_bytes()) else { continue };
            // The origin's cookies are the site's host's alone, as a header rule's are.
            let v = if n == header::SET_COOKIE {
                value.to_str().ok().and_then(|c| HeaderValue::from_str(&crate::serve::host_only_cookie(c)).ok())
            } else {
                HeaderValue::from_bytes(value.as_bytes()).ok()
            };
            if let Some(v) = v {
                out.append(n, v);
            }
        }
        let mut resp = Response::new(Body::from_stream(upstream.bytes_stream().map_err(std::io::Error::other)));
        *resp.status_mut() = status;
        *resp.headers_mut() = out;
        resp
    }
}

/// Normalises an origin given for a site or on the command line
/// (`https://API.example.com` → `https://api.example.com:443`); the error
/// says what form is expected.
pub fn normalize_origin(o: &str) -> Result<String, String> {
    chanto_core::normalize_origin(o).map_err(|e| e.to_string())
}

/// Whether the upstream path stays where the rule put it: no `.`/`..`
/// segment and no backslash, however many times the path is
/// percent-decoded (an upstream that decodes twice must not see a `..` the
/// visitor smuggled in as `%252e%252e`), and no encoded `/`.
pub fn confined(uri: &Uri) -> bool {
    let mut path = uri.path().to_owned();
    for _ in 0..4 {
        let bad_segment = path.split('/').any(|s| s == "." || s == "..");
        if bad_segment || path.contains('\\') {
            return false;
        }
        let lower = path.to_ascii_lowercase();
        if !lower.contains('%') {
            return true;
        }
        if lower.contains("%2f") || lower.contains("%5c") {
            return false;
        }
        match percent_decode(&path) {
            Some(p) => path = p,
            None => return false,
        }
    }
    false
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The page when a proxied path would leave the rule's target.
pub fn not_confined() -> Response {
    page(StatusCode::BAD_REQUEST, "400 Bad request", "This path cannot be proxied.")
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
        let site = ["https://api.example.com:443".to_owned()];
        let site = Some(&site[..]);
        assert!(p.allows(&"https://api.example.com:443/v1".parse().unwrap(), site));
        assert!(!p.allows(&"https://api.example.com:443/v1".parse().unwrap(), None), "the site must allow it too");
        assert!(!p.allows(&"http://127.0.0.1:9000/".parse().unwrap(), site), "another site's origin");
        assert!(!p.allows(&"http://api.example.com/v1".parse().unwrap(), site), "scheme matters");
        assert!(!p.allows(&"https://evil.example.com/".parse().unwrap(), site));
        for bad in ["api.example.com", "ftp://x", "https://x/path"] {
            assert!(Proxy::new(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_paths_stay_under_the_target() {
        let c = |s: &str| confined(&s.parse().unwrap());
        assert!(c("https://a.example/v1/users?x=..%2f"));
        assert!(c("https://a.example/v1/caf%C3%A9%20x"));
        for bad in [
            "https://a.example/v1/../admin",
            "https://a.example/v1/%2e%2e/admin",
            "https://a.example/v1/%252e%252e/admin",
            "https://a.example/v1/%25252e%25252e/admin",
            "https://a.example/v1/..%2fadmin",
            "https://a.example/v1/a%5cb",
            "https://a.example/v1/%zz",
        ] {
            assert!(!c(bad), "{bad}");
        }
    }
}

//! Answering a request: host → target → path → blob bytes.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chanto_core::manifest::Lookup;
use chanto_core::request_path::normalize_request_path;
use chanto_core::{ManifestEntry, parse_host};

use crate::{Edge, Target};

/// The edge's router: every request goes to one handler.
pub fn router(edge: Arc<Edge>) -> Router {
    Router::new().fallback(handle).with_state(edge)
}

const NOT_FOUND_PAGE: &str = "<!doctype html><meta charset=utf-8><title>Not found</title>\n<h1>404 Not found</h1>\n<p>There is nothing here.</p>\n";

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp
}

async fn handle(State(edge): State<Arc<Edge>>, req: Request) -> Response {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut resp = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "<!doctype html><title>Method not allowed</title><h1>405 Method not allowed</h1>\n",
        );
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host()).unwrap_or("");
    let snapshot = edge.snapshot();
    let Some(target) = parse_host(host, &edge.base_domain).and_then(|route| snapshot.resolve(&route)) else {
        return plain(StatusCode::NOT_FOUND, NOT_FOUND_PAGE);
    };
    let manifest = match target {
        Target::Loaded { manifest, .. } => manifest,
        Target::Lazy { manifest, .. } => match edge.manifest(&manifest).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "permalink manifest unavailable");
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<!doctype html><title>Unavailable</title><h1>503 Service unavailable</h1>\n",
                );
            }
        },
    };
    let Ok(path) = normalize_request_path(req.uri().path()) else {
        return plain(StatusCode::BAD_REQUEST, "<!doctype html><title>Bad request</title><h1>400 Bad request</h1>\n");
    };
    match manifest.lookup(&path) {
        Lookup::File(_, entry) => send(&edge, entry, StatusCode::OK, head).await,
        Lookup::AddSlash => {
            let mut location = format!("{}/", req.uri().path());
            if let Some(q) = req.uri().query() {
                location.push('?');
                location.push_str(q);
            }
            let mut resp = plain(StatusCode::MOVED_PERMANENTLY, "");
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Lookup::NotFound => match manifest.files.get("404.html") {
            Some(entry) => send(&edge, entry, StatusCode::NOT_FOUND, head).await,
            None => plain(StatusCode::NOT_FOUND, NOT_FOUND_PAGE),
        },
    }
}

async fn send(edge: &Edge, entry: &ManifestEntry, status: StatusCode, head: bool) -> Response {
    let body = if head {
        Body::empty()
    } else {
        match edge.blobs.open(&entry.hash).await {
            Ok(open) => Body::from_stream(open.body),
            Err(e) => {
                tracing::warn!(blob = %entry.hash, error = %e, "blob unavailable");
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<!doctype html><title>Unavailable</title><h1>503 Service unavailable</h1>\n",
                );
            }
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&entry.content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.size));
    resp
}

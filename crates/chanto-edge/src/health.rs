//! `/readyz` per dependency: whether this node should get traffic, and the
//! state of everything it leans on (routing, draining, the metadata store,
//! the blob store and its disk cache), as plain text or JSON.
//!
//! The status code rule: **503 only when this node cannot serve** (it is
//! draining, or has no routing snapshot yet). A metadata store or an object
//! store that is down is listed as `down` with a 200: every edge shares
//! them, so a load balancer that pulled edges over them would take every
//! site offline, when each edge still serves its snapshot and cached blobs
//! (static stability, DESIGN invariant 3). `?strict` turns any dependency
//! `down` into a 503 too, for a probe that wants that (e.g. a deploy
//! pipeline's smoke check, never a load balancer's).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chanto_store::MetaStore;
use chanto_store::health::{Check, State};
use serde::Serialize;

use crate::Edge;

/// What `/readyz` found.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Whether a load balancer should send this node traffic.
    pub ready: bool,
    /// `ready`, `degraded` (ready, but a dependency is not up) or `not ready`.
    pub status: &'static str,
    /// Each dependency, in a fixed order.
    pub checks: Vec<Check>,
}

/// Probes every dependency at once; each probe is bounded in time by the
/// store (see [`chanto_store::health::PROBE_TIMEOUT`]).
pub async fn readiness(edge: &Edge, meta: Option<&Arc<dyn MetaStore>>) -> Readiness {
    let snapshot = edge.snapshot();
    let routing = if snapshot.version > 0 {
        let detail = format!("version {}, {} sites", snapshot.version, snapshot.site_count());
        Check::new("routing", "snapshot", State::Up, detail)
    } else {
        Check::new("routing", "snapshot", State::Down, "no routing snapshot loaded yet")
    };
    let draining = edge.draining.load(Ordering::Relaxed);
    let drain = if draining {
        Check::new("draining", "node", State::Down, "shutting down: finishing in-flight requests")
    } else {
        Check::new("draining", "node", State::Up, "no")
    };
    let meta_check = async {
        match meta {
            Some(m) => Some(m.health().await),
            None => None,
        }
    };
    let (meta_check, blob_checks) = futures_util::join!(meta_check, edge.blobs.health());
    let mut checks = vec![routing, drain];
    checks.extend(meta_check);
    checks.extend(blob_checks);
    let ready = snapshot.version > 0 && !draining;
    let status = if !ready {
        "not ready"
    } else if checks.iter().all(|c| c.state == State::Up) {
        "ready"
    } else {
        "degraded"
    };
    Readiness { ready, status, checks }
}

/// Whether the caller asked for JSON: `?format=json` or an `Accept` naming
/// `application/json`.
fn wants_json(query: Option<&str>, headers: &HeaderMap) -> bool {
    let in_query = query.is_some_and(|q| q.split('&').any(|p| p == "format=json"));
    let accepts = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("application/json")));
    in_query || accepts
}

/// The `/readyz` answer (see the module docs for the status code rule).
pub async fn readyz(
    edge: &Edge,
    meta: Option<&Arc<dyn MetaStore>>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    let r = readiness(edge, meta).await;
    let strict = query.is_some_and(|q| q.split('&').any(|p| p == "strict" || p == "strict=1" || p == "strict=true"));
    let ok = r.ready && !(strict && r.checks.iter().any(|c| c.state == State::Down));
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut resp = if wants_json(query, headers) {
        (code, axum::Json(&r)).into_response()
    } else {
        (code, render_text(&r)).into_response()
    };
    // Every probe must see the node's state now, never a cache's.
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    resp
}

/// Plain text: the status on the first line (what `curl` and a human read
/// first), then one dependency a line.
fn render_text(r: &Readiness) -> String {
    let mut out = format!("{}\n", r.status);
    for c in &r.checks {
        out.push_str(&format!("{}: {} ({}): {}\n", c.name, c.state.as_str(), c.backend, one_line(&c.detail)));
    }
    out
}

/// `s` on one line: an error's newlines would break the one-check-a-line form.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_chosen_by_query_or_accept() {
        let mut h = HeaderMap::new();
        assert!(!wants_json(None, &h));
        assert!(wants_json(Some("format=json"), &h));
        assert!(!wants_json(Some("format=jsonx"), &h));
        h.insert(header::ACCEPT, "text/html, application/json;q=0.9".parse().unwrap());
        assert!(wants_json(None, &h));
    }

    #[test]
    fn text_names_each_dependency_on_one_line() {
        let r = Readiness {
            ready: true,
            status: "degraded",
            checks: vec![Check::new("metadata", "postgresql postgres://u@db/c", State::Down, "refused\nline two")],
        };
        assert_eq!(render_text(&r), "degraded\nmetadata: down (postgresql postgres://u@db/c): refused line two\n");
    }
}

//! The node endpoints in process (`oneshot`, no socket) over a real control
//! plane on SQLite: node tokens and how they are kept apart from API tokens,
//! the routing long-poll, heartbeats (hostile ones too), the node list, and
//! the activation wait with edges simulated by what an edge sends over HTTP
//! (a long-poll, then a heartbeat naming the version it got).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chanto_control::nodes::{InProcessEdge, LocalNode};
use chanto_control::{Control, ControlConfig, router};
use chanto_core::ContentHash;
use chanto_store::{BlobStore, LocalBlobStore, MetaStore, RoutingSink, RoutingTable, SqliteMeta, StoreError};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Records routing tables: stands in for an in-process edge.
#[derive(Default)]
struct RecordingSink(Mutex<Vec<RoutingTable>>);

#[async_trait]
impl RoutingSink for RecordingSink {
    async fn publish(&self, table: RoutingTable) -> Result<(), StoreError> {
        self.0.lock().unwrap().push(table);
        Ok(())
    }
}

#[derive(Clone)]
struct Harness {
    control: Arc<Control>,
    token: String,
    _dir: Arc<tempfile::TempDir>,
}

impl Harness {
    async fn new(edge_wait: Duration, in_process_edge: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(SqliteMeta::open(&dir.path().join("meta.db")).unwrap());
        let blobs = Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap());
        let mut config = ControlConfig::new("localhost", 8080);
        config.edge_wait = edge_wait;
        let mut sinks: Vec<Arc<dyn RoutingSink>> = Vec::new();
        if in_process_edge {
            let node = LocalNode {
                node_id: "local-node".into(),
                name: "this-host".into(),
                zone: "z0".into(),
                edge_addr: Some("127.0.0.1:8080".into()),
            };
            sinks.push(InProcessEdge::new(Arc::new(RecordingSink::default()), meta.clone(), node, || (true, false)));
        }
        let control = Control::new(meta, blobs as Arc<dyn BlobStore>, config, sinks);
        control.publish_routing(chanto_store::RoutingChange::All).await.unwrap();
        let token = control.ensure_admin_token().await.unwrap().unwrap();
        Self { control, token, _dir: Arc::new(dir) }
    }

    async fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = router(self.control.clone()).oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
        self.raw(method, path, Some(&self.token), body).await
    }

    /// A new node token, in clear.
    async fn node_token(&self, name: &str) -> String {
        let (s, v) = self.call("POST", "/api/v1/nodes/tokens", json!({ "name": name })).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    async fn heartbeat(&self, token: &str, hb: Value) -> (StatusCode, Value) {
        self.raw("POST", "/api/v1/nodes/heartbeat", Some(token), Body::from(hb.to_string())).await
    }

    /// Deploys one file to `site` (created if new); the finalize answer.
    async fn deploy(&self, site: &str, bytes: &'static [u8]) -> Value {
        let (s, _) = self.call("GET", &format!("/api/v1/sites/{site}"), Value::Null).await;
        if s == StatusCode::NOT_FOUND {
            let (s, v) = self.call("POST", "/api/v1/sites", json!({ "name": site })).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let files = json!({ "index.html": { "hash": ContentHash::of(bytes).to_hex(), "size": bytes.len() } });
        let (s, created) = self.call("POST", &format!("/api/v1/sites/{site}/deploys"), json!({ "files": files })).await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let id = created["deploy"]["id"].as_str().unwrap().to_owned();
        if !created["required"].as_array().unwrap().is_empty() {
            let hash = ContentHash::of(bytes);
            let (s, v) = self
                .raw("PUT", &format!("/api/v1/deploys/{id}/blobs/{hash}"), Some(&self.token), Body::from(bytes))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let (s, v) = self.call("POST", &format!("/api/v1/deploys/{id}/finalize"), Value::Null).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

fn hb(node: &str, zone: &str, version: u64) -> Value {
    json!({
        "node_id": node, "name": format!("edge-{node}"), "zone": zone, "role": "edge",
        "routing_version": version, "snapshot_age_ms": 10, "ready": true, "draining": false,
        "refused": null, "software": "test", "edge_addr": "10.0.0.9:8080",
    })
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

/// An edge as the wire sees it: long-polls for newer snapshots and reports
/// each one it got in a heartbeat, until `stop`.
fn simulated_edge(h: &Harness, token: String, node: &'static str, zone: &'static str) -> tokio::task::JoinHandle<()> {
    let h = h.clone();
    tokio::spawn(async move {
        let mut version = 0u64;
        loop {
            let (s, v) = h
                .raw("GET", &format!("/api/v1/nodes/routing?after={version}&wait=30"), Some(&token), Body::empty())
                .await;
            match s {
                StatusCode::OK => {
                    assert_eq!(v["format"], 1, "{v}");
                    version = v["version"].as_u64().unwrap();
                    let (s, ack) = h.heartbeat(&token, hb(node, zone, version)).await;
                    assert_eq!(s, StatusCode::OK, "{ack}");
                }
                StatusCode::NOT_MODIFIED => {}
                other => panic!("long-poll answered {other}: {v}"),
            }
        }
    })
}

#[tokio::test]
async fn node_tokens_and_api_tokens_never_stand_in_for_each_other() {
    let h = Harness::new(Duration::ZERO, false).await;
    let node = h.node_token("zone-a").await;
    assert!(node.starts_with("chn_") && node.len() > 60, "{node}");
    // Listed without the token.
    let (s, list) = h.call("GET", "/api/v1/nodes/tokens", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "zone-a");
    assert!(list[0]["revoked_at"].is_null());
    assert!(!list.to_string().contains(&node));
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("nt_"), "{id}");

    // A node token opens the node endpoints and nothing else.
    let (s, _) = h.raw("GET", "/api/v1/nodes/routing?after=0&wait=0", Some(&node), Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    for (method, path) in [
        ("GET", "/api/v1/sites"),
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/nodes/tokens"),
        ("POST", "/api/v1/nodes/tokens"),
        ("POST", "/api/v1/gc"),
    ] {
        let (s, v) = h.raw(method, path, Some(&node), Body::from(r#"{"name":"x"}"#)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        assert!(message(&v).contains("node token is accepted only by"), "{v}");
    }
    // The admin token opens no node endpoint.
    for (method, path) in [("GET", "/api/v1/nodes/routing"), ("POST", "/api/v1/nodes/heartbeat")] {
        let (s, v) = h.raw(method, path, Some(&h.token), Body::from(hb("n", "a", 0).to_string())).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert!(message(&v).contains("never the admin token"), "{v}");
        let (s, v) = h.raw(method, path, None, Body::empty()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
        assert!(message(&v).contains("chanto nodes token create"), "{v}");
        let (s, v) = h.raw(method, path, Some("chn_forged"), Body::empty()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
        let (s, v) = h.raw(method, path, Some("something-else"), Body::empty()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, _) = h.raw(method, path, Some(&format!("chn_{}", "a".repeat(5000))), Body::empty()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }

    // Names are checked; bodies are bounded.
    for bad in [json!({ "name": "" }), json!({ "name": "a b" }), json!({ "name": "x".repeat(65) })] {
        let (s, v) = h.call("POST", "/api/v1/nodes/tokens", bad).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["field"], "name");
    }
    let (s, _) = h.call("POST", "/api/v1/nodes/tokens", json!({ "name": "x", "extra": 1 })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = h.call("POST", "/api/v1/nodes/tokens", json!({ "name": "y".repeat(70 << 10) })).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // Revocation: refused at once, listed with its time; again is harmless; unknown is 404.
    let (s, v) = h.call("DELETE", &format!("/api/v1/nodes/tokens/{id}"), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].is_string());
    let (s, v) = h.raw("GET", "/api/v1/nodes/routing?after=0&wait=0", Some(&node), Body::empty()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(message(&v).contains("revoked"), "{v}");
    let (s, _) = h.heartbeat(&node, hb("n1", "a", 0)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, again) = h.call("DELETE", &format!("/api/v1/nodes/tokens/{id}"), Value::Null).await;
    assert_eq!((s, &again["revoked_at"]), (StatusCode::OK, &v_revoked_at(&h, &id).await));
    let (s, v) = h.call("DELETE", "/api/v1/nodes/tokens/nt_nope", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    // Another token still works.
    let other = h.node_token("zone-b").await;
    let (s, _) = h.raw("GET", "/api/v1/nodes/routing?after=0&wait=0", Some(&other), Body::empty()).await;
    assert_eq!(s, StatusCode::OK);

    // The tokens are stored as hashes only.
    let db = std::fs::read(h._dir.path().join("meta.db-wal")).unwrap_or_default();
    assert!(!db.windows(other.len()).any(|w| w == other.as_bytes()), "a node token is in clear in the database");
}

async fn v_revoked_at(h: &Harness, id: &str) -> Value {
    let (_, list) = h.call("GET", "/api/v1/nodes/tokens", Value::Null).await;
    list.as_array().unwrap().iter().find(|t| t["id"] == id).unwrap()["revoked_at"].clone()
}

#[tokio::test]
async fn the_routing_long_poll_answers_new_versions_at_once_and_waits_otherwise() {
    let h = Harness::new(Duration::ZERO, false).await;
    let node = h.node_token("edges").await;
    let get = |q: String| {
        let (h, node) = (h.clone(), node.clone());
        async move { h.raw("GET", &format!("/api/v1/nodes/routing?{q}"), Some(&node), Body::empty()).await }
    };
    let (s, snap) = get("after=0".into()).await;
    assert_eq!(s, StatusCode::OK);
    let v1 = snap["version"].as_u64().unwrap();
    assert!(v1 >= 1, "{snap}");
    assert_eq!(snap["table"]["version"], v1);
    assert!(snap["published_at"].as_i64().unwrap() > 0);

    // Nothing newer: 304 once the wait is over.
    let t = Instant::now();
    let (s, body) = get(format!("after={v1}&wait=1")).await;
    assert_eq!((s, body), (StatusCode::NOT_MODIFIED, Value::Null));
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A deploy while a long-poll waits ends it at once with the new version.
    let waiting = tokio::spawn(get(format!("after={v1}&wait=30")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    h.deploy("docs", b"<h1>one</h1>").await;
    let (s, snap) = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("prompt").unwrap();
    assert_eq!(s, StatusCode::OK);
    let v2 = snap["version"].as_u64().unwrap();
    assert!(v2 > v1);
    assert_eq!(snap["table"]["branches"][0]["site"], "docs", "{snap}");
    assert!(t.elapsed() < Duration::from_secs(3));

    // Hostile queries name the parameter.
    for (q, field) in [("after=abc", "after"), ("wait=999", "wait"), ("wait=-1", "wait"), ("after=1e3", "after")] {
        let (s, v) = get(q.into()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert_eq!(v["error"]["field"], field, "{q}: {v}");
    }

    // Stopping ends every long-poll at once.
    let waiting = tokio::spawn(get(format!("after={v2}&wait=60")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.control.nodes.close();
    let (s, _) = tokio::time::timeout(Duration::from_secs(2), waiting).await.expect("ended on close").unwrap();
    assert_eq!(s, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn heartbeats_are_checked_recorded_and_listed() {
    let h = Harness::new(Duration::ZERO, false).await;
    let node = h.node_token("edges").await;
    let current = h.control.published_version();
    let (s, ack) = h.heartbeat(&node, hb("n-a", "zone-a", current)).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack["routing_version"], current);
    let refusing = json!({
        "node_id": "n-b", "name": "edge-b", "zone": "zone-b", "role": "edge", "routing_version": 0,
        "snapshot_age_ms": null, "ready": false, "draining": false,
        "refused": { "version": current, "error": format!("blob {} is missing {}", "b3".repeat(10), "x".repeat(5000)) },
        "software": "test", "edge_addr": null,
    });
    assert_eq!(h.heartbeat(&node, refusing).await.0, StatusCode::OK);

    let (s, list) = h.call("GET", "/api/v1/nodes", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["routing_version"], current);
    let nodes = list["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{list}");
    let a = &nodes[0];
    assert_eq!(
        (a["node_id"].as_str(), a["zone"].as_str(), a["role"].as_str()),
        (Some("n-a"), Some("zone-a"), Some("edge"))
    );
    assert_eq!((a["lag"].as_u64(), a["healthy"].as_bool(), a["ready"].as_bool()), (Some(0), Some(true), Some(true)));
    assert!(a["last_heartbeat_age_ms"].as_u64().unwrap() < 5000);
    let b = &nodes[1];
    assert_eq!(b["lag"], current);
    assert_eq!(b["refused"]["version"], current);
    assert!(b["refused"]["error"].as_str().unwrap().chars().count() <= 2001, "long refusals are cut");

    // Hostile heartbeats: 400 naming the field, 413 when oversized; nothing recorded.
    let cases: Vec<(Body, StatusCode, Option<&str>)> = vec![
        (Body::from("{not json"), StatusCode::BAD_REQUEST, None),
        (Body::from(""), StatusCode::BAD_REQUEST, None),
        (Body::from("[]"), StatusCode::BAD_REQUEST, None),
        (Body::from(json!({ "node_id": "x" }).to_string()), StatusCode::BAD_REQUEST, None),
        (
            Body::from(with(&hb("x", "a", 1), "routing_version", json!("seven")).to_string()),
            StatusCode::BAD_REQUEST,
            Some("routing_version"),
        ),
        (
            Body::from(with(&hb("x", "a", 1), "routing_version", json!(-1)).to_string()),
            StatusCode::BAD_REQUEST,
            Some("routing_version"),
        ),
        (Body::from(with(&hb("x", "a", 1), "role", json!("king")).to_string()), StatusCode::BAD_REQUEST, Some("role")),
        (
            Body::from(with(&hb("x", "a", 1), "zone", json!("a zone")).to_string()),
            StatusCode::BAD_REQUEST,
            Some("zone"),
        ),
        (Body::from(with(&hb("x", "a", 1), "zone", json!("")).to_string()), StatusCode::BAD_REQUEST, Some("zone")),
        (Body::from(with(&hb("", "a", 1), "name", json!("n")).to_string()), StatusCode::BAD_REQUEST, Some("node_id")),
        (
            Body::from(with(&hb("x", "a", 1), "node_id", json!("y".repeat(200))).to_string()),
            StatusCode::BAD_REQUEST,
            Some("node_id"),
        ),
        (
            Body::from(with(&hb("x", "a", 1), "name", json!("evil\nname")).to_string()),
            StatusCode::BAD_REQUEST,
            Some("name"),
        ),
        (
            Body::from(with(&hb("x", "a", 1), "routing_version", json!(u64::MAX)).to_string()),
            StatusCode::BAD_REQUEST,
            Some("routing_version"),
        ),
        (Body::from(format!("{} ", hb("x", "a", 1)) + "{}"), StatusCode::BAD_REQUEST, None),
        (
            Body::from(with(&hb("x", "a", 1), "edge_addr", json!("e".repeat(70 << 10))).to_string()),
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
    ];
    for (i, (body, want, field)) in cases.into_iter().enumerate() {
        let (s, v) = h.raw("POST", "/api/v1/nodes/heartbeat", Some(&node), body).await;
        assert_eq!(s, want, "case {i}: {v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "case {i}: {v}");
        }
    }
    let (_, list) = h.call("GET", "/api/v1/nodes", Value::Null).await;
    assert_eq!(list["nodes"].as_array().unwrap().len(), 2, "no hostile heartbeat was recorded: {list}");
}

fn with(v: &Value, key: &str, value: Value) -> Value {
    let mut v = v.clone();
    v[key] = value;
    v
}

#[tokio::test]
async fn an_activation_waits_for_every_healthy_edge_and_names_those_that_lag() {
    let h = Harness::new(Duration::from_secs(1), false).await;
    let node = h.node_token("edges").await;

    // No edges: nothing to wait for.
    let d = h.deploy("docs", b"v1").await;
    assert_eq!((d["edges"]["live"].as_u64(), d["edges"]["total"].as_u64()), (Some(0), Some(0)), "{d}");
    assert!(d["edges"]["waited_ms"].as_u64().unwrap() < 500, "{d}");

    // Two edges that follow the long-poll: live on both, without the bounded wait.
    let edges = [simulated_edge(&h, node.clone(), "e-a", "zone-a"), simulated_edge(&h, node.clone(), "e-b", "zone-b")];
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (_, list) = h.call("GET", "/api/v1/nodes", Value::Null).await;
            if list["nodes"].as_array().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both edges report");
    let d = h.deploy("docs", b"v2").await;
    let e = &d["edges"];
    assert_eq!((e["live"].as_u64(), e["total"].as_u64()), (Some(2), Some(2)), "{d}");
    assert!(e["lagging"].as_array().unwrap().is_empty(), "{d}");
    assert!(e["waited_ms"].as_u64().unwrap() < 1000, "{d}");
    assert_eq!(e["version"].as_u64(), Some(h.control.published_version()));

    // A third edge that stopped pulling: the activation waits the bounded
    // time and names it; a draining one does not count.
    let stale = h.control.published_version();
    assert_eq!(h.heartbeat(&node, hb("e-c", "zone-c", stale)).await.0, StatusCode::OK);
    assert_eq!(h.heartbeat(&node, with(&hb("e-d", "zone-d", 0), "draining", json!(true))).await.0, StatusCode::OK);
    let t = Instant::now();
    let d = h.deploy("docs", b"v3").await;
    let e = &d["edges"];
    assert!(t.elapsed() >= Duration::from_millis(950) && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!((e["live"].as_u64(), e["total"].as_u64()), (Some(2), Some(3)), "{d}");
    assert_eq!(e["lagging"][0]["name"], "edge-e-c");
    assert_eq!(e["lagging"][0]["zone"], "zone-c");
    assert_eq!(e["lagging"][0]["routing_version"], stale);

    // An edge that refuses the version ends the wait too, and is named with its error.
    let refused = with(
        &hb("e-c", "zone-c", stale),
        "refused",
        json!({ "version": h.control.published_version() + 1, "error": "blob of site docs is missing" }),
    );
    let h2 = h.clone();
    let node2 = node.clone();
    let refuser = tokio::spawn(async move {
        // Once the next version is out, e-c reports it refused it.
        let v = h2.control.published_version();
        while h2.control.published_version() == v {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(h2.heartbeat(&node2, refused).await.0, StatusCode::OK);
    });
    let t = Instant::now();
    let (s, rb) = h.call("POST", "/api/v1/sites/docs/rollback", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{rb}");
    refuser.await.unwrap();
    let e = &rb["edges"];
    assert!(t.elapsed() < Duration::from_millis(900), "{:?}: {rb}", t.elapsed());
    assert_eq!((e["live"].as_u64(), e["total"].as_u64()), (Some(2), Some(3)), "{rb}");
    assert!(e["lagging"].as_array().unwrap().is_empty(), "{rb}");
    assert_eq!(e["refused"][0]["name"], "edge-e-c");
    assert_eq!(e["refused"][0]["error"], "blob of site docs is missing");

    // Publish answers carry it too.
    let id = rb["from"].as_str().unwrap();
    let (s, p) = h.call("POST", &format!("/api/v1/deploys/{id}/publish"), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["edges"]["total"], 3, "{p}");
    for e in edges {
        e.abort();
    }
}

#[tokio::test]
async fn the_in_process_edge_is_a_node_that_reports_when_it_serves() {
    let h = Harness::new(Duration::from_secs(5), true).await;
    let t = Instant::now();
    let d = h.deploy("docs", b"<p>hi</p>").await;
    let e = &d["edges"];
    assert_eq!((e["live"].as_u64(), e["total"].as_u64()), (Some(1), Some(1)), "{d}");
    assert!(t.elapsed() < Duration::from_secs(2), "no waiting for the in-process edge: {:?}", t.elapsed());
    let (_, list) = h.call("GET", "/api/v1/nodes", Value::Null).await;
    let n = &list["nodes"][0];
    assert_eq!(
        (n["node_id"].as_str(), n["role"].as_str(), n["zone"].as_str()),
        (Some("local-node"), Some("all"), Some("z0"))
    );
    assert_eq!(n["routing_version"].as_u64(), Some(h.control.published_version()));
    assert_eq!((n["lag"].as_u64(), n["healthy"].as_bool()), (Some(0), Some(true)));
}

#[tokio::test]
async fn the_openapi_document_has_the_node_endpoints() {
    let h = Harness::new(Duration::ZERO, false).await;
    let (s, v) = h.raw("GET", "/api/v1/openapi.json", None, Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/api/v1/nodes",
        "/api/v1/nodes/routing",
        "/api/v1/nodes/heartbeat",
        "/api/v1/nodes/tokens",
        "/api/v1/nodes/tokens/{id}",
    ] {
        assert!(v["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(v["components"]["securitySchemes"]["node_token"].is_object());
    assert_eq!(v["paths"]["/api/v1/nodes/routing"]["get"]["security"][0]["node_token"], json!([]));
}

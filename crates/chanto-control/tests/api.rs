//! The API in process (`oneshot`, no socket) over real stores: a SQLite
//! database and a blob directory in a temp dir. Edges are represented by a
//! sink that records every routing table it is handed.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chanto_control::{Control, ControlConfig, router};
use chanto_core::ContentHash;
use chanto_store::{BlobStore, LocalBlobStore, MetaStore, RoutingSink, RoutingTable, SqliteMeta, StoreError};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Records routing tables (stands in for an edge; the edge has its own tests).
#[derive(Default)]
struct RecordingSink(Mutex<Vec<RoutingTable>>);

#[async_trait]
impl RoutingSink for RecordingSink {
    async fn publish(&self, table: RoutingTable) -> Result<(), StoreError> {
        self.0.lock().unwrap().push(table);
        Ok(())
    }
}

struct Harness {
    control: Arc<Control>,
    sink: Arc<RecordingSink>,
    blobs: Arc<LocalBlobStore>,
    token: String,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    async fn with_config(f: impl FnOnce(&mut ControlConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(SqliteMeta::open(&dir.path().join("meta.db")).unwrap());
        let blobs = Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap());
        let sink = Arc::new(RecordingSink::default());
        let mut config = ControlConfig::new("localhost", 8080);
        f(&mut config);
        let control =
            Control::new(meta, blobs.clone() as Arc<dyn BlobStore>, config, vec![sink.clone() as Arc<dyn RoutingSink>]);
        let token = control.ensure_admin_token().await.unwrap().unwrap();
        assert!(control.ensure_admin_token().await.unwrap().is_none(), "only the first start creates a token");
        Self { control, sink, blobs, token, _dir: dir }
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
        content_type: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header("content-type", content_type);
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
        self.raw(method, path, Some(&self.token), body, "application/json").await
    }

    async fn upload(&self, id: &str, bytes: &'static [u8]) -> (StatusCode, Value) {
        let hash = ContentHash::of(bytes);
        self.raw(
            "PUT",
            &format!("/api/v1/deploys/{id}/blobs/{hash}"),
            Some(&self.token),
            Body::from(bytes),
            "application/octet-stream",
        )
        .await
    }

    /// Creates a deploy of `files`, uploads what is required and finalizes it.
    async fn deploy(&self, site: &str, branch: Option<&str>, files: &[(&str, &'static [u8])], draft: bool) -> Value {
        let manifest: serde_json::Map<String, Value> = files
            .iter()
            .map(|(p, b)| (p.to_string(), json!({"hash": ContentHash::of(b).to_hex(), "size": b.len()})))
            .collect();
        let (s, created) = self
            .call(
                "POST",
                &format!("/api/v1/sites/{site}/deploys"),
                json!({"branch": branch, "draft": draft, "files": manifest}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let id = created["deploy"]["id"].as_str().unwrap().to_owned();
        let required: Vec<String> = serde_json::from_value(created["required"].clone()).unwrap();
        for (_, b) in files {
            if required.contains(&ContentHash::of(b).to_hex()) {
                let (s, v) = self.upload(&id, b).await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
            }
        }
        let (s, v) = self.call("POST", &format!("/api/v1/deploys/{id}/finalize"), Value::Null).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    async fn site(&self, name: &str) {
        let (s, v) = self.call("POST", "/api/v1/sites", json!({"name": name})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    fn last_table(&self) -> RoutingTable {
        self.sink.0.lock().unwrap().last().cloned().expect("a routing table was published")
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let h = Harness::new().await;
    let (s, v) = h.raw("GET", "/api/v1/sites", None, Body::empty(), "application/json").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&v), "unauthorized");
    assert!(v["error"]["message"].as_str().unwrap().contains("CHANTO_TOKEN"));
    let (s, _) = h.raw("GET", "/api/v1/sites", Some("chanto_wrong"), Body::empty(), "application/json").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let long = "x".repeat(10_000);
    let (s, _) = h.raw("GET", "/api/v1/sites", Some(&long), Body::empty(), "application/json").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = h.call("GET", "/api/v1/sites", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!([]));
    // The token is stored only as a hash: its bytes are in no file of the
    // store (the database, its write-ahead log, the blob directory).
    let mut files = Vec::new();
    let mut todo = vec![h._dir.path().to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() { todo.push(e.path()) } else { files.push(e.path()) }
        }
    }
    assert!(files.iter().any(|f| f.ends_with("meta.db-wal")), "the search covers the write-ahead log: {files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(h.token.len()).any(|w| w == h.token.as_bytes()),
            "the token is in clear in {}",
            f.display()
        );
    }
}

#[tokio::test]
async fn openapi_document_is_public_and_complete() {
    let h = Harness::new().await;
    let (s, v) = h.raw("GET", "/api/v1/openapi.json", None, Body::empty(), "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/sites",
        "/api/v1/sites/{site}",
        "/api/v1/sites/{site}/deploys",
        "/api/v1/sites/{site}/rollback",
        "/api/v1/deploys/{id}",
        "/api/v1/deploys/{id}/blobs/{hash}",
        "/api/v1/deploys/{id}/finalize",
        "/api/v1/deploys/{id}/publish",
    ] {
        assert!(v["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(v["components"]["schemas"]["DeployView"].is_object());
    assert!(v["components"]["securitySchemes"]["token"].is_object());
    let (s, v) = h.call("GET", "/api/v1/nope", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(code(&v), "not_found");
}

#[tokio::test]
async fn sites_are_validated() {
    let h = Harness::new().await;
    h.site("docs").await;
    let (s, v) = h.call("POST", "/api/v1/sites", json!({"name": "docs"})).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "conflict"));
    for bad in ["Docs", "a--b", "-x", "", "a.b", "x/y"] {
        let (s, v) = h.call("POST", "/api/v1/sites", json!({"name": bad})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
        assert_eq!(code(&v), "invalid_json");
        assert_eq!(v["error"]["field"], "name");
        assert!(v["error"]["message"].as_str().unwrap().contains("site name"), "{v}");
    }
    let (s, v) = h.call("POST", "/api/v1/sites", json!({"name": "x", "surprise": 1})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("surprise"));
    let (s, v) = h.raw("POST", "/api/v1/sites", Some(&h.token), Body::from("{\"name\": "), "application/json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("line 1"), "{v}");
    let (s, v) =
        h.call("POST", "/api/v1/sites/docs/deploys", json!({"files": {"a.html": {"hash": "nothex", "size": 1}}})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("files.a.html.hash")), "{v}");
    let (s, v) = h.call("GET", "/api/v1/sites/nope", Value::Null).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = h.call("GET", "/api/v1/sites/NOPE", Value::Null).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("name")));
    let (s, v) = h.call("GET", "/api/v1/sites/docs", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["url"], "http://docs.localhost:8080/");
}

#[tokio::test]
async fn a_deploy_uploads_only_what_is_missing_and_goes_live_on_finalize() {
    let h = Harness::new().await;
    h.site("docs").await;
    let d1 = h.deploy("docs", None, &[("index.html", b"v1"), ("a/shared.css", b"body{}")], false).await;
    assert_eq!(d1["state"], "active");
    assert_eq!(d1["branch"], "main");
    assert_eq!(d1["urls"]["production"], "http://docs.localhost:8080/");
    assert_eq!(d1["urls"]["branch"], "http://main--docs.localhost:8080/");
    let id1 = d1["id"].as_str().unwrap();
    assert_eq!(d1["urls"]["permalink"], format!("http://{id1}--docs.localhost:8080/"));
    let t = h.last_table();
    assert_eq!(t.branches().count(), 1);
    assert_eq!(t.branches().next().unwrap().deploy.as_str(), id1);

    // The second deploy shares a blob: only the changed one is required.
    let files = json!({
        "index.html": {"hash": ContentHash::of(b"v2").to_hex(), "size": 2},
        "a/shared.css": {"hash": ContentHash::of(b"body{}").to_hex(), "size": 6},
    });
    let (s, created) = h.call("POST", "/api/v1/sites/docs/deploys", json!({"files": files, "message": "two"})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(created["required"], json!([ContentHash::of(b"v2").to_hex()]));
    let id2 = created["deploy"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["deploy"]["state"], "uploading");

    // Finalizing before the upload: refused, names what is missing, nothing changes.
    let tables_before = h.sink.0.lock().unwrap().len();
    let (s, v) = h.call("POST", &format!("/api/v1/deploys/{id2}/finalize"), Value::Null).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "missing_blobs"));
    assert_eq!(v["error"]["details"]["missing"], json!([ContentHash::of(b"v2").to_hex()]));
    assert_eq!(h.sink.0.lock().unwrap().len(), tables_before);

    // Bytes that do not match the hash in the URL: 400, not stored.
    let claimed = ContentHash::of(b"v2");
    let (s, v) = h
        .raw(
            "PUT",
            &format!("/api/v1/deploys/{id2}/blobs/{claimed}"),
            Some(&h.token),
            Body::from("ev"),
            "application/octet-stream",
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "hash_mismatch"));
    assert!(!h.blobs.has(&claimed).await.unwrap());
    // A blob the deploy never declared: refused.
    let (s, v) = h.upload(&id2, b"stranger").await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "not_in_deploy"));
    // A malformed hash in the URL.
    let (s, v) = h
        .raw(
            "PUT",
            &format!("/api/v1/deploys/{id2}/blobs/..%2F..%2Fetc"),
            Some(&h.token),
            Body::from("x"),
            "application/octet-stream",
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("hash")));

    let (s, _) = h.upload(&id2, b"v2").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, d2) = h.call("POST", &format!("/api/v1/deploys/{id2}/finalize"), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{d2}");
    assert_eq!(d2["state"], "active");
    assert_eq!(d2["message"], "two");

    // A finalized deploy takes no uploads and no second finalize.
    let (s, v) = h.upload(&id2, b"v2").await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "deploy_not_uploading"));
    // Finalizing again (a client retrying after a timeout) answers the deploy unchanged.
    let (s, v) = h.call("POST", &format!("/api/v1/deploys/{id2}/finalize"), Value::Null).await;
    assert_eq!((s, &v["state"], &v["id"]), (StatusCode::OK, &json!("active"), &json!(id2)));

    let (s, v) = h.call("GET", &format!("/api/v1/deploys/{id1}"), Value::Null).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("superseded")));
    let (s, v) = h.call("GET", "/api/v1/sites/docs/deploys", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["id"], id2.as_str());
    let (s, v) = h.call("GET", "/api/v1/deploys/0000000000000000", Value::Null).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, _) = h.call("GET", "/api/v1/deploys/zz", Value::Null).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_manifests_are_refused_with_the_path_named() {
    let h = Harness::with_config(|c| {
        c.max_file_size = 1000;
        c.max_files = 3;
    })
    .await;
    h.site("docs").await;
    let hash = ContentHash::of(b"x").to_hex();
    let cases = [
        ("../etc/passwd", "\"../etc/passwd\""),
        ("/abs.html", "\"/abs.html\""),
        ("a\\b", "a\\\\b"),
        ("a\u{0}b", "a\\0b"),
        ("a//b", "a//b"),
    ];
    for (path, shown) in cases {
        let (s, v) =
            h.call("POST", "/api/v1/sites/docs/deploys", json!({"files": {path: {"hash": hash, "size": 1}}})).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path:?}: {v}");
        let field = v["error"]["field"].as_str().unwrap();
        assert!(field.starts_with("files[") && field.contains(shown), "{path:?}: field {field}");
    }
    let (s, v) = h.call("POST", "/api/v1/sites/docs/deploys", json!({"files": {}})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("files")));
    assert!(v["error"]["message"].as_str().unwrap().contains("no files"));
    let (s, v) =
        h.call("POST", "/api/v1/sites/docs/deploys", json!({"files": {"big.bin": {"hash": hash, "size": 1001}}})).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "file_too_large"));
    assert!(v["error"]["field"].as_str().unwrap().contains("big.bin"));
    let four: serde_json::Map<String, Value> =
        (0..4).map(|i| (format!("f{i}"), json!({"hash": hash, "size": 1}))).collect();
    let (s, v) = h.call("POST", "/api/v1/sites/docs/deploys", json!({"files": four})).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "too_many_files"));
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/sites/docs/deploys",
            json!({"files": {"a.html": {"hash": hash, "size": 1}, "./a.html": {"hash": hash, "size": 1}}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) =
        h.call("POST", "/api/v1/sites/docs/deploys", json!({"files": {"a.html": {"hash": "nothex", "size": 1}}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/sites/docs/deploys",
            json!({"branch": "bad..branch", "files": {"a.html": {"hash": hash, "size": 1}}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = h
        .call(
            "POST",
            "/api/v1/sites/docs/deploys",
            json!({"message": "m".repeat(5000), "files": {"a.html": {"hash": hash, "size": 1}}}),
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("message")));
    let (s, _) =
        h.call("POST", "/api/v1/sites/ghost/deploys", json!({"files": {"a.html": {"hash": hash, "size": 1}}})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // An oversized JSON body is cut off, not buffered without bound.
    let huge = format!(
        "{{\"files\": {{\"a\": {{\"hash\": \"{}\", \"size\": 1}}}}}}",
        "a".repeat(chanto_control::api::MAX_JSON_BYTES + 10)
    );
    let (s, _) =
        h.raw("POST", "/api/v1/sites/docs/deploys", Some(&h.token), Body::from(huge), "application/json").await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing of this was recorded.
    let (_, v) = h.call("GET", "/api/v1/sites/docs/deploys", Value::Null).await;
    assert_eq!(v, json!([]));
    // An upload larger than its declared size is refused.
    let (_, created) =
        h.call("POST", "/api/v1/sites/docs/deploys", json!({"files": {"a.html": {"hash": hash, "size": 1}}})).await;
    let id = created["deploy"]["id"].as_str().unwrap();
    let (s, v) = h
        .raw(
            "PUT",
            &format!("/api/v1/deploys/{id}/blobs/{hash}"),
            Some(&h.token),
            Body::from("xx"),
            "application/octet-stream",
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
}

#[tokio::test]
async fn publish_and_rollback_flip_the_pointer_without_uploads() {
    let h = Harness::new().await;
    h.site("docs").await;
    let d1 = h.deploy("docs", None, &[("index.html", b"one")], false).await;
    let d2 = h.deploy("docs", None, &[("index.html", b"two")], false).await;
    let d3 = h.deploy("docs", None, &[("index.html", b"three")], false).await;
    let active = |t: &RoutingTable| t.branches().find(|r| r.production).map(|r| r.deploy.to_string());
    assert_eq!(active(&h.last_table()).as_deref(), d3["id"].as_str());

    let (s, v) = h.call("POST", "/api/v1/sites/docs/rollback", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["from"], d3["id"]);
    assert_eq!(v["deploy"]["id"], d2["id"]);
    assert_eq!(v["deploy"]["state"], "active");
    assert_eq!(active(&h.last_table()).as_deref(), d2["id"].as_str());
    let (s, v) = h.call("POST", "/api/v1/sites/docs/rollback", json!({"branch": "main"})).await;
    assert_eq!((s, &v["deploy"]["id"]), (StatusCode::OK, &d1["id"]));
    let (s, v) = h.call("POST", "/api/v1/sites/docs/rollback", Value::Null).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "conflict"));
    assert!(v["error"]["message"].as_str().unwrap().contains("chanto publish"));
    let (s, v) = h.call("POST", "/api/v1/sites/docs/rollback", json!({"branch": "nope"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = h.call("POST", "/api/v1/sites/docs/rollback", json!({"bogus": 1})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Publishing the newest deploy again ("roll forward").
    let id3 = d3["id"].as_str().unwrap();
    let (s, v) = h.call("POST", &format!("/api/v1/deploys/{id3}/publish"), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["previous"], d1["id"]);
    assert_eq!(active(&h.last_table()).as_deref(), Some(id3));

    // Drafts are ready, reachable by permalink only, and publishable.
    let draft = h.deploy("docs", None, &[("index.html", b"draft")], true).await;
    assert_eq!(draft["state"], "ready");
    assert_eq!(draft["draft"], true);
    let t = h.last_table();
    assert_eq!(active(&t).as_deref(), Some(id3));
    assert!(t.permalinks().any(|p| p.deploy.as_str() == draft["id"].as_str().unwrap()));
    let (s, v) =
        h.call("POST", &format!("/api/v1/deploys/{}/publish", draft["id"].as_str().unwrap()), Value::Null).await;
    assert_eq!((s, v["deploy"]["state"].as_str()), (StatusCode::OK, Some("active")));

    // Branches are separate environments.
    let dev = h.deploy("docs", Some("feature/Login"), &[("index.html", b"dev")], false).await;
    assert_eq!(dev["urls"]["branch"], "http://feature-login--docs.localhost:8080/");
    assert!(dev["urls"]["production"].is_null());
    assert_eq!(h.last_table().branches().count(), 2);

    // Publishing an unfinished deploy is refused.
    let (_, created) = h
        .call(
            "POST",
            "/api/v1/sites/docs/deploys",
            json!({"files": {"x": {"hash": ContentHash::of(b"q").to_hex(), "size": 1}}}),
        )
        .await;
    let (s, v) = h
        .call("POST", &format!("/api/v1/deploys/{}/publish", created["deploy"]["id"].as_str().unwrap()), Value::Null)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "conflict"));

    // Deleting the site stops serving it.
    let (s, _) = h.call("DELETE", "/api/v1/sites/docs", Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(h.last_table().branches().next().is_none());
    let (s, _) = h.call("DELETE", "/api/v1/sites/docs", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn compressible_files_get_variants_once() {
    let h = Harness::new().await;
    h.site("docs").await;
    static HTML: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| "<p>chanto</p>\n".repeat(500).into_bytes());
    static PNG: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| vec![0u8; 5000]);
    let html: &'static [u8] = &HTML;
    let png: &'static [u8] = &PNG;
    h.deploy("docs", None, &[("index.html", html), ("img.png", png), ("tiny.css", b"a{}")], false).await;
    let manifest_hash = h.last_table().branches().next().unwrap().manifest;
    let manifest: chanto_core::Manifest = serde_json::from_slice(&h.blobs.get(&manifest_hash).await.unwrap()).unwrap();
    let entry = &manifest.files["index.html"];
    assert_eq!(entry.content_type, "text/html; charset=utf-8");
    let encodings: Vec<_> = entry.variants.iter().map(|v| v.encoding).collect();
    assert_eq!(encodings, vec![chanto_core::Encoding::Br, chanto_core::Encoding::Gzip]);
    for v in &entry.variants {
        assert!(v.size < entry.size / 10);
        assert_eq!(h.blobs.get(&v.hash).await.unwrap().len() as u64, v.size);
    }
    assert!(manifest.files["img.png"].variants.is_empty(), "images are not compressed");
    assert!(manifest.files["tiny.css"].variants.is_empty(), "tiny files are not compressed");

    // The same source in a later deploy reuses the recorded variant: delete the
    // variant blob, deploy again, and it is not made again.
    let br = entry.variants[0].hash;
    h.blobs.delete(&br).await.unwrap();
    h.deploy("docs", Some("other"), &[("copy.html", html)], false).await;
    assert!(!h.blobs.has(&br).await.unwrap(), "variant was recomputed");
}

/// A small redeploy: the changed file is compressed as it arrives, before
/// finalize asks for it, and unchanged files keep the variants they had.
#[tokio::test]
async fn a_small_redeploy_compresses_on_arrival_and_keeps_unchanged_variants() {
    use chanto_control::precompress::compress;
    use chanto_core::Encoding;
    let h = Harness::new().await;
    h.site("docs").await;
    static PAGES: std::sync::LazyLock<[Vec<u8>; 3]> = std::sync::LazyLock::new(|| {
        ["home", "about", "home, edited"].map(|w| format!("<p>{w}</p>\n").repeat(400).into_bytes())
    });
    let [home, about, edited]: [&'static [u8]; 3] = [&PAGES[0], &PAGES[1], &PAGES[2]];
    h.deploy("docs", None, &[("index.html", home), ("about.html", about)], false).await;
    let first = manifest_of(&h, &h.last_table().branches().next().unwrap().manifest).await;
    assert_eq!(first.files["about.html"].variants.len(), 2);

    let (_, created) = h
        .call(
            "POST",
            "/api/v1/sites/docs/deploys",
            json!({"files": {
                "index.html": {"hash": ContentHash::of(edited).to_hex(), "size": edited.len()},
                "about.html": {"hash": ContentHash::of(about).to_hex(), "size": about.len()},
            }}),
        )
        .await;
    assert_eq!(created["required"], json!([ContentHash::of(edited).to_hex()]));
    let id = created["deploy"]["id"].as_str().unwrap().to_owned();
    h.upload(&id, edited).await;
    // Its variants appear without a finalize.
    let config = &h.control.config;
    let br = ContentHash::of(&compress(edited, Encoding::Br, config.brotli_quality, config.gzip_level));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !h.blobs.has(&br).await.unwrap() {
        assert!(std::time::Instant::now() < deadline, "the uploaded page was not compressed on arrival");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (s, v) = h.call("POST", &format!("/api/v1/deploys/{id}/finalize"), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let second = manifest_of(&h, &h.last_table().branches().next().unwrap().manifest).await;
    let encodings: Vec<Encoding> = second.files["index.html"].variants.iter().map(|v| v.encoding).collect();
    assert_eq!(encodings, vec![Encoding::Br, Encoding::Gzip], "live with its variants");
    assert_eq!(second.files["index.html"].variants[0].hash, br);
    assert_eq!(second.files["about.html"], first.files["about.html"]);
}

#[tokio::test]
async fn unfinished_deploys_expire_and_take_no_more_uploads() {
    let h = Harness::with_config(|c| c.upload_ttl = std::time::Duration::from_secs(60)).await;
    h.site("docs").await;
    let hash = ContentHash::of(b"late").to_hex();
    let (_, created) =
        h.call("POST", "/api/v1/sites/docs/deploys", json!({"files": {"a.html": {"hash": hash, "size": 4}}})).await;
    let id = created["deploy"]["id"].as_str().unwrap().to_owned();
    // Not yet expired.
    assert_eq!(h.control.expire_uploads(chanto_store::now_millis()).await.unwrap(), 0);
    assert_eq!(h.control.expire_uploads(chanto_store::now_millis() + 61_000).await.unwrap(), 1);
    let (_, v) = h.call("GET", &format!("/api/v1/deploys/{id}"), Value::Null).await;
    assert_eq!(v["state"], "expired");
    let (s, v) = h.upload(&id, b"late").await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "deploy_not_uploading"));
    let (s, _) = h.call("POST", &format!("/api/v1/deploys/{id}/finalize"), Value::Null).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn garbage_collection_keeps_every_referenced_blob() {
    // No grace period: this test is about references (tests/gc.rs has the grace).
    let h = Harness::with_config(|c| c.gc_grace = std::time::Duration::ZERO).await;
    h.site("keep").await;
    h.site("drop").await;
    static BIG: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| "<p>shared page</p>\n".repeat(200).into_bytes());
    let shared: &'static [u8] = &BIG;
    h.deploy("keep", None, &[("index.html", shared), ("keep.css", b"keep")], false).await;
    h.deploy("drop", None, &[("index.html", shared), ("only-drop.css", b"drop only")], false).await;
    // An unfinished deploy's uploaded blob is referenced until it expires.
    let (_, created) = h
        .call(
            "POST",
            "/api/v1/sites/keep/deploys",
            json!({"files": {"wip.html": {"hash": ContentHash::of(b"wip").to_hex(), "size": 3}}}),
        )
        .await;
    let wip = created["deploy"]["id"].as_str().unwrap().to_owned();
    h.upload(&wip, b"wip").await;
    assert_eq!(gc(&h).await, 0, "everything is referenced");

    let (s, _) = h.call("DELETE", "/api/v1/sites/drop", Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let deleted = gc(&h).await;
    assert_eq!(deleted, 2, "the dropped site's own file and manifest");
    assert!(!h.blobs.has(&ContentHash::of(b"drop only")).await.unwrap());
    for kept in [ContentHash::of(shared), ContentHash::of(b"keep"), ContentHash::of(b"wip")] {
        assert!(h.blobs.has(&kept).await.unwrap(), "{kept} is still referenced");
    }
    // The shared page's variants are still there, and the live site is whole.
    let manifest: chanto_core::Manifest =
        serde_json::from_slice(&h.blobs.get(&h.last_table().branches().next().unwrap().manifest).await.unwrap())
            .unwrap();
    for v in &manifest.files["index.html"].variants {
        assert!(h.blobs.has(&v.hash).await.unwrap());
    }

    // Once the unfinished deploy expires, its blob goes too.
    h.control.expire_uploads(chanto_store::now_millis() + 2 * 3600 * 1000).await.unwrap();
    assert_eq!(gc(&h).await, 1);
    assert!(!h.blobs.has(&ContentHash::of(b"wip")).await.unwrap());
}

/// Runs garbage collection now; returns how many blobs it deleted.
async fn gc(h: &Harness) -> u64 {
    h.control.collect_garbage(chanto_store::now_millis() + 1, false).await.unwrap().blobs_deleted
}

/// Reads a stored manifest.
async fn manifest_of(h: &Harness, hash: &ContentHash) -> chanto_core::Manifest {
    serde_json::from_slice(&h.blobs.get(hash).await.unwrap()).unwrap()
}

/// Waits (at most 30 s) until the served manifest is not `old`; returns it.
async fn next_manifest(h: &Harness, old: ContentHash) -> ContentHash {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = h.last_table().branches().next().unwrap().manifest;
        if now != old {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "no new manifest within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_large_deploy_goes_live_first_and_gets_its_variants_after() {
    let h = Harness::with_config(|c| c.gc_grace = std::time::Duration::ZERO).await;
    h.site("docs").await;
    // More compressible source than finalize compresses itself.
    static PAGES: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
        (0..3).map(|i| format!("<li>page {i}, item</li>\n").repeat(25_000).into_bytes()).collect()
    });
    let total: usize = PAGES.iter().map(Vec::len).sum();
    assert!(total as u64 > chanto_control::pipeline::VARIANTS_INLINE_MAX);
    let files: Vec<(&str, &'static [u8])> =
        vec![("a.html", &PAGES[0]), ("b.html", &PAGES[1]), ("c.html", &PAGES[2]), ("img.png", b"not compressed")];
    let deployed = h.deploy("docs", None, &files, false).await;
    assert_eq!(deployed["state"], "active");
    // Live at once, before its variants exist.
    let first = h.last_table().branches().next().unwrap().manifest;
    let before = manifest_of(&h, &first).await;
    assert!(before.files.values().all(|e| e.variants.is_empty()), "finalize made no variants itself");
    // Then the same deploy gets a manifest that adds them, and nothing else.
    let second = next_manifest(&h, first).await;
    let after = manifest_of(&h, &second).await;
    assert_eq!(h.last_table().branches().next().unwrap().deploy.as_str(), deployed["id"].as_str().unwrap());
    for (path, entry) in &after.files {
        let old = &before.files[path];
        assert_eq!((entry.hash, entry.size, &entry.content_type), (old.hash, old.size, &old.content_type));
        let want = if path.ends_with(".html") { 2 } else { 0 };
        assert_eq!(entry.variants.len(), want, "{path}");
        for v in &entry.variants {
            assert_eq!(h.blobs.get(&v.hash).await.unwrap().len() as u64, v.size);
        }
    }
    assert_eq!(after.files.len(), before.files.len());
    assert!(h.control.meta.variants_pending().await.unwrap().is_empty());
    let (_, v) = h.call("GET", &format!("/api/v1/deploys/{}", deployed["id"].as_str().unwrap()), Value::Null).await;
    assert_eq!(v["state"], "active");
    // The first manifest is garbage now; the variants are not.
    assert_eq!(gc(&h).await, 1);
    assert!(!h.blobs.has(&first).await.unwrap());
    for v in after.files.values().flat_map(|e| &e.variants) {
        assert!(h.blobs.has(&v.hash).await.unwrap());
    }
}

#[tokio::test]
async fn a_restart_finishes_the_variants_of_a_live_deploy() {
    let h = Harness::new().await;
    h.site("docs").await;
    static PAGE: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| "<li>item</li>\n".repeat(400).into_bytes());
    let deployed = h.deploy("docs", None, &[("index.html", &PAGE)], false).await;
    let id: chanto_core::DeployId = deployed["id"].as_str().unwrap().parse().unwrap();
    let made = h.last_table().branches().next().unwrap().manifest;
    assert_eq!(
        manifest_of(&h, &made).await.files["index.html"].variants.len(),
        2,
        "a small deploy is compressed inline"
    );
    // As a stop would leave it: live without variants, marked as pending.
    let mut bare = manifest_of(&h, &made).await;
    bare.files.values_mut().for_each(|e| e.variants.clear());
    let bare_hash = h.blobs.put_bytes(serde_json::to_vec(&bare).unwrap().into()).await.unwrap();
    assert!(h.control.meta.replace_manifest(&id, &made, &bare_hash).await.unwrap());
    h.control.meta.set_variants_pending(&id).await.unwrap();
    h.control.publish_routing(chanto_store::RoutingChange::site(&"docs".parse().unwrap())).await.unwrap();
    assert_eq!(h.last_table().branches().next().unwrap().manifest, bare_hash);

    assert_eq!(h.control.resume_variants().await.unwrap(), 1);
    let fixed = next_manifest(&h, bare_hash).await;
    assert_eq!(manifest_of(&h, &fixed).await.files["index.html"].variants.len(), 2);
    assert!(h.control.meta.variants_pending().await.unwrap().is_empty());
    assert_eq!(h.control.resume_variants().await.unwrap(), 0, "nothing left to finish");
}

/// Turns builds on without starting runners: what is queued stays queued.
fn enable_builds(h: &Harness) {
    use chanto_control::builds::{Builds, BuildsConfig, Isolation, sealed::Sealer};
    let root = h._dir.path().join("builds");
    h.control.enable_builds(Builds::new(
        BuildsConfig {
            work_dir: root.join("work"),
            log_dir: root.join("logs"),
            cache_dir: root.join("cache"),
            hidden: vec![],
            concurrency: 1,
            default_timeout: std::time::Duration::from_secs(60),
            api_url: "https://chanto.example".into(),
            isolation: Isolation::Unavailable("no runners in this test".into()),
            egress: Default::default(),
            limits: Default::default(),
        },
        Sealer::new([3; 32]),
    ));
}

async fn webhook(h: &Harness, forge: &str, headers: &[(&str, &str)], body: &[u8]) -> (StatusCode, Value) {
    let mut req = Request::builder().method("POST").uri(format!("/api/v1/webhooks/{forge}/app"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router(h.control.clone()).oneshot(req.body(Body::from(body.to_vec())).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn builds_api_validates_input_and_queues_from_signed_webhooks() {
    let h = Harness::new().await;
    h.call("POST", "/api/v1/sites", json!({"name": "app"})).await;
    // Without runners configured, the builds API says so.
    let (s, v) = h.call("PUT", "/api/v1/sites/app/git", json!({"repository": "https://example.com/r.git"})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("builds_disabled")), "{v}");
    enable_builds(&h);

    for (body, field) in [
        (json!({"repository": "https://example.com/r.git", "colour": "red"}), None),
        (json!({"repository": 7}), Some("repository")),
        (json!({"repository": ""}), Some("repository")),
        (json!({"repository": "/nonexistent/chanto-test/r.git"}), Some("repository")),
        (json!({"repository": "https://example.com/r.git", "timeout_secs": 0}), Some("timeout_secs")),
        (json!({"repository": "https://example.com/r.git", "poll_interval_secs": 1}), Some("poll_interval_secs")),
        (json!({"repository": "https://example.com/r.git", "include": ["a b"]}), Some("include")),
        (json!({"repository": "https://example.com/r.git", "token": "a", "ssh_key": "b"}), Some("token")),
        (json!({"repository": "https://example.com/r.git", "token": "has space"}), Some("token")),
        (json!({"repository": "https://example.com/r.git", "username": "a:b"}), Some("username")),
        (json!({"repository": "https://example.com/r.git", "production_branch": "bad..name"}), None),
    ] {
        let (s, v) = h.call("PUT", "/api/v1/sites/app/git", body.clone()).await;
        assert!(s.is_client_error(), "{body}: {s} {v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{body}: {v}");
        }
    }
    let (s, v) = h
        .call("PUT", "/api/v1/sites/app/git", json!({"repository": "https://example.com/r.git", "token": "tok-123"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let secret = v["webhook_secret"].as_str().unwrap().to_owned();
    assert_eq!(v["credential"], "token");
    assert_eq!(v["webhooks"]["gitlab"], "https://chanto.example/api/v1/webhooks/gitlab/app");
    assert!(!v.to_string().contains("tok-123"));
    // Reconnecting keeps the secret and the credential, and shows neither.
    let (_, again) = h.call("PUT", "/api/v1/sites/app/git", json!({"repository": "https://example.com/r2.git"})).await;
    assert!(again.get("webhook_secret").is_none() && again["credential"] == "token", "{again}");

    // Variables: secrets are masked; names and values are checked.
    let (s, _) = h.call("PUT", "/api/v1/sites/app/env/KEY", json!({"value": "v4lue", "secret": true})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, vars) = h.call("GET", "/api/v1/sites/app/env", Value::Null).await;
    assert_eq!(vars[0]["value"], "***", "{vars}");
    let (s, v) = h.call("PUT", "/api/v1/sites/app/env/9X", json!({"value": "v"})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("name")), "{v}");
    let (s, _) = h.call("PUT", "/api/v1/sites/app/env/NUL", json!({"value": "a\u{0}b"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // A GitHub push, signed and not.
    let c = "0123456789abcdef0123456789abcdef01234567";
    let push = json!({"ref": "refs/heads/main", "after": c, "head_commit": {"id": c, "message": "m"}}).to_string();
    let sig = format!("sha256={}", chanto_forge::sign_hmac_sha256_hex(secret.as_bytes(), push.as_bytes()));
    let (s, v) =
        webhook(&h, "github", &[("x-github-event", "push"), ("x-hub-signature-256", "sha256=00")], push.as_bytes())
            .await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("malformed_signature")), "{v}");
    let (s, first) =
        webhook(&h, "github", &[("x-github-event", "push"), ("x-hub-signature-256", &sig)], push.as_bytes()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    let (_, second) =
        webhook(&h, "github", &[("x-github-event", "push"), ("x-hub-signature-256", &sig)], push.as_bytes()).await;
    // The newer push replaces the queued build.
    let (_, b1) = h.call("GET", &format!("/api/v1/builds/{}", first["build"].as_str().unwrap()), Value::Null).await;
    assert_eq!(b1["state"], "superseded", "{b1}");
    let id2 = second["build"].as_str().unwrap().to_owned();
    let (_, b2) = h.call("GET", &format!("/api/v1/builds/{id2}"), Value::Null).await;
    assert_eq!((b2["state"].as_str(), b2["commit"].as_str()), (Some("queued"), Some(c)), "{b2}");
    // A GitLab hook with the wrong token, then Gitea with a body that is not JSON.
    let (s, _) = webhook(&h, "gitlab", &[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "nope")], b"{}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let junk = b"not json at all";
    let gsig = chanto_forge::sign_hmac_sha256_hex(secret.as_bytes(), junk);
    let (s, v) = webhook(&h, "gitea", &[("x-gitea-event", "push"), ("x-gitea-signature", &gsig)], junk).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, deliveries) = h.call("GET", "/api/v1/sites/app/webhook_deliveries", Value::Null).await;
    let outcomes: Vec<&str> = deliveries.as_array().unwrap().iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["refused", "refused", "accepted", "accepted", "refused"], "{deliveries}");

    // Cancel the queued build; a second cancel conflicts.
    let (s, v) = h.call("POST", &format!("/api/v1/builds/{id2}/cancel"), Value::Null).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("cancelled")), "{v}");
    let (s, v) = h.call("POST", &format!("/api/v1/builds/{id2}/cancel"), Value::Null).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("build_ended")), "{v}");

    // Manual builds check the commit id; build hooks need their exact secret.
    let (s, v) = h.call("POST", "/api/v1/sites/app/builds", json!({"commit": "xyz"})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("commit")), "{v}");
    let (s, hook) = h.call("POST", "/api/v1/sites/app/build_hooks", json!({"name": "cms", "branch": "dev"})).await;
    assert_eq!(s, StatusCode::CREATED, "{hook}");
    let path = hook["url"].as_str().unwrap().strip_prefix("https://chanto.example").unwrap().to_owned();
    let (s, _) =
        h.raw("POST", &path.replace(&path[path.len() - 4..], "0000"), None, Body::empty(), "application/json").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.raw("POST", "/api/v1/build_hooks/..%2f..", None, Body::empty(), "application/json").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.raw("POST", &path, None, Body::from("{\"title\": 5}"), "application/json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = h.raw("POST", &path, None, Body::empty(), "application/json").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (_, b) = h.call("GET", &format!("/api/v1/builds/{}", v["build"].as_str().unwrap()), Value::Null).await;
    assert_eq!((b["branch"].as_str(), b["trigger"].as_str()), (Some("dev"), Some("build hook cms")), "{b}");
    let (_, hooks) = h.call("GET", "/api/v1/sites/app/build_hooks", Value::Null).await;
    assert!(hooks[0].get("url").is_none(), "{hooks}");

    // The builds API is in the OpenAPI document.
    let (_, doc) = h.raw("GET", "/api/v1/openapi.json", None, Body::empty(), "application/json").await;
    for p in ["/api/v1/sites/{site}/git", "/api/v1/builds/{id}/log", "/api/v1/webhooks/{forge}/{site}"] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from the OpenAPI document");
    }
}

#[tokio::test]
async fn notifications_api_validates_subscriptions_and_masks_secrets() {
    use chanto_control::notify::{Notifier, NotifyConfig};
    let h = Harness::new().await;
    h.site("app").await;
    let (s, v) =
        h.call("POST", "/api/v1/sites/app/notifications", json!({"channel": "slack", "url": "https://x.test/a"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("notifications_disabled")),
        "{v}"
    );
    h.control.enable_notifications(Notifier::new(
        NotifyConfig::new("https://chanto.example"),
        chanto_control::builds::sealed::Sealer::new([5; 32]),
    ));

    let long = "x".repeat(5000);
    let smtp = json!({"host": "smtp.example.com"});
    for (body, field) in [
        (json!({}), Some("channel")),
        (json!({"channel": "pager"}), None),
        (json!({"channel": "slack", "url": "https://x.test/a", "colour": "red"}), None),
        (json!({"channel": "slack"}), Some("url")),
        (json!({"channel": "slack", "url": "ftp://x.test/a"}), Some("url")),
        (json!({"channel": "slack", "url": "file:///etc/passwd"}), Some("url")),
        (json!({"channel": "slack", "url": "not a url"}), Some("url")),
        (json!({"channel": "slack", "url": format!("https://x.test/{long}")}), Some("url")),
        (json!({"channel": "slack", "url": "https://x.test/a\n"}), Some("url")),
        (json!({"channel": "slack", "url": "https://x.test/a", "secret": "0123456789abcdef"}), Some("secret")),
        (json!({"channel": "slack", "url": "https://x.test/a", "token": "t"}), Some("token")),
        (json!({"channel": "webhook", "url": "https://x.test/a", "secret": "short"}), Some("secret")),
        (json!({"channel": "webhook", "url": "https://x.test/a", "events": ["build.exploded"]}), Some("events[0]")),
        (json!({"channel": "webhook", "url": "https://x.test/a", "branches": [long]}), Some("branches[0]")),
        (json!({"channel": "email", "from": "a@b.c", "to": ["d@e.f"]}), Some("smtp")),
        (json!({"channel": "email", "smtp": smtp, "to": ["d@e.f"]}), Some("from")),
        (json!({"channel": "email", "smtp": smtp, "from": "nobody", "to": ["d@e.f"]}), Some("from")),
        (json!({"channel": "email", "smtp": smtp, "from": "a@b.c"}), Some("to")),
        (json!({"channel": "email", "smtp": smtp, "from": "a@b.c", "to": ["d@e.f", "x\r\nBcc: e@vil"]}), Some("to[1]")),
        (json!({"channel": "email", "smtp": {"host": "a b"}, "from": "a@b.c", "to": ["d@e.f"]}), Some("smtp.host")),
        (
            json!({"channel": "email", "smtp": {"host": "h", "password": "p"}, "from": "a@b.c", "to": ["d@e.f"]}),
            Some("smtp.username"),
        ),
        (
            json!({"channel": "email", "smtp": {"host": "h", "port": 0}, "from": "a@b.c", "to": ["d@e.f"]}),
            Some("smtp.port"),
        ),
        (json!({"channel": "github", "repository": "a/b"}), Some("token")),
        (json!({"channel": "github", "token": "t"}), Some("repository")),
        (json!({"channel": "github", "token": "t", "repository": "../b"}), Some("repository")),
        (json!({"channel": "github", "token": "t", "repository": "a/b/c"}), Some("repository")),
        (json!({"channel": "gitea", "token": "t", "repository": "a/b"}), Some("api_url")),
        (
            json!({"channel": "github", "token": "t", "repository": "a/b", "api_url": "https://u:p@x.test"}),
            Some("api_url"),
        ),
        (
            json!({"channel": "github", "token": "t", "repository": "a/b", "api_url": "https://x.test/?a=/x"}),
            Some("api_url"),
        ),
        (json!({"channel": "github", "token": "a b", "repository": "a/b"}), Some("token")),
        (json!({"channel": "github", "token": "tökén", "repository": "a/b"}), Some("token")),
        (json!({"channel": "github", "token": "t", "repository": "a/b", "context": ""}), Some("context")),
        (json!({"channel": "github", "token": "t", "repository": "a/b", "url": "https://x.test"}), Some("url")),
    ] {
        let (s, v) = h.call("POST", "/api/v1/sites/app/notifications", body.clone()).await;
        assert!(s.is_client_error(), "{body}: {s} {v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{body}: {v}");
        }
    }
    let (s, _) = h
        .call("POST", "/api/v1/sites/ghost/notifications", json!({"channel": "slack", "url": "https://x.test/a"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h
        .raw("POST", "/api/v1/sites/app/notifications", Some(&h.token), Body::from("{\"channel\":"), "application/json")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Good subscriptions: secrets are sealed and never shown back.
    let (s, slack) = h
        .call(
            "POST",
            "/api/v1/sites/app/notifications",
            json!({"channel": "slack", "url": "https://hooks.slack.test/services/T/B/SECRET"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{slack}");
    assert_eq!(slack["target"], "https://hooks.slack.test/…");
    let (_, mail) = h
        .call(
            "POST",
            "/api/v1/sites/app/notifications",
            json!({"channel": "email", "smtp": {"host": "smtp.example.com", "username": "u", "password": "PASSWORD"},
                   "from": "chanto@example.com", "to": ["team@example.com"], "events": ["build.failed"], "branches": ["main"]}),
        )
        .await;
    assert_eq!(mail["events"], json!(["build.failed"]));
    let (_, gh) = h
        .call(
            "POST",
            "/api/v1/sites/app/notifications",
            json!({"channel": "github", "token": "ghp_TOKEN", "repository": "ada/app"}),
        )
        .await;
    assert_eq!(gh["target"], "github ada/app at https://api.github.com (statuses and comments)");
    // One subscription keeps the pull request comment; a second forge subscription may add statuses only.
    let second = json!({"channel": "gitlab", "token": "glpat", "repository": "ada/app"});
    let (s, v) = h.call("POST", "/api/v1/sites/app/notifications", second.clone()).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("comments_taken")), "{v}");
    let mut statuses_only = second;
    statuses_only["comments"] = json!(false);
    let (s, v) = h.call("POST", "/api/v1/sites/app/notifications", statuses_only).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, list) = h.call("GET", "/api/v1/sites/app/notifications", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 4);
    let text = list.to_string();
    for secret in ["SECRET", "PASSWORD", "ghp_TOKEN"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    let stored = h.control.meta.list_subscriptions(&"app".parse().unwrap()).await.unwrap();
    assert!(stored.iter().all(|s| !String::from_utf8_lossy(&s.config).contains("SECRET")), "sealed at rest");

    // Removing, the delivery log, and ids that don't exist.
    let id = slack["id"].as_str().unwrap();
    let (s, _) = h.call("DELETE", &format!("/api/v1/sites/app/notifications/{id}"), Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("DELETE", &format!("/api/v1/sites/app/notifications/{id}"), Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h.call("GET", "/api/v1/sites/app/notifications/deliveries?limit=5", Value::Null).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    let (s, _) = h.call("GET", "/api/v1/sites/app/notifications/deliveries/abc", Value::Null).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.call("GET", "/api/v1/sites/app/notifications/deliveries/99", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.call("POST", "/api/v1/sites/app/notifications/deliveries/99/redeliver", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.call("POST", "/api/v1/sites/app/notifications/deliveries/-x/redeliver", Value::Null).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.call("POST", "/api/v1/sites/app/notifications/sub_nope/test", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Subscriptions need a token; the schema and badges do not.
    let (s, _) = h.raw("GET", "/api/v1/sites/app/notifications", None, Body::empty(), "application/json").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, schema) = h.raw("GET", "/api/v1/notifications/schema.json", None, Body::empty(), "application/json").await;
    assert_eq!((s, schema["type"].as_str()), (StatusCode::OK, Some("object")));
    let (s, badge) = h.raw("GET", "/badge/app/main.svg", None, Body::empty(), "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(badge.as_str().unwrap().contains("unknown"), "no build, no deploy: {badge}");
}

/// A batch body: one frame per blob (see `chanto_control::batch`).
fn batch(blobs: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for b in blobs {
        body.extend_from_slice(&chanto_control::batch::encode_header(&ContentHash::of(b), b.len() as u64));
        body.extend_from_slice(b);
    }
    body
}

#[tokio::test]
async fn blobs_upload_in_batches_and_bad_batches_are_refused() {
    let h = Harness::new().await;
    h.site("docs").await;
    let files: [(&str, &[u8]); 3] = [("a.html", b"<p>a</p>"), ("b.css", b"b{}"), ("c.js", b"let c")];
    let manifest: serde_json::Map<String, Value> = files
        .iter()
        .map(|(p, b)| (p.to_string(), json!({"hash": ContentHash::of(b).to_hex(), "size": b.len()})))
        .collect();
    let (_, created) = h.call("POST", "/api/v1/sites/docs/deploys", json!({ "files": manifest })).await;
    let id = created["deploy"]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/deploys/{id}/blobs");
    let send =
        |body: Vec<u8>| h.raw("POST", &path, Some(&h.token), Body::from(body), chanto_control::batch::CONTENT_TYPE);

    // Unauthenticated: refused, nothing stored.
    let (s, _) = h.raw("POST", &path, None, Body::from(batch(&[files[0].1])), "application/octet-stream").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A frame cut short.
    let mut cut = batch(&[files[0].1]);
    cut.pop();
    let (s, v) = send(cut).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_batch"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("ends inside a frame"), "{v}");
    // A header claiming more than a batch carries: refused before any byte of it.
    let mut huge = chanto_control::batch::encode_header(&ContentHash::of(b"x"), 1 << 40).to_vec();
    huge.extend_from_slice(b"x");
    let (s, v) = send(huge).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "bad_batch"), "{v}");
    // Bytes that do not match their hash: the blobs before stay stored.
    let mut lying = batch(&[files[0].1]);
    lying.extend_from_slice(&chanto_control::batch::encode_header(&ContentHash::of(files[1].1), 3));
    lying.extend_from_slice(b"b{{");
    let (s, v) = send(lying).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "hash_mismatch"), "{v}");
    assert!(h.blobs.has(&ContentHash::of(files[0].1)).await.unwrap());
    assert!(!h.blobs.has(&ContentHash::of(files[1].1)).await.unwrap());
    // A blob the deploy did not declare.
    let (s, v) = send(batch(&[b"stranger"])).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "not_in_deploy"), "{v}");
    // An empty batch stores nothing, and is fine.
    let (s, v) = send(Vec::new()).await;
    assert_eq!((s, &v["stored"]), (StatusCode::CREATED, &json!(0)));
    // The whole batch again (a retry): every blob stored, the site goes live.
    let (s, v) = send(batch(&files.map(|(_, b)| b))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v, json!({"stored": 3, "size": 16}));
    let (s, v) = h.call("POST", &format!("/api/v1/deploys/{id}/finalize"), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A finalized deploy takes no more.
    let (s, v) = send(batch(&[files[0].1])).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "deploy_not_uploading"), "{v}");
}

/// Creates a deploy of `files`, uploads them and finalizes it, answering
/// what finalize said.
async fn finalize_of(h: &Harness, site: &str, files: &[(&str, Vec<u8>)]) -> (StatusCode, Value) {
    let manifest: serde_json::Map<String, Value> = files
        .iter()
        .map(|(p, b)| (p.to_string(), json!({"hash": ContentHash::of(b).to_hex(), "size": b.len()})))
        .collect();
    let (s, created) = h.call("POST", &format!("/api/v1/sites/{site}/deploys"), json!({"files": manifest})).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["deploy"]["id"].as_str().unwrap().to_owned();
    for (_, b) in files {
        let hash = ContentHash::of(b).to_hex();
        let (s, v) = h
            .raw(
                "PUT",
                &format!("/api/v1/deploys/{id}/blobs/{hash}"),
                Some(&h.token),
                Body::from(b.clone()),
                "application/octet-stream",
            )
            .await;
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s} {v}");
    }
    h.call("POST", &format!("/api/v1/deploys/{id}/finalize"), Value::Null).await
}

#[tokio::test]
async fn finalize_refuses_rule_files_that_would_make_requests_expensive() {
    let h = Harness::new().await;
    h.site("docs").await;
    let index = ("index.html", b"hi".to_vec());
    // A password hash whose writer chose 4 GiB of memory per sign-in.
    let hostile = "/admin/*\n  Basic-Auth: eve:$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q\n";
    let (s, v) = finalize_of(&h, "docs", &[index.clone(), ("_headers", hostile.as_bytes().to_vec())]).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules"), "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("_headers:2:19: the password hash of eve: its parameters are m=4194304,t=2,p=1"),
        "{message}"
    );
    assert!(message.contains("m=19456,t=2,p=1"), "{message}");
    // More password users than a deploy may hash.
    let mut many = String::from("/a/*\n  Basic-Auth:");
    for i in 0..=chanto_rules::MAX_USERS_PER_RULE / 2 {
        many.push_str(&format!(" u{i}:pw{i}"));
    }
    many.push_str("\n/b/*\n  Basic-Auth:");
    for i in 0..=chanto_rules::MAX_USERS_PER_RULE / 2 {
        many.push_str(&format!(" v{i}:pw{i}"));
    }
    let (s, v) = finalize_of(&h, "docs", &[index.clone(), ("_headers", many.into_bytes())]).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules"), "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("_headers:3:1: the deploy's password rules list 102 users so far; the limit is 100"),
        "{message}"
    );
    // Nothing of either went live.
    let (_, deploys) = h.call("GET", "/api/v1/sites/docs/deploys", Value::Null).await;
    let states: Vec<&str> = deploys.as_array().unwrap().iter().map(|d| d["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["failed", "failed"], "{deploys}");
}

#[path = "api/domains.rs"]
mod domains;

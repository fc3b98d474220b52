//! The edge in process (`oneshot`) over a real blob directory: routing by
//! host, index files, 404 pages, methods, hostile paths, snapshot swaps.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use chanto_core::{ContentHash, DeployId, Manifest, ManifestEntry};
use chanto_edge::Edge;
use chanto_store::{BlobStore, LocalBlobStore, Permalink, RoutingRow, RoutingSink, RoutingTable};
use tower::ServiceExt;

struct Fixture {
    edge: Arc<Edge>,
    blobs: Arc<LocalBlobStore>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap());
        let edge = Edge::new(chanto_edge::EdgeConfig::new("localhost"), blobs.clone() as Arc<dyn BlobStore>);
        Self { edge, blobs, _dir: dir }
    }

    /// Stores the files and a manifest of them; returns the manifest's hash.
    async fn manifest(&self, files: &[(&str, &str, &str)]) -> ContentHash {
        let mut m = Manifest { version: Manifest::VERSION, ..Default::default() };
        for (path, content_type, body) in files {
            let hash = self.blobs.put_bytes(Bytes::from(body.to_string())).await.unwrap();
            m.files.insert(
                path.to_string(),
                ManifestEntry {
                    hash,
                    size: body.len() as u64,
                    content_type: content_type.to_string(),
                    variants: vec![],
                },
            );
        }
        self.blobs.put_bytes(Bytes::from(serde_json::to_vec(&m).unwrap())).await.unwrap()
    }

    async fn get(&self, method: &str, host: &str, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let req = Request::builder().method(method).uri(path).header("host", host).body(Body::empty()).unwrap();
        let resp = chanto_edge::router(self.edge.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Version 1 of a table where `docs` serves `manifest` on `main`.
fn docs_main(manifest: ContentHash) -> RoutingTable {
    RoutingTable::from_rows(1, vec![row("docs", "main", true, 1, manifest)], vec![], vec![], vec![])
}

fn row(site: &str, branch: &str, production: bool, deploy: u8, manifest: ContentHash) -> RoutingRow {
    let branch: chanto_core::BranchName = branch.parse().unwrap();
    RoutingRow {
        site: site.parse().unwrap(),
        label: branch.label(),
        branch,
        production,
        deploy: DeployId::from_random([deploy; 8]),
        manifest,
        ready_at: 1_700_000_000_000,
    }
}

const HTML: &str = "text/html; charset=utf-8";

#[tokio::test]
async fn routes_by_host_and_serves_the_right_bytes() {
    let f = Fixture::new();
    let prod = f
        .manifest(&[
            ("index.html", HTML, "<h1>prod</h1>"),
            ("docs/index.html", HTML, "docs index"),
            ("style.css", "text/css; charset=utf-8", "body{}"),
            ("404.html", HTML, "custom not found"),
            ("café/ünï.txt", "text/plain; charset=utf-8", "unicode"),
        ])
        .await;
    let dev = f.manifest(&[("index.html", HTML, "<h1>dev</h1>")]).await;
    let draft = f.manifest(&[("index.html", HTML, "<h1>draft</h1>")]).await;
    let table = RoutingTable::from_rows(
        1,
        vec![row("docs", "main", true, 1, prod), row("docs", "feature/x", false, 2, dev)],
        vec![Permalink {
            site: "docs".parse().unwrap(),
            deploy: DeployId::from_random([9; 8]),
            manifest: draft,
            ready_at: 1_700_000_000_000,
            branch: "main".parse().unwrap(),
            production: true,
        }],
        vec![],
        vec![],
    );
    f.edge.publish(table).await.unwrap();

    let (s, h, body) = f.get("GET", "docs.localhost:8080", "/").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "<h1>prod</h1>"));
    assert_eq!(h["content-type"], HTML);
    assert_eq!(h["content-length"], "13");
    for host in ["DOCS.LocalHost", "docs.localhost.", "docs.localhost:1234", "main--docs.localhost"] {
        let (s, _, body) = f.get("GET", host, "/").await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "<h1>prod</h1>"), "{host}");
    }
    let (_, _, body) = f.get("GET", "feature-x--docs.localhost", "/index.html").await;
    assert_eq!(body, "<h1>dev</h1>");
    let (_, _, body) = f.get("GET", "0909090909090909--docs.localhost", "/").await;
    assert_eq!(body, "<h1>draft</h1>", "permalink of a draft");
    let (s, h, _) = f.get("GET", "docs.localhost", "/style.css").await;
    assert_eq!((s, h["content-type"].to_str().unwrap()), (StatusCode::OK, "text/css; charset=utf-8"));
    let (s, _, body) = f.get("GET", "docs.localhost", "/caf%C3%A9/%C3%BCn%C3%AF.txt").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "unicode"));

    // Directories: index.html with a slash, a redirect without one.
    let (s, _, body) = f.get("GET", "docs.localhost", "/docs/").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "docs index"));
    let (s, h, _) = f.get("GET", "docs.localhost", "/docs?x=1").await;
    assert_eq!(s, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(h["location"], "/docs/?x=1");

    // Missing paths: the site's 404.html, with status 404.
    let (s, _, body) = f.get("GET", "docs.localhost", "/missing").await;
    assert_eq!((s, body.as_str()), (StatusCode::NOT_FOUND, "custom not found"));
    // A site without 404.html: the plain page.
    let (s, _, body) = f.get("GET", "feature-x--docs.localhost", "/missing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body.contains("404"));

    // HEAD: headers, no body.
    let (s, h, body) = f.get("HEAD", "docs.localhost", "/").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, ""));
    assert_eq!(h["content-length"], "13");

    // Other methods: 405 with Allow.
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let (s, h, _) = f.get(m, "docs.localhost", "/").await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert_eq!(h["allow"], "GET, HEAD, OPTIONS");
    }
    // OPTIONS: what is allowed, no body.
    let (s, h, body) = f.get("OPTIONS", "docs.localhost", "/").await;
    assert_eq!((s, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert_eq!(h["allow"], "GET, HEAD, OPTIONS");
}

#[tokio::test]
async fn unknown_hosts_reveal_nothing() {
    let f = Fixture::new();
    let m = f.manifest(&[("index.html", HTML, "secret site")]).await;
    f.edge.publish(docs_main(m)).await.unwrap();
    let (_, _, reference) = f.get("GET", "nope.localhost", "/").await;
    for host in [
        "nope.localhost",
        "localhost",
        "docs.example.com",
        "x.docs.localhost",
        "nobranch--docs.localhost",
        "ffffffffffffffff--docs.localhost",
        "",
        "--docs.localhost",
    ] {
        let (s, _, body) = f.get("GET", host, "/").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{host:?}");
        assert_eq!(body, reference, "{host:?}: every unknown host gets the same page");
        assert!(!body.contains("docs") && !body.contains("secret"));
    }
}

#[tokio::test]
async fn nothing_outside_the_deploy_is_reachable() {
    let f = Fixture::new();
    let m = f.manifest(&[("index.html", HTML, "ok"), ("a/b.html", HTML, "b")]).await;
    // A blob in the same store that this deploy does not list.
    let other = f.blobs.put_bytes(Bytes::from_static(b"other site's secret")).await.unwrap();
    f.edge.publish(docs_main(m)).await.unwrap();
    let hex = other.to_hex();
    let hostile = [
        "/../../blobs".to_owned(),
        "/%2e%2e/%2e%2e/etc/passwd".to_owned(),
        "/%2E./x".to_owned(),
        "/..%2fx".to_owned(),
        "/a/..%5c..%5cx".to_owned(),
        "/a%00.html".to_owned(),
        format!("/{}/{}", &hex[..2], &hex[2..]),
        format!("/../blobs/{}/{}", &hex[..2], &hex[2..]),
        "/%".to_owned(),
        format!("/{}", "a/".repeat(3000)),
    ];
    for path in &hostile {
        let (s, _, body) = f.get("GET", "docs.localhost", path).await;
        assert!(s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND, "{path}: {s}");
        assert!(!body.contains("secret"), "{path}");
    }
    // Dot segments that stay inside resolve normally.
    let (s, _, body) = f.get("GET", "docs.localhost", "/a/../a/b.html").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "b"));
}

#[tokio::test]
async fn snapshots_swap_whole_and_never_go_back() {
    let f = Fixture::new();
    let v1 = f.manifest(&[("index.html", HTML, "one"), ("only-in-one.html", HTML, "1")]).await;
    let v2 = f.manifest(&[("index.html", HTML, "two")]).await;
    let table = |version, m| {
        RoutingTable::from_rows(version, vec![row("docs", "main", true, version as u8, m)], vec![], vec![], vec![])
    };
    // Before the first snapshot the node knows no site: it says so with a
    // retryable 503, never a 404 a cache or a crawler would keep.
    let (s, h, _) = f.get("GET", "docs.localhost", "/").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "nothing before the first snapshot");
    assert_eq!(h.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    f.edge.publish(table(1, v1)).await.unwrap();
    assert_eq!(f.get("GET", "docs.localhost", "/").await.2, "one");
    f.edge.publish(table(2, v2)).await.unwrap();
    assert_eq!(f.get("GET", "docs.localhost", "/").await.2, "two");
    // The files of the old deploy went with it.
    assert_eq!(f.get("GET", "docs.localhost", "/only-in-one.html").await.0, StatusCode::NOT_FOUND);
    // A late, older table is ignored.
    f.edge.publish(table(1, v1)).await.unwrap();
    assert_eq!(f.get("GET", "docs.localhost", "/").await.2, "two");
    assert_eq!(f.edge.snapshot().version, 2);
    // A table whose manifest cannot be read is refused; the old snapshot stays.
    let missing = ContentHash::of(b"no such manifest");
    assert!(f.edge.publish(table(3, missing)).await.is_err());
    assert_eq!(f.get("GET", "docs.localhost", "/").await.2, "two");
}

/// Sends a request with extra headers; returns status, headers and body bytes.
async fn request(
    edge: &Arc<Edge>,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().uri(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = chanto_edge::router(edge.clone()).oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec())
}

#[tokio::test]
async fn http_semantics_validators_ranges_and_encodings() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap());
    let mut config = chanto_edge::EdgeConfig::new("localhost");
    config.cache_max_blob = 100; // so the large file below is streamed from disk
    let edge = Edge::new(config, blobs.clone() as Arc<dyn BlobStore>);

    let page = b"<p>page</p>".repeat(20);
    let gz = b"pretend-gzip".to_vec();
    let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut m = Manifest { version: Manifest::VERSION, ..Default::default() };
    let put = |b: Vec<u8>| {
        let blobs = blobs.clone();
        async move { blobs.put_bytes(Bytes::from(b)).await.unwrap() }
    };
    let page_hash = put(page.clone()).await;
    let gz_hash = put(gz.clone()).await;
    m.files.insert(
        "index.html".into(),
        ManifestEntry {
            hash: page_hash,
            size: page.len() as u64,
            content_type: HTML.into(),
            variants: vec![chanto_core::Variant {
                encoding: chanto_core::Encoding::Gzip,
                hash: gz_hash,
                size: gz.len() as u64,
            }],
        },
    );
    m.files.insert(
        "app.3f9a1c2b.js".into(),
        ManifestEntry {
            hash: page_hash,
            size: page.len() as u64,
            content_type: "text/javascript".into(),
            variants: vec![],
        },
    );
    m.files.insert(
        "video.bin".into(),
        ManifestEntry {
            hash: put(big.clone()).await,
            size: big.len() as u64,
            content_type: "application/octet-stream".into(),
            variants: vec![],
        },
    );
    let mhash = put(serde_json::to_vec(&m).unwrap()).await;
    // The same bytes under another deploy, on another branch.
    let mut m2 = Manifest { version: Manifest::VERSION, ..Default::default() };
    m2.files.insert("other.html".into(), m.files["index.html"].clone());
    let m2hash = put(serde_json::to_vec(&m2).unwrap()).await;
    edge.publish(RoutingTable::from_rows(
        1,
        vec![row("s", "main", true, 1, mhash), row("s", "dev", false, 2, m2hash)],
        vec![],
        vec![],
        vec![],
    ))
    .await
    .unwrap();

    // Validators and caching defaults.
    let (s, h, body) = request(&edge, "s.localhost", "/", &[]).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, page.as_slice()));
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"'));
    assert_eq!(h["last-modified"], "Tue, 14 Nov 2023 22:13:20 GMT");
    assert_eq!(h["cache-control"], "public, max-age=0, must-revalidate");
    assert_eq!(h["vary"], "Accept-Encoding");
    assert_eq!(h["accept-ranges"], "bytes");
    let (_, h2, _) = request(&edge, "dev--s.localhost", "/other.html", &[]).await;
    assert_eq!(h2["etag"].to_str().unwrap(), etag, "same bytes, same ETag, in any deploy");
    let (_, h, _) = request(&edge, "s.localhost", "/app.3f9a1c2b.js", &[]).await;
    assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
    assert!(h.get("vary").is_none(), "nothing to negotiate");

    // Conditional requests.
    let (s, h, body) = request(&edge, "s.localhost", "/", &[("if-none-match", &etag)]).await;
    assert_eq!((s, body.len()), (StatusCode::NOT_MODIFIED, 0));
    assert_eq!(h["etag"].to_str().unwrap(), etag);
    let (s, _, _) = request(&edge, "s.localhost", "/", &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = request(&edge, "s.localhost", "/", &[("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT")]).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, _, _) = request(&edge, "s.localhost", "/", &[("if-match", "\"stale\"")]).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);

    // Encodings: the variant, with its own ETag; identity otherwise.
    let (s, h, body) = request(&edge, "s.localhost", "/", &[("accept-encoding", "br;q=1, gzip;q=0.5")]).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, gz.as_slice()));
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(h["content-length"], gz.len().to_string().as_str());
    assert_ne!(h["etag"].to_str().unwrap(), etag);
    let (_, h, body) = request(&edge, "s.localhost", "/", &[("accept-encoding", "gzip;q=0")]).await;
    assert!(h.get("content-encoding").is_none());
    assert_eq!(body, page);
    // Ranges apply to the representation sent.
    let (s, h, body) = request(&edge, "s.localhost", "/", &[("accept-encoding", "gzip"), ("range", "bytes=0-6")]).await;
    assert_eq!((s, body.as_slice()), (StatusCode::PARTIAL_CONTENT, &gz[..7]));
    assert_eq!(h["content-range"], format!("bytes 0-6/{}", gz.len()).as_str());

    // Ranges on a large, streamed file.
    let (s, h, body) = request(&edge, "s.localhost", "/video.bin", &[("range", "bytes=5000-5099")]).await;
    assert_eq!((s, body.as_slice()), (StatusCode::PARTIAL_CONTENT, &big[5000..5100]));
    assert_eq!(h["content-range"], "bytes 5000-5099/10000");
    assert_eq!(h["content-length"], "100");
    let (_, _, body) = request(&edge, "s.localhost", "/video.bin", &[("range", "bytes=-10")]).await;
    assert_eq!(body, &big[9990..]);
    let (s, _, body) = request(&edge, "s.localhost", "/video.bin", &[]).await;
    assert_eq!((s, body.len()), (StatusCode::OK, 10_000));
    assert_eq!(body, big);
    let (s, h, _) = request(&edge, "s.localhost", "/video.bin", &[("range", "bytes=10000-")]).await;
    assert_eq!(s, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h["content-range"], "bytes */10000");
    let (s, _, body) = request(&edge, "s.localhost", "/video.bin", &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!((s, body.len()), (StatusCode::OK, 10_000), "several ranges get the whole body");
    let (s, _, body) =
        request(&edge, "s.localhost", "/video.bin", &[("range", "bytes=0-9"), ("if-range", "\"old\"")]).await;
    assert_eq!((s, body.len()), (StatusCode::OK, 10_000), "a stale If-Range gets the whole body");
}

#[tokio::test]
async fn readiness_follows_routing_and_draining() {
    let f = Fixture::new();
    let admin = chanto_edge::admin_router(f.edge.clone());
    let get = |path: &'static str| {
        let admin = admin.clone();
        async move {
            let resp = admin.oneshot(Request::builder().uri(path).body(Body::empty()).unwrap()).await.unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
    assert_eq!(get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE, "no routing loaded yet");
    let m = f.manifest(&[("index.html", HTML, "x")]).await;
    f.edge.publish(docs_main(m)).await.unwrap();
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    let (s, metrics) = get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(metrics.contains("chanto_edge_routing_version 1"), "{metrics}");
    f.edge.start_draining();
    assert_eq!(get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE, "draining: stop sending traffic");
    assert_eq!(get("/healthz").await.0, StatusCode::OK, "still alive while draining");
}

/// `/readyz` names each dependency: the status code says whether the node
/// can serve (503 only without routing or while draining); a dependency down
/// is listed, with a 200, unless `?strict` asks otherwise.
#[tokio::test]
async fn readiness_names_each_dependency_and_a_broken_one_keeps_a_serving_node_in() {
    let f = Fixture::new();
    let meta_dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn chanto_store::MetaStore> =
        Arc::new(chanto_store::SqliteMeta::open(&meta_dir.path().join("meta.db")).unwrap());
    let admin = chanto_edge::admin_router_with(f.edge.clone(), Some(meta));
    let get = |uri: &'static str, accept: Option<&'static str>| {
        let admin = admin.clone();
        async move {
            let mut req = Request::builder().uri(uri);
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            let resp = admin.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
            let (status, ctype) = (resp.status(), resp.headers()["content-type"].to_str().unwrap().to_owned());
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (status, ctype, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (s, _, text) = get("/readyz", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text.starts_with("not ready\nrouting: down (snapshot): no routing snapshot loaded yet\n"), "{text}");
    let m = f.manifest(&[("index.html", HTML, "x")]).await;
    f.edge.publish(docs_main(m)).await.unwrap();
    let (s, _, text) = get("/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert!(text.starts_with("ready\nrouting: up (snapshot): version 1, 1 sites\ndraining: up (node): no\n"), "{text}");
    assert!(text.contains("\nmetadata: up (sqlite): answers\n"), "{text}");
    assert!(text.contains("\nblobs: up (local "), "{text}");
    // JSON by Accept or by query.
    for (uri, accept) in [("/readyz", Some("application/json")), ("/readyz?format=json", None)] {
        let (s, ctype, body) = get(uri, accept).await;
        assert_eq!((s, ctype.as_str()), (StatusCode::OK, "application/json"), "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((v["ready"].as_bool(), v["status"].as_str()), (Some(true), Some("ready")), "{v}");
        let names: Vec<&str> = v["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["routing", "draining", "metadata", "blobs"]);
    }
    // Served once, so the edge holds it in memory.
    assert_eq!(request(&f.edge, "docs.localhost", "/", &[]).await.0, StatusCode::OK);
    // The blob directory stops taking files: listed as down, node still in.
    std::fs::remove_dir_all(f.blobs.path_of(&m).parent().unwrap().parent().unwrap().join(".staged")).unwrap();
    let (s, _, text) = get("/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "the node still serves what it has: {text}");
    assert!(text.starts_with("degraded\n") && text.contains("\nblobs: down (local "), "{text}");
    assert!(text.contains("is not writable"), "{text}");
    let (s, _, _) = get("/readyz?strict", None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "strict: any dependency down is a 503");
    let (s, _, body) = request(&f.edge, "docs.localhost", "/", &[]).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, &b"x"[..]));
}

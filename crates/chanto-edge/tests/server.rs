//! The edge's own HTTP server on a real socket (port 0): HTTP/1.1 keep-alive,
//! h2c with prior knowledge, header limits, the header-read timeout, and a
//! graceful shutdown that finishes in-flight transfers.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chanto_core::{DeployId, Manifest, ManifestEntry};
use chanto_edge::Edge;
use chanto_edge::server::{ServerLimits, serve};
use chanto_store::{BlobStore, LocalBlobStore, RoutingRow, RoutingSink, RoutingTable};

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

const BIG: usize = 8 << 20;

async fn start(limits: ServerLimits) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap());
    let edge = Edge::new(chanto_edge::EdgeConfig::new("localhost"), blobs.clone() as Arc<dyn BlobStore>);
    let small = blobs.put_bytes(Bytes::from_static(b"hello")).await.unwrap();
    let big = blobs.put_bytes(Bytes::from(vec![7u8; BIG])).await.unwrap();
    let mut m = Manifest { version: Manifest::VERSION, ..Default::default() };
    m.files.insert(
        "index.html".into(),
        ManifestEntry { hash: small, size: 5, content_type: "text/html".into(), variants: vec![] },
    );
    m.files.insert(
        "big.bin".into(),
        ManifestEntry {
            hash: big,
            size: BIG as u64,
            content_type: "application/octet-stream".into(),
            variants: vec![],
        },
    );
    let mh = blobs.put_bytes(Bytes::from(serde_json::to_vec(&m).unwrap())).await.unwrap();
    let branch: chanto_core::BranchName = "main".parse().unwrap();
    let row = RoutingRow {
        site: "s".parse().unwrap(),
        label: branch.label(),
        branch,
        production: true,
        deploy: DeployId::from_random([1; 8]),
        manifest: mh,
        ready_at: 0,
    };
    edge.publish(RoutingTable { version: 1, branches: vec![row], permalinks: vec![], access: vec![] }).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, chanto_edge::router(edge), limits, async move {
        let _ = rx.await;
    }));
    Running { addr, stop: Some(stop), task, _dir: dir }
}

fn client(h2: bool) -> reqwest::Client {
    let b = reqwest::Client::builder().resolve("s.localhost", "127.0.0.1:0".parse().unwrap());
    if h2 { b.http2_prior_knowledge() } else { b.http1_only() }.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_and_h2c_prior_knowledge() {
    let r = start(ServerLimits::default()).await;
    let url = format!("http://s.localhost:{}/", r.addr.port());
    for h2 in [false, true] {
        let c = client(h2);
        for _ in 0..3 {
            let resp = c.get(&url).send().await.unwrap();
            let want = if h2 { reqwest::Version::HTTP_2 } else { reqwest::Version::HTTP_11 };
            assert_eq!(resp.version(), want);
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.text().await.unwrap(), "hello");
        }
    }
    // Keep-alive: two requests on one TCP connection.
    let mut s = std::net::TcpStream::connect(r.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: s.localhost\r\n\r\n";
    s.write_all(req).unwrap();
    s.write_all(req).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while seen.matches("hello").count() < 2 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(seen.matches("HTTP/1.1 200 OK").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let r = start(ServerLimits { max_headers: 16, ..Default::default() }).await;
    let mut req = String::from("GET / HTTP/1.1\r\nHost: s.localhost\r\n");
    for i in 0..40 {
        req.push_str(&format!("X-Many-{i}: y\r\n"));
    }
    req.push_str("\r\n");
    let mut s = std::net::TcpStream::connect(r.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");

    let huge = format!("GET / HTTP/1.1\r\nHost: s.localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(64 << 10));
    let mut s = std::net::TcpStream::connect(r.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(huge.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 431") || out.is_empty(), "{out}");
    // The server is still fine.
    let ok = client(false).get(format!("http://s.localhost:{}/", r.addr.port())).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let r = start(ServerLimits { header_read_timeout: Duration::from_millis(300), ..Default::default() }).await;
    let mut s = std::net::TcpStream::connect(r.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: s.loc").unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "a slow client held the connection for {waited:?}");
    assert!(!String::from_utf8_lossy(&out).contains("hello"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_transfers() {
    let mut r = start(ServerLimits::default()).await;
    let url = format!("http://s.localhost:{}/big.bin", r.addr.port());
    let resp = client(false).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The response has started; ask the server to stop before reading the body.
    r.stop.take().unwrap().send(()).unwrap();
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), BIG, "the in-flight transfer completed");
    tokio::time::timeout(Duration::from_secs(10), r.task).await.expect("server stopped").unwrap();
    // New connections are refused once it has stopped.
    assert!(std::net::TcpStream::connect(r.addr).is_err());
}

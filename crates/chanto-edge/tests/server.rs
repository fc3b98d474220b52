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
    edge: Arc<Edge>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

const BIG: usize = 8 << 20;

/// Bytes that repeat nowhere, so a byte from the wrong place shows.
static RANDOM: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..(3 << 20) + 123)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
});
/// Just above the size from which bodies are sent with `sendfile`.
const MID: usize = chanto_edge::ZEROCOPY_MIN as usize + 1000;

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
    for (name, bytes) in [("rand.bin", &RANDOM[..]), ("mid.bin", &RANDOM[..MID])] {
        let hash = blobs.put_bytes(Bytes::from_static(bytes)).await.unwrap();
        let entry = ManifestEntry {
            hash,
            size: bytes.len() as u64,
            content_type: "application/octet-stream".into(),
            variants: vec![],
        };
        m.files.insert(name.into(), entry);
    }
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
    let task = tokio::spawn(serve(listener, chanto_edge::router(edge.clone()), limits, async move {
        let _ = rx.await;
    }));
    Running { addr, edge, stop: Some(stop), task, _dir: dir }
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

/// Reads one HTTP/1.1 response off `s`: status line, headers, and the body
/// (none for HEAD and 304).
fn read_response(s: &mut impl Read, pending: &mut Vec<u8>, has_body: bool) -> (String, Vec<u8>) {
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed inside a response head");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(pending.drain(..head_end).collect()).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let want = if has_body { len } else { 0 };
    while pending.len() < want {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed inside a body");
        pending.extend_from_slice(&buf[..n]);
    }
    (head, pending.drain(..want).collect())
}

/// Large bodies leave with `sendfile` on HTTP/1: pipelined on one
/// connection, mixed with memory-served, HEAD, 304 and range responses, and
/// read slowly enough that the socket fills, every byte is the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_bodies_are_sent_from_the_page_cache_byte_for_byte() {
    let r = start(ServerLimits::default()).await;
    let rand: &[u8] = &RANDOM;
    let mid = &rand[..MID];
    let etag = {
        let resp = client(false).get(format!("http://s.localhost:{}/rand.bin", r.addr.port())).send().await.unwrap();
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(&resp.bytes().await.unwrap()[..], rand);
        etag
    };
    let addr = r.addr;
    let (heads, bodies) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: s.localhost\r\n{extra}\r\n");
        let requests = [
            (get("/rand.bin", ""), true),
            (get("/", ""), true),
            ("HEAD /rand.bin HTTP/1.1\r\nHost: s.localhost\r\n\r\n".to_string(), false),
            (get("/rand.bin", "Range: bytes=1000-2000999\r\n"), true),
            (get("/mid.bin", ""), true),
            (get("/rand.bin", &format!("If-None-Match: {etag}\r\n")), false),
            (get("/rand.bin", "Range: bytes=-77\r\n"), true),
            (get("/rand.bin", ""), true),
        ];
        let all: String = requests.iter().map(|(r, _)| r.as_str()).collect();
        s.write_all(all.as_bytes()).unwrap();
        // Let the server fill the socket before reading anything.
        std::thread::sleep(Duration::from_millis(200));
        let mut pending = Vec::new();
        let mut heads = Vec::new();
        let mut bodies = Vec::new();
        for (_, has_body) in &requests {
            let (head, body) = read_response(&mut s, &mut pending, *has_body);
            heads.push(head);
            bodies.push(body);
        }
        (heads, bodies)
    })
    .await
    .unwrap();
    let status: Vec<&str> = heads.iter().map(|h| h.lines().next().unwrap()).collect();
    assert_eq!(
        status,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 206 Partial Content",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 304 Not Modified",
            "HTTP/1.1 206 Partial Content",
            "HTTP/1.1 200 OK",
        ]
    );
    assert!(bodies[0] == rand, "whole file");
    assert_eq!(bodies[1], b"hello");
    assert!(heads[2].to_ascii_lowercase().contains(&format!("content-length: {}", rand.len())));
    assert!(bodies[3] == rand[1000..2001000], "range");
    assert!(bodies[4] == mid, "a body just over the threshold");
    assert!(bodies[6] == rand[rand.len() - 77..], "suffix range");
    assert!(bodies[7] == rand, "whole file again");
    let sent_from_files = || r.edge.metrics.sendfile_responses.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent_from_files(), 5, "the GETs of rand.bin and mid.bin of at least ZEROCOPY_MIN bytes");
    // HTTP/2 frames are copied, not sent from the file: the same bytes.
    let resp = client(true).get(format!("http://s.localhost:{}/rand.bin", r.addr.port())).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.bytes().await.unwrap() == rand);
    assert_eq!(sent_from_files(), 5);
}

//! The edge's own HTTP server on a real socket (port 0): HTTP/1.1 keep-alive,
//! h2c with prior knowledge, header limits, the header-read timeout, and a
//! graceful shutdown that finishes in-flight transfers.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chanto_core::{DeployId, Manifest, ManifestEntry};
use chanto_edge::Edge;
use chanto_edge::server::{ServerLimits, serve};
use chanto_store::{BlobStore, LocalBlobStore, RoutingRow, RoutingSink, RoutingTable};

struct Running {
    addr: std::net::SocketAddr,
    edge: Arc<Edge>,
    blobs: Arc<LocalBlobStore>,
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
    // A script with a (pretend) gzip variant, to tell negotiated answers apart.
    let js = blobs.put_bytes(Bytes::from_static(b"console.log(1)")).await.unwrap();
    let gz = blobs.put_bytes(Bytes::from_static(b"gz!")).await.unwrap();
    m.files.insert(
        "app.js".into(),
        ManifestEntry {
            hash: js,
            size: 14,
            content_type: "text/javascript".into(),
            variants: vec![chanto_core::Variant { encoding: chanto_core::Encoding::Gzip, hash: gz, size: 3 }],
        },
    );
    m.files.insert(
        "docs/index.html".into(),
        ManifestEntry { hash: small, size: 5, content_type: "text/html".into(), variants: vec![] },
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
    // Two more sites: "r" with header rules and a redirect, "l" with a rule
    // that reads Accept-Language.
    let mut rows = vec![production_row(&blobs, "s", &m, 1).await];
    for (site, redirects) in [("r", "/old /index.html 301\n"), ("l", "/fr/* /index.html 302 Language=fr\n")] {
        let headers = b"/*\n  X-Frame-Options: DENY\n/app.js\n  Cache-Control: no-cache\n";
        let files: [(&str, &[u8]); 2] = [("_headers", headers), ("_redirects", redirects.as_bytes())];
        let rules = chanto_rules::compile(&files).unwrap();
        let mut with_rules = m.clone();
        with_rules.rules = Some(rules);
        rows.push(production_row(&blobs, site, &with_rules, site.as_bytes()[0]).await);
    }
    edge.publish(RoutingTable::from_rows(1, rows, vec![], vec![], vec![])).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, chanto_edge::router(edge.clone()), limits, async move {
        let _ = rx.await;
    }));
    Running { addr, edge, blobs, stop: Some(stop), task, _dir: dir }
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

/// A client that never finishes its headers is disconnected by the server,
/// on the fast path (its first request) and on hyper's (after a request
/// that hands the connection over). The check is that the server closed
/// the connection: the client's own read timeout is only a safety net far
/// beyond the server's, and hitting it fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let r = start(ServerLimits { header_read_timeout: Duration::from_millis(300), ..Default::default() }).await;
    let addr = r.addr;
    tokio::task::spawn_blocking(move || {
        for before in [&b""[..], TO_HYPER] {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.write_all(&[before, b"GET / HTTP/1.1\r\nHost: s.loc"].concat()).unwrap();
            let mut out = Vec::new();
            let closed = s.read_to_end(&mut out);
            assert!(closed.is_ok(), "the server kept a slow client's connection open: {closed:?}");
            assert!(!String::from_utf8_lossy(&out).contains("hello"));
        }
    })
    .await
    .unwrap();
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// An h2c connection on which nothing happens is closed after the idle
/// timeout (with a GOAWAY), as idle HTTP/1 connections are; one that is
/// busy sending a large body is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2c_connections_are_closed() {
    let limits = ServerLimits { idle_timeout: Duration::from_millis(300), ..Default::default() };
    let r = start(limits).await;
    let addr = r.addr;
    let seen = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(H2_PREFACE).unwrap();
        let mut out = Vec::new();
        let closed = s.read_to_end(&mut out);
        assert!(closed.is_ok(), "an idle h2c connection stayed open: {closed:?}");
        out
    })
    .await
    .unwrap();
    assert!(has_goaway(&seen), "the server said goodbye: {seen:?}");
    // A transfer longer than the idle timeout keeps going while bytes move.
    let c = client(true);
    let resp = c.get(format!("http://s.localhost:{}/big.bin", r.addr.port())).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.bytes().await.unwrap().len(), BIG);
}

/// Whether the frames in `bytes` (after the server's preface) include a GOAWAY.
fn has_goaway(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 9 {
        let len = (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        if bytes[3] == 0x7 {
            return true;
        }
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    false
}

/// The API and admin listeners ([`chanto_edge::server::serve_router`]) cut
/// off clients that are slow to send their headers, and close idle
/// connections, as the edge does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_get_the_same_connection_bounds() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "api" }));
    tokio::spawn(chanto_edge::server::serve_router(listener, router, limits, std::future::pending()));
    let ok = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "api");
    tokio::task::spawn_blocking(move || {
        for start in [&b"GET / HTTP/1.1\r\nHost: a"[..], H2_PREFACE, b""] {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.write_all(start).unwrap();
            let mut out = Vec::new();
            let closed = s.read_to_end(&mut out);
            assert!(closed.is_ok(), "{:?}: the connection stayed open: {closed:?}", String::from_utf8_lossy(start));
        }
    })
    .await
    .unwrap();
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
        // Let the server fill the socket before reading anything, so its
        // sends meet a full socket.
        wait_until_receive_queue_is_full(&s);
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

/// Waits until the bytes waiting in `s`'s receive queue stop growing: the
/// queue (and the server's send buffer) are full and the server's sends
/// wait for the client. An observable event, not a guess at a duration.
fn wait_until_receive_queue_is_full(s: &std::net::TcpStream) {
    let (mut last, mut same) = (0u64, 0);
    for _ in 0..10_000 {
        let queued = rustix::io::ioctl_fionread(s).unwrap();
        if queued > 0 && queued == last {
            same += 1;
            if same == 20 {
                return;
            }
        } else {
            (last, same) = (queued, 0);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("the receive queue never filled: {last} bytes");
}

/// A last request that asks the server to close the connection after it.
const LAST: &[u8] = b"GET /last HTTP/1.1\r\nHost: s.localhost\r\nConnection: close\r\n\r\n";

/// Sends `raw` and then [`LAST`] on a fresh connection, and reads what comes
/// back until the server closes it.
fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(&[raw, LAST].concat());
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A response with its `date` line taken out, so two can be compared.
fn without_date(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A request that hands the connection to hyper, and the answer it gets.
const TO_HYPER: &[u8] = b"OPTIONS / HTTP/1.1\r\nHost: s.localhost\r\n\r\n";

/// What `raw` gets on a fresh connection (the fast path first) and after
/// [`TO_HYPER`] (hyper's path), the latter without the OPTIONS answer.
fn both_paths(addr: std::net::SocketAddr, raw: &[u8]) -> (String, String) {
    let fast = exchange(addr, raw);
    let mut second = TO_HYPER.to_vec();
    second.extend_from_slice(raw);
    let slow = exchange(addr, &second);
    let options_end = slow.windows(4).position(|w| w == b"\r\n\r\n").expect("the OPTIONS answer") + 4;
    (without_date(&fast), without_date(&slow[options_end..]))
}

fn fast_count(edge: &Edge) -> u64 {
    edge.metrics.fast_responses.load(std::sync::atomic::Ordering::Relaxed)
}

fn renders(edge: &Edge) -> u64 {
    edge.metrics.fast_renders.load(std::sync::atomic::Ordering::Relaxed)
}

/// A routing change keeps the fast path's ready-made answers of the sites
/// it did not change, and drops those of the site it changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_keeps_other_sites_ready_made_answers() {
    let r = start(ServerLimits::default()).await;
    let get = |host: &str| format!("GET / HTTP/1.1\r\nHost: {host}.localhost\r\n\r\n").into_bytes();
    let answer = |raw: &[u8]| without_date(&exchange(r.addr, raw));
    let (s_first, r_first) = (answer(&get("s")), answer(&get("r")));
    assert!(s_first.starts_with("HTTP/1.1 200"), "{s_first}");
    let made = renders(&r.edge);
    assert_eq!(answer(&get("s")), s_first);
    assert_eq!(renders(&r.edge), made, "the second answer is the first one again");

    // Site r gets another deploy: s keeps its answer, r's is made again.
    let edit = |version: u64, site: &str, deploy: u8| {
        let t = r.edge.snapshot().table().clone();
        let name: chanto_core::SiteName = site.parse().unwrap();
        let mut part = (*t.sites[&name]).clone();
        part.branches[0].deploy = DeployId::from_random([deploy; 8]);
        t.with_site(version, &name, Some(part))
    };
    r.edge.publish(edit(2, "r", 200)).await.unwrap();
    assert_eq!(answer(&get("s")), s_first);
    assert_eq!(renders(&r.edge), made, "s's answer survived a change to r");
    assert_eq!(answer(&get("r")), r_first);
    assert_eq!(renders(&r.edge), made + 1, "r's answer was made again");

    // Now s changes: its old answer goes.
    r.edge.publish(edit(3, "s", 201)).await.unwrap();
    assert_eq!(answer(&get("s")), s_first);
    assert_eq!(renders(&r.edge), made + 2);
}

/// Plain requests are answered on the fast path with exactly the bytes
/// hyper's path gives them: status, every header but `date`, and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_answers_exactly_as_hyper_does() {
    let r = start(ServerLimits::default()).await;
    let etag = {
        let resp = client(false).get(format!("http://s.localhost:{}/app.js", r.addr.port())).send().await.unwrap();
        resp.headers()["etag"].to_str().unwrap().to_owned()
    };
    let etag_index = {
        let resp = client(false).get(format!("http://s.localhost:{}/", r.addr.port())).send().await.unwrap();
        resp.headers()["etag"].to_str().unwrap().to_owned()
    };
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: s.localhost\r\n{extra}\r\n");
    // (request, answered on the fast path)
    let cases = [
        (get("/", ""), true),
        (get("/index.html", ""), true),
        (get("/docs/", ""), true),
        (get("/app.js", "Accept-Encoding: gzip, br;q=0\r\nUser-Agent: t\r\nAccept: */*\r\n"), true),
        (get("/app.js", "Accept-Encoding: gzip;q=0\r\n"), true),
        (get("/app.js", &format!("If-None-Match: {etag}\r\n")), true),
        (get("/app.js", "If-None-Match: \"other\"\r\n"), true),
        (get("/app.js", "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n"), true),
        (get("/app.js?v=2", "Connection: keep-alive\r\n"), true),
        (get("/", "Connection: close\r\n"), true),
        (get("/mid.bin", "Connection: close\r\n"), true),
        (get("/", "Connection: keep-alive, close\r\n"), false),
        ("HEAD /app.js HTTP/1.1\r\nHost: S.LOCALHOST.\r\n\r\n".to_string(), true),
        (get("/mid.bin", ""), true),
        // A head larger than the first read buffer.
        (get("/", &format!("Cookie: {}\r\n", "c".repeat(10_000))), true),
        // Header rules ride along; redirects and language rules are hyper's.
        ("GET /app.js HTTP/1.1\r\nHost: r.localhost\r\n\r\n".to_string(), true),
        (format!("GET / HTTP/1.1\r\nHost: r.localhost\r\nIf-None-Match: {etag_index}\r\n\r\n"), true),
        ("GET /old HTTP/1.1\r\nHost: r.localhost\r\n\r\n".to_string(), false),
        ("GET / HTTP/1.1\r\nHost: l.localhost\r\n\r\n".to_string(), false),
        // hyper's path for all of these, on both connections.
        (get("/docs", ""), false),
        (get("/nope", ""), false),
        (get("/app.js", "Range: bytes=0-3\r\n"), false),
        (get("/app.js", "If-Match: \"x\"\r\n"), false),
        (get("/big.bin", "Range: bytes=5-9\r\n"), false),
        (get("/%2e%2e/etc/passwd", ""), false),
        ("GET / HTTP/1.1\r\nHost: other.localhost\r\n\r\n".to_string(), false),
        ("GET / HTTP/1.1\r\nHost: s.localhost\r\nHost: x.localhost\r\n\r\n".to_string(), false),
        ("GET / HTTP/1.0\r\nHost: s.localhost\r\n\r\n".to_string(), false),
        ("POST / HTTP/1.1\r\nHost: s.localhost\r\nContent-Length: 2\r\n\r\nhi".to_string(), false),
        ("GET http://s.localhost/ HTTP/1.1\r\nHost: s.localhost\r\n\r\n".to_string(), false),
        ("GET /a|b HTTP/1.1\r\nHost: s.localhost\r\n\r\n".to_string(), false),
        ("GET / HTTP/1.1\r\n\r\n".to_string(), false),
        ("get / HTTP/1.1\r\nHost: s.localhost\r\n\r\n".to_string(), false),
    ];
    let addr = r.addr;
    for (raw, fast) in cases {
        let before = fast_count(&r.edge);
        let (a, b) = tokio::task::spawn_blocking({
            let raw = raw.clone();
            move || both_paths(addr, raw.as_bytes())
        })
        .await
        .unwrap();
        assert!(a.starts_with("HTTP/1."), "{raw:?} got {a:?}");
        assert_eq!(a, b, "{raw:?}: the fast path and hyper differ");
        if raw.contains("Host: r.localhost") && !raw.contains("/old") {
            assert!(a.contains("x-frame-options: DENY"), "{raw:?}: the header rule applies: {a}");
        }
        let answered_fast = fast_count(&r.edge) - before;
        assert_eq!(answered_fast, u64::from(fast), "{raw:?}: answered on the fast path {answered_fast} times");
    }
}

/// Pipelined requests keep their order across the move to hyper, and a
/// deploy published while a connection is open is what its next request gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_moves_to_hyper_in_order_and_sees_new_deploys() {
    let r = start(ServerLimits::default()).await;
    let addr = r.addr;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: s.localhost\r\n{extra}\r\n");
    let all =
        [get("/", ""), get("/app.js", ""), get("/app.js", "Range: bytes=8-\r\n"), get("/", ""), get("/app.js", "")]
            .concat();
    // Byte by byte: every request arrives in pieces.
    for b in all.as_bytes() {
        s.write_all(&[*b]).unwrap();
    }
    let mut pending = Vec::new();
    let bodies: Vec<Vec<u8>> = (0..5).map(|_| read_response(&mut s, &mut pending, true).1).collect();
    assert_eq!(bodies, [&b"hello"[..], b"console.log(1)", b"log(1)", b"hello", b"console.log(1)"]);
    assert_eq!(fast_count(&r.edge), 2, "the first two, before the range request");

    // A fresh connection stays on the fast path; a new deploy reaches it.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(get("/", "").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut pending, true).1, b"hello");
    publish_index(&r, b"fresh bytes", 2).await;
    s.write_all(get("/", "").as_bytes()).unwrap();
    let (head, body) = read_response(&mut s, &mut pending, true);
    assert_eq!(body, b"fresh bytes", "{head}");
    assert_eq!(fast_count(&r.edge), 4);
}

/// Publishes a deploy whose `index.html` is `bytes`, as routing version `version`.
async fn publish_index(r: &Running, bytes: &'static [u8], version: u64) {
    let (edge, blobs) = (&r.edge, &r.blobs);
    let hash = blobs.put_bytes(Bytes::from_static(bytes)).await.unwrap();
    let mut m = Manifest { version: Manifest::VERSION, ..Default::default() };
    m.files.insert(
        "index.html".into(),
        ManifestEntry { hash, size: bytes.len() as u64, content_type: "text/html".into(), variants: vec![] },
    );
    let row = production_row(blobs, "s", &m, version as u8).await;
    edge.publish(RoutingTable::from_rows(version, vec![row], vec![], vec![], vec![])).await.unwrap();
}

/// Stores `manifest` and routes `site`'s production branch `main` to it, as
/// the deploy whose id is made of `deploy` bytes.
async fn production_row(blobs: &LocalBlobStore, site: &str, manifest: &Manifest, deploy: u8) -> RoutingRow {
    let mh = blobs.put_bytes(Bytes::from(serde_json::to_vec(manifest).unwrap())).await.unwrap();
    let branch: chanto_core::BranchName = "main".parse().unwrap();
    RoutingRow {
        site: site.parse().unwrap(),
        label: branch.label(),
        branch,
        production: true,
        deploy: DeployId::from_random([deploy; 8]),
        manifest: mh,
        ready_at: 0,
    }
}

/// Random damage to plain requests (bytes flipped, cut, duplicated) never
/// makes the fast path answer differently from hyper, nor stop the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_requests_get_hypers_answer() {
    let r = start(ServerLimits::default()).await;
    let addr = r.addr;
    let seeds: &[&[u8]] = &[
        b"GET /app.js HTTP/1.1\r\nHost: s.localhost\r\nAccept-Encoding: gzip\r\n\r\n",
        b"HEAD /docs/ HTTP/1.1\r\nHost: s.localhost\r\nIf-None-Match: \"a\"\r\n\r\n",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let bytes = [b'\0', b'\r', b'\n', b' ', b':', b'/', b'%', b'.', 0xff, b'\t', b'A', b'"'];
    let mut cases = Vec::new();
    for i in 0..200 {
        let mut raw = seeds[i % seeds.len()].to_vec();
        for _ in 0..1 + next() % 3 {
            let at = (next() as usize) % raw.len();
            match next() % 4 {
                0 => raw[at] = bytes[(next() as usize) % bytes.len()],
                1 => drop(raw.remove(at)),
                2 => raw.insert(at, bytes[(next() as usize) % bytes.len()]),
                _ => {
                    let piece = raw[at..(at + 8).min(raw.len())].to_vec();
                    raw.splice(at..at, piece);
                }
            }
        }
        cases.push(raw);
    }
    let differ = tokio::task::spawn_blocking(move || {
        cases
            .into_iter()
            .filter_map(|raw| {
                let (a, b) = both_paths(addr, &raw);
                // A request cut short gets no answer on either path.
                (a != b && !(a.is_empty() && b.is_empty()))
                    .then(|| format!("{:?}: {a:?} vs {b:?}", String::from_utf8_lossy(&raw)))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(differ.is_empty(), "{differ:#?}");
    // Both kinds were compared: answers the fast path gave, and hyper's.
    let fast = fast_count(&r.edge);
    assert!((5..200).contains(&fast), "{fast} of 400 requests answered on the fast path");
    let ok = client(false).get(format!("http://s.localhost:{}/", r.addr.port())).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

/// Traversal and smuggling attempts get one answer, the same on the fast
/// path (a fresh connection) and on hyper's (after a hand-over), and it is
/// the safe one: nothing outside the deploy, no second request hidden in
/// the first, no routing by a second `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_smuggling_corpus_gets_one_safe_answer_on_both_paths() {
    let r = start(ServerLimits::default()).await;
    let get = |target: &str, extra: &str| format!("GET {target} HTTP/1.1\r\nHost: s.localhost\r\n{extra}\r\n");
    // (request, status line, body is the deploy's "hello" when 200)
    let cases: Vec<(String, &str)> = vec![
        // Encoded dots and slashes.
        (get("/%2e%2e/etc/passwd", ""), "HTTP/1.1 400"),
        (get("/%2E%2E%2Fetc%2Fpasswd", ""), "HTTP/1.1 400"),
        (get("/..%2f..%2fetc/passwd", ""), "HTTP/1.1 400"),
        (get("/docs/..%2f..%2fetc/passwd", ""), "HTTP/1.1 400"),
        (get("/docs/%2e%2e/index.html", ""), "HTTP/1.1 200"),
        (get("/docs%2findex.html", ""), "HTTP/1.1 200"),
        (get("/%2e/index.html", ""), "HTTP/1.1 200"),
        (get("//index.html", ""), "HTTP/1.1 200"),
        (get("/%252e%252e/etc/passwd", ""), "HTTP/1.1 404"),
        // Overlong UTF-8 for '.', '/' and '\'.
        (get("/%c0%ae%c0%ae/etc/passwd", ""), "HTTP/1.1 400"),
        (get("/%c0%af..%c0%afetc", ""), "HTTP/1.1 400"),
        (get("/%e0%80%ae%e0%80%ae/x", ""), "HTTP/1.1 400"),
        (get("/%c1%9c", ""), "HTTP/1.1 400"),
        // NUL.
        (get("/index.html%00.js", ""), "HTTP/1.1 400"),
        ("GET /index.html\0 HTTP/1.1\r\nHost: s.localhost\r\n\r\n".into(), "HTTP/1.1 400"),
        // Backslashes.
        (get("/%5c..%5cetc%5cpasswd", ""), "HTTP/1.1 400"),
        (get("/docs%5cindex.html", ""), "HTTP/1.1 400"),
        ("GET /..\\etc\\passwd HTTP/1.1\r\nHost: s.localhost\r\n\r\n".into(), "HTTP/1.1 400"),
        // Duplicate Host: refused, not routed by either one.
        ("GET / HTTP/1.1\r\nHost: s.localhost\r\nHost: r.localhost\r\n\r\n".into(), "HTTP/1.1 400"),
        ("GET / HTTP/1.1\r\nHost: other.localhost\r\nhost: s.localhost\r\n\r\n".into(), "HTTP/1.1 400"),
        // Duplicate or conflicting framing.
        (get("/", "Content-Length: 0\r\nContent-Length: 5\r\n"), "HTTP/1.1 400"),
        (get("/", "Content-Length: 5, 0\r\n"), "HTTP/1.1 400"),
        (get("/", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"), "HTTP/1.1 400"),
        (get("/", "Transfer-Encoding: gzip\r\n"), "HTTP/1.1 400"),
        // Absolute-form targets: the target's authority is the host.
        ("GET http://s.localhost/ HTTP/1.1\r\nHost: s.localhost\r\n\r\n".into(), "HTTP/1.1 200"),
        ("GET http://other.localhost/ HTTP/1.1\r\nHost: s.localhost\r\n\r\n".into(), "HTTP/1.1 404"),
        ("GET http://s.localhost/%2e%2e/etc/passwd HTTP/1.1\r\nHost: s.localhost\r\n\r\n".into(), "HTTP/1.1 400"),
        ("GET http://s.localhost//evil.com/..%2fdocs HTTP/1.1\r\nHost: s.localhost\r\n\r\n".into(), "HTTP/1.1 301"),
    ];
    let addr = r.addr;
    for (raw, want) in cases {
        let (fast, hyper) = tokio::task::spawn_blocking({
            let raw = raw.clone();
            move || both_paths(addr, raw.as_bytes())
        })
        .await
        .unwrap();
        assert_eq!(fast, hyper, "{raw:?}: the fast path and hyper differ");
        assert!(fast.starts_with(want), "{raw:?}: want {want}, got {fast:?}");
        // At most one answer to the request (plus the closing one), never a smuggled second.
        let answers = fast.matches("HTTP/1.1 ").count();
        assert!(answers <= 2, "{raw:?}: {answers} answers: {fast}");
        if want.ends_with("200") {
            assert!(fast.contains("\n\nhello") || fast.contains("hello"), "{raw:?}: {fast}");
        }
        if want.ends_with("301") {
            assert!(fast.to_ascii_lowercase().contains("location: /docs/"), "{raw:?}: {fast}");
        }
    }

    // A request smuggled in the body of another (a body the edge must read
    // past, whether it is framed by Content-Length or chunks) is never
    // answered as a request of its own.
    let smuggled = "GET /big.bin HTTP/1.1\r\nHost: s.localhost\r\n\r\n";
    for framing in [
        format!("Content-Length: {}\r\n\r\n{smuggled}", smuggled.len()),
        format!("Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len()),
        format!("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
    ] {
        let raw = format!("GET / HTTP/1.1\r\nHost: s.localhost\r\n{framing}");
        let (fast, hyper) = tokio::task::spawn_blocking({
            let raw = raw.clone();
            move || both_paths(addr, raw.as_bytes())
        })
        .await
        .unwrap();
        assert_eq!(fast, hyper, "{raw:?}: the fast path and hyper differ");
        assert!(!fast.contains("application/octet-stream"), "{raw:?}: the smuggled request was answered: {fast}");
    }
}

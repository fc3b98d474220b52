//! Overload on a real socket (port 0): the connection cap answers the sorry
//! page at once (timed at the client) and recovers by itself; a site's
//! concurrency cap refuses only that site; a flood of idle connections
//! holds a bounded number of sockets; hostile bytes to a refused connection
//! change nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chanto_core::{DeployId, Manifest, ManifestEntry};
use chanto_edge::Edge;
use chanto_edge::server::{ServerLimits, serve};
use chanto_edge::sorry::{DEFAULT_SORRY_PAGE, Reason};
use chanto_store::{BlobStore, LocalBlobStore, RoutingRow, RoutingSink, RoutingTable};

const BIG: usize = 8 << 20;
const SITE_SORRY: &str = "<h1>s is busy</h1>";
const CAPPED_SORRY: &str = "<h1>c is busy, come back</h1>";

struct Running {
    addr: std::net::SocketAddr,
    edge: Arc<Edge>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn file(blobs: &LocalBlobStore, m: &mut Manifest, name: &str, bytes: Bytes, ct: &str) {
    let size = bytes.len() as u64;
    let hash = blobs.put_bytes(bytes).await.unwrap();
    m.files.insert(name.into(), ManifestEntry { hash, size, content_type: ct.into(), variants: vec![] });
}

async fn row(blobs: &LocalBlobStore, site: &str, m: &Manifest, deploy: u8) -> RoutingRow {
    let mh = blobs.put_bytes(Bytes::from(serde_json::to_vec(m).unwrap())).await.unwrap();
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

/// Sites: `s` (has `sorry.html`), `n` (no sorry page), `c` (at most one
/// request at once, its sorry page at `/busy.html`).
async fn start(max_connections: usize, limits: ServerLimits) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap());
    let mut config = chanto_edge::EdgeConfig::new("localhost");
    config.max_connections = max_connections;
    let edge = Edge::new(config, blobs.clone() as Arc<dyn BlobStore>);
    let mut base = Manifest { version: Manifest::VERSION, ..Default::default() };
    file(&blobs, &mut base, "index.html", Bytes::from_static(b"hello"), "text/html").await;
    file(&blobs, &mut base, "big.bin", Bytes::from(vec![7u8; BIG]), "application/octet-stream").await;
    let mut s = base.clone();
    file(&blobs, &mut s, "sorry.html", Bytes::from_static(SITE_SORRY.as_bytes()), "text/html; charset=utf-8").await;
    let mut c = base.clone();
    file(&blobs, &mut c, "busy.html", Bytes::from_static(CAPPED_SORRY.as_bytes()), "text/html; charset=utf-8").await;
    // A sorry.html the site's setting overrides.
    file(&blobs, &mut c, "sorry.html", Bytes::from_static(b"not this one"), "text/html").await;
    let toml = b"[serve]\nmax_concurrency = 1\nsorry_page = \"/busy.html\"\n";
    c.rules = Some(chanto_rules::compile(&[("chanto.toml", toml)]).unwrap());
    let rows = vec![row(&blobs, "s", &s, 1).await, row(&blobs, "n", &base, 2).await, row(&blobs, "c", &c, 3).await];
    let table = RoutingTable::from_rows(1, rows, vec![], vec![], vec![]);
    edge.publish(table).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, chanto_edge::router(edge.clone()), limits, async move {
        let _ = rx.await;
    }));
    Running { addr, edge, stop: Some(stop), _dir: dir }
}

/// A response as the client saw it.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Sends `req` on a new connection and reads until the server closes it.
fn exchange(addr: std::net::SocketAddr, req: &[u8]) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(req)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Answer { status, head, body: raw[split + 4..].to_vec() })
}

fn get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_sorry(a: &Answer, body: &str) {
    assert_eq!(a.status, 503, "{}", a.head);
    assert_eq!(a.header("retry-after").as_deref(), Some("5"), "{}", a.head);
    assert_eq!(a.header("cache-control").as_deref(), Some("no-store"), "{}", a.head);
    assert!(a.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{}", a.head);
    assert_eq!(String::from_utf8_lossy(&a.body), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_connection_cap_the_sorry_page_comes_at_once_and_service_recovers() {
    let limits = ServerLimits { header_read_timeout: Duration::from_secs(30), ..Default::default() };
    let r = start(3, limits).await;
    let addr = r.addr;
    // Three idle connections fill the cap.
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    until("three open connections", || r.edge.overload().open_connections() == 3).await;
    let timings = tokio::task::spawn_blocking(move || {
        let mut timings = Vec::new();
        for i in 0..60 {
            let (host, want) = match i % 3 {
                0 => ("s.localhost", SITE_SORRY),
                1 => ("c.localhost", CAPPED_SORRY),
                _ => ("n.localhost", DEFAULT_SORRY_PAGE),
            };
            let started = Instant::now();
            let a = exchange(addr, &get(host, "/")).unwrap();
            timings.push(started.elapsed());
            assert_sorry(&a, want);
            assert_eq!(a.header("connection").as_deref(), Some("close"));
        }
        // A HEAD gets the head alone.
        let a = exchange(addr, b"HEAD / HTTP/1.1\r\nHost: s.localhost\r\n\r\n").unwrap();
        assert_eq!(a.status, 503);
        assert!(a.body.is_empty());
        timings
    })
    .await
    .unwrap();
    let mut sorted = timings.clone();
    sorted.sort();
    let p90 = sorted[sorted.len() * 9 / 10];
    eprintln!("sorry page at the client: median {:?}, p90 {p90:?}, max {:?}", sorted[sorted.len() / 2], sorted.last());
    assert!(p90 < Duration::from_millis(10), "the sorry page took {p90:?} (p90) at the client: {sorted:?}");
    assert!(r.edge.overload().refused(Reason::Connections) >= 61);
    assert_eq!(r.edge.overload().open_connections(), 3, "refused connections are not counted as open");
    // The clients go away: service comes back by itself.
    drop(held);
    until("the held connections to close", || r.edge.overload().open_connections() == 0).await;
    let a = tokio::task::spawn_blocking(move || exchange(addr, &get("s.localhost", "/")).unwrap()).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b"hello");
    let mut metrics = String::new();
    r.edge.overload().render_metrics(&mut metrics);
    assert!(metrics.contains("chanto_edge_refused_total{reason=\"connections\"} 61"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_holds_a_bounded_number_of_sockets() {
    let limits = ServerLimits { header_read_timeout: Duration::from_millis(500), ..Default::default() };
    let r = start(20, limits).await;
    let addr = r.addr;
    // 600 connections that never send a byte.
    let flood: Vec<TcpStream> = (0..600).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < Duration::from_millis(300) {
        peak = peak.max(r.edge.overload().open_connections());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(peak <= 20, "{peak} connections open with a cap of 20");
    // Every one of them is closed by the server within the header-read
    // timeout (and the refusal wait), none held for ever.
    let closed = tokio::task::spawn_blocking(move || {
        let mut closed = 0;
        for mut s in flood {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 64];
            // EOF or a reset: either way the server let go.
            match s.read(&mut b) {
                Ok(0) => closed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
                other => panic!("an idle connection was not closed: {other:?}"),
            }
        }
        closed
    })
    .await
    .unwrap();
    assert_eq!(closed, 600);
    assert!(started.elapsed() < Duration::from_secs(4), "idle connections were held {:?}", started.elapsed());
    until("the flood to drain", || r.edge.overload().open_connections() == 0).await;
    let mut metrics = String::new();
    r.edge.overload().render_metrics(&mut metrics);
    assert!(metrics.contains("chanto_edge_dropped_connections_total"), "{metrics}");
    let a = tokio::task::spawn_blocking(move || exchange(addr, &get("s.localhost", "/")).unwrap()).await.unwrap();
    assert_eq!(a.status, 200, "service recovers after the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_concurrency_cap_refuses_that_site_only_and_recovers() {
    let r = start(100, ServerLimits::default()).await;
    let addr = r.addr;
    // One slow download of c holds its one slot: it reads a little and stalls.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(&get("c.localhost", "/big.bin")).unwrap();
    let mut first = [0u8; 1024];
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(slow.read(&mut first).unwrap() > 0);
    assert!(String::from_utf8_lossy(&first).starts_with("HTTP/1.1 200"));
    let a = tokio::task::spawn_blocking(move || {
        let refused = exchange(addr, &get("c.localhost", "/")).unwrap();
        let other = exchange(addr, &get("s.localhost", "/")).unwrap();
        let head = exchange(addr, b"HEAD / HTTP/1.1\r\nHost: c.localhost\r\nConnection: close\r\n\r\n").unwrap();
        (refused, other, head)
    })
    .await
    .unwrap();
    assert_sorry(&a.0, CAPPED_SORRY);
    assert_eq!(a.1.status, 200, "another site is not refused");
    assert_eq!(a.2.status, 503);
    assert!(a.2.body.is_empty());
    assert_eq!(r.edge.overload().refused(Reason::SiteConcurrency), 2);
    // The download ends (the client leaves): the slot is free again.
    drop(slow);
    let start = Instant::now();
    loop {
        let a = tokio::task::spawn_blocking(move || exchange(addr, &get("c.localhost", "/")).unwrap()).await.unwrap();
        if a.status == 200 {
            assert_eq!(a.body, b"hello");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "site c never recovered: {}", a.head);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A refused connection that sends garbage, too much, a half head or
/// nothing gets the node's page or is closed, promptly; the server goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_above_the_cap_are_harmless() {
    let limits = ServerLimits { header_read_timeout: Duration::from_secs(30), ..Default::default() };
    let r = start(1, limits).await;
    let addr = r.addr;
    let held = TcpStream::connect(addr).unwrap();
    until("one open connection", || r.edge.overload().open_connections() == 1).await;
    tokio::task::spawn_blocking(move || {
        let huge = vec![b'a'; 64 << 10];
        let inputs: [&[u8]; 5] = [
            b"\x00\x01\x02garbage\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: s.localhost\r\n\r\n",
            &huge,
        ];
        for input in inputs {
            let started = Instant::now();
            match exchange(addr, input) {
                Ok(a) => assert_eq!(a.status, 503, "{}", a.head),
                // A reset after the huge input: it was not read in full.
                Err(e) => assert!(input.len() > 4096, "{e}"),
            }
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        // Half a head, then silence: closed within the refusal wait.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let mut b = Vec::new();
        let _ = s.read_to_end(&mut b);
        assert!(b.is_empty(), "{}", String::from_utf8_lossy(&b));
        assert!(started.elapsed() < Duration::from_millis(1500), "held {:?}", started.elapsed());
    })
    .await
    .unwrap();
    drop(held);
    until("the held connection to close", || r.edge.overload().open_connections() == 0).await;
    let a = tokio::task::spawn_blocking(move || exchange(addr, &get("s.localhost", "/")).unwrap()).await.unwrap();
    assert_eq!(a.status, 200);
}

//! The edge's HTTPS listener on real sockets (port 0) with real TLS clients
//! (tokio-rustls, hyper): the same bytes as plain HTTP, HTTP/2 and
//! HTTP/1.1 by ALPN, the certificate chosen by SNI (exact before wildcard),
//! unknown names refused and counted, TLS 1.2, session resumption,
//! certificates replaced live, hostile and silent clients, the sorry page
//! over TLS, and a graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bytes::Bytes;
use chanto_core::{DeployId, Manifest, ManifestEntry};
use chanto_edge::Edge;
use chanto_edge::server::{ServerLimits, serve, serve_tls};
use chanto_edge::sorry::Reason;
use chanto_edge::tls::{CertStore, certified_key, server_config};
use chanto_store::{BlobStore, LocalBlobStore, RoutingRow, RoutingSink, RoutingTable};
use chanto_testkit::tls::{Leaf, TestCa};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, ProtocolVersion, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[path = "tls/domains.rs"]
mod domains;

const DOCS: &str = "docs.example.test";
const DOCS_SORRY: &str = "<h1>docs is busy</h1>";
/// Above the size from which plain HTTP sends bodies with `sendfile`.
const BIG: usize = chanto_edge::ZEROCOPY_MIN as usize * 6 + 123;

/// Bytes that repeat nowhere, so a byte from the wrong place shows.
fn random(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An edge for `*.example.test` serving sites `docs` and `blog` over plain
/// HTTP and HTTPS, with a certificate for `docs.example.test` and one for
/// `*.example.test`.
struct Running {
    http: SocketAddr,
    https: SocketAddr,
    edge: Arc<Edge>,
    store: Arc<CertStore>,
    ca: TestCa,
    exact: Leaf,
    wild: Leaf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    tls_task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn load(leaf: &Leaf) -> Arc<rustls::sign::CertifiedKey> {
    let cert = std::fs::read_to_string(&leaf.cert).unwrap();
    let key = std::fs::read_to_string(&leaf.key).unwrap();
    certified_key(&cert, &key).unwrap()
}

impl Running {
    /// The store's usual set: the exact name and the wildcard.
    fn usual_certificates(&self) -> Vec<(String, Arc<rustls::sign::CertifiedKey>)> {
        vec![(DOCS.to_owned(), load(&self.exact)), ("*.example.test".to_owned(), load(&self.wild))]
    }
}

async fn site(blobs: &LocalBlobStore, name: &str, files: &[(&str, Vec<u8>)], deploy: u8) -> RoutingRow {
    let mut m = Manifest { version: Manifest::VERSION, ..Default::default() };
    for (path, bytes) in files {
        let size = bytes.len() as u64;
        let hash = blobs.put_bytes(Bytes::from(bytes.clone())).await.unwrap();
        let content_type =
            if path.ends_with(".html") { "text/html; charset=utf-8" } else { "application/octet-stream" };
        m.files.insert(
            path.to_string(),
            ManifestEntry { hash, size, content_type: content_type.into(), variants: vec![] },
        );
    }
    let manifest = blobs.put_bytes(Bytes::from(serde_json::to_vec(&m).unwrap())).await.unwrap();
    let branch: chanto_core::BranchName = "main".parse().unwrap();
    RoutingRow {
        site: name.parse().unwrap(),
        label: branch.label(),
        branch,
        production: true,
        deploy: DeployId::from_random([deploy; 8]),
        manifest,
        ready_at: 0,
    }
}

async fn start(limits: ServerLimits, max_connections: usize) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap());
    let mut config = chanto_edge::EdgeConfig::new("example.test");
    config.max_connections = max_connections;
    let edge = Edge::new(config, blobs.clone() as Arc<dyn BlobStore>);
    let docs = [
        ("index.html", b"<h1>docs home</h1>".to_vec()),
        ("big.bin", random(BIG)),
        ("sorry.html", DOCS_SORRY.as_bytes().to_vec()),
    ];
    let blog = [("index.html", b"<h1>blog home</h1>".to_vec())];
    let rows = vec![site(&blobs, "docs", &docs, 1).await, site(&blobs, "blog", &blog, 2).await];
    edge.publish(RoutingTable::from_rows(1, rows, vec![], vec![], vec![])).await.unwrap();

    let ca = TestCa::new("edge");
    let exact = ca.issue(&[DOCS]);
    let wild = ca.issue(&["*.example.test"]);
    let store = Arc::new(CertStore::new());

    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http, https) = (plain.local_addr().unwrap(), secure.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = futures_util::FutureExt::shared(async move {
        let _ = rx.await;
    });
    let service = chanto_edge::router(edge.clone());
    tokio::spawn(serve(plain, service.clone(), limits.clone(), stopped.clone()));
    let tls_task = tokio::spawn(serve_tls(secure, service, server_config(store.clone()), limits, stopped));
    let r = Running { http, https, edge, store, ca, exact, wild, stop: Some(stop), tls_task, _dir: dir };
    r.store.replace(r.usual_certificates());
    r
}

fn quick_limits() -> ServerLimits {
    ServerLimits { header_read_timeout: Duration::from_millis(500), ..ServerLimits::default() }
}

/// A client that trusts only the test CA, speaking `versions` and offering `alpn`.
fn client(ca: &TestCa, versions: &[&'static SupportedProtocolVersion], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca.cert()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn any_version(ca: &TestCa, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client(ca, &[&rustls::version::TLS13, &rustls::version::TLS12], alpn)
}

async fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, sni: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let connect = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(10), connect).await.expect("the handshake finished or failed in time")
}

/// The DNS names of the certificate the server presented.
fn presented_names(s: &TlsStream<TcpStream>) -> Vec<String> {
    let der = &s.get_ref().1.peer_certificates().expect("a server certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("subject alternative names");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// Reads until the peer closes (or fails, or 10 s pass).
async fn read_all(s: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => return out,
        }
    }
}

/// A response with its `date` line taken out, so two can be compared.
fn without_date(raw: &[u8]) -> Vec<u8> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut out: Vec<u8> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes();
    out.extend_from_slice(&raw[split..]);
    out
}

/// Sends `raw` on a fresh HTTP/1.1 TLS connection and reads until it closes.
async fn tls_exchange(r: &Running, config: &Arc<ClientConfig>, sni: &str, raw: &[u8]) -> Vec<u8> {
    let mut s = connect(r.https, config, sni).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_all(&mut s).await
}

async fn plain_exchange(r: &Running, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(r.http).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_all(&mut s).await
}

/// One HTTP/1.1 request on a hyper client connection over `s`.
async fn h1_client(s: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Body> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    send
}

/// Sends `req` on `h1` once the connection is ready for it (after the last
/// response, hyper needs a moment to reuse the connection).
async fn send1(
    h1: &mut hyper::client::conn::http1::SendRequest<Body>,
    req: Request<Body>,
) -> hyper::Response<hyper::body::Incoming> {
    h1.ready().await.unwrap();
    h1.send_request(req).await.unwrap()
}

async fn h2_client(s: TlsStream<TcpStream>) -> hyper::client::conn::http2::SendRequest<Body> {
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn collect(resp: hyper::Response<hyper::body::Incoming>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, axum::body::to_bytes(Body::new(body), usize::MAX).await.unwrap())
}

fn get(uri: &str, host: &str) -> Request<Body> {
    Request::get(uri).header("host", host).body(Body::empty()).unwrap()
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_same_bytes_as_plain_http() {
    let r = start(ServerLimits::default(), 100).await;
    let config = any_version(&r.ca, &[b"http/1.1"]);
    let requests = [
        "GET / HTTP/1.1\r\nHost: docs.example.test\r\nConnection: close\r\n\r\n",
        "HEAD / HTTP/1.1\r\nHost: docs.example.test\r\nConnection: close\r\n\r\n",
        "GET /big.bin HTTP/1.1\r\nHost: docs.example.test\r\nConnection: close\r\n\r\n",
        "GET /big.bin HTTP/1.1\r\nHost: docs.example.test\r\nRange: bytes=1000-40000\r\nConnection: close\r\n\r\n",
        "GET /missing HTTP/1.1\r\nHost: docs.example.test\r\nConnection: close\r\n\r\n",
        "GET /../../etc/passwd HTTP/1.1\r\nHost: docs.example.test\r\nConnection: close\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: docs.example.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        // Another site, on the wildcard certificate, named by the Host header.
        "GET / HTTP/1.1\r\nHost: blog.example.test\r\nConnection: close\r\n\r\n",
    ];
    for raw in requests {
        let sni = if raw.contains("blog.") { "blog.example.test" } else { DOCS };
        let plain = plain_exchange(&r, raw.as_bytes()).await;
        let secure = tls_exchange(&r, &config, sni, raw.as_bytes()).await;
        assert!(plain.starts_with(b"HTTP/1.1 "), "{raw:?}: {}", String::from_utf8_lossy(&plain));
        assert!(
            without_date(&plain) == without_date(&secure),
            "{raw:?}\nplain:\n{}\nhttps:\n{}",
            String::from_utf8_lossy(&without_date(&plain)[..plain.len().min(600)]),
            String::from_utf8_lossy(&without_date(&secure)[..secure.len().min(600)]),
        );
    }
    // The big body made it whole, through TLS, not past it with sendfile.
    let big = tls_exchange(&r, &config, DOCS, requests[2].as_bytes()).await;
    assert!(big.ends_with(&random(BIG)), "the body over TLS differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_http2_streams_all_complete_with_whole_bodies() {
    // HTTP/2 over TLS gathers the writes of each pass of the connection
    // (`Coalesced`): nothing may be left waiting in it, small or large.
    let r = start(ServerLimits::default(), 100).await;
    let s = connect(r.https, &any_version(&r.ca, &[b"h2"]), DOCS).await.unwrap();
    let c = h2_client(s).await;
    let mut small = Vec::new();
    for _ in 0..100 {
        let mut c = c.clone();
        small.push(tokio::spawn(async move { collect(c.send_request(get("/", DOCS)).await.unwrap()).await }));
    }
    let mut big = Vec::new();
    for _ in 0..4 {
        let mut c = c.clone();
        big.push(tokio::spawn(async move { collect(c.send_request(get("/big.bin", DOCS)).await.unwrap()).await }));
    }
    let all = async {
        for t in small {
            let (status, _, body) = t.await.unwrap();
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"<h1>docs home</h1>"[..]));
        }
        for t in big {
            let (status, _, body) = t.await.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert!(body[..] == random(BIG)[..], "a big body over h2 differs");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all).await.expect("every stream finished");
    // And one more request on the quiet connection is answered at once.
    let mut c = c.clone();
    let one = tokio::time::timeout(Duration::from_secs(5), async {
        collect(c.send_request(get("/", DOCS)).await.unwrap()).await
    });
    assert_eq!(one.await.expect("answered on a quiet connection").0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_chooses_http2_or_http11() {
    let r = start(ServerLimits::default(), 100).await;
    // h2 when the client offers it first.
    let s = connect(r.https, &any_version(&r.ca, &[b"h2", b"http/1.1"]), DOCS).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = h2_client(s).await;
    // Streams at once on one connection.
    let uri = format!("https://{DOCS}/");
    let big_uri = format!("https://{DOCS}/big.bin");
    let (a, b) = tokio::join!(
        h2.send_request(Request::get(&uri).body(Body::empty()).unwrap()),
        h2.clone().send_request(Request::get(&big_uri).body(Body::empty()).unwrap()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.version(), axum::http::Version::HTTP_2);
    let (status, headers, body) = collect(a).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"<h1>docs home</h1>"[..]));
    assert!(headers.get("etag").is_some(), "{headers:?}");
    let (status, _, body) = collect(b).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body[..] == random(BIG)[..], "the big body over h2 differs");
    // h2 and HTTP/1.1 answer alike (but for what only HTTP/1 has).
    let (_, h2_headers, h2_body) = collect(
        h2.send_request(Request::get(&big_uri).header("range", "bytes=5-9").body(Body::empty()).unwrap())
            .await
            .unwrap(),
    )
    .await;

    // http/1.1 when the client offers only that; keep-alive holds.
    let s = connect(r.https, &any_version(&r.ca, &[b"http/1.1"]), DOCS).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h1 = h1_client(s).await;
    for _ in 0..3 {
        let resp = send1(&mut h1, get("/", DOCS)).await;
        assert_eq!(resp.version(), axum::http::Version::HTTP_11);
        let (status, _, body) = collect(resp).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"<h1>docs home</h1>"[..]));
    }
    let mut range = get("/big.bin", DOCS);
    range.headers_mut().insert("range", "bytes=5-9".parse().unwrap());
    let (status, h1_headers, h1_body) = collect(send1(&mut h1, range).await).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&h1_body[..], &random(BIG)[5..10]);
    assert_eq!(h1_body, h2_body);
    for name in ["content-range", "content-type", "etag", "last-modified", "cache-control"] {
        assert_eq!(h1_headers.get(name), h2_headers.get(name), "{name}");
    }

    // A client that names no protocol gets HTTP/1.1 too.
    let s = connect(r.https, &any_version(&r.ca, &[]), DOCS).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    let (status, _, _) = collect(send1(&mut h1_client(s).await, get("/", DOCS)).await).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_the_exact_name_beats_the_wildcard() {
    let r = start(ServerLimits::default(), 100).await;
    let config = any_version(&r.ca, &[b"h2", b"http/1.1"]);
    let s = connect(r.https, &config, DOCS).await.unwrap();
    assert_eq!(presented_names(&s), [DOCS]);
    let s = connect(r.https, &config, "blog.example.test").await.unwrap();
    assert_eq!(presented_names(&s), ["*.example.test"]);
    let mut h2 = h2_client(s).await;
    let resp = h2.send_request(Request::get("https://blog.example.test/").body(Body::empty()).unwrap()).await;
    let (status, _, body) = collect(resp.unwrap()).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"<h1>blog home</h1>"[..]));
    // Names are case-insensitive.
    let s = connect(r.https, &config, "DOCS.Example.TEST").await.unwrap();
    assert_eq!(presented_names(&s), [DOCS]);
    assert_eq!(r.store.unknown_sni_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_absent_names_fail_the_handshake_and_are_counted() {
    let r = start(ServerLimits::default(), 100).await;
    let config = any_version(&r.ca, &[b"h2", b"http/1.1"]);
    // A name outside the set, and one two labels below the wildcard.
    for sni in ["other.test", "a.b.example.test", "example.test"] {
        let before = r.store.unknown_sni_total();
        let err = connect(r.https, &config, sni).await.err().unwrap_or_else(|| panic!("{sni}: handshake succeeded"));
        assert!(err.to_string().to_lowercase().contains("alert"), "{sni}: {err}");
        assert_eq!(r.store.unknown_sni_total(), before + 1, "{sni}");
    }
    // No name at all.
    let mut no_sni = (*config).clone();
    no_sni.enable_sni = false;
    let before = r.store.unknown_sni_total();
    assert!(connect(r.https, &Arc::new(no_sni), DOCS).await.is_err(), "a handshake without SNI succeeded");
    assert_eq!(r.store.unknown_sni_total(), before + 1);
    // Refusals hold nothing: connections are all closed, serving goes on.
    until("refused connections to close", || r.edge.overload().open_connections() == 0).await;
    let s = connect(r.https, &config, DOCS).await.unwrap();
    let (status, _, _) =
        collect(h2_client(s).await.send_request(get(&format!("https://{DOCS}/"), DOCS)).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_clients_are_served() {
    let r = start(ServerLimits::default(), 100).await;
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let config = client(&r.ca, &[&rustls::version::TLS12], &[alpn]);
        let s = connect(r.https, &config, DOCS).await.unwrap();
        assert_eq!(s.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_2));
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(alpn));
        let status = if alpn == b"h2" {
            collect(h2_client(s).await.send_request(get(&format!("https://{DOCS}/"), DOCS)).await.unwrap()).await.0
        } else {
            collect(send1(&mut h1_client(s).await, get("/", DOCS)).await).await.0
        };
        assert_eq!(status, StatusCode::OK);
    }
    // And TLS 1.3 is what a client that has both gets.
    let s = connect(r.https, &any_version(&r.ca, &[]), DOCS).await.unwrap();
    assert_eq!(s.get_ref().1.protocol_version(), Some(ProtocolVersion::TLSv1_3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_on_tls13_and_tls12() {
    let r = start(ServerLimits::default(), 100).await;
    let raw = format!("GET / HTTP/1.1\r\nHost: {DOCS}\r\nConnection: close\r\n\r\n");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client(&r.ca, &[version], &[b"http/1.1"]);
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let mut s = connect(r.https, &config, DOCS).await.unwrap();
            kinds.push(s.get_ref().1.handshake_kind());
            // Reading the answer also reads the TLS 1.3 tickets sent after the handshake.
            s.write_all(raw.as_bytes()).await.unwrap();
            let answer = read_all(&mut s).await;
            assert!(answer.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&answer));
        }
        let resumed = Some(HandshakeKind::Resumed);
        assert_eq!(kinds, [Some(HandshakeKind::Full), resumed, resumed], "{version:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificates_serve_from_the_next_handshake() {
    let r = start(ServerLimits::default(), 100).await;
    // A fresh client each time, so no session resumes across the changes.
    let fresh = || any_version(&r.ca, &[b"http/1.1"]);
    let held = connect(r.https, &fresh(), DOCS).await.unwrap();
    assert_eq!(presented_names(&held), [DOCS]);
    r.store.replace([("*.example.test".to_owned(), load(&r.wild))]);
    assert_eq!(r.store.len(), 1);
    assert_eq!(presented_names(&connect(r.https, &fresh(), DOCS).await.unwrap()), ["*.example.test"]);
    // A connection made before the change keeps what it had.
    let (status, _, _) = collect(send1(&mut h1_client(held).await, get("/", DOCS)).await).await;
    assert_eq!(status, StatusCode::OK);

    // A session made under a certificate does not outlive its removal.
    let resuming = fresh();
    let mut s = connect(r.https, &resuming, DOCS).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {DOCS}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    read_all(&mut s).await;
    r.store.replace([]);
    assert!(r.store.is_empty());
    assert!(connect(r.https, &resuming, DOCS).await.is_err(), "resumed a session for a name with no certificate");
    assert!(connect(r.https, &fresh(), DOCS).await.is_err());

    r.store.replace(r.usual_certificates());
    assert_eq!(presented_names(&connect(r.https, &fresh(), DOCS).await.unwrap()), [DOCS]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_and_silent_clients_are_closed_and_serving_goes_on() {
    let r = start(quick_limits(), 100).await;
    let config = any_version(&r.ca, &[b"http/1.1"]);
    let garbage: [&[u8]; 4] = [
        // Plain HTTP to the TLS port.
        b"GET / HTTP/1.1\r\nHost: docs.example.test\r\n\r\n",
        // A handshake record too long to be one.
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3],
        // A ClientHello cut short, then silence.
        &[0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03, 0x03],
        &[0u8; 3000],
    ];
    for bytes in garbage {
        let started = Instant::now();
        let mut s = TcpStream::connect(r.https).await.unwrap();
        let _ = s.write_all(bytes).await;
        let answer = read_all(&mut s).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{bytes:?}: not closed in time");
        assert!(!answer.windows(5).any(|w| w == b"HTTP/"), "{bytes:?}: got {answer:?}");
    }
    // A client that opens a connection and never says hello is closed after the header-read timeout.
    let started = Instant::now();
    let mut s = TcpStream::connect(r.https).await.unwrap();
    assert!(read_all(&mut s).await.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(5), "closed after {waited:?}");
    // Nor may one that finished its handshake sit on it without a request.
    let started = Instant::now();
    let mut s = connect(r.https, &config, DOCS).await.unwrap();
    let answer = read_all(&mut s).await;
    let waited = started.elapsed();
    assert!(!answer.windows(5).any(|w| w == b"HTTP/") || answer.starts_with(b"HTTP/1.1 408"), "{answer:?}");
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");

    until("hostile connections to close", || r.edge.overload().open_connections() == 0).await;
    let ok = tls_exchange(
        &r,
        &config,
        DOCS,
        format!("GET / HTTP/1.1\r\nHost: {DOCS}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(ok.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_connection_cap_the_sorry_page_comes_over_tls() {
    let r = start(ServerLimits::default(), 1).await;
    let h1 = any_version(&r.ca, &[b"http/1.1"]);
    let h2 = any_version(&r.ca, &[b"h2"]);
    let held = connect(r.https, &h1, DOCS).await.unwrap();
    until("the held connection to count", || r.edge.overload().open_connections() == 1).await;

    let raw = format!("GET / HTTP/1.1\r\nHost: {DOCS}\r\n\r\n");
    let answer = tls_exchange(&r, &h1, DOCS, raw.as_bytes()).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text}");
    for line in ["retry-after: 5\r\n", "cache-control: no-store\r\n", "connection: close\r\n"] {
        assert!(text.to_lowercase().contains(line), "no {line:?} in {text}");
    }
    assert!(text.ends_with(DOCS_SORRY), "{text}");

    let s = connect(r.https, &h2, DOCS).await.unwrap();
    let resp = h2_client(s).await.send_request(get(&format!("https://{DOCS}/"), DOCS)).await.unwrap();
    let (status, headers, body) = collect(resp).await;
    assert_eq!((status, &body[..]), (StatusCode::SERVICE_UNAVAILABLE, DOCS_SORRY.as_bytes()));
    assert_eq!(headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"5"[..]));
    // A site without a sorry page of its own gets the node's.
    let s = connect(r.https, &h2, "blog.example.test").await.unwrap();
    let resp = h2_client(s).await.send_request(get("https://blog.example.test/", "blog.example.test")).await.unwrap();
    let (status, _, body) = collect(resp).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, chanto_edge::sorry::DEFAULT_SORRY_PAGE.as_bytes())
    );
    assert_eq!(r.edge.overload().refused(Reason::Connections), 3);

    drop(held);
    until("the held connection to close", || r.edge.overload().open_connections() == 0).await;
    let ok =
        tls_exchange(&r, &h1, DOCS, format!("GET / HTTP/1.1\r\nHost: {DOCS}\r\nConnection: close\r\n\r\n").as_bytes())
            .await;
    assert!(ok.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_tls_connections_and_finishes() {
    let mut r = start(ServerLimits::default(), 100).await;
    let mut h2 = h2_client(connect(r.https, &any_version(&r.ca, &[b"h2"]), DOCS).await.unwrap()).await;
    let (status, _, _) = collect(h2.send_request(get(&format!("https://{DOCS}/"), DOCS)).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let mut h1 = connect(r.https, &any_version(&r.ca, &[b"http/1.1"]), DOCS).await.unwrap();
    h1.write_all(format!("GET / HTTP/1.1\r\nHost: {DOCS}\r\n\r\n").as_bytes()).await.unwrap();
    let mut first = [0u8; 15];
    h1.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK");

    let _ = r.stop.take().unwrap().send(());
    let task = &mut r.tls_task;
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("serve_tls ended").unwrap();
    // The idle keep-alive connection was closed, not left open.
    let rest = read_all(&mut h1).await;
    assert!(!rest.windows(5).any(|w| w == b"HTTP/"), "{}", String::from_utf8_lossy(&rest));
    assert!(h2.ready().await.is_err() || h2.is_closed(), "the h2 connection is still open");
}

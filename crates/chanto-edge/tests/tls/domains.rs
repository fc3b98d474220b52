//! Custom domains on the edge, over plain HTTP and HTTPS: a name routes to
//! its site's production branch or to one branch; the ownership token; 301
//! (GET, HEAD) and 308 (other methods) to the primary domain and from HTTP
//! to HTTPS — only where this edge really serves the certificate, never
//! under `/.well-known/acme-challenge/`; HSTS over TLS only; certificates
//! follow the routing table (loaded once, dropped when unused, a failing
//! one keeps what its names had).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chanto_edge::certs::{CertSource, EdgeCerts};
use chanto_store::{DomainRoute, SiteRouting, SiteTls};

use super::*;

const APEX: &str = "example.com";
const WWW: &str = "www.example.com";
const STAGING: &str = "staging.example.com";

/// Certificates by id, as the metadata store would give them; counts loads
/// and can be told to fail.
#[derive(Default)]
struct Certs {
    pem: Mutex<HashMap<String, (String, String)>>,
    loads: Mutex<Vec<String>>,
    failing: Mutex<bool>,
}

#[async_trait]
impl CertSource for Certs {
    async fn certificate(&self, id: &str) -> Result<(String, String), String> {
        self.loads.lock().unwrap().push(id.to_owned());
        if *self.failing.lock().unwrap() {
            return Err("the store is down".into());
        }
        self.pem.lock().unwrap().get(id).cloned().ok_or_else(|| format!("no certificate {id}"))
    }
}

struct Domains {
    http: SocketAddr,
    https: SocketAddr,
    edge: Arc<Edge>,
    certs: Arc<Certs>,
    ca: TestCa,
    table: Mutex<RoutingTable>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Domains {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn route(name: &str, branch: Option<&str>, primary: bool, cert: Option<&str>) -> DomainRoute {
    DomainRoute {
        name: name.into(),
        branch: branch.map(|b| b.parse().unwrap()),
        primary,
        verify_token: format!("tok{}", name.len()),
        cert: cert.map(Into::into),
        challenge: None,
    }
}

impl Domains {
    /// Publishes the next table with `docs`'s domains and TLS settings replaced.
    async fn set(&self, domains: Vec<DomainRoute>, tls: Option<SiteTls>) {
        let next = {
            let table = self.table.lock().unwrap();
            let site: chanto_core::SiteName = "docs".parse().unwrap();
            let mut part = SiteRouting::clone(&table.sites[&site]);
            part.domains = domains;
            part.tls = tls;
            table.with_site(table.version + 1, &site, Some(part))
        };
        self.edge.publish(next.clone()).await.unwrap();
        *self.table.lock().unwrap() = next;
    }

    async fn plain(&self, raw: &str) -> String {
        let mut s = TcpStream::connect(self.http).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&read_all(&mut s).await).into_owned()
    }

    async fn plain_get(&self, host: &str, path: &str) -> String {
        self.plain(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")).await
    }

    /// One request over TLS (SNI `host`), HTTP/2 or HTTP/1.1.
    async fn tls(&self, host: &str, req: Request<Body>, h2: bool) -> (StatusCode, HeaderMap, Bytes) {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let s = connect(self.https, &any_version(&self.ca, alpn), host).await.unwrap();
        if h2 {
            let mut c = h2_client(s).await;
            collect(c.send_request(req).await.unwrap()).await
        } else {
            let mut c = h1_client(s).await;
            collect(send1(&mut c, req).await).await
        }
    }
}

fn status_line(raw: &str) -> &str {
    raw.lines().next().unwrap_or("")
}

fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    let head = raw.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Site `docs` (production `main`, branch `staging`) and site `blog` on
/// `*.example.test`, with no custom domain yet; an HTTPS listener whose
/// certificates come from `certs`: `apex` (example.com + www), `staging`.
async fn start_domains() -> Domains {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap());
    let edge = Edge::new(chanto_edge::EdgeConfig::new("example.test"), blobs.clone() as Arc<dyn BlobStore>);
    let main = [("index.html", b"<h1>docs production</h1>".to_vec()), ("a.txt", b"file a".to_vec())];
    let mut staging = site(&blobs, "docs", &[("index.html", b"<h1>docs staging</h1>".to_vec())], 3).await;
    staging.branch = "staging".parse().unwrap();
    staging.label = staging.branch.label();
    staging.production = false;
    let rows = vec![
        site(&blobs, "docs", &main, 1).await,
        staging,
        site(&blobs, "blog", &[("index.html", b"<h1>blog</h1>".to_vec())], 2).await,
    ];
    let table = RoutingTable::from_rows(1, rows, vec![], vec![], vec![]);
    edge.publish(table.clone()).await.unwrap();

    let ca = TestCa::new("domains");
    let certs = Arc::new(Certs::default());
    for (id, names) in [("apex", &[APEX, WWW][..]), ("staging", &[STAGING][..])] {
        let leaf = ca.issue(names);
        let pem = (std::fs::read_to_string(&leaf.cert).unwrap(), std::fs::read_to_string(&leaf.key).unwrap());
        certs.pem.lock().unwrap().insert(id.into(), pem);
    }
    let edge_certs = Arc::new(EdgeCerts::new(Arc::new(CertStore::new()), certs.clone() as Arc<dyn CertSource>));
    let config = server_config(edge_certs.store().clone());
    edge.set_certs(edge_certs).await;

    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secure = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http, https) = (plain.local_addr().unwrap(), secure.local_addr().unwrap());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = futures_util::FutureExt::shared(async move {
        let _ = rx.await;
    });
    let service = chanto_edge::router(edge.clone());
    tokio::spawn(serve(plain, service.clone(), ServerLimits::default(), stopped.clone()));
    tokio::spawn(serve_tls(secure, service, config, ServerLimits::default(), stopped));
    Domains { http, https, edge, certs, ca, table: Mutex::new(table), stop: Some(stop), _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_names_route_to_their_site_or_branch_and_unknown_names_stay_404() {
    let d = start_domains().await;
    d.set(vec![route(APEX, None, false, None), route(STAGING, Some("staging"), false, None)], None).await;
    let home = d.plain_get(APEX, "/").await;
    assert!(status_line(&home).contains(" 200 "), "{home}");
    assert_eq!(body(&home), "<h1>docs production</h1>");
    // Case, a trailing dot and a port do not matter.
    let home = d.plain_get("Example.COM.:8080", "/a.txt").await;
    assert_eq!(body(&home), "file a", "{home}");
    let staging = d.plain_get(STAGING, "/").await;
    assert_eq!(body(&staging), "<h1>docs staging</h1>", "{staging}");
    // The base-domain names keep working beside them.
    assert_eq!(body(&d.plain_get("docs.example.test", "/").await), "<h1>docs production</h1>");
    // A name nobody added, or one removed, is the plain 404 of unknown hosts.
    let unknown = d.plain_get("other.example.com", "/").await;
    assert!(status_line(&unknown).contains(" 404 "), "{unknown}");
    d.set(vec![route(STAGING, Some("staging"), false, None)], None).await;
    assert!(status_line(&d.plain_get(APEX, "/").await).contains(" 404 "));
    // No certificate was ever asked for: none of the names has one.
    assert!(d.certs.loads.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ownership_token_is_answered_on_its_path_only() {
    let d = start_domains().await;
    // Even a name that redirects to its primary answers its own token.
    d.set(vec![route(APEX, None, true, None), route(WWW, None, false, None)], None).await;
    let tok = format!("tok{}", WWW.len());
    let ok = d.plain_get(WWW, &format!("/.well-known/acme-challenge/chanto-{tok}")).await;
    assert!(status_line(&ok).contains(" 200 "), "{ok}");
    assert_eq!(body(&ok), tok);
    assert_eq!(header(&ok, "cache-control"), Some("no-store"));
    // Another name's token, a wrong one, or a POST: not answered, and not
    // redirected either (certificate authorities read that path over HTTP).
    for path in
        [format!("/.well-known/acme-challenge/chanto-tok{}", APEX.len()), "/.well-known/acme-challenge/chanto-x".into()]
    {
        let r = d.plain_get(WWW, &path).await;
        assert!(status_line(&r).contains(" 404 "), "{path}: {r}");
    }
    let post = d
        .plain(&format!(
            "POST /.well-known/acme-challenge/chanto-{tok} HTTP/1.1\r\nHost: {WWW}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert!(!status_line(&post).contains(" 200 ") && header(&post, "location").is_none(), "{post}");

    // While an ACME order is under way, the name answers its HTTP-01
    // challenge (the key authorization), even where it would redirect.
    let mut www = route(WWW, None, false, Some("apex"));
    www.challenge = Some(chanto_store::AcmeChallenge {
        token: "Tk_1-x".into(),
        key_authorization: "Tk_1-x.thumb".into(),
        alpn_pem: None,
    });
    d.set(vec![route(APEX, None, true, Some("apex")), www], None).await;
    let ch = d.plain_get(WWW, "/.well-known/acme-challenge/Tk_1-x").await;
    assert!(status_line(&ch).contains(" 200 "), "{ch}");
    assert_eq!(body(&ch), "Tk_1-x.thumb");
    // Another token, or the challenge asked of another name: not answered.
    for (host, path) in [(WWW, "/.well-known/acme-challenge/Tk_1-y"), (APEX, "/.well-known/acme-challenge/Tk_1-x")] {
        let r = d.plain_get(host, path).await;
        assert!(status_line(&r).contains(" 404 ") && header(&r, "location").is_none(), "{host}{path}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_redirect_to_the_primary_with_301_or_308() {
    let d = start_domains().await;
    d.set(vec![route(APEX, None, true, None), route(WWW, None, false, None)], None).await;
    let r = d.plain_get("WWW.example.com", "/docs/a?x=1&y=%20").await;
    assert!(status_line(&r).contains(" 301 "), "{r}");
    // No certificate here yet: the redirect stays on plain HTTP.
    assert_eq!(header(&r, "location"), Some("http://example.com/docs/a?x=1&y=%20"));
    assert_eq!(header(&r, "cache-control"), Some("public, max-age=3600"));
    assert_eq!(header(&r, "strict-transport-security"), None);
    let post = d
        .plain(&format!("POST /form HTTP/1.1\r\nHost: {WWW}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"))
        .await;
    assert!(status_line(&post).contains(" 308 "), "{post}");
    assert_eq!(header(&post, "location"), Some("http://example.com/form"));
    let head = d.plain(&format!("HEAD / HTTP/1.1\r\nHost: {WWW}\r\nConnection: close\r\n\r\n")).await;
    assert!(status_line(&head).contains(" 301 "), "{head}");
    // The primary itself is served, and the ACME path is never redirected.
    assert!(status_line(&d.plain_get(APEX, "/").await).contains(" 200 "));
    let acme = d.plain_get(WWW, "/.well-known/acme-challenge/some-token").await;
    assert!(header(&acme, "location").is_none(), "{acme}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_goes_to_https_only_once_the_certificate_is_served() {
    let d = start_domains().await;
    let hsts = SiteTls { hsts_max_age: 31_536_000, hsts_include_subdomains: true, ..SiteTls::default() };
    d.set(vec![route(APEX, None, true, Some("apex")), route(WWW, None, false, Some("apex"))], Some(hsts)).await;
    // Plain HTTP: to HTTPS on the same name (308 for a POST), never the ACME path; no HSTS over HTTP.
    let r = d.plain_get(APEX, "/a.txt?q=1").await;
    assert!(status_line(&r).contains(" 301 "), "{r}");
    assert_eq!(header(&r, "location"), Some("https://example.com/a.txt?q=1"));
    assert_eq!(header(&r, "strict-transport-security"), None);
    let post =
        d.plain(&format!("PUT /x HTTP/1.1\r\nHost: {APEX}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")).await;
    assert!(status_line(&post).contains(" 308 "), "{post}");
    let acme = d.plain_get(APEX, "/.well-known/acme-challenge/abc").await;
    assert!(header(&acme, "location").is_none(), "{acme}");
    // www over HTTP goes straight to https://example.com.
    let r = d.plain_get(WWW, "/").await;
    assert_eq!(header(&r, "location"), Some("https://example.com/"), "{r}");

    // Over TLS, by SNI, on HTTP/2 and HTTP/1.1: served, with HSTS.
    for h2 in [true, false] {
        let (status, headers, bytes) = d.tls(APEX, get("/a.txt", APEX), h2).await;
        assert_eq!(status, StatusCode::OK, "h2={h2}");
        assert_eq!(&bytes[..], b"file a");
        assert_eq!(headers["strict-transport-security"], "max-age=31536000; includeSubDomains");
        // www over TLS: to the primary, with HSTS on the redirect too.
        let (status, headers, _) = d.tls(WWW, get("/p?q", WWW), h2).await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY, "h2={h2}");
        assert_eq!(headers["location"], "https://example.com/p?q");
        assert_eq!(headers["strict-transport-security"], "max-age=31536000; includeSubDomains");
    }
    // The site may keep plain HTTP: then no redirect, and still HSTS over TLS only.
    let keep = SiteTls { https_redirect: false, hsts_max_age: 60, ..SiteTls::default() };
    d.set(vec![route(APEX, None, true, Some("apex"))], Some(keep)).await;
    let r = d.plain_get(APEX, "/a.txt").await;
    assert!(status_line(&r).contains(" 200 ") && header(&r, "strict-transport-security").is_none(), "{r}");
    let (_, headers, _) = d.tls(APEX, get("/a.txt", APEX), true).await;
    assert_eq!(headers["strict-transport-security"], "max-age=60");
    // One certificate served both names, and it was loaded once.
    assert_eq!(*d.certs.loads.lock().unwrap(), vec!["apex".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_follow_the_table_and_a_failing_one_never_redirects() {
    let d = start_domains().await;
    // The table names a certificate the edge cannot load: the name is
    // served over plain HTTP (not redirected into a failing handshake).
    *d.certs.failing.lock().unwrap() = true;
    d.set(vec![route(STAGING, Some("staging"), true, Some("staging"))], None).await;
    let r = d.plain_get(STAGING, "/").await;
    assert!(status_line(&r).contains(" 200 "), "{r}");
    assert!(connect(d.https, &any_version(&d.ca, &[b"h2"]), STAGING).await.is_err());
    assert!(!d.edge.serves_https(STAGING));
    // The next table tries again; now it loads and the redirect starts.
    *d.certs.failing.lock().unwrap() = false;
    d.set(vec![route(STAGING, Some("staging"), true, Some("staging"))], None).await;
    assert!(d.edge.serves_https(STAGING));
    let r = d.plain_get(STAGING, "/").await;
    assert_eq!(header(&r, "location"), Some("https://staging.example.com/"), "{r}");
    let (status, _, bytes) = d.tls(STAGING, get("/", STAGING), true).await;
    assert_eq!((status, &bytes[..]), (StatusCode::OK, &b"<h1>docs staging</h1>"[..]));
    // A store failure later keeps what the names had.
    *d.certs.failing.lock().unwrap() = true;
    d.set(vec![route(STAGING, Some("staging"), true, Some("staging")), route(APEX, None, false, Some("apex"))], None)
        .await;
    assert!(d.edge.serves_https(STAGING) && !d.edge.serves_https(APEX));
    // A name removed from the table loses its certificate at once.
    *d.certs.failing.lock().unwrap() = false;
    d.set(vec![route(APEX, None, true, Some("apex"))], None).await;
    assert!(!d.edge.serves_https(STAGING) && d.edge.serves_https(APEX));
    assert!(connect(d.https, &any_version(&d.ca, &[b"h2"]), STAGING).await.is_err());
    // Names under the base domain and names nobody added get no certificate.
    assert!(connect(d.https, &any_version(&d.ca, &[b"h2"]), "docs.example.test").await.is_err());
    assert!(connect(d.https, &any_version(&d.ca, &[b"h2"]), "random.example.org").await.is_err());
    // The admin listener's /metrics counts them.
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", admin.local_addr().unwrap());
    tokio::spawn(chanto_edge::server::serve_router(
        admin,
        chanto_edge::admin_router(d.edge.clone()),
        ServerLimits::default(),
        std::future::pending(),
    ));
    let metrics = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("chanto_edge_tls_certificates"), 1);
    assert_eq!(value("chanto_edge_tls_unknown_sni_total"), 4);
    // Seconds left on each name's certificate (only the names served).
    let left: i64 = value("chanto_edge_certificate_expiry_seconds{name=\"example.com\"}") as i64;
    assert!(left > 3600, "{metrics}");
    assert!(!metrics.contains("name=\"staging.example.com\""), "{metrics}");
}

/// A client as an ACME CA's validator is for TLS-ALPN-01: it takes any
/// certificate (the test checks what it got), offering `alpn`.
fn validator(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("this validator speaks TLS 1.3 only".into()))
        }
        // The signature is checked with the certificate's public key alone:
        // webpki refuses to parse a certificate with the critical
        // acmeIdentifier extension (as it should for anything but this).
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            let (_, cert) = x509_parser::parse_x509_certificate(c.as_ref())
                .map_err(|e| rustls::Error::General(format!("certificate: {e}")))?;
            let spki = rustls::pki_types::SubjectPublicKeyInfoDer::from(cert.tbs_certificate.subject_pki.raw);
            rustls::crypto::verify_tls13_signature_with_raw_key(m, &spki, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS-ALPN-01 challenge certificate for `name` (RFC 8737): self-signed,
/// with the critical acmeIdentifier extension; the certificate's DER and
/// both as the store keeps them (PEM, certificate then key).
fn alpn_challenge(name: &str) -> (Vec<u8>, String) {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.custom_extensions.push(rcgen::CustomExtension::new_acme_identifier(&[7u8; 32]));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_challenges_answer_only_the_cas_handshake() {
    let d = start_domains().await;
    let (der, pem) = alpn_challenge(WWW);
    let mut www = route(WWW, None, false, None);
    www.challenge = Some(chanto_store::AcmeChallenge {
        token: "Alpn_tok".into(),
        key_authorization: "Alpn_tok.thumb".into(),
        alpn_pem: Some(pem),
    });
    d.set(vec![route(APEX, None, true, Some("apex")), www.clone()], None).await;
    let acme = validator(&[b"acme-tls/1"]);

    // The CA's handshake gets the challenge certificate, then the close.
    let mut s = connect(d.https, &acme, WWW).await.expect("the challenge handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"acme-tls/1"[..]));
    assert_eq!(s.get_ref().1.peer_certificates().unwrap()[0].as_ref(), &der[..]);
    assert!(read_all(&mut s).await.is_empty(), "no data after the challenge handshake");

    // Any other client asking for the name gets no certificate (it has none
    // yet): never the challenge's.
    for alpn in [&[&b"h2"[..]][..], &[b"http/1.1"], &[]] {
        assert!(connect(d.https, &validator(alpn), WWW).await.is_err(), "{alpn:?}");
    }
    // The challenge is not asked of a name without one, even one with a
    // certificate; a client offering acme-tls/1 among others is no CA and
    // gets the site as usual.
    assert!(connect(d.https, &acme, APEX).await.is_err());
    let s = connect(d.https, &validator(&[b"acme-tls/1", b"h2"]), APEX).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(presented_names(&s), [APEX, WWW]);
    // Nothing answers it over plain HTTP.
    let r = d.plain_get(WWW, "/.well-known/acme-challenge/Alpn_tok").await;
    assert!(status_line(&r).contains(" 404 "), "{r}");

    // A damaged challenge certificate loads nothing (and breaks nothing else).
    let mut broken = www.clone();
    broken.challenge.as_mut().unwrap().alpn_pem = Some("-----BEGIN CERTIFICATE-----\nAAAA\n".into());
    d.set(vec![route(APEX, None, true, Some("apex")), broken], None).await;
    assert!(connect(d.https, &acme, WWW).await.is_err());
    assert!(connect(d.https, &any_version(&d.ca, &[b"h2"]), APEX).await.is_ok());

    // Once the order is done the challenge goes.
    d.set(vec![route(APEX, None, true, Some("apex")), route(WWW, None, false, Some("apex"))], None).await;
    assert!(connect(d.https, &acme, WWW).await.is_err());
    let s = connect(d.https, &any_version(&d.ca, &[b"h2"]), WWW).await.unwrap();
    assert_eq!(presented_names(&s), [APEX, WWW]);
}

/// REDbot-style checks of one response's headers (RFC 9110/9111/9113 rules a
/// linter applies), over TLS: what it got wrong, if anything.
fn header_problems(what: &str, status: StatusCode, h: &HeaderMap, body: &[u8], h2: bool, head: bool) -> Vec<String> {
    let mut p = Vec::new();
    let one = |name: &str| h.get_all(name).iter().count();
    match h.get("date").and_then(|v| v.to_str().ok()) {
        Some(d) if httpdate::parse_http_date(d).is_ok() => {}
        other => p.push(format!("{what}: Date missing or not an HTTP-date: {other:?}")),
    }
    // Connection-specific headers are forbidden in HTTP/2 (RFC 9113 §8.2.2).
    if h2 {
        for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"] {
            if h.contains_key(name) {
                p.push(format!("{what}: {name} over HTTP/2"));
            }
        }
    }
    for name in [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "cache-control",
        "date",
        "strict-transport-security",
    ] {
        if one(name) > 1 {
            p.push(format!("{what}: {name} appears {} times", one(name)));
        }
    }
    if let Some(etag) = h.get("etag").and_then(|v| v.to_str().ok()) {
        let opaque = etag.strip_prefix("W/").unwrap_or(etag);
        if !(opaque.len() >= 2
            && opaque.starts_with('"')
            && opaque.ends_with('"')
            && !opaque[1..opaque.len() - 1].contains('"'))
        {
            p.push(format!("{what}: ETag is not a quoted entity-tag: {etag}"));
        }
    }
    if let Some(lm) = h.get("last-modified").and_then(|v| v.to_str().ok())
        && httpdate::parse_http_date(lm).is_err()
    {
        p.push(format!("{what}: Last-Modified is not an HTTP-date: {lm}"));
    }
    if status == StatusCode::OK {
        match h.get("content-type").and_then(|v| v.to_str().ok()) {
            Some(ct) if ct.starts_with("text/") && !ct.contains("charset=") => {
                p.push(format!("{what}: a text type without charset: {ct}"))
            }
            Some(_) => {}
            None => p.push(format!("{what}: 200 without Content-Type")),
        }
        if !h.contains_key("cache-control") {
            p.push(format!("{what}: 200 without Cache-Control"));
        }
        if !h.contains_key("etag") && !h.contains_key("last-modified") {
            p.push(format!("{what}: 200 with no validator (ETag or Last-Modified)"));
        }
        let length = h.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        if !head && length.is_some_and(|n| n != body.len()) {
            p.push(format!("{what}: Content-Length {length:?} but {} bytes", body.len()));
        }
    }
    if (status == StatusCode::NOT_MODIFIED || head) && !body.is_empty() {
        p.push(format!("{what}: a {status} with a body of {} bytes", body.len()));
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let range = h.get("content-range").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let ok = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split_once('/'))
            .and_then(|(span, _)| span.split_once('-'))
            .and_then(|(a, b)| Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?))
            == Some(body.len());
        if !ok {
            p.push(format!("{what}: Content-Range {range:?} does not match {} bytes", body.len()));
        }
    }
    // HSTS over TLS: well-formed (RFC 6797 §6.1), max-age present.
    match h.get("strict-transport-security").and_then(|v| v.to_str().ok()) {
        Some(v) => {
            let directives: Vec<&str> = v.split(';').map(str::trim).collect();
            if !directives.iter().any(|d| d.strip_prefix("max-age=").is_some_and(|n| n.parse::<u64>().is_ok())) {
                p.push(format!("{what}: HSTS without a valid max-age: {v}"));
            }
        }
        None => p.push(format!("{what}: no Strict-Transport-Security over TLS on a site that sets it")),
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_tls_pass_redbot_style_checks_on_h2_and_http11() {
    let d = start_domains().await;
    let hsts = SiteTls { hsts_max_age: 31_536_000, hsts_include_subdomains: true, ..SiteTls::default() };
    d.set(vec![route(APEX, None, true, Some("apex")), route(WWW, None, false, Some("apex"))], Some(hsts)).await;
    let mut problems = Vec::new();
    for h2 in [true, false] {
        let proto = if h2 { "h2" } else { "http/1.1" };
        for path in ["/", "/a.txt", "/missing"] {
            let (status, h, body) = d.tls(APEX, get(path, APEX), h2).await;
            problems.extend(header_problems(&format!("{proto} GET {path}"), status, &h, &body, h2, false));
            if path == "/a.txt" {
                // HEAD: the same headers, no body.
                let mut req = get(path, APEX);
                *req.method_mut() = axum::http::Method::HEAD;
                let (hs, hh, hb) = d.tls(APEX, req, h2).await;
                assert_eq!(hh.get("content-length"), h.get("content-length"), "{proto} HEAD");
                problems.extend(header_problems(&format!("{proto} HEAD {path}"), hs, &hh, &hb, h2, true));
                // Conditional: 304 with the validator, no body.
                let etag = h.get("etag").expect("an ETag").clone();
                let mut req = get(path, APEX);
                req.headers_mut().insert("if-none-match", etag.clone());
                let (cs, ch, cb) = d.tls(APEX, req, h2).await;
                assert_eq!(cs, StatusCode::NOT_MODIFIED, "{proto}");
                assert_eq!(ch.get("etag"), Some(&etag), "{proto}: 304 keeps the ETag");
                problems.extend(header_problems(&format!("{proto} 304 {path}"), cs, &ch, &cb, h2, false));
                // A range: 206 with a matching Content-Range.
                let mut req = get(path, APEX);
                req.headers_mut().insert("range", "bytes=1-3".parse().unwrap());
                let (rs, rh, rb) = d.tls(APEX, req, h2).await;
                assert_eq!((rs, &rb[..]), (StatusCode::PARTIAL_CONTENT, &b"ile"[..]), "{proto}");
                problems.extend(header_problems(&format!("{proto} 206 {path}"), rs, &rh, &rb, h2, false));
            }
        }
        // The redirect to the primary carries HSTS too.
        let (status, h, body) = d.tls(WWW, get("/a.txt", WWW), h2).await;
        assert_eq!(status, StatusCode::MOVED_PERMANENTLY, "{proto}");
        problems.extend(header_problems(&format!("{proto} 301"), status, &h, &body, h2, false));
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // The checker finds what it looks for.
    let mut bad = HeaderMap::new();
    bad.insert("date", "yesterday".parse().unwrap());
    bad.insert("connection", "close".parse().unwrap());
    bad.insert("etag", "abc".parse().unwrap());
    bad.insert("content-type", "text/html".parse().unwrap());
    bad.insert("content-length", "9".parse().unwrap());
    bad.insert("strict-transport-security", "includeSubDomains".parse().unwrap());
    let found = header_problems("bad", StatusCode::OK, &bad, b"abc", true, false).join("\n");
    for expected in [
        "Date missing",
        "connection over HTTP/2",
        "not a quoted entity-tag",
        "without charset",
        "Cache-Control",
        "Content-Length",
        "HSTS without",
    ] {
        assert!(found.contains(expected), "{expected:?} not in\n{found}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_connections_certificate_is_not_for_gets_421() {
    let d = start_domains().await;
    d.set(
        vec![
            route(APEX, None, true, Some("apex")),
            route(WWW, None, false, Some("apex")),
            route(STAGING, Some("staging"), false, Some("staging")),
        ],
        None,
    )
    .await;
    for h2 in [true, false] {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let s = connect(d.https, &any_version(&d.ca, alpn), APEX).await.unwrap();
        let mut answers = Vec::new();
        if h2 {
            let mut c = h2_client(s).await;
            for host in [APEX, "EXAMPLE.com:443", WWW, STAGING, "blog.example.test", "nosuch.test"] {
                answers.push((host, collect(c.send_request(get("/a.txt", host)).await.unwrap()).await));
            }
        } else {
            let mut c = h1_client(s).await;
            for host in [APEX, "EXAMPLE.com:443", WWW, STAGING, "blog.example.test", "nosuch.test"] {
                answers.push((host, collect(send1(&mut c, get("/a.txt", host)).await).await));
            }
        }
        let proto = if h2 { "h2" } else { "http/1.1" };
        for (host, (status, h, body)) in answers {
            let want = match host {
                // The connection's own name, any case or port.
                APEX | "EXAMPLE.com:443" => StatusCode::OK,
                // Covered by the same certificate: served (here, redirected to the primary).
                WWW => StatusCode::MOVED_PERMANENTLY,
                // Another certificate's name, or one with none: not this connection's.
                _ => StatusCode::MISDIRECTED_REQUEST,
            };
            assert_eq!(status, want, "{proto} Host {host}: {}", String::from_utf8_lossy(&body));
            if want == StatusCode::MISDIRECTED_REQUEST {
                assert_eq!(h.get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_hosts_without_a_certificate_are_noted_for_an_order_bounded() {
    let d = start_domains().await;
    let client = any_version(&d.ca, &[b"h2"]);
    for sni in ["blog.example.test", "BLOG.example.test.", "a.b.example.test", "other.test", "example.test"] {
        assert!(connect(d.https, &client, sni).await.is_err(), "{sni}");
    }
    // The CA's own handshake for a base host notes nothing either.
    assert!(connect(d.https, &validator(&[b"acme-tls/1"]), "docs.example.test").await.is_err());
    assert_eq!(d.edge.take_wanted_certs(), ["blog.example.test"], "one label under the base, once");
    assert!(d.edge.take_wanted_certs().is_empty(), "taken");
    // A flood of names holds a bounded set until taken.
    for i in 0..300 {
        let _ = connect(d.https, &client, &format!("h{i}.example.test")).await;
    }
    let taken = d.edge.take_wanted_certs();
    assert_eq!(taken.len(), 256, "{}", taken.len());
}

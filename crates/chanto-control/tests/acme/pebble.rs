//! A real ACME CA for tests: Let's Encrypt's Pebble (Debian package `pebble`,
//! `/usr/bin/pebble` and `/usr/bin/pebble-challtestsrv`) in a temp dir, plus the
//! two challenge responders a chanto installation would be (HTTP-01 on a port,
//! TLS-ALPN-01 on another), which Pebble's validator is pointed at.
//!
//! Each [`Pebble`] is its own pair of processes on free loopback ports, with a
//! fresh test CA (rcgen) for Pebble's HTTPS; dropping it kills both. Pebble's
//! DNS lookups go to `pebble-challtestsrv`, which answers 127.0.0.1 for every
//! name, so any name validates against the responders here.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use chanto_control::acme::{ACME_TLS_ALPN_PROTOCOL, AlpnCert, Challenges};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;

/// How the Pebble of a test is set up.
#[derive(Default, Clone)]
pub struct Options {
    /// External Account Binding keys (kid → base64url HMAC key); when set,
    /// Pebble requires EAB for new accounts.
    pub eab_keys: Vec<(String, String)>,
    /// The percentage of good nonces Pebble rejects as bad (`PEBBLE_WFE_NONCEREJECT`); 0 by default.
    pub nonce_reject_percent: u8,
    /// Validate HTTP-01 challenges on this port (a real chanto edge)
    /// instead of the test's own responder.
    pub http_port: Option<u16>,
    /// Validate TLS-ALPN-01 challenges on this port (a real chanto edge's
    /// HTTPS listener) instead of the test's own responder.
    pub tls_port: Option<u16>,
    /// The lifetime of the certificates Pebble issues, in seconds
    /// (`certificateValidityPeriod`; Pebble's default otherwise).
    pub validity_secs: Option<u64>,
}

/// One running Pebble and its DNS server, and the responders it validates against.
pub struct Pebble {
    /// `https://127.0.0.1:PORT/dir`
    pub directory_url: String,
    /// The test CA that signed Pebble's HTTPS certificate (PEM): what a client must trust.
    pub https_root_pem: String,
    /// The challenges the responders serve; what [`Publisher`] fills.
    pub published: Arc<Published>,
    /// `pebble-challtestsrv`'s management API (`POST /set-txt`,
    /// `/clear-txt`): the DNS a DNS-01 hook publishes to.
    pub dns_management: SocketAddr,
    management: SocketAddr,
    pebble: Option<Child>,
    challtestsrv: Option<Child>,
    dir: tempfile::TempDir,
    responders: Vec<JoinHandle<()>>,
}

/// What the test's responders serve: HTTP-01 key authorizations by token,
/// TLS-ALPN-01 certificates by name.
#[derive(Default, Debug)]
pub struct Published {
    pub http01: Mutex<HashMap<String, String>>,
    pub tls_alpn01: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Published {
    /// How many challenges are being served now.
    pub fn len(&self) -> usize {
        self.http01.lock().unwrap().len() + self.tls_alpn01.lock().unwrap().len()
    }
}

/// A [`Challenges`] implementation over [`Published`], as an installation's edges would be.
pub struct Publisher {
    pub published: Arc<Published>,
    /// When false, `put_*` report success but serve nothing (a name whose DNS
    /// points elsewhere looks like this to the CA).
    pub answer: bool,
    /// How long each `put_*` takes after it has published (a slow edge).
    pub delay: Duration,
    /// Every `remove` call, in order.
    pub removed: Mutex<Vec<(String, String)>>,
}

impl Publisher {
    pub fn new(published: &Arc<Published>) -> Self {
        Self { published: published.clone(), answer: true, delay: Duration::ZERO, removed: Mutex::new(Vec::new()) }
    }
}

#[async_trait]
impl Challenges for Publisher {
    async fn put_http01(&self, _name: &str, token: &str, key_authorization: &str) -> Result<(), String> {
        if self.answer {
            self.published.http01.lock().unwrap().insert(token.to_owned(), key_authorization.to_owned());
        }
        tokio::time::sleep(self.delay).await;
        Ok(())
    }

    async fn put_tls_alpn01(&self, name: &str, _token: &str, _ka: &str, cert: AlpnCert) -> Result<(), String> {
        // Not `certified_key`: webpki (behind `keys_match`) refuses the critical acmeIdentifier extension.
        let key = load_key(&cert.cert_pem, &cert.key_pem).map_err(|e| format!("loading the certificate: {e}"))?;
        if self.answer {
            self.published.tls_alpn01.lock().unwrap().insert(name.to_owned(), key);
        }
        tokio::time::sleep(self.delay).await;
        Ok(())
    }

    async fn remove(&self, name: &str, token: &str) {
        self.published.http01.lock().unwrap().remove(token);
        self.published.tls_alpn01.lock().unwrap().remove(name);
        self.removed.lock().unwrap().push((name.to_owned(), token.to_owned()));
    }
}

/// A certificate chain and key in PEM loaded as rustls would serve them, checked to match.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let certified = load_key(chain_pem, key_pem)?;
    certified.keys_match().map_err(|e| format!("key and certificate: {e}"))?;
    Ok(certified)
}

fn load_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("chain PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("key PEM: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

fn binary(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()))
        .unwrap_or_default();
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: the ACME tests run a real ACME CA, Pebble, from Debian's `pebble` \
             package (`apt-get install -y pebble` provides /usr/bin/pebble and /usr/bin/pebble-challtestsrv)"
        )
    })
}

fn free_tcp_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(bin: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()))
}

/// The test CA and Pebble's HTTPS certificate from it (for 127.0.0.1 and localhost): (root PEM, leaf PEM, leaf key PEM).
fn https_certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(rcgen::DnType::CommonName, "chanto test CA for Pebble");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, "pebble");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

impl Pebble {
    /// Starts Pebble with default options.
    pub async fn start() -> Pebble {
        Self::start_with(Options::default()).await
    }

    /// Starts the responders, `pebble-challtestsrv` and Pebble, and waits until Pebble's directory answers.
    pub async fn start_with(options: Options) -> Pebble {
        let pebble_bin = binary("pebble");
        let challtestsrv_bin = binary("pebble-challtestsrv");
        let dir = tempfile::Builder::new().prefix("chanto-pebble-").tempdir().unwrap();
        let published = Arc::new(Published::default());
        let (http_port, http_task) = http01_responder(published.clone()).await;
        let (tls_port, tls_task) = tls_alpn01_responder(published.clone()).await;

        let (root_pem, cert_pem, key_pem) = https_certificates();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &key_pem).unwrap();
        let listen = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": listen.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": options.http_port.unwrap_or(http_port),
                "tlsPort": options.tls_port.unwrap_or(tls_port),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": !options.eab_keys.is_empty(),
            }
        });
        if let Some(secs) = options.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        if !options.eab_keys.is_empty() {
            let keys: serde_json::Map<String, serde_json::Value> =
                options.eab_keys.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            config["pebble"]["externalAccountMACKeys"] = keys.into();
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

        let dns = format!("127.0.0.1:{}", free_udp_port());
        let dns_management = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let challtestsrv = spawn(
            &challtestsrv_bin,
            &[
                "-dns01",
                &dns,
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &dns_management.to_string(),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ],
            &[],
            &dir.path().join("challtestsrv.log"),
        );
        let pebble = spawn(
            &pebble_bin,
            &["-config", config_path.to_str().unwrap(), "-dnsserver", &dns],
            &[
                ("PEBBLE_VA_NOSLEEP", "1"),
                ("PEBBLE_WFE_NONCEREJECT", &options.nonce_reject_percent.to_string()),
                ("PEBBLE_AUTHZREUSE", "0"),
            ],
            &dir.path().join("pebble.log"),
        );
        let mut this = Pebble {
            directory_url: format!("https://{listen}/dir"),
            https_root_pem: root_pem,
            published,
            dns_management,
            management,
            pebble: Some(pebble),
            challtestsrv: Some(challtestsrv),
            dir,
            responders: vec![http_task, tls_task],
        };
        this.wait_ready().await;
        this
    }

    /// An HTTPS client that trusts Pebble's test CA (and nothing else).
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.https_root_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }

    async fn wait_ready(&mut self) {
        let client = self.client();
        let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let last = match client.get(&self.directory_url).send().await {
                Ok(rsp) if rsp.status().is_success() => return,
                Ok(rsp) => format!("HTTP {}", rsp.status()),
                Err(e) => e.to_string(),
            };
            let exited = [&mut self.pebble, &mut self.challtestsrv]
                .into_iter()
                .flatten()
                .find_map(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("a Pebble process exited early ({status})\n{}", self.logs());
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "Pebble's directory {} did not answer in 20 s: {last}\n{}",
                self.directory_url,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pebble's root and intermediate CA certificates (PEM), from its management interface.
    pub async fn ca_certificates(&self) -> (String, String) {
        let client = self.client();
        let mut got = Vec::new();
        for what in ["roots/0", "intermediates/0"] {
            let url = format!("https://{}/{what}", self.management);
            let rsp = client.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
            assert!(rsp.status().is_success(), "GET {url}: {}", rsp.status());
            got.push(rsp.text().await.unwrap());
        }
        let intermediate = got.pop().unwrap();
        (got.pop().unwrap(), intermediate)
    }

    /// Stops Pebble (the CA becomes unreachable); its DNS server keeps running.
    pub fn stop_ca(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Both processes' output, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["pebble.log", "challtestsrv.log"] {
            let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            text.push_str(&format!("--- {name}\n{log}"));
        }
        text
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for child in [self.pebble.take(), self.challtestsrv.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        for task in &self.responders {
            task.abort();
        }
    }
}

/// Serves `GET /.well-known/acme-challenge/{token}` from `published` on a port of its own.
async fn http01_responder(published: Arc<Published>) -> (u16, JoinHandle<()>) {
    async fn answer(State(published): State<Arc<Published>>, UrlPath(token): UrlPath<String>) -> (StatusCode, String) {
        match published.http01.lock().unwrap().get(&token) {
            Some(key_authorization) => (StatusCode::OK, key_authorization.clone()),
            None => (StatusCode::NOT_FOUND, "no such challenge".to_owned()),
        }
    }
    let app = axum::Router::new().route("/.well-known/acme-challenge/{token}", get(answer)).with_state(published);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, task)
}

/// Picks the challenge certificate by SNI; no certificate, no handshake.
#[derive(Debug)]
struct BySni(Arc<Published>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        self.0.tls_alpn01.lock().unwrap().get(name).cloned()
    }
}

/// Completes TLS handshakes offering only ALPN `acme-tls/1`, with the certificate
/// published for the SNI name, then closes (RFC 8737: nothing is sent after the handshake).
async fn tls_alpn01_responder(published: Arc<Published>) -> (u16, JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(published)));
    config.alpn_protocols = vec![ACME_TLS_ALPN_PROTOCOL.to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                }
            });
        }
    });
    (port, task)
}

/// Renewal information (ARI, RFC 9773) in front of a Pebble whose build has
/// none (Debian's 2.4): its directory is Pebble's, fetched live, plus a
/// `renewalInfo` URL it answers itself with the window the test sets. Every
/// other ACME request goes to Pebble itself (the directory's other URLs), so
/// accounts, orders and certificates are Pebble's.
pub struct AriFront {
    pub directory_url: String,
    /// The windows served (RFC 3339 start, end): the n-th certificate asked
    /// about gets the n-th (the last when there are fewer); none: 404.
    pub windows: Arc<Mutex<Vec<(String, String)>>>,
    /// The certificate ids asked about, in order (repeats included).
    pub asked: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for AriFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pebble {
    /// Starts an [`AriFront`] for this Pebble (HTTPS with Pebble's own
    /// certificate, so the same root trusts both).
    pub async fn ari_front(&self) -> AriFront {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let read = |f: &str| std::fs::read_to_string(self.dir.path().join(f)).unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(read("cert.pem").as_bytes()).collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(read("key.pem").as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let windows: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let (pebble_dir, client) = (self.directory_url.clone(), self.client());
        let (w, a) = (windows.clone(), asked.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, client, pebble_dir, w, a) =
                    (acceptor.clone(), client.clone(), pebble_dir.clone(), w.clone(), a.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|x| x == b"\r\n\r\n") && head.len() < 65536 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let (status, body) = if path == "/dir" {
                        let mut dir: serde_json::Value =
                            client.get(&pebble_dir).send().await.unwrap().json().await.unwrap();
                        dir["renewalInfo"] = format!("https://{addr}/ari").into();
                        ("200 OK", dir.to_string())
                    } else if let Some(id) = path.strip_prefix("/ari/") {
                        let nth = {
                            let mut asked = a.lock().unwrap();
                            asked.push(id.to_owned());
                            let mut distinct: Vec<&String> = Vec::new();
                            for x in asked.iter() {
                                if !distinct.contains(&x) {
                                    distinct.push(x);
                                }
                            }
                            distinct.len() - 1
                        };
                        let windows = w.lock().unwrap();
                        match windows.get(nth).or(windows.last()).cloned() {
                            Some((start, end)) => (
                                "200 OK",
                                serde_json::json!({"suggestedWindow": {"start": start, "end": end}}).to_string(),
                            ),
                            None => ("404 Not Found", "{}".to_owned()),
                        }
                    } else {
                        ("404 Not Found", "{}".to_owned())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 21600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        AriFront { directory_url: format!("https://{addr}/dir"), windows, asked, task }
    }
}

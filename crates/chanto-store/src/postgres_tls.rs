//! TLS to PostgreSQL with libpq's `sslmode` and `sslrootcert` meanings.
//!
//! tokio-postgres 0.7 parses only `sslmode=disable|prefer|require` and no
//! `sslrootcert`, and leaves certificate checks to its TLS connector. So
//! chanto takes both parameters (or `PGSSLMODE` / `PGSSLROOTCERT`) out of the
//! connection string before tokio-postgres sees it ([`split`]), and enforces
//! them in its own rustls connector ([`PgTls`]), which every connection to
//! the database uses: the pool and the routing listener.
//!
//! | sslmode | encrypted | chain checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | – | – |
//! | `prefer` (default) | if the server offers TLS | only with `sslrootcert` | no |
//! | `require` | yes | only with `sslrootcert` | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes (DNS name or IP address) |
//!
//! Roots come from `sslrootcert=PATH` (a PEM bundle), or the system's
//! (`sslrootcert=system`, or verify-ca/verify-full without `sslrootcert`):
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the OS store. As in libpq
//! 16, `sslrootcert=system` makes the default mode `verify-full` and refuses
//! a weaker one (a public CA signs anyone's name, so only the name check
//! makes such a chain mean something). Unix-socket connections use no TLS,
//! as in libpq.
//!
//! The connection also carries `tls-server-end-point` channel binding (RFC
//! 5929), so SCRAM passwords are bound to the TLS session and
//! `channel_binding=require` works.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::tls::{CertProblem, certificate_problem};

/// libpq's `sslmode`: how much of TLS a connection insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, else plain (libpq's default).
    Prefer,
    /// TLS, or no connection.
    Require,
    /// TLS with the server's certificate chain checked against the roots.
    VerifyCa,
    /// TLS with the chain checked and the certificate valid for the host.
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&'static str, SslMode); 5] = [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];

    /// The `sslmode` value, as libpq spells it.
    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, m)| *m == self).map(|(n, _)| *n).unwrap_or("prefer")
    }

    fn parse(value: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == value).map(|(_, m)| *m)
    }
}

/// Where the roots that verify the server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The system's (`SSL_CERT_FILE` / `SSL_CERT_DIR`, else the OS store).
    System,
    /// A PEM file of CA certificates.
    File(PathBuf),
}

/// The TLS a connection string asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode.
    pub mode: SslMode,
    /// `sslrootcert`, if given.
    pub root_cert: Option<RootCerts>,
    /// Where the mode came from (`sslmode`, `PGSSLMODE`, or the default), for messages.
    pub mode_source: &'static str,
}

impl TlsSettings {
    /// Whether the server's certificate chain is checked (when TLS is used).
    pub fn verifies_chain(&self) -> bool {
        match self.mode {
            SslMode::Disable => false,
            SslMode::Prefer | SslMode::Require => self.root_cert.is_some(),
            SslMode::VerifyCa | SslMode::VerifyFull => true,
        }
    }

    /// tokio-postgres's mode: it negotiates TLS; chanto's connector checks.
    pub(crate) fn driver_mode(&self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Driver;
        match self.mode {
            SslMode::Disable => Driver::Disable,
            SslMode::Prefer => Driver::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
        }
    }

    /// What a failed connection's cause (`error_cause`'s text) means in
    /// these settings' terms, and the fix; `None` when nothing TLS-related
    /// shows in it.
    pub(crate) fn hint(&self, cause: &str) -> Option<String> {
        if cause.contains("server does not support TLS") {
            return Some(format!(
                "the server does not offer TLS, and {} insists on it: turn `ssl` on in the server's postgresql.conf, or connect unencrypted with sslmode=prefer",
                self.described_mode()
            ));
        }
        if cause.contains("no encryption") && matches!(self.mode, SslMode::Disable | SslMode::Prefer) {
            return Some(format!(
                "the server accepts this user and database only over TLS ({}): use sslmode=verify-full (or require)",
                self.described_mode()
            ));
        }
        None
    }

    fn described_mode(&self) -> String {
        match self.mode_source {
            "" => format!("sslmode={} (the default)", self.mode.name()),
            source => format!("{source}={}", self.mode.name()),
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of the connection string `conn` (a
/// `postgres://` URL or libpq's `key=value` form) and returns the rest, for
/// tokio-postgres, with the TLS settings. `env` reads `PGSSLMODE` and
/// `PGSSLROOTCERT`, used when the string names no value. Client
/// certificates (`sslcert`, `sslkey`) are refused: chanto authenticates
/// with a password.
pub fn split(conn: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(String, TlsSettings), String> {
    let (rest, params) = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        split_url(conn)?
    } else {
        split_key_values(conn)
    };
    let mut mode = None;
    let mut root = None;
    for (key, value) in params {
        match key.as_str() {
            "sslmode" => mode = Some(("sslmode", value)),
            "sslrootcert" => root = Some(("sslrootcert", value)),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(format!(
                    "{key}: client certificates are not supported; authenticate with a password (in the URL, --meta-password-file, PGPASSWORD or ~/.pgpass) and drop {key}"
                ));
            }
            _ => unreachable!("split_* return only ssl parameters"),
        }
    }
    let mode = mode.or_else(|| env("PGSSLMODE").filter(|v| !v.is_empty()).map(|v| ("PGSSLMODE", v)));
    let root = root.or_else(|| env("PGSSLROOTCERT").filter(|v| !v.is_empty()).map(|v| ("PGSSLROOTCERT", v)));
    let root_cert = match &root {
        None => None,
        Some((source, v)) if v.is_empty() => {
            return Err(format!("{source} is empty; give the path of a PEM file of CA certificates, or `system`"));
        }
        Some((_, v)) if v == "system" => Some(RootCerts::System),
        Some((_, v)) => Some(RootCerts::File(PathBuf::from(v))),
    };
    let (mode, mode_source) = match &mode {
        Some((source, v)) => match SslMode::parse(v) {
            Some(m) => (m, *source),
            None => {
                return Err(format!(
                    "{source}={v:?} is not an sslmode; use disable, prefer, require, verify-ca or verify-full (verify-full checks the server's certificate and host name)"
                ));
            }
        },
        // libpq 16: a system root store makes the default verify-full.
        None if root_cert == Some(RootCerts::System) => (SslMode::VerifyFull, ""),
        None => (SslMode::Prefer, ""),
    };
    if root_cert == Some(RootCerts::System) && mode != SslMode::VerifyFull {
        let (root_source, _) = root.as_ref().expect("a root was given");
        return Err(format!(
            "{root_source}=system needs sslmode=verify-full, not {mode_source}={}: the system's roots sign certificates for anyone's names, so only the host name check makes the chain mean something; use sslmode=verify-full",
            mode.name()
        ));
    }
    Ok((rest, TlsSettings { mode, root_cert, mode_source }))
}

/// Whether `key` is a TLS parameter chanto handles itself.
fn is_ours(key: &str) -> bool {
    matches!(key, "sslmode" | "sslrootcert" | "sslcert" | "sslkey" | "sslpassword")
}

/// `postgres://…?a=b&sslmode=…`: the URL without chanto's parameters, and
/// those (percent-decoded).
fn split_url(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), Vec::new())) };
    let mut kept = Vec::new();
    let mut ours = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k).unwrap_or_default();
        if is_ours(&key) {
            let value = percent_decode(v)
                .ok_or_else(|| format!("{key}: the value is not valid percent-encoded UTF-8; encode it as UTF-8"))?;
            ours.push((key, value));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((rest, ours))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `host=… sslmode=… sslrootcert='/a b/ca.pem'`: the string without chanto's
/// parameters, and those. What does not parse is left for tokio-postgres,
/// whose error names it.
fn split_key_values(conn: &str) -> (String, Vec<(String, String)>) {
    let b = conn.as_bytes();
    let mut ours = Vec::new();
    let mut cut = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &conn[start..i];
        i = skip_ws(i);
        if i >= b.len() || b[i] != b'=' {
            break;
        }
        i = skip_ws(i + 1);
        let mut value = Vec::new();
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        value.push(b[i + 1]);
                        i += 2;
                    }
                    b'\'' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                break;
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        if is_ours(key) {
            ours.push((key.to_owned(), String::from_utf8_lossy(&value).into_owned()));
            cut.push(start..i);
        }
    }
    let mut rest = conn.to_owned();
    for range in cut.into_iter().rev() {
        rest.replace_range(range, "");
    }
    (rest.trim().to_owned(), ours)
}

/// chanto's TLS connector for tokio-postgres (the pool and the routing
/// listener both use it): rustls with the checks [`TlsSettings`] asks for.
#[derive(Clone)]
pub struct PgTls {
    config: Arc<ClientConfig>,
    mode: SslMode,
    /// The roots the chain is checked against, in words ("the CA in
    /// sslrootcert=…"); `None` when the chain is not checked.
    roots: Option<Arc<str>>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").field("mode", &self.mode).field("roots", &self.roots).finish_non_exhaustive()
    }
}

impl PgTls {
    /// The connector for `settings`, roots read now (at start-up: a missing
    /// or broken root file is an error before anything connects).
    pub fn new(settings: &TlsSettings) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let (verifier, roots): (Arc<dyn ServerCertVerifier>, Option<Arc<str>>) = if settings.verifies_chain() {
            let (store, described) = match &settings.root_cert {
                Some(RootCerts::File(path)) => (
                    crate::tls::roots_from_file("sslrootcert", path)?,
                    format!("the CA in sslrootcert={}", path.display()),
                ),
                Some(RootCerts::System) | None => (
                    crate::tls::system_roots(&format!("sslmode={}", settings.mode.name()))?,
                    "a root this system trusts (SSL_CERT_FILE, SSL_CERT_DIR, else the OS store)".to_owned(),
                ),
            };
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| format!("TLS set-up: {e}"))?;
            let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
                SslMode::VerifyFull => webpki,
                _ => Arc::new(ChainOnly(webpki)),
            };
            (verifier, Some(described.into()))
        } else {
            (Arc::new(Unverified(provider)), None)
        };
        let config = builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth();
        Ok(Self { config: Arc::new(config), mode: settings.mode, roots })
    }
}

impl MakeTlsConnect<tokio_postgres::Socket> for PgTls {
    type Stream = PgTlsStream;
    type TlsConnect = PgTlsConnect;
    type Error = PgTlsError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<PgTlsConnect, PgTlsError> {
        let name = match ServerName::try_from(domain.to_owned()) {
            Ok(n) => n,
            Err(_) if self.mode == SslMode::VerifyFull => {
                return Err(PgTlsError(format!(
                    "sslmode=verify-full checks the server's certificate against the host name, and {domain:?} is not a host name or IP address; name the host in the URL"
                )));
            }
            // Only SNI uses the name when it is not checked.
            Err(_) => ServerName::try_from("localhost").expect("a valid name"),
        };
        Ok(PgTlsConnect { tls: self.clone(), name, host: domain.to_owned() })
    }
}

/// One connection's TLS handshake (see [`PgTls`]).
pub struct PgTlsConnect {
    tls: PgTls,
    name: ServerName<'static>,
    host: String,
}

impl TlsConnect<tokio_postgres::Socket> for PgTlsConnect {
    type Stream = PgTlsStream;
    type Error = PgTlsError;
    type Future = Pin<Box<dyn Future<Output = Result<PgTlsStream, PgTlsError>> + Send>>;

    fn connect(self, stream: tokio_postgres::Socket) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.tls.config.clone());
            match connector.connect(self.name, stream).await {
                Ok(s) => Ok(PgTlsStream(s)),
                Err(e) => Err(PgTlsError(describe_handshake_error(&self.tls, &self.host, &e))),
            }
        })
    }
}

/// A failed handshake in words: what the certificate lacked and the fix.
fn describe_handshake_error(tls: &PgTls, host: &str, e: &std::io::Error) -> String {
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let roots = tls.roots.as_deref().unwrap_or("the roots");
    match rustls_error.and_then(certificate_problem) {
        Some(CertProblem::UnknownIssuer) => format!(
            "the PostgreSQL server at {host} presented a certificate not signed by {roots} ({e}); give the CA that signed the server's certificate with sslrootcert=PATH (or add it to the system's roots)"
        ),
        Some(CertProblem::WrongName) => format!(
            "the PostgreSQL server's certificate is not valid for {host:?} ({e}), and sslmode=verify-full checks the host name; connect by a name (or address) the certificate holds, or use sslmode=verify-ca to check only the chain"
        ),
        Some(CertProblem::OutOfDate) => format!(
            "the PostgreSQL server at {host} presented a certificate that has expired or is not valid yet ({e}); renew the server's certificate, or check this machine's clock"
        ),
        Some(CertProblem::Other) => {
            format!("the PostgreSQL server at {host} presented a certificate that was rejected: {e}")
        }
        None => format!("the TLS handshake with the PostgreSQL server at {host} failed: {e}"),
    }
}

/// Why a TLS connection to PostgreSQL failed, in words (the driver wraps it
/// as "error performing TLS handshake: …").
#[derive(Debug)]
pub struct PgTlsError(String);

impl std::fmt::Display for PgTlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgTlsError {}

/// A TLS connection to PostgreSQL.
pub struct PgTlsStream(tokio_rustls::client::TlsStream<tokio_postgres::Socket>);

impl AsyncRead for PgTlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl TlsStream for PgTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session.peer_certificates().and_then(|c| c.first()).and_then(|c| server_end_point(c)) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929's `tls-server-end-point`: the hash of the server's certificate
/// (DER) with the hash of its signature algorithm, SHA-256 for MD5 and SHA-1
/// ones; `None` for algorithms without one of these (Ed25519, RSA-PSS), as
/// PostgreSQL then offers no channel binding either.
fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    let (tag, certificate, _) = der(cert)?;
    let (tbs_tag, _, after_tbs) = der(certificate)?;
    let (alg_tag, algorithm, _) = der(after_tbs)?;
    let (oid_tag, oid, _) = der(algorithm)?;
    if (tag, tbs_tag, alg_tag, oid_tag) != (0x30, 0x30, 0x30, 0x06) {
        return None;
    }
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let hash = match oid {
        [rsa @ .., last] if rsa == RSA => match last {
            0x04 | 0x05 | 0x0b => 256, // md5, sha1, sha256 WithRSAEncryption
            0x0c => 384,
            0x0d => 512,
            _ => return None,
        },
        o if o == ECDSA_SHA1 => 256,
        [ec @ .., last] if ec == ECDSA_SHA2 => match last {
            0x02 => 256,
            0x03 => 384,
            0x04 => 512,
            _ => return None,
        },
        _ => return None,
    };
    Some(match hash {
        256 => sha2::Sha256::digest(cert).to_vec(),
        384 => sha2::Sha384::digest(cert).to_vec(),
        _ => sha2::Sha512::digest(cert).to_vec(),
    })
}

/// One DER element: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// verify-ca (and prefer/require with `sslrootcert`): the chain is checked,
/// the name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name only after the chain, so the chain is good.
            Err(e) if certificate_problem(&e) == Some(CertProblem::WrongName) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// prefer/require without `sslrootcert`, as libpq: encrypted, any
/// certificate accepted (the handshake's signatures are still checked, so
/// the server holds the key of the certificate it shows).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn ok(conn: &str) -> (String, TlsSettings) {
        split(conn, &no_env).unwrap_or_else(|e| panic!("{conn}: {e}"))
    }

    #[test]
    fn ssl_parameters_are_taken_out_of_a_url_and_the_rest_kept() {
        let table: &[(&str, &str, SslMode, Option<RootCerts>)] = &[
            ("postgres://u@h/db", "postgres://u@h/db", SslMode::Prefer, None),
            ("postgres://u@h/db?sslmode=disable", "postgres://u@h/db", SslMode::Disable, None),
            (
                "postgres://u:p@h:5/db?application_name=x&sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=3",
                "postgres://u:p@h:5/db?application_name=x&connect_timeout=3",
                SslMode::VerifyFull,
                Some(RootCerts::File("/etc/ca.pem".into())),
            ),
            (
                "postgresql://u@h/db?sslrootcert=%2Fa%20b%2Fca.pem&sslmode=verify-ca",
                "postgresql://u@h/db",
                SslMode::VerifyCa,
                Some(RootCerts::File("/a b/ca.pem".into())),
            ),
            // libpq 16: sslrootcert=system makes the default verify-full.
            ("postgres://u@h/db?sslrootcert=system", "postgres://u@h/db", SslMode::VerifyFull, Some(RootCerts::System)),
            ("postgres://u@h/db?sslmode=require", "postgres://u@h/db", SslMode::Require, None),
            // The last value wins, as in libpq.
            ("postgres://u@h/db?sslmode=disable&sslmode=require", "postgres://u@h/db", SslMode::Require, None),
            (
                "host=h user=u sslmode=verify-full sslrootcert='/a b/c\\'a.pem' dbname=db",
                "host=h user=u   dbname=db",
                SslMode::VerifyFull,
                Some(RootCerts::File("/a b/c'a.pem".into())),
            ),
            ("host=h sslmode = require dbname=db", "host=h  dbname=db", SslMode::Require, None),
        ];
        for (conn, rest, mode, root) in table {
            let (got_rest, s) = ok(conn);
            assert_eq!(&got_rest, rest, "{conn}");
            assert_eq!((s.mode, &s.root_cert), (*mode, root), "{conn}");
            // What is left parses for tokio-postgres.
            got_rest.parse::<tokio_postgres::Config>().unwrap_or_else(|e| panic!("{got_rest}: {e}"));
        }
    }

    #[test]
    fn pgsslmode_and_pgsslrootcert_apply_when_the_url_names_none() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-ca".to_owned()),
            "PGSSLROOTCERT" => Some("/env/ca.pem".to_owned()),
            _ => None,
        };
        let (_, s) = split("postgres://u@h/db", &env).unwrap();
        assert_eq!(
            (s.mode, s.root_cert, s.mode_source),
            (SslMode::VerifyCa, Some(RootCerts::File("/env/ca.pem".into())), "PGSSLMODE")
        );
        // The URL wins.
        let (_, s) = split("postgres://u@h/db?sslmode=verify-full&sslrootcert=/url.pem", &env).unwrap();
        assert_eq!((s.mode, s.root_cert), (SslMode::VerifyFull, Some(RootCerts::File("/url.pem".into()))));
        let bad = |k: &str| (k == "PGSSLMODE").then(|| "strict".to_owned());
        let e = split("postgres://u@h/db", &bad).unwrap_err();
        assert!(e.starts_with("PGSSLMODE=\"strict\" is not an sslmode; use disable, prefer, require"), "{e}");
    }

    #[test]
    fn bad_ssl_parameters_are_refused_with_the_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "postgres://u@h/db?sslmode=bogus",
                "sslmode=\"bogus\" is not an sslmode; use disable, prefer, require, verify-ca or verify-full",
            ),
            ("postgres://u@h/db?sslmode=VERIFY-FULL", "is not an sslmode"),
            ("postgres://u@h/db?sslmode=", "sslmode=\"\" is not an sslmode"),
            ("postgres://u@h/db?sslrootcert=", "sslrootcert is empty"),
            (
                "postgres://u@h/db?sslrootcert=system&sslmode=require",
                "sslrootcert=system needs sslmode=verify-full, not sslmode=require",
            ),
            ("postgres://u@h/db?sslrootcert=system&sslmode=verify-ca", "needs sslmode=verify-full"),
            ("postgres://u@h/db?sslcert=/c.pem", "sslcert: client certificates are not supported"),
            ("host=h sslkey=/k.pem", "sslkey: client certificates are not supported"),
            ("postgres://u@h/db?sslrootcert=%ff", "not valid percent-encoded UTF-8"),
        ];
        for (conn, want) in cases {
            let e = split(conn, &no_env).unwrap_err();
            assert!(e.contains(want), "{conn}: {e}");
        }
    }

    #[test]
    fn what_each_mode_checks() {
        let s = |mode, root_cert| TlsSettings { mode, root_cert, mode_source: "sslmode" };
        let file = || Some(RootCerts::File("/ca.pem".into()));
        assert!(!s(SslMode::Disable, file()).verifies_chain());
        assert!(!s(SslMode::Prefer, None).verifies_chain());
        assert!(s(SslMode::Prefer, file()).verifies_chain());
        assert!(!s(SslMode::Require, None).verifies_chain());
        assert!(s(SslMode::Require, file()).verifies_chain());
        assert!(s(SslMode::VerifyCa, None).verifies_chain());
        assert!(s(SslMode::VerifyFull, None).verifies_chain());
        let hint =
            s(SslMode::Require, None).hint("error performing TLS handshake: server does not support TLS").unwrap();
        assert!(hint.contains("sslmode=require insists on it: turn `ssl` on"), "{hint}");
        let hint = TlsSettings { mode: SslMode::Prefer, root_cert: None, mode_source: "" }
            .hint("db error: FATAL: pg_hba.conf rejects connection for host \"127.0.0.1\", user \"u\", database \"d\", no encryption")
            .unwrap();
        assert!(hint.contains("only over TLS (sslmode=prefer (the default)): use sslmode=verify-full"), "{hint}");
        assert_eq!(s(SslMode::VerifyFull, None).hint("connection refused"), None);
    }

    fn percent_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_./".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    proptest::proptest! {
        /// Whatever the string, `split` answers (and never panics), in both forms.
        #[test]
        fn split_never_panics(s in "\\PC{0,80}") {
            let _ = split(&s, &no_env);
            let _ = split(&format!("postgres://u@h/db?{s}"), &no_env);
        }

        /// Other parameters are kept in order and untouched; the root path
        /// comes back whatever bytes it holds; the last sslmode wins.
        #[test]
        fn other_parameters_survive_and_the_root_path_round_trips(
            kept in proptest::collection::vec(("[a-z_]{1,12}", "[A-Za-z0-9%._-]{0,12}"), 0..5),
            path in "/\\PC{1,40}",
            modes in proptest::collection::vec(0usize..5, 1..3),
            at in 0usize..6,
        ) {
            let kept: Vec<String> = kept.into_iter().filter(|(k, _)| !is_ours(k)).map(|(k, v)| format!("{k}={v}")).collect();
            let mut params = kept.clone();
            let at = at.min(params.len());
            let ours: Vec<String> = modes.iter().map(|m| format!("sslmode={}", SslMode::NAMES[*m].0))
                .chain(std::iter::once(format!("sslrootcert={}", percent_encode(&path))))
                .collect();
            for (i, p) in ours.into_iter().enumerate() {
                params.insert(at + i, p);
            }
            let url = format!("postgres://u@h/db?{}", params.join("&"));
            let (rest, s) = split(&url, &no_env).unwrap();
            let want = if kept.is_empty() { "postgres://u@h/db".to_owned() } else { format!("postgres://u@h/db?{}", kept.join("&")) };
            proptest::prop_assert_eq!(rest, want);
            proptest::prop_assert_eq!(s.root_cert, Some(RootCerts::File(PathBuf::from(&path))));
            proptest::prop_assert_eq!(s.mode, SslMode::NAMES[*modes.last().unwrap()].1);
        }
    }

    #[test]
    fn der_lengths_are_bounded() {
        assert_eq!(der(&[0x30, 0x03, 1, 2, 3, 9]), Some((0x30, &[1u8, 2, 3][..], &[9u8][..])));
        assert_eq!(der(&[0x30, 0x81, 0x02, 1, 2]), Some((0x30, &[1u8, 2][..], &[][..])));
        assert_eq!(der(&[0x30, 0x05, 1]), None, "longer than the input");
        assert_eq!(der(&[0x30, 0x80]), None, "indefinite length");
        assert_eq!(der(&[0x30, 0x85, 1, 1, 1, 1, 1]), None, "a length of more than 4 bytes");
        assert_eq!(der(&[0x30]), None);
        assert_eq!(server_end_point(b"not a certificate"), None);
        assert_eq!(server_end_point(&[]), None);
    }
}

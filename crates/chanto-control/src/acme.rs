//! The ACME client core for automatic certificates (issue 17): make or load an
//! account, order a certificate for a site's names, have the caller publish
//! each HTTP-01 or TLS-ALPN-01 challenge, wait for the CA, then finalize with a
//! fresh ECDSA P-256 key and download the chain.
//!
//! A thin wrapper over `instant-acme` (the protocol: JWS, nonces, orders). It
//! keeps nothing: the caller stores the account credentials this returns and the
//! certificate it issues, and publishes challenges through [`Challenges`]. HTTP
//! goes through the same `reqwest` (rustls, ring) as the rest of the control
//! plane; a private CA is trusted by adding its roots
//! ([`AcmeConfig::extra_roots_pem`]), never by turning verification off.
//!
//! Every failure is an [`AcmeError`] that says what failed, what to do, and
//! whether trying again later may help (see [`AcmeError::retryable`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Request;
use base64::Engine as _;
use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// The ALPN protocol a TLS-ALPN-01 validation connects with (RFC 8737). The
/// server that answers it must offer only this protocol and present the
/// certificate from [`tls_alpn01_certificate`] for the SNI name.
pub const ACME_TLS_ALPN_PROTOCOL: &[u8] = b"acme-tls/1";

/// How long one HTTP request to the CA may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the CA may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait before polling an order, growing by [`POLL_BACKOFF`] each time.
const POLL_FIRST_DELAY: Duration = Duration::from_millis(250);
const POLL_BACKOFF: f32 = 1.5;

const PROBLEM_PREFIX: &str = "urn:ietf:params:acme:error:";

/// Where and how to reach the ACME CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The CA's directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory_url: String,
    /// An address the CA may write to about the account (expiry notices,
    /// policy changes); sent as `mailto:` contact. `None` sends no contact.
    pub contact_email: Option<String>,
    /// External Account Binding, for CAs that require one (ZeroSSL, most
    /// commercial and in-house CAs). `None` for Let's Encrypt.
    pub eab: Option<ExternalAccountKey>,
    /// PEM certificates to trust, besides the built-in public roots (Mozilla's,
    /// compiled in; the system store is not read), for the
    /// CA's own HTTPS endpoint: a private CA (step-ca, Pebble) signs it with a
    /// root no public trust store has.
    pub extra_roots_pem: Option<String>,
    /// How the order loop proves the names (the edges answer HTTP-01 and
    /// TLS-ALPN-01; DNS-01 needs `dns_hook`).
    pub challenge: ChallengeKind,
    /// The program that publishes DNS-01 TXT records ([`crate::acme_dns`]).
    pub dns_hook: Option<std::path::PathBuf>,
}

/// An External Account Binding key, as the CA shows it in its account page.
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalAccountKey {
    /// The key identifier.
    pub kid: String,
    /// The HMAC key, base64url-encoded (padding optional), exactly as the CA gives it.
    pub hmac_key_b64url: String,
}

impl fmt::Debug for ExternalAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAccountKey").field("kid", &self.kid).field("hmac_key_b64url", &"<redacted>").finish()
    }
}

/// An ACME account, ready to order certificates. Cheap to clone.
#[derive(Clone)]
pub struct AcmeAccount {
    inner: Account,
}

impl AcmeAccount {
    /// The account's URL at the CA (its identity there).
    pub fn id(&self) -> &str {
        self.inner.id()
    }
}

impl fmt::Debug for AcmeAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeAccount").field("id", &self.id()).finish()
    }
}

/// Which challenge proves control of the names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// HTTP-01: the CA fetches `http://NAME/.well-known/acme-challenge/TOKEN` on port 80.
    Http01,
    /// TLS-ALPN-01: the CA connects to `NAME:443` with ALPN `acme-tls/1` and
    /// checks the self-signed certificate it is given.
    TlsAlpn01,
    /// DNS-01: the CA looks up the TXT record `_acme-challenge.NAME`, which
    /// the operator's DNS hook publishes.
    Dns01,
}

impl ChallengeKind {
    fn acme_type(self) -> ChallengeType {
        match self {
            Self::Http01 => ChallengeType::Http01,
            Self::TlsAlpn01 => ChallengeType::TlsAlpn01,
            Self::Dns01 => ChallengeType::Dns01,
        }
    }
}

impl fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http01 => "HTTP-01",
            Self::TlsAlpn01 => "TLS-ALPN-01",
            Self::Dns01 => "DNS-01",
        })
    }
}

/// The certificate a TLS-ALPN-01 responder presents for one name.
#[derive(Clone, PartialEq, Eq)]
pub struct AlpnCert {
    /// The self-signed certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for AlpnCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlpnCert").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// Where the caller publishes challenge responses so that the CA can see them
/// (the edges serve them). [`issue`] calls a `put_*` method for every name it
/// must prove, before telling the CA to look, and [`Challenges::remove`] for each
/// of them when it is done, whether issuing worked or not.
#[async_trait]
pub trait Challenges: Send + Sync {
    /// Answer `GET http://NAME/.well-known/acme-challenge/TOKEN` with
    /// `key_authorization` as the body (`text/plain` or `application/octet-stream`).
    /// `Err` carries a reason; issuing stops there.
    async fn put_http01(&self, name: &str, token: &str, key_authorization: &str) -> Result<(), String>;

    /// Present `cert` to TLS connections for SNI `name` that offer only ALPN
    /// [`ACME_TLS_ALPN_PROTOCOL`]. `Err` carries a reason; issuing stops there.
    /// `token` and `key_authorization` are the challenge's, for the record
    /// (the certificate already carries the digest of the key authorization).
    async fn put_tls_alpn01(
        &self,
        name: &str,
        token: &str,
        key_authorization: &str,
        cert: AlpnCert,
    ) -> Result<(), String>;

    /// Publish the TXT record `txt_name` (`_acme-challenge.NAME.`, with the
    /// trailing dot) with `value`, and return once the CA can see it.
    /// `Err` carries a reason; issuing stops there.
    async fn put_dns01(&self, name: &str, txt_name: &str, value: &str) -> Result<(), String> {
        let _ = (txt_name, value);
        Err(format!("{name}: this installation publishes no DNS records (give a DNS hook)"))
    }

    /// Stop answering the challenge published for `name` (`token` is the
    /// HTTP-01 token; for TLS-ALPN-01 it is the challenge's token too, but the
    /// certificate is keyed by name). Best effort: it cannot fail issuing.
    async fn remove(&self, name: &str, token: &str);
}

/// A certificate the CA issued.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The chain as the CA sent it, PEM: the leaf first, then intermediates.
    pub chain_pem: String,
    /// The leaf's private key (ECDSA P-256), PKCS#8 PEM. Made for this order and
    /// never sent anywhere.
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued").field("chain_pem", &self.chain_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// Why an ACME operation failed.
///
/// `retryable` says whether the same call, made again later unchanged, may
/// succeed: network failures, timeouts, the CA's 5xx, `badNonce`,
/// `serverInternal` and `rateLimited` are retryable. Everything that needs a
/// person first is not: a challenge the CA could not validate (DNS pointing
/// elsewhere, a port not reaching this installation), `unauthorized`,
/// `rejectedIdentifier`, `externalAccountRequired`, an untrusted CA
/// certificate, a malformed configuration. A renewal scheduler may still try
/// those again on its normal (slow) schedule, since the person may have fixed
/// the cause meanwhile; it should not retry them quickly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AcmeError {
    /// What failed and what to do about it, for a person.
    pub message: String,
    /// Whether trying again later, unchanged, may help.
    pub retryable: bool,
    /// The ACME problem type the CA gave (`urn:ietf:params:acme:error:…`), if any.
    pub problem: Option<String>,
}

impl AcmeError {
    fn new(message: impl Into<String>, retryable: bool) -> Self {
        Self { message: message.into(), retryable, problem: None }
    }

    /// The problem type without its `urn:ietf:params:acme:error:` prefix
    /// (`rateLimited`, `unauthorized`, …), if the CA gave one.
    pub fn problem_kind(&self) -> Option<&str> {
        self.problem.as_deref().map(|p| p.strip_prefix(PROBLEM_PREFIX).unwrap_or(p))
    }

    /// Map an `instant-acme` error; `doing` says what was being done
    /// ("creating the ACME account at URL"), for the message.
    fn from_acme(doing: &str, err: instant_acme::Error) -> Self {
        use instant_acme::Error as E;
        match err {
            E::Api(problem) => Self::from_problem(doing, &problem),
            E::Timeout(_) => Self::new(format!("{doing}: the CA did not answer in time; try again later"), true),
            E::Other(source) => Self::from_transport(doing, &*source),
            E::Http(source) => Self::new(format!("{doing}: could not build the request: {source}"), false),
            E::InvalidUri(source) => Self::new(
                format!("{doing}: the CA gave or was given an invalid URL ({source}); check the directory URL"),
                false,
            ),
            E::Json(source) => Self::new(
                format!(
                    "{doing}: the answer was not the JSON an ACME server sends ({source}); check that the \
                     directory URL is an ACME directory, or try again later if the CA is having trouble"
                ),
                true,
            ),
            E::Crypto | E::KeyRejected => Self::new(
                format!(
                    "{doing}: the stored account key cannot be used ({err}); delete the stored ACME account so \
                     that a new one is created"
                ),
                false,
            ),
            E::Unsupported(what) => Self::new(format!("{doing}: the CA does not support {what}"), false),
            E::Str(what) => Self::new(format!("{doing}: the CA's answer is missing {what}"), true),
            other => Self::new(format!("{doing}: {other}"), false),
        }
    }

    /// A failure below ACME: connecting, TLS, reading the answer.
    fn from_transport(doing: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        if let Some(tls) = find_rustls_error(err)
            && matches!(tls, rustls::Error::InvalidCertificate(_))
        {
            return Self::new(
                format!(
                    "{doing}: the CA's HTTPS certificate is not trusted ({tls}); if it is a private CA, add its \
                     root certificate to the ACME extra roots"
                ),
                false,
            );
        }
        Self::new(
            format!(
                "{doing}: could not reach the CA ({}); check the directory URL and this host's network, or try \
                 again later",
                chain(err)
            ),
            true,
        )
    }

    fn from_problem(doing: &str, problem: &Problem) -> Self {
        let kind = problem.r#type.as_deref().map(|t| t.strip_prefix(PROBLEM_PREFIX).unwrap_or(t));
        let detail = problem_text(problem);
        let server_side = problem.status.is_some_and(|s| s >= 500);
        let (advice, retryable) = match kind {
            Some("badNonce") => ("try again", true),
            Some("rateLimited") => ("the CA's rate limit was hit; wait before trying again", true),
            Some("serverInternal") => ("the CA had an internal error; try again later", true),
            Some("externalAccountRequired") => {
                ("the CA requires External Account Binding: set the EAB key id and HMAC key it gave you", false)
            }
            Some("accountDoesNotExist") => {
                ("the CA does not know the stored account; delete it so that a new one is created", false)
            }
            Some("userActionRequired") => {
                ("the CA wants a person to act (often: accept new terms of service); see its instructions", false)
            }
            Some("rejectedIdentifier") => {
                ("the CA will not issue for this name by policy; use another name or another CA", false)
            }
            Some("unauthorized") => ("the account may not do this for these names", false),
            Some("caa") => ("a CAA record on the name forbids this CA; add one that allows it", false),
            Some("invalidContact" | "unsupportedContact") => ("fix the ACME contact e-mail address", false),
            _ if server_side => ("the CA had trouble; try again later", true),
            _ => ("check the names and ACME settings", false),
        };
        Self { message: format!("{doing}: {detail}: {advice}"), retryable, problem: problem.r#type.clone() }
    }
}

/// `detail (type)` plus subproblems, for messages.
fn problem_text(problem: &Problem) -> String {
    let mut text = problem.detail.clone().unwrap_or_else(|| "the CA refused".to_owned());
    if let Some(t) = &problem.r#type {
        text.push_str(&format!(" ({})", t.strip_prefix(PROBLEM_PREFIX).unwrap_or(t)));
    }
    for sub in &problem.subproblems {
        text.push_str(&format!("; {sub}"));
    }
    text
}

/// The rustls error somewhere in `err`'s sources. `io::Error::source()` skips
/// the error it wraps (and hyper wraps rustls's io::Error in another), so those
/// are unwrapped by hand.
fn find_rustls_error<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut source = Some(err);
    while let Some(e) = source {
        let mut inner = e;
        loop {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            match inner.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        source = e.source();
    }
    None
}

/// An error and its sources, joined, for messages.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// The HTTP client `instant-acme` talks through: the control plane's reqwest
/// (rustls with ring, built-in public roots plus the configured extra roots).
struct ReqwestHttp(reqwest::Client);

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            // Its size hint is exact, so hyper still sends a Content-Length.
            let body = reqwest::Body::wrap(body);
            let rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(axum::http::Response::<reqwest::Body>::from(rsp)))
        })
    }
}

fn http_client(config: &AcmeConfig) -> Result<Box<dyn HttpClient>, AcmeError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("chanto/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if let Some(pem) = &config.extra_roots_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| AcmeError::new(format!("the ACME extra roots are not PEM certificates: {e}"), false))?;
        if roots.is_empty() {
            return Err(AcmeError::new(
                "the ACME extra roots hold no PEM certificate (-----BEGIN CERTIFICATE-----)",
                false,
            ));
        }
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    let client = builder
        .build()
        .map_err(|e| AcmeError::new(format!("could not set up HTTPS to the CA: {}", chain(&e)), false))?;
    Ok(Box::new(ReqwestHttp(client)))
}

/// Load the account from `stored` credentials (what an earlier call returned),
/// or create one at the CA (agreeing to its terms of service) when there are
/// none, or when they belong to another directory URL (the CA was changed).
///
/// Returns the account and the credentials to store: `stored` itself when it
/// was used, new ones otherwise. The credentials hold the account's private key:
/// store them sealed.
pub async fn account(config: &AcmeConfig, stored: Option<&str>) -> Result<(AcmeAccount, String), AcmeError> {
    let directory = config.directory_url.as_str();
    if let Some(stored) = stored {
        let credentials: AccountCredentials = serde_json::from_str(stored).map_err(|e| {
            AcmeError::new(
                format!("the stored ACME account is not readable ({e}); delete it so that a new one is created"),
                false,
            )
        })?;
        if stored_directory(stored).as_deref() == Some(directory) {
            let inner = Account::builder_with_http(http_client(config)?)
                .from_credentials(credentials)
                .await
                .map_err(|e| AcmeError::from_acme(&format!("loading the ACME account from {directory}"), e))?;
            return Ok((AcmeAccount { inner }, stored.to_owned()));
        }
    }

    let eab = match &config.eab {
        Some(eab) => {
            let b64 = eab.hmac_key_b64url.trim().trim_end_matches('=');
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64).map_err(|e| {
                AcmeError::new(
                    format!("the EAB HMAC key is not base64url ({e}); paste it exactly as the CA shows it"),
                    false,
                )
            })?;
            Some(instant_acme::ExternalAccountKey::new(eab.kid.clone(), &key))
        }
        None => None,
    };
    let contact = config.contact_email.as_ref().map(|e| format!("mailto:{}", e.trim()));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new_account = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
    let (inner, credentials) = Account::builder_with_http(http_client(config)?)
        .create(&new_account, directory.to_owned(), eab.as_ref())
        .await
        .map_err(|e| AcmeError::from_acme(&format!("creating an ACME account at {directory}"), e))?;
    let credentials = serde_json::to_string(&credentials)
        .map_err(|e| AcmeError::new(format!("could not serialise the ACME account: {e}"), false))?;
    Ok((AcmeAccount { inner }, credentials))
}

/// The directory URL recorded in stored credentials, if they have one.
fn stored_directory(stored: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Directory {
        directory: Option<String>,
    }
    serde_json::from_str::<Directory>(stored).ok()?.directory
}

/// The CA's suggested renewal window for one certificate (ACME Renewal
/// Information, RFC 9773), in Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this…
    pub start: i64,
    /// …and no later than this.
    pub end: i64,
    /// When the CA asks to be asked again (its `Retry-After`).
    pub ask_again: Duration,
    /// The CA's page on why the window is what it is (a revocation, say).
    pub explanation: Option<String>,
}

/// Asks the CA when the first certificate of `chain_pem` should be renewed.
/// `Ok(None)`: the CA offers no renewal information (its directory has no
/// `renewalInfo`), so the caller keeps its own schedule.
pub async fn renewal_window(account: &AcmeAccount, chain_pem: &str) -> Result<Option<RenewalWindow>, AcmeError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| AcmeError::new("asking for renewal information: the stored chain has no certificate", false))?;
    let id = instant_acme::CertificateIdentifier::try_from(&leaf).map_err(|e| {
        AcmeError::new(format!("asking for renewal information: the certificate cannot be identified ({e})"), false)
    })?;
    match account.inner.renewal_info(&id).await {
        Ok((info, ask_again)) => {
            let window = &info.suggested_window;
            let start = (window.start.unix_timestamp_nanos() / 1_000_000) as i64;
            let end = (window.end.unix_timestamp_nanos() / 1_000_000) as i64;
            if end < start {
                return Err(AcmeError::new(
                    format!("asking for renewal information on {id}: the CA's window ends before it starts"),
                    true,
                ));
            }
            Ok(Some(RenewalWindow { start, end, ask_again, explanation: info.explanation_url }))
        }
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        // Whatever went wrong, the certificate keeps its own schedule and the
        // question is asked again later.
        Err(e) => Err(AcmeError::new(format!("asking for renewal information on {id}: {e}"), true)),
    }
}

/// The self-signed certificate a TLS-ALPN-01 responder presents for `name`:
/// a fresh P-256 key, `name` as its only SAN, and the critical acmeIdentifier
/// extension holding SHA-256 of `key_authorization` (RFC 8737 section 3).
pub fn tls_alpn01_certificate(name: &str, key_authorization: &str) -> Result<AlpnCert, AcmeError> {
    let fail =
        |e: rcgen::Error| AcmeError::new(format!("could not make the TLS-ALPN-01 certificate for {name}: {e}"), false);
    let digest = Sha256::digest(key_authorization.as_bytes());
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(fail)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions.push(rcgen::CustomExtension::new_acme_identifier(&digest));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(AlpnCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Order a certificate for `names` (DNS names; the first is only first among
/// equals), proving each with a `kind` challenge published through
/// `challenges`, and wait for it at most `deadline` in all.
///
/// Authorizations the CA already holds as valid for this account are not
/// challenged again. Every challenge published is removed before returning.
pub async fn issue(
    account: &AcmeAccount,
    names: &[String],
    kind: ChallengeKind,
    challenges: &dyn Challenges,
    deadline: Duration,
) -> Result<Issued, AcmeError> {
    if names.is_empty() {
        return Err(AcmeError::new("no names to issue a certificate for", false));
    }
    let until = Instant::now() + deadline;
    let mut published: Vec<(String, String)> = Vec::new();
    let result = match tokio::time::timeout_at(
        until,
        issue_inner(account, names, kind, challenges, until, &mut published),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(AcmeError::new(
            format!(
                "issuing a certificate for {}: not done within {}; try again later",
                names.join(", "),
                humantime::format_duration(deadline)
            ),
            true,
        )),
    };
    for (name, token) in &published {
        challenges.remove(name, token).await;
    }
    result
}

async fn issue_inner(
    account: &AcmeAccount,
    names: &[String],
    kind: ChallengeKind,
    challenges: &dyn Challenges,
    until: Instant,
    published: &mut Vec<(String, String)>,
) -> Result<Issued, AcmeError> {
    let all = names.join(", ");
    let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account
        .inner
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| AcmeError::from_acme(&format!("ordering a certificate for {all}"), e))?;

    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| AcmeError::from_acme(&format!("reading the authorizations for {all}"), e))?;
        let name = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            status => {
                return Err(AcmeError::new(
                    format!("the CA's authorization for {name} is {status:?}, not pending; try again later"),
                    true,
                ));
            }
        }
        let Some(mut challenge) = authz.challenge(kind.acme_type()) else {
            return Err(AcmeError::new(
                format!("the CA does not offer {kind} for {name}; choose another challenge type"),
                false,
            ));
        };
        let token = challenge.token.clone();
        let key_authorization = challenge.key_authorization();
        // Remembered before publishing: a challenge whose publishing failed or was cut
        // short by the deadline may be half there, and is removed too.
        published.push((name.clone(), token.clone()));
        let put = match kind {
            ChallengeKind::Http01 => challenges.put_http01(&name, &token, key_authorization.as_str()).await,
            ChallengeKind::Dns01 => {
                let txt_name = format!("_acme-challenge.{}.", name.trim_start_matches("*."));
                challenges.put_dns01(&name, &txt_name, &key_authorization.dns_value()).await
            }
            ChallengeKind::TlsAlpn01 => {
                let cert = tls_alpn01_certificate(&name, key_authorization.as_str())?;
                challenges.put_tls_alpn01(&name, &token, key_authorization.as_str(), cert).await
            }
        };
        put.map_err(|e| {
            AcmeError::new(format!("could not publish the {kind} challenge for {name}: {e}; try again later"), true)
        })?;
        challenge
            .set_ready()
            .await
            .map_err(|e| AcmeError::from_acme(&format!("asking the CA to validate {name}"), e))?;
    }

    let status = order.poll_ready(&retry_policy(until)).await;
    let status = match status {
        Ok(status) => status,
        // The order's own error is often generic; a failed challenge says more.
        Err(instant_acme::Error::Api(problem)) => {
            return Err(challenge_failure(&mut order, kind)
                .await
                .unwrap_or_else(|| AcmeError::from_problem(&format!("validating {all}"), &problem)));
        }
        Err(instant_acme::Error::Timeout(_)) => {
            return Err(AcmeError::new(
                format!(
                    "the CA had not validated {all} in time; check that the challenges are reachable, then try again"
                ),
                true,
            ));
        }
        Err(e) => return Err(AcmeError::from_acme(&format!("waiting for the CA to validate {all}"), e)),
    };
    if status != OrderStatus::Ready {
        return Err(challenge_failure(&mut order, kind).await.unwrap_or_else(|| {
            AcmeError::new(format!("the CA did not validate {all} (the order is {status:?}); try again later"), true)
        }));
    }

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AcmeError::new(format!("could not make a key for {all}: {e}"), false))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| AcmeError::new(format!("could not make a certificate request for {all}: {e}"), false))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| AcmeError::new(format!("could not make a certificate request for {all}: {e}"), false))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| AcmeError::from_acme(&format!("finalizing the order for {all}"), e))?;
    let chain_pem = order.poll_certificate(&retry_policy(until)).await.map_err(|e| match e {
        instant_acme::Error::Timeout(_) => {
            AcmeError::new(format!("the CA had not issued the certificate for {all} in time; try again later"), true)
        }
        e => AcmeError::from_acme(&format!("downloading the certificate for {all}"), e),
    })?;
    Ok(Issued { chain_pem, key_pem: key.serialize_pem() })
}

fn retry_policy(until: Instant) -> RetryPolicy {
    RetryPolicy::new()
        .initial_delay(POLL_FIRST_DELAY)
        .backoff(POLL_BACKOFF)
        .timeout(until.saturating_duration_since(Instant::now()))
}

/// The first invalid authorization's failed challenge, as an error that names
/// the name and says what to check. `None` if none is found (or the CA cannot
/// be asked).
async fn challenge_failure(order: &mut instant_acme::Order, kind: ChallengeKind) -> Option<AcmeError> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let Ok(mut authz) = authz else { continue };
        let Ok(state) = authz.refresh().await else { continue };
        if state.status != AuthorizationStatus::Invalid {
            continue;
        }
        let name = state.identifier().to_string();
        let failed = state.challenges.iter().find(|c| c.error.is_some());
        let problem = failed.and_then(|c| c.error.clone());
        let token = failed.map(|c| c.token.clone()).unwrap_or_default();
        let detail = problem.as_ref().map(problem_text).unwrap_or_else(|| "no reason given".to_owned());
        let message = match kind {
            ChallengeKind::Http01 => format!(
                "the CA could not validate {name} over HTTP-01 (http://{name}/.well-known/acme-challenge/{token}): \
                 {detail}: check that {name}'s DNS points at this installation and that port 80 reaches it"
            ),
            ChallengeKind::TlsAlpn01 => format!(
                "the CA could not validate {name} over TLS-ALPN-01 ({name}:443, ALPN acme-tls/1): {detail}: check \
                 that {name}'s DNS points at this installation and that port 443 reaches it with no other TLS \
                 terminator in front"
            ),
            ChallengeKind::Dns01 => format!(
                "the CA could not validate {name} over DNS-01 (TXT _acme-challenge.{}): {detail}: check that the \
                 DNS hook publishes the record in the zone the name's nameservers serve",
                name.trim_start_matches("*.")
            ),
        };
        let problem_type = problem.as_ref().and_then(|p| p.r#type.clone());
        let retryable = matches!(
            problem_type.as_deref().and_then(|t| t.strip_prefix(PROBLEM_PREFIX)),
            Some("serverInternal" | "rateLimited")
        );
        return Some(AcmeError { message, retryable, problem: problem_type });
    }
    None
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject as _;

    use super::*;

    fn problem(json: &str) -> Problem {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn problem_types_decide_retryable() {
        let table = [
            (r#"{"type":"urn:ietf:params:acme:error:badNonce","status":400}"#, true),
            (r#"{"type":"urn:ietf:params:acme:error:rateLimited","status":429}"#, true),
            (r#"{"type":"urn:ietf:params:acme:error:serverInternal","status":500}"#, true),
            (r#"{"type":"about:blank","status":503}"#, true),
            (r#"{"type":"urn:ietf:params:acme:error:unauthorized","status":403}"#, false),
            (r#"{"type":"urn:ietf:params:acme:error:rejectedIdentifier","status":400}"#, false),
            (r#"{"type":"urn:ietf:params:acme:error:malformed","status":400}"#, false),
            (r#"{"type":"urn:ietf:params:acme:error:externalAccountRequired","status":401}"#, false),
        ];
        for (json, retryable) in table {
            let err = AcmeError::from_problem("ordering", &problem(json));
            assert_eq!(err.retryable, retryable, "{json}: {err}");
            assert!(err.message.starts_with("ordering: "), "{err}");
        }
    }

    #[test]
    fn problem_kind_strips_the_urn() {
        let err = AcmeError::from_problem(
            "ordering",
            &problem(r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many","status":429}"#),
        );
        assert_eq!(err.problem_kind(), Some("rateLimited"));
        assert!(err.message.contains("too many"), "{err}");
    }

    #[test]
    fn alpn_certificate_has_the_critical_acme_identifier() {
        let cert = tls_alpn01_certificate("docs.example.test", "token.thumb").unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let oid = x509_parser::oid_registry::Oid::from(&[1, 3, 6, 1, 5, 5, 7, 1, 31]).unwrap();
        let ext = x509.extensions().iter().find(|e| e.oid == oid).expect("acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING (0x04, length 32) holding SHA-256 of the key authorization.
        let digest = Sha256::digest(b"token.thumb");
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], digest.as_slice());
        let san = x509.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
    }
}

//! HTTPS on the edge (issue 17): the certificates the edge serves, chosen by
//! the name a visitor's client asks for (SNI), and the rustls configuration
//! of the `--https` listener ([`crate::server::serve_tls`]).
//!
//! Who reaches this: every visitor, untrusted, before any request exists —
//! a `ClientHello` is the first thing a stranger sends. So the per-handshake
//! work is bounded and allocation-light: the name is looked up lock-free in
//! an immutable map ([`CertStore`], swapped whole with `arc-swap` when the
//! set changes), exact name first, then one wildcard that covers exactly one
//! label. A name the edge has no certificate for (or no name at all) fails
//! the handshake — the edge never shows a certificate for another name,
//! which would only teach a scanner which sites live here — and is counted
//! ([`CertStore::unknown_sni_total`]). The handshake itself must finish
//! within the header-read timeout, and the session cache has a fixed size,
//! so a flood of handshakes holds bounded memory.
//!
//! Protocols: TLS 1.2 and 1.3 only (ring provider), ALPN `h2` then
//! `http/1.1`, session resumption by session id (a bounded in-memory cache)
//! and by stateless tickets (rustls's ring ticketer, whose keys rotate).
//!
//! ACME TLS-ALPN-01 (RFC 8737): a client that offers ALPN `acme-tls/1` and
//! nothing else is the CA checking a name; it gets the challenge certificate
//! of that name while an order is under way ([`CertStore::replace_challenges`])
//! and nothing otherwise — never a site's certificate, and a normal client
//! never gets a challenge certificate. The connection closes after the
//! handshake ([`crate::server::serve_tls`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

/// Marker inserted into every request's extensions (`http::Extensions`)
/// that arrived over TLS.
#[derive(Clone, Copy, Debug)]
pub struct Secure;

/// The name a TLS connection's client asked for (SNI), in the extensions of
/// each of its requests.
#[derive(Clone, Debug)]
pub struct TlsName(pub Arc<str>);

/// The ALPN protocol of the ACME TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Sessions remembered for resumption by session id (TLS 1.2 clients
/// without ticket support); about 200 bytes each.
const SESSION_CACHE: usize = 8192;

/// The crypto provider every certificate and handshake uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain (leaf first) and a PEM private key (PKCS#8, SEC1 or
/// PKCS#1; certificates in the key file are skipped) into a certificate the
/// edge can serve, checking that the key belongs to the leaf. The error
/// says which input is wrong and how.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate chain is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate chain has no certificate (expected `-----BEGIN CERTIFICATE-----` \
                    blocks, the site's certificate first)"
            .into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "the key has no private key (expected a PEM \
                                                         `PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY` block)"
            .to_owned(),
        e => format!("the private key is not valid PEM: {e}"),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the private key is not usable (RSA, ECDSA P-256/P-384 or Ed25519): {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err("the private key does not match the certificate (the first one in the chain)".into());
        }
        Err(e) => return Err(format!("the certificate (the first one in the chain) is unreadable: {e}")),
    }
    Ok(Arc::new(certified))
}

/// Parses a TLS-ALPN-01 challenge certificate and its key (PEM, one after
/// the other). Not [`certified_key`]: its key-match check runs webpki over
/// the leaf, which refuses the critical `acmeIdentifier` extension every
/// challenge certificate carries.
pub fn challenge_key(pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the challenge certificate is not valid PEM: {e}"))?;
    if chain.len() != 1 {
        return Err(format!("a challenge has one self-signed certificate, not {}", chain.len()));
    }
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("the challenge certificate's key is not valid PEM: {e}"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the challenge certificate's key is not usable: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// The certificates the edge serves, by name: swapped whole (`arc-swap`)
/// when the set changes, read lock-free by each handshake.
pub struct CertStore {
    names: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates by exact name.
    challenges: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    unknown_sni: AtomicU64,
    /// TLS-ALPN-01 handshakes given a challenge certificate.
    acme_answered: AtomicU64,
    /// Names asked for in SNI that had no certificate and may get one on
    /// demand (see [`CertStore::want_on_miss`]).
    wanted: OnDemand,
}

/// The names a [`CertStore`] was asked for and could not serve, that the
/// owner may order certificates for: only names under `suffixes` (the base
/// and preview domains, one label deep), at most [`OnDemand::CAP`] waiting
/// (more are dropped until the owner takes them), deduplicated.
#[derive(Default)]
struct OnDemand {
    suffixes: std::sync::OnceLock<Vec<String>>,
    names: std::sync::Mutex<std::collections::BTreeSet<String>>,
    wake: tokio::sync::Notify,
}

impl OnDemand {
    const CAP: usize = 256;

    fn note(&self, sni: &str) {
        let Some(suffixes) = self.suffixes.get() else { return };
        let name = normalize(sni);
        let one_label = suffixes.iter().any(|s| {
            name.strip_suffix(s.as_str())
                .and_then(|l| l.strip_suffix('.'))
                .is_some_and(|l| !l.is_empty() && !l.contains('.'))
        });
        if !one_label {
            return;
        }
        let mut names = self.names.lock().expect("on-demand lock");
        if names.len() < Self::CAP && names.insert(name) {
            self.wake.notify_one();
        }
    }
}

impl CertStore {
    /// A store with no certificate: every handshake fails until
    /// [`CertStore::replace`] gives it some.
    pub fn new() -> Self {
        Self {
            names: ArcSwap::from_pointee(HashMap::new()),
            challenges: ArcSwap::from_pointee(HashMap::new()),
            unknown_sni: AtomicU64::new(0),
            acme_answered: AtomicU64::new(0),
            wanted: OnDemand::default(),
        }
    }

    /// Replaces the whole set; the next handshake sees the new one. Keys
    /// are DNS names, or `*.example.com` patterns covering exactly one
    /// label; they are compared lower-case, without a trailing dot.
    pub fn replace(&self, entries: impl IntoIterator<Item = (String, Arc<CertifiedKey>)>) {
        let names = entries.into_iter().map(|(name, key)| (normalize(&name), key)).collect();
        self.names.store(Arc::new(names));
    }

    /// The certificate for `sni`: the exact name first, then the wildcard
    /// covering its first label. SNI is case-insensitive; a trailing dot is
    /// ignored.
    pub fn lookup(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let sni = normalize(sni);
        // A client asking for a pattern gets nothing, not the wildcard.
        if sni.is_empty() || sni.contains('*') {
            return None;
        }
        let names = self.names.load();
        if let Some(key) = names.get(&sni) {
            return Some(key.clone());
        }
        let (label, parent) = sni.split_once('.')?;
        if label.is_empty() || parent.is_empty() {
            return None;
        }
        names.get(&format!("*.{parent}")).cloned()
    }

    /// Replaces the TLS-ALPN-01 challenge certificates (by exact name).
    pub fn replace_challenges(&self, entries: impl IntoIterator<Item = (String, Arc<CertifiedKey>)>) {
        let names = entries.into_iter().map(|(name, key)| (normalize(&name), key)).collect();
        self.challenges.store(Arc::new(names));
    }

    /// The TLS-ALPN-01 challenge certificate for `sni`, while one is set.
    pub fn lookup_challenge(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges.load().get(&normalize(sni)).cloned()
    }

    /// From now on, remembers names one label under any of `domains` (the
    /// base and preview domains) that a handshake asked for and no
    /// certificate served, for [`CertStore::take_wanted`]. Whether such a
    /// name belongs to a site is the taker's to check.
    pub fn want_on_miss(&self, domains: &[String]) {
        let _ = self.wanted.suffixes.set(domains.iter().map(|d| normalize(d)).collect());
    }

    /// Takes the names remembered since the last call (see
    /// [`CertStore::want_on_miss`]).
    pub fn take_wanted(&self) -> Vec<String> {
        std::mem::take(&mut *self.wanted.names.lock().expect("on-demand lock")).into_iter().collect()
    }

    /// Resolves when a name was remembered (see [`CertStore::want_on_miss`]).
    pub async fn wanted_changed(&self) {
        self.wanted.wake.notified().await
    }

    /// How many names (and patterns) have a certificate.
    pub fn len(&self) -> usize {
        self.names.load().len()
    }

    /// Whether no name has a certificate.
    pub fn is_empty(&self) -> bool {
        self.names.load().is_empty()
    }

    /// Handshakes refused because no certificate matched the name asked
    /// for (or none was asked for), for metrics.
    pub fn unknown_sni_total(&self) -> u64 {
        self.unknown_sni.load(Ordering::Relaxed)
    }

    /// Adds this store's counters to a `/metrics` text (for whoever owns
    /// the store, through [`crate::Edge::set_extra_metrics`]).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        out.push_str("# HELP chanto_edge_tls_unknown_sni_total TLS handshakes refused: no certificate for the name asked (or no name).\n# TYPE chanto_edge_tls_unknown_sni_total counter\n");
        let _ = writeln!(out, "chanto_edge_tls_unknown_sni_total {}", self.unknown_sni_total());
        out.push_str("# HELP chanto_edge_tls_certificates Names and wildcard patterns the edge has a certificate for.\n# TYPE chanto_edge_tls_certificates gauge\n");
        let _ = writeln!(out, "chanto_edge_tls_certificates {}", self.len());
        out.push_str("# HELP chanto_edge_tls_acme_challenges_total TLS-ALPN-01 handshakes answered with a challenge certificate (the ACME CA checking a name).\n# TYPE chanto_edge_tls_acme_challenges_total counter\n");
        let _ = writeln!(out, "chanto_edge_tls_acme_challenges_total {}", self.acme_answered.load(Ordering::Relaxed));
    }
}

impl Default for CertStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("names", &self.len())
            .field("unknown_sni_total", &self.unknown_sni_total())
            .finish()
    }
}

/// A name as the store keys it: lower-case, no trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Chooses each handshake's certificate from a [`CertStore`].
#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // The CA's TLS-ALPN-01 check offers `acme-tls/1` alone (RFC 8737 §3);
        // a client offering it with anything else is no CA and is served as
        // any other (rustls then picks one of the others).
        let mut alpn = hello.alpn().into_iter().flatten();
        let acme = alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none();
        let found = if acme {
            let found = hello.server_name().and_then(|name| self.0.lookup_challenge(name));
            if found.is_some() {
                self.0.acme_answered.fetch_add(1, Ordering::Relaxed);
            }
            found
        } else {
            hello.server_name().and_then(|name| self.0.lookup(name))
        };
        if found.is_none() {
            if !acme && let Some(name) = hello.server_name() {
                self.0.wanted.note(name);
            }
            self.0.unknown_sni.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(sni = ?hello.server_name(), "TLS handshake refused: no certificate for this name");
        }
        found
    }
}

/// The `--https` listener's rustls configuration: ring, TLS 1.2 and 1.3,
/// ALPN `h2` and `http/1.1` (and `acme-tls/1` for the CA's TLS-ALPN-01
/// check), the certificate chosen from `store` by SNI
/// (an unknown or absent name fails the handshake, counted), and session
/// resumption (a bounded session cache and stateless tickets).
pub fn server_config(store: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        // The ring provider has suites for both versions: this cannot fail.
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    // rustls picks the first of these the client offers: `acme-tls/1` only
    // when the client offers nothing else.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        // Only when the system's random source fails; session ids still resume.
        Err(e) => tracing::warn!(error = %e, "no TLS session tickets: the ticket key could not be made"),
    }
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn certified_key_takes_a_matching_pair_and_skips_certificates_in_the_key_file() {
        let (cert, key) = self_signed(&["a.example.test"]);
        assert!(certified_key(&cert, &key).is_ok());
        // A key file that holds the certificate too, before the key.
        let combined = format!("{cert}{key}");
        let ck = certified_key(&cert, &combined).unwrap();
        assert_eq!(ck.cert.len(), 1);
    }

    #[test]
    fn certified_key_refuses_what_cannot_be_served_and_says_why() {
        let (cert, key) = self_signed(&["a.example.test"]);
        let (_, other_key) = self_signed(&["b.example.test"]);
        let cases: [(&str, &str, &str, &str); 6] = [
            ("another key", &cert, &other_key, "does not match the certificate"),
            ("empty chain", "", &key, "has no certificate"),
            ("no PEM in the chain", "hello", &key, "has no certificate"),
            (
                "broken base64",
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                &key,
                "chain is not valid PEM",
            ),
            ("no key", &cert, &cert, "has no private key"),
            (
                "a key that is no key",
                &cert,
                "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n",
                "not usable",
            ),
        ];
        for (what, chain, key, expected) in cases {
            let err = certified_key(chain, key).err().unwrap_or_else(|| panic!("{what}: accepted"));
            assert!(err.contains(expected), "{what}: {err:?} does not say {expected:?}");
        }
        // A certificate block that is not a certificate.
        let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let err = certified_key(junk, &key).unwrap_err();
        assert!(err.contains("unreadable"), "{err}");
    }

    #[test]
    fn lookup_prefers_the_exact_name_and_wildcards_cover_one_label() {
        let (cert, key) = self_signed(&["x.test"]);
        let exact = certified_key(&cert, &key).unwrap();
        let wild = certified_key(&cert, &key).unwrap();
        let store = CertStore::new();
        assert!(store.is_empty());
        store.replace([("Docs.Example.Test.".to_owned(), exact.clone()), ("*.example.test".to_owned(), wild.clone())]);
        assert_eq!(store.len(), 2);
        let is = |sni: &str, want: Option<&Arc<CertifiedKey>>| {
            let got = store.lookup(sni);
            assert_eq!(got.as_ref().map(Arc::as_ptr), want.map(Arc::as_ptr), "{sni}");
        };
        is("docs.example.test", Some(&exact));
        is("DOCS.example.test.", Some(&exact));
        is("blog.example.test", Some(&wild));
        is("a.b.example.test", None);
        is("example.test", None);
        is(".example.test", None);
        is("*.example.test", None);
        is("", None);
        is(".", None);
        is("other.test", None);
        store.replace([]);
        is("docs.example.test", None);
        assert_eq!(store.unknown_sni_total(), 0, "lookups are not handshakes");
    }
}

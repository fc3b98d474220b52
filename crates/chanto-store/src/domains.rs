//! Custom domains, their TLS settings and certificates (issue 17).
//!
//! A domain (a hostname such as `example.com`) belongs to one site only: the
//! name is the table's key, so a second site adding it is refused with a
//! [`StoreError::Conflict`] naming the site that has it. It serves the site's
//! production branch, or one branch. One domain of a site is its primary;
//! the others answer with a redirect to it. A domain moves through named
//! states ([`DomainState`]), and serves a certificate once one is stored
//! for it. Certificates keep their private key sealed (the caller seals and
//! opens it: the store never sees it in clear). Times are passed in.

use async_trait::async_trait;
use chanto_core::{BranchName, SiteName};
use serde::{Deserialize, Serialize};

use crate::{StoreError, UnixMillis};

/// Where a domain is on its way to serving HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Added; the installation has not yet seen that the name reaches it.
    PendingVerification,
    /// The name reaches this installation; a certificate is being obtained.
    Issuing,
    /// A certificate for it is in place.
    Active,
    /// Something failed; `reason` and `hint` say what and what to do.
    Failed,
}

impl DomainState {
    /// Its stored (and displayed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingVerification => "pending_verification",
            Self::Issuing => "issuing",
            Self::Active => "active",
            Self::Failed => "failed",
        }
    }

    /// A state from its stored name.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "pending_verification" => Self::PendingVerification,
            "issuing" => Self::Issuing,
            "active" => Self::Active,
            "failed" => Self::Failed,
            other => return Err(format!("stored domain state {other:?} is not one chanto knows")),
        })
    }
}

/// A domain as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    /// The hostname: lower-case ASCII (punycode), no trailing dot.
    pub name: String,
    /// The site it serves.
    pub site: SiteName,
    /// The branch it serves; `None`: the site's production branch (whichever it is).
    pub branch: Option<BranchName>,
    /// Whether it is the site's primary domain (the others redirect to it).
    pub primary: bool,
    /// The apex this `www` name was added with (they are removed together).
    pub twin_of: Option<String>,
    /// Where it is on its way to HTTPS.
    pub state: DomainState,
    /// For `failed`: what happened.
    pub reason: Option<String>,
    /// For `failed` (and `pending_verification`): what to do.
    pub hint: Option<String>,
    /// The random token that proves the name reaches this installation
    /// (served on the HTTP challenge path; the value of the TXT record).
    pub verify_token: String,
    /// When the name was seen reaching this installation; `None`: never,
    /// and then no certificate is ever ordered for it.
    pub verified_at: Option<UnixMillis>,
    /// How: `http`, `dns` or `upload`.
    pub verified_by: Option<String>,
    /// The certificate it serves, if any.
    pub cert_id: Option<String>,
    /// When it was added.
    pub created_at: UnixMillis,
    /// The ACME HTTP-01 challenge the edges answer for it while an order is
    /// under way.
    pub challenge: Option<AcmeChallenge>,
    /// Failed certificate orders in a row (reset when one is stored).
    pub attempts: u32,
    /// No order before this time (backoff after a failure).
    pub next_attempt_at: Option<UnixMillis>,
}

/// An ACME challenge a domain answers while an order is under way.
///
/// HTTP-01 (no `alpn_pem`): the CA fetches
/// `http://NAME/.well-known/acme-challenge/TOKEN` and expects the key
/// authorization. Not secret (the CA publishes both).
///
/// TLS-ALPN-01 (`alpn_pem`): the CA opens TLS to NAME on port 443 offering
/// only ALPN `acme-tls/1`, and expects the self-signed certificate that
/// carries the key authorization's digest (RFC 8737). The key beside it is
/// made for this one challenge and proves nothing else; the HTTP path
/// answers nothing then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeChallenge {
    /// The token (base64url, the last path segment).
    pub token: String,
    /// The body to answer.
    pub key_authorization: String,
    /// For TLS-ALPN-01: the challenge certificate, then its private key
    /// (PEM, one after the other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn_pem: Option<String>,
}

/// A domain to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDomain {
    /// The hostname (already checked: `chanto_core::DomainName`).
    pub name: String,
    /// The branch it serves; `None`: production.
    pub branch: Option<BranchName>,
    /// The apex this name was added with, for a `www` twin.
    pub twin_of: Option<String>,
    /// Its verification token.
    pub verify_token: String,
}

/// A site's HTTPS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteTls {
    /// Plain HTTP requests for a name with an active certificate are
    /// redirected to HTTPS.
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age` in seconds; 0: no header.
    pub hsts_max_age: u64,
    /// HSTS `includeSubDomains`.
    pub hsts_include_subdomains: bool,
    /// HSTS `preload`.
    pub hsts_preload: bool,
}

impl Default for SiteTls {
    fn default() -> Self {
        Self { https_redirect: true, hsts_max_age: 0, hsts_include_subdomains: false, hsts_preload: false }
    }
}

impl SiteTls {
    /// The `Strict-Transport-Security` value, if any.
    pub fn hsts_header(&self) -> Option<String> {
        if self.hsts_max_age == 0 {
            return None;
        }
        let mut v = format!("max-age={}", self.hsts_max_age);
        if self.hsts_include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.hsts_preload {
            v.push_str("; preload");
        }
        Some(v)
    }
}

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateSource {
    /// Issued by an ACME CA for chanto.
    Acme,
    /// Uploaded by a user.
    Upload,
}

impl CertificateSource {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acme => "acme",
            Self::Upload => "upload",
        }
    }

    /// A source from its stored name.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "acme" => Ok(Self::Acme),
            "upload" => Ok(Self::Upload),
            other => Err(format!("stored certificate source {other:?} is not acme or upload")),
        }
    }
}

/// A certificate of the base domain (`*.BASE`, `*.PREVIEW`): what it
/// serves, and how its order is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseCertificate {
    /// The wildcard pattern, e.g. `*.example.org`.
    pub pattern: String,
    /// The certificate served for it, if any.
    pub cert_id: Option<String>,
    /// Failed orders in a row.
    pub attempts: u32,
    /// No order before this time (backoff after a failure).
    pub next_attempt_at: Option<UnixMillis>,
    /// Why the last order failed.
    pub reason: Option<String>,
    /// When the row last changed.
    pub updated_at: UnixMillis,
    /// The ACME challenge the edges answer for it while an order is under
    /// way (exact hosts only: wildcards are proven by DNS-01).
    pub challenge: Option<AcmeChallenge>,
}

/// A certificate as stored: its chain in clear, its key sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Hex BLAKE3 of the chain's DER: what edges fetch and cache it by.
    pub id: String,
    /// Where it came from.
    pub source: CertificateSource,
    /// The DNS names it covers.
    pub names: Vec<String>,
    /// The chain, leaf first, as PEM.
    pub chain_pem: String,
    /// The private key, sealed by the control plane.
    pub key_sealed: Vec<u8>,
    /// Valid from (unix millis).
    pub not_before: UnixMillis,
    /// Valid until (unix millis).
    pub not_after: UnixMillis,
    /// Who issued it (the issuer's common name).
    pub issuer: String,
    /// When it was stored.
    pub created_at: UnixMillis,
}

/// The domain repository. Every backend passes [`crate::conformance::domain_store`].
#[async_trait]
pub trait DomainStore: Send + Sync + 'static {
    /// Adds domains to a site in one transaction (all or none). A name any
    /// site has already is a `Conflict` naming that site; an unknown site is
    /// `NotFound`. A branch need not exist yet (the domain serves once the
    /// branch has a deploy). The site's first domain becomes its primary.
    async fn add_domains(
        &self,
        site: &SiteName,
        domains: &[NewDomain],
        now: UnixMillis,
    ) -> Result<Vec<DomainRecord>, StoreError>;
    /// Domains of one site, or of every site, by site then name.
    async fn domains(&self, site: Option<&SiteName>) -> Result<Vec<DomainRecord>, StoreError>;
    /// One domain, whichever site has it.
    async fn domain(&self, name: &str) -> Result<Option<DomainRecord>, StoreError>;
    /// Removes a site's domain and the `www` twin added with it; `NotFound`
    /// when the site has no such domain. When the primary goes, the oldest
    /// remaining domain becomes the primary. Returns the names removed.
    async fn remove_domain(&self, site: &SiteName, name: &str) -> Result<Vec<String>, StoreError>;
    /// Makes a site's domain its primary (the others stop being it).
    async fn set_primary(&self, site: &SiteName, name: &str) -> Result<(), StoreError>;
    /// Sets a domain's state, with the reason and hint (cleared when `None`).
    async fn set_domain_state(
        &self,
        name: &str,
        state: DomainState,
        reason: Option<&str>,
        hint: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Notes that the name was seen reaching this installation (`by`:
    /// `http`, `dns`, `upload`); a domain pending verification (or failed)
    /// moves to `issuing`, with reason and hint cleared.
    async fn mark_verified(&self, name: &str, by: &str, now: UnixMillis) -> Result<(), StoreError>;
    /// A site's HTTPS settings (the defaults when never set).
    async fn site_tls(&self, site: &SiteName) -> Result<SiteTls, StoreError>;
    /// Every site's HTTPS settings that differ from the defaults.
    async fn all_site_tls(&self) -> Result<Vec<(SiteName, SiteTls)>, StoreError>;
    /// Sets a site's HTTPS settings.
    async fn set_site_tls(&self, site: &SiteName, tls: &SiteTls) -> Result<(), StoreError>;
    /// Stores a certificate (once: storing the same id again is harmless)
    /// and makes each named domain serve it (`active`, verified by
    /// `verified_by` if it was not verified). `NotFound` when a named domain
    /// does not exist; nothing is kept then.
    async fn store_certificate(
        &self,
        cert: &CertificateRecord,
        domains: &[String],
        verified_by: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// One certificate.
    async fn certificate(&self, id: &str) -> Result<Option<CertificateRecord>, StoreError>;
    /// Every certificate some domain serves, by id.
    async fn certificates_in_use(&self) -> Result<Vec<CertificateRecord>, StoreError>;
    /// Deletes certificates no domain serves. Returns how many.
    async fn prune_certificates(&self) -> Result<u64, StoreError>;
    /// Sets (or with `None` clears) the HTTP-01 challenge a domain answers.
    /// `NotFound` when there is no such domain.
    async fn set_challenge(&self, name: &str, challenge: Option<&AcmeChallenge>) -> Result<(), StoreError>;
    /// Records a failed order: the count in a row and when to try again.
    /// Storing a certificate resets both.
    async fn record_order_failure(
        &self,
        name: &str,
        attempts: u32,
        next_attempt_at: Option<UnixMillis>,
    ) -> Result<(), StoreError>;
    /// The sealed credentials of the ACME account at `directory`, if any.
    async fn acme_account(&self, directory: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores the account for `directory` unless one is there already, and
    /// returns the one stored (so two nodes creating one at once end up
    /// using the same).
    async fn put_acme_account(&self, directory: &str, sealed: &[u8], now: UnixMillis) -> Result<Vec<u8>, StoreError>;
    /// Takes (or, for its holder, extends) the lease `name` until
    /// `now + ttl_ms`: `true` when `owner` holds it now. A lease whose time
    /// has passed goes to whoever asks.
    async fn take_lease(&self, name: &str, owner: &str, now: UnixMillis, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Gives up the lease `name` if `owner` holds it.
    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError>;
    /// The base domain's certificates and orders, by pattern.
    async fn base_certificates(&self) -> Result<Vec<BaseCertificate>, StoreError>;
    /// Stores a certificate (once) and makes `pattern` serve it, clearing
    /// any order backoff.
    async fn store_base_certificate(
        &self,
        pattern: &str,
        cert: &CertificateRecord,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Records a failed order of `pattern`'s certificate (keeping the one it
    /// serves, if any).
    async fn record_base_failure(
        &self,
        pattern: &str,
        attempts: u32,
        next_attempt_at: Option<UnixMillis>,
        reason: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Forgets `pattern` (its certificate goes with the next prune):
    /// whether it was there.
    async fn remove_base_certificate(&self, pattern: &str) -> Result<bool, StoreError>;
    /// Adds a row for `pattern` (a base host asked for over HTTPS) with no
    /// certificate yet, unless there is one: whether it was added.
    async fn want_base_certificate(&self, pattern: &str, now: UnixMillis) -> Result<bool, StoreError>;
    /// Sets (or with `None` clears) the ACME challenge a base host answers.
    /// `NotFound` when there is no such row.
    async fn set_base_challenge(&self, pattern: &str, challenge: Option<&AcmeChallenge>) -> Result<(), StoreError>;
}

//! Custom domains through the API (issue 17): add a domain to a site (an
//! apex brings its `www` twin), choose the primary (the others redirect to
//! it), check that the name reaches this installation, upload a certificate
//! for it, and set the site's HTTPS redirect and HSTS. Every change reaches
//! the edges in the routing table.
//!
//! Who may reach it: holders of an API token, like every site setting.
//! Certificate keys arrive in a request, are sealed at once and never appear
//! in a response or a log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chanto_core::{BranchName, DomainName, SiteName, ValidationError};
use chanto_store::{
    CertificateRecord, CertificateSource, DomainRecord, DomainState, NewDomain, RoutingChange, SiteTls,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::ApiJson;
use crate::builds::sealed::Sealer;
use crate::{ApiError, Control};

/// Most domains one site may have.
pub const MAX_DOMAINS_PER_SITE: usize = 100;

/// Largest certificate upload body (a chain of ten certificates and a key fit many times).
pub const MAX_CERTIFICATE_BODY: usize = 256 << 10;

/// The path prefix the edge answers a domain's verification token on (under
/// the ACME challenge path, which is never redirected to HTTPS).
pub const VERIFY_PATH_PREFIX: &str = "/.well-known/acme-challenge/chanto-";

/// What domains need beyond the metadata store: the key that seals
/// certificate keys, the roots uploaded chains must lead to, and where
/// ownership checks connect.
pub struct DomainService {
    sealer: Sealer,
    trust: Arc<rustls::RootCertStore>,
    check_addr: Option<SocketAddr>,
    check_timeout: Duration,
}

impl std::fmt::Debug for DomainService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainService").field("roots", &self.trust.len()).field("check_addr", &self.check_addr).finish()
    }
}

impl DomainService {
    /// A service sealing keys with `sealer`, accepting uploaded chains that
    /// lead to a root in `trust`. Ownership checks resolve the name through
    /// DNS, or connect to `check_addr` when given (tests, or an
    /// installation whose edge sits behind a local load balancer).
    pub fn new(sealer: Sealer, trust: rustls::RootCertStore, check_addr: Option<SocketAddr>) -> Self {
        Self { sealer, trust: Arc::new(trust), check_addr, check_timeout: Duration::from_secs(5) }
    }

    /// The roots certificates (uploaded or issued) must lead to.
    pub(crate) fn trust(&self) -> &rustls::RootCertStore {
        &self.trust
    }

    /// A checked certificate as the store keeps it: its key sealed.
    pub(crate) fn certificate_record(
        &self,
        checked: &crate::certcheck::CheckedCertificate,
        source: CertificateSource,
        now: i64,
    ) -> CertificateRecord {
        CertificateRecord {
            id: checked.id.clone(),
            source,
            names: checked.names.clone(),
            chain_pem: checked.chain_pem.clone(),
            key_sealed: self.seal(checked.key_pem.as_bytes()),
            not_before: checked.not_before,
            not_after: checked.not_after,
            issuer: checked.issuer.clone(),
            created_at: now,
        }
    }

    /// Seals a secret (a key, ACME account credentials) for the store.
    pub(crate) fn seal(&self, plain: &[u8]) -> Vec<u8> {
        self.sealer.seal(plain)
    }

    /// Opens a sealed secret that was text.
    pub(crate) fn open(&self, sealed: &[u8]) -> Result<String, String> {
        self.sealer.open_string(sealed).map_err(|e| format!("a sealed secret does not open with DATA/secret.key: {e}"))
    }

    /// Opens a stored certificate's key (PEM).
    pub fn open_key(&self, cert: &CertificateRecord) -> Result<String, String> {
        self.sealer
            .open_string(&cert.key_sealed)
            .map_err(|e| format!("the key of certificate {} does not open with DATA/secret.key: {e}", cert.id))
    }
}

/// A domain to add.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    /// The hostname (Unicode names are stored as punycode).
    pub name: String,
    /// The branch it serves; absent: the production branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// For an apex (`example.com`): add `www.example.com` too (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub www: Option<bool>,
}

/// A DNS record to create so a domain reaches this installation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DnsRecord {
    /// The record's name.
    pub name: String,
    /// `CNAME`, or `A/AAAA` for an apex.
    pub kind: String,
    /// What it points to.
    pub value: String,
}

/// A certificate as the API shows it (never its key).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CertificateView {
    /// Its id (a hash of the chain).
    pub id: String,
    /// `acme` or `upload`.
    pub source: String,
    /// The names it covers.
    pub names: Vec<String>,
    /// Who issued it.
    pub issuer: String,
    /// Valid from (RFC 3339).
    pub not_before: String,
    /// Valid until (RFC 3339).
    pub not_after: String,
    /// Whole days until it expires (negative: expired).
    pub days_left: i64,
}

impl CertificateView {
    pub(crate) fn of(c: &CertificateRecord, now: i64) -> Self {
        Self {
            id: c.id.clone(),
            source: c.source.as_str().into(),
            names: c.names.clone(),
            issuer: c.issuer.clone(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            days_left: (c.not_after - now).div_euclid(86_400_000),
        }
    }
}

/// A domain as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DomainView {
    /// The hostname.
    pub name: String,
    /// The site it serves.
    pub site: String,
    /// The branch it serves; absent: production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Whether it is the site's primary domain (the others redirect to it).
    pub primary: bool,
    /// `pending_verification`, `issuing`, `active` or `failed`.
    pub state: String,
    /// What went wrong, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to do next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// When the name was seen reaching this installation (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
    /// How: `http` or `upload`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    /// The certificate it serves over HTTPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateView>,
    /// Its URL.
    pub url: String,
    /// The DNS record that makes it reach this installation.
    pub dns: DnsRecord,
    /// The path the edge answers with `verify_token`, which `verify` fetches.
    pub verify_path: String,
    /// The token.
    pub verify_token: String,
}

/// A certificate and key to upload, PEM.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadCertificate {
    /// The chain, leaf first (`fullchain.pem`).
    pub chain_pem: String,
    /// The private key (PKCS#8, SEC1 or PKCS#1; not encrypted).
    pub key_pem: String,
}

/// An upload's answer: the domain, and warnings (a certificate close to its end).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadedCertificate {
    /// The domain, now serving the certificate.
    pub domain: DomainView,
    /// Things to know ("expires in 5 days").
    pub warnings: Vec<String>,
}

/// A site's HTTPS settings; in a `PUT`, absent fields stay as they are.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Redirect plain HTTP to HTTPS on names with an active certificate (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// `Strict-Transport-Security` max-age in seconds; 0: no header (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts_max_age: Option<u64>,
    /// HSTS `includeSubDomains`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts_include_subdomains: Option<bool>,
    /// HSTS `preload` (needs max-age ≥ 31536000 and includeSubDomains).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts_preload: Option<bool>,
}

impl TlsSettings {
    fn of(t: &SiteTls) -> Self {
        Self {
            https_redirect: Some(t.https_redirect),
            hsts_max_age: Some(t.hsts_max_age),
            hsts_include_subdomains: Some(t.hsts_include_subdomains),
            hsts_preload: Some(t.hsts_preload),
        }
    }
}

/// Longest HSTS max-age accepted: two years, what browsers' preload lists ask for.
pub const MAX_HSTS_MAX_AGE: u64 = 2 * 365 * 86_400;

pub(crate) fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

impl Control {
    pub(crate) fn domain_service(&self) -> Result<&Arc<DomainService>, ApiError> {
        self.domains.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "domains_disabled",
                "certificates are not enabled on this server (it has no secret key to seal them with)",
            )
        })
    }

    /// Turns on certificate uploads and ownership checks.
    pub fn enable_domains(&self, service: DomainService) {
        let _ = self.domains.set(Arc::new(service));
    }

    /// The sealer of stored secrets (the domain service always has it), or 503.
    pub(crate) fn sealer(&self) -> Result<Sealer, ApiError> {
        self.domain_keys().map(|d| d.sealer.clone()).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "this server holds no sealing key, so it cannot read or write secrets",
            )
        })
    }

    /// The service that opens certificate keys, when enabled.
    pub fn domain_keys(&self) -> Option<Arc<DomainService>> {
        self.domains.get().cloned()
    }

    fn domain_view(&self, d: DomainRecord, cert: Option<&CertificateRecord>, now: i64) -> DomainView {
        let apex = d.name.parse::<DomainName>().is_ok_and(|n| n.is_apex());
        let target = self.config.url_for(d.site.as_str());
        let target_host = target.split("://").nth(1).unwrap_or(&target).split([':', '/']).next().unwrap_or("");
        let dns = if apex {
            DnsRecord {
                name: d.name.clone(),
                kind: "A/AAAA".into(),
                value: format!("the addresses {target_host} resolves to (an apex cannot be a CNAME)"),
            }
        } else {
            DnsRecord { name: d.name.clone(), kind: "CNAME".into(), value: format!("{target_host}.") }
        };
        let scheme = if d.state == DomainState::Active { "https" } else { "http" };
        DomainView {
            url: format!("{scheme}://{}/", d.name),
            verify_path: format!("{VERIFY_PATH_PREFIX}{}", d.verify_token),
            verify_token: d.verify_token,
            dns,
            name: d.name,
            site: d.site.to_string(),
            branch: d.branch.map(|b| b.to_string()),
            primary: d.primary,
            state: d.state.as_str().into(),
            reason: d.reason,
            hint: d.hint,
            verified_at: d.verified_at.map(rfc3339),
            verified_by: d.verified_by,
            certificate: cert.map(|c| CertificateView::of(c, now)),
        }
    }

    async fn domain_views(&self, domains: Vec<DomainRecord>) -> Result<Vec<DomainView>, ApiError> {
        let now = chanto_store::now_millis();
        let mut out = Vec::with_capacity(domains.len());
        for d in domains {
            let cert = match &d.cert_id {
                Some(id) => self.meta.certificate(id).await?,
                None => None,
            };
            out.push(self.domain_view(d, cert.as_ref(), now));
        }
        Ok(out)
    }

    /// A site's domains.
    pub async fn list_domains(&self, site: &SiteName) -> Result<Vec<DomainView>, ApiError> {
        self.site(site).await?;
        let domains = self.meta.domains(Some(site)).await?;
        self.domain_views(domains).await
    }

    /// A site's domain by name (`NotFound` when the site does not have it).
    async fn site_domain(&self, site: &SiteName, name: &str) -> Result<(DomainName, DomainRecord), ApiError> {
        self.site(site).await?;
        let name = DomainName::parse(name).map_err(ApiError::from)?;
        match self.meta.domain(name.as_str()).await? {
            Some(d) if d.site == *site => Ok((name, d)),
            _ => Err(ApiError::not_found(format!("domain {name} of site {site}"))),
        }
    }

    /// Adds a domain (and an apex's `www` twin) to a site and publishes it:
    /// the edges serve it over HTTP at once.
    pub async fn add_domain(&self, site: &SiteName, req: &AddDomain) -> Result<Vec<DomainView>, ApiError> {
        self.site(site).await?;
        let name = DomainName::parse(&req.name).map_err(|e| ApiError::from(e).field("name"))?;
        self.check_claimable(&name)?;
        let branch = req
            .branch
            .as_deref()
            .map(|b| b.parse::<BranchName>().map_err(|e| ApiError::from(e).field("branch")))
            .transpose()?;
        let mut names = vec![(name.clone(), None)];
        if req.www.unwrap_or(true)
            && let Some(twin) = name.www_twin()
            && self.meta.domain(twin.as_str()).await?.is_none()
        {
            names.push((twin, Some(name.to_string())));
        }
        let existing = self.meta.domains(Some(site)).await?.len();
        if existing + names.len() > MAX_DOMAINS_PER_SITE {
            return Err(ValidationError::new(
                "name",
                format!("site {site} has {existing} domains; a site has at most {MAX_DOMAINS_PER_SITE}"),
            )
            .into());
        }
        let new: Vec<NewDomain> = names
            .into_iter()
            .map(|(n, twin_of)| NewDomain {
                name: n.to_string(),
                branch: branch.clone(),
                twin_of,
                verify_token: hex::encode(chanto_store::random_bytes::<16>()),
            })
            .collect();
        let added = match self.meta.add_domains(site, &new, chanto_store::now_millis()).await {
            Err(chanto_store::StoreError::Conflict(m)) => return Err(conflict(m).field("name")),
            other => other?,
        };
        self.publish_routing(RoutingChange::site(site)).await?;
        tracing::info!(site = %site, domains = ?new.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), "domains added");
        self.domain_views(added).await
    }

    /// Refuses names this installation serves by itself, and names nobody can own.
    pub(crate) fn check_claimable(&self, name: &DomainName) -> Result<(), ApiError> {
        let refuse = |msg: String| Err(ValidationError::new("name", msg).into());
        if name.is_wildcard() {
            return refuse(format!(
                "{name} is a wildcard: add each name (a wildcard certificate can still be uploaded for them)"
            ));
        }
        for own in std::iter::once(&self.config.base_domain).chain(self.config.preview_domain.as_ref()) {
            if name.as_str() == own || name.is_under(own) {
                return refuse(format!(
                    "{name} is under {own}, which this server serves by itself (`<site>.{own}`): add a domain of your own"
                ));
            }
        }
        if name.is_public_suffix() {
            return refuse(format!("{name} is a public suffix (like com or co.uk): no one site can own it"));
        }
        Ok(())
    }

    /// Removes a site's domain (and the `www` twin added with it).
    pub async fn remove_domain(&self, site: &SiteName, name: &str) -> Result<Vec<String>, ApiError> {
        let (name, _) = self.site_domain(site, name).await?;
        let removed = self.meta.remove_domain(site, name.as_str()).await?;
        self.meta.prune_certificates().await?;
        self.publish_routing(RoutingChange::site(site)).await?;
        tracing::info!(site = %site, removed = ?removed, "domains removed");
        Ok(removed)
    }

    /// Makes a domain the site's primary.
    pub async fn set_primary_domain(&self, site: &SiteName, name: &str) -> Result<DomainView, ApiError> {
        let (name, _) = self.site_domain(site, name).await?;
        self.meta.set_primary(site, name.as_str()).await?;
        self.publish_routing(RoutingChange::site(site)).await?;
        self.one_domain(site, name.as_str()).await
    }

    async fn one_domain(&self, site: &SiteName, name: &str) -> Result<DomainView, ApiError> {
        let (_, d) = self.site_domain(site, name).await?;
        Ok(self.domain_views(vec![d]).await?.remove(0))
    }

    /// Checks that a domain reaches this installation: fetches
    /// `http://NAME/.well-known/acme-challenge/chanto-TOKEN` (no redirects
    /// followed, 5 s, at most 1 KiB read) and compares the body with the
    /// domain's token. Success marks it verified; failure keeps it pending
    /// with what was seen and what to do.
    pub async fn verify_domain(&self, site: &SiteName, name: &str) -> Result<DomainView, ApiError> {
        let (name, d) = self.site_domain(site, name).await?;
        let service = self.domain_service()?.clone();
        match check_http(&service, name.as_str(), &d.verify_token).await {
            Ok(()) => {
                self.meta.mark_verified(name.as_str(), "http", chanto_store::now_millis()).await?;
                if d.cert_id.is_some() && d.attempts > 0 && self.acme_enabled() {
                    // A renewal that keeps failing: verifying again retries at once.
                    self.meta.record_order_failure(name.as_str(), d.attempts, None).await?;
                }
                if d.cert_id.is_none() {
                    let hint = if self.acme_enabled() {
                        // Verifying again is the way to retry at once.
                        self.meta.record_order_failure(name.as_str(), d.attempts, None).await?;
                        format!(
                            "{name} reaches this installation: a certificate is being ordered; `chanto domains list` shows when it is active"
                        )
                    } else {
                        format!(
                            "{name} reaches this installation. This server orders no certificates (start it with --https, or --acme-directory URL): upload one with `chanto certs upload --domain {name} --cert FULLCHAIN.pem --key KEY.pem`; until then it is served over plain HTTP"
                        )
                    };
                    self.meta.set_domain_state(name.as_str(), DomainState::Issuing, None, Some(&hint)).await?;
                }
                tracing::info!(site = %site, domain = %name, "domain verified");
            }
            Err(reason) => {
                let target = self.config.url_for(site.as_str());
                let state =
                    if d.state == DomainState::Active { DomainState::Active } else { DomainState::PendingVerification };
                self.meta
                    .set_domain_state(
                        name.as_str(),
                        state,
                        Some(&reason),
                        Some(&format!(
                            "point {name} at this installation's edge (a CNAME to the host of {target}, or A/AAAA records for an apex), wait for DNS to update, then run `chanto domains verify {name} --site {site}`"
                        )),
                    )
                    .await?;
                tracing::info!(site = %site, domain = %name, reason = %reason, "domain not verified");
            }
        }
        self.publish_routing(RoutingChange::site(site)).await?;
        self.wake_acme();
        self.one_domain(site, name.as_str()).await
    }

    /// Stores an uploaded certificate for a site's domain after checking it
    /// (PEM, key match, validity, names, chain), seals its key, and
    /// publishes it: the edges serve it by SNI. The site's other domains
    /// that it covers and that have no certificate get it too.
    pub async fn upload_certificate(
        &self,
        site: &SiteName,
        name: &str,
        req: &UploadCertificate,
    ) -> Result<UploadedCertificate, ApiError> {
        let (name, _) = self.site_domain(site, name).await?;
        let service = self.domain_service()?.clone();
        let now = chanto_store::now_millis();
        let checked = crate::certcheck::check_upload(
            req.chain_pem.as_bytes(),
            req.key_pem.as_bytes(),
            name.as_str(),
            &service.trust,
            now,
        )
        .map_err(|p| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, p.code, p.message))?;
        let record = service.certificate_record(&checked, CertificateSource::Upload, now);
        // The site's other names the certificate covers and that have none
        // yet (an apex's www twin, say) get it too.
        let mut names = vec![name.to_string()];
        for other in self.meta.domains(Some(site)).await? {
            if other.name != name.as_str()
                && other.cert_id.is_none()
                && record.names.iter().any(|san| crate::certcheck::name_covers(san, &other.name))
            {
                names.push(other.name);
            }
        }
        self.meta.store_certificate(&record, &names, "upload", now).await?;
        self.meta.prune_certificates().await?;
        self.publish_routing(RoutingChange::site(site)).await?;
        tracing::info!(site = %site, domain = %name, certificate = %record.id, not_after = %rfc3339(record.not_after), "certificate uploaded");
        Ok(UploadedCertificate { domain: self.one_domain(site, name.as_str()).await?, warnings: checked.warnings })
    }

    /// A site's HTTPS settings.
    pub async fn tls_settings(&self, site: &SiteName) -> Result<TlsSettings, ApiError> {
        self.site(site).await?;
        Ok(TlsSettings::of(&self.meta.site_tls(site).await?))
    }

    /// Changes a site's HTTPS settings (absent fields stay) and publishes them.
    pub async fn set_tls_settings(&self, site: &SiteName, req: &TlsSettings) -> Result<TlsSettings, ApiError> {
        self.site(site).await?;
        let old = self.meta.site_tls(site).await?;
        let new = SiteTls {
            https_redirect: req.https_redirect.unwrap_or(old.https_redirect),
            hsts_max_age: req.hsts_max_age.unwrap_or(old.hsts_max_age),
            hsts_include_subdomains: req.hsts_include_subdomains.unwrap_or(old.hsts_include_subdomains),
            hsts_preload: req.hsts_preload.unwrap_or(old.hsts_preload),
        };
        if new.hsts_max_age > MAX_HSTS_MAX_AGE {
            return Err(ValidationError::new(
                "hsts_max_age",
                format!(
                    "{} s is more than two years ({MAX_HSTS_MAX_AGE} s), the longest chanto sends",
                    new.hsts_max_age
                ),
            )
            .into());
        }
        if new.hsts_preload && (new.hsts_max_age < 31_536_000 || !new.hsts_include_subdomains) {
            return Err(ValidationError::new(
                "hsts_preload",
                "preload needs hsts_max_age of at least 31536000 (a year) and hsts_include_subdomains, as browsers' preload lists require",
            )
            .into());
        }
        self.meta.set_site_tls(site, &new).await?;
        self.publish_routing(RoutingChange::site(site)).await?;
        tracing::info!(site = %site, https_redirect = new.https_redirect, hsts_max_age = new.hsts_max_age, "HTTPS settings changed");
        Ok(TlsSettings::of(&new))
    }
}

/// Fetches the domain's verification path over plain HTTP and compares the
/// answer with `token`. The error says what was seen.
async fn check_http(service: &DomainService, name: &str, token: &str) -> Result<(), String> {
    let url = format!("http://{name}{VERIFY_PATH_PREFIX}{token}");
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(service.check_timeout)
        .user_agent(concat!("chanto/", env!("CARGO_PKG_VERSION"), " (domain check)"));
    if let Some(addr) = service.check_addr {
        builder = builder.resolve(name, addr);
    }
    let client = builder.build().map_err(|e| format!("could not make an HTTP client: {e}"))?;
    let mut resp = client.get(&url).send().await.map_err(|e| {
        let mut msg = format!("GET {url} failed: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        msg
    })?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: reading the answer: {e}"))? {
        body.extend_from_slice(&chunk);
        if body.len() > 1024 {
            break;
        }
    }
    if !status.is_success() {
        return Err(format!(
            "GET {url} answered {status}, not this installation's token: the name reaches another server"
        ));
    }
    let seen = String::from_utf8_lossy(&body);
    if !constant_time_eq(seen.trim().as_bytes(), token.as_bytes()) {
        return Err(format!(
            "GET {url} answered 200 with something other than this installation's token: the name reaches another server"
        ));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/domains", tag = "domains", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")),
    responses((status = 200, body = Vec<DomainView>), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
) -> Result<Json<Vec<DomainView>>, ApiError> {
    Ok(Json(c.list_domains(&site.parse()?).await?))
}

#[utoipa::path(post, path = "/api/v1/sites/{site}/domains", tag = "domains", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")), request_body = AddDomain,
    responses((status = 201, body = Vec<DomainView>, description = "The domains added (an apex brings its www twin)"),
        (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody, description = "Another site has the name: the message names it")))]
pub(crate) async fn add(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    ApiJson(req): ApiJson<AddDomain>,
) -> Result<(StatusCode, Json<Vec<DomainView>>), ApiError> {
    Ok((StatusCode::CREATED, Json(c.add_domain(&site.parse()?, &req).await?)))
}

/// The names a removal took away.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RemovedDomains {
    /// The names removed (the domain and its `www` twin).
    pub removed: Vec<String>,
}

#[utoipa::path(delete, path = "/api/v1/sites/{site}/domains/{name}", tag = "domains", security(("token" = [])),
    params(("site" = String, Path, description = "Site name"), ("name" = String, Path, description = "The domain")),
    responses((status = 200, body = RemovedDomains), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn remove(
    State(c): State<Arc<Control>>,
    Path((site, name)): Path<(String, String)>,
) -> Result<Json<RemovedDomains>, ApiError> {
    Ok(Json(RemovedDomains { removed: c.remove_domain(&site.parse()?, &name).await? }))
}

#[utoipa::path(post, path = "/api/v1/sites/{site}/domains/{name}/verify", tag = "domains", security(("token" = [])),
    params(("site" = String, Path, description = "Site name"), ("name" = String, Path, description = "The domain")),
    responses((status = 200, body = DomainView, description = "The domain with the check's outcome in state, reason and hint"),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn verify(
    State(c): State<Arc<Control>>,
    Path((site, name)): Path<(String, String)>,
) -> Result<Json<DomainView>, ApiError> {
    Ok(Json(c.verify_domain(&site.parse()?, &name).await?))
}

#[utoipa::path(put, path = "/api/v1/sites/{site}/domains/{name}/primary", tag = "domains", security(("token" = [])),
    params(("site" = String, Path, description = "Site name"), ("name" = String, Path, description = "The domain")),
    responses((status = 200, body = DomainView), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn primary(
    State(c): State<Arc<Control>>,
    Path((site, name)): Path<(String, String)>,
) -> Result<Json<DomainView>, ApiError> {
    Ok(Json(c.set_primary_domain(&site.parse()?, &name).await?))
}

#[utoipa::path(put, path = "/api/v1/sites/{site}/domains/{name}/certificate", tag = "domains", security(("token" = [])),
    params(("site" = String, Path, description = "Site name"), ("name" = String, Path, description = "The domain")),
    request_body = UploadCertificate,
    responses((status = 200, body = UploadedCertificate),
        (status = 404, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "The certificate was refused; `code` says why: cert_pem_invalid, key_pem_invalid, key_unsupported, key_mismatch, cert_expired, cert_not_yet_valid, names_do_not_cover, chain_incomplete, chain_invalid")))]
pub(crate) async fn upload(
    State(c): State<Arc<Control>>,
    Path((site, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<UploadCertificate>,
) -> Result<Json<UploadedCertificate>, ApiError> {
    Ok(Json(c.upload_certificate(&site.parse()?, &name, &req).await?))
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/tls", tag = "domains", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")),
    responses((status = 200, body = TlsSettings), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_tls(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
) -> Result<Json<TlsSettings>, ApiError> {
    Ok(Json(c.tls_settings(&site.parse()?).await?))
}

#[utoipa::path(put, path = "/api/v1/sites/{site}/tls", tag = "domains", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")), request_body = TlsSettings,
    responses((status = 200, body = TlsSettings), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn put_tls(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    ApiJson(req): ApiJson<TlsSettings>,
) -> Result<Json<TlsSettings>, ApiError> {
    Ok(Json(c.set_tls_settings(&site.parse()?, &req).await?))
}

//! Automatic certificates (issue 17): the loop that orders a certificate
//! from the ACME CA for every verified custom domain that has none, renews
//! the ones it ordered inside the CA's suggested window when the CA offers
//! renewal information (ARI, RFC 9773) and otherwise when a third of their
//! lifetime is left, and backs off after failures.
//!
//! Who may start an order: nobody directly. Only domains a user added *and*
//! that were seen reaching this installation (`verified_at`) are ever
//! ordered, so names in SNI or `Host` that nobody added create nothing. One
//! node orders a name at a time (a lease in the metadata store, re-checked
//! before the certificate is stored). The HTTP-01 challenge goes into the
//! store and out to every edge through the routing table, and the CA is told
//! to check only once the edges have it (or `edge_wait` has passed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chanto_core::SiteName;
use chanto_store::{
    AcmeChallenge, CertificateRecord, CertificateSource, DomainRecord, DomainState, RoutingChange, StoreError,
    now_millis,
};

use crate::Control;
use crate::acme::{AcmeAccount, AcmeConfig, AlpnCert, ChallengeKind, Challenges};

/// How long a node holds a name's order lease before another may take it
/// (it is renewed before each step that matters).
pub(crate) const LEASE_MS: i64 = 10 * 60 * 1000;
/// Orders started in one pass, at most.
const ORDERS_PER_PASS: usize = 4;
/// The longest the loop sleeps when nothing wakes it.
const PASS_EVERY: Duration = Duration::from_secs(60);
/// The shortest pause between passes.
const PASS_MIN: Duration = Duration::from_secs(1);
/// Certificates whose renewal window is asked for in one pass, at most.
const ARI_PER_PASS: usize = 16;
/// Bounds on how long a renewal window is trusted before it is asked for
/// again (the CA's `Retry-After`, clamped: RFC 9773 suggests hours).
const ARI_ASK_MIN: Duration = Duration::from_secs(3600);
const ARI_ASK_MAX: Duration = Duration::from_secs(24 * 3600);
/// After a failed question, ask again after this.
const ARI_ASK_AFTER_FAILURE: Duration = Duration::from_secs(3600);

/// What the CA said about one certificate's renewal (kept in memory: each
/// node asks for itself, at the pace the CA sets).
#[derive(Debug, Clone, Copy)]
struct AriAnswer {
    /// When to renew (inside the CA's window); `None`: the CA has not said.
    renew_at: Option<i64>,
    /// When to ask again.
    ask_at: i64,
}

/// When certificates are due for renewal by the CA's say (ARI), by
/// certificate id: what [`due_at`] uses instead of one third of the lifetime.
pub(crate) type AriTimes = HashMap<String, i64>;

/// The ACME settings of this control plane, and what it keeps between orders.
pub struct AcmeOrders {
    pub(crate) config: AcmeConfig,
    /// Who holds leases: this node and run.
    pub(crate) owner: String,
    /// How long one order may take, end to end.
    pub(crate) deadline: Duration,
    wake: tokio::sync::Notify,
    account: tokio::sync::Mutex<Option<AcmeAccount>>,
    /// Renewal windows asked for, by certificate id.
    ari: std::sync::Mutex<HashMap<String, AriAnswer>>,
    /// Set once the CA's directory shows it offers no renewal information.
    ari_unsupported: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for AcmeOrders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeOrders").field("directory", &self.config.directory_url).finish_non_exhaustive()
    }
}

impl AcmeOrders {
    /// Orders from the CA `config` names, as `owner` (node and run).
    pub fn new(config: AcmeConfig, owner: &chanto_store::Owner) -> Self {
        Self {
            config,
            owner: format!("{}/{}", owner.node, owner.run),
            deadline: Duration::from_secs(180),
            wake: tokio::sync::Notify::new(),
            account: tokio::sync::Mutex::new(None),
            ari: Default::default(),
            ari_unsupported: Default::default(),
        }
    }

    /// The CA's directory URL.
    pub fn directory(&self) -> &str {
        &self.config.directory_url
    }

    /// The renewal times the CA gave for the certificates it still has a
    /// say on.
    pub(crate) fn ari_times(&self) -> AriTimes {
        let ari = self.ari.lock().expect("ari lock");
        ari.iter().filter_map(|(id, a)| Some((id.clone(), a.renew_at?))).collect()
    }
}

/// What an order pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Names that got a certificate.
    pub issued: Vec<String>,
    /// Names whose order failed, with why.
    pub failed: Vec<(String, String)>,
    /// Names another node holds the lease of.
    pub skipped: Vec<String>,
    /// When the next name falls due (a renewal, the end of a backoff), if
    /// before the next regular pass.
    pub next_due: Option<i64>,
}

/// Publishes HTTP-01 and TLS-ALPN-01 challenges through the store and the
/// routing table, DNS-01 ones through the operator's hook.
pub(crate) struct RoutedChallenges<'a> {
    pub(crate) control: &'a Control,
    /// The site whose routing carries HTTP-01 and TLS-ALPN-01 challenges
    /// (`None`: the base domain's own names, whose challenges ride in the
    /// table's `base_challenges`).
    pub(crate) site: Option<SiteName>,
    pub(crate) dns_hook: Option<&'a std::path::Path>,
    /// The TXT records the hook published, by name (to clean them up).
    pub(crate) txt: std::sync::Mutex<HashMap<String, (String, String)>>,
}

impl RoutedChallenges<'_> {
    /// Stores the challenge on the domain and sends it to every edge.
    async fn put(&self, name: &str, challenge: &AcmeChallenge) -> Result<(), String> {
        self.set(name, Some(challenge)).await.map_err(|e| format!("storing the challenge: {e}"))?;
        self.publish().await
    }

    /// Stores (or clears) `name`'s challenge: a custom domain's row, or a
    /// base host's.
    async fn set(&self, name: &str, challenge: Option<&AcmeChallenge>) -> Result<(), StoreError> {
        match self.site {
            Some(_) => self.control.meta.set_challenge(name, challenge).await,
            None => self.control.meta.set_base_challenge(name, challenge).await,
        }
    }

    async fn publish(&self) -> Result<(), String> {
        let change = match &self.site {
            Some(site) => RoutingChange::site(site),
            None => RoutingChange::All,
        };
        let version =
            self.control.publish_routing(change).await.map_err(|e| format!("publishing the challenge: {e}"))?;
        // The CA may check from anywhere: wait until the edges have it.
        let rollout = self.control.edge_rollout(version).await;
        tracing::debug!(version, ?rollout, "ACME challenge published");
        Ok(())
    }
}

#[async_trait]
impl Challenges for RoutedChallenges<'_> {
    async fn put_http01(&self, name: &str, token: &str, key_authorization: &str) -> Result<(), String> {
        let challenge =
            AcmeChallenge { token: token.to_owned(), key_authorization: key_authorization.to_owned(), alpn_pem: None };
        self.put(name, &challenge).await
    }

    async fn put_tls_alpn01(
        &self,
        name: &str,
        token: &str,
        key_authorization: &str,
        cert: AlpnCert,
    ) -> Result<(), String> {
        let challenge = AcmeChallenge {
            token: token.to_owned(),
            key_authorization: key_authorization.to_owned(),
            alpn_pem: Some(format!("{}{}", cert.cert_pem, cert.key_pem)),
        };
        self.put(name, &challenge).await
    }

    async fn put_dns01(&self, name: &str, txt_name: &str, value: &str) -> Result<(), String> {
        let hook = self.dns_hook.ok_or("DNS-01 needs --acme-dns-hook: the program that publishes TXT records")?;
        // Remembered first: a hook cut short may have published it.
        self.txt.lock().expect("txt lock").insert(name.to_owned(), (txt_name.to_owned(), value.to_owned()));
        crate::acme_dns::run_hook(
            hook,
            crate::acme_dns::HookAction::Present,
            name,
            txt_name,
            value,
            crate::acme_dns::HOOK_TIMEOUT,
        )
        .await
    }

    async fn remove(&self, name: &str, _token: &str) {
        let published = self.txt.lock().expect("txt lock").remove(name);
        if let (Some(hook), Some((txt_name, value))) = (self.dns_hook, published) {
            use crate::acme_dns::{HOOK_TIMEOUT, HookAction, run_hook};
            if let Err(e) = run_hook(hook, HookAction::Cleanup, name, &txt_name, &value, HOOK_TIMEOUT).await {
                tracing::warn!(domain = %name, error = %e, "could not remove a DNS-01 TXT record; remove it by hand");
            }
            return;
        }
        if let Err(e) = self.set(name, None).await {
            tracing::warn!(domain = %name, error = %e, "could not remove an ACME challenge; it goes with the next order or certificate");
            return;
        }
        if let Err(e) = self.publish().await {
            tracing::warn!(domain = %name, error = %e, "could not publish the removal of an ACME challenge");
        }
    }
}

/// A certificate the CA issued for `name`, checked as an upload would be
/// (chain, key, names, validity), its key sealed, ready to store.
pub(crate) fn acme_record(
    service: &crate::domains::DomainService,
    issued: &crate::acme::Issued,
    name: &str,
    now: i64,
) -> Result<CertificateRecord, String> {
    let checked = crate::certcheck::check_upload(
        issued.chain_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        name,
        service.trust(),
        now,
    )
    .map_err(|p| format!("the CA's certificate does not check out: {}", p.message))?;
    Ok(service.certificate_record(&checked, CertificateSource::Acme, now))
}

/// When the certificate `id` (one of `certs`) is due for renewal: at the
/// time the CA gave (`ari`), else with a third of its lifetime left. `None`:
/// not a certificate this loop renews (uploaded ones are the user's).
pub(crate) fn renewal_at(id: &str, certs: &HashMap<String, CertificateRecord>, ari: &AriTimes) -> Option<i64> {
    let c = certs.get(id).filter(|c| c.source == CertificateSource::Acme)?;
    Some(ari.get(id).copied().unwrap_or_else(|| chanto_core::domain::renewal_due(c.not_before, c.not_after)))
}

/// When `d` needs an order: verified, after any backoff, and at once
/// without a certificate, or when a certificate this loop ordered is due
/// for renewal ([`renewal_at`]). `None`: never (as things stand).
fn due_at(d: &DomainRecord, certs: &HashMap<String, CertificateRecord>, ari: &AriTimes) -> Option<i64> {
    if d.verified_at.is_none() || d.name.starts_with("*.") {
        return None;
    }
    let wanted = match &d.cert_id {
        None => i64::MIN,
        Some(id) => renewal_at(id, certs, ari)?,
    };
    Some(wanted.max(d.next_attempt_at.unwrap_or(i64::MIN)))
}

/// Whether `d` needs an order now (see [`due_at`]).
fn wants_order(d: &DomainRecord, certs: &HashMap<String, CertificateRecord>, ari: &AriTimes, now: i64) -> bool {
    due_at(d, certs, ari).is_some_and(|t| t <= now)
}

impl Control {
    /// Turns on automatic certificates from the CA in `orders` (once).
    pub fn enable_acme(&self, orders: AcmeOrders) {
        let _ = self.acme.set(Arc::new(orders));
    }

    /// Whether this control plane orders certificates.
    pub fn acme_enabled(&self) -> bool {
        self.acme.get().is_some()
    }

    /// Makes the order loop look for work now (a domain was verified).
    pub fn wake_acme(&self) {
        if let Some(a) = self.acme.get() {
            a.wake.notify_one();
        }
    }

    /// Orders until stopped: a pass at start, when woken and every minute.
    pub async fn run_acme(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(orders) = self.acme.get().cloned() else { return };
        loop {
            let pause = match self.acme_pass().await {
                Ok(report) => {
                    if !(report.issued.is_empty() && report.failed.is_empty() && report.skipped.is_empty()) {
                        tracing::info!(issued = ?report.issued, failed = ?report.failed, skipped = ?report.skipped, "ACME pass");
                    }
                    // Sleep until the next name falls due, within bounds;
                    // after an order, look again at once (its certificate,
                    // or its backoff, sets the next time).
                    let worked = !(report.issued.is_empty() && report.failed.is_empty());
                    report
                        .next_due
                        .filter(|_| !worked)
                        .map(|t| Duration::from_millis(t.saturating_sub(now_millis()).max(0) as u64))
                        .unwrap_or(if worked { PASS_MIN } else { PASS_EVERY })
                        .clamp(PASS_MIN, PASS_EVERY)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ACME pass failed; trying again in a minute");
                    PASS_EVERY
                }
            };
            tokio::select! {
                _ = orders.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One pass: orders a certificate for each domain that wants one (at
    /// most a few), each under its lease.
    pub async fn acme_pass(&self) -> Result<PassReport, StoreError> {
        let mut report = PassReport::default();
        let Some(orders) = self.acme.get().cloned() else { return Ok(report) };
        let now = now_millis();
        let certs: HashMap<String, CertificateRecord> =
            self.meta.certificates_in_use().await?.into_iter().map(|c| (c.id.clone(), c)).collect();
        self.ask_renewal_windows(&orders, &certs, now).await;
        let ari = orders.ari_times();
        let domains = self.meta.domains(None).await?;
        report.next_due = domains.iter().filter_map(|d| due_at(d, &certs, &ari)).filter(|t| *t > now).min();
        let due: Vec<DomainRecord> =
            domains.into_iter().filter(|d| wants_order(d, &certs, &ari, now)).take(ORDERS_PER_PASS).collect();
        for d in due {
            let lease = format!("acme:{}", d.name);
            if !self.meta.take_lease(&lease, &orders.owner, now_millis(), LEASE_MS).await? {
                report.skipped.push(d.name);
                continue;
            }
            let outcome = self.order_one(&orders, &lease, &d).await;
            if let Err(e) = self.meta.release_lease(&lease, &orders.owner).await {
                tracing::warn!(domain = %d.name, error = %e, "could not release an ACME lease; it lapses on its own");
            }
            match outcome {
                Ok(true) => report.issued.push(d.name),
                Ok(false) => report.skipped.push(d.name),
                Err(why) => report.failed.push((d.name, why)),
            }
        }
        self.base_pass(&orders, &certs, &ari, &mut report).await?;
        Ok(report)
    }

    /// Asks the CA for the renewal window (ARI) of each certificate it
    /// issued whose last answer has run out (a few per pass), and forgets
    /// certificates no longer in use. Nothing here fails the pass: without
    /// an answer a certificate renews with a third of its lifetime left.
    async fn ask_renewal_windows(&self, orders: &AcmeOrders, certs: &HashMap<String, CertificateRecord>, now: i64) {
        let asking: Vec<&CertificateRecord> = {
            let mut ari = orders.ari.lock().expect("ari lock");
            ari.retain(|id, _| certs.contains_key(id));
            if orders.ari_unsupported.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            certs
                .values()
                .filter(|c| c.source == CertificateSource::Acme && c.not_after > now)
                .filter(|c| ari.get(&c.id).is_none_or(|a| a.ask_at <= now))
                .take(ARI_PER_PASS)
                .collect()
        };
        if asking.is_empty() {
            return;
        }
        let Some(service) = self.domain_keys() else { return };
        let account = match self.acme_account(orders, &service).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "no ACME account to ask for renewal windows with; asking later");
                return;
            }
        };
        for c in asking {
            let answer = match crate::acme::renewal_window(&account, &c.chain_pem).await {
                Ok(None) => {
                    tracing::debug!(directory = %orders.directory(), "the CA offers no renewal information (ARI)");
                    orders.ari_unsupported.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                Ok(Some(w)) => {
                    let seed = u64::from_le_bytes(blake3::hash(c.id.as_bytes()).as_bytes()[..8].try_into().unwrap());
                    let renew_at = chanto_core::domain::ari_renewal_at(w.start, w.end, seed, now);
                    let wait = w.ask_again.clamp(ARI_ASK_MIN, ARI_ASK_MAX);
                    tracing::info!(
                        certificate = %c.id, names = ?c.names,
                        renew_at = %crate::domains::rfc3339(renew_at),
                        explanation = w.explanation.as_deref().unwrap_or(""),
                        "the CA's renewal window (ARI)"
                    );
                    AriAnswer { renew_at: Some(renew_at), ask_at: now.saturating_add(wait.as_millis() as i64) }
                }
                Err(e) => {
                    tracing::warn!(certificate = %c.id, error = %e, "could not ask the CA for a renewal window; asking again in an hour");
                    let previous = orders.ari.lock().expect("ari lock").get(&c.id).and_then(|a| a.renew_at);
                    let wait = ARI_ASK_AFTER_FAILURE.as_millis() as i64;
                    AriAnswer { renew_at: previous, ask_at: now.saturating_add(wait) }
                }
            };
            orders.ari.lock().expect("ari lock").insert(c.id.clone(), answer);
        }
    }

    /// Orders one name under its lease. `Ok(false)`: nothing to do after all
    /// (another node finished it meanwhile).
    async fn order_one(&self, orders: &AcmeOrders, lease: &str, d: &DomainRecord) -> Result<bool, String> {
        // Re-read under the lease: another node may have finished it.
        let now = now_millis();
        let certs: HashMap<String, CertificateRecord> = match &d.cert_id {
            Some(id) => self.meta.certificate(id).await.ok().flatten().map(|c| (c.id.clone(), c)).into_iter().collect(),
            None => HashMap::new(),
        };
        let fresh = match self.meta.domain(&d.name).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(false),
            Err(e) => return Err(e.to_string()),
        };
        if !wants_order(&fresh, &certs, &orders.ari_times(), now) || fresh.cert_id != d.cert_id {
            return Ok(false);
        }
        let renewal = fresh.cert_id.is_some();
        if !renewal {
            let _ = self.meta.set_domain_state(&fresh.name, DomainState::Issuing, None, None).await;
        }
        tracing::info!(domain = %fresh.name, renewal, directory = %orders.directory(), "ordering a certificate");
        match self.issue_for(orders, lease, &fresh).await {
            Ok(id) => {
                tracing::info!(domain = %fresh.name, certificate = %id, "certificate issued and served");
                Ok(true)
            }
            Err(e) => {
                let attempts = fresh.attempts.saturating_add(1);
                let jitter = u16::from_le_bytes(chanto_store::random_bytes::<2>());
                let wait = chanto_core::domain::retry_backoff(attempts, jitter);
                let next = now_millis().saturating_add(wait.as_millis() as i64);
                let _ = self.meta.record_order_failure(&fresh.name, attempts, Some(next)).await;
                let again = humantime::format_duration(Duration::from_secs(wait.as_secs()));
                tracing::warn!(domain = %fresh.name, attempts, retry_in = %again, error = %e, "certificate order failed");
                // A certificate uploaded meanwhile stays what the name shows.
                let uploaded =
                    matches!(self.meta.domain(&fresh.name).await, Ok(Some(now)) if now.cert_id != fresh.cert_id);
                if !uploaded {
                    let check = match orders.config.challenge {
                        ChallengeKind::Http01 => {
                            format!("that {} points at this installation's edges on port 80", fresh.name)
                        }
                        ChallengeKind::TlsAlpn01 => {
                            format!("that {} points at this installation's edges on port 443", fresh.name)
                        }
                        ChallengeKind::Dns01 => {
                            format!("that the DNS hook publishes TXT _acme-challenge.{}", fresh.name)
                        }
                    };
                    let hint = format!(
                        "chanto tries again in {again} (attempt {attempts}); check {check}, then `chanto domains verify {} --site {}` to try at once",
                        fresh.name, fresh.site
                    );
                    // A failed renewal keeps the certificate it has (and
                    // the name active) and says why it is not renewed;
                    // once that certificate has expired the name has
                    // failed (browsers refuse it).
                    let expired = fresh
                        .cert_id
                        .as_ref()
                        .and_then(|id| certs.get(id))
                        .filter(|c| c.not_after <= now_millis())
                        .map(|c| crate::domains::rfc3339(c.not_after));
                    let (state, why) = match (renewal, expired) {
                        (true, Some(at)) => {
                            (DomainState::Failed, format!("the certificate expired at {at} and renewal failed: {e}"))
                        }
                        (true, None) => (DomainState::Active, format!("renewal failed: {e}")),
                        (false, _) => (DomainState::Failed, e.clone()),
                    };
                    let _ = self.meta.set_domain_state(&fresh.name, state, Some(&why), Some(&hint)).await;
                }
                self.certificate_failed(&fresh, &e, renewal).await;
                Err(e)
            }
        }
    }

    /// The order itself; the certificate's id once it is stored and published.
    async fn issue_for(&self, orders: &AcmeOrders, lease: &str, d: &DomainRecord) -> Result<String, String> {
        let service = self.domain_keys().ok_or("certificate keys cannot be sealed on this server")?;
        let account = self.acme_account(orders, &service).await?;
        let challenges = RoutedChallenges {
            control: self,
            site: Some(d.site.clone()),
            dns_hook: orders.config.dns_hook.as_deref(),
            txt: Default::default(),
        };
        let issued = crate::acme::issue(
            &account,
            std::slice::from_ref(&d.name),
            orders.config.challenge,
            &challenges,
            orders.deadline,
        )
        .await
        .map_err(|e| e.to_string())?;
        let now = now_millis();
        let record = acme_record(&service, &issued, &d.name, now)?;
        // Only the lease holder stores: a node that lost it (paused past
        // the lease) leaves the name to the one that has it now.
        if !self.meta.take_lease(lease, &orders.owner, now, LEASE_MS).await.map_err(|e| e.to_string())? {
            return Err("another node took over this order (the lease lapsed); its certificate wins".into());
        }
        self.meta
            .store_certificate(&record, std::slice::from_ref(&d.name), "http", now)
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.meta.prune_certificates().await {
            tracing::warn!(error = %e, "could not prune unused certificates");
        }
        self.publish_routing(RoutingChange::site(&d.site)).await.map_err(|e| e.to_string())?;
        Ok(record.id)
    }

    /// The ACME account: made once per directory and kept in the store
    /// (sealed); two nodes making one at once end up using the first stored.
    pub(crate) async fn acme_account(
        &self,
        orders: &AcmeOrders,
        service: &crate::domains::DomainService,
    ) -> Result<AcmeAccount, String> {
        let mut cached = orders.account.lock().await;
        if let Some(a) = cached.as_ref() {
            return Ok(a.clone());
        }
        let dir = orders.directory();
        let stored = match self.meta.acme_account(dir).await.map_err(|e| e.to_string())? {
            Some(sealed) => Some(service.open(&sealed)?),
            None => None,
        };
        let (account, credentials) =
            crate::acme::account(&orders.config, stored.as_deref()).await.map_err(|e| e.to_string())?;
        let account = if stored.as_deref() == Some(credentials.as_str()) {
            account
        } else {
            let sealed = service.seal(credentials.as_bytes());
            let kept = self.meta.put_acme_account(dir, &sealed, now_millis()).await.map_err(|e| e.to_string())?;
            if kept == sealed {
                account
            } else {
                let other = service.open(&kept)?;
                crate::acme::account(&orders.config, Some(&other)).await.map_err(|e| e.to_string())?.0
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }
}

//! Certificate notifications (issue 17): `certificate.failed` when an ACME order or renewal for a custom domain
//! fails, and `certificate.expiring` 30 and 7 days before a certificate a domain serves runs out while chanto is
//! not renewing it.
//!
//! When they are told (the rules are the pure functions below, with their tables):
//!
//! - **`certificate.failed`**: on the first failure of a streak, then only on failures after which the next retry
//!   is a whole day away ([`failure_is_notified`]). Retries back off from 1 minute, doubling, to a day
//!   (`chanto_core::domain::retry_backoff`), so a CA that stays down is told at once, again after about 34 hours
//!   (the 12th failure), then about once a day. Orders run under a per-name lease, so one node tells each failure.
//! - **`certificate.expiring`**: once when a certificate enters its last 30 days and once when it enters its last
//!   7 (a certificate first seen with 7 days or less left gets the 7-day warning only; one that has already expired
//!   counts as within 7 days), per certificate and site ([`warning_due`]). Only certificates some domain serves,
//!   and only those chanto is not renewing: uploaded ones, ACME ones whose renewal is failing (their domain has
//!   failed orders in a row), and ACME ones when this server orders no certificates. That each warning goes out
//!   once, across restarts and control nodes, is remembered in the store's leases: a lease per warning, taken by a
//!   one-time owner until a year after the certificate's end, which nobody else can take meanwhile. A warning is
//!   marked sent only when some subscription hears it, so one added after the mark (before the next) still does.
//!
//! Both go through the outbox like every other event (`notify/direct.rs`, the whole event as the row's detail):
//! fanned out, retried, in the delivery log, redelivered, kept across a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chanto_core::SiteName;
use chanto_notify::{Event, EventKind, EventUrls};
use chanto_store::{CertificateRecord, CertificateSource, DomainRecord, StoreError, UnixMillis, now_millis};

use crate::Control;

const DAY_MS: i64 = 86_400_000;
/// The warnings before a certificate's end, in days, latest first.
pub const WARN_DAYS: [u32; 2] = [7, 30];
/// How often the warnings are looked for when nothing changed (a certificate crosses a mark as time passes).
const WARN_EVERY: Duration = Duration::from_secs(3600);
/// How often the published routing table is looked at (in memory) for certificates that came or went.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Whether a failed certificate order, the `attempts`-th failure in a row, is told: the first of a streak, and
/// each one after which the next retry waits the longest backoff (a day), so a streak is told about once a day.
pub fn failure_is_notified(attempts: u32) -> bool {
    // The backoff without its jitter (a jitter of 32768 spreads by nothing).
    attempts == 1
        || (attempts > 1 && chanto_core::domain::retry_backoff(attempts, 32_768) >= chanto_core::domain::RETRY_MAX)
}

/// The warning (7 or 30, in days) due at `now` for a certificate valid until `not_after` that chanto does not
/// renew, if any: 7 within its last 7 days (or after its end), 30 within its last 30, none before.
pub fn warning_due(not_after: UnixMillis, now: UnixMillis) -> Option<u32> {
    WARN_DAYS.into_iter().find(|days| not_after.saturating_sub(now) <= i64::from(*days) * DAY_MS)
}

/// Whether chanto renews `cert` itself (so no expiry warning is due): an ACME certificate, on a server that orders
/// certificates, whose domains have no failed orders in a row.
pub fn renewed_by_chanto(cert: &CertificateRecord, domains: &[&DomainRecord], acme_enabled: bool) -> bool {
    cert.source == CertificateSource::Acme && acme_enabled && domains.iter().all(|d| d.attempts == 0)
}

/// The domain an event about several names of one certificate names: the site's primary, else an apex rather than
/// its `www` twin, else the first.
fn headline_domain<'a>(domains: &[&'a DomainRecord]) -> &'a DomainRecord {
    domains
        .iter()
        .find(|d| d.primary)
        .or_else(|| domains.iter().find(|d| d.twin_of.is_none()))
        .or(domains.first())
        .copied()
        .expect("a certificate in use has a domain")
}

impl Control {
    /// The branch a domain's events are about: its own, or the site's production branch.
    async fn domain_branch(&self, d: &DomainRecord) -> Option<String> {
        if let Some(b) = &d.branch {
            return Some(b.to_string());
        }
        match self.meta.get_site(&d.site).await {
            Ok(Some(site)) => Some(site.production_branch.to_string()),
            _ => None,
        }
    }

    /// Tells the site's subscribers that an order for `d` failed with `error` (`renewal`: `d` has a certificate,
    /// which it keeps serving), when [`failure_is_notified`] says so. `d` is the domain as the order found it;
    /// the row is re-read for the reason and hint the failure recorded. Called by the order loop.
    pub(crate) async fn certificate_failed(&self, d: &DomainRecord, error: &str, renewal: bool) {
        let attempts = d.attempts.saturating_add(1);
        if !failure_is_notified(attempts) {
            tracing::info!(domain = %d.name, attempts, "certificate order failed again; not notified (the first failure was, and then once a day)");
            return;
        }
        if self.notifier.get().is_none() {
            return;
        }
        let row = match self.meta.domain(&d.name).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            // The order's own view will do.
            Err(_) => d.clone(),
        };
        if row.cert_id != d.cert_id {
            // A certificate was uploaded meanwhile: the failure no longer matters.
            return;
        }
        let Some(branch) = self.domain_branch(&row).await else { return };
        let reason = row
            .reason
            .clone()
            .unwrap_or_else(|| if renewal { format!("renewal failed: {error}") } else { error.to_owned() });
        let now = now_millis();
        let event = Event {
            id: format!("evt_cert_{}", hex::encode(chanto_store::random_bytes::<8>())),
            kind: EventKind::CertificateFailed,
            at_ms: now,
            site: row.site.to_string(),
            branch,
            commit: None,
            build_id: None,
            deploy_id: None,
            pull_request: None,
            urls: EventUrls::default(),
            duration_ms: None,
            author: None,
            message: None,
            error: Some(reason),
            from_fork: false,
            domain: Some(row.name.clone()),
            expires_at_ms: None,
            hint: row.hint.clone(),
        };
        let n = crate::notify::send_now(self, event).await;
        tracing::info!(domain = %row.name, attempts, subscriptions = n, "certificate failure notified");
    }

    /// One look for expiry warnings at `now`: sends each that is due and was not sent before (by any node).
    /// Returns the warnings sent: (certificate id, site, days).
    pub async fn certificate_warning_pass(&self, now: UnixMillis) -> Result<Vec<(String, SiteName, u32)>, StoreError> {
        let mut sent = Vec::new();
        if self.notifier.get().is_none() {
            return Ok(sent);
        }
        let certs = self.meta.certificates_in_use().await?;
        let domains = self.meta.domains(None).await?;
        for cert in certs {
            let using: Vec<&DomainRecord> = domains.iter().filter(|d| d.cert_id.as_deref() == Some(&cert.id)).collect();
            if using.is_empty() || renewed_by_chanto(&cert, &using, self.acme_enabled()) {
                continue;
            }
            let Some(days) = warning_due(cert.not_after, now) else { continue };
            let mut by_site: BTreeMap<&SiteName, Vec<&DomainRecord>> = BTreeMap::new();
            for d in &using {
                by_site.entry(&d.site).or_default().push(d);
            }
            for (site, ds) in by_site {
                let Some(event) = self.expiring_event(&cert, &ds, days, now).await else { continue };
                // Nobody to tell yet: a subscription added before the next mark still hears of this one.
                let targets = crate::notify::targets(self, &event).await;
                if targets == 0 {
                    continue;
                }
                // Once per certificate, site and mark: a lease with an owner of its own that lasts past the
                // certificate's end, so no later pass, restart or other node can take it.
                let lease = format!("notified:certificate.expiring:{days}:{}:{site}", cert.id);
                let owner = hex::encode(chanto_store::random_bytes::<8>());
                let ttl = cert.not_after.saturating_sub(now).max(0).saturating_add(366 * DAY_MS);
                if !self.meta.take_lease(&lease, &owner, now, ttl).await? {
                    continue;
                }
                tracing::info!(site = %site, certificate = %cert.id, days, subscriptions = targets, "certificate expiry warning sent");
                crate::notify::send_to(self, event).await;
                sent.push((cert.id.clone(), site.clone(), days));
            }
        }
        Ok(sent)
    }

    /// The `certificate.expiring` event of `cert` for a site's domains `ds`.
    async fn expiring_event(
        &self,
        cert: &CertificateRecord,
        ds: &[&DomainRecord],
        days: u32,
        now: i64,
    ) -> Option<Event> {
        let d = headline_domain(ds);
        let branch = self.domain_branch(d).await?;
        let mut names: Vec<&str> = ds.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        let names = names.join(", ");
        let upload =
            format!("`chanto certs upload --domain {} --site {} --cert FULLCHAIN.pem --key KEY.pem`", d.name, d.site);
        let (reason, hint) = match cert.source {
            CertificateSource::Upload => (
                format!(
                    "the certificate of {names} was uploaded (issued by {}); chanto does not renew uploaded certificates",
                    cert.issuer
                ),
                format!(
                    "upload a renewed certificate before it expires: {upload}; once it has expired, browsers refuse the site over HTTPS"
                ),
            ),
            CertificateSource::Acme if !self.acme_enabled() => (
                format!("the certificate of {names} came from an ACME CA, and this server orders no certificates"),
                format!("start chanto with ACME (--https, or --acme-directory URL) so that it renews it, or {upload}"),
            ),
            CertificateSource::Acme => (
                ds.iter()
                    .find_map(|d| d.reason.clone())
                    .unwrap_or_else(|| format!("the renewal of the certificate of {names} keeps failing")),
                ds.iter()
                    .find_map(|d| d.hint.clone())
                    .unwrap_or_else(|| format!("fix what the renewal reports, or {upload}")),
            ),
        };
        Some(Event {
            // The same for every node and pass: receivers can drop a duplicate by it.
            id: format!("evt_cert_expiring{days}_{}_{}", &cert.id[..cert.id.len().min(16)], d.site),
            kind: EventKind::CertificateExpiring,
            at_ms: now,
            site: d.site.to_string(),
            branch,
            commit: None,
            build_id: None,
            deploy_id: None,
            pull_request: None,
            urls: EventUrls::default(),
            duration_ms: None,
            author: None,
            message: None,
            error: Some(reason),
            from_fork: false,
            domain: Some(d.name.clone()),
            expires_at_ms: Some(cert.not_after),
            hint: Some(hint),
        })
    }

    /// Sends expiry warnings until stopped: a look at start, every hour, and soon after the certificates the
    /// published routing table names change (an upload, an issued or removed certificate). Runs whether or not
    /// this server orders certificates (uploaded ones need the warning most); a no-op without notifications.
    pub async fn run_certificate_warnings(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.notifier.get().is_none() {
            return;
        }
        let mut seen: Option<(u64, Vec<String>)> = None;
        let mut last_pass: Option<tokio::time::Instant> = None;
        loop {
            let version = self.nodes.version();
            let changed = match &seen {
                Some((v, _)) if *v == version => false,
                _ => {
                    let certs = self.published_certificates();
                    let changed = seen.as_ref().is_none_or(|(_, before)| *before != certs);
                    seen = Some((version, certs));
                    changed
                }
            };
            if changed || last_pass.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                last_pass = Some(tokio::time::Instant::now());
                if let Err(e) = self.certificate_warning_pass(now_millis()).await {
                    tracing::warn!(error = %e, "looking for certificates near their end failed; trying again later");
                    // A store outage: look again at the next tick rather than in an hour.
                    seen = None;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// The certificate ids the published routing table serves, sorted (in memory; no store read).
    fn published_certificates(&self) -> Vec<String> {
        let Some(snapshot) = self.nodes.snapshot() else { return Vec::new() };
        let mut ids: Vec<String> =
            snapshot.table.sites.values().flat_map(|part| part.domains.iter().filter_map(|d| d.cert.clone())).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_told_first_then_about_daily() {
        let told: Vec<u32> = (0..=20).filter(|a| failure_is_notified(*a)).collect();
        // Backoff: 1, 2, 4 … 1024 min after failures 1..=11 (about 34 h in all), then a day from the 12th on.
        assert_eq!(told, [1, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
        assert!(failure_is_notified(u32::MAX));
        // Between two told failures from the 12th on the next retry is at least 0.9 days away, whatever the jitter.
        for jitter in [0, 32_768, u16::MAX] {
            let wait = chanto_core::domain::retry_backoff(12, jitter);
            assert!(wait >= Duration::from_secs(86_400 * 9 / 10), "{wait:?}");
        }
        // And the first two told failures are more than a day apart.
        let streak: Duration = (1..12).map(|a| chanto_core::domain::retry_backoff(a, 32_768)).sum();
        assert!(streak > Duration::from_secs(86_400), "{streak:?}");
    }

    #[test]
    fn warning_table() {
        let now = 1_800_000_000_000;
        let cases: &[(i64, Option<u32>)] = &[
            (90 * DAY_MS, None),
            (30 * DAY_MS + 1, None),
            (30 * DAY_MS, Some(30)),
            (8 * DAY_MS, Some(30)),
            (7 * DAY_MS + 1, Some(30)),
            (7 * DAY_MS, Some(7)),
            (5 * DAY_MS, Some(7)),
            (1, Some(7)),
            (0, Some(7)),
            (-3 * DAY_MS, Some(7)),
        ];
        for (left, want) in cases {
            assert_eq!(warning_due(now + left, now), *want, "{left} ms left");
        }
        assert_eq!(warning_due(i64::MIN, now), Some(7));
        assert_eq!(warning_due(i64::MAX, now), None);
    }

    fn cert(source: CertificateSource) -> CertificateRecord {
        CertificateRecord {
            id: "ab".repeat(32),
            source,
            names: vec!["example.com".into()],
            chain_pem: String::new(),
            key_sealed: Vec::new(),
            not_before: 0,
            not_after: 90 * DAY_MS,
            issuer: "CA".into(),
            created_at: 0,
        }
    }

    fn domain(name: &str, attempts: u32) -> DomainRecord {
        DomainRecord {
            name: name.into(),
            site: "docs".parse().unwrap(),
            branch: None,
            primary: false,
            twin_of: None,
            state: chanto_store::DomainState::Active,
            reason: None,
            hint: None,
            verify_token: "t".into(),
            verified_at: Some(0),
            verified_by: Some("http".into()),
            cert_id: Some("ab".repeat(32)),
            created_at: 0,
            challenge: None,
            attempts,
            next_attempt_at: None,
        }
    }

    #[test]
    fn who_renews_which_certificate() {
        let (ok, failing) = (domain("example.com", 0), domain("www.example.com", 3));
        let acme = cert(CertificateSource::Acme);
        let upload = cert(CertificateSource::Upload);
        let cases: &[(&CertificateRecord, &[&DomainRecord], bool, bool)] = &[
            (&acme, &[&ok], true, true),
            (&acme, &[&ok, &failing], true, false),
            (&acme, &[&ok], false, false),
            (&upload, &[&ok], true, false),
            (&upload, &[&ok], false, false),
        ];
        for (i, (c, ds, acme_enabled, want)) in cases.iter().enumerate() {
            assert_eq!(renewed_by_chanto(c, ds, *acme_enabled), *want, "case {i}");
        }
    }

    /// A control plane on a real SQLite store with notifications on, site `docs` on `main`.
    async fn control(dir: &std::path::Path) -> Arc<Control> {
        let meta: Arc<dyn chanto_store::MetaStore> =
            Arc::new(chanto_store::SqliteMeta::open(&dir.join("meta.db")).unwrap());
        let blobs = Arc::new(chanto_store::LocalBlobStore::open(dir.join("blobs")).unwrap());
        let control = Control::new(meta, blobs, crate::ControlConfig::new("localhost", 8080), vec![]);
        let config = crate::notify::NotifyConfig::new("http://127.0.0.1:9");
        control.enable_notifications(crate::notify::Notifier::new(config, crate::builds::sealed::Sealer::new([7; 32])));
        control.create_site(&"docs".parse().unwrap(), &"main".parse().unwrap()).await.unwrap();
        control
    }

    #[tokio::test]
    async fn warnings_go_once_per_mark_only_for_what_chanto_does_not_renew_and_wait_for_a_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let control = control(dir.path()).await;
        let site: SiteName = "docs".parse().unwrap();
        let new = |name: &str, twin_of: Option<&str>| chanto_store::NewDomain {
            name: name.into(),
            branch: None,
            twin_of: twin_of.map(Into::into),
            verify_token: "t".into(),
        };
        let names =
            [new("example.com", None), new("www.example.com", Some("example.com")), new("acme.example.com", None)];
        control.meta.add_domains(&site, &names, 0).await.unwrap();
        let end = 1_800_000_000_000;
        let upload =
            CertificateRecord { source: CertificateSource::Upload, not_after: end, ..cert(CertificateSource::Upload) };
        let both = ["example.com".to_owned(), "www.example.com".to_owned()];
        control.meta.store_certificate(&upload, &both, "upload", 0).await.unwrap();
        // An ACME certificate on a server that orders none: nobody renews it either.
        let acme =
            CertificateRecord { id: "cd".repeat(32), not_after: end + 10 * DAY_MS, ..cert(CertificateSource::Acme) };
        control.meta.store_certificate(&acme, &["acme.example.com".to_owned()], "http", 0).await.unwrap();
        let pass = |now: i64| {
            let control = control.clone();
            async move {
                let mut sent = control.certificate_warning_pass(now).await.unwrap();
                sent.sort();
                sent.into_iter()
                    .map(|(id, site, days)| (id[..2].to_owned(), site.to_string(), days))
                    .collect::<Vec<_>>()
            }
        };
        let docs = || "docs".to_owned();

        // Nobody subscribed: nothing is sent, and nothing is marked sent.
        assert_eq!(pass(end - 20 * DAY_MS).await, []);
        let subscribe = crate::notify::SubscribeRequest {
            channel: Some(crate::notify::Channel::Webhook),
            events: vec!["certificate.expiring".into()],
            // Nothing listens there: the sends retry in the background; what is asserted is what was sent.
            url: Some("http://127.0.0.1:9/hook".into()),
            ..Default::default()
        };
        control.subscribe(&site, subscribe).await.unwrap();

        assert_eq!(pass(end - 40 * DAY_MS).await, []);
        // The 30-day mark: once per certificate (the apex and its twin share one), then not again.
        assert_eq!(pass(end - 20 * DAY_MS).await, [("ab".into(), docs(), 30), ("cd".into(), docs(), 30)]);
        assert_eq!(pass(end - 19 * DAY_MS).await, []);
        // The 7-day mark of the first; the second is still in its 30 days.
        assert_eq!(pass(end - 5 * DAY_MS).await, [("ab".into(), docs(), 7)]);
        assert_eq!(pass(end + 5 * DAY_MS).await, [("cd".into(), docs(), 7)]);
        assert_eq!(pass(end + 30 * DAY_MS).await, []);
    }

    #[tokio::test]
    async fn the_expiring_event_says_why_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let control = control(dir.path()).await;
        let d = DomainRecord { primary: true, ..domain("example.com", 0) };
        let www = DomainRecord { twin_of: Some("example.com".into()), ..domain("www.example.com", 0) };
        let upload = cert(CertificateSource::Upload);
        let e = control.expiring_event(&upload, &[&www, &d], 7, 85 * DAY_MS).await.unwrap();
        assert_eq!(e.kind, EventKind::CertificateExpiring);
        assert_eq!((e.site.as_str(), e.branch.as_str(), e.domain.as_deref()), ("docs", "main", Some("example.com")));
        assert_eq!(e.expires_at_ms, Some(90 * DAY_MS));
        assert_eq!(
            e.error.as_deref(),
            Some(
                "the certificate of example.com, www.example.com was uploaded (issued by CA); chanto does not renew uploaded certificates"
            )
        );
        assert!(
            e.hint
                .unwrap()
                .contains("`chanto certs upload --domain example.com --site docs --cert FULLCHAIN.pem --key KEY.pem`")
        );
        assert_eq!(e.id, format!("evt_cert_expiring7_{}_docs", "ab".repeat(8)));
        // An ACME certificate whose renewal fails says what the renewal reported.
        let failing = DomainRecord {
            reason: Some("renewal failed: the CA said no".into()),
            hint: Some("chanto tries again in 1d (attempt 14)".into()),
            ..domain("example.com", 14)
        };
        let acme = cert(CertificateSource::Acme);
        // This server orders no certificates: that is why, whatever an earlier order said.
        let e = control.expiring_event(&acme, &[&failing], 30, 0).await.unwrap();
        assert_eq!(
            e.error.as_deref(),
            Some("the certificate of example.com came from an ACME CA, and this server orders no certificates")
        );
        assert!(e.hint.unwrap().starts_with("start chanto with ACME (--https, or --acme-directory URL)"));
        let owner = chanto_store::Owner { node: "n".into(), run: "r".into() };
        let config = crate::acme::AcmeConfig {
            directory_url: "https://127.0.0.1:9/dir".into(),
            contact_email: None,
            eab: None,
            extra_roots_pem: None,
            challenge: crate::acme::ChallengeKind::Http01,
            dns_hook: None,
        };
        control.enable_acme(crate::acme_orders::AcmeOrders::new(config, &owner));
        let e = control.expiring_event(&acme, &[&failing], 30, 0).await.unwrap();
        assert_eq!(e.error.as_deref(), Some("renewal failed: the CA said no"));
        assert_eq!(e.hint.as_deref(), Some("chanto tries again in 1d (attempt 14)"));
    }

    #[test]
    fn the_event_names_the_primary_else_the_apex() {
        let apex = domain("example.com", 0);
        let www = DomainRecord { twin_of: Some("example.com".into()), ..domain("www.example.com", 0) };
        assert_eq!(headline_domain(&[&www, &apex]).name, "example.com");
        let primary_www = DomainRecord { primary: true, ..www.clone() };
        assert_eq!(headline_domain(&[&apex, &primary_www]).name, "www.example.com");
        assert_eq!(headline_domain(&[&www]).name, "www.example.com");
    }
}

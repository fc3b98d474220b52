//! Ordering the base domain's wildcard (`*.BASE`, `*.PREVIEW`) by DNS-01
//! (issue 17): when this server proves names with `--acme-challenge dns-01`
//! and its hook, each base pattern without a certificate (or with one this
//! loop ordered that is due for renewal) is ordered under the same lease,
//! backoff and checks as a custom domain's. A pattern served by an uploaded
//! certificate is the operator's to renew and is never ordered.
//!
//! Without a wildcard (HTTP-01 or TLS-ALPN-01), each base host actually asked
//! for over HTTPS gets a certificate of its own, on demand: the edges note
//! the SNI names they had no certificate for ([`chanto_edge::tls::CertStore::take_wanted`];
//! nodes send them in their heartbeat), and [`Control::want_base_certificate`]
//! keeps only a host that routes to a site's production branch or one of its
//! branches in the published table — the same rule as custom domains: a name
//! nobody registered creates nothing, however often it is asked for.
//! Permalink hosts (deploy ids) never get one: a certificate per deploy would
//! run into the CA's rate limits; they stay on plain HTTP (or a wildcard).
//!
//! Who may start it: nobody directly; the patterns come from the server's own
//! `--base-domain` and `--preview-domain`, and hosts from what routes.

use std::collections::HashMap;
use std::time::Duration;

use chanto_core::HostRoute;
use chanto_store::{
    BaseCertificate, CertificateRecord, CertificateSource, RoutingChange, RoutingTable, StoreError, now_millis,
};

use crate::Control;
use crate::acme::ChallengeKind;
use crate::acme_orders::{AcmeOrders, AriTimes, LEASE_MS, PassReport, RoutedChallenges, acme_record, renewal_at};

/// When `pattern` needs an order (see `due_at` for domains): `None` never.
fn base_due_at(
    row: Option<&BaseCertificate>,
    certs: &HashMap<String, CertificateRecord>,
    ari: &AriTimes,
) -> Option<i64> {
    let wanted = match row.and_then(|r| r.cert_id.as_ref()) {
        None => i64::MIN,
        Some(id) => renewal_at(id, certs, ari)?,
    };
    Some(wanted.max(row.and_then(|r| r.next_attempt_at).unwrap_or(i64::MIN)))
}

/// Whether `host` is a base host that `table` routes to a site's production
/// branch or a branch (not a permalink).
fn base_host_routes(table: &RoutingTable, host: &str, base: &str, preview: Option<&str>) -> bool {
    let part = |site: &str| site.parse::<chanto_core::SiteName>().ok().and_then(|s| table.sites.get(&s).cloned());
    match chanto_core::route_host(host, base, preview) {
        Some(HostRoute::Production { site }) => part(&site).is_some_and(|p| p.branches.iter().any(|r| r.production)),
        Some(HostRoute::Prefixed { prefix, site }) => {
            part(&site).is_some_and(|p| p.branches.iter().any(|r| r.label == prefix))
        }
        None => false,
    }
}

impl Control {
    /// Whether base hosts get certificates on demand here: ACME on, by
    /// HTTP-01 or TLS-ALPN-01 (with DNS-01 the wildcard is ordered instead),
    /// and a base domain a CA can issue for (two labels or more).
    fn on_demand(&self) -> bool {
        self.acme.get().is_some_and(|a| a.config.challenge != ChallengeKind::Dns01)
            && self.config.base_domain.contains('.')
    }

    /// A base host an edge had no certificate for: remembered for an order
    /// when it routes to a site (see the module doc), and the order loop
    /// woken. Returns whether it was taken.
    pub async fn want_base_certificate(&self, host: &str) -> bool {
        if !self.on_demand() {
            return false;
        }
        let Ok(host) = host.parse::<chanto_core::DomainName>() else { return false };
        let Some(snapshot) = self.nodes.snapshot() else { return false };
        let (base, preview) = (&self.config.base_domain, self.config.preview_domain.as_deref());
        if !base_host_routes(&snapshot.table, host.as_str(), base, preview) {
            tracing::debug!(host = %host, "a base host without a site asked for over HTTPS; no certificate ordered");
            return false;
        }
        match self.meta.want_base_certificate(host.as_str(), now_millis()).await {
            Ok(added) => {
                if added {
                    tracing::info!(host = %host, "a certificate for this base host will be ordered (asked for over HTTPS)");
                    self.wake_acme();
                }
                added
            }
            Err(e) => {
                tracing::warn!(host = %host, error = %e, "could not note a base host for a certificate");
                false
            }
        }
    }

    /// Orders the base certificates that are due, adding to `report`: the
    /// wildcards by DNS-01, base hosts asked for on demand otherwise.
    pub(crate) async fn base_pass(
        &self,
        orders: &AcmeOrders,
        certs: &HashMap<String, CertificateRecord>,
        ari: &AriTimes,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        let rows = self.meta.base_certificates().await?;
        let now = now_millis();
        let dns = orders.config.challenge == ChallengeKind::Dns01 && orders.config.dns_hook.is_some();
        let wanted: Vec<String> = if dns {
            // A wildcard needs two labels under it (`*.localhost` is valid for no client).
            self.base_patterns().into_iter().filter(|p| p[2..].contains('.')).collect()
        } else if self.on_demand() {
            let table = self.nodes.snapshot().map(|s| s.table.clone());
            let (base, preview) = (&self.config.base_domain, self.config.preview_domain.as_deref());
            let covered = |host: &str| {
                host.split_once('.').is_some_and(|(_, parent)| {
                    rows.iter().any(|w| w.cert_id.is_some() && w.pattern.strip_prefix("*.") == Some(parent))
                })
            };
            let mut hosts = Vec::new();
            for r in rows.iter().filter(|r| !r.pattern.starts_with("*.")) {
                // A wildcard serves it now (uploaded since): nothing to order.
                if covered(&r.pattern) {
                    continue;
                }
                // A host whose site or branch went away is forgotten (its
                // certificate goes with the next prune).
                if table.as_ref().is_some_and(|t| !base_host_routes(t, &r.pattern, base, preview)) {
                    tracing::info!(host = %r.pattern, "base host no longer routes: its certificate is dropped");
                    self.meta.remove_base_certificate(&r.pattern).await?;
                    continue;
                }
                hosts.push(r.pattern.clone());
            }
            hosts
        } else {
            Vec::new()
        };
        for pattern in wanted {
            let row = rows.iter().find(|r| r.pattern == pattern);
            let Some(due) = base_due_at(row, certs, ari) else { continue };
            if due > now {
                report.next_due = Some(report.next_due.map_or(due, |t| t.min(due)));
                continue;
            }
            let lease = format!("acme:{pattern}");
            if !self.meta.take_lease(&lease, &orders.owner, now_millis(), LEASE_MS).await? {
                report.skipped.push(pattern);
                continue;
            }
            let outcome = self.order_base(orders, &lease, &pattern, row).await;
            if let Err(e) = self.meta.release_lease(&lease, &orders.owner).await {
                tracing::warn!(pattern, error = %e, "could not release an ACME lease; it lapses on its own");
            }
            match outcome {
                Ok(()) => report.issued.push(pattern),
                Err(why) => report.failed.push((pattern, why)),
            }
        }
        Ok(())
    }

    async fn order_base(
        &self,
        orders: &AcmeOrders,
        lease: &str,
        pattern: &str,
        row: Option<&BaseCertificate>,
    ) -> Result<(), String> {
        tracing::info!(
            pattern,
            renewal = row.is_some_and(|r| r.cert_id.is_some()),
            "ordering a base domain certificate"
        );
        match self.issue_base(orders, lease, pattern).await {
            Ok(id) => {
                tracing::info!(pattern, certificate = %id, "base domain wildcard issued and served");
                Ok(())
            }
            Err(e) => {
                let attempts = row.map_or(0, |r| r.attempts).saturating_add(1);
                let jitter = u16::from_le_bytes(chanto_store::random_bytes::<2>());
                let wait = chanto_core::domain::retry_backoff(attempts, jitter);
                let now = now_millis();
                let next = now.saturating_add(wait.as_millis() as i64);
                let again = humantime::format_duration(Duration::from_secs(wait.as_secs()));
                let reason = format!("{e} (attempt {attempts}; chanto tries again in {again})");
                let _ = self.meta.record_base_failure(pattern, attempts, Some(next), &reason, now).await;
                tracing::warn!(pattern, attempts, retry_in = %again, error = %e, "base domain wildcard order failed");
                Err(e)
            }
        }
    }

    async fn issue_base(&self, orders: &AcmeOrders, lease: &str, pattern: &str) -> Result<String, String> {
        let service = self.domain_service().map_err(|e| e.message)?.clone();
        let account = self.acme_account(orders, &service).await?;
        let challenges = RoutedChallenges {
            control: self,
            site: None,
            dns_hook: orders.config.dns_hook.as_deref(),
            txt: Default::default(),
        };
        let names = [pattern.to_owned()];
        // Wildcards by DNS-01; a single host by whatever this server uses.
        let kind = if pattern.starts_with("*.") { ChallengeKind::Dns01 } else { orders.config.challenge };
        let issued = crate::acme::issue(&account, &names, kind, &challenges, orders.deadline)
            .await
            .map_err(|e| e.to_string())?;
        let now = now_millis();
        let record = acme_record(&service, &issued, pattern, now)?;
        if !self.meta.take_lease(lease, &orders.owner, now, LEASE_MS).await.map_err(|e| e.to_string())? {
            return Err("another node took over this order (the lease lapsed); its certificate wins".into());
        }
        // An upload meanwhile wins: it is the operator's.
        let rows = self.meta.base_certificates().await.map_err(|e| e.to_string())?;
        if let Some(current) = rows.iter().find(|r| r.pattern == pattern).and_then(|r| r.cert_id.as_deref()) {
            let uploaded = self.meta.certificate(current).await.ok().flatten().map(|c| c.source);
            if uploaded == Some(CertificateSource::Upload) {
                return Ok(current.to_owned());
            }
        }
        self.meta.store_base_certificate(pattern, &record, now).await.map_err(|e| e.to_string())?;
        if let Err(e) = self.meta.prune_certificates().await {
            tracing::warn!(error = %e, "could not prune unused certificates");
        }
        self.publish_routing(RoutingChange::All).await.map_err(|e| e.to_string())?;
        Ok(record.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(id: &str, source: CertificateSource) -> CertificateRecord {
        CertificateRecord {
            id: id.into(),
            source,
            names: vec!["*.base.test".into()],
            chain_pem: String::new(),
            key_sealed: vec![],
            not_before: 0,
            not_after: 90 * 86_400_000,
            issuer: "CA".into(),
            created_at: 0,
        }
    }

    fn row(cert_id: Option<&str>, next: Option<i64>) -> BaseCertificate {
        BaseCertificate {
            pattern: "*.base.test".into(),
            cert_id: cert_id.map(Into::into),
            attempts: 0,
            next_attempt_at: next,
            reason: None,
            updated_at: 0,
            challenge: None,
        }
    }

    #[test]
    fn a_base_pattern_is_ordered_without_a_certificate_renewed_when_ours_and_never_when_uploaded() {
        let certs: HashMap<String, CertificateRecord> = [
            ("acme".to_owned(), cert("acme", CertificateSource::Acme)),
            ("upload".to_owned(), cert("upload", CertificateSource::Upload)),
        ]
        .into();
        let none = AriTimes::new();
        assert_eq!(base_due_at(None, &certs, &none), Some(i64::MIN), "never ordered: at once");
        assert_eq!(base_due_at(Some(&row(None, Some(5))), &certs, &none), Some(5), "after the backoff");
        assert_eq!(base_due_at(Some(&row(Some("acme"), None)), &certs, &none), Some(60 * 86_400_000), "a third left");
        assert_eq!(base_due_at(Some(&row(Some("upload"), None)), &certs, &none), None, "the operator's");
        assert_eq!(base_due_at(Some(&row(Some("gone"), None)), &certs, &none), None, "unknown: left alone");
        // The CA's renewal window (ARI) wins over a third of the lifetime,
        // earlier or later, and never makes an uploaded certificate ours.
        let ari: AriTimes = [("acme".to_owned(), 7), ("upload".to_owned(), 7)].into();
        assert_eq!(base_due_at(Some(&row(Some("acme"), None)), &certs, &ari), Some(7), "the CA's time");
        assert_eq!(base_due_at(Some(&row(Some("acme"), Some(9))), &certs, &ari), Some(9), "backoff still holds");
        assert_eq!(base_due_at(Some(&row(Some("upload"), None)), &certs, &ari), None, "still the operator's");
    }
}

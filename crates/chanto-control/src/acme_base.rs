//! Ordering the base domain's wildcard (`*.BASE`, `*.PREVIEW`) by DNS-01
//! (issue 17): when this server proves names with `--acme-challenge dns-01`
//! and its hook, each base pattern without a certificate (or with one this
//! loop ordered that is due for renewal) is ordered under the same lease,
//! backoff and checks as a custom domain's. A pattern served by an uploaded
//! certificate is the operator's to renew and is never ordered.
//!
//! Who may start it: nobody directly; the patterns come from the server's own
//! `--base-domain` and `--preview-domain`, never from a request.

use std::collections::HashMap;
use std::time::Duration;

use chanto_store::{BaseCertificate, CertificateRecord, CertificateSource, RoutingChange, StoreError, now_millis};

use crate::Control;
use crate::acme::ChallengeKind;
use crate::acme_orders::{AcmeOrders, LEASE_MS, PassReport, RoutedChallenges};

/// When `pattern` needs an order (see `due_at` for domains): `None` never.
fn base_due_at(row: Option<&BaseCertificate>, certs: &HashMap<String, CertificateRecord>) -> Option<i64> {
    let wanted = match row.and_then(|r| r.cert_id.as_ref()) {
        None => i64::MIN,
        Some(id) => {
            let c = certs.get(id).filter(|c| c.source == CertificateSource::Acme)?;
            chanto_core::domain::renewal_due(c.not_before, c.not_after)
        }
    };
    Some(wanted.max(row.and_then(|r| r.next_attempt_at).unwrap_or(i64::MIN)))
}

impl Control {
    /// Orders the base patterns that are due (DNS-01 only), adding to `report`.
    pub(crate) async fn base_pass(
        &self,
        orders: &AcmeOrders,
        certs: &HashMap<String, CertificateRecord>,
        report: &mut PassReport,
    ) -> Result<(), StoreError> {
        if orders.config.challenge != ChallengeKind::Dns01 || orders.config.dns_hook.is_none() {
            return Ok(());
        }
        let rows = self.meta.base_certificates().await?;
        let now = now_millis();
        // A wildcard needs two labels under it (`*.localhost` is valid for no client).
        for pattern in self.base_patterns().into_iter().filter(|p| p[2..].contains('.')) {
            let row = rows.iter().find(|r| r.pattern == pattern);
            let Some(due) = base_due_at(row, certs) else { continue };
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
            "ordering the base domain's wildcard by DNS-01"
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
        let issued = crate::acme::issue(&account, &names, ChallengeKind::Dns01, &challenges, orders.deadline)
            .await
            .map_err(|e| e.to_string())?;
        let now = now_millis();
        let checked = crate::certcheck::check_upload(
            issued.chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            pattern,
            service.trust(),
            now,
        )
        .map_err(|p| format!("the CA's certificate does not check out: {}", p.message))?;
        let record = CertificateRecord {
            id: checked.id.clone(),
            source: CertificateSource::Acme,
            names: checked.names,
            chain_pem: checked.chain_pem,
            key_sealed: service.seal(checked.key_pem.as_bytes()),
            not_before: checked.not_before,
            not_after: checked.not_after,
            issuer: checked.issuer,
            created_at: now,
        };
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
        }
    }

    #[test]
    fn a_base_pattern_is_ordered_without_a_certificate_renewed_when_ours_and_never_when_uploaded() {
        let certs: HashMap<String, CertificateRecord> = [
            ("acme".to_owned(), cert("acme", CertificateSource::Acme)),
            ("upload".to_owned(), cert("upload", CertificateSource::Upload)),
        ]
        .into();
        assert_eq!(base_due_at(None, &certs), Some(i64::MIN), "never ordered: at once");
        assert_eq!(base_due_at(Some(&row(None, Some(5))), &certs), Some(5), "after the backoff");
        assert_eq!(base_due_at(Some(&row(Some("acme"), None)), &certs), Some(60 * 86_400_000), "a third left");
        assert_eq!(base_due_at(Some(&row(Some("upload"), None)), &certs), None, "the operator's");
        assert_eq!(base_due_at(Some(&row(Some("gone"), None)), &certs), None, "unknown: left alone");
    }
}

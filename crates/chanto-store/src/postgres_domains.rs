//! [`DomainStore`] on PostgreSQL.

use async_trait::async_trait;
use chanto_core::SiteName;
use tokio_postgres::Row;

use crate::domains::*;
use crate::postgres::{PostgresMeta, Tx, exec, one, opt, rows, site_id};
use crate::{StoreError, UnixMillis};

const DOMAIN_SELECT: &str = "SELECT d.name, s.name, d.branch, d.is_primary, d.twin_of, d.state, d.reason, d.hint,
       d.verify_token, d.verified_at, d.verified_by, d.cert_id, d.created_at,
       d.challenge_token, d.challenge_body, d.attempts, d.next_attempt_at, d.challenge_alpn
       FROM domains d JOIN sites s ON s.id = d.site_id";

fn stored<T: std::str::FromStr>(what: &str, s: String) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| StoreError::Db(format!("stored {what} {s:?}: {e}")))
}

fn domain_row(r: &Row) -> Result<DomainRecord, StoreError> {
    let state: String = r.try_get(5)?;
    Ok(DomainRecord {
        name: r.try_get(0)?,
        site: stored("site name", r.try_get(1)?)?,
        branch: r.try_get::<_, Option<String>>(2)?.map(|b| stored("branch", b)).transpose()?,
        primary: r.try_get(3)?,
        twin_of: r.try_get(4)?,
        state: DomainState::parse(&state).map_err(StoreError::Db)?,
        reason: r.try_get(6)?,
        hint: r.try_get(7)?,
        verify_token: r.try_get(8)?,
        verified_at: r.try_get(9)?,
        verified_by: r.try_get(10)?,
        cert_id: r.try_get(11)?,
        created_at: r.try_get(12)?,
        challenge: match (r.try_get::<_, Option<String>>(13)?, r.try_get::<_, Option<String>>(14)?) {
            (Some(token), Some(key_authorization)) => {
                Some(AcmeChallenge { token, key_authorization, alpn_pem: r.try_get(17)? })
            }
            _ => None,
        },
        attempts: r.try_get::<_, i64>(15)?.clamp(0, u32::MAX as i64) as u32,
        next_attempt_at: r.try_get(16)?,
    })
}

/// Stores a certificate once (storing the same id again is harmless).
async fn insert_certificate(tx: &Tx<'_>, cert: &CertificateRecord) -> Result<(), StoreError> {
    let names = serde_json::to_string(&cert.names).map_err(|e| StoreError::Db(e.to_string()))?;
    exec(
        tx,
        "INSERT INTO certificates (id, source, names, chain_pem, key_sealed, not_before, not_after, issuer, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        &[
            &cert.id,
            &cert.source.as_str(),
            &names,
            &cert.chain_pem,
            &cert.key_sealed,
            &cert.not_before,
            &cert.not_after,
            &cert.issuer,
            &cert.created_at,
        ],
    )
    .await?;
    Ok(())
}

const CERT_SELECT: &str =
    "SELECT id, source, names, chain_pem, key_sealed, not_before, not_after, issuer, created_at FROM certificates";

fn cert_row(r: &Row) -> Result<CertificateRecord, StoreError> {
    let source: String = r.try_get(1)?;
    let names: String = r.try_get(2)?;
    Ok(CertificateRecord {
        id: r.try_get(0)?,
        source: CertificateSource::parse(&source).map_err(StoreError::Db)?,
        names: serde_json::from_str(&names).map_err(|e| StoreError::Db(format!("stored certificate names: {e}")))?,
        chain_pem: r.try_get(3)?,
        key_sealed: r.try_get(4)?,
        not_before: r.try_get(5)?,
        not_after: r.try_get(6)?,
        issuer: r.try_get(7)?,
        created_at: r.try_get(8)?,
    })
}

fn tls_row(r: &Row, at: usize) -> Result<SiteTls, StoreError> {
    Ok(SiteTls {
        https_redirect: r.try_get(at)?,
        hsts_max_age: r.try_get::<_, i64>(at + 1)?.max(0) as u64,
        hsts_include_subdomains: r.try_get(at + 2)?,
        hsts_preload: r.try_get(at + 3)?,
    })
}

async fn site_has(tx: &Tx<'_>, site: i64, name: &str) -> Result<bool, StoreError> {
    Ok(opt(tx, "SELECT 1 FROM domains WHERE site_id = $1 AND name = $2", &[&site, &name]).await?.is_some())
}

/// Makes sure a site with domains has exactly one primary: the oldest.
async fn ensure_primary(tx: &Tx<'_>, site: i64) -> Result<(), StoreError> {
    if opt(tx, "SELECT 1 FROM domains WHERE site_id = $1 AND is_primary", &[&site]).await?.is_none() {
        exec(
            tx,
            "UPDATE domains SET is_primary = TRUE WHERE name =
                (SELECT name FROM domains WHERE site_id = $1 ORDER BY created_at, twin_of IS NOT NULL, name LIMIT 1)",
            &[&site],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl DomainStore for PostgresMeta {
    async fn add_domains(
        &self,
        site: &SiteName,
        domains: &[NewDomain],
        now: UnixMillis,
    ) -> Result<Vec<DomainRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        for d in domains {
            let branch = d.branch.as_ref().map(|b| b.as_str());
            let n = exec(
                &tx,
                "INSERT INTO domains (name, site_id, branch, is_primary, twin_of, state, verify_token, created_at)
                 VALUES ($1, $2, $3, FALSE, $4, 'pending_verification', $5, $6) ON CONFLICT (name) DO NOTHING",
                &[&d.name, &id, &branch, &d.twin_of, &d.verify_token, &now],
            )
            .await?;
            if n == 0 {
                // Another site (or this one) has it; a statement of its own
                // sees the row the conflict saw (read committed).
                let other = opt(
                    &tx,
                    "SELECT s.name FROM domains d JOIN sites s ON s.id = d.site_id WHERE d.name = $1",
                    &[&d.name],
                )
                .await?
                .map(|r| r.try_get::<_, String>(0))
                .transpose()?
                .unwrap_or_else(|| "another site".into());
                return Err(StoreError::Conflict(if other == site.as_str() {
                    format!("site {site} has the domain {} already", d.name)
                } else {
                    format!("the domain {} belongs to site {other}: remove it there first", d.name)
                }));
            }
        }
        ensure_primary(&tx, id).await?;
        let mut out = Vec::new();
        for d in domains {
            out.push(domain_row(&one(&tx, &format!("{DOMAIN_SELECT} WHERE d.name = $1"), &[&d.name]).await?)?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn domains(&self, site: Option<&SiteName>) -> Result<Vec<DomainRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = match site {
            Some(site) => {
                rows(&tx, &format!("{DOMAIN_SELECT} WHERE s.name = $1 ORDER BY d.name"), &[&site.as_str()]).await?
            }
            None => rows(&tx, &format!("{DOMAIN_SELECT} ORDER BY s.name, d.name"), &[]).await?,
        };
        found.iter().map(domain_row).collect()
    }

    async fn domain(&self, name: &str) -> Result<Option<DomainRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        opt(&tx, &format!("{DOMAIN_SELECT} WHERE d.name = $1"), &[&name]).await?.as_ref().map(domain_row).transpose()
    }

    async fn remove_domain(&self, site: &SiteName, name: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        if !site_has(&tx, id, name).await? {
            return Err(StoreError::NotFound(format!("domain {name} of site {site}")));
        }
        let mut removed = rows(
            &tx,
            "DELETE FROM domains WHERE site_id = $1 AND (name = $2 OR twin_of = $2) RETURNING name",
            &[&id, &name],
        )
        .await?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
        removed.sort();
        ensure_primary(&tx, id).await?;
        tx.commit().await?;
        Ok(removed)
    }

    async fn set_primary(&self, site: &SiteName, name: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        if !site_has(&tx, id, name).await? {
            return Err(StoreError::NotFound(format!("domain {name} of site {site}")));
        }
        exec(&tx, "UPDATE domains SET is_primary = (name = $2) WHERE site_id = $1", &[&id, &name]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_domain_state(
        &self,
        name: &str,
        state: DomainState,
        reason: Option<&str>,
        hint: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE domains SET state = $2, reason = $3, hint = $4 WHERE name = $1",
            &[&name, &state.as_str(), &reason, &hint],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn mark_verified(&self, name: &str, by: &str, now: UnixMillis) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE domains SET verified_at = coalesce(verified_at, $2), verified_by = coalesce(verified_by, $3),
                state = CASE WHEN state IN ('pending_verification', 'failed') THEN 'issuing' ELSE state END,
                reason = CASE WHEN state IN ('pending_verification', 'failed') THEN NULL ELSE reason END,
                hint = CASE WHEN state IN ('pending_verification', 'failed') THEN NULL ELSE hint END
             WHERE name = $1",
            &[&name, &now, &by],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn site_tls(&self, site: &SiteName) -> Result<SiteTls, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        opt(
            &tx,
            "SELECT https_redirect, hsts_max_age, hsts_include_subdomains, hsts_preload FROM site_tls WHERE site_id = $1",
            &[&id],
        )
        .await?
        .map(|r| tls_row(&r, 0))
        .transpose()
        .map(Option::unwrap_or_default)
    }

    async fn all_site_tls(&self) -> Result<Vec<(SiteName, SiteTls)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = rows(
            &tx,
            "SELECT s.name, t.https_redirect, t.hsts_max_age, t.hsts_include_subdomains, t.hsts_preload
             FROM site_tls t JOIN sites s ON s.id = t.site_id ORDER BY s.name",
            &[],
        )
        .await?;
        let mut out = Vec::new();
        for r in &found {
            let tls = tls_row(r, 1)?;
            if tls != SiteTls::default() {
                out.push((stored("site name", r.try_get(0)?)?, tls));
            }
        }
        Ok(out)
    }

    async fn set_site_tls(&self, site: &SiteName, tls: &SiteTls) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        exec(
            &tx,
            "INSERT INTO site_tls (site_id, https_redirect, hsts_max_age, hsts_include_subdomains, hsts_preload)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (site_id) DO UPDATE SET https_redirect = $2, hsts_max_age = $3,
                hsts_include_subdomains = $4, hsts_preload = $5",
            &[&id, &tls.https_redirect, &(tls.hsts_max_age as i64), &tls.hsts_include_subdomains, &tls.hsts_preload],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn store_certificate(
        &self,
        cert: &CertificateRecord,
        domains: &[String],
        verified_by: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        insert_certificate(&tx, cert).await?;
        for d in domains {
            let n = exec(
                &tx,
                "UPDATE domains SET cert_id = $2, state = 'active', reason = NULL, hint = NULL,
                    verified_at = coalesce(verified_at, $3), verified_by = coalesce(verified_by, $4),
                    challenge_token = NULL, challenge_body = NULL, challenge_alpn = NULL, attempts = 0, next_attempt_at = NULL
                 WHERE name = $1",
                &[d, &cert.id, &now, &verified_by],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {d}")));
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn certificate(&self, id: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        opt(&tx, &format!("{CERT_SELECT} WHERE id = $1"), &[&id]).await?.as_ref().map(cert_row).transpose()
    }

    async fn certificates_in_use(&self) -> Result<Vec<CertificateRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        rows(
            &tx,
            &format!("{CERT_SELECT} WHERE id IN (SELECT cert_id FROM domains WHERE cert_id IS NOT NULL UNION SELECT cert_id FROM base_certificates WHERE cert_id IS NOT NULL) ORDER BY id"),
            &[],
        )
        .await?
        .iter()
        .map(cert_row)
        .collect()
    }

    async fn prune_certificates(&self) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "DELETE FROM certificates WHERE id NOT IN (SELECT cert_id FROM domains WHERE cert_id IS NOT NULL UNION SELECT cert_id FROM base_certificates WHERE cert_id IS NOT NULL)",
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn set_challenge(&self, name: &str, challenge: Option<&AcmeChallenge>) -> Result<(), StoreError> {
        let token = challenge.map(|ch| ch.token.as_str());
        let body = challenge.map(|ch| ch.key_authorization.as_str());
        let alpn = challenge.and_then(|ch| ch.alpn_pem.as_deref());
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE domains SET challenge_token = $2, challenge_body = $3, challenge_alpn = $4 WHERE name = $1",
            &[&name, &token, &body, &alpn],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_order_failure(
        &self,
        name: &str,
        attempts: u32,
        next_attempt_at: Option<UnixMillis>,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE domains SET attempts = $2, next_attempt_at = $3 WHERE name = $1",
            &[&name, &(attempts as i64), &next_attempt_at],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("domain {name}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn acme_account(&self, directory: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        opt(&tx, "SELECT credentials_sealed FROM acme_accounts WHERE directory = $1", &[&directory])
            .await?
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .transpose()
    }

    async fn put_acme_account(&self, directory: &str, sealed: &[u8], now: UnixMillis) -> Result<Vec<u8>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "INSERT INTO acme_accounts (directory, credentials_sealed, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (directory) DO NOTHING",
            &[&directory, &sealed, &now],
        )
        .await?;
        let stored: Vec<u8> =
            one(&tx, "SELECT credentials_sealed FROM acme_accounts WHERE directory = $1", &[&directory])
                .await?
                .try_get(0)?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn take_lease(&self, name: &str, owner: &str, now: UnixMillis, ttl_ms: i64) -> Result<bool, StoreError> {
        let until = now.saturating_add(ttl_ms);
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "INSERT INTO leases (name, owner, until_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = $2, until_at = $3
             WHERE leases.owner = $2 OR leases.until_at < $4",
            &[&name, &owner, &until, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "DELETE FROM leases WHERE name = $1 AND owner = $2", &[&name, &owner]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn base_certificates(&self) -> Result<Vec<BaseCertificate>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        rows(
            &tx,
            "SELECT pattern, cert_id, attempts, next_attempt_at, reason, updated_at,
                    challenge_token, challenge_body, challenge_alpn
             FROM base_certificates ORDER BY pattern",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(BaseCertificate {
                pattern: r.try_get(0)?,
                cert_id: r.try_get(1)?,
                attempts: r.try_get::<_, i64>(2)?.clamp(0, u32::MAX as i64) as u32,
                next_attempt_at: r.try_get(3)?,
                reason: r.try_get(4)?,
                updated_at: r.try_get(5)?,
                challenge: match (r.try_get::<_, Option<String>>(6)?, r.try_get::<_, Option<String>>(7)?) {
                    (Some(token), Some(key_authorization)) => {
                        Some(AcmeChallenge { token, key_authorization, alpn_pem: r.try_get(8)? })
                    }
                    _ => None,
                },
            })
        })
        .collect()
    }

    async fn store_base_certificate(
        &self,
        pattern: &str,
        cert: &CertificateRecord,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        insert_certificate(&tx, cert).await?;
        exec(
            &tx,
            "INSERT INTO base_certificates (pattern, cert_id, attempts, next_attempt_at, reason, updated_at)
             VALUES ($1, $2, 0, NULL, NULL, $3)
             ON CONFLICT (pattern) DO UPDATE SET cert_id = excluded.cert_id, attempts = 0,
                next_attempt_at = NULL, reason = NULL, updated_at = excluded.updated_at,
                challenge_token = NULL, challenge_body = NULL, challenge_alpn = NULL",
            &[&pattern, &cert.id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_base_failure(
        &self,
        pattern: &str,
        attempts: u32,
        next_attempt_at: Option<UnixMillis>,
        reason: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "INSERT INTO base_certificates (pattern, cert_id, attempts, next_attempt_at, reason, updated_at)
             VALUES ($1, NULL, $2, $3, $4, $5)
             ON CONFLICT (pattern) DO UPDATE SET attempts = excluded.attempts,
                next_attempt_at = excluded.next_attempt_at, reason = excluded.reason, updated_at = excluded.updated_at",
            &[&pattern, &(attempts as i64), &next_attempt_at, &reason, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_base_certificate(&self, pattern: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(&tx, "DELETE FROM base_certificates WHERE pattern = $1", &[&pattern]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn want_base_certificate(&self, pattern: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "INSERT INTO base_certificates (pattern, cert_id, attempts, updated_at) VALUES ($1, NULL, 0, $2)
             ON CONFLICT (pattern) DO NOTHING",
            &[&pattern, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn set_base_challenge(&self, pattern: &str, challenge: Option<&AcmeChallenge>) -> Result<(), StoreError> {
        let token = challenge.map(|ch| ch.token.as_str());
        let body = challenge.map(|ch| ch.key_authorization.as_str());
        let alpn = challenge.and_then(|ch| ch.alpn_pem.as_deref());
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE base_certificates SET challenge_token = $2, challenge_body = $3, challenge_alpn = $4
             WHERE pattern = $1",
            &[&pattern, &token, &body, &alpn],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("base certificate {pattern}")));
        }
        tx.commit().await?;
        Ok(())
    }
}

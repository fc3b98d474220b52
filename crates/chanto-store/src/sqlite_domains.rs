//! [`DomainStore`] on SQLite.

use async_trait::async_trait;
use chanto_core::SiteName;
use rusqlite::{Connection, OptionalExtension, params};

use crate::domains::*;
use crate::sqlite::{SqliteMeta, parse, site_id};
use crate::{StoreError, UnixMillis};

const DOMAIN_SELECT: &str = "SELECT d.name, s.name, d.branch, d.is_primary, d.twin_of, d.state, d.reason, d.hint,
       d.verify_token, d.verified_at, d.verified_by, d.cert_id, d.created_at,
       d.challenge_token, d.challenge_body, d.attempts, d.next_attempt_at, d.challenge_alpn
       FROM domains d JOIN sites s ON s.id = d.site_id";

fn conversion(idx: usize, e: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
}

fn domain_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRecord> {
    let state: String = r.get(5)?;
    Ok(DomainRecord {
        name: r.get(0)?,
        site: parse(1, r.get(1)?)?,
        branch: r.get::<_, Option<String>>(2)?.map(|b| parse(2, b)).transpose()?,
        primary: r.get(3)?,
        twin_of: r.get(4)?,
        state: DomainState::parse(&state).map_err(|e| conversion(5, e))?,
        reason: r.get(6)?,
        hint: r.get(7)?,
        verify_token: r.get(8)?,
        verified_at: r.get(9)?,
        verified_by: r.get(10)?,
        cert_id: r.get(11)?,
        created_at: r.get(12)?,
        challenge: match (r.get::<_, Option<String>>(13)?, r.get::<_, Option<String>>(14)?) {
            (Some(token), Some(key_authorization)) => {
                Some(AcmeChallenge { token, key_authorization, alpn_pem: r.get(17)? })
            }
            _ => None,
        },
        attempts: r.get::<_, i64>(15)?.clamp(0, u32::MAX as i64) as u32,
        next_attempt_at: r.get(16)?,
    })
}

/// Stores a certificate once (storing the same id again is harmless).
fn insert_certificate(tx: &Connection, cert: &CertificateRecord) -> Result<(), StoreError> {
    let names = serde_json::to_string(&cert.names).map_err(|e| StoreError::Db(e.to_string()))?;
    tx.execute(
        "INSERT INTO certificates (id, source, names, chain_pem, key_sealed, not_before, not_after, issuer, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
        params![
            cert.id,
            cert.source.as_str(),
            names,
            cert.chain_pem,
            cert.key_sealed,
            cert.not_before,
            cert.not_after,
            cert.issuer,
            cert.created_at
        ],
    )?;
    Ok(())
}

const CERT_SELECT: &str =
    "SELECT id, source, names, chain_pem, key_sealed, not_before, not_after, issuer, created_at FROM certificates";

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertificateRecord> {
    let source: String = r.get(1)?;
    let names: String = r.get(2)?;
    Ok(CertificateRecord {
        id: r.get(0)?,
        source: CertificateSource::parse(&source).map_err(|e| conversion(1, e))?,
        names: serde_json::from_str(&names).map_err(|e| conversion(2, e.to_string()))?,
        chain_pem: r.get(3)?,
        key_sealed: r.get(4)?,
        not_before: r.get(5)?,
        not_after: r.get(6)?,
        issuer: r.get(7)?,
        created_at: r.get(8)?,
    })
}

fn tls_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SiteTls> {
    Ok(SiteTls {
        https_redirect: r.get(at)?,
        hsts_max_age: r.get::<_, i64>(at + 1)?.max(0) as u64,
        hsts_include_subdomains: r.get(at + 2)?,
        hsts_preload: r.get(at + 3)?,
    })
}

/// The site that has `name`, if any.
fn owner(tx: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    Ok(tx
        .query_row("SELECT s.name FROM domains d JOIN sites s ON s.id = d.site_id WHERE d.name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?)
}

fn site_domains(tx: &Connection, site: Option<&SiteName>) -> Result<Vec<DomainRecord>, StoreError> {
    let rows = match site {
        Some(site) => {
            let mut st = tx.prepare(&format!("{DOMAIN_SELECT} WHERE s.name = ?1 ORDER BY d.name"))?;
            st.query_map([site.as_str()], domain_row)?.collect::<Result<Vec<_>, _>>()?
        }
        None => {
            let mut st = tx.prepare(&format!("{DOMAIN_SELECT} ORDER BY s.name, d.name"))?;
            st.query_map([], domain_row)?.collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(rows)
}

/// Makes sure a site with domains has exactly one primary: the oldest.
fn ensure_primary(tx: &Connection, site: i64) -> Result<(), StoreError> {
    let has: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM domains WHERE site_id = ?1 AND is_primary)", [site], |r| r.get(0))?;
    if !has {
        tx.execute(
            "UPDATE domains SET is_primary = 1 WHERE name =
                (SELECT name FROM domains WHERE site_id = ?1 ORDER BY created_at, twin_of IS NOT NULL, name LIMIT 1)",
            [site],
        )?;
    }
    Ok(())
}

#[async_trait]
impl DomainStore for SqliteMeta {
    async fn add_domains(
        &self,
        site: &SiteName,
        domains: &[NewDomain],
        now: UnixMillis,
    ) -> Result<Vec<DomainRecord>, StoreError> {
        let (site, domains) = (site.clone(), domains.to_vec());
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            for d in &domains {
                if let Some(other) = owner(&tx, &d.name)? {
                    return Err(StoreError::Conflict(if other == site.as_str() {
                        format!("site {site} has the domain {} already", d.name)
                    } else {
                        format!("the domain {} belongs to site {other}: remove it there first", d.name)
                    }));
                }
                tx.execute(
                    "INSERT INTO domains (name, site_id, branch, is_primary, twin_of, state, verify_token, created_at)
                     VALUES (?1, ?2, ?3, 0, ?4, 'pending_verification', ?5, ?6)",
                    params![d.name, id, d.branch.as_ref().map(|b| b.as_str()), d.twin_of, d.verify_token, now],
                )?;
            }
            ensure_primary(&tx, id)?;
            let mut out = Vec::new();
            for d in &domains {
                out.push(tx.query_row(&format!("{DOMAIN_SELECT} WHERE d.name = ?1"), [&d.name], domain_row)?);
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn domains(&self, site: Option<&SiteName>) -> Result<Vec<DomainRecord>, StoreError> {
        let site = site.cloned();
        self.call(move |c| site_domains(c, site.as_ref())).await
    }

    async fn domain(&self, name: &str) -> Result<Option<DomainRecord>, StoreError> {
        let name = name.to_owned();
        self.call(move |c| {
            Ok(c.query_row(&format!("{DOMAIN_SELECT} WHERE d.name = ?1"), [name], domain_row).optional()?)
        })
        .await
    }

    async fn remove_domain(&self, site: &SiteName, name: &str) -> Result<Vec<String>, StoreError> {
        let (site, name) = (site.clone(), name.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM domains WHERE site_id = ?1 AND name = ?2)",
                params![id, name],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StoreError::NotFound(format!("domain {name} of site {site}")));
            }
            let mut st =
                tx.prepare("DELETE FROM domains WHERE site_id = ?1 AND (name = ?2 OR twin_of = ?2) RETURNING name")?;
            let mut removed =
                st.query_map(params![id, name], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            drop(st);
            removed.sort();
            ensure_primary(&tx, id)?;
            tx.commit()?;
            Ok(removed)
        })
        .await
    }

    async fn set_primary(&self, site: &SiteName, name: &str) -> Result<(), StoreError> {
        let (site, name) = (site.clone(), name.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            let found: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM domains WHERE site_id = ?1 AND name = ?2)",
                params![id, name],
                |r| r.get(0),
            )?;
            if !found {
                return Err(StoreError::NotFound(format!("domain {name} of site {site}")));
            }
            tx.execute("UPDATE domains SET is_primary = (name = ?2) WHERE site_id = ?1", params![id, name])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn set_domain_state(
        &self,
        name: &str,
        state: DomainState,
        reason: Option<&str>,
        hint: Option<&str>,
    ) -> Result<(), StoreError> {
        let (name, reason, hint) = (name.to_owned(), reason.map(str::to_owned), hint.map(str::to_owned));
        self.call(move |c| {
            let n = c.execute(
                "UPDATE domains SET state = ?2, reason = ?3, hint = ?4 WHERE name = ?1",
                params![name, state.as_str(), reason, hint],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            Ok(())
        })
        .await
    }

    async fn mark_verified(&self, name: &str, by: &str, now: UnixMillis) -> Result<(), StoreError> {
        let (name, by) = (name.to_owned(), by.to_owned());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE domains SET verified_at = coalesce(verified_at, ?2), verified_by = coalesce(verified_by, ?3),
                    state = CASE WHEN state IN ('pending_verification', 'failed') THEN 'issuing' ELSE state END,
                    reason = CASE WHEN state IN ('pending_verification', 'failed') THEN NULL ELSE reason END,
                    hint = CASE WHEN state IN ('pending_verification', 'failed') THEN NULL ELSE hint END
                 WHERE name = ?1",
                params![name, now, by],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            Ok(())
        })
        .await
    }

    async fn site_tls(&self, site: &SiteName) -> Result<SiteTls, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let id = site_id(c, &site)?;
            Ok(c.query_row(
                "SELECT https_redirect, hsts_max_age, hsts_include_subdomains, hsts_preload FROM site_tls WHERE site_id = ?1",
                [id],
                |r| tls_row(r, 0),
            )
            .optional()?
            .unwrap_or_default())
        })
        .await
    }

    async fn all_site_tls(&self) -> Result<Vec<(SiteName, SiteTls)>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT s.name, t.https_redirect, t.hsts_max_age, t.hsts_include_subdomains, t.hsts_preload
                 FROM site_tls t JOIN sites s ON s.id = t.site_id ORDER BY s.name",
            )?;
            let rows = st
                .query_map([], |r| Ok((parse::<SiteName>(0, r.get(0)?)?, tls_row(r, 1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows.into_iter().filter(|(_, t)| *t != SiteTls::default()).collect())
        })
        .await
    }

    async fn set_site_tls(&self, site: &SiteName, tls: &SiteTls) -> Result<(), StoreError> {
        let (site, tls) = (site.clone(), *tls);
        self.call(move |c| {
            let id = site_id(c, &site)?;
            c.execute(
                "INSERT INTO site_tls (site_id, https_redirect, hsts_max_age, hsts_include_subdomains, hsts_preload)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (site_id) DO UPDATE SET https_redirect = ?2, hsts_max_age = ?3,
                    hsts_include_subdomains = ?4, hsts_preload = ?5",
                params![id, tls.https_redirect, tls.hsts_max_age as i64, tls.hsts_include_subdomains, tls.hsts_preload],
            )?;
            Ok(())
        })
        .await
    }

    async fn store_certificate(
        &self,
        cert: &CertificateRecord,
        domains: &[String],
        verified_by: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let (cert, domains, by) = (cert.clone(), domains.to_vec(), verified_by.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            insert_certificate(&tx, &cert)?;
            for d in &domains {
                let n = tx.execute(
                    "UPDATE domains SET cert_id = ?2, state = 'active', reason = NULL, hint = NULL,
                        verified_at = coalesce(verified_at, ?3), verified_by = coalesce(verified_by, ?4),
                        challenge_token = NULL, challenge_body = NULL, challenge_alpn = NULL, attempts = 0, next_attempt_at = NULL
                     WHERE name = ?1",
                    params![d, cert.id, now, by],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("domain {d}")));
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn certificate(&self, id: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| Ok(c.query_row(&format!("{CERT_SELECT} WHERE id = ?1"), [id], cert_row).optional()?)).await
    }

    async fn certificates_in_use(&self) -> Result<Vec<CertificateRecord>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(&format!(
                "{CERT_SELECT} WHERE id IN (SELECT cert_id FROM domains WHERE cert_id IS NOT NULL UNION SELECT cert_id FROM base_certificates WHERE cert_id IS NOT NULL) ORDER BY id"
            ))?;
            Ok(st.query_map([], cert_row)?.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn prune_certificates(&self) -> Result<u64, StoreError> {
        self.call(|c| {
            Ok(c.execute(
                "DELETE FROM certificates WHERE id NOT IN (SELECT cert_id FROM domains WHERE cert_id IS NOT NULL UNION SELECT cert_id FROM base_certificates WHERE cert_id IS NOT NULL)",
                [],
            )? as u64)
        })
        .await
    }

    async fn set_challenge(&self, name: &str, challenge: Option<&AcmeChallenge>) -> Result<(), StoreError> {
        let (name, challenge) = (name.to_owned(), challenge.cloned());
        self.call(move |c| {
            let (token, body, alpn) = match challenge {
                Some(ch) => (Some(ch.token), Some(ch.key_authorization), ch.alpn_pem),
                None => (None, None, None),
            };
            let n = c.execute(
                "UPDATE domains SET challenge_token = ?2, challenge_body = ?3, challenge_alpn = ?4 WHERE name = ?1",
                params![name, token, body, alpn],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            Ok(())
        })
        .await
    }

    async fn record_order_failure(
        &self,
        name: &str,
        attempts: u32,
        next_attempt_at: Option<UnixMillis>,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE domains SET attempts = ?2, next_attempt_at = ?3 WHERE name = ?1",
                params![name, attempts as i64, next_attempt_at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("domain {name}")));
            }
            Ok(())
        })
        .await
    }

    async fn acme_account(&self, directory: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let directory = directory.to_owned();
        self.call(move |c| {
            Ok(c.query_row("SELECT credentials_sealed FROM acme_accounts WHERE directory = ?1", [directory], |r| {
                r.get(0)
            })
            .optional()?)
        })
        .await
    }

    async fn put_acme_account(&self, directory: &str, sealed: &[u8], now: UnixMillis) -> Result<Vec<u8>, StoreError> {
        let (directory, sealed) = (directory.to_owned(), sealed.to_vec());
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO acme_accounts (directory, credentials_sealed, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (directory) DO NOTHING",
                params![directory, sealed, now],
            )?;
            let stored =
                tx.query_row("SELECT credentials_sealed FROM acme_accounts WHERE directory = ?1", [&directory], |r| {
                    r.get(0)
                })?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn take_lease(&self, name: &str, owner: &str, now: UnixMillis, ttl_ms: i64) -> Result<bool, StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.call(move |c| {
            let n = c.execute(
                "INSERT INTO leases (name, owner, until_at) VALUES (?1, ?2, ?3 + ?4)
                 ON CONFLICT (name) DO UPDATE SET owner = ?2, until_at = ?3 + ?4
                 WHERE leases.owner = ?2 OR leases.until_at < ?3",
                params![name, owner, now, ttl_ms],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.call(move |c| {
            c.execute("DELETE FROM leases WHERE name = ?1 AND owner = ?2", params![name, owner])?;
            Ok(())
        })
        .await
    }

    async fn base_certificates(&self) -> Result<Vec<BaseCertificate>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT pattern, cert_id, attempts, next_attempt_at, reason, updated_at,
                        challenge_token, challenge_body, challenge_alpn
                 FROM base_certificates ORDER BY pattern",
            )?;
            let rows = st.query_map([], |r| {
                Ok(BaseCertificate {
                    pattern: r.get(0)?,
                    cert_id: r.get(1)?,
                    attempts: r.get::<_, i64>(2)?.clamp(0, u32::MAX as i64) as u32,
                    next_attempt_at: r.get(3)?,
                    reason: r.get(4)?,
                    updated_at: r.get(5)?,
                    challenge: match (r.get::<_, Option<String>>(6)?, r.get::<_, Option<String>>(7)?) {
                        (Some(token), Some(key_authorization)) => {
                            Some(AcmeChallenge { token, key_authorization, alpn_pem: r.get(8)? })
                        }
                        _ => None,
                    },
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn store_base_certificate(
        &self,
        pattern: &str,
        cert: &CertificateRecord,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let (pattern, cert) = (pattern.to_owned(), cert.clone());
        self.call(move |c| {
            let tx = c.transaction()?;
            insert_certificate(&tx, &cert)?;
            tx.execute(
                "INSERT INTO base_certificates (pattern, cert_id, attempts, next_attempt_at, reason, updated_at)
                 VALUES (?1, ?2, 0, NULL, NULL, ?3)
                 ON CONFLICT (pattern) DO UPDATE SET cert_id = excluded.cert_id, attempts = 0,
                    next_attempt_at = NULL, reason = NULL, updated_at = excluded.updated_at,
                    challenge_token = NULL, challenge_body = NULL, challenge_alpn = NULL",
                params![pattern, cert.id, now],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn record_base_failure(
        &self,
        pattern: &str,
        attempts: u32,
        next_attempt_at: Option<UnixMillis>,
        reason: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let (pattern, reason) = (pattern.to_owned(), reason.to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT INTO base_certificates (pattern, cert_id, attempts, next_attempt_at, reason, updated_at)
                 VALUES (?1, NULL, ?2, ?3, ?4, ?5)
                 ON CONFLICT (pattern) DO UPDATE SET attempts = excluded.attempts,
                    next_attempt_at = excluded.next_attempt_at, reason = excluded.reason, updated_at = excluded.updated_at",
                params![pattern, attempts as i64, next_attempt_at, reason, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_base_certificate(&self, pattern: &str) -> Result<bool, StoreError> {
        let pattern = pattern.to_owned();
        self.call(move |c| Ok(c.execute("DELETE FROM base_certificates WHERE pattern = ?1", [pattern])? > 0)).await
    }

    async fn want_base_certificate(&self, pattern: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let pattern = pattern.to_owned();
        self.call(move |c| {
            Ok(c.execute(
                "INSERT INTO base_certificates (pattern, cert_id, attempts, updated_at) VALUES (?1, NULL, 0, ?2)
                 ON CONFLICT (pattern) DO NOTHING",
                params![pattern, now],
            )? > 0)
        })
        .await
    }

    async fn set_base_challenge(&self, pattern: &str, challenge: Option<&AcmeChallenge>) -> Result<(), StoreError> {
        let (pattern, challenge) = (pattern.to_owned(), challenge.cloned());
        self.call(move |c| {
            let (token, body, alpn) = match challenge {
                Some(ch) => (Some(ch.token), Some(ch.key_authorization), ch.alpn_pem),
                None => (None, None, None),
            };
            let n = c.execute(
                "UPDATE base_certificates SET challenge_token = ?2, challenge_body = ?3, challenge_alpn = ?4
                 WHERE pattern = ?1",
                params![pattern, token, body, alpn],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("base certificate {pattern}")));
            }
            Ok(())
        })
        .await
    }
}

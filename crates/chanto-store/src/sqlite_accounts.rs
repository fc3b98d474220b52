//! [`AccountStore`] on SQLite.

use async_trait::async_trait;
use chanto_core::ContentHash;
use rusqlite::{OptionalExtension, params};

use crate::accounts::*;
use crate::sqlite::SqliteMeta;
use crate::{StoreError, UnixMillis};

const USER_SELECT: &str = "SELECT id, name, role, password_hash, created_at, last_login_at, sso_subject FROM users";
const TOKEN_SELECT: &str =
    "SELECT id, user_id, name, scope, created_at, expires_at, last_used_at, revoked_at FROM api_tokens";
const AUDIT_SELECT: &str = "SELECT id, at, actor, via, source, action, target, status FROM audit_log";

fn parse<T: std::str::FromStr<Err = String>>(col: usize, s: String) -> rusqlite::Result<T> {
    s.parse().map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, e.into()))
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        role: parse(2, r.get(2)?)?,
        password_hash: r.get(3)?,
        created_at: r.get(4)?,
        last_login_at: r.get(5)?,
        sso_subject: r.get(6)?,
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiToken> {
    Ok(ApiToken {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        scope: parse(3, r.get(3)?)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        via: r.get(3)?,
        source: r.get(4)?,
        action: r.get(5)?,
        target: r.get(6)?,
        status: r.get::<_, i64>(7)? as u16,
    })
}

#[async_trait]
impl AccountStore for SqliteMeta {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let u = user.clone();
        self.call(move |c| {
            let n = c.execute(
                "INSERT INTO users (id, name, role, password_hash, created_at, last_login_at, sso_subject)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![u.id, u.name, u.role.as_str(), u.password_hash, u.created_at, u.last_login_at, u.sso_subject],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("user {} (or its single sign-on identity) exists", u.name)));
            }
            Ok(())
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(&format!("{USER_SELECT} ORDER BY name"))?;
            let rows = st.query_map([], user_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let name = name.to_owned();
        self.call(move |c| Ok(c.query_row(&format!("{USER_SELECT} WHERE name = ?1"), [name], user_row).optional()?))
            .await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| Ok(c.query_row(&format!("{USER_SELECT} WHERE id = ?1"), [id], user_row).optional()?)).await
    }

    async fn set_user_role(&self, name: &str, role: Role) -> Result<Option<UserRecord>, StoreError> {
        let name = name.to_owned();
        self.call(move |c| {
            c.execute("UPDATE users SET role = ?2 WHERE name = ?1", params![name, role.as_str()])?;
            Ok(c.query_row(&format!("{USER_SELECT} WHERE name = ?1"), [name], user_row).optional()?)
        })
        .await
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool, StoreError> {
        let (name, hash) = (name.to_owned(), password_hash.map(str::to_owned));
        self.call(move |c| {
            Ok(c.execute("UPDATE users SET password_hash = ?2 WHERE name = ?1", params![name, hash])? > 0)
        })
        .await
    }

    async fn touch_user_login(&self, id: &str, now: UnixMillis) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute("UPDATE users SET last_login_at = ?2 WHERE id = ?1", params![id, now])?;
            Ok(())
        })
        .await
    }

    async fn user_by_sso(&self, sso_subject: &str) -> Result<Option<UserRecord>, StoreError> {
        let sub = sso_subject.to_owned();
        self.call(move |c| {
            Ok(c.query_row(&format!("{USER_SELECT} WHERE sso_subject = ?1"), [sub], user_row).optional()?)
        })
        .await
    }

    async fn set_user_sso(&self, name: &str, sso_subject: Option<&str>) -> Result<Option<UserRecord>, StoreError> {
        let (name, sub) = (name.to_owned(), sso_subject.map(str::to_owned));
        self.call(move |c| {
            let tx = c.transaction()?;
            if let Some(sub) = &sub {
                let other: Option<String> = tx
                    .query_row(
                        "SELECT name FROM users WHERE sso_subject = ?1 AND name <> ?2",
                        params![sub, name],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(other) = other {
                    return Err(StoreError::Conflict(format!("user {other} has that single sign-on identity")));
                }
            }
            tx.execute("UPDATE users SET sso_subject = ?2 WHERE name = ?1", params![name, sub])?;
            let out = tx.query_row(&format!("{USER_SELECT} WHERE name = ?1"), [&name], user_row).optional()?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM api_tokens WHERE user_id IN (SELECT id FROM users WHERE name = ?1)", [&name])?;
            tx.execute("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = ?1)", [&name])?;
            tx.execute("DELETE FROM invites WHERE user_id IN (SELECT id FROM users WHERE name = ?1)", [&name])?;
            let n = tx.execute("DELETE FROM users WHERE name = ?1", [&name])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn add_api_token(&self, token: &ApiToken, hash: &ContentHash) -> Result<(), StoreError> {
        let (t, hash) = (token.clone(), hash.to_hex());
        self.call(move |c| {
            let tx = c.transaction()?;
            let user: Option<String> =
                tx.query_row("SELECT id FROM users WHERE id = ?1", [&t.user_id], |r| r.get(0)).optional()?;
            if user.is_none() {
                return Err(StoreError::NotFound(format!("user {}", t.user_id)));
            }
            let n = tx.execute(
                "INSERT INTO api_tokens (id, user_id, name, scope, hash, created_at, expires_at, last_used_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                params![
                    t.id,
                    t.user_id,
                    t.name,
                    t.scope.as_str(),
                    hash,
                    t.created_at,
                    t.expires_at,
                    t.last_used_at,
                    t.revoked_at
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("token {} (or its hash) exists", t.id)));
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn api_token_by_hash(&self, hash: &ContentHash) -> Result<Option<(ApiToken, UserRecord)>, StoreError> {
        let hash = hash.to_hex();
        self.call(move |c| {
            let tx = c.transaction()?;
            let Some(token) = tx.query_row(&format!("{TOKEN_SELECT} WHERE hash = ?1"), [hash], token_row).optional()?
            else {
                return Ok(None);
            };
            let user = tx.query_row(&format!("{USER_SELECT} WHERE id = ?1"), [&token.user_id], user_row).optional()?;
            tx.commit()?;
            Ok(user.map(|u| (token, u)))
        })
        .await
    }

    async fn api_tokens(&self, user_id: Option<&str>) -> Result<Vec<ApiToken>, StoreError> {
        let user_id = user_id.map(str::to_owned);
        self.call(move |c| {
            let mut st =
                c.prepare(&format!("{TOKEN_SELECT} WHERE (?1 IS NULL OR user_id = ?1) ORDER BY created_at, id"))?;
            let rows = st.query_map([user_id], token_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_api_token(&self, id: &str, now: UnixMillis) -> Result<Option<ApiToken>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now])?;
            let token = tx.query_row(&format!("{TOKEN_SELECT} WHERE id = ?1"), [&id], token_row).optional()?;
            tx.commit()?;
            Ok(token)
        })
        .await
    }

    async fn touch_api_token(&self, id: &str, now: UnixMillis) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE api_tokens SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
                params![id, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_session(&self, id_hash: &ContentHash, s: &SessionRecord) -> Result<(), StoreError> {
        let (hash, s) = (id_hash.to_hex(), s.clone());
        self.call(move |c| {
            let n = c.execute(
                "INSERT INTO sessions (id_hash, user_id, csrf, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![hash, s.user_id, s.csrf, s.created_at, s.last_seen_at],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict("session exists".into()));
            }
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &ContentHash) -> Result<Option<(SessionRecord, UserRecord)>, StoreError> {
        let hash = id_hash.to_hex();
        self.call(move |c| {
            let tx = c.transaction()?;
            let Some(s) = tx
                .query_row(
                    "SELECT user_id, csrf, created_at, last_seen_at FROM sessions WHERE id_hash = ?1",
                    [hash],
                    |r| {
                        Ok(SessionRecord {
                            user_id: r.get(0)?,
                            csrf: r.get(1)?,
                            created_at: r.get(2)?,
                            last_seen_at: r.get(3)?,
                        })
                    },
                )
                .optional()?
            else {
                return Ok(None);
            };
            let user = tx.query_row(&format!("{USER_SELECT} WHERE id = ?1"), [&s.user_id], user_row).optional()?;
            tx.commit()?;
            Ok(user.map(|u| (s, u)))
        })
        .await
    }

    async fn touch_session(&self, id_hash: &ContentHash, now: UnixMillis) -> Result<(), StoreError> {
        let hash = id_hash.to_hex();
        self.call(move |c| {
            c.execute(
                "UPDATE sessions SET last_seen_at = max(last_seen_at, ?2) WHERE id_hash = ?1",
                params![hash, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, id_hash: &ContentHash) -> Result<bool, StoreError> {
        let hash = id_hash.to_hex();
        self.call(move |c| Ok(c.execute("DELETE FROM sessions WHERE id_hash = ?1", [hash])? > 0)).await
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        let id = user_id.to_owned();
        self.call(move |c| Ok(c.execute("DELETE FROM sessions WHERE user_id = ?1", [id])? as u64)).await
    }

    async fn prune_sessions(&self, idle_before: UnixMillis, created_before: UnixMillis) -> Result<u64, StoreError> {
        self.call(move |c| {
            Ok(c.execute(
                "DELETE FROM sessions WHERE last_seen_at < ?1 OR created_at < ?2",
                params![idle_before, created_before],
            )? as u64)
        })
        .await
    }

    async fn create_invite(
        &self,
        token_hash: &ContentHash,
        user_id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        let (hash, user_id) = (token_hash.to_hex(), user_id.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM invites WHERE user_id = ?1", [&user_id])?;
            tx.execute(
                "INSERT INTO invites (token_hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![hash, user_id, now, expires_at],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn take_invite(&self, token_hash: &ContentHash, now: UnixMillis) -> Result<Option<UserRecord>, StoreError> {
        let hash = token_hash.to_hex();
        self.call(move |c| {
            let tx = c.transaction()?;
            let row: Option<(String, i64)> = tx
                .query_row("DELETE FROM invites WHERE token_hash = ?1 RETURNING user_id, expires_at", [&hash], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let user = match row {
                Some((user_id, expires)) if expires > now => {
                    tx.query_row(&format!("{USER_SELECT} WHERE id = ?1"), [user_id], user_row).optional()?
                }
                _ => None,
            };
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn invite(&self, token_hash: &ContentHash, now: UnixMillis) -> Result<Option<UserRecord>, StoreError> {
        let hash = token_hash.to_hex();
        self.call(move |c| {
            Ok(c.query_row(
                &format!(
                    "{USER_SELECT} WHERE id = (SELECT user_id FROM invites WHERE token_hash = ?1 AND expires_at > ?2)"
                ),
                params![hash, now],
                user_row,
            )
            .optional()?)
        })
        .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        let e = entry.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO audit_log (at, actor, via, source, action, target, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![e.at, e.actor, e.via, e.source, e.action, e.target, e.status as i64],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let q = query.clone();
        let limit = q.limit.clamp(1, AUDIT_PAGE_MAX) as i64;
        self.call(move |c| {
            let mut st = c.prepare(&format!(
                "{AUDIT_SELECT} WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR actor = ?2) ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![q.before, q.actor, limit], audit_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }
}

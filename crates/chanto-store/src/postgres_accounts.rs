//! [`AccountStore`] on PostgreSQL.

use async_trait::async_trait;
use chanto_core::ContentHash;
use tokio_postgres::Row;

use crate::accounts::*;
use crate::postgres::{PostgresMeta, exec, one, opt, rows};
use crate::{StoreError, UnixMillis};

const USER_SELECT: &str = "SELECT id, name, role, password_hash, created_at, last_login_at, sso_subject FROM users";
const TOKEN_SELECT: &str =
    "SELECT id, user_id, name, scope, created_at, expires_at, last_used_at, revoked_at FROM api_tokens";
const AUDIT_SELECT: &str = "SELECT id, at, actor, via, source, action, target, status FROM audit_log";

fn user_row(r: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        role: r.try_get::<_, String>(2)?.parse().map_err(StoreError::Db)?,
        password_hash: r.try_get(3)?,
        created_at: r.try_get(4)?,
        last_login_at: r.try_get(5)?,
        sso_subject: r.try_get(6)?,
    })
}

fn token_row(r: &Row) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: r.try_get(0)?,
        user_id: r.try_get(1)?,
        name: r.try_get(2)?,
        scope: r.try_get::<_, String>(3)?.parse().map_err(StoreError::Db)?,
        created_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        last_used_at: r.try_get(6)?,
        revoked_at: r.try_get(7)?,
    })
}

fn audit_row(r: &Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: r.try_get(0)?,
        at: r.try_get(1)?,
        actor: r.try_get(2)?,
        via: r.try_get(3)?,
        source: r.try_get(4)?,
        action: r.try_get(5)?,
        target: r.try_get(6)?,
        status: r.try_get::<_, i32>(7)? as u16,
    })
}

#[async_trait]
impl AccountStore for PostgresMeta {
    async fn create_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "INSERT INTO users (id, name, role, password_hash, created_at, last_login_at, sso_subject)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[&u.id, &u.name, &u.role.as_str(), &u.password_hash, &u.created_at, &u.last_login_at, &u.sso_subject],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("user {} (or its single sign-on identity) exists", u.name)));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = rows(&tx, &format!("{USER_SELECT} ORDER BY name"), &[]).await?.iter().map(user_row).collect();
        tx.commit().await?;
        out
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = opt(&tx, &format!("{USER_SELECT} WHERE name = $1"), &[&name]).await?;
        tx.commit().await?;
        out.as_ref().map(user_row).transpose()
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = opt(&tx, &format!("{USER_SELECT} WHERE id = $1"), &[&id]).await?;
        tx.commit().await?;
        out.as_ref().map(user_row).transpose()
    }

    async fn set_user_role(&self, name: &str, role: Role) -> Result<Option<UserRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "UPDATE users SET role = $2 WHERE name = $1", &[&name, &role.as_str()]).await?;
        let out = opt(&tx, &format!("{USER_SELECT} WHERE name = $1"), &[&name]).await?;
        tx.commit().await?;
        out.as_ref().map(user_row).transpose()
    }

    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(&tx, "UPDATE users SET password_hash = $2 WHERE name = $1", &[&name, &password_hash]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn user_by_sso(&self, sso_subject: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = opt(&tx, &format!("{USER_SELECT} WHERE sso_subject = $1"), &[&sso_subject]).await?;
        tx.commit().await?;
        out.as_ref().map(user_row).transpose()
    }

    async fn set_user_sso(&self, name: &str, sso_subject: Option<&str>) -> Result<Option<UserRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        if let Some(sub) = sso_subject
            && let Some(other) =
                opt(&tx, "SELECT name FROM users WHERE sso_subject = $1 AND name <> $2", &[&sub, &name]).await?
        {
            let other: String = other.try_get(0)?;
            return Err(StoreError::Conflict(format!("user {other} has that single sign-on identity")));
        }
        exec(&tx, "UPDATE users SET sso_subject = $2 WHERE name = $1", &[&name, &sso_subject]).await?;
        let out = opt(&tx, &format!("{USER_SELECT} WHERE name = $1"), &[&name]).await?;
        tx.commit().await?;
        out.as_ref().map(user_row).transpose()
    }

    async fn touch_user_login(&self, id: &str, now: UnixMillis) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "UPDATE users SET last_login_at = $2 WHERE id = $1", &[&id, &now]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_user(&self, name: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "DELETE FROM api_tokens WHERE user_id IN (SELECT id FROM users WHERE name = $1)", &[&name]).await?;
        exec(&tx, "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE name = $1)", &[&name]).await?;
        exec(&tx, "DELETE FROM invites WHERE user_id IN (SELECT id FROM users WHERE name = $1)", &[&name]).await?;
        let n = exec(&tx, "DELETE FROM users WHERE name = $1", &[&name]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn add_api_token(&self, t: &ApiToken, hash: &ContentHash) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // The owner, locked so a concurrent delete waits for this insert.
        if opt(&tx, "SELECT id FROM users WHERE id = $1 FOR UPDATE", &[&t.user_id]).await?.is_none() {
            return Err(StoreError::NotFound(format!("user {}", t.user_id)));
        }
        let n = exec(
            &tx,
            "INSERT INTO api_tokens (id, user_id, name, scope, hash, created_at, expires_at, last_used_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &[
                &t.id,
                &t.user_id,
                &t.name,
                &t.scope.as_str(),
                &hash.to_hex(),
                &t.created_at,
                &t.expires_at,
                &t.last_used_at,
                &t.revoked_at,
            ],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("token {} (or its hash) exists", t.id)));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn api_token_by_hash(&self, hash: &ContentHash) -> Result<Option<(ApiToken, UserRecord)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let Some(token) = opt(&tx, &format!("{TOKEN_SELECT} WHERE hash = $1"), &[&hash.to_hex()]).await? else {
            return Ok(None);
        };
        let token = token_row(&token)?;
        let user = opt(&tx, &format!("{USER_SELECT} WHERE id = $1"), &[&token.user_id]).await?;
        tx.commit().await?;
        Ok(user.as_ref().map(user_row).transpose()?.map(|u| (token, u)))
    }

    async fn api_tokens(&self, user_id: Option<&str>) -> Result<Vec<ApiToken>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = rows(
            &tx,
            &format!("{TOKEN_SELECT} WHERE ($1::TEXT IS NULL OR user_id = $1) ORDER BY created_at, id"),
            &[&user_id],
        )
        .await?
        .iter()
        .map(token_row)
        .collect();
        tx.commit().await?;
        out
    }

    async fn revoke_api_token(&self, id: &str, now: UnixMillis) -> Result<Option<ApiToken>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", &[&id, &now]).await?;
        let out = opt(&tx, &format!("{TOKEN_SELECT} WHERE id = $1"), &[&id]).await?;
        tx.commit().await?;
        out.as_ref().map(token_row).transpose()
    }

    async fn touch_api_token(&self, id: &str, now: UnixMillis) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "UPDATE api_tokens SET last_used_at = greatest(coalesce(last_used_at, 0), $2) WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_session(&self, id_hash: &ContentHash, s: &SessionRecord) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "INSERT INTO sessions (id_hash, user_id, csrf, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[&id_hash.to_hex(), &s.user_id, &s.csrf, &s.created_at, &s.last_seen_at],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::Conflict("session exists".into()));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, id_hash: &ContentHash) -> Result<Option<(SessionRecord, UserRecord)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let Some(row) = opt(
            &tx,
            "SELECT user_id, csrf, created_at, last_seen_at FROM sessions WHERE id_hash = $1",
            &[&id_hash.to_hex()],
        )
        .await?
        else {
            return Ok(None);
        };
        let s = SessionRecord {
            user_id: row.try_get(0)?,
            csrf: row.try_get(1)?,
            created_at: row.try_get(2)?,
            last_seen_at: row.try_get(3)?,
        };
        let user = opt(&tx, &format!("{USER_SELECT} WHERE id = $1"), &[&s.user_id]).await?;
        tx.commit().await?;
        Ok(user.as_ref().map(user_row).transpose()?.map(|u| (s, u)))
    }

    async fn touch_session(&self, id_hash: &ContentHash, now: UnixMillis) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "UPDATE sessions SET last_seen_at = greatest(last_seen_at, $2) WHERE id_hash = $1",
            &[&id_hash.to_hex(), &now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &ContentHash) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(&tx, "DELETE FROM sessions WHERE id_hash = $1", &[&id_hash.to_hex()]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(&tx, "DELETE FROM sessions WHERE user_id = $1", &[&user_id]).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn prune_sessions(&self, idle_before: UnixMillis, created_before: UnixMillis) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "DELETE FROM sessions WHERE last_seen_at < $1 OR created_at < $2",
            &[&idle_before, &created_before],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn create_invite(
        &self,
        token_hash: &ContentHash,
        user_id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "DELETE FROM invites WHERE user_id = $1", &[&user_id]).await?;
        exec(
            &tx,
            "INSERT INTO invites (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[&token_hash.to_hex(), &user_id, &now, &expires_at],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_invite(&self, token_hash: &ContentHash, now: UnixMillis) -> Result<Option<UserRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let row = opt(
            &tx,
            "DELETE FROM invites WHERE token_hash = $1 RETURNING user_id, expires_at",
            &[&token_hash.to_hex()],
        )
        .await?;
        let user = match row {
            Some(r) if r.try_get::<_, i64>(1)? > now => {
                let user_id: String = r.try_get(0)?;
                opt(&tx, &format!("{USER_SELECT} WHERE id = $1"), &[&user_id]).await?
            }
            _ => None,
        };
        tx.commit().await?;
        user.as_ref().map(user_row).transpose()
    }

    async fn invite(&self, token_hash: &ContentHash, now: UnixMillis) -> Result<Option<UserRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = opt(
            &tx,
            &format!(
                "{USER_SELECT} WHERE id = (SELECT user_id FROM invites WHERE token_hash = $1 AND expires_at > $2)"
            ),
            &[&token_hash.to_hex(), &now],
        )
        .await?;
        tx.commit().await?;
        out.as_ref().map(user_row).transpose()
    }

    async fn append_audit(&self, e: &AuditEntry) -> Result<i64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let row = one(
            &tx,
            "INSERT INTO audit_log (at, actor, via, source, action, target, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[&e.at, &e.actor, &e.via, &e.source, &e.action, &e.target, &(e.status as i32)],
        )
        .await?;
        tx.commit().await?;
        Ok(row.try_get(0)?)
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = q.limit.clamp(1, AUDIT_PAGE_MAX) as i64;
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = rows(
            &tx,
            &format!(
                "{AUDIT_SELECT} WHERE ($1::BIGINT IS NULL OR id < $1) AND ($2::TEXT IS NULL OR actor = $2)
                 ORDER BY id DESC LIMIT $3"
            ),
            &[&q.before, &q.actor, &limit],
        )
        .await?
        .iter()
        .map(audit_row)
        .collect();
        tx.commit().await?;
        out
    }
}

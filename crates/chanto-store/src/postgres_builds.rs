//! [`BuildStore`] on PostgreSQL: the build queue (claimed with `FOR UPDATE
//! SKIP LOCKED`, so two control processes never run one build twice) and
//! everything a git connection keeps.

use async_trait::async_trait;
use chanto_core::{BranchName, BuildId, ContentHash, SiteName};
use tokio_postgres::Row;

use crate::builds::*;
use crate::postgres::{PostgresMeta, Tx, col, exec, opt, opt_col, rows, site_id};
use crate::postgres_notify::{is_preview, record_build_event, record_event};
use crate::{StoreError, UnixMillis};

/// Webhook deliveries kept per site.
const DELIVERIES_KEPT: i64 = 1000;

const BUILD_COLUMNS: &str = "b.id, s.name, b.branch, b.git_ref, b.commit_sha, b.pull_request, b.state, b.trigger, b.title, \
     b.author, b.message, b.deploy_id, b.error, b.phases, b.retry_of, b.untrusted, b.created_at, b.started_at, b.finished_at, \
     b.runner_node, b.heartbeat_at";

fn build_row(r: &Row) -> Result<BuildRecord, StoreError> {
    Ok(BuildRecord {
        id: col(r, 0)?,
        site: col(r, 1)?,
        branch: col(r, 2)?,
        git_ref: r.try_get(3)?,
        commit: r.try_get(4)?,
        pull_request: r.try_get::<_, Option<i64>>(5)?.map(|n| n as u64),
        state: col(r, 6)?,
        trigger: r.try_get(7)?,
        title: r.try_get(8)?,
        author: r.try_get(9)?,
        message: r.try_get(10)?,
        deploy: opt_col(r, 11)?,
        error: r.try_get(12)?,
        phases: r.try_get(13)?,
        retry_of: opt_col(r, 14)?,
        untrusted: r.try_get(15)?,
        created_at: r.try_get(16)?,
        started_at: r.try_get(17)?,
        finished_at: r.try_get(18)?,
        runner: r.try_get(19)?,
        heartbeat_at: r.try_get(20)?,
    })
}

async fn get_build_tx(tx: &Tx<'_>, id: &str) -> Result<Option<BuildRecord>, StoreError> {
    opt(tx, &format!("SELECT {BUILD_COLUMNS} FROM builds b JOIN sites s ON s.id = b.site_id WHERE b.id = $1"), &[&id])
        .await?
        .map(|r| build_row(&r))
        .transpose()
}

fn git_row(r: &Row) -> Result<GitConnection, StoreError> {
    Ok(GitConnection {
        site: col(r, 0)?,
        repository: r.try_get(1)?,
        credential: r.try_get(2)?,
        webhook_secret: r.try_get(3)?,
        settings: r.try_get(4)?,
        created_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}

const GIT_SELECT: &str = "SELECT s.name, g.repository, g.credential, g.webhook_secret, g.settings, g.created_at, g.updated_at \
     FROM git_connections g JOIN sites s ON s.id = g.site_id";

fn hook_row(r: &Row) -> Result<BuildHook, StoreError> {
    Ok(BuildHook {
        id: r.try_get(0)?,
        site: col(r, 1)?,
        name: r.try_get(2)?,
        branch: opt_col(r, 3)?,
        secret_hash: col(r, 4)?,
        created_at: r.try_get(5)?,
    })
}

const HOOK_SELECT: &str = "SELECT h.id, s.name, h.name, h.branch, h.secret_hash, h.created_at FROM build_hooks h JOIN sites s ON s.id = h.site_id";

#[async_trait]
impl BuildStore for PostgresMeta {
    async fn set_git(&self, g: GitConnection) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, &g.site).await?;
        exec(
            &tx,
            "INSERT INTO git_connections (site_id, repository, credential, webhook_secret, settings, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (site_id) DO UPDATE SET repository = excluded.repository, credential = excluded.credential,
               webhook_secret = excluded.webhook_secret, settings = excluded.settings, updated_at = excluded.updated_at",
            &[&id, &g.repository, &g.credential, &g.webhook_secret, &g.settings, &g.created_at, &g.updated_at],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_git(&self, site: &SiteName) -> Result<Option<GitConnection>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = opt(&tx, &format!("{GIT_SELECT} WHERE s.name = $1"), &[&site.as_str()]).await?;
        tx.commit().await?;
        out.map(|r| git_row(&r)).transpose()
    }

    async fn list_git(&self) -> Result<Vec<GitConnection>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = rows(&tx, &format!("{GIT_SELECT} ORDER BY s.name"), &[]).await?;
        tx.commit().await?;
        out.iter().map(git_row).collect()
    }

    async fn delete_git(&self, site: &SiteName) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let n = exec(&tx, "DELETE FROM git_connections WHERE site_id = $1", &[&id]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn enqueue_build(&self, b: NewBuild, supersede: bool) -> Result<BuildRecord, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let sid = site_id(&tx, &b.site).await?;
        if supersede && b.skip_reason.is_none() {
            let replaced = rows(
                &tx,
                "UPDATE builds SET state = 'superseded', finished_at = $3, error = $4
                 WHERE site_id = $1 AND branch = $2 AND state = 'queued' RETURNING id",
                &[&sid, &b.branch.as_str(), &b.created_at, &format!("a newer build of {} replaced it", b.branch)],
            )
            .await?;
            for r in replaced {
                record_build_event(&tx, &r.try_get::<_, String>(0)?, b.created_at).await?;
            }
        }
        let state = if b.skip_reason.is_none() { "queued" } else { "skipped" };
        let finished_at = b.skip_reason.as_ref().map(|_| b.created_at);
        exec(
            &tx,
            "INSERT INTO builds (id, site_id, branch, git_ref, commit_sha, pull_request, state, trigger, title, author,
               message, retry_of, untrusted, created_at, error, finished_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            &[
                &b.id.as_str(),
                &sid,
                &b.branch.as_str(),
                &b.git_ref,
                &b.commit,
                &b.pull_request.map(|n| n as i64),
                &state,
                &b.trigger,
                &b.title,
                &b.author,
                &b.message,
                &b.retry_of.as_ref().map(|r| r.as_str()),
                &b.untrusted,
                &b.created_at,
                &b.skip_reason,
                &finished_at,
            ],
        )
        .await?;
        record_build_event(&tx, b.id.as_str(), b.created_at).await?;
        let rec =
            get_build_tx(&tx, b.id.as_str()).await?.ok_or_else(|| StoreError::NotFound(format!("build {}", b.id)))?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn cancel_queued(
        &self,
        id: &BuildId,
        reason: &str,
        now: UnixMillis,
    ) -> Result<Option<BuildRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE builds SET state = 'cancelled', error = $2, finished_at = $3 WHERE id = $1 AND state = 'queued'",
            &[&id.as_str(), &reason, &now],
        )
        .await?;
        if n == 0 {
            return Ok(None);
        }
        record_build_event(&tx, id.as_str(), now).await?;
        let rec = get_build_tx(&tx, id.as_str()).await?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn claim_build(&self, owner: &Owner, now: UnixMillis) -> Result<Option<BuildRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // SKIP LOCKED: a build another process is claiming right now is not
        // waited for but passed over, and never taken twice.
        let next = opt(
            &tx,
            "SELECT id, commit_sha IS NOT NULL FROM builds WHERE state = 'queued'
             ORDER BY created_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await?;
        let Some(next) = next else { return Ok(None) };
        let (id, known): (String, bool) = (next.try_get(0)?, next.try_get(1)?);
        exec(
            &tx,
            "UPDATE builds SET state = 'running', started_at = $2, heartbeat_at = $2, runner_node = $3, runner_run = $4
             WHERE id = $1",
            &[&id, &now, &owner.node, &owner.run],
        )
        .await?;
        // A build of a commit not known yet reports its start once it is (set_build_commit).
        if known {
            record_build_event(&tx, &id, now).await?;
        }
        let rec = get_build_tx(&tx, &id).await?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn set_build_commit(
        &self,
        id: &BuildId,
        commit: &str,
        message: Option<String>,
        author: Option<String>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let unknown_while_running = match opt(
            &tx,
            "SELECT commit_sha IS NULL AND state = 'running' FROM builds WHERE id = $1 FOR UPDATE",
            &[&id.as_str()],
        )
        .await?
        {
            Some(r) => r.try_get::<_, bool>(0)?,
            None => false,
        };
        exec(
            &tx,
            "UPDATE builds SET commit_sha = $2, message = coalesce($3, message), author = coalesce($4, author) WHERE id = $1",
            &[&id.as_str(), &commit, &message, &author],
        )
        .await?;
        if unknown_while_running {
            record_build_event(&tx, id.as_str(), now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_build_phases(&self, id: &BuildId, phases: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "UPDATE builds SET phases = $2 WHERE id = $1", &[&id.as_str(), &phases]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn finish_build(&self, id: &BuildId, o: BuildOutcome, now: UnixMillis) -> Result<BuildRecord, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE builds SET state = $2, error = $3, deploy_id = $4, phases = $5, finished_at = $6
             WHERE id = $1 AND state IN ('queued', 'running')",
            &[&id.as_str(), &o.state.as_str(), &o.error, &o.deploy.as_ref().map(|d| d.as_str()), &o.phases, &now],
        )
        .await?;
        let rec = get_build_tx(&tx, id.as_str()).await?.ok_or_else(|| StoreError::NotFound(format!("build {id}")))?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("build {id} has already ended ({})", rec.state)));
        }
        record_build_event(&tx, id.as_str(), now).await?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn get_build(&self, id: &BuildId) -> Result<Option<BuildRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = get_build_tx(&tx, id.as_str()).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn list_builds(
        &self,
        site: &SiteName,
        branch: Option<&BranchName>,
        limit: u32,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let sid = site_id(&tx, site).await?;
        let out = rows(
            &tx,
            &format!(
                "SELECT {BUILD_COLUMNS} FROM builds b JOIN sites s ON s.id = b.site_id
                 WHERE b.site_id = $1 AND ($2::text IS NULL OR b.branch = $2::text)
                 ORDER BY b.created_at DESC, b.seq DESC LIMIT $3"
            ),
            &[&sid, &branch.map(|b| b.as_str()), &(limit as i64)],
        )
        .await?;
        tx.commit().await?;
        out.iter().map(build_row).collect()
    }

    async fn heartbeat_builds(
        &self,
        owner: &Owner,
        ids: &[BuildId],
        now: UnixMillis,
    ) -> Result<Vec<BuildId>, StoreError> {
        // No early return for an empty `ids`: the build watch uses this call
        // as its round trip to the database, so it must reach it every time.
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let wanted: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
        let kept = rows(
            &tx,
            "UPDATE builds SET heartbeat_at = $2
             WHERE id = ANY($1) AND state = 'running' AND runner_node = $3 AND runner_run = $4 RETURNING id",
            &[&wanted, &now, &owner.node, &owner.run],
        )
        .await?;
        tx.commit().await?;
        let kept: std::collections::HashSet<String> =
            kept.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<_, _>>()?;
        Ok(ids.iter().filter(|i| !kept.contains(i.as_str())).cloned().collect())
    }

    async fn recover_builds(
        &self,
        owner: &Owner,
        stale_before: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // SKIP LOCKED: a build whose heartbeat or end is being written this
        // instant is left for the next pass. `runner_run = ''`: claimed on
        // SQLite before owners were recorded, then moved here by `chanto
        // migrate` (which needs that server stopped).
        let found = rows(
            &tx,
            "SELECT id, runner_node, runner_run, coalesce(heartbeat_at, started_at, 0) FROM builds
             WHERE state = 'running' AND (runner_run = ''
                 OR (runner_node = $1 AND runner_run <> $2)
                 OR coalesce(heartbeat_at, started_at, 0) < $3)
             ORDER BY seq FOR UPDATE SKIP LOCKED",
            &[&owner.node, &owner.run, &stale_before],
        )
        .await?;
        let mut out = Vec::with_capacity(found.len());
        for r in found {
            let id: String = r.try_get(0)?;
            let (node, run): (Option<String>, Option<String>) = (r.try_get(1)?, r.try_get(2)?);
            let why = interrupted_because(owner, node.as_deref(), run.as_deref(), r.try_get(3)?, now);
            exec(
                &tx,
                "UPDATE builds SET state = 'interrupted', finished_at = $2, error = $3 WHERE id = $1",
                &[&id, &now, &why],
            )
            .await?;
            record_build_event(&tx, &id, now).await?;
            // Its retry, in the same transaction: no moment when the build
            // is interrupted without one. In the original's place in the
            // queue (before builds of later pushes); a retry is not retried.
            let retry = BuildId::from_random(crate::random_bytes());
            let n = exec(
                &tx,
                "INSERT INTO builds (id, site_id, branch, git_ref, commit_sha, pull_request, state, trigger, title,
                   author, message, retry_of, untrusted, created_at)
                 SELECT $2, site_id, branch, git_ref, commit_sha, pull_request, 'queued',
                   'retry of ' || id || ' (interrupted)', title, author, message, id, untrusted, created_at
                 FROM builds WHERE id = $1 AND retry_of IS NULL",
                &[&id, &retry.as_str()],
            )
            .await?;
            if n > 0 {
                record_build_event(&tx, retry.as_str(), now).await?;
            }
            out.extend(get_build_tx(&tx, &id).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn set_env(&self, site: &SiteName, v: EnvVar) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        exec(
            &tx,
            "INSERT INTO env_vars (site_id, branch, name, value, secret, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (site_id, branch, name) DO UPDATE SET value = excluded.value, secret = excluded.secret,
               updated_at = excluded.updated_at",
            &[&id, &v.branch.as_ref().map_or("", |b| b.as_str()), &v.name, &v.value, &v.secret, &v.updated_at],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unset_env(&self, site: &SiteName, branch: Option<&BranchName>, name: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let n = exec(
            &tx,
            "DELETE FROM env_vars WHERE site_id = $1 AND branch = $2 AND name = $3",
            &[&id, &branch.map_or("", |b| b.as_str()), &name],
        )
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn list_env(&self, site: &SiteName) -> Result<Vec<EnvVar>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let found = rows(
            &tx,
            "SELECT branch, name, value, secret, updated_at FROM env_vars WHERE site_id = $1 ORDER BY branch, name",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        found
            .iter()
            .map(|r| {
                let branch: String = r.try_get(0)?;
                Ok(EnvVar {
                    branch: if branch.is_empty() {
                        None
                    } else {
                        Some(branch.parse().map_err(|e| StoreError::Db(format!("stored value {branch:?}: {e}")))?)
                    },
                    name: r.try_get(1)?,
                    value: r.try_get(2)?,
                    secret: r.try_get(3)?,
                    updated_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn add_hook(&self, h: BuildHook) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, &h.site).await?;
        exec(
            &tx,
            "INSERT INTO build_hooks (id, site_id, name, branch, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&h.id, &id, &h.name, &h.branch.as_ref().map(|b| b.as_str()), &h.secret_hash.to_hex(), &h.created_at],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_hooks(&self, site: &SiteName) -> Result<Vec<BuildHook>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        site_id(&tx, site).await?;
        let found =
            rows(&tx, &format!("{HOOK_SELECT} WHERE s.name = $1 ORDER BY h.created_at, h.seq"), &[&site.as_str()])
                .await?;
        tx.commit().await?;
        found.iter().map(hook_row).collect()
    }

    async fn delete_hook(&self, site: &SiteName, hook: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let n = exec(&tx, "DELETE FROM build_hooks WHERE site_id = $1 AND id = $2", &[&id, &hook]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn find_hook(&self, secret_hash: &ContentHash) -> Result<Option<BuildHook>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = opt(&tx, &format!("{HOOK_SELECT} WHERE h.secret_hash = $1"), &[&secret_hash.to_hex()]).await?;
        tx.commit().await?;
        found.map(|r| hook_row(&r)).transpose()
    }

    async fn record_delivery(&self, site: &SiteName, d: WebhookDelivery) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        exec(
            &tx,
            "INSERT INTO webhook_deliveries (site_id, source, event, outcome, detail, build_id, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&id, &d.source, &d.event, &d.outcome, &d.detail, &d.build.as_ref().map(|b| b.as_str()), &d.at],
        )
        .await?;
        exec(
            &tx,
            "DELETE FROM webhook_deliveries WHERE site_id = $1 AND id <=
               (SELECT id FROM webhook_deliveries WHERE site_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            &[&id, &DELIVERIES_KEPT],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_deliveries(&self, site: &SiteName, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let found = rows(
            &tx,
            "SELECT source, event, outcome, detail, build_id, at FROM webhook_deliveries
             WHERE site_id = $1 ORDER BY id DESC LIMIT $2",
            &[&id, &(limit as i64)],
        )
        .await?;
        tx.commit().await?;
        found
            .iter()
            .map(|r| {
                Ok(WebhookDelivery {
                    source: r.try_get(0)?,
                    event: r.try_get(1)?,
                    outcome: r.try_get(2)?,
                    detail: r.try_get(3)?,
                    build: opt_col(r, 4)?,
                    at: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn polled_heads(&self, site: &SiteName) -> Result<Vec<(String, String)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let found =
            rows(&tx, "SELECT branch, commit_sha FROM polled_heads WHERE site_id = $1 ORDER BY branch", &[&id]).await?;
        tx.commit().await?;
        found.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn set_polled_head(&self, site: &SiteName, branch: &str, commit: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        exec(
            &tx,
            "INSERT INTO polled_heads (site_id, branch, commit_sha) VALUES ($1, $2, $3)
             ON CONFLICT (site_id, branch) DO UPDATE SET commit_sha = excluded.commit_sha",
            &[&id, &branch, &commit],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_production_branch(&self, site: &SiteName, branch: &BranchName) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n =
            exec(&tx, "UPDATE sites SET production_branch = $2 WHERE name = $1", &[&site.as_str(), &branch.as_str()])
                .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("site {site}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_branch(&self, site: &SiteName, branch: &BranchName, now: UnixMillis) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let preview = is_preview(&tx, id, branch.as_str()).await?;
        let n = exec(&tx, "DELETE FROM branches WHERE site_id = $1 AND name = $2", &[&id, &branch.as_str()]).await?;
        if n > 0 && preview {
            record_event(&tx, id, "preview.removed", branch.as_str(), None, None, None, now).await?;
        }
        exec(&tx, "DELETE FROM polled_heads WHERE site_id = $1 AND branch = $2", &[&id, &branch.as_str()]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn set_preview_closed(&self, site: &SiteName, number: u64, at: Option<UnixMillis>) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        exec(
            &tx,
            "INSERT INTO previews (site_id, number, closed_at) VALUES ($1, $2, $3)
             ON CONFLICT (site_id, number) DO UPDATE SET closed_at = excluded.closed_at",
            &[&id, &(number as i64), &at],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn closed_previews(&self, now: UnixMillis) -> Result<Vec<(SiteName, u64)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = rows(
            &tx,
            "SELECT s.name, p.number FROM previews p JOIN sites s ON s.id = p.site_id
             WHERE p.closed_at IS NOT NULL AND p.closed_at <= $1 ORDER BY s.name, p.number",
            &[&now],
        )
        .await?;
        tx.commit().await?;
        found.iter().map(|r| Ok((col(r, 0)?, r.try_get::<_, i64>(1)? as u64))).collect()
    }
}

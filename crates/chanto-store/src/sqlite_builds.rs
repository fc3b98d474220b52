//! [`BuildStore`] on SQLite: the build queue and everything a git connection keeps.

use async_trait::async_trait;
use chanto_core::{BranchName, BuildId, ContentHash, SiteName};
use rusqlite::{OptionalExtension, params};

use crate::builds::*;
use crate::sqlite::{SqliteMeta, parse, site_id};
use crate::sqlite_notify::{is_preview, record_build_event, record_event};
use crate::{StoreError, UnixMillis};

/// Webhook deliveries kept per site.
const DELIVERIES_KEPT: i64 = 1000;

const BUILD_COLUMNS: &str = "b.id, s.name, b.branch, b.git_ref, b.commit_sha, b.pull_request, b.state, b.trigger, b.title, \
     b.author, b.message, b.deploy_id, b.error, b.phases, b.retry_of, b.untrusted, b.created_at, b.started_at, b.finished_at, \
     b.runner_node, b.heartbeat_at";

fn opt_parse<T: std::str::FromStr>(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    r.get::<_, Option<String>>(i)?.map(|s| parse(i, s)).transpose()
}

fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRecord> {
    Ok(BuildRecord {
        id: parse(0, r.get(0)?)?,
        site: parse(1, r.get(1)?)?,
        branch: parse(2, r.get(2)?)?,
        git_ref: r.get(3)?,
        commit: r.get(4)?,
        pull_request: r.get::<_, Option<i64>>(5)?.map(|n| n as u64),
        state: parse(6, r.get(6)?)?,
        trigger: r.get(7)?,
        title: r.get(8)?,
        author: r.get(9)?,
        message: r.get(10)?,
        deploy: opt_parse(r, 11)?,
        error: r.get(12)?,
        phases: r.get(13)?,
        retry_of: opt_parse(r, 14)?,
        untrusted: r.get(15)?,
        created_at: r.get(16)?,
        started_at: r.get(17)?,
        finished_at: r.get(18)?,
        runner: r.get(19)?,
        heartbeat_at: r.get(20)?,
    })
}

fn get_build_tx(c: &rusqlite::Connection, id: &str) -> Result<Option<BuildRecord>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {BUILD_COLUMNS} FROM builds b JOIN sites s ON s.id = b.site_id WHERE b.id = ?1"),
        [id],
        build_row,
    )
    .optional()?)
}

fn git_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GitConnection> {
    Ok(GitConnection {
        site: parse(0, r.get(0)?)?,
        repository: r.get(1)?,
        credential: r.get(2)?,
        webhook_secret: r.get(3)?,
        settings: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

const GIT_SELECT: &str = "SELECT s.name, g.repository, g.credential, g.webhook_secret, g.settings, g.created_at, g.updated_at \
     FROM git_connections g JOIN sites s ON s.id = g.site_id";

fn hook_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildHook> {
    Ok(BuildHook {
        id: r.get(0)?,
        site: parse(1, r.get(1)?)?,
        name: r.get(2)?,
        branch: opt_parse(r, 3)?,
        secret_hash: parse(4, r.get(4)?)?,
        created_at: r.get(5)?,
    })
}

const HOOK_SELECT: &str = "SELECT h.id, s.name, h.name, h.branch, h.secret_hash, h.created_at FROM build_hooks h JOIN sites s ON s.id = h.site_id";

#[async_trait]
impl BuildStore for SqliteMeta {
    async fn set_git(&self, g: GitConnection) -> Result<(), StoreError> {
        self.call(move |c| {
            let id = site_id(c, &g.site)?;
            c.execute(
                "INSERT INTO git_connections (site_id, repository, credential, webhook_secret, settings, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (site_id) DO UPDATE SET repository = excluded.repository, credential = excluded.credential,
                   webhook_secret = excluded.webhook_secret, settings = excluded.settings, updated_at = excluded.updated_at",
                params![id, g.repository, g.credential, g.webhook_secret, g.settings, g.created_at, g.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_git(&self, site: &SiteName) -> Result<Option<GitConnection>, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            Ok(c.query_row(&format!("{GIT_SELECT} WHERE s.name = ?1"), [site.as_str()], git_row).optional()?)
        })
        .await
    }

    async fn list_git(&self) -> Result<Vec<GitConnection>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(&format!("{GIT_SELECT} ORDER BY s.name"))?;
            let rows = st.query_map([], git_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_git(&self, site: &SiteName) -> Result<bool, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let id = site_id(c, &site)?;
            Ok(c.execute("DELETE FROM git_connections WHERE site_id = ?1", [id])? > 0)
        })
        .await
    }

    async fn enqueue_build(&self, b: NewBuild, supersede: bool) -> Result<BuildRecord, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let sid = site_id(&tx, &b.site)?;
            if supersede && b.skip_reason.is_none() {
                let replaced: Vec<String> = {
                    let mut st =
                        tx.prepare("SELECT id FROM builds WHERE site_id = ?1 AND branch = ?2 AND state = 'queued'")?;
                    st.query_map(params![sid, b.branch.as_str()], |r| r.get(0))?.collect::<Result<_, _>>()?
                };
                tx.execute(
                    "UPDATE builds SET state = 'superseded', finished_at = ?3, error = ?4
                     WHERE site_id = ?1 AND branch = ?2 AND state = 'queued'",
                    params![sid, b.branch.as_str(), b.created_at, format!("a newer build of {} replaced it", b.branch)],
                )?;
                for id in replaced {
                    record_build_event(&tx, &id, b.created_at)?;
                }
            }
            tx.execute(
                "INSERT INTO builds (id, site_id, branch, git_ref, commit_sha, pull_request, state, trigger, title, author,
                   message, retry_of, untrusted, created_at, error, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?14 IS NULL THEN 'queued' ELSE 'skipped' END, ?7, ?8, ?9, ?10,
                   ?11, ?12, ?13, ?14, CASE WHEN ?14 IS NULL THEN NULL ELSE ?13 END)",
                params![
                    b.id.as_str(),
                    sid,
                    b.branch.as_str(),
                    b.git_ref,
                    b.commit,
                    b.pull_request.map(|n| n as i64),
                    b.trigger,
                    b.title,
                    b.author,
                    b.message,
                    b.retry_of.as_ref().map(|r| r.as_str().to_owned()),
                    b.untrusted,
                    b.created_at,
                    b.skip_reason
                ],
            )?;
            record_build_event(&tx, b.id.as_str(), b.created_at)?;
            let rec = get_build_tx(&tx, b.id.as_str())?.ok_or_else(|| StoreError::NotFound(format!("build {}", b.id)))?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn cancel_queued(
        &self,
        id: &BuildId,
        reason: &str,
        now: UnixMillis,
    ) -> Result<Option<BuildRecord>, StoreError> {
        let (id, reason) = (id.clone(), reason.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE builds SET state = 'cancelled', error = ?2, finished_at = ?3 WHERE id = ?1 AND state = 'queued'",
                params![id.as_str(), reason, now],
            )?;
            if n == 0 {
                return Ok(None);
            }
            record_build_event(&tx, id.as_str(), now)?;
            let rec = get_build_tx(&tx, id.as_str())?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn claim_build(&self, owner: &Owner, now: UnixMillis) -> Result<Option<BuildRecord>, StoreError> {
        let owner = owner.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            let next: Option<String> = tx
                .query_row("SELECT id FROM builds WHERE state = 'queued' ORDER BY created_at, rowid LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(id) = next else { return Ok(None) };
            tx.execute(
                "UPDATE builds SET state = 'running', started_at = ?2, heartbeat_at = ?2, runner_node = ?3, runner_run = ?4
                 WHERE id = ?1",
                params![id, now, owner.node, owner.run],
            )?;
            // A build of a commit not known yet reports its start once it is (set_build_commit): a started event
            // always names its commit, so forges can show it as pending.
            let known: bool =
                tx.query_row("SELECT commit_sha IS NOT NULL FROM builds WHERE id = ?1", [&id], |r| r.get(0))?;
            if known {
                record_build_event(&tx, &id, now)?;
            }
            let rec = get_build_tx(&tx, &id)?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn set_build_commit(
        &self,
        id: &BuildId,
        commit: &str,
        message: Option<String>,
        author: Option<String>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let (id, commit) = (id.clone(), commit.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let unknown_while_running: bool = tx
                .query_row(
                    "SELECT commit_sha IS NULL AND state = 'running' FROM builds WHERE id = ?1",
                    [id.as_str()],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(false);
            tx.execute(
                "UPDATE builds SET commit_sha = ?2, message = coalesce(?3, message), author = coalesce(?4, author) WHERE id = ?1",
                params![id.as_str(), commit, message, author],
            )?;
            if unknown_while_running {
                record_build_event(&tx, id.as_str(), now)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn set_build_phases(&self, id: &BuildId, phases: &str) -> Result<(), StoreError> {
        let (id, phases) = (id.clone(), phases.to_owned());
        self.call(move |c| {
            c.execute("UPDATE builds SET phases = ?2 WHERE id = ?1", params![id.as_str(), phases])?;
            Ok(())
        })
        .await
    }

    async fn finish_build(&self, id: &BuildId, o: BuildOutcome, now: UnixMillis) -> Result<BuildRecord, StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE builds SET state = ?2, error = ?3, deploy_id = ?4, phases = ?5, finished_at = ?6
                 WHERE id = ?1 AND state IN ('queued', 'running')",
                params![
                    id.as_str(),
                    o.state.as_str(),
                    o.error,
                    o.deploy.as_ref().map(|d| d.as_str().to_owned()),
                    o.phases,
                    now
                ],
            )?;
            let rec = get_build_tx(&tx, id.as_str())?.ok_or_else(|| StoreError::NotFound(format!("build {id}")))?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("build {id} has already ended ({})", rec.state)));
            }
            record_build_event(&tx, id.as_str(), now)?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn get_build(&self, id: &BuildId) -> Result<Option<BuildRecord>, StoreError> {
        let id = id.clone();
        self.call(move |c| get_build_tx(c, id.as_str())).await
    }

    async fn list_builds(
        &self,
        site: &SiteName,
        branch: Option<&BranchName>,
        limit: u32,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        let (site, branch) = (site.clone(), branch.cloned());
        self.call(move |c| {
            let sid = site_id(c, &site)?;
            let mut st = c.prepare(&format!(
                "SELECT {BUILD_COLUMNS} FROM builds b JOIN sites s ON s.id = b.site_id
                 WHERE b.site_id = ?1 AND (?2 IS NULL OR b.branch = ?2) ORDER BY b.created_at DESC, b.rowid DESC LIMIT ?3"
            ))?;
            let rows = st
                .query_map(params![sid, branch.as_ref().map(|b| b.as_str().to_owned()), limit], build_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn heartbeat_builds(
        &self,
        owner: &Owner,
        ids: &[BuildId],
        now: UnixMillis,
    ) -> Result<Vec<BuildId>, StoreError> {
        let (owner, ids) = (owner.clone(), ids.to_vec());
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut lost = Vec::new();
            for id in ids {
                let n = tx.execute(
                    "UPDATE builds SET heartbeat_at = ?2
                     WHERE id = ?1 AND state = 'running' AND runner_node = ?3 AND runner_run = ?4",
                    params![id.as_str(), now, owner.node, owner.run],
                )?;
                if n == 0 {
                    lost.push(id);
                }
            }
            tx.commit()?;
            Ok(lost)
        })
        .await
    }

    async fn recover_builds(
        &self,
        owner: &Owner,
        stale_before: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<BuildRecord>, StoreError> {
        let owner = owner.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            // `runner_run = ''`: claimed before owners were recorded (migration 10); the data directory's lock
            // means that process has ended.
            let found: Vec<(String, Option<String>, Option<String>, Option<i64>)> = {
                let mut st = tx.prepare(
                    "SELECT id, runner_node, runner_run, coalesce(heartbeat_at, started_at, 0) FROM builds
                     WHERE state = 'running' AND (runner_run = ''
                         OR (runner_node = ?1 AND runner_run <> ?2)
                         OR coalesce(heartbeat_at, started_at, 0) < ?3)
                     ORDER BY rowid",
                )?;
                st.query_map(params![owner.node, owner.run, stale_before], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(found.len());
            for (id, node, run, heartbeat) in found {
                let why = interrupted_because(&owner, node.as_deref(), run.as_deref(), heartbeat, now);
                tx.execute(
                    "UPDATE builds SET state = 'interrupted', finished_at = ?2, error = ?3 WHERE id = ?1",
                    params![id, now, why],
                )?;
                record_build_event(&tx, &id, now)?;
                // Its retry, in the same transaction (see the PostgreSQL store).
                let retry = BuildId::from_random(crate::random_bytes());
                let n = tx.execute(
                    "INSERT INTO builds (id, site_id, branch, git_ref, commit_sha, pull_request, state, trigger, title,
                       author, message, retry_of, untrusted, created_at)
                     SELECT ?2, site_id, branch, git_ref, commit_sha, pull_request, 'queued',
                       'retry of ' || id || ' (interrupted)', title, author, message, id, untrusted, created_at
                     FROM builds WHERE id = ?1 AND retry_of IS NULL",
                    params![id, retry.as_str()],
                )?;
                if n > 0 {
                    record_build_event(&tx, retry.as_str(), now)?;
                }
                out.extend(get_build_tx(&tx, &id)?);
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn set_env(&self, site: &SiteName, v: EnvVar) -> Result<(), StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let id = site_id(c, &site)?;
            c.execute(
                "INSERT INTO env_vars (site_id, branch, name, value, secret, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (site_id, branch, name) DO UPDATE SET value = excluded.value, secret = excluded.secret,
                   updated_at = excluded.updated_at",
                params![id, v.branch.as_ref().map_or("", |b| b.as_str()), v.name, v.value, v.secret, v.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn unset_env(&self, site: &SiteName, branch: Option<&BranchName>, name: &str) -> Result<bool, StoreError> {
        let (site, branch, name) = (site.clone(), branch.map_or(String::new(), |b| b.to_string()), name.to_owned());
        self.call(move |c| {
            let id = site_id(c, &site)?;
            Ok(c.execute(
                "DELETE FROM env_vars WHERE site_id = ?1 AND branch = ?2 AND name = ?3",
                params![id, branch, name],
            )? > 0)
        })
        .await
    }

    async fn list_env(&self, site: &SiteName) -> Result<Vec<EnvVar>, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let id = site_id(c, &site)?;
            let mut st = c.prepare(
                "SELECT branch, name, value, secret, updated_at FROM env_vars WHERE site_id = ?1 ORDER BY branch, name",
            )?;
            let rows = st
                .query_map([id], |r| {
                    let branch: String = r.get(0)?;
                    Ok(EnvVar {
                        branch: if branch.is_empty() { None } else { Some(parse(0, branch)?) },
                        name: r.get(1)?,
                        value: r.get(2)?,
                        secret: r.get(3)?,
                        updated_at: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn add_hook(&self, h: BuildHook) -> Result<(), StoreError> {
        self.call(move |c| {
            let id = site_id(c, &h.site)?;
            c.execute(
                "INSERT INTO build_hooks (id, site_id, name, branch, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![h.id, id, h.name, h.branch.as_ref().map(|b| b.as_str().to_owned()), h.secret_hash.to_hex(), h.created_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_hooks(&self, site: &SiteName) -> Result<Vec<BuildHook>, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            site_id(c, &site)?;
            let mut st = c.prepare(&format!("{HOOK_SELECT} WHERE s.name = ?1 ORDER BY h.created_at"))?;
            let rows = st.query_map([site.as_str()], hook_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_hook(&self, site: &SiteName, hook: &str) -> Result<bool, StoreError> {
        let (site, hook) = (site.clone(), hook.to_owned());
        self.call(move |c| {
            let id = site_id(c, &site)?;
            Ok(c.execute("DELETE FROM build_hooks WHERE site_id = ?1 AND id = ?2", params![id, hook])? > 0)
        })
        .await
    }

    async fn find_hook(&self, secret_hash: &ContentHash) -> Result<Option<BuildHook>, StoreError> {
        let hash = secret_hash.to_hex();
        self.call(move |c| {
            Ok(c.query_row(&format!("{HOOK_SELECT} WHERE h.secret_hash = ?1"), [hash], hook_row).optional()?)
        })
        .await
    }

    async fn record_delivery(&self, site: &SiteName, d: WebhookDelivery) -> Result<(), StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            tx.execute(
                "INSERT INTO webhook_deliveries (site_id, source, event, outcome, detail, build_id, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    d.source,
                    d.event,
                    d.outcome,
                    d.detail,
                    d.build.as_ref().map(|b| b.as_str().to_owned()),
                    d.at
                ],
            )?;
            tx.execute(
                "DELETE FROM webhook_deliveries WHERE site_id = ?1 AND id <=
                   (SELECT id FROM webhook_deliveries WHERE site_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![id, DELIVERIES_KEPT],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_deliveries(&self, site: &SiteName, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let id = site_id(c, &site)?;
            let mut st = c.prepare(
                "SELECT source, event, outcome, detail, build_id, at FROM webhook_deliveries
                 WHERE site_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![id, limit], |r| {
                    Ok(WebhookDelivery {
                        source: r.get(0)?,
                        event: r.get(1)?,
                        outcome: r.get(2)?,
                        detail: r.get(3)?,
                        build: opt_parse(r, 4)?,
                        at: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn polled_heads(&self, site: &SiteName) -> Result<Vec<(String, String)>, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let id = site_id(c, &site)?;
            let mut st = c.prepare("SELECT branch, commit_sha FROM polled_heads WHERE site_id = ?1 ORDER BY branch")?;
            let rows = st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn set_polled_head(&self, site: &SiteName, branch: &str, commit: &str) -> Result<(), StoreError> {
        let (site, branch, commit) = (site.clone(), branch.to_owned(), commit.to_owned());
        self.call(move |c| {
            let id = site_id(c, &site)?;
            c.execute(
                "INSERT INTO polled_heads (site_id, branch, commit_sha) VALUES (?1, ?2, ?3)
                 ON CONFLICT (site_id, branch) DO UPDATE SET commit_sha = excluded.commit_sha",
                params![id, branch, commit],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_production_branch(&self, site: &SiteName, branch: &BranchName) -> Result<(), StoreError> {
        let (site, branch) = (site.clone(), branch.clone());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE sites SET production_branch = ?2 WHERE name = ?1",
                params![site.as_str(), branch.as_str()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("site {site}")));
            }
            Ok(())
        })
        .await
    }

    async fn delete_branch(&self, site: &SiteName, branch: &BranchName, now: UnixMillis) -> Result<bool, StoreError> {
        let (site, branch) = (site.clone(), branch.clone());
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            let preview = is_preview(&tx, id, branch.as_str())?;
            let n =
                tx.execute("DELETE FROM branches WHERE site_id = ?1 AND name = ?2", params![id, branch.as_str()])?;
            if n > 0 && preview {
                record_event(&tx, id, "preview.removed", branch.as_str(), None, None, None, now)?;
            }
            tx.execute("DELETE FROM polled_heads WHERE site_id = ?1 AND branch = ?2", params![id, branch.as_str()])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_preview_closed(&self, site: &SiteName, number: u64, at: Option<UnixMillis>) -> Result<(), StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let id = site_id(c, &site)?;
            c.execute(
                "INSERT INTO previews (site_id, number, closed_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (site_id, number) DO UPDATE SET closed_at = excluded.closed_at",
                params![id, number as i64, at],
            )?;
            Ok(())
        })
        .await
    }

    async fn closed_previews(&self, now: UnixMillis) -> Result<Vec<(SiteName, u64)>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT s.name, p.number FROM previews p JOIN sites s ON s.id = p.site_id
                 WHERE p.closed_at IS NOT NULL AND p.closed_at <= ?1 ORDER BY s.name, p.number",
            )?;
            let rows = st
                .query_map([now], |r| Ok((parse(0, r.get(0)?)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }
}

//! [`NotifyStore`] on SQLite, and [`record_event`]: how state changes write the outbox in their own transaction.

use async_trait::async_trait;
use chanto_core::SiteName;
use rusqlite::{Connection, OptionalExtension, params};

use crate::notify::*;
use crate::sqlite::{SqliteMeta, parse, site_id};
use crate::{StoreError, UnixMillis};

/// Records an event in the outbox, when the site has a subscription to hear it. Called inside the transaction of
/// the change it reports.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_event(
    c: &Connection,
    site_id: i64,
    kind: &str,
    branch: &str,
    build: Option<&str>,
    deploy: Option<&str>,
    detail: Option<&str>,
    at: UnixMillis,
) -> rusqlite::Result<()> {
    debug_assert!(EVENT_KINDS.contains(&kind), "{kind}");
    c.execute(
        "INSERT INTO notify_outbox (site_id, kind, branch, build_id, deploy_id, detail, at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM notify_subscriptions WHERE site_id = ?1)",
        params![site_id, kind, branch, build, deploy, detail, at],
    )?;
    Ok(())
}

/// The event a build entering `state` reports, if any.
pub(crate) fn build_event(state: &str) -> Option<&'static str> {
    Some(match state {
        "queued" => "build.queued",
        "running" => "build.started",
        "succeeded" => "build.succeeded",
        // An interrupted build ended without a result; if it is retried, the retry reports its own.
        "failed" | "timed_out" | "interrupted" => "build.failed",
        "cancelled" | "superseded" => "build.cancelled",
        _ => return None,
    })
}

/// Records the event of build `id` having entered its current state.
pub(crate) fn record_build_event(c: &Connection, id: &str, at: UnixMillis) -> rusqlite::Result<()> {
    let (site_id, branch, state, deploy): (i64, String, String, Option<String>) =
        c.query_row("SELECT site_id, branch, state, deploy_id FROM builds WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    match build_event(&state) {
        Some(kind) => record_event(c, site_id, kind, &branch, Some(id), deploy.as_deref(), None, at),
        None => Ok(()),
    }
}

/// Whether `branch` of the site is a pull request preview (`pr-<n>` with a preview record).
pub(crate) fn is_preview(c: &Connection, site_id: i64, branch: &str) -> rusqlite::Result<bool> {
    let Some(n) = branch.strip_prefix("pr-").and_then(|n| n.parse::<i64>().ok()) else { return Ok(false) };
    c.query_row("SELECT EXISTS (SELECT 1 FROM previews WHERE site_id = ?1 AND number = ?2)", params![site_id, n], |r| {
        r.get(0)
    })
}

const SUB_SELECT: &str = "SELECT n.id, s.name, n.channel, n.config, n.display, n.filter, n.created_at
     FROM notify_subscriptions n JOIN sites s ON s.id = n.site_id";

fn sub_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscription> {
    Ok(Subscription {
        id: r.get(0)?,
        site: parse(1, r.get(1)?)?,
        channel: r.get(2)?,
        config: r.get(3)?,
        display: r.get(4)?,
        filter: r.get(5)?,
        created_at: r.get(6)?,
    })
}

const DELIVERY_SELECT: &str =
    "SELECT d.id, d.subscription_id, s.name, d.action, d.coalesce_key, d.event_kind, d.event_id,
       d.payload, d.state, d.attempts, d.next_at, d.last_error, d.created_at, d.updated_at
     FROM notify_deliveries d JOIN sites s ON s.id = d.site_id";

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        subscription: r.get(1)?,
        site: parse(2, r.get(2)?)?,
        action: r.get(3)?,
        key: r.get(4)?,
        event_kind: r.get(5)?,
        event_id: r.get(6)?,
        payload: r.get(7)?,
        state: r.get(8)?,
        attempts: r.get(9)?,
        next_at: r.get(10)?,
        last_error: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

#[async_trait]
impl NotifyStore for SqliteMeta {
    async fn add_subscription(&self, s: Subscription) -> Result<(), StoreError> {
        self.call(move |c| {
            let sid = site_id(c, &s.site)?;
            c.execute(
                "INSERT INTO notify_subscriptions (id, site_id, channel, config, display, filter, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![s.id, sid, s.channel, s.config, s.display, s.filter, s.created_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_subscriptions(&self, site: &SiteName) -> Result<Vec<Subscription>, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let sid = site_id(c, &site)?;
            let mut st = c.prepare(&format!("{SUB_SELECT} WHERE n.site_id = ?1 ORDER BY n.created_at, n.rowid"))?;
            let rows = st.query_map([sid], sub_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn get_subscription(&self, site: &SiteName, id: &str) -> Result<Option<Subscription>, StoreError> {
        let (site, id) = (site.clone(), id.to_owned());
        self.call(move |c| {
            let sid = site_id(c, &site)?;
            Ok(c.query_row(&format!("{SUB_SELECT} WHERE n.site_id = ?1 AND n.id = ?2"), params![sid, id], sub_row)
                .optional()?)
        })
        .await
    }

    async fn delete_subscription(&self, site: &SiteName, id: &str) -> Result<bool, StoreError> {
        let (site, id) = (site.clone(), id.to_owned());
        self.call(move |c| {
            let sid = site_id(c, &site)?;
            Ok(c.execute("DELETE FROM notify_subscriptions WHERE site_id = ?1 AND id = ?2", params![sid, id])? > 0)
        })
        .await
    }

    async fn record_site_event(
        &self,
        site: &SiteName,
        kind: &str,
        branch: &str,
        detail: &str,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        if !EVENT_KINDS.contains(&kind) {
            return Err(StoreError::Db(format!("{kind} is not an event the outbox records")));
        }
        let (site, kind, branch, detail) = (site.clone(), kind.to_owned(), branch.to_owned(), detail.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            let n = tx.execute(
                "INSERT INTO notify_outbox (site_id, kind, branch, detail, at)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM notify_subscriptions WHERE site_id = ?1)",
                params![id, kind, branch, detail, at],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn pending_events(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT o.seq, s.name, o.kind, o.branch, o.build_id, o.deploy_id, o.detail, o.at
                 FROM notify_outbox o JOIN sites s ON s.id = o.site_id WHERE o.fanned = 0 ORDER BY o.seq LIMIT ?1",
            )?;
            let rows = st
                .query_map([limit], |r| {
                    Ok(OutboxEvent {
                        seq: r.get(0)?,
                        site: parse(1, r.get(1)?)?,
                        kind: r.get(2)?,
                        branch: r.get(3)?,
                        build: r.get::<_, Option<String>>(4)?.map(|b| parse(4, b)).transpose()?,
                        deploy: r.get::<_, Option<String>>(5)?.map(|d| parse(5, d)).transpose()?,
                        detail: r.get(6)?,
                        at: r.get(7)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn fan_out(&self, seq: i64, deliveries: Vec<NewDelivery>, now: UnixMillis) -> Result<bool, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let site: Option<i64> = tx
                .query_row("SELECT site_id FROM notify_outbox WHERE seq = ?1 AND fanned = 0", [seq], |r| r.get(0))
                .optional()?;
            let Some(site) = site else { return Ok(false) };
            tx.execute("UPDATE notify_outbox SET fanned = 1 WHERE seq = ?1", [seq])?;
            for d in deliveries {
                tx.execute(
                    "INSERT INTO notify_deliveries (subscription_id, site_id, action, coalesce_key, event_kind, event_id,
                       payload, state, attempts, next_at, created_at, updated_at)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8, ?8
                     WHERE EXISTS (SELECT 1 FROM notify_subscriptions WHERE id = ?1 AND site_id = ?2)",
                    params![d.subscription, site, d.action, d.key, d.event_kind, d.event_id, d.payload, now],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn due_deliveries(&self, now: UnixMillis, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        self.call(move |c| {
            // The oldest pending delivery of each subscription, if it is due.
            let mut st = c.prepare(&format!(
                "{DELIVERY_SELECT} WHERE d.id IN (SELECT min(id) FROM notify_deliveries WHERE state = 'pending'
                   GROUP BY subscription_id) AND d.next_at <= ?1 AND coalesce(d.lease_until, 0) <= ?1
                 ORDER BY d.next_at, d.id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![now, limit], delivery_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn claim_delivery(
        &self,
        id: i64,
        attempts: u32,
        owner: &crate::Owner,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> Result<bool, StoreError> {
        let owner = owner.clone();
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE notify_deliveries SET lease_until = ?4, lease_node = ?5, lease_run = ?6
                 WHERE id = ?1 AND state = 'pending' AND attempts = ?2 AND next_at <= ?3
                   AND coalesce(lease_until, 0) <= ?3",
                params![id, attempts, now, lease_until, owner.node, owner.run],
            )? == 1)
        })
        .await
    }

    async fn release_leases(&self, owner: &crate::Owner) -> Result<u64, StoreError> {
        let owner = owner.clone();
        self.call(move |c| {
            Ok(c.execute(
                "UPDATE notify_deliveries SET lease_until = NULL, lease_node = NULL, lease_run = NULL
                 WHERE state = 'pending' AND lease_until IS NOT NULL AND lease_node = ?1 AND lease_run <> ?2",
                params![owner.node, owner.run],
            )? as u64)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT min(max(next_at, coalesce(lease_until, 0))) FROM notify_deliveries
                 WHERE id IN (SELECT min(id) FROM notify_deliveries
                   WHERE state = 'pending' GROUP BY subscription_id)",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn newer_delivered(&self, subscription: &str, key: &str, id: i64) -> Result<bool, StoreError> {
        let (subscription, key) = (subscription.to_owned(), key.to_owned());
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT EXISTS (SELECT 1 FROM notify_deliveries WHERE subscription_id = ?1 AND coalesce_key = ?2
                   AND id > ?3 AND state = 'delivered')",
                params![subscription, key, id],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn record_attempt(
        &self,
        id: i64,
        a: DeliveryAttempt,
        next: DeliveryNext,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let (state, next_at) = match next {
                DeliveryNext::Delivered => ("delivered", now),
                DeliveryNext::Retry(at) => ("pending", at),
                DeliveryNext::Dead => ("dead", now),
                DeliveryNext::Superseded => ("superseded", now),
            };
            // Only the attempt that follows the recorded ones, on a delivery still pending: a worker whose lease ran
            // out and whose attempt another worker already recorded changes nothing.
            let n = tx.execute(
                "UPDATE notify_deliveries SET state = ?2, attempts = ?3, next_at = ?4, last_error = ?5, updated_at = ?6,
                   lease_until = NULL
                 WHERE id = ?1 AND state = 'pending' AND attempts = ?3 - 1",
                params![id, state, a.n, next_at, (state != "delivered").then_some(a.outcome.as_str()), now],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("delivery {id} is not waiting for attempt {}", a.n)));
            }
            tx.execute(
                "INSERT OR REPLACE INTO notify_attempts (delivery_id, n, at, duration_ms, status, outcome, response)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, a.n, a.at, a.duration_ms as i64, a.status, a.outcome, a.response],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_notify_deliveries(
        &self,
        site: &SiteName,
        subscription: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (site, subscription) = (site.clone(), subscription.map(str::to_owned));
        self.call(move |c| {
            let sid = site_id(c, &site)?;
            let mut st = c.prepare(&format!(
                "{DELIVERY_SELECT} WHERE d.site_id = ?1 AND (?2 IS NULL OR d.subscription_id = ?2) ORDER BY d.id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![sid, subscription, limit], delivery_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn get_notify_delivery(
        &self,
        site: &SiteName,
        id: i64,
    ) -> Result<Option<(Delivery, Vec<DeliveryAttempt>)>, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let sid = site_id(c, &site)?;
            let Some(d) = c
                .query_row(&format!("{DELIVERY_SELECT} WHERE d.site_id = ?1 AND d.id = ?2"), params![sid, id], delivery_row)
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare(
                "SELECT n, at, duration_ms, status, outcome, response FROM notify_attempts WHERE delivery_id = ?1 ORDER BY n",
            )?;
            let attempts = st
                .query_map([id], |r| {
                    Ok(DeliveryAttempt {
                        n: r.get(0)?,
                        at: r.get(1)?,
                        duration_ms: r.get::<_, i64>(2)? as u64,
                        status: r.get(3)?,
                        outcome: r.get(4)?,
                        response: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(Some((d, attempts)))
        })
        .await
    }

    async fn redeliver(&self, site: &SiteName, id: i64, now: UnixMillis) -> Result<Option<i64>, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            let sid = site_id(&tx, &site)?;
            let state: Option<String> = tx
                .query_row("SELECT state FROM notify_deliveries WHERE id = ?1 AND site_id = ?2", params![id, sid], |r| {
                    r.get(0)
                })
                .optional()?;
            match state.as_deref() {
                None => return Ok(None),
                Some("pending") => {
                    return Err(StoreError::Conflict(format!("delivery {id} is still pending; it will be tried again")));
                }
                Some(_) => {}
            }
            tx.execute(
                "INSERT INTO notify_deliveries (subscription_id, site_id, action, coalesce_key, event_kind, event_id,
                   payload, state, attempts, next_at, created_at, updated_at)
                 SELECT subscription_id, site_id, action, coalesce_key, event_kind, event_id, payload, 'pending', 0, ?2, ?2, ?2
                 FROM notify_deliveries WHERE id = ?1",
                params![id, now],
            )?;
            let new = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Some(new))
        })
        .await
    }

    async fn forge_comment(&self, subscription: &str, pull_request: u64) -> Result<Option<String>, StoreError> {
        let subscription = subscription.to_owned();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT comment_id FROM forge_comments WHERE subscription_id = ?1 AND pull_request = ?2",
                params![subscription, pull_request as i64],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn set_forge_comment(&self, subscription: &str, pull_request: u64, id: &str) -> Result<(), StoreError> {
        let (subscription, id) = (subscription.to_owned(), id.to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT INTO forge_comments (subscription_id, pull_request, comment_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (subscription_id, pull_request) DO UPDATE SET comment_id = excluded.comment_id",
                params![subscription, pull_request as i64, id],
            )?;
            Ok(())
        })
        .await
    }

    async fn prune_notifications(&self, before: UnixMillis) -> Result<u64, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            // Events never fanned out (notifications were off) go too: sent that late they would mislead.
            let mut n = tx.execute("DELETE FROM notify_outbox WHERE at < ?1", [before])?;
            n += tx.execute("DELETE FROM notify_deliveries WHERE state != 'pending' AND updated_at < ?1", [before])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }
}

//! [`NotifyStore`] on PostgreSQL, and [`record_event`]: how state changes
//! write the outbox in their own transaction. Delivery claims take their row
//! with `FOR UPDATE SKIP LOCKED`; fanning an event out locks it, so two
//! dispatchers on one database never deliver it twice.

use async_trait::async_trait;
use chanto_core::SiteName;
use tokio_postgres::Row;

use crate::notify::*;
use crate::postgres::{PostgresMeta, Tx, col, exec, one, opt, opt_col, rows, site_id};
use crate::sqlite_notify::build_event;
use crate::{StoreError, UnixMillis};

/// Records an event in the outbox, when the site has a subscription to hear
/// it. Called inside the transaction of the change it reports.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_event(
    tx: &Tx<'_>,
    site_id: i64,
    kind: &str,
    branch: &str,
    build: Option<&str>,
    deploy: Option<&str>,
    detail: Option<&str>,
    at: UnixMillis,
) -> Result<(), StoreError> {
    debug_assert!(EVENT_KINDS.contains(&kind), "{kind}");
    // Casts: parameters in a SELECT list have no type of their own.
    exec(
        tx,
        "INSERT INTO notify_outbox (site_id, kind, branch, build_id, deploy_id, detail, at)
         SELECT $1::bigint, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint
         WHERE EXISTS (SELECT 1 FROM notify_subscriptions WHERE site_id = $1::bigint)",
        &[&site_id, &kind, &branch, &build, &deploy, &detail, &at],
    )
    .await?;
    Ok(())
}

/// Records the event of build `id` having entered its current state.
pub(crate) async fn record_build_event(tx: &Tx<'_>, id: &str, at: UnixMillis) -> Result<(), StoreError> {
    let r = one(tx, "SELECT site_id, branch, state, deploy_id FROM builds WHERE id = $1", &[&id]).await?;
    let (site_id, branch, state, deploy): (i64, String, String, Option<String>) =
        (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
    match build_event(&state) {
        Some(kind) => record_event(tx, site_id, kind, &branch, Some(id), deploy.as_deref(), None, at).await,
        None => Ok(()),
    }
}

/// Whether `branch` of the site is a pull request preview (`pr-<n>` with a preview record).
pub(crate) async fn is_preview(tx: &Tx<'_>, site_id: i64, branch: &str) -> Result<bool, StoreError> {
    let Some(n) = branch.strip_prefix("pr-").and_then(|n| n.parse::<i64>().ok()) else { return Ok(false) };
    Ok(one(tx, "SELECT EXISTS (SELECT 1 FROM previews WHERE site_id = $1 AND number = $2)", &[&site_id, &n])
        .await?
        .try_get(0)?)
}

const SUB_SELECT: &str = "SELECT n.id, s.name, n.channel, n.config, n.display, n.filter, n.created_at
     FROM notify_subscriptions n JOIN sites s ON s.id = n.site_id";

fn sub_row(r: &Row) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        id: r.try_get(0)?,
        site: col(r, 1)?,
        channel: r.try_get(2)?,
        config: r.try_get(3)?,
        display: r.try_get(4)?,
        filter: r.try_get(5)?,
        created_at: r.try_get(6)?,
    })
}

const DELIVERY_SELECT: &str =
    "SELECT d.id, d.subscription_id, s.name, d.action, d.coalesce_key, d.event_kind, d.event_id,
       d.payload, d.state, d.attempts, d.next_at, d.last_error, d.created_at, d.updated_at
     FROM notify_deliveries d JOIN sites s ON s.id = d.site_id";

fn delivery_row(r: &Row) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: r.try_get(0)?,
        subscription: r.try_get(1)?,
        site: col(r, 2)?,
        action: r.try_get(3)?,
        key: r.try_get(4)?,
        event_kind: r.try_get(5)?,
        event_id: r.try_get(6)?,
        payload: r.try_get(7)?,
        state: r.try_get(8)?,
        attempts: r.try_get::<_, i32>(9)? as u32,
        next_at: r.try_get(10)?,
        last_error: r.try_get(11)?,
        created_at: r.try_get(12)?,
        updated_at: r.try_get(13)?,
    })
}

#[async_trait]
impl NotifyStore for PostgresMeta {
    async fn add_subscription(&self, s: Subscription) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let sid = site_id(&tx, &s.site).await?;
        exec(
            &tx,
            "INSERT INTO notify_subscriptions (id, site_id, channel, config, display, filter, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&s.id, &sid, &s.channel, &s.config, &s.display, &s.filter, &s.created_at],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_subscriptions(&self, site: &SiteName) -> Result<Vec<Subscription>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let sid = site_id(&tx, site).await?;
        let found =
            rows(&tx, &format!("{SUB_SELECT} WHERE n.site_id = $1 ORDER BY n.created_at, n.seq"), &[&sid]).await?;
        tx.commit().await?;
        found.iter().map(sub_row).collect()
    }

    async fn get_subscription(&self, site: &SiteName, id: &str) -> Result<Option<Subscription>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let sid = site_id(&tx, site).await?;
        let found = opt(&tx, &format!("{SUB_SELECT} WHERE n.site_id = $1 AND n.id = $2"), &[&sid, &id]).await?;
        tx.commit().await?;
        found.map(|r| sub_row(&r)).transpose()
    }

    async fn delete_subscription(&self, site: &SiteName, id: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let sid = site_id(&tx, site).await?;
        let n = exec(&tx, "DELETE FROM notify_subscriptions WHERE site_id = $1 AND id = $2", &[&sid, &id]).await?;
        tx.commit().await?;
        Ok(n > 0)
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
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let n = exec(
            &tx,
            "INSERT INTO notify_outbox (site_id, kind, branch, detail, at)
             SELECT $1::bigint, $2::text, $3::text, $4::text, $5::bigint
             WHERE EXISTS (SELECT 1 FROM notify_subscriptions WHERE site_id = $1::bigint)",
            &[&id, &kind, &branch, &detail, &at],
        )
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn pending_events(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = rows(
            &tx,
            "SELECT o.seq, s.name, o.kind, o.branch, o.build_id, o.deploy_id, o.detail, o.at
             FROM notify_outbox o JOIN sites s ON s.id = o.site_id WHERE NOT o.fanned ORDER BY o.seq LIMIT $1",
            &[&(limit as i64)],
        )
        .await?;
        tx.commit().await?;
        found
            .iter()
            .map(|r| {
                Ok(OutboxEvent {
                    seq: r.try_get(0)?,
                    site: col(r, 1)?,
                    kind: r.try_get(2)?,
                    branch: r.try_get(3)?,
                    build: opt_col(r, 4)?,
                    deploy: opt_col(r, 5)?,
                    detail: r.try_get(6)?,
                    at: r.try_get(7)?,
                })
            })
            .collect()
    }

    async fn fan_out(&self, seq: i64, deliveries: Vec<NewDelivery>, now: UnixMillis) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // The row lock makes a second dispatcher wait, then find it fanned.
        let Some(site) =
            opt(&tx, "SELECT site_id FROM notify_outbox WHERE seq = $1 AND NOT fanned FOR UPDATE", &[&seq]).await?
        else {
            return Ok(false);
        };
        let site: i64 = site.try_get(0)?;
        exec(&tx, "UPDATE notify_outbox SET fanned = true WHERE seq = $1", &[&seq]).await?;
        for d in &deliveries {
            exec(
                &tx,
                "INSERT INTO notify_deliveries (subscription_id, site_id, action, coalesce_key, event_kind, event_id,
                   payload, state, attempts, next_at, created_at, updated_at)
                 SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, $6::text, $7::text, 'pending', 0,
                   $8::bigint, $8::bigint, $8::bigint
                 WHERE EXISTS (SELECT 1 FROM notify_subscriptions WHERE id = $1::text AND site_id = $2::bigint)",
                &[&d.subscription, &site, &d.action, &d.key, &d.event_kind, &d.event_id, &d.payload, &now],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn due_deliveries(&self, now: UnixMillis, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // The oldest pending delivery of each subscription, if it is due.
        let found = rows(
            &tx,
            &format!(
                "{DELIVERY_SELECT} WHERE d.id IN (SELECT min(id) FROM notify_deliveries WHERE state = 'pending'
                   GROUP BY subscription_id) AND d.next_at <= $1 AND coalesce(d.lease_until, 0) <= $1
                 ORDER BY d.next_at, d.id LIMIT $2"
            ),
            &[&now, &(limit as i64)],
        )
        .await?;
        tx.commit().await?;
        found.iter().map(delivery_row).collect()
    }

    async fn claim_delivery(
        &self,
        id: i64,
        attempts: u32,
        owner: &crate::Owner,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // SKIP LOCKED: a delivery another worker is claiming this instant is
        // theirs; once they commit, the lease keeps it theirs.
        let n = exec(
            &tx,
            "UPDATE notify_deliveries SET lease_until = $4, lease_node = $5, lease_run = $6
             WHERE id = (SELECT id FROM notify_deliveries
               WHERE id = $1 AND state = 'pending' AND attempts = $2 AND next_at <= $3
                 AND coalesce(lease_until, 0) <= $3
               FOR UPDATE SKIP LOCKED)",
            &[&id, &(attempts as i32), &now, &lease_until, &owner.node, &owner.run],
        )
        .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn release_leases(&self, owner: &crate::Owner) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE notify_deliveries SET lease_until = NULL, lease_node = NULL, lease_run = NULL
             WHERE state = 'pending' AND lease_until IS NOT NULL AND lease_node = $1 AND lease_run <> $2",
            &[&owner.node, &owner.run],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let due: Option<i64> = one(
            &tx,
            "SELECT min(greatest(next_at, coalesce(lease_until, 0))) FROM notify_deliveries
             WHERE id IN (SELECT min(id) FROM notify_deliveries WHERE state = 'pending' GROUP BY subscription_id)",
            &[],
        )
        .await?
        .try_get(0)?;
        tx.commit().await?;
        Ok(due)
    }

    async fn newer_delivered(&self, subscription: &str, key: &str, id: i64) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found: bool = one(
            &tx,
            "SELECT EXISTS (SELECT 1 FROM notify_deliveries WHERE subscription_id = $1 AND coalesce_key = $2
               AND id > $3 AND state = 'delivered')",
            &[&subscription, &key, &id],
        )
        .await?
        .try_get(0)?;
        tx.commit().await?;
        Ok(found)
    }

    async fn record_attempt(
        &self,
        id: i64,
        a: DeliveryAttempt,
        next: DeliveryNext,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let (state, next_at) = match next {
            DeliveryNext::Delivered => ("delivered", now),
            DeliveryNext::Retry(at) => ("pending", at),
            DeliveryNext::Dead => ("dead", now),
            DeliveryNext::Superseded => ("superseded", now),
        };
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Only the attempt that follows the recorded ones, on a delivery still pending.
        let n = exec(
            &tx,
            "UPDATE notify_deliveries SET state = $2, attempts = $3, next_at = $4, last_error = $5, updated_at = $6,
               lease_until = NULL
             WHERE id = $1 AND state = 'pending' AND attempts = $3 - 1",
            &[&id, &state, &(a.n as i32), &next_at, &(state != "delivered").then_some(a.outcome.as_str()), &now],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("delivery {id} is not waiting for attempt {}", a.n)));
        }
        exec(
            &tx,
            "INSERT INTO notify_attempts (delivery_id, n, at, duration_ms, status, outcome, response)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (delivery_id, n) DO UPDATE SET at = excluded.at, duration_ms = excluded.duration_ms,
               status = excluded.status, outcome = excluded.outcome, response = excluded.response",
            &[&id, &(a.n as i32), &a.at, &(a.duration_ms as i64), &a.status.map(i32::from), &a.outcome, &a.response],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_notify_deliveries(
        &self,
        site: &SiteName,
        subscription: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let sid = site_id(&tx, site).await?;
        let found = rows(
            &tx,
            &format!(
                "{DELIVERY_SELECT} WHERE d.site_id = $1 AND ($2::text IS NULL OR d.subscription_id = $2::text)
                 ORDER BY d.id DESC LIMIT $3"
            ),
            &[&sid, &subscription, &(limit as i64)],
        )
        .await?;
        tx.commit().await?;
        found.iter().map(delivery_row).collect()
    }

    async fn get_notify_delivery(
        &self,
        site: &SiteName,
        id: i64,
    ) -> Result<Option<(Delivery, Vec<DeliveryAttempt>)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let sid = site_id(&tx, site).await?;
        let Some(d) = opt(&tx, &format!("{DELIVERY_SELECT} WHERE d.site_id = $1 AND d.id = $2"), &[&sid, &id]).await?
        else {
            return Ok(None);
        };
        let attempts = rows(
            &tx,
            "SELECT n, at, duration_ms, status, outcome, response FROM notify_attempts WHERE delivery_id = $1 ORDER BY n",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        let attempts = attempts
            .iter()
            .map(|r| {
                Ok(DeliveryAttempt {
                    n: r.try_get::<_, i32>(0)? as u32,
                    at: r.try_get(1)?,
                    duration_ms: r.try_get::<_, i64>(2)? as u64,
                    status: r.try_get::<_, Option<i32>>(3)?.map(|s| s as u16),
                    outcome: r.try_get(4)?,
                    response: r.try_get(5)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some((delivery_row(&d)?, attempts)))
    }

    async fn redeliver(&self, site: &SiteName, id: i64, now: UnixMillis) -> Result<Option<i64>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let sid = site_id(&tx, site).await?;
        let state =
            opt(&tx, "SELECT state FROM notify_deliveries WHERE id = $1 AND site_id = $2 FOR UPDATE", &[&id, &sid])
                .await?;
        match state.map(|r| r.try_get::<_, String>(0)).transpose()?.as_deref() {
            None => return Ok(None),
            Some("pending") => {
                return Err(StoreError::Conflict(format!("delivery {id} is still pending; it will be tried again")));
            }
            Some(_) => {}
        }
        let new: i64 = one(
            &tx,
            "INSERT INTO notify_deliveries (subscription_id, site_id, action, coalesce_key, event_kind, event_id,
               payload, state, attempts, next_at, created_at, updated_at)
             SELECT subscription_id, site_id, action, coalesce_key, event_kind, event_id, payload, 'pending', 0,
               $2::bigint, $2::bigint, $2::bigint
             FROM notify_deliveries WHERE id = $1 RETURNING id",
            &[&id, &now],
        )
        .await?
        .try_get(0)?;
        tx.commit().await?;
        Ok(Some(new))
    }

    async fn forge_comment(&self, subscription: &str, pull_request: u64) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = opt(
            &tx,
            "SELECT comment_id FROM forge_comments WHERE subscription_id = $1 AND pull_request = $2",
            &[&subscription, &(pull_request as i64)],
        )
        .await?;
        tx.commit().await?;
        found.map(|r| Ok(r.try_get(0)?)).transpose()
    }

    async fn set_forge_comment(&self, subscription: &str, pull_request: u64, id: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "INSERT INTO forge_comments (subscription_id, pull_request, comment_id) VALUES ($1, $2, $3)
             ON CONFLICT (subscription_id, pull_request) DO UPDATE SET comment_id = excluded.comment_id",
            &[&subscription, &(pull_request as i64), &id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn prune_notifications(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Events never fanned out (notifications were off) go too: sent that late they would mislead.
        let mut n = exec(&tx, "DELETE FROM notify_outbox WHERE at < $1", &[&before]).await?;
        n +=
            exec(&tx, "DELETE FROM notify_deliveries WHERE state != 'pending' AND updated_at < $1", &[&before]).await?;
        tx.commit().await?;
        Ok(n)
    }
}

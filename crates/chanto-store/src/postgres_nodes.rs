//! [`NodeStore`] on PostgreSQL.

use async_trait::async_trait;
use chanto_core::ContentHash;
use tokio_postgres::Row;

use crate::node_wire::{Heartbeat, Refusal};
use crate::nodes::*;
use crate::postgres::{PostgresMeta, exec, one, opt, rows};
use crate::{StoreError, UnixMillis};

const TOKEN_SELECT: &str = "SELECT id, name, created_at, revoked_at, last_used_at FROM node_tokens";

fn token_row(r: &Row) -> Result<NodeToken, StoreError> {
    Ok(NodeToken {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        created_at: r.try_get(2)?,
        revoked_at: r.try_get(3)?,
        last_used_at: r.try_get(4)?,
    })
}

const NODE_SELECT: &str = "SELECT node_id, name, zone, role, routing_version, snapshot_age_ms, ready, draining,
       refused_version, refused_error, software, edge_addr, last_heartbeat, first_seen, traffic FROM nodes";

fn node_row(r: &Row) -> Result<NodeRecord, StoreError> {
    let role: String = r.try_get(3)?;
    let refused_version: Option<i64> = r.try_get(8)?;
    let refused_error: Option<String> = r.try_get(9)?;
    Ok(NodeRecord {
        node_id: r.try_get(0)?,
        name: r.try_get(1)?,
        zone: r.try_get(2)?,
        role: parse_role(&role).map_err(StoreError::Db)?,
        routing_version: r.try_get::<_, i64>(4)? as u64,
        snapshot_age_ms: r.try_get::<_, Option<i64>>(5)?.map(|v| v as u64),
        ready: r.try_get(6)?,
        draining: r.try_get(7)?,
        refused: refused_version.map(|v| Refusal { version: v as u64, error: refused_error.unwrap_or_default() }),
        software: r.try_get(10)?,
        edge_addr: r.try_get(11)?,
        last_heartbeat: r.try_get(12)?,
        first_seen: r.try_get(13)?,
        traffic: r.try_get::<_, Option<String>>(14)?.and_then(|t| serde_json::from_str(&t).ok()),
    })
}

#[async_trait]
impl NodeStore for PostgresMeta {
    async fn add_node_token(
        &self,
        id: &str,
        name: &str,
        hash: &ContentHash,
        now: UnixMillis,
    ) -> Result<NodeToken, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "INSERT INTO node_tokens (id, name, hash, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&id, &name, &hash.to_hex(), &now],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("node token {id} (or its hash) exists")));
        }
        tx.commit().await?;
        Ok(NodeToken {
            id: id.to_owned(),
            name: name.to_owned(),
            created_at: now,
            revoked_at: None,
            last_used_at: None,
        })
    }

    async fn list_node_tokens(&self) -> Result<Vec<NodeToken>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = rows(&tx, &format!("{TOKEN_SELECT} ORDER BY created_at, id"), &[])
            .await?
            .iter()
            .map(token_row)
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn node_token_by_hash(&self, hash: &ContentHash) -> Result<Option<NodeToken>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = opt(&tx, &format!("{TOKEN_SELECT} WHERE hash = $1"), &[&hash.to_hex()]).await?;
        tx.commit().await?;
        out.as_ref().map(token_row).transpose()
    }

    async fn revoke_node_token(&self, id: &str, now: UnixMillis) -> Result<Option<NodeToken>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "UPDATE node_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", &[&id, &now]).await?;
        let out = opt(&tx, &format!("{TOKEN_SELECT} WHERE id = $1"), &[&id]).await?;
        tx.commit().await?;
        out.as_ref().map(token_row).transpose()
    }

    async fn touch_node_token(&self, id: &str, now: UnixMillis) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "UPDATE node_tokens SET last_used_at = greatest(coalesce(last_used_at, 0), $2) WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_heartbeat(&self, hb: &Heartbeat, now: UnixMillis) -> Result<NodeRecord, StoreError> {
        let rec = NodeRecord::from_heartbeat(hb, now);
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let row = one(
            &tx,
            &format!(
                "INSERT INTO nodes (node_id, name, zone, role, routing_version, snapshot_age_ms, ready, draining,
                    refused_version, refused_error, software, edge_addr, last_heartbeat, first_seen, traffic)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14)
                 ON CONFLICT (node_id) DO UPDATE SET name = excluded.name, zone = excluded.zone, role = excluded.role,
                    routing_version = excluded.routing_version, snapshot_age_ms = excluded.snapshot_age_ms,
                    ready = excluded.ready, draining = excluded.draining, refused_version = excluded.refused_version,
                    refused_error = excluded.refused_error, software = excluded.software, edge_addr = excluded.edge_addr,
                    last_heartbeat = excluded.last_heartbeat, traffic = excluded.traffic
                 RETURNING {}",
                NODE_SELECT.trim_start_matches("SELECT ").trim_end_matches(" FROM nodes")
            ),
            &[
                &rec.node_id,
                &rec.name,
                &rec.zone,
                &role_name(rec.role),
                &(rec.routing_version as i64),
                &rec.snapshot_age_ms.map(|v| v.min(i64::MAX as u64) as i64),
                &rec.ready,
                &rec.draining,
                &rec.refused.as_ref().map(|r| r.version as i64),
                &rec.refused.as_ref().map(|r| r.error.clone()),
                &rec.software,
                &rec.edge_addr,
                &now,
                &rec.traffic.map(|t| serde_json::to_string(&t).unwrap_or_default()),
            ],
        )
        .await?;
        let stored = node_row(&row)?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn list_nodes(&self, since: UnixMillis) -> Result<Vec<NodeRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out =
            rows(&tx, &format!("{NODE_SELECT} WHERE last_heartbeat >= $1 ORDER BY zone, name, node_id"), &[&since])
                .await?
                .iter()
                .map(node_row)
                .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn prune_nodes(&self, before: UnixMillis) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(&tx, "DELETE FROM nodes WHERE last_heartbeat < $1", &[&before]).await?;
        tx.commit().await?;
        Ok(n)
    }
}

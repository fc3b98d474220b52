//! [`NodeStore`] on SQLite.

use async_trait::async_trait;
use chanto_core::ContentHash;
use rusqlite::{OptionalExtension, params};

use crate::node_wire::{Heartbeat, Refusal};
use crate::nodes::*;
use crate::sqlite::SqliteMeta;
use crate::{StoreError, UnixMillis};

const TOKEN_SELECT: &str = "SELECT id, name, created_at, revoked_at, last_used_at FROM node_tokens";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeToken> {
    Ok(NodeToken {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        revoked_at: r.get(3)?,
        last_used_at: r.get(4)?,
    })
}

const NODE_SELECT: &str = "SELECT node_id, name, zone, role, routing_version, snapshot_age_ms, ready, draining,
       refused_version, refused_error, software, edge_addr, last_heartbeat, first_seen, traffic FROM nodes";

fn node_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
    let role: String = r.get(3)?;
    let role = parse_role(&role)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into()))?;
    let refused_version: Option<i64> = r.get(8)?;
    let refused_error: Option<String> = r.get(9)?;
    Ok(NodeRecord {
        node_id: r.get(0)?,
        name: r.get(1)?,
        zone: r.get(2)?,
        role,
        routing_version: r.get::<_, i64>(4)? as u64,
        snapshot_age_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        ready: r.get(6)?,
        draining: r.get(7)?,
        refused: refused_version.map(|v| Refusal { version: v as u64, error: refused_error.unwrap_or_default() }),
        software: r.get(10)?,
        edge_addr: r.get(11)?,
        last_heartbeat: r.get(12)?,
        first_seen: r.get(13)?,
        traffic: r.get::<_, Option<String>>(14)?.and_then(|t| serde_json::from_str(&t).ok()),
    })
}

#[async_trait]
impl NodeStore for SqliteMeta {
    async fn add_node_token(
        &self,
        id: &str,
        name: &str,
        hash: &ContentHash,
        now: UnixMillis,
    ) -> Result<NodeToken, StoreError> {
        let (id, name, hash) = (id.to_owned(), name.to_owned(), hash.to_hex());
        self.call(move |c| {
            let n = c.execute(
                "INSERT INTO node_tokens (id, name, hash, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![id, name, hash, now],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("node token {id} (or its hash) exists")));
            }
            Ok(NodeToken { id, name, created_at: now, revoked_at: None, last_used_at: None })
        })
        .await
    }

    async fn list_node_tokens(&self) -> Result<Vec<NodeToken>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(&format!("{TOKEN_SELECT} ORDER BY created_at, id"))?;
            let rows = st.query_map([], token_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn node_token_by_hash(&self, hash: &ContentHash) -> Result<Option<NodeToken>, StoreError> {
        let hash = hash.to_hex();
        self.call(move |c| Ok(c.query_row(&format!("{TOKEN_SELECT} WHERE hash = ?1"), [hash], token_row).optional()?))
            .await
    }

    async fn revoke_node_token(&self, id: &str, now: UnixMillis) -> Result<Option<NodeToken>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE node_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now],
            )?;
            let token = tx.query_row(&format!("{TOKEN_SELECT} WHERE id = ?1"), [&id], token_row).optional()?;
            tx.commit()?;
            Ok(token)
        })
        .await
    }

    async fn touch_node_token(&self, id: &str, now: UnixMillis) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE node_tokens SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
                params![id, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn record_heartbeat(&self, hb: &Heartbeat, now: UnixMillis) -> Result<NodeRecord, StoreError> {
        let rec = NodeRecord::from_heartbeat(hb, now);
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO nodes (node_id, name, zone, role, routing_version, snapshot_age_ms, ready, draining,
                    refused_version, refused_error, software, edge_addr, last_heartbeat, first_seen, traffic)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14)
                 ON CONFLICT (node_id) DO UPDATE SET name = excluded.name, zone = excluded.zone, role = excluded.role,
                    routing_version = excluded.routing_version, snapshot_age_ms = excluded.snapshot_age_ms,
                    ready = excluded.ready, draining = excluded.draining, refused_version = excluded.refused_version,
                    refused_error = excluded.refused_error, software = excluded.software, edge_addr = excluded.edge_addr,
                    last_heartbeat = excluded.last_heartbeat, traffic = excluded.traffic",
                params![
                    rec.node_id,
                    rec.name,
                    rec.zone,
                    role_name(rec.role),
                    rec.routing_version as i64,
                    rec.snapshot_age_ms.map(|v| v.min(i64::MAX as u64) as i64),
                    rec.ready,
                    rec.draining,
                    rec.refused.as_ref().map(|r| r.version as i64),
                    rec.refused.as_ref().map(|r| r.error.clone()),
                    rec.software,
                    rec.edge_addr,
                    now,
                    rec.traffic.map(|t| serde_json::to_string(&t).unwrap_or_default()),
                ],
            )?;
            let stored = tx.query_row(&format!("{NODE_SELECT} WHERE node_id = ?1"), [&rec.node_id], node_row)?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn list_nodes(&self, since: UnixMillis) -> Result<Vec<NodeRecord>, StoreError> {
        self.call(move |c| {
            let mut st =
                c.prepare(&format!("{NODE_SELECT} WHERE last_heartbeat >= ?1 ORDER BY zone, name, node_id"))?;
            let rows = st.query_map([since], node_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn prune_nodes(&self, before: UnixMillis) -> Result<u64, StoreError> {
        self.call(move |c| Ok(c.execute("DELETE FROM nodes WHERE last_heartbeat < ?1", [before])? as u64)).await
    }
}

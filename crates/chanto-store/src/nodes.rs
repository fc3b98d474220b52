//! Nodes: the tokens edge nodes authenticate with, and what each node last
//! reported in its heartbeat ([`crate::node_wire::Heartbeat`]).
//!
//! A node token is stored as a keyed hash, never in clear, like an API token
//! but in a table of its own: the two kinds can never stand in for each
//! other. A revoked token stays listed (with when it was revoked) so an
//! operator can see what was cut off. Node records are kept per node id and
//! overwritten by every heartbeat; times are the control plane's, passed in.

use async_trait::async_trait;
use chanto_core::ContentHash;

use crate::node_wire::{Heartbeat, NodeRole, Refusal};
use crate::{StoreError, UnixMillis};

/// A node token as stored (without its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeToken {
    /// Its id (`nt_` + hex), what `chanto nodes token revoke` takes.
    pub id: String,
    /// The name it was created with (which node or group of nodes uses it).
    pub name: String,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at: Option<UnixMillis>,
    /// When a node last authenticated with it (updated at most about once a minute).
    pub last_used_at: Option<UnixMillis>,
}

/// What the control plane knows about one node: its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The heartbeat's node id.
    pub node_id: String,
    /// Its name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// Its role.
    pub role: NodeRole,
    /// The routing version it serves.
    pub routing_version: u64,
    /// How old the snapshot it serves was when it reported.
    pub snapshot_age_ms: Option<u64>,
    /// Whether it was ready.
    pub ready: bool,
    /// Whether it was draining.
    pub draining: bool,
    /// The newest snapshot it refused.
    pub refused: Option<Refusal>,
    /// The chanto version it runs.
    pub software: String,
    /// Where its edge listens.
    pub edge_addr: Option<String>,
    /// When the control plane received its last heartbeat.
    pub last_heartbeat: UnixMillis,
    /// When the control plane first heard of it.
    pub first_seen: UnixMillis,
    /// Its responses over the minute before its last heartbeat.
    pub traffic: Option<crate::node_wire::Traffic>,
}

impl NodeRecord {
    /// The record a heartbeat received at `now` makes (`first_seen` is kept by the store).
    pub fn from_heartbeat(hb: &Heartbeat, now: UnixMillis) -> Self {
        Self {
            node_id: hb.node_id.clone(),
            name: hb.name.clone(),
            zone: hb.zone.clone(),
            role: hb.role,
            routing_version: hb.routing_version,
            snapshot_age_ms: hb.snapshot_age_ms,
            ready: hb.ready,
            draining: hb.draining,
            refused: hb.refused.clone(),
            software: hb.software.clone(),
            edge_addr: hb.edge_addr.clone(),
            last_heartbeat: now,
            first_seen: now,
            traffic: hb.traffic.filter(|t| t.is_plausible()),
        }
    }
}

/// The stored name of a role.
pub(crate) fn role_name(r: NodeRole) -> &'static str {
    match r {
        NodeRole::All => "all",
        NodeRole::Control => "control",
        NodeRole::Edge => "edge",
    }
}

/// A role from its stored name.
pub(crate) fn parse_role(s: &str) -> Result<NodeRole, String> {
    match s {
        "all" => Ok(NodeRole::All),
        "control" => Ok(NodeRole::Control),
        "edge" => Ok(NodeRole::Edge),
        other => Err(format!("stored node role {other:?} is not all, control or edge")),
    }
}

/// The node repository. Every backend passes [`crate::conformance::node_store`].
#[async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// Stores a new node token's hash (never the token); `Conflict` if the
    /// id or the hash exists.
    async fn add_node_token(
        &self,
        id: &str,
        name: &str,
        hash: &ContentHash,
        now: UnixMillis,
    ) -> Result<NodeToken, StoreError>;
    /// Every node token, revoked ones included, oldest first.
    async fn list_node_tokens(&self) -> Result<Vec<NodeToken>, StoreError>;
    /// The token with this hash, revoked or not.
    async fn node_token_by_hash(&self, hash: &ContentHash) -> Result<Option<NodeToken>, StoreError>;
    /// Revokes a token (a second revocation keeps the first time). `None`
    /// when there is no such token.
    async fn revoke_node_token(&self, id: &str, now: UnixMillis) -> Result<Option<NodeToken>, StoreError>;
    /// Notes that a node authenticated with the token at `now`.
    async fn touch_node_token(&self, id: &str, now: UnixMillis) -> Result<(), StoreError>;

    /// Records a heartbeat received at `now`: the node's record is replaced,
    /// its `first_seen` kept. Returns the record as stored.
    async fn record_heartbeat(&self, hb: &Heartbeat, now: UnixMillis) -> Result<NodeRecord, StoreError>;
    /// Nodes heard from at `since` or later, by zone, name and id.
    async fn list_nodes(&self, since: UnixMillis) -> Result<Vec<NodeRecord>, StoreError>;
    /// Forgets nodes last heard from before `before`. Returns how many.
    async fn prune_nodes(&self, before: UnixMillis) -> Result<u64, StoreError>;
}

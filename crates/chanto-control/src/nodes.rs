//! Edge nodes as the control plane sees them: the routing long-poll they
//! pull snapshots from, the heartbeats they report with, the node tokens
//! they authenticate with, the node list, and the activation wait (an
//! activation answers once every healthy edge serves its version, or after
//! `edge_wait` with the edges that lag).
//!
//! Node tokens and API tokens are apart by construction: their own table,
//! their own hash key, their own middleware, and the node handlers take the
//! [`NodeCaller`] only that middleware inserts. The wire types are
//! [`chanto_store::node_wire`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use chanto_core::ContentHash;
use chanto_store::node_wire::{
    EdgeRollout, Heartbeat, HeartbeatAck, NODE_TOKEN_PREFIX, NodeCertificate, NodeRef, NodeRole, ROUTING_KIND_HEADER,
    Refusal, RoutingDelta, RoutingSnapshot, SNAPSHOT_FORMAT, TrafficCounts, TrafficWindow, is_certificate_id,
};
use chanto_store::{MetaStore, NodeRecord, NodeToken, RoutingSink, RoutingTable, StoreError, UnixMillis, now_millis};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{ApiError, Control};

/// Largest body the node endpoints accept (a heartbeat is a few hundred bytes).
pub const MAX_NODE_BODY: usize = 64 << 10;
/// Longest long-poll wait a node may ask for, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// The long-poll wait when a node asks for none.
pub const DEFAULT_WAIT_SECS: u64 = 25;
/// Nodes silent for longer are left out of the node list (and pruned).
pub const NODE_FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long a verified node token is believed without asking the store again
/// (a revocation through another control process takes effect within it).
const TOKEN_RECHECK: Duration = Duration::from_secs(10);
/// `last_used_at` is written at most this often per token.
const TOKEN_TOUCH_EVERY: i64 = 60_000;
/// How often the activation wait re-reads the node records (heartbeats
/// received by this process wake it at once).
const ROLLOUT_POLL: Duration = Duration::from_millis(200);
/// Longest refusal message kept from a heartbeat; the rest is cut.
const MAX_REFUSAL_CHARS: usize = 2000;

/// The stored hash of a node token: keyed apart from API tokens, so neither
/// kind's hash can ever match the other's table.
pub fn node_token_hash(token: &str) -> ContentHash {
    ContentHash::from_blake3(blake3::Hasher::new_derive_key("chanto node token v1").update(token.as_bytes()).finalize())
}

/// A published snapshot with its JSON, made once however many edges ask,
/// and what changed in the versions before it (for deltas).
pub(crate) struct Published {
    snapshot: Arc<RoutingSnapshot>,
    json: OnceLock<Bytes>,
    /// The versions published before it, newest first, each with the
    /// version it followed and the sites it changed (at most [`DELTA_HISTORY`]).
    history: Arc<std::collections::VecDeque<Step>>,
    /// The delta from the version just before, made once.
    delta_json: OnceLock<Option<Bytes>>,
}

/// One publication: from `base` to the next version, these sites changed.
#[derive(Clone)]
struct Step {
    base: u64,
    sites: Vec<chanto_core::SiteName>,
}

/// How many publications a control remembers the changes of: a node that
/// fell further behind gets the whole snapshot.
const DELTA_HISTORY: usize = 256;

/// Changes to more sites than this are sent whole, not as a delta.
const DELTA_MAX_SITES: usize = 1024;

impl Published {
    fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.snapshot).expect("a routing snapshot serialises")))
            .clone()
    }

    /// The delta from `base` to this version, if the history reaches back
    /// to `base` and the change is small enough to be worth one.
    fn delta_json(&self, base: u64) -> Option<Bytes> {
        let make = || {
            let mut sites = std::collections::BTreeSet::new();
            let mut reached = false;
            for step in self.history.iter() {
                sites.extend(step.sites.iter());
                if sites.len() > DELTA_MAX_SITES {
                    return None;
                }
                if step.base == base {
                    reached = true;
                    break;
                }
                if step.base < base {
                    return None;
                }
            }
            if !reached {
                return None;
            }
            let table = &self.snapshot.table;
            let delta = RoutingDelta {
                format: SNAPSHOT_FORMAT,
                version: self.snapshot.version,
                base,
                published_at: self.snapshot.published_at,
                epoch: self.snapshot.epoch.clone(),
                sites: sites.into_iter().map(|s| (s.clone(), table.sites.get(s).map(|p| (**p).clone()))).collect(),
                base_certs: Some(table.base_certs.to_vec()),
                base_challenges: Some(table.base_challenges.to_vec()),
            };
            Some(Bytes::from(serde_json::to_vec(&delta).expect("a routing delta serialises")))
        };
        if self.history.front().is_some_and(|s| s.base == base) {
            self.delta_json.get_or_init(make).clone()
        } else {
            make()
        }
    }
}

struct CachedToken {
    id: String,
    revoked: bool,
    checked: Instant,
}

/// The control plane's node state in memory: the last published snapshot,
/// verified node tokens, and what wakes the activation wait.
pub struct NodeHub {
    routing: tokio::sync::watch::Sender<Option<Arc<Published>>>,
    closing: tokio::sync::watch::Sender<bool>,
    heartbeats: tokio::sync::Notify,
    tokens: Mutex<HashMap<ContentHash, CachedToken>>,
    /// The last heartbeat of each node this process received (kept for
    /// [`NODE_FORGET_AFTER`]): activations count from it as well as from the
    /// store, so an edge that reported here while the store could not take
    /// its heartbeat (an outage, or the minutes after one) is not left out
    /// of "live on N of M" while it serves traffic.
    recent: Mutex<HashMap<String, NodeRecord>>,
    /// When this process started.
    started: UnixMillis,
    /// This process's lineage of routing versions (random): a node's delta
    /// base means a table of this process only if its epoch is this one.
    epoch: String,
}

/// How long before a control process started a node must have reported to
/// be waited for in its first node timeout (see [`NodeHub::judge`]).
const START_WINDOW: Duration = Duration::from_secs(600);

/// How many nodes' heartbeats a process keeps in memory (the oldest go
/// first): a node token holder sending ever new node ids cannot grow it.
const MAX_RECENT: usize = 10_000;

impl Default for NodeHub {
    fn default() -> Self {
        Self {
            routing: tokio::sync::watch::channel(None).0,
            closing: tokio::sync::watch::channel(false).0,
            heartbeats: tokio::sync::Notify::new(),
            tokens: Mutex::new(HashMap::new()),
            recent: Mutex::new(HashMap::new()),
            started: now_millis(),
            epoch: hex::encode(chanto_store::random_bytes::<8>()),
        }
    }
}

impl NodeHub {
    /// Makes `table` the snapshot long-polls answer with; wakes them.
    /// `previous` is the table published before it (for deltas).
    pub(crate) fn publish(&self, table: &RoutingTable, previous: &RoutingTable) {
        let snapshot = RoutingSnapshot {
            format: SNAPSHOT_FORMAT,
            version: table.version,
            published_at: now_millis(),
            epoch: self.epoch.clone(),
            table: table.clone(),
        };
        let mut history = match self.routing.borrow().as_ref() {
            Some(p) if p.snapshot.version == previous.version => (*p.history).clone(),
            _ => std::collections::VecDeque::new(),
        };
        if previous.version > 0 {
            let sites = table.changed_since(previous).into_iter().map(|(s, _)| s.clone()).collect();
            history.push_front(Step { base: previous.version, sites });
            history.truncate(DELTA_HISTORY);
        }
        let published = Arc::new(Published {
            snapshot: Arc::new(snapshot),
            json: OnceLock::new(),
            history: Arc::new(history),
            delta_json: OnceLock::new(),
        });
        self.routing.send_if_modified(|cur| {
            if cur.as_ref().is_some_and(|c| c.snapshot.version >= published.snapshot.version) {
                return false;
            }
            *cur = Some(published);
            true
        });
    }

    /// The version long-polls hand out now (0 before the first publication).
    pub fn version(&self) -> u64 {
        self.routing.borrow().as_ref().map_or(0, |p| p.snapshot.version)
    }

    /// The snapshot long-polls hand out now.
    pub fn snapshot(&self) -> Option<Arc<RoutingSnapshot>> {
        self.routing.borrow().as_ref().map(|p| p.snapshot.clone())
    }

    /// Notes a heartbeat received now in this process's memory.
    fn remember(&self, rec: &NodeRecord) {
        let mut recent = self.recent.lock().expect("recent heartbeats");
        // Full (rare): the forgotten go, then the oldest. Stale entries below
        // the cap are harmless: `merge` reads only those heard since.
        if recent.len() >= MAX_RECENT && !recent.contains_key(&rec.node_id) {
            let forget = rec.last_heartbeat - NODE_FORGET_AFTER.as_millis() as i64;
            recent.retain(|_, r| r.last_heartbeat >= forget);
            if recent.len() >= MAX_RECENT
                && let Some(oldest) = recent.values().min_by_key(|r| r.last_heartbeat).map(|r| r.node_id.clone())
            {
                recent.remove(&oldest);
            }
        }
        let first_seen = recent.get(&rec.node_id).map_or(rec.first_seen, |r| r.first_seen.min(rec.first_seen));
        recent.insert(rec.node_id.clone(), NodeRecord { first_seen, ..rec.clone() });
    }

    /// `stored` (the store's nodes heard from since `since`) with this
    /// process's newer heartbeats: per node, the newest record wins.
    fn merge(&self, stored: Vec<NodeRecord>, since: UnixMillis) -> Vec<NodeRecord> {
        let recent = self.recent.lock().expect("recent heartbeats");
        let mut out: HashMap<String, NodeRecord> = stored.into_iter().map(|n| (n.node_id.clone(), n)).collect();
        for r in recent.values().filter(|r| r.last_heartbeat >= since) {
            match out.get_mut(&r.node_id) {
                Some(n) if n.last_heartbeat >= r.last_heartbeat => {}
                Some(n) => *n = NodeRecord { first_seen: n.first_seen.min(r.first_seen), ..r.clone() },
                None => {
                    out.insert(r.node_id.clone(), r.clone());
                }
            }
        }
        let mut out: Vec<NodeRecord> = out.into_values().collect();
        out.sort_by(|a, b| (&a.zone, &a.name, &a.node_id).cmp(&(&b.zone, &b.name, &b.node_id)));
        out
    }

    /// The nodes to judge at `now` from those heard since [`Self::since`]:
    /// in its first node timeout a control process has had no chance to hear
    /// from the nodes that reported before it started (it was down, or
    /// another process was), so a node heard in the [`START_WINDOW`] before
    /// the start is judged as heard at the start: it counts, and an
    /// activation waits for it, until one node timeout after the start.
    fn judge(&self, mut nodes: Vec<NodeRecord>, now: UnixMillis, timeout: Duration) -> Vec<NodeRecord> {
        if now - self.started < timeout.as_millis() as i64 {
            for n in &mut nodes {
                if n.last_heartbeat < self.started && n.last_heartbeat >= self.started - START_WINDOW.as_millis() as i64
                {
                    n.last_heartbeat = self.started;
                }
            }
        }
        nodes
    }

    /// The oldest heartbeat that may still count at `now` (see [`Self::judge`]).
    fn since(&self, now: UnixMillis, timeout: Duration) -> UnixMillis {
        let t = timeout.as_millis() as i64;
        if now - self.started < t { (self.started - START_WINDOW.as_millis() as i64).min(now - t) } else { now - t }
    }

    /// Ends every long-poll and activation wait now (the server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// Who called a node endpoint: the node token's id. Only
/// [`require_node_token`] inserts it, so a node handler cannot be reached
/// with any other credential.
#[derive(Debug, Clone)]
pub struct NodeCaller {
    /// The id of the node token it presented.
    pub token: String,
}

impl Control {
    /// The node token `token` names, if it is valid and not revoked.
    async fn check_node_token(&self, token: &str) -> Result<Result<String, ApiError>, StoreError> {
        let hash = node_token_hash(token);
        let cached = {
            let cache = self.nodes.tokens.lock().expect("node token cache");
            cache.get(&hash).map(|c| (c.id.clone(), c.revoked, c.checked.elapsed() < TOKEN_RECHECK))
        };
        let revoked = |id: &str| {
            ApiError::unauthorized(format!(
                "node token {id} was revoked; create a new one with `chanto nodes token create NAME` and give it to the node"
            ))
        };
        match cached {
            Some((id, true, true)) => return Ok(Err(revoked(&id))),
            Some((id, false, true)) => return Ok(Ok(id)),
            _ => {}
        }
        let found = match self.meta.node_token_by_hash(&hash).await {
            Ok(found) => found,
            // The store is down: a token verified before keeps working (an
            // edge keeps its snapshot fresh from this process's memory).
            Err(e) => match cached {
                Some((id, false, _)) => {
                    tracing::warn!(token = %id, error = %e, "could not re-check a node token; believing the last check");
                    return Ok(Ok(id));
                }
                _ => return Err(e),
            },
        };
        let Some(t) = found else {
            return Ok(Err(ApiError::unauthorized(
                "unknown node token; create one with `chanto nodes token create NAME` (an admin API token is needed for that)",
            )));
        };
        let now = now_millis();
        if t.revoked_at.is_none()
            && t.last_used_at.is_none_or(|at| now - at >= TOKEN_TOUCH_EVERY)
            && let Err(e) = self.meta.touch_node_token(&t.id, now).await
        {
            tracing::debug!(token = %t.id, error = %e, "could not note a node token's use");
        }
        self.nodes
            .tokens
            .lock()
            .expect("node token cache")
            .insert(hash, CachedToken { id: t.id.clone(), revoked: t.revoked_at.is_some(), checked: Instant::now() });
        Ok(if t.revoked_at.is_some() { Err(revoked(&t.id)) } else { Ok(t.id) })
    }

    /// Creates a node token; returns it with the only copy of the token in clear.
    pub async fn create_node_token(&self, name: &str) -> Result<(NodeToken, String), ApiError> {
        validate_token_name(name)?;
        let token = format!("{NODE_TOKEN_PREFIX}{}", hex::encode(chanto_store::random_bytes::<32>()));
        let id = format!("nt_{}", hex::encode(chanto_store::random_bytes::<8>()));
        let record = self.meta.add_node_token(&id, name, &node_token_hash(&token), now_millis()).await?;
        tracing::info!(token = %id, name = %name, "node token created");
        Ok((record, token))
    }

    /// Revokes a node token: every node using it is refused from now on
    /// (by other control processes within [`TOKEN_RECHECK`]).
    pub async fn revoke_node_token(&self, id: &str) -> Result<NodeToken, ApiError> {
        let Some(t) = self.meta.revoke_node_token(id, now_millis()).await? else {
            return Err(ApiError::not_found(format!("node token {id} (see `chanto nodes token list`)")));
        };
        self.nodes.tokens.lock().expect("node token cache").retain(|_, c| c.id != t.id);
        tracing::info!(token = %t.id, name = %t.name, "node token revoked");
        Ok(t)
    }

    /// Records a heartbeat received now and wakes activation waits.
    /// The heartbeat counts here at once; if the store cannot take it (an
    /// outage), the node still counts in this process's activations and the
    /// error is returned (the node retries sooner).
    pub async fn record_heartbeat(&self, hb: &Heartbeat) -> Result<NodeRecord, StoreError> {
        let now = now_millis();
        self.nodes.remember(&NodeRecord::from_heartbeat(hb, now));
        self.nodes.heartbeats.notify_waiters();
        self.meta.record_heartbeat(hb, now).await
    }

    /// Where routing version `version` is live: waits (at most
    /// [`crate::ControlConfig::edge_wait`]) until every healthy edge serves
    /// it or refused it, and answers what it saw last.
    pub async fn edge_rollout(&self, version: u64) -> EdgeRollout {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.config.edge_wait;
        let mut closing = self.nodes.closing.subscribe();
        let mut last = loop {
            let woken = self.nodes.heartbeats.notified();
            let now = now_millis();
            let since = self.nodes.since(now, self.config.node_timeout);
            let stored = match self.meta.list_nodes(since).await {
                Ok(nodes) => nodes,
                Err(e) => {
                    // What this process heard itself still counts.
                    tracing::warn!(version, error = %e, "could not read the nodes' state from the store; counting the heartbeats this process received");
                    Vec::new()
                }
            };
            let nodes = self.nodes.judge(self.nodes.merge(stored, since), now, self.config.node_timeout);
            let seen = rollout(version, &nodes, now, self.config.node_timeout);
            if seen.lagging.is_empty() || tokio::time::Instant::now() >= deadline || *closing.borrow() {
                break seen;
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(ROLLOUT_POLL) => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = closing.changed() => {}
            }
        };
        last.waited_ms = started.elapsed().as_millis() as u64;
        if !last.lagging.is_empty() || !last.refused.is_empty() {
            let lagging: Vec<String> = last.lagging.iter().map(|n| format!("{}/{}", n.zone, n.name)).collect();
            let refused: Vec<String> = last.refused.iter().map(|n| format!("{}/{}", n.zone, n.name)).collect();
            tracing::warn!(version, live = last.live, total = last.total, lagging = ?lagging, refused = ?refused, waited_ms = last.waited_ms, "routing version not live on every edge");
        }
        last
    }

    /// The routing version this process published last (what an activation
    /// that just returned waits for: its own or a newer one).
    pub fn published_version(&self) -> u64 {
        self.nodes.version()
    }
}

/// Whether a node should serve traffic and so counts in an activation: an
/// edge (or all-in-one) heard from within `timeout`, not draining.
pub fn is_healthy(n: &NodeRecord, now: UnixMillis, timeout: Duration) -> bool {
    n.role != NodeRole::Control && now - n.last_heartbeat <= timeout.as_millis() as i64 && !n.draining
}

/// Where `version` is live among `nodes` at `now` (pure: the activation
/// wait's judgement, `waited_ms` left 0).
pub fn rollout(version: u64, nodes: &[NodeRecord], now: UnixMillis, timeout: Duration) -> EdgeRollout {
    let mut out = EdgeRollout { version, ..Default::default() };
    for n in nodes.iter().filter(|n| is_healthy(n, now, timeout)) {
        out.total += 1;
        let node_ref = |error: Option<String>| NodeRef {
            node_id: n.node_id.clone(),
            name: n.name.clone(),
            zone: n.zone.clone(),
            routing_version: n.routing_version,
            error,
        };
        if n.routing_version >= version {
            out.live += 1;
        } else if let Some(r) = n.refused.as_ref().filter(|r| r.version >= version) {
            out.refused.push(node_ref(Some(r.error.clone())));
        } else {
            out.lagging.push(node_ref(None));
        }
    }
    out
}

/// A token name: 1 to 64 letters, digits, '-', '_' or '.'.
fn validate_token_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            format!(
                "{name:?} is not a node token name; use 1 to 64 letters, digits, '-', '_' or '.' (e.g. edge-zone-a)"
            ),
        )
        .field("name"))
    }
}

/// The node endpoints (`/nodes/routing`, `/nodes/heartbeat`,
/// `/nodes/certificates/{id}`), behind node token auth only, bodies bounded
/// by [`MAX_NODE_BODY`].
pub(crate) fn node_router(control: Arc<Control>) -> Router<Arc<Control>> {
    Router::new()
        .route("/nodes/routing", get(routing))
        .route("/nodes/heartbeat", post(heartbeat))
        .route("/nodes/certificates/{id}", get(certificate))
        .route_layer(middleware::from_fn_with_state(control, require_node_token))
        .layer(DefaultBodyLimit::max(MAX_NODE_BODY))
}

/// The bearer token of a request, if it sent one.
pub(crate) fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    value.and_then(|v| v.strip_prefix("Bearer ")).map(str::trim)
}

async fn require_node_token(
    State(control): State<Arc<Control>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = bearer(&req) else {
        return Err(ApiError::unauthorized(
            "missing node token: send `Authorization: Bearer chn_…` (create one with `chanto nodes token create NAME`; `chanto serve --role edge` reads it from --node-token FILE)",
        ));
    };
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::unauthorized("unknown node token; create one with `chanto nodes token create NAME`"));
    }
    if !token.starts_with(NODE_TOKEN_PREFIX) {
        let message = if control.check_token(token).await? {
            "an API token is not accepted by node endpoints: edges authenticate with a node token (`chanto nodes token create NAME`), never the admin token"
        } else {
            "this is not a node token (node tokens start with chn_); create one with `chanto nodes token create NAME`"
        };
        return Err(ApiError::new(StatusCode::FORBIDDEN, "wrong_token_kind", message));
    }
    let id = control.check_node_token(token).await??;
    req.extensions_mut().insert(NodeCaller { token: id });
    Ok(next.run(req).await)
}

/// A routing long-poll's query.
#[derive(Debug, PartialEq, Eq)]
struct RoutingAsk {
    after: u64,
    wait: Duration,
    /// Whether a delta may answer.
    delta: bool,
    /// The epoch of the snapshot the node serves.
    epoch: String,
}

/// `after`, `wait`, `delta` and `epoch` of a routing long-poll.
fn parse_routing_query(raw: Option<&str>) -> Result<RoutingAsk, ApiError> {
    let (mut after, mut wait, mut delta, mut epoch) = (0u64, DEFAULT_WAIT_SECS, false, String::new());
    let bad =
        |name: &'static str, msg: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", msg).field(name);
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" => {
                after = v.parse().map_err(|_| {
                    bad(
                        "after",
                        format!("after={v:?} is not a routing version; give the version you serve (0 for none)"),
                    )
                })?
            }
            "wait" => {
                wait = v.parse().ok().filter(|w| *w <= MAX_WAIT_SECS).ok_or_else(|| {
                    bad("wait", format!("wait={v:?} is not a number of seconds from 0 to {MAX_WAIT_SECS}"))
                })?
            }
            "epoch" => {
                if v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(bad("epoch", format!("epoch={v:?} is not the epoch of a routing snapshot")));
                }
                epoch = v.to_owned();
            }
            "delta" => {
                delta = match v {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(bad("delta", format!("delta={v:?} is not 1 or 0"))),
                }
            }
            _ => {}
        }
    }
    Ok(RoutingAsk { after, wait: Duration::from_secs(wait), delta, epoch })
}

/// Query of `GET /nodes/routing`.
#[derive(Deserialize, utoipa::IntoParams)]
#[allow(dead_code)]
struct RoutingQuery {
    /// The version the node serves (0: none): the answer is a newer one.
    after: Option<u64>,
    /// Seconds to wait for a newer version (0 to 60, default 25) before answering 304.
    wait: Option<u64>,
    /// 1: answer with a RoutingDelta from `after` when the control still
    /// knows what changed since (header `chanto-routing: delta`), else the
    /// whole snapshot (`chanto-routing: full`).
    delta: Option<u8>,
    /// The epoch of the snapshot the node serves (deltas only within one).
    epoch: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/nodes/routing", tag = "nodes", security(("node_token" = [])), params(RoutingQuery),
    responses((status = 200, body = Object, description = "A RoutingSnapshot newer than `after`, or with `delta=1` a RoutingDelta from it (chanto_store::node_wire)"),
        (status = 304, description = "No newer version within `wait`"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "not a node token")))]
async fn routing(
    State(c): State<Arc<Control>>,
    Extension(_caller): Extension<NodeCaller>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let RoutingAsk { after, wait, delta, epoch } = parse_routing_query(q.as_deref())?;
    let mut rx = c.nodes.routing.subscribe();
    let mut closing = c.nodes.closing.subscribe();
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        let current = rx.borrow_and_update().clone();
        if let Some(p) = current.filter(|p| p.snapshot.version > after) {
            let same_lineage = delta && !epoch.is_empty() && epoch == p.snapshot.epoch;
            let (body, kind) = match same_lineage.then(|| p.delta_json(after)).flatten() {
                Some(d) => (d, "delta"),
                None => (p.json(), "full"),
            };
            let mut resp = body.into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp.headers_mut().insert(ROUTING_KIND_HEADER, HeaderValue::from_static(kind));
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(resp);
        }
        if *closing.borrow() {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(StatusCode::NOT_MODIFIED.into_response()) },
            _ = &mut deadline => return Ok(StatusCode::NOT_MODIFIED.into_response()),
            _ = closing.changed() => {}
        }
    }
}

#[utoipa::path(get, path = "/api/v1/nodes/certificates/{id}", tag = "nodes", security(("node_token" = [])),
    params(("id" = String, Path, description = "The certificate id the routing table names (64 hex digits)")),
    responses((status = 200, body = Object, description = "A NodeCertificate: {id, chain_pem, key_pem} (chanto_store::node_wire), Cache-Control: no-store"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "not a node token"),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody, description = "this server holds no certificate keys")))]
/// An edge node fetches a certificate the routing table names, with its key
/// unsealed: the only way a key leaves the control plane, and only to a
/// node token.
async fn certificate(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<NodeCaller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !is_certificate_id(&id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_certificate_id",
            "a certificate id is 64 lower-case hex digits, as the routing table names it",
        )
        .field("id"));
    }
    let keys = c.domain_keys().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "certificates_unavailable",
            "this server does not hold the key that seals certificate keys (DATA/secret.key): ask a control plane that does",
        )
    })?;
    let cert = c.meta.certificate(&id).await?.ok_or_else(|| ApiError::not_found(format!("certificate {id}")))?;
    let key_pem = keys.open_key(&cert).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
    tracing::info!(certificate = %id, node_token = %caller.token, "an edge node fetched a certificate");
    let body = NodeCertificate { id, chain_pem: cert.chain_pem, key_pem };
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Checks a heartbeat's fields (bounded, printable); cuts a long refusal.
fn validate_heartbeat(hb: &mut Heartbeat) -> Result<(), ApiError> {
    let bad = |field: &'static str, msg: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_heartbeat", format!("heartbeat {field}: {msg}")).field(field)
    };
    let label = |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    if !label(&hb.node_id) {
        return Err(bad("node_id", "1 to 128 printable ASCII characters, no spaces"));
    }
    if hb.name.is_empty() || hb.name.len() > 128 || hb.name.chars().any(char::is_control) {
        return Err(bad("name", "1 to 128 characters, no control characters"));
    }
    let zone_ok = !hb.zone.is_empty()
        && hb.zone.len() <= 63
        && hb.zone.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !zone_ok {
        return Err(bad("zone", "1 to 63 letters, digits, '-', '_' or '.'"));
    }
    if hb.software.len() > 64 || hb.software.chars().any(char::is_control) {
        return Err(bad("software", "at most 64 characters, no control characters"));
    }
    if hb.edge_addr.as_ref().is_some_and(|a| a.len() > 256 || a.chars().any(char::is_control)) {
        return Err(bad("edge_addr", "at most 256 characters, no control characters"));
    }
    if hb.routing_version > i64::MAX as u64 {
        return Err(bad("routing_version", "too large"));
    }
    if hb.wanted_certs.len() > 256 || hb.wanted_certs.iter().any(|n| n.len() > 253) {
        return Err(bad("wanted_certs", "at most 256 host names of at most 253 characters"));
    }
    if hb.traffic.is_some_and(|t| !t.is_plausible()) {
        return Err(bad("traffic", "a window of 1 ms to a day, and no more errors than responses"));
    }
    if let Some(r) = &mut hb.refused {
        if r.version > i64::MAX as u64 {
            return Err(bad("refused.version", "too large"));
        }
        if r.error.chars().count() > MAX_REFUSAL_CHARS {
            r.error = r.error.chars().take(MAX_REFUSAL_CHARS).collect::<String>() + "…";
        }
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/nodes/heartbeat", tag = "nodes", security(("node_token" = [])),
    request_body(content = Object, description = "A Heartbeat (chanto_store::node_wire), at most 64 KiB"),
    responses((status = 200, body = Object, description = "A HeartbeatAck: the newest routing version"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn heartbeat(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<NodeCaller>,
    body: Bytes,
) -> Result<Json<HeartbeatAck>, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(&body);
    let invalid =
        |msg: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("invalid heartbeat: {msg}"));
    let mut hb: Heartbeat = match serde_path_to_error::deserialize(&mut de) {
        Ok(hb) => hb,
        Err(e) => {
            let path = e.path().to_string();
            let err = invalid(e.inner().to_string());
            return Err(if path.is_empty() || path == "." { err } else { err.field(path) });
        }
    };
    de.end().map_err(|e| invalid(e.to_string()))?;
    validate_heartbeat(&mut hb)?;
    c.record_heartbeat(&hb).await?;
    for host in &hb.wanted_certs {
        c.want_base_certificate(host).await;
    }
    tracing::debug!(node = %hb.node_id, zone = %hb.zone, version = hb.routing_version, token = %caller.token, "heartbeat");
    Ok(Json(HeartbeatAck { routing_version: c.nodes.version() }))
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// One node as `GET /nodes` shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct NodeView {
    /// Its id.
    pub node_id: String,
    /// Its name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// `all`, `control` or `edge`.
    pub role: String,
    /// The routing version it serves.
    pub routing_version: u64,
    /// How many versions it is behind the newest published.
    pub lag: u64,
    /// How old its snapshot was at its last heartbeat.
    pub snapshot_age_ms: Option<u64>,
    /// When its last heartbeat arrived (ms since the epoch).
    pub last_heartbeat: i64,
    /// How long ago that was, in ms.
    pub last_heartbeat_age_ms: u64,
    /// Whether it said it was ready.
    pub ready: bool,
    /// Whether it said it was draining.
    pub draining: bool,
    /// Whether it counts in activations: heard from within the node
    /// timeout and not draining.
    pub healthy: bool,
    /// The newest version it refused, and why.
    #[schema(value_type = Option<Object>)]
    pub refused: Option<Refusal>,
    /// The chanto version it runs.
    pub software: String,
    /// Its responses over the minute before its last heartbeat (requests,
    /// 4xx, 5xx); absent until it has reported twice.
    #[schema(value_type = Option<Object>)]
    pub traffic: Option<chanto_store::node_wire::Traffic>,
    /// Where its edge listens.
    pub edge_addr: Option<String>,
    /// When the control plane first heard of it (RFC 3339).
    pub first_seen: String,
}

/// Answer to `GET /nodes`.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct NodesView {
    /// The newest routing version published.
    pub routing_version: u64,
    /// How long a node may be silent and still count as healthy, in ms.
    pub node_timeout_ms: u64,
    /// Every node heard from in the last day, by zone and name.
    pub nodes: Vec<NodeView>,
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", security(("token" = [])),
    responses((status = 200, body = NodesView), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_nodes(State(c): State<Arc<Control>>) -> Result<Json<NodesView>, ApiError> {
    Ok(Json(c.nodes_view().await?))
}

impl Control {
    /// Every node heard from lately, judged healthy or not, and the newest routing version.
    pub async fn nodes_view(&self) -> Result<NodesView, ApiError> {
        let c = self;
        let now = now_millis();
        let forget = now - NODE_FORGET_AFTER.as_millis() as i64;
        if let Err(e) = c.meta.prune_nodes(forget).await {
            tracing::debug!(error = %e, "could not prune silent nodes");
        }
        let current = c.nodes.version();
        let nodes = c.nodes.merge(c.meta.list_nodes(forget).await?, forget);
        // Health as activations judge it; the times shown are the real ones.
        let judged = c.nodes.judge(nodes.clone(), now, c.config.node_timeout);
        let nodes = nodes
            .into_iter()
            .zip(judged)
            .map(|(n, judged)| NodeView {
                healthy: is_healthy(&judged, now, c.config.node_timeout),
                lag: current.saturating_sub(n.routing_version),
                last_heartbeat_age_ms: (now - n.last_heartbeat).max(0) as u64,
                role: n.role.to_string(),
                node_id: n.node_id,
                name: n.name,
                zone: n.zone,
                routing_version: n.routing_version,
                snapshot_age_ms: n.snapshot_age_ms,
                last_heartbeat: n.last_heartbeat,
                ready: n.ready,
                draining: n.draining,
                refused: n.refused,
                software: n.software,
                edge_addr: n.edge_addr,
                first_seen: rfc3339(n.first_seen),
                traffic: n.traffic,
            })
            .collect();
        Ok(NodesView { routing_version: current, node_timeout_ms: c.config.node_timeout.as_millis() as u64, nodes })
    }
}

/// Body of `POST /nodes/tokens`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNodeTokenRequest {
    /// What uses it: 1 to 64 letters, digits, '-', '_' or '.'.
    pub name: String,
}

/// A node token as listed (never the token itself).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct NodeTokenView {
    /// Its id (`nt_…`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was revoked (RFC 3339).
    pub revoked_at: Option<String>,
    /// When a node last used it (RFC 3339; noted at most once a minute).
    pub last_used_at: Option<String>,
}

impl From<NodeToken> for NodeTokenView {
    fn from(t: NodeToken) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: rfc3339(t.created_at),
            revoked_at: t.revoked_at.map(rfc3339),
            last_used_at: t.last_used_at.map(rfc3339),
        }
    }
}

/// Answer to `POST /nodes/tokens`: the only time the token is shown.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreatedNodeToken {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The token (`chn_…`): give it to the node (`--node-token FILE`); it is not shown again.
    pub token: String,
}

#[utoipa::path(post, path = "/api/v1/nodes/tokens", tag = "nodes", security(("token" = [])), request_body = CreateNodeTokenRequest,
    responses((status = 201, body = CreatedNodeToken), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create_token(
    State(c): State<Arc<Control>>,
    crate::api::ApiJson(req): crate::api::ApiJson<CreateNodeTokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (t, token) = c.create_node_token(&req.name).await?;
    Ok((StatusCode::CREATED, Json(CreatedNodeToken { id: t.id, name: t.name, token })))
}

#[utoipa::path(get, path = "/api/v1/nodes/tokens", tag = "nodes", security(("token" = [])),
    responses((status = 200, body = Vec<NodeTokenView>), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_tokens(State(c): State<Arc<Control>>) -> Result<Json<Vec<NodeTokenView>>, ApiError> {
    Ok(Json(c.meta.list_node_tokens().await?.into_iter().map(NodeTokenView::from).collect()))
}

#[utoipa::path(delete, path = "/api/v1/nodes/tokens/{id}", tag = "nodes", security(("token" = [])),
    params(("id" = String, Path, description = "Node token id (nt_…)")),
    responses((status = 200, body = NodeTokenView, description = "Revoked (again: unchanged)"), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_token(
    State(c): State<Arc<Control>>,
    Path(id): Path<String>,
) -> Result<Json<NodeTokenView>, ApiError> {
    Ok(Json(c.revoke_node_token(&id).await?.into()))
}

/// Who an in-process edge is, for its node record.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// The node id (`DATA/node-id`).
    pub node_id: String,
    /// Its name (the host name).
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// Where its edge listens.
    pub edge_addr: Option<String>,
}

/// The edge of a `--role all` process as a node: it reports through the
/// same [`chanto_store::NodeStore`] as remote edges, directly. Its version is
/// recorded when the edge's own `publish` returns (the edge then serves it),
/// and a heartbeat is recorded every few seconds
/// ([`InProcessEdge::run_heartbeats`]).
pub struct InProcessEdge {
    inner: Arc<dyn RoutingSink>,
    meta: Arc<dyn MetaStore>,
    node: LocalNode,
    /// Ready and draining, asked of the edge.
    status: Box<dyn Fn() -> (bool, bool) + Send + Sync>,
    /// The version it serves and when it got it.
    serving: Mutex<(u64, UnixMillis)>,
    failing: std::sync::atomic::AtomicBool,
    /// The edge's response counters, and the last minute of them.
    counts: std::sync::OnceLock<Box<dyn Fn() -> TrafficCounts + Send + Sync>>,
    traffic: Mutex<TrafficWindow>,
}

/// How often an in-process edge records a heartbeat.
pub const LOCAL_HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

impl InProcessEdge {
    /// Wraps `inner` (the edge) as node `node`; `status` answers (ready, draining).
    pub fn new(
        inner: Arc<dyn RoutingSink>,
        meta: Arc<dyn MetaStore>,
        node: LocalNode,
        status: impl Fn() -> (bool, bool) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner,
            meta,
            node,
            status: Box::new(status),
            serving: Mutex::new((0, 0)),
            failing: Default::default(),
            counts: std::sync::OnceLock::new(),
            traffic: Mutex::new(TrafficWindow::default()),
        })
    }

    /// Reports the edge's traffic with each heartbeat, read from `counts`.
    pub fn count_with(&self, counts: impl Fn() -> TrafficCounts + Send + Sync + 'static) {
        let _ = self.counts.set(Box::new(counts));
    }

    /// Records this edge's heartbeat now.
    pub async fn beat(&self) {
        let (version, since) = *self.serving.lock().expect("serving");
        let (ready, draining) = (self.status)();
        let now = now_millis();
        let hb = Heartbeat {
            node_id: self.node.node_id.clone(),
            name: self.node.name.clone(),
            zone: self.node.zone.clone(),
            role: NodeRole::All,
            routing_version: version,
            snapshot_age_ms: (version > 0).then(|| (now - since).max(0) as u64),
            ready,
            draining,
            refused: None,
            software: env!("CARGO_PKG_VERSION").into(),
            edge_addr: self.node.edge_addr.clone(),
            wanted_certs: Vec::new(),
            traffic: self.counts.get().and_then(|counts| self.traffic.lock().expect("traffic").sample(now, counts())),
        };
        use std::sync::atomic::Ordering;
        match self.meta.record_heartbeat(&hb, now).await {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the in-process edge's heartbeat is recorded again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "could not record the in-process edge's heartbeat; retrying every 5 s");
                }
            }
        }
    }

    /// Records a heartbeat every [`LOCAL_HEARTBEAT_EVERY`] until `stop`, then
    /// one saying it drains (so activations stop waiting for it).
    pub async fn run_heartbeats(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(LOCAL_HEARTBEAT_EVERY);
        while !*stop.borrow() {
            tokio::select! {
                _ = tick.tick() => self.beat().await,
                changed = stop.changed() => if changed.is_err() { break },
            }
        }
        self.beat().await;
    }
}

#[async_trait]
impl RoutingSink for InProcessEdge {
    async fn publish(&self, table: RoutingTable) -> Result<(), StoreError> {
        let version = table.version;
        self.inner.publish(table).await?;
        *self.serving.lock().expect("serving") = (version, now_millis());
        self.beat().await;
        Ok(())
    }

    fn prime(&self, hash: &ContentHash, manifest: &Arc<chanto_core::Manifest>) {
        self.inner.prime(hash, manifest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(site: &str, n: u8) -> chanto_store::SiteRouting {
        chanto_store::SiteRouting {
            branches: vec![chanto_store::RoutingRow {
                site: site.parse().unwrap(),
                branch: "main".parse().unwrap(),
                label: "main".into(),
                production: true,
                deploy: chanto_core::DeployId::from_random([n; 8]),
                manifest: ContentHash::of(&[n]),
                ready_at: 1,
            }],
            ..Default::default()
        }
    }

    fn delta_of(hub: &NodeHub, base: u64) -> Option<RoutingDelta> {
        let published = hub.routing.borrow().clone().unwrap();
        published.delta_json(base).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn deltas_name_the_sites_changed_since_the_base_the_node_asks_from() {
        let hub = NodeHub::default();
        let (a, b, c): (chanto_core::SiteName, chanto_core::SiteName, chanto_core::SiteName) =
            ("a".parse().unwrap(), "b".parse().unwrap(), "c".parse().unwrap());
        let t1 = RoutingTable::default().with_site(1, &a, Some(part("a", 1))).with_site(1, &b, Some(part("b", 2)));
        hub.publish(&t1, &RoutingTable::default());
        assert!(delta_of(&hub, 0).is_none(), "a node with nothing gets the whole snapshot");
        let t2 = t1.with_site(2, &a, Some(part("a", 3)));
        hub.publish(&t2, &t1);
        let t3 = t2.with_sites(3, vec![(b.clone(), None), (c.clone(), Some(part("c", 4)))]);
        hub.publish(&t3, &t2);

        let d = delta_of(&hub, 2).unwrap();
        assert_eq!((d.base, d.version), (2, 3));
        let names: Vec<_> = d.sites.iter().map(|(s, p)| (s.to_string(), p.is_some())).collect();
        assert_eq!(names, vec![("b".into(), false), ("c".into(), true)]);
        // From further back: every site changed since, each with its part now.
        let d = delta_of(&hub, 1).unwrap();
        let names: Vec<_> = d.sites.iter().map(|(s, _)| s.to_string()).collect();
        assert_eq!(names, vec!["a", "b", "c"]);
        assert_eq!(d.apply(&t1).unwrap(), t3, "the delta makes the table");
        // A version this process never published, or none: no delta.
        assert!(delta_of(&hub, 0).is_none());
        assert!(delta_of(&hub, 7).is_none());

        // A table published over a version this hub did not have starts a new history.
        let other = t3.renumbered(9);
        let t10 = other.with_site(10, &a, Some(part("a", 5)));
        hub.publish(&t10, &other);
        assert!(delta_of(&hub, 3).is_none(), "3 is not in the history any more");
        assert_eq!(delta_of(&hub, 9).unwrap().sites.len(), 1);
    }

    #[test]
    fn a_change_to_very_many_sites_goes_whole() {
        let hub = NodeHub::default();
        let parts =
            |v| (0..=DELTA_MAX_SITES).map(move |n| (format!("s{n}").parse().unwrap(), Some(part(&format!("s{n}"), v))));
        let t1 = RoutingTable::default().with_sites(1, parts(1).collect());
        hub.publish(&t1, &RoutingTable::default());
        let t2 = t1.with_sites(2, parts(2).collect());
        hub.publish(&t2, &t1);
        assert!(delta_of(&hub, 1).is_none());
    }

    fn node(id: &str, version: u64, heard: UnixMillis) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            name: format!("n-{id}"),
            zone: "a".into(),
            role: NodeRole::Edge,
            routing_version: version,
            snapshot_age_ms: None,
            ready: true,
            draining: false,
            refused: None,
            software: "x".into(),
            edge_addr: None,
            last_heartbeat: heard,
            first_seen: 0,
            traffic: None,
        }
    }

    #[test]
    fn heartbeats_this_process_heard_count_with_the_stores() {
        let hub = NodeHub::default();
        let now = 100_000;
        // Heard here while the store could not take them.
        hub.remember(&node("outage", 9, now));
        hub.remember(&NodeRecord { first_seen: 50, ..node("both", 9, now) });
        hub.remember(&node("old", 3, now - 60_000));
        let stored =
            vec![NodeRecord { first_seen: 10, ..node("both", 4, now - 6_000) }, node("stored", 8, now - 1_000)];
        let merged = hub.merge(stored, now - 15_000);
        let seen: Vec<(&str, u64, i64)> =
            merged.iter().map(|n| (n.node_id.as_str(), n.routing_version, n.first_seen)).collect();
        // The newest record per node; first seen the earliest; none older than `since`.
        assert_eq!(seen, [("both", 9, 10), ("outage", 9, 0), ("stored", 8, 0)]);
        // A stored record newer than the memory's wins.
        let merged = hub.merge(vec![node("outage", 10, now + 1)], now - 15_000);
        assert_eq!(merged.iter().find(|n| n.node_id == "outage").unwrap().routing_version, 10);
    }

    #[test]
    fn heartbeats_kept_in_memory_are_bounded_oldest_first() {
        let hub = NodeHub::default();
        let now = 1_000_000;
        for i in 0..MAX_RECENT + 5 {
            hub.remember(&node(&format!("n{i}"), 1, now + i as i64));
        }
        let recent = hub.recent.lock().unwrap();
        assert_eq!(recent.len(), MAX_RECENT);
        assert!(!recent.contains_key("n0") && !recent.contains_key("n4") && recent.contains_key("n5"));
        assert!(recent.contains_key(&format!("n{}", MAX_RECENT + 4)));
    }

    #[test]
    fn a_control_that_just_started_waits_one_node_timeout_for_the_nodes_it_knew() {
        let hub = NodeHub::default();
        let t = Duration::from_secs(15);
        let start = hub.started;
        let nodes = || vec![node("before", 3, start - 60_000), node("long-gone", 1, start - 3_600_000)];
        // Just after the start: the node heard a minute before counts (and lags).
        let now = start + 1_000;
        assert!(hub.since(now, t) <= start - 60_000);
        let judged = hub.judge(nodes(), now, t);
        let r = rollout(4, &judged, now, t);
        assert_eq!((r.live, r.total, r.lagging.len()), (0, 1, 1), "{r:?}");
        // One node timeout later, silence counts again.
        let now = start + 16_000;
        assert_eq!(hub.since(now, t), now - 15_000);
        let r = rollout(4, &hub.judge(nodes(), now, t), now, t);
        assert_eq!(r.total, 0, "{r:?}");
    }

    #[test]
    fn rollout_counts_healthy_edges_only() {
        let t = Duration::from_secs(15);
        let now = 100_000;
        let refused = NodeRecord {
            refused: Some(Refusal { version: 7, error: "blob missing".into() }),
            ..node("r", 6, now - 1000)
        };
        let old_refusal =
            NodeRecord { refused: Some(Refusal { version: 6, error: "old".into() }), ..node("o", 5, now - 1000) };
        let nodes = vec![
            node("live", 7, now - 1000),
            node("newer", 9, now),
            node("lag", 6, now - 14_000),
            node("silent", 1, now - 16_000),
            NodeRecord { draining: true, ..node("drain", 1, now) },
            NodeRecord { role: NodeRole::Control, ..node("ctl", 0, now) },
            NodeRecord { role: NodeRole::All, ..node("all", 7, now) },
            refused,
            old_refusal,
        ];
        let r = rollout(7, &nodes, now, t);
        assert_eq!((r.version, r.live, r.total), (7, 3, 6));
        let ids = |v: &[NodeRef]| v.iter().map(|n| n.node_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&r.lagging), ["lag", "o"]);
        assert_eq!(ids(&r.refused), ["r"]);
        assert_eq!(r.refused[0].error.as_deref(), Some("blob missing"));
        assert_eq!(rollout(7, &[], now, t), EdgeRollout { version: 7, ..Default::default() });
    }

    #[test]
    fn routing_query_is_checked_by_name() {
        let ask = |after, wait, delta, epoch: &str| RoutingAsk { after, wait, delta, epoch: epoch.into() };
        assert_eq!(parse_routing_query(None).unwrap(), ask(0, Duration::from_secs(25), false, ""));
        assert_eq!(parse_routing_query(Some("after=12&wait=0")).unwrap(), ask(12, Duration::ZERO, false, ""));
        assert_eq!(
            parse_routing_query(Some("after=1&delta=1&epoch=ab12")).unwrap(),
            ask(1, Duration::from_secs(DEFAULT_WAIT_SECS), true, "ab12")
        );
        assert_eq!(parse_routing_query(Some("wait=60&x=1")).unwrap().wait, Duration::from_secs(60));
        for (q, field) in [
            ("after=abc", "after"),
            ("after=-1", "after"),
            ("wait=999", "wait"),
            ("wait=", "wait"),
            ("wait=1.5", "wait"),
            ("delta=yes", "delta"),
            ("epoch=../x", "epoch"),
        ] {
            let e = parse_routing_query(Some(q)).unwrap_err();
            assert_eq!((e.status, e.field.as_deref()), (StatusCode::BAD_REQUEST, Some(field)), "{q}");
        }
    }

    #[test]
    fn token_hashes_are_keyed_apart_from_api_tokens() {
        let t = "chn_0123";
        assert_ne!(node_token_hash(t), crate::pipeline::token_hash(t));
    }
}

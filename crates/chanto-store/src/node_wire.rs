//! What edge nodes and the control plane say to each other over HTTP
//! (`/api/v1/nodes/*`, authenticated with a node token). Both sides use
//! these types, so the wire cannot drift between them.
//!
//! - `GET /api/v1/nodes/routing?after=V&wait=S[&delta=1]`: a
//!   [`RoutingSnapshot`] newer than `V` (200), or `304 Not Modified` once `S`
//!   seconds (at most 60) passed without one. `after=0` answers at once with
//!   the current table. With `delta=1`, when the control plane still knows
//!   what changed since `V` and `E` (`&epoch=E`, the epoch of the snapshot the
//!   node serves) is its own, the answer is a [`RoutingDelta`] instead
//!   (header [`ROUTING_KIND_HEADER`]` = delta`): only the sites that changed.
//! - `POST /api/v1/nodes/heartbeat`: a [`Heartbeat`]; the answer is a
//!   [`HeartbeatAck`].
//!
//! Activation answers (deploy finalize, publish, rollback) carry an
//! [`EdgeRollout`] under `edges`.

use serde::{Deserialize, Serialize};

use crate::{RoutingTable, SiteRouting, UnixMillis};

/// The snapshot format this build writes and reads; an edge refuses any other.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Every node token starts with this, so a leaked one is recognisable.
pub const NODE_TOKEN_PREFIX: &str = "chn_";

/// A complete, self-contained routing snapshot as it travels to edges and as
/// an edge keeps it on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingSnapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// The table's version (same as `table.version`); never goes backwards.
    pub version: u64,
    /// When the control plane published it.
    pub published_at: UnixMillis,
    /// The publishing control process's lineage of versions (random per
    /// process; empty from older releases): deltas apply only within one.
    #[serde(default)]
    pub epoch: String,
    /// What every host serves.
    pub table: RoutingTable,
}

/// The answer header that says what a routing answer's body is: `full` (a
/// [`RoutingSnapshot`]) or `delta` (a [`RoutingDelta`]).
pub const ROUTING_KIND_HEADER: &str = "chanto-routing";

/// The sites that changed between two routing versions: applied to a table
/// of version `base`, it makes the table of `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingDelta {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// The version it makes.
    pub version: u64,
    /// The version it applies to (the `after` the node asked with).
    pub base: u64,
    /// When the control plane published `version`.
    pub published_at: UnixMillis,
    /// The lineage of versions it belongs to (see [`RoutingSnapshot::epoch`]).
    pub epoch: String,
    /// Each changed site with its whole new part; `None`: it serves nothing now.
    pub sites: Vec<(chanto_core::SiteName, Option<SiteRouting>)>,
    /// The base domain's certificates as of `version`, whole (`None`, from
    /// a control plane that predates them: unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_certs: Option<Vec<crate::routing::BaseCertRoute>>,
    /// The base hosts' ACME challenges as of `version`, whole (`None`: unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_challenges: Option<Vec<crate::routing::BaseChallengeRoute>>,
}

impl RoutingDelta {
    /// `base` with the delta applied, or why it does not apply (a base of
    /// another version, a part whose rows name another site).
    pub fn apply(&self, base: &RoutingTable) -> Result<RoutingTable, String> {
        if self.format != SNAPSHOT_FORMAT {
            return Err(format!("a delta of format {} (this node reads {SNAPSHOT_FORMAT})", self.format));
        }
        if base.version != self.base || self.version <= self.base {
            return Err(format!(
                "a delta from version {} to {} does not apply to version {}",
                self.base, self.version, base.version
            ));
        }
        for (site, part) in &self.sites {
            if let Some(p) = part
                && !p.rows_name(site)
            {
                return Err(format!("the delta's part for site {site} has rows of another site"));
            }
        }
        let mut next = base.with_sites(self.version, self.sites.clone());
        if let Some(certs) = &self.base_certs {
            next.base_certs = std::sync::Arc::new(certs.clone());
        }
        if let Some(challenges) = &self.base_challenges {
            next.base_challenges = std::sync::Arc::new(challenges.clone());
        }
        Ok(next)
    }
}

/// A certificate and its private key as an edge node fetches them
/// (`GET /api/v1/nodes/certificates/{id}`): the only place a key leaves the
/// control plane unsealed, to a node token only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCertificate {
    /// Hex BLAKE3 over the chain's DER certificates, leaf first: what the
    /// routing table names it by, and what the node checks it against.
    pub id: String,
    /// The chain, leaf first, PEM.
    pub chain_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCertificate").field("id", &self.id).field("key_pem", &"***").finish_non_exhaustive()
    }
}

/// Whether `id` is a certificate id (64 lower-case hex digits).
pub fn is_certificate_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Control plane and edge in one process.
    All,
    /// API, builds and notifications; no edge.
    Control,
    /// Only the edge (and its admin listener).
    Edge,
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::Control => "control",
            Self::Edge => "edge",
        })
    }
}

/// A snapshot an edge would not load, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The refused snapshot's version.
    pub version: u64,
    /// What was wrong, in words (e.g. "blob b3… of site docs is missing").
    pub error: String,
}

/// Responses an edge has sent since it started, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCounts {
    /// Every response.
    pub requests: u64,
    /// 4xx responses.
    pub client_errors: u64,
    /// 5xx responses.
    pub server_errors: u64,
}

/// An edge's responses over a recent window, as its heartbeat reports them
/// (the health page's request and error rates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// How long the window is, in ms (about a minute once the edge has run that long).
    pub window_ms: u64,
    /// Responses in it.
    pub requests: u64,
    /// 4xx responses in it.
    pub client_errors: u64,
    /// 5xx responses in it.
    pub server_errors: u64,
}

impl Traffic {
    /// Whether it is possible at all (a node's report is not trusted blindly).
    pub fn is_plausible(&self) -> bool {
        (1..=86_400_000).contains(&self.window_ms)
            && self.client_errors.saturating_add(self.server_errors) <= self.requests
    }
}

/// The last minute of an edge's counters, sampled at each heartbeat; each
/// sample answers the traffic since the oldest one kept.
#[derive(Debug, Default)]
pub struct TrafficWindow {
    samples: std::collections::VecDeque<(UnixMillis, TrafficCounts)>,
}

impl TrafficWindow {
    /// How far back the window reaches.
    pub const SPAN_MS: UnixMillis = 60_000;

    /// Notes the counters at `now`; the traffic since the window's start
    /// (`None` for the first sample).
    pub fn sample(&mut self, now: UnixMillis, counts: TrafficCounts) -> Option<Traffic> {
        while self.samples.len() > 1 && now - self.samples[1].0 >= Self::SPAN_MS {
            self.samples.pop_front();
        }
        let traffic = self.samples.front().filter(|(at, _)| now > *at).map(|(at, base)| Traffic {
            window_ms: (now - at) as u64,
            requests: counts.requests.saturating_sub(base.requests),
            client_errors: counts.client_errors.saturating_sub(base.client_errors),
            server_errors: counts.server_errors.saturating_sub(base.server_errors),
        });
        self.samples.push_back((now, counts));
        if self.samples.len() > 256 {
            self.samples.pop_front();
        }
        traffic
    }
}

/// What an edge node reports every few seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Stable id of the node (kept in its data directory).
    pub node_id: String,
    /// Human name (host name unless set).
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// Its role.
    pub role: NodeRole,
    /// The routing version it serves (0: none yet).
    pub routing_version: u64,
    /// How long ago the snapshot it serves was published, if it has one.
    pub snapshot_age_ms: Option<u64>,
    /// Whether its `/readyz` answers 200.
    pub ready: bool,
    /// Whether it is draining.
    pub draining: bool,
    /// The newest snapshot it refused, if newer than what it serves.
    pub refused: Option<Refusal>,
    /// The chanto version it runs.
    pub software: String,
    /// Where its edge listens, as it sees it (for operators).
    pub edge_addr: Option<String>,
    /// Base hosts asked for over HTTPS since the last heartbeat that it had
    /// no certificate for (the control plane orders one for each that
    /// routes to a site).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wanted_certs: Vec<String>,
    /// Its responses over the last minute or so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
}

/// The control plane's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The newest routing version published.
    pub routing_version: u64,
}

/// One edge named in an [`EdgeRollout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    /// The node's id.
    pub node_id: String,
    /// Its name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// The version it last reported serving.
    pub routing_version: u64,
    /// Why it refused the version, for refusals.
    pub error: Option<String>,
}

/// Where an activation's routing version is live, as the activation answer
/// reports it: every healthy edge, or those that lag after the bounded wait.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRollout {
    /// The routing version the activation published.
    pub version: u64,
    /// Healthy edges serving it (or newer).
    pub live: u32,
    /// Healthy edges in all.
    pub total: u32,
    /// How long the activation waited for them.
    pub waited_ms: u64,
    /// Healthy edges still on an older version when the wait ended.
    pub lagging: Vec<NodeRef>,
    /// Edges that refused the version.
    pub refused: Vec<NodeRef>,
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_traffic_window_answers_the_last_minute() {
        let c = |requests, client_errors, server_errors| TrafficCounts { requests, client_errors, server_errors };
        let mut w = TrafficWindow::default();
        assert_eq!(w.sample(0, c(10, 1, 0)), None);
        let t = w.sample(5_000, c(30, 4, 1)).unwrap();
        assert_eq!(t, Traffic { window_ms: 5_000, requests: 20, client_errors: 3, server_errors: 1 });
        for s in 2..=20 {
            w.sample(s * 5_000, c(30 + 10 * s as u64, 4, 1));
        }
        // At 100 s the window starts a minute or so back, not at 0.
        let t = w.sample(105_000, c(300, 4, 2)).unwrap();
        assert!((60_000..65_000).contains(&t.window_ms), "{t:?}");
        assert_eq!(t.server_errors, 1);
        // A restarted edge (counters back to 0) reports no negative traffic.
        assert_eq!(w.sample(110_000, c(0, 0, 0)).unwrap().requests, 0);
        assert!(t.is_plausible());
        assert!(!Traffic { window_ms: 0, ..t }.is_plausible());
        assert!(!Traffic { requests: 1, client_errors: 1, server_errors: 1, window_ms: 5 }.is_plausible());
    }
    use super::*;
    use crate::{Permalink, RoutingRow};
    use chanto_core::{AccessPolicy, AccessScope};

    #[test]
    fn a_snapshot_survives_json() {
        let site: chanto_core::SiteName = "docs".parse().unwrap();
        let branch: chanto_core::BranchName = "main".parse().unwrap();
        let deploy: chanto_core::DeployId = chanto_core::DeployId::from_random([7; 8]);
        let manifest = chanto_core::ContentHash::of(b"manifest");
        let table = RoutingTable::from_rows(
            9,
            vec![RoutingRow {
                site: site.clone(),
                branch: branch.clone(),
                label: "main".into(),
                production: true,
                deploy: deploy.clone(),
                manifest,
                ready_at: 5,
            }],
            vec![Permalink {
                site: site.clone(),
                deploy,
                manifest,
                ready_at: 5,
                branch: branch.clone(),
                production: true,
            }],
            vec![
                (site.clone(), AccessScope::Site, AccessPolicy::default()),
                (site.clone(), AccessScope::Branch(branch), AccessPolicy::default()),
                (site.clone(), AccessScope::Previews, AccessPolicy::default()),
            ],
            vec![(site.clone(), vec!["https://api.example.com".into()])],
        );
        let snap = RoutingSnapshot { format: SNAPSHOT_FORMAT, version: 9, published_at: 1, epoch: "e1".into(), table };
        let json = serde_json::to_string(&snap).unwrap();
        assert!(json.contains("\"branch:main\""), "{json}");
        let back: RoutingSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
        assert!(serde_json::from_str::<AccessScope>("\"branch:..\"").is_err());

        // A delta applies to its base only, and only with rows of the site it names.
        let blog: chanto_core::SiteName = "blog".parse().unwrap();
        let part = SiteRouting {
            branches: vec![RoutingRow { site: blog.clone(), ..back.table.sites[&site].branches[0].clone() }],
            ..Default::default()
        };
        let delta = RoutingDelta {
            format: SNAPSHOT_FORMAT,
            version: 10,
            base: 9,
            published_at: 2,
            epoch: "e1".into(),
            sites: vec![(blog.clone(), Some(part.clone())), (site.clone(), None)],
            base_certs: Some(vec![crate::routing::BaseCertRoute { pattern: "*.base.test".into(), cert: "c9".into() }]),
            base_challenges: None,
        };
        let json = serde_json::to_string(&delta).unwrap();
        let delta: RoutingDelta = serde_json::from_str(&json).unwrap();
        let next = delta.apply(&snap.table).unwrap();
        assert_eq!(next.version, 10);
        assert_eq!(next.sites.keys().map(|s| s.as_str()).collect::<Vec<_>>(), vec!["blog"]);
        assert_eq!(next.base_certs.len(), 1, "the base certificates come whole");
        // A delta without them (an older control plane) keeps the base's.
        let older = RoutingDelta { base_certs: None, version: 11, base: 10, sites: vec![], ..delta.clone() };
        assert_eq!(older.apply(&next).unwrap().base_certs, next.base_certs);
        let err = delta.apply(&next).unwrap_err();
        assert!(err.contains("does not apply to version 10"), "{err}");
        let lying = RoutingDelta { sites: vec![(site.clone(), Some(part))], ..delta };
        let err = lying.apply(&snap.table).unwrap_err();
        assert!(err.contains("rows of another site"), "{err}");
    }
}

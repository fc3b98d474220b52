//! The routing table: which manifest each hostname serves. The control plane
//! reads it from metadata after every activation and hands it to every
//! [`RoutingSink`] (the edges); this is the only thing the two planes share.

use async_trait::async_trait;

use crate::{MetaStore, Permalink, RoutingRow, StoreError};

/// A versioned, complete picture of what every host serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoutingTable {
    /// Increases with every table the control plane publishes.
    pub version: u64,
    /// Branches that serve a deploy.
    pub branches: Vec<RoutingRow>,
    /// Every complete deploy, for `<deploy-id>--<site>` permalinks.
    pub permalinks: Vec<Permalink>,
    /// Access policies: site, scope, policy.
    pub access: Vec<(chanto_core::SiteName, chanto_core::AccessScope, chanto_core::AccessPolicy)>,
    /// Origins each site's proxy rules may reach (sites without any left out).
    pub proxy_origins: Vec<(chanto_core::SiteName, Vec<String>)>,
}

impl RoutingTable {
    /// Reads the current table from metadata.
    pub async fn load(meta: &dyn MetaStore, version: u64) -> Result<Self, StoreError> {
        Ok(Self {
            version,
            branches: meta.routing_table().await?,
            permalinks: meta.permalinks().await?,
            access: meta.all_access().await?,
            proxy_origins: meta.all_proxy_origins().await?,
        })
    }
}

/// Something that serves from routing tables: an edge. `publish` returns once
/// the edge answers from the new table, so an API call that activates a deploy
/// returns only when the deploy is live.
#[async_trait]
pub trait RoutingSink: Send + Sync + 'static {
    /// Installs a new table. Tables arrive in increasing version order.
    async fn publish(&self, table: RoutingTable) -> Result<(), StoreError>;

    /// Offers a manifest the control plane just wrote (and `hash` names), so
    /// an edge in the same process need not read and parse it back. A hint:
    /// edges elsewhere ignore it and load from the blob store.
    fn prime(&self, _hash: &chanto_core::ContentHash, _manifest: &std::sync::Arc<chanto_core::Manifest>) {}
}

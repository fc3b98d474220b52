//! chanto's edge (data plane): answers `Host` + path from an in-memory routing
//! snapshot and immutable blobs. It never writes metadata and never queries
//! the database; a request resolves its deploy once, from one snapshot, so no
//! response mixes two deploys (invariant 2).

mod serve;
mod snapshot;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use chanto_core::{ContentHash, Manifest};
use chanto_store::{BlobStore, RoutingSink, RoutingTable, StoreError};

pub use serve::router;
pub use snapshot::{Snapshot, Target};

/// An edge node: the current snapshot, and the blob store it reads from.
pub struct Edge {
    base_domain: String,
    blobs: Arc<dyn BlobStore>,
    snapshot: ArcSwap<Snapshot>,
    /// Parsed manifests by hash. Manifests are immutable, so a cached one is
    /// never stale; only the snapshot decides which one a host serves.
    manifests: Mutex<HashMap<ContentHash, Arc<Manifest>>>,
}

impl Edge {
    /// An edge serving sites under `base_domain`, with an empty snapshot.
    pub fn new(base_domain: impl Into<String>, blobs: Arc<dyn BlobStore>) -> Arc<Self> {
        Arc::new(Self {
            base_domain: base_domain.into().trim_end_matches('.').to_ascii_lowercase(),
            blobs,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            manifests: Mutex::new(HashMap::new()),
        })
    }

    /// The snapshot requests are answered from now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// A manifest, from the cache or the blob store.
    pub async fn manifest(&self, hash: &ContentHash) -> Result<Arc<Manifest>, StoreError> {
        if let Some(m) = self.manifests.lock().expect("manifest cache").get(hash) {
            return Ok(m.clone());
        }
        let bytes = self.blobs.get(hash).await?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Db(format!("manifest {hash} is unreadable: {e}")))?;
        let manifest = Arc::new(manifest);
        self.manifests.lock().expect("manifest cache").insert(*hash, manifest.clone());
        Ok(manifest)
    }
}

#[async_trait]
impl RoutingSink for Edge {
    /// Loads the manifests of every active branch first, then swaps the
    /// snapshot in one atomic store: requests see the old table or the new
    /// one, never a mix.
    async fn publish(&self, table: RoutingTable) -> Result<(), StoreError> {
        let current = self.snapshot.load();
        if table.version <= current.version && current.version != 0 {
            return Ok(());
        }
        let mut manifests = HashMap::new();
        for row in &table.branches {
            if let std::collections::hash_map::Entry::Vacant(slot) = manifests.entry(row.manifest) {
                slot.insert(self.manifest(&row.manifest).await?);
            }
        }
        let snapshot = Snapshot::build(&table, &manifests);
        // Forget manifests no longer referenced by any branch (permalinks reload on demand).
        self.manifests.lock().expect("manifest cache").retain(|h, _| manifests.contains_key(h));
        tracing::debug!(version = table.version, sites = snapshot.site_count(), "routing snapshot swapped");
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }
}

//! The routing snapshot: host label → deploy and manifest, built once per
//! published routing table and swapped atomically.

use std::collections::HashMap;
use std::sync::Arc;

use chanto_core::{ContentHash, DeployId, HostRoute, Manifest};
use chanto_store::RoutingTable;

/// What a host serves: one deploy's manifest.
#[derive(Debug, Clone)]
pub enum Target {
    /// A branch's active deploy, manifest already loaded.
    Loaded {
        /// The deploy.
        deploy: DeployId,
        /// Its manifest.
        manifest: Arc<Manifest>,
    },
    /// A permalink, whose manifest is loaded on first use.
    Lazy {
        /// The deploy.
        deploy: DeployId,
        /// Its manifest's hash.
        manifest: ContentHash,
    },
}

#[derive(Debug, Default)]
struct SiteRoutes {
    production: Option<Target>,
    labels: HashMap<String, Target>,
    deploys: HashMap<String, ContentHash>,
}

/// An immutable picture of what every host serves.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The routing table version it was built from.
    pub version: u64,
    sites: HashMap<String, SiteRoutes>,
}

impl Snapshot {
    /// Builds a snapshot from a table, with the branch manifests preloaded.
    pub fn build(table: &RoutingTable, manifests: &HashMap<ContentHash, Arc<Manifest>>) -> Self {
        let mut sites: HashMap<String, SiteRoutes> = HashMap::new();
        for row in &table.branches {
            let Some(manifest) = manifests.get(&row.manifest) else { continue };
            let target = Target::Loaded { deploy: row.deploy.clone(), manifest: manifest.clone() };
            let site = sites.entry(row.site.to_string()).or_default();
            if row.production {
                site.production = Some(target.clone());
            }
            site.labels.insert(row.label.clone(), target);
        }
        for (site, id, manifest) in &table.permalinks {
            sites.entry(site.to_string()).or_default().deploys.insert(id.to_string(), *manifest);
        }
        Self { version: table.version, sites }
    }

    /// Number of sites with anything to serve.
    pub fn site_count(&self) -> usize {
        self.sites.len()
    }

    /// What a parsed host serves, if anything. A prefix that is a deploy id
    /// of this site is a permalink; otherwise it is a branch label.
    pub fn resolve(&self, route: &HostRoute) -> Option<Target> {
        match route {
            HostRoute::Production { site } => self.sites.get(site)?.production.clone(),
            HostRoute::Prefixed { prefix, site } => {
                let routes = self.sites.get(site)?;
                if DeployId::looks_like(prefix)
                    && let Some(m) = routes.deploys.get(prefix)
                {
                    return Some(Target::Lazy { deploy: prefix.parse().ok()?, manifest: *m });
                }
                routes.labels.get(prefix).cloned()
            }
        }
    }
}

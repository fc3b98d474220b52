//! The routing snapshot: host label → deploy and manifest, built once per
//! published routing table and swapped atomically.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chanto_core::{AccessPolicy, AccessScope, ContentHash, DeployId, HostRoute, Manifest};
use chanto_store::RoutingTable;

/// What a host serves: one deploy's manifest.
#[derive(Debug, Clone)]
pub struct Target {
    /// The site.
    pub site: Arc<str>,
    /// The branch label, or `None` for a permalink.
    pub branch: Option<Arc<str>>,
    /// The deploy.
    pub deploy: DeployId,
    /// Its manifest.
    pub manifest: TargetManifest,
    /// When the deploy became ready: the `Last-Modified` of its files.
    pub last_modified: SystemTime,
    /// `last_modified` as an HTTP date, formatted once per snapshot.
    pub last_modified_header: axum::http::HeaderValue,
    /// Who may see it; `None`: everyone.
    pub access: Option<Arc<AccessPolicy>>,
    /// Origins the site's proxy rules may reach (within the operator's
    /// list); `None`: none.
    pub proxy_origins: Option<Arc<[String]>>,
}

fn http_date(t: SystemTime) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(&httpdate::fmt_http_date(t)).expect("HTTP dates are ASCII")
}

/// A target's manifest: loaded with the snapshot for active branches, on first
/// use for permalinks.
#[derive(Debug, Clone)]
pub enum TargetManifest {
    /// Already parsed.
    Loaded(Arc<Manifest>),
    /// To load from the blob store.
    Lazy(ContentHash),
}

fn time_of(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

#[derive(Debug, Default)]
struct SiteRoutes {
    production: Option<Target>,
    labels: HashMap<String, Target>,
    deploys: HashMap<String, (ContentHash, SystemTime, Option<Arc<AccessPolicy>>)>,
    proxy_origins: Option<Arc<[String]>>,
}

/// An immutable picture of what every host serves.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The routing table version it was built from.
    pub version: u64,
    sites: HashMap<String, SiteRoutes>,
    /// Answers the HTTP/1 fast path made from this snapshot ([`crate::fast`]):
    /// they go when it goes.
    pub(crate) responses: crate::fast::ResponseCache,
}

impl Snapshot {
    /// Builds a snapshot from a table, with the branch manifests preloaded.
    pub fn build(table: &RoutingTable, manifests: &HashMap<ContentHash, Arc<Manifest>>) -> Self {
        let mut sites: HashMap<String, SiteRoutes> = HashMap::new();
        let mut policies: HashMap<&str, Vec<(AccessScope, Arc<AccessPolicy>)>> = HashMap::new();
        for (site, scope, policy) in &table.access {
            policies.entry(site.as_str()).or_default().push((scope.clone(), Arc::new(policy.clone())));
        }
        let access_for = |site: &str, branch: &chanto_core::BranchName, production: bool| {
            let list = policies.get(site)?;
            chanto_core::access::resolve(list, branch, production).filter(|p| !p.is_open()).cloned()
        };
        let origins: HashMap<&str, Arc<[String]>> = table
            .proxy_origins
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(site, list)| (site.as_str(), Arc::from(list.as_slice())))
            .collect();
        for row in &table.branches {
            let Some(manifest) = manifests.get(&row.manifest) else { continue };
            let target = Target {
                site: Arc::from(row.site.as_str()),
                branch: Some(Arc::from(row.label.as_str())),
                deploy: row.deploy.clone(),
                manifest: TargetManifest::Loaded(manifest.clone()),
                last_modified: time_of(row.ready_at),
                last_modified_header: http_date(time_of(row.ready_at)),
                access: access_for(row.site.as_str(), &row.branch, row.production),
                proxy_origins: origins.get(row.site.as_str()).cloned(),
            };
            let site = sites.entry(row.site.to_string()).or_default();
            if row.production {
                site.production = Some(target.clone());
            }
            site.labels.insert(row.label.clone(), target);
        }
        for p in &table.permalinks {
            let routes = sites.entry(p.site.to_string()).or_default();
            // Only production's current deploy is production: a draft or an
            // older production deploy, at its permalink, is a preview (what
            // Netlify users expect of a preview password).
            let current = routes.production.as_ref().is_some_and(|t| t.deploy == p.deploy);
            let access = access_for(p.site.as_str(), &p.branch, p.production && current);
            routes.deploys.insert(p.deploy.to_string(), (p.manifest, time_of(p.ready_at), access));
        }
        for (site, routes) in &mut sites {
            routes.proxy_origins = origins.get(site.as_str()).cloned();
        }
        Self { version: table.version, sites, responses: Default::default() }
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
                    && let Some((m, at, access)) = routes.deploys.get(prefix)
                {
                    return Some(Target {
                        site: Arc::from(site.as_str()),
                        branch: None,
                        deploy: prefix.parse().ok()?,
                        manifest: TargetManifest::Lazy(*m),
                        last_modified: *at,
                        last_modified_header: http_date(*at),
                        access: access.clone(),
                        proxy_origins: routes.proxy_origins.clone(),
                    });
                }
                routes.labels.get(prefix).cloned()
            }
        }
    }
}

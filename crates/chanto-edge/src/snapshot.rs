//! The routing snapshot: host label → deploy and manifest, built once per
//! published routing table and swapped atomically. Built per site: a new
//! table rebuilds only the sites whose part changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chanto_core::{AccessPolicy, AccessScope, ContentHash, DeployId, HostRoute, Manifest};
use chanto_store::{RoutingTable, SiteRouting};

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

impl SiteRoutes {
    /// One site's routes from its part of the table (branches whose manifest
    /// is not in `manifests` are left out).
    fn build(site: &str, part: &SiteRouting, manifests: &HashMap<ContentHash, Arc<Manifest>>) -> Self {
        let policies: Vec<(AccessScope, Arc<AccessPolicy>)> =
            part.access.iter().map(|(scope, policy)| (scope.clone(), Arc::new(policy.clone()))).collect();
        let access_for = |branch: &chanto_core::BranchName, production: bool| {
            chanto_core::access::resolve(&policies, branch, production).filter(|p| !p.is_open()).cloned()
        };
        let proxy_origins: Option<Arc<[String]>> =
            (!part.proxy_origins.is_empty()).then(|| Arc::from(part.proxy_origins.as_slice()));
        let name: Arc<str> = Arc::from(site);
        let mut routes = SiteRoutes { proxy_origins: proxy_origins.clone(), ..Default::default() };
        for row in &part.branches {
            let Some(manifest) = manifests.get(&row.manifest) else { continue };
            let target = Target {
                site: name.clone(),
                branch: Some(Arc::from(row.label.as_str())),
                deploy: row.deploy.clone(),
                manifest: TargetManifest::Loaded(manifest.clone()),
                last_modified: time_of(row.ready_at),
                last_modified_header: http_date(time_of(row.ready_at)),
                access: access_for(&row.branch, row.production),
                proxy_origins: proxy_origins.clone(),
            };
            if row.production {
                routes.production = Some(target.clone());
            }
            routes.labels.insert(row.label.clone(), target);
        }
        for p in &part.permalinks {
            // Only production's current deploy is production: a draft or an
            // older production deploy, at its permalink, is a preview (what
            // Netlify users expect of a preview password).
            let current = routes.production.as_ref().is_some_and(|t| t.deploy == p.deploy);
            let access = access_for(&p.branch, p.production && current);
            routes.deploys.insert(p.deploy.to_string(), (p.manifest, time_of(p.ready_at), access));
        }
        routes
    }
}

/// What a custom domain serves and how (issue 17): the site and branch it
/// routes to, where it redirects, and the HTTPS headers it sends.
#[derive(Debug, Clone)]
pub struct DomainTarget {
    /// The name itself.
    pub name: Arc<str>,
    /// The route it serves: its site's production branch or one branch.
    pub route: HostRoute,
    /// The site.
    pub site: Arc<str>,
    /// The site's primary domain, when this name is not it: requests here
    /// are redirected there.
    pub primary: Option<Arc<str>>,
    /// The token answered at the verification path.
    pub verify_token: Arc<str>,
    /// The ACME HTTP-01 challenge answered while an order is under way:
    /// token and key authorization.
    pub challenge: Option<(Arc<str>, Arc<str>)>,
    /// Plain HTTP goes to HTTPS on names with a certificate.
    pub https_redirect: bool,
    /// The `Strict-Transport-Security` value sent over TLS, if any.
    pub hsts: Option<axum::http::HeaderValue>,
}

/// Where a request for a custom domain must go instead of being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRedirect {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// The host to go to.
    pub host: Arc<str>,
}

impl DomainTarget {
    /// Where a request for this name, over TLS or not, is redirected: to the
    /// primary domain (over HTTPS when this edge serves the primary a
    /// certificate and the request came over TLS or the site redirects to
    /// HTTPS), or from plain HTTP to HTTPS on this very name when this edge
    /// serves it a certificate and the site redirects. `None`: serve it.
    ///
    /// `serves_https` says whether this edge has a certificate for a name
    /// right now: what the table says is not enough (an edge without an
    /// HTTPS listener, or one whose certificate failed to load, must not
    /// send visitors to a handshake that fails).
    pub fn redirect(&self, over_tls: bool, serves_https: impl Fn(&str) -> bool) -> Option<DomainRedirect> {
        if let Some(primary) = &self.primary {
            let https = (over_tls || self.https_redirect) && serves_https(primary);
            return Some(DomainRedirect { scheme: if https { "https" } else { "http" }, host: primary.clone() });
        }
        if !over_tls && self.https_redirect && serves_https(&self.name) {
            return Some(DomainRedirect { scheme: "https", host: self.name.clone() });
        }
        None
    }
}

/// The custom domains of one site's part of the table.
fn domain_targets(site: &str, part: &SiteRouting) -> Vec<(String, Arc<DomainTarget>)> {
    let tls = part.tls.unwrap_or_default();
    let hsts = tls.hsts_header().and_then(|v| axum::http::HeaderValue::from_str(&v).ok());
    let primary = part.domains.iter().find(|d| d.primary);
    let site_name: Arc<str> = Arc::from(site);
    part.domains
        .iter()
        .map(|d| {
            let route = match &d.branch {
                None => HostRoute::Production { site: site.to_string() },
                Some(branch) => {
                    // The label the branch was given when it deployed (unique
                    // per site), else the one it will get.
                    let label = part
                        .branches
                        .iter()
                        .find(|row| row.branch == *branch)
                        .map_or_else(|| branch.label(), |row| row.label.clone());
                    HostRoute::Prefixed { prefix: label, site: site.to_string() }
                }
            };
            let target = DomainTarget {
                name: Arc::from(d.name.as_str()),
                route,
                site: site_name.clone(),
                primary: primary.filter(|p| p.name != d.name).map(|p| Arc::from(p.name.as_str())),
                verify_token: Arc::from(d.verify_token.as_str()),
                // A TLS-ALPN-01 challenge is answered by the TLS listener
                // (`EdgeCerts`), not on the HTTP path.
                challenge: d
                    .challenge
                    .as_ref()
                    .filter(|c| c.alpn_pem.is_none())
                    .map(|c| (Arc::from(c.token.as_str()), Arc::from(c.key_authorization.as_str()))),
                https_redirect: tls.https_redirect,
                hsts: hsts.clone(),
            };
            (d.name.clone(), Arc::new(target))
        })
        .collect()
}

/// An immutable picture of what every host serves.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The routing table version it was built from.
    pub version: u64,
    /// The table it was built from (a persistent map: a cheap copy).
    table: RoutingTable,
    /// Each site's routes, in a persistent map: a new snapshot shares the
    /// routes of every site that did not change.
    sites: imbl::HashMap<String, Arc<SiteRoutes>>,
    /// Custom domains by name (lower case, no trailing dot), rebuilt per
    /// changed site like `sites`.
    domains: imbl::HashMap<String, Arc<DomainTarget>>,
    /// Each site's `Strict-Transport-Security` value, for its hosts under
    /// the base domain when they are reached over TLS.
    hsts: imbl::HashMap<String, axum::http::HeaderValue>,
    /// Answers the HTTP/1 fast path made from this snapshot ([`crate::fast`]):
    /// they go when it goes.
    pub(crate) responses: crate::fast::ResponseCache,
}

impl Snapshot {
    /// Builds a snapshot from a table, with the branch manifests preloaded.
    pub fn build(table: &RoutingTable, manifests: &HashMap<ContentHash, Arc<Manifest>>) -> Self {
        Self::update(&Self::default(), table, manifests)
    }

    /// Builds the snapshot of `table` from `previous`: only the sites whose
    /// part changed from the table `previous` was built from are built
    /// again (their branches' manifests from `manifests`); every other
    /// site's routes are shared.
    pub fn update(previous: &Snapshot, table: &RoutingTable, manifests: &HashMap<ContentHash, Arc<Manifest>>) -> Self {
        let mut sites = previous.sites.clone();
        let mut domains = previous.domains.clone();
        let mut hsts = previous.hsts.clone();
        let changed = table.changed_since(&previous.table);
        for (name, part) in &changed {
            // A site's names as they were go; its names as they are come.
            if let Some(old) = previous.table.sites.get(*name) {
                for d in &old.domains {
                    if domains.get(d.name.as_str()).is_some_and(|t| &*t.site == name.as_str()) {
                        domains.remove(d.name.as_str());
                    }
                }
            }
            hsts.remove(name.as_str());
            if let Some(part) = part {
                domains.extend(domain_targets(name.as_str(), part));
                if let Some(v) = part
                    .tls
                    .as_ref()
                    .and_then(|t| t.hsts_header())
                    .and_then(|v| axum::http::HeaderValue::from_str(&v).ok())
                {
                    hsts.insert(name.to_string(), v);
                }
            }
            match part {
                Some(part) => {
                    sites.insert(name.to_string(), Arc::new(SiteRoutes::build(name.as_str(), part, manifests)))
                }
                None => sites.remove(name.as_str()),
            };
        }
        let responses = crate::fast::ResponseCache::default();
        // The fast path's answers of the sites that did not change stay good.
        let changed: std::collections::HashSet<&str> = changed.iter().map(|(n, _)| n.as_str()).collect();
        previous.responses.carry_over(&responses, |site| !changed.contains(site));
        Self { version: table.version, table: table.clone(), sites, domains, hsts, responses }
    }

    /// The routing table this snapshot was built from.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The parts of `table` that differ from the table this snapshot was built from.
    pub fn changes<'a>(&'a self, table: &'a RoutingTable) -> Vec<&'a Arc<SiteRouting>> {
        table.changed_since(&self.table).into_iter().filter_map(|(_, p)| p).collect()
    }

    /// Number of sites with anything to serve.
    pub fn site_count(&self) -> usize {
        self.sites.len()
    }

    /// The custom domain `host` names (lower case, without port or trailing
    /// dot), if it is one.
    pub fn domain(&self, host: &str) -> Option<&Arc<DomainTarget>> {
        if self.domains.is_empty() {
            return None;
        }
        self.domains.get(host)
    }

    /// The `Strict-Transport-Security` value of `site`, if it sends one.
    pub fn site_hsts(&self, site: &str) -> Option<&axum::http::HeaderValue> {
        self.hsts.get(site)
    }

    /// What a parsed host serves, if anything. A prefix that is a deploy id
    /// of this site is a permalink; otherwise it is a branch label.
    pub fn resolve(&self, route: &HostRoute) -> Option<Target> {
        match route {
            HostRoute::Production { site } => self.sites.get(site.as_str())?.production.clone(),
            HostRoute::Prefixed { prefix, site } => {
                let routes = self.sites.get(site.as_str())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use chanto_core::SiteName;

    fn part(site: &str, n: u8, manifest: ContentHash) -> SiteRouting {
        SiteRouting {
            branches: vec![chanto_store::RoutingRow {
                site: site.parse().unwrap(),
                branch: "main".parse().unwrap(),
                label: "main".into(),
                production: true,
                deploy: DeployId::from_random([n; 8]),
                manifest,
                ready_at: 1,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn an_update_rebuilds_only_the_sites_that_changed() {
        let m = ContentHash::of(b"m");
        let manifests: HashMap<_, _> = [(m, Arc::new(Manifest::default()))].into();
        let (a, b): (SiteName, SiteName) = ("a".parse().unwrap(), "b".parse().unwrap());
        let t1 =
            RoutingTable::default().with_site(1, &a, Some(part("a", 1, m))).with_site(1, &b, Some(part("b", 2, m)));
        let s1 = Snapshot::build(&t1, &manifests);
        // Site b changes; site a's routes are the very same (not rebuilt),
        // and an update needs no manifest of a site that did not change.
        let t2 = t1.with_site(2, &b, Some(part("b", 3, m)));
        let s2 = Snapshot::update(&s1, &t2, &manifests);
        assert!(Arc::ptr_eq(&s1.sites["a"], &s2.sites["a"]));
        assert!(!Arc::ptr_eq(&s1.sites["b"], &s2.sites["b"]));
        let route = |s: &Snapshot, site: &str| {
            s.resolve(&chanto_core::HostRoute::Production { site: site.into() }).map(|t| t.deploy.to_string())
        };
        assert_eq!(route(&s2, "b"), Some(DeployId::from_random([3; 8]).to_string()));
        let s3 = Snapshot::update(&s2, &t2.with_site(3, &a, None), &HashMap::new());
        assert_eq!((route(&s3, "a"), s3.site_count(), s3.version), (None, 1, 3));
        assert!(Arc::ptr_eq(&s2.sites["b"], &s3.sites["b"]));
    }
}

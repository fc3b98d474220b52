//! The routing table: which manifest each hostname serves. The control plane
//! reads it from metadata after every activation and hands it to every
//! [`RoutingSink`] (the edges); this is the only thing the two planes share.
//!
//! The table is kept per site, each site's part behind an [`Arc`], in a
//! persistent map: an activation re-reads only the site it changed
//! ([`RoutingTable::with_site`]); the new table shares every other site's
//! part, and the map's untouched nodes, with the previous one (a copy costs
//! O(log sites)). A table remembers which sites it changed from the one it
//! was made from, so a sink asks [`RoutingTable::changed_since`] and rebuilds
//! only those: the cost of a change grows with the change, not with the
//! platform.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chanto_core::{AccessPolicy, AccessScope, BranchName, SiteName};
use serde::{Deserialize, Serialize};

use crate::{DomainRecord, MetaStore, Permalink, RoutingRow, SiteTls, StoreError};

/// What one site serves: its branches, its permalinks, its access policies
/// and the origins its proxy rules may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRouting {
    /// Branches that serve a deploy.
    pub branches: Vec<RoutingRow>,
    /// Every complete deploy, for `<deploy-id>--<site>` permalinks.
    pub permalinks: Vec<Permalink>,
    /// Access policies by scope.
    pub access: Vec<(AccessScope, AccessPolicy)>,
    /// Origins its proxy rules may reach, sorted.
    pub proxy_origins: Vec<String>,
    /// Its custom domains, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainRoute>,
    /// Its HTTPS settings, when they are not the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SiteTls>,
}

/// What an edge needs of one custom domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRoute {
    /// The hostname.
    pub name: String,
    /// The branch it serves; `None`: production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<BranchName>,
    /// Whether it is the site's primary domain.
    #[serde(default)]
    pub primary: bool,
    /// The token the edge serves to show the name reaches this installation.
    pub verify_token: String,
    /// The certificate it serves over HTTPS (its id), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// The ACME HTTP-01 challenge it answers while an order is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<crate::domains::AcmeChallenge>,
}

impl DomainRoute {
    /// The route of a stored domain.
    pub fn of(d: &DomainRecord) -> Self {
        Self {
            name: d.name.clone(),
            branch: d.branch.clone(),
            primary: d.primary,
            verify_token: d.verify_token.clone(),
            cert: d.cert_id.clone(),
            challenge: d.challenge.clone(),
        }
    }
}

impl SiteRouting {
    /// Whether the site has nothing an edge needs (it is left out of tables).
    pub fn is_empty(&self) -> bool {
        self.branches.is_empty()
            && self.permalinks.is_empty()
            && self.access.is_empty()
            && self.proxy_origins.is_empty()
            && self.domains.is_empty()
            && self.tls.is_none()
    }

    /// Reads one site's part from metadata.
    pub async fn load(meta: &dyn MetaStore, site: &SiteName) -> Result<Self, StoreError> {
        Ok(Self {
            branches: meta.routing_table(Some(site)).await?,
            permalinks: meta.permalinks(Some(site)).await?,
            access: meta.access(site).await?,
            proxy_origins: meta.proxy_origins(Some(site)).await?.into_iter().next().map(|(_, o)| o).unwrap_or_default(),
            domains: meta.domains(Some(site)).await.or_else(absent)?.iter().map(DomainRoute::of).collect(),
            tls: meta.site_tls(site).await.map(Some).or_else(absent)?.filter(|t| *t != SiteTls::default()),
        })
    }

    /// Whether every row names `site` (a part from elsewhere is checked
    /// before it is trusted).
    pub fn rows_name(&self, site: &SiteName) -> bool {
        // Domains and settings carry no site name: they are the part's.
        self.branches.iter().all(|r| r.site == *site) && self.permalinks.iter().all(|p| p.site == *site)
    }
}

/// The base certificates that serve something. A host's own certificate
/// (ordered on demand) gives way to a wildcard that covers it: the wildcard
/// is the one kept renewed.
fn base_routes(rows: Vec<crate::domains::BaseCertificate>) -> Vec<BaseCertRoute> {
    let wildcards: std::collections::HashSet<String> = rows
        .iter()
        .filter(|b| b.cert_id.is_some())
        .filter_map(|b| b.pattern.strip_prefix("*.").map(str::to_owned))
        .collect();
    let shadowed =
        |p: &str| !p.starts_with("*.") && p.split_once('.').is_some_and(|(_, parent)| wildcards.contains(parent));
    rows.into_iter()
        .filter(|b| !shadowed(&b.pattern))
        .filter_map(|b| Some(BaseCertRoute { pattern: b.pattern, cert: b.cert_id? }))
        .collect()
}

/// A deleted site has no domains and no settings: the part is empty.
fn absent<T: Default>(e: StoreError) -> Result<T, StoreError> {
    match e {
        StoreError::NotFound(_) => Ok(T::default()),
        e => Err(e),
    }
}

/// A certificate of the base domain: the wildcard pattern it serves
/// (`*.BASE`, `*.PREVIEW`) and the certificate's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseCertRoute {
    /// The pattern, e.g. `*.example.org`.
    pub pattern: String,
    /// The certificate (its id).
    pub cert: String,
}

/// An ACME challenge a base host answers while its certificate is ordered
/// on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChallengeRoute {
    /// The host, e.g. `docs.example.org`.
    pub host: String,
    /// The challenge.
    pub challenge: crate::domains::AcmeChallenge,
}

/// A versioned, complete picture of what every host serves.
///
/// On the wire and on disk it keeps the flat form it always had
/// (`branches`, `permalinks`, `access`, `proxy_origins` of every site), so
/// edges and controls of neighbouring releases understand each other.
/// Two tables are equal when their versions and sites are.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    /// Increases with every table the control plane publishes.
    pub version: u64,
    /// Each site with anything to serve, and what it serves.
    pub sites: imbl::OrdMap<SiteName, Arc<SiteRouting>>,
    /// The base domain's certificates (few; every delta carries them whole,
    /// and a change to them re-reads the whole table: [`RoutingChange::All`]).
    pub base_certs: Arc<Vec<BaseCertRoute>>,
    /// The ACME challenges base hosts answer (few, while ordered; carried
    /// and re-read like `base_certs`).
    pub base_challenges: Arc<Vec<BaseChallengeRoute>>,
    /// The sites changed from the table of version `base` this one was made
    /// from (`None`: not known; [`Self::changed_since`] then compares all).
    changes: Option<Changes>,
}

#[derive(Debug, Clone)]
struct Changes {
    base: u64,
    sites: imbl::Vector<SiteName>,
}

impl PartialEq for RoutingTable {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.sites == other.sites
            && self.base_certs == other.base_certs
            && self.base_challenges == other.base_challenges
    }
}

impl Eq for RoutingTable {}

/// A routing version some process on a shared store published, as its
/// listener heard it: with the sites it changed when the announcement named
/// them (`None`: not known, re-read everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingAnnouncement {
    /// The version.
    pub version: u64,
    /// The sites it changed from the version before it, if known.
    pub sites: Option<Vec<SiteName>>,
}

impl RoutingAnnouncement {
    /// The `NOTIFY` payload: the version, then the sites it changed (none
    /// named: unknown). Site names have no spaces.
    pub fn payload(version: u64, sites: Option<&[SiteName]>) -> String {
        let mut out = version.to_string();
        if let Some(sites) = sites {
            let named = sites.iter().map(|s| s.as_str().len() + 1).sum::<usize>();
            // PostgreSQL's payload limit is 8000 bytes; beyond a few hundred sites, "unknown" is as good.
            if named < 4000 {
                out.push_str(" =");
                for s in sites {
                    out.push(' ');
                    out.push_str(s.as_str());
                }
            }
        }
        out
    }

    /// Reads a payload; `None` for one this release does not understand.
    pub fn parse(payload: &str) -> Option<Self> {
        let mut words = payload.split(' ');
        let version = words.next()?.parse().ok()?;
        let sites = match words.next() {
            None => None,
            Some("=") => Some(words.map(|w| w.parse().ok()).collect::<Option<Vec<SiteName>>>()?),
            Some(_) => return None,
        };
        Some(Self { version, sites })
    }
}

/// What an activation changed in the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingChange {
    /// These sites' parts (re-read only them).
    Sites(Vec<SiteName>),
    /// Anything (re-read the whole table).
    All,
}

impl RoutingChange {
    /// One site's part.
    pub fn site(site: &SiteName) -> Self {
        Self::Sites(vec![site.clone()])
    }

    /// The sites named (`None`: all).
    pub fn sites(&self) -> Option<&[SiteName]> {
        match self {
            Self::Sites(list) => Some(list),
            Self::All => None,
        }
    }
}

impl RoutingTable {
    /// Reads the whole current table from metadata.
    pub async fn load(meta: &dyn MetaStore, version: u64) -> Result<Self, StoreError> {
        let access = meta.all_access().await?;
        let origins = meta.proxy_origins(None).await?;
        let mut table =
            Self::from_rows(version, meta.routing_table(None).await?, meta.permalinks(None).await?, access, origins);
        let domains = meta.domains(None).await?.iter().map(|d| (d.site.clone(), DomainRoute::of(d))).collect();
        table.add_site_settings(domains, meta.all_site_tls().await?);
        let base = meta.base_certificates().await.or_else(absent)?;
        table.base_challenges = Arc::new(
            base.iter()
                .filter_map(|b| Some(BaseChallengeRoute { host: b.pattern.clone(), challenge: b.challenge.clone()? }))
                .collect(),
        );
        table.base_certs = Arc::new(base_routes(base));
        Ok(table)
    }

    /// Adds custom domains and HTTPS settings (the rows of every site) to a
    /// table made by [`Self::from_rows`].
    fn add_site_settings(&mut self, domains: Vec<(SiteName, DomainRoute)>, tls: Vec<(SiteName, SiteTls)>) {
        let mut parts: BTreeMap<SiteName, SiteRouting> = BTreeMap::new();
        for (site, d) in domains {
            parts.entry(site).or_default().domains.push(d);
        }
        for (site, t) in tls {
            parts.entry(site).or_default().tls = Some(t).filter(|t| *t != SiteTls::default());
        }
        for (site, extra) in parts {
            let mut part = self.sites.get(&site).map(|p| (**p).clone()).unwrap_or_default();
            part.domains = extra.domains;
            part.tls = extra.tls;
            if !part.is_empty() {
                self.sites.insert(site, Arc::new(part));
            }
        }
    }

    /// A table from flat rows of any number of sites.
    pub fn from_rows(
        version: u64,
        branches: Vec<RoutingRow>,
        permalinks: Vec<Permalink>,
        access: Vec<(SiteName, AccessScope, AccessPolicy)>,
        proxy_origins: Vec<(SiteName, Vec<String>)>,
    ) -> Self {
        let mut sites: BTreeMap<SiteName, SiteRouting> = BTreeMap::new();
        for r in branches {
            sites.entry(r.site.clone()).or_default().branches.push(r);
        }
        for p in permalinks {
            sites.entry(p.site.clone()).or_default().permalinks.push(p);
        }
        for (site, scope, policy) in access {
            sites.entry(site).or_default().access.push((scope, policy));
        }
        for (site, origins) in proxy_origins {
            sites.entry(site).or_default().proxy_origins.extend(origins);
        }
        let sites = sites.into_iter().filter(|(_, s)| !s.is_empty()).map(|(n, s)| (n, Arc::new(s))).collect();
        Self { version, sites, base_certs: Arc::default(), base_challenges: Arc::default(), changes: None }
    }

    /// This table as `version` with `site`'s part replaced (`None` or an
    /// empty part: the site serves nothing). Every other site's part is shared.
    pub fn with_site(&self, version: u64, site: &SiteName, part: Option<SiteRouting>) -> Self {
        self.with_sites(version, vec![(site.clone(), part)])
    }

    /// This table as `version` with each named site's part replaced; it
    /// records those sites as its changes from this table.
    pub fn with_sites(&self, version: u64, parts: Vec<(SiteName, Option<SiteRouting>)>) -> Self {
        let mut sites = self.sites.clone();
        let mut changed = imbl::Vector::new();
        for (site, part) in parts {
            match part.filter(|p| !p.is_empty()) {
                Some(p) => sites.insert(site.clone(), Arc::new(p)),
                None => sites.remove(&site),
            };
            changed.push_back(site);
        }
        Self {
            version,
            sites,
            base_certs: self.base_certs.clone(),
            base_challenges: self.base_challenges.clone(),
            changes: Some(Changes { base: self.version, sites: changed }),
        }
    }

    /// This table under another version number, changes unknown (for tests
    /// and for tables that stand alone).
    pub fn renumbered(&self, version: u64) -> Self {
        Self {
            version,
            sites: self.sites.clone(),
            base_certs: self.base_certs.clone(),
            base_challenges: self.base_challenges.clone(),
            changes: None,
        }
    }

    /// Reads `change` from metadata into a copy of this table, as `version`.
    pub async fn reload(&self, meta: &dyn MetaStore, version: u64, change: &RoutingChange) -> Result<Self, StoreError> {
        match change {
            RoutingChange::All => Self::load(meta, version).await,
            RoutingChange::Sites(list) => {
                let mut parts = Vec::with_capacity(list.len());
                for site in list {
                    parts.push((site.clone(), Some(SiteRouting::load(meta, site).await?)));
                }
                Ok(self.with_sites(version, parts))
            }
        }
    }

    /// Shares `older`'s part of every site whose part is equal (after a
    /// whole re-read, so the sites that did not change stay unchanged by
    /// pointer, as [`Self::changed_since`] sees them).
    pub fn share_unchanged(&mut self, older: &RoutingTable) {
        let mut changed = imbl::Vector::new();
        let mut sites = older.sites.clone();
        for (name, part) in &self.sites {
            match older.sites.get(name) {
                Some(o) if **o == **part => {}
                _ => {
                    sites.insert(name.clone(), part.clone());
                    changed.push_back(name.clone());
                }
            }
        }
        for name in older.sites.keys() {
            if !self.sites.contains_key(name) {
                sites.remove(name);
                changed.push_back(name.clone());
            }
        }
        self.sites = sites;
        self.changes = Some(Changes { base: older.version, sites: changed });
    }

    /// Sites whose part differs from `older`'s (by pointer: parts shared
    /// with `older` are unchanged), with their new part (`None`: removed).
    /// When this table was made from `older` (its version is the base of
    /// the changes recorded) only the recorded sites are looked at.
    pub fn changed_since<'a>(&'a self, older: &'a RoutingTable) -> Vec<(&'a SiteName, Option<&'a Arc<SiteRouting>>)> {
        let mut out = Vec::new();
        if let Some(c) = &self.changes
            && c.base == older.version
            && older.version != self.version
        {
            let mut seen = std::collections::HashSet::new();
            for name in c.sites.iter().filter(|n| seen.insert(*n)) {
                let new = self.sites.get(name);
                let same = match (older.sites.get(name), new) {
                    (Some(o), Some(n)) => Arc::ptr_eq(o, n),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    out.push((name, new));
                }
            }
            return out;
        }
        for (name, part) in &self.sites {
            if !older.sites.get(name).is_some_and(|o| Arc::ptr_eq(o, part)) {
                out.push((name, Some(part)));
            }
        }
        for name in older.sites.keys() {
            if !self.sites.contains_key(name) {
                out.push((name, None));
            }
        }
        out
    }

    /// Every branch row, site by site.
    pub fn branches(&self) -> impl Iterator<Item = &RoutingRow> {
        self.sites.values().flat_map(|s| s.branches.iter())
    }

    /// Every permalink, site by site.
    pub fn permalinks(&self) -> impl Iterator<Item = &Permalink> {
        self.sites.values().flat_map(|s| s.permalinks.iter())
    }
}

/// The flat form, as it is written.
#[derive(Serialize)]
struct FlatOut<'a> {
    version: u64,
    branches: Vec<&'a RoutingRow>,
    permalinks: Vec<&'a Permalink>,
    access: Vec<(&'a SiteName, &'a AccessScope, &'a AccessPolicy)>,
    proxy_origins: Vec<(&'a SiteName, &'a [String])>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    domains: Vec<(&'a SiteName, &'a DomainRoute)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tls: Vec<(&'a SiteName, &'a SiteTls)>,
    #[serde(skip_serializing_if = "<[BaseCertRoute]>::is_empty")]
    base_certs: &'a [BaseCertRoute],
    #[serde(skip_serializing_if = "<[BaseChallengeRoute]>::is_empty")]
    base_challenges: &'a [BaseChallengeRoute],
}

/// The flat form, as it is read.
#[derive(Deserialize)]
struct FlatIn {
    version: u64,
    branches: Vec<RoutingRow>,
    permalinks: Vec<Permalink>,
    access: Vec<(SiteName, AccessScope, AccessPolicy)>,
    proxy_origins: Vec<(SiteName, Vec<String>)>,
    #[serde(default)]
    domains: Vec<(SiteName, DomainRoute)>,
    #[serde(default)]
    tls: Vec<(SiteName, SiteTls)>,
    #[serde(default)]
    base_certs: Vec<BaseCertRoute>,
    #[serde(default)]
    base_challenges: Vec<BaseChallengeRoute>,
}

impl Serialize for RoutingTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        FlatOut {
            version: self.version,
            branches: self.branches().collect(),
            permalinks: self.permalinks().collect(),
            access: self.sites.iter().flat_map(|(n, p)| p.access.iter().map(move |(sc, po)| (n, sc, po))).collect(),
            proxy_origins: self
                .sites
                .iter()
                .filter(|(_, p)| !p.proxy_origins.is_empty())
                .map(|(n, p)| (n, p.proxy_origins.as_slice()))
                .collect(),
            domains: self.sites.iter().flat_map(|(n, p)| p.domains.iter().map(move |d| (n, d))).collect(),
            tls: self.sites.iter().filter_map(|(n, p)| p.tls.as_ref().map(|t| (n, t))).collect(),
            base_certs: &self.base_certs,
            base_challenges: &self.base_challenges,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RoutingTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = FlatIn::deserialize(d)?;
        let mut table = Self::from_rows(f.version, f.branches, f.permalinks, f.access, f.proxy_origins);
        table.add_site_settings(f.domains, f.tls);
        table.base_certs = Arc::new(f.base_certs);
        table.base_challenges = Arc::new(f.base_challenges);
        Ok(table)
    }
}

/// Something that serves from routing tables: an edge. `publish` returns once
/// the edge answers from the new table, so an API call that activates a deploy
/// returns only when the deploy is live.
#[async_trait]
pub trait RoutingSink: Send + Sync + 'static {
    /// Installs a new table. Tables arrive in increasing version order; a
    /// site's part shared (same [`Arc`]) with the table before is unchanged.
    async fn publish(&self, table: RoutingTable) -> Result<(), StoreError>;

    /// Offers a manifest the control plane just wrote (and `hash` names), so
    /// an edge in the same process need not read and parse it back. A hint:
    /// edges elsewhere ignore it and load from the blob store.
    fn prime(&self, _hash: &chanto_core::ContentHash, _manifest: &std::sync::Arc<chanto_core::Manifest>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use chanto_core::{BranchName, ContentHash, DeployId};

    fn row(site: &str, n: u8) -> RoutingRow {
        RoutingRow {
            site: site.parse().unwrap(),
            branch: "main".parse::<BranchName>().unwrap(),
            label: "main".into(),
            production: true,
            deploy: DeployId::from_random([n; 8]),
            manifest: ContentHash::of(&[n]),
            ready_at: n as i64,
        }
    }

    #[test]
    fn a_hosts_own_base_certificate_gives_way_to_a_wildcard_that_covers_it() {
        let row = |pattern: &str, cert: Option<&str>| crate::domains::BaseCertificate {
            pattern: pattern.into(),
            cert_id: cert.map(Into::into),
            attempts: 0,
            next_attempt_at: None,
            reason: None,
            updated_at: 0,
            challenge: None,
        };
        let names = |rows| base_routes(rows).into_iter().map(|r| r.pattern).collect::<Vec<_>>();
        // No wildcard served: the host's own certificate is served.
        assert_eq!(names(vec![row("*.b.test", None), row("docs.b.test", Some("h"))]), ["docs.b.test"]);
        // A wildcard for its parent: only the wildcard; other parents untouched.
        assert_eq!(
            names(vec![row("*.b.test", Some("w")), row("docs.b.test", Some("h")), row("docs.p.test", Some("p"))]),
            ["*.b.test", "docs.p.test"]
        );
    }

    #[test]
    fn a_change_to_one_site_shares_every_other_part() {
        let t1 = RoutingTable::from_rows(1, vec![row("a", 1), row("b", 2), row("c", 3)], vec![], vec![], vec![]);
        let b: SiteName = "b".parse().unwrap();
        let t2 = t1.with_site(2, &b, Some(SiteRouting { branches: vec![row("b", 9)], ..Default::default() }));
        let changed: Vec<_> = t2.changed_since(&t1).into_iter().map(|(n, p)| (n.to_string(), p.is_some())).collect();
        assert_eq!(changed, vec![("b".to_string(), true)]);
        assert!(Arc::ptr_eq(
            &t1.sites[&"a".parse::<SiteName>().unwrap()],
            &t2.sites[&"a".parse::<SiteName>().unwrap()]
        ));
        // A site left with nothing goes; the change names it as removed.
        let t3 = t2.with_site(3, &b, Some(SiteRouting::default()));
        assert_eq!(t3.sites.len(), 2);
        let changed: Vec<_> = t3.changed_since(&t2).into_iter().map(|(n, p)| (n.to_string(), p.is_some())).collect();
        assert_eq!(changed, vec![("b".to_string(), false)]);
    }

    #[test]
    fn announcements_name_their_sites_or_say_nothing() {
        let docs: SiteName = "docs".parse().unwrap();
        let blog: SiteName = "blog".parse().unwrap();
        let both = [docs.clone(), blog.clone()];
        assert_eq!(RoutingAnnouncement::payload(7, Some(&both)), "7 = docs blog");
        assert_eq!(RoutingAnnouncement::payload(7, None), "7");
        assert_eq!(RoutingAnnouncement::payload(7, Some(&[])), "7 =");
        let parsed = RoutingAnnouncement::parse("7 = docs blog").unwrap();
        assert_eq!(parsed, RoutingAnnouncement { version: 7, sites: Some(both.to_vec()) });
        assert_eq!(RoutingAnnouncement::parse("7").unwrap().sites, None);
        assert_eq!(RoutingAnnouncement::parse("7 =").unwrap().sites, Some(vec![]));
        for bad in ["", "x", "7 docs", "7 = ../etc", "-1", "7 = a--b"] {
            assert!(RoutingAnnouncement::parse(bad).is_none(), "{bad:?}");
        }
        let many: Vec<SiteName> = (0..2000).map(|n| format!("site-{n}").parse().unwrap()).collect();
        assert_eq!(RoutingAnnouncement::payload(9, Some(&many)), "9", "too many to name");
    }

    #[test]
    fn the_flat_form_round_trips_and_groups_by_site() {
        let site: SiteName = "docs".parse().unwrap();
        let t = RoutingTable::from_rows(
            4,
            vec![row("docs", 1), row("blog", 2)],
            vec![],
            vec![(site.clone(), AccessScope::Site, AccessPolicy::default())],
            vec![(site.clone(), vec!["https://api.example.com".into()])],
        );
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["branches"].as_array().unwrap().len(), 2);
        assert_eq!(json["proxy_origins"][0][0], "docs");
        assert_eq!(json["access"][0][1], "site");
        let back: RoutingTable = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.sites[&site].proxy_origins, vec!["https://api.example.com".to_string()]);
        // A table without domains writes no domain keys: older edges read it as before.
        assert!(json_keys(&t).iter().all(|k| k != "domains" && k != "tls"));
    }

    fn json_keys(t: &RoutingTable) -> Vec<String> {
        serde_json::to_value(t).unwrap().as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn domains_and_tls_settings_travel_in_the_flat_form() {
        let (docs, shop): (SiteName, SiteName) = ("docs".parse().unwrap(), "shop".parse().unwrap());
        let domain = |name: &str, primary: bool| DomainRoute {
            name: name.into(),
            branch: None,
            primary,
            verify_token: format!("t-{name}"),
            cert: primary.then(|| "c1".to_string()),
            challenge: (!primary).then(|| crate::domains::AcmeChallenge {
                token: "tk".into(),
                key_authorization: "tk.print".into(),
                alpn_pem: None,
            }),
        };
        let strict = SiteTls { hsts_max_age: 300, ..SiteTls::default() };
        let mut t = RoutingTable::from_rows(5, vec![row("docs", 1)], vec![], vec![], vec![]);
        // A site with only a domain (no deploy yet) is in the table too.
        t.add_site_settings(
            vec![
                (docs.clone(), domain("docs.example.com", true)),
                (docs.clone(), domain("www.docs.example.com", false)),
                (shop.clone(), domain("shop.example", true)),
            ],
            vec![(docs.clone(), strict), (shop.clone(), SiteTls::default())],
        );
        assert_eq!(t.sites[&docs].domains.len(), 2);
        assert_eq!(t.sites[&docs].branches.len(), 1, "kept");
        assert_eq!(t.sites[&docs].tls, Some(strict));
        assert_eq!(t.sites[&shop].tls, None, "defaults are not carried");
        let json = serde_json::to_string(&t).unwrap();
        let back: RoutingTable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        // A part with only domains counts as something to serve; a change to
        // a domain alone is a change of the site.
        let t2 = t.with_site(
            6,
            &shop,
            Some(SiteRouting { domains: vec![domain("shop.example", false)], ..Default::default() }),
        );
        let changed: Vec<String> = t2.changed_since(&t).into_iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(changed, ["shop"]);
        // An older writer's JSON (no domain keys) still reads.
        let old = r#"{"version":3,"branches":[],"permalinks":[],"access":[],"proxy_origins":[]}"#;
        assert_eq!(serde_json::from_str::<RoutingTable>(old).unwrap().sites.len(), 0);
    }
}

//! chanto's edge (data plane): answers `Host` + path from an in-memory routing
//! snapshot and immutable blobs. It never writes metadata and never queries
//! the database; a request resolves its deploy once, from one snapshot, so no
//! response mixes two deploys (invariant 2).

pub mod access;
pub mod access_log;
pub mod certs;
mod fast;
pub mod filter;
pub mod health;
pub mod http;
pub mod metrics;
pub mod proxy;
mod serve;
pub mod server;
mod snapshot;
pub mod sorry;
pub mod tls;
mod zerocopy;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use chanto_core::{ContentHash, Manifest};
use chanto_store::{BlobStore, RoutingSink, RoutingTable, StoreError};

pub use serve::{EdgeService, admin_router, admin_router_with, router};
pub use snapshot::{DomainRedirect, DomainTarget, Snapshot, Target, TargetManifest};

/// Settings of an edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Sites are served under this domain.
    pub base_domain: String,
    /// Byte budget of the in-memory cache of small blobs.
    pub cache_bytes: u64,
    /// Blobs up to this size are cached in memory; larger ones are streamed.
    pub cache_max_blob: u64,
    /// Bodies of at least this many bytes go from the page cache straight to
    /// the socket (`sendfile`) on plain HTTP/1 connections, when the blob
    /// store keeps files on this machine.
    pub zerocopy_min: u64,
    /// The request header carrying the client's country (ISO 3166 code), set
    /// by a load balancer the operator trusts; rules with country conditions
    /// never match without it.
    pub country_header: Option<axum::http::HeaderName>,
    /// Proxies whose `X-Forwarded-For` is believed for the client address
    /// (access policies' network lists and password throttling).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve this site's production branch to hosts that name no site
    /// (`chanto dev`, where the site is just `localhost:PORT`).
    pub fallback_site: Option<String>,
    /// The operator's allowlist of origins that proxy rules (a 200 to an
    /// absolute URL) may reach. A site's proxy rules reach an origin only
    /// when both this list and the site's own list (its settings, carried
    /// in the routing table) name it.
    pub proxy_origins: Vec<String>,
    /// Branches, pull-request previews and permalinks are served under this
    /// domain instead of the base domain (`<prefix>--<site>.<preview>`), so
    /// they share no registrable domain, cookies or "same-site" with
    /// production.
    pub preview_domain: Option<String>,
    /// Most connections the edge listener keeps open at once; above it a new
    /// connection gets the sorry page (`503`, `Retry-After`) at once and is
    /// closed, never queued.
    pub max_connections: usize,
    /// The node's sorry page (HTML), for sites without one of their own;
    /// `None`: [`sorry::DEFAULT_SORRY_PAGE`].
    pub sorry_page: Option<Bytes>,
    /// Request filters that depend on something outside the node (an
    /// external auth check), run in order after the access policy.
    pub filters: Vec<Arc<dyn filter::Filter>>,
}

impl EdgeConfig {
    /// Defaults: 32 MiB of cache for blobs up to 1 MiB.
    pub fn new(base_domain: impl Into<String>) -> Self {
        Self {
            base_domain: base_domain.into(),
            cache_bytes: 32 << 20,
            cache_max_blob: 1 << 20,
            zerocopy_min: ZEROCOPY_MIN,
            country_header: None,
            trusted_proxies: Vec::new(),
            fallback_site: None,
            proxy_origins: Vec::new(),
            preview_domain: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            sorry_page: None,
            filters: Vec::new(),
        }
    }
}

/// Connections the edge listener keeps open at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Bodies from this size on are sent with `sendfile` (see [`EdgeConfig::zerocopy_min`]).
pub const ZEROCOPY_MIN: u64 = 16 << 10;

/// Open blob files kept for `sendfile`.
const OPEN_FILES: usize = 1024;

/// How many manifest entries (files) the manifest cache holds, about 300 bytes each.
const MANIFEST_CACHE_FILES: u64 = 100_000;

#[derive(Clone)]
struct ManifestWeight;

impl quick_cache::Weighter<ContentHash, Arc<Manifest>> for ManifestWeight {
    fn weight(&self, _key: &ContentHash, val: &Arc<Manifest>) -> u64 {
        val.files.len() as u64 + 1
    }
}

#[derive(Clone)]
struct BytesWeight;

impl quick_cache::Weighter<ContentHash, Bytes> for BytesWeight {
    fn weight(&self, _key: &ContentHash, val: &Bytes) -> u64 {
        // Count a small overhead per entry so many tiny blobs still weigh something.
        val.len() as u64 + 64
    }
}

/// An edge node: the current snapshot, and the blob store it reads from.
pub struct Edge {
    base_domain: String,
    preview_domain: Option<String>,
    pub(crate) country_header: Option<axum::http::HeaderName>,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    pub(crate) fallback_site: Option<String>,
    pub(crate) proxy: Option<proxy::Proxy>,
    pub(crate) guard: access::Guard,
    pub(crate) blobs: Arc<dyn BlobStore>,
    cache: quick_cache::sync::Cache<ContentHash, Bytes, BytesWeight>,
    cache_max_blob: u64,
    zerocopy_min: u64,
    /// Blob files open for `sendfile`, as nginx's `open_file_cache` keeps
    /// them. Blobs are immutable, so an open file never goes stale.
    /// Each with its length when opened, checked against the manifest.
    open_files: quick_cache::sync::Cache<ContentHash, (Arc<std::fs::File>, u64)>,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
    pub(crate) draining: AtomicBool,
    /// Turns `true` once when draining starts (`POST /drain`, SIGTERM).
    drain: tokio::sync::watch::Sender<bool>,
    /// The connection cap, per-site concurrency caps and the sorry page.
    pub(crate) overload: sorry::Overload,
    /// Filters that depend on something outside the node.
    pub(crate) filters: Vec<Arc<dyn filter::Filter>>,
    access_log: std::sync::OnceLock<access_log::AccessLog>,
    snapshot: ArcSwap<Snapshot>,
    /// Recently used manifests by hash, weighed by file count. Manifests are
    /// immutable, so a cached one is never stale; keeping recent ones makes a
    /// rollback or a permalink visit cost no parse. Active branches' manifests
    /// are also held by the snapshot itself.
    /// never stale; only the snapshot decides which one a host serves.
    manifests: quick_cache::sync::Cache<ContentHash, Arc<Manifest>, ManifestWeight>,
    /// More lines for `/metrics` from whoever runs this edge (an edge node's
    /// routing puller).
    extra_metrics: std::sync::OnceLock<ExtraMetrics>,
    /// The certificates the HTTPS listener serves, kept in step with each
    /// published table (set by whoever runs an HTTPS listener).
    certs: std::sync::OnceLock<Arc<certs::EdgeCerts>>,
}

/// Renders more Prometheus lines into `/metrics`.
pub type ExtraMetrics = Box<dyn Fn(&mut String) + Send + Sync>;

impl Edge {
    /// An edge with an empty snapshot.
    pub fn new(config: EdgeConfig, blobs: Arc<dyn BlobStore>) -> Arc<Self> {
        let items = (config.cache_bytes / 4096).max(16) as usize;
        Arc::new(Self {
            base_domain: config.base_domain.trim_end_matches('.').to_ascii_lowercase(),
            preview_domain: config.preview_domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
            country_header: config.country_header,
            trusted_proxies: config.trusted_proxies,
            fallback_site: config.fallback_site,
            proxy: if config.proxy_origins.is_empty() {
                None
            } else {
                proxy::Proxy::new(&config.proxy_origins)
                    .inspect_err(|e| tracing::error!(error = %e, "proxy rules will answer 502"))
                    .ok()
            },
            guard: access::Guard::default(),
            blobs,
            cache: quick_cache::sync::Cache::with_weighter(items, config.cache_bytes, BytesWeight),
            cache_max_blob: config.cache_max_blob,
            zerocopy_min: config.zerocopy_min,
            open_files: quick_cache::sync::Cache::new(OPEN_FILES),
            metrics: metrics::Metrics::default(),
            draining: AtomicBool::new(false),
            drain: tokio::sync::watch::channel(false).0,
            overload: sorry::Overload::new(config.max_connections, config.sorry_page),
            filters: config.filters,
            access_log: std::sync::OnceLock::new(),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            manifests: quick_cache::sync::Cache::with_weighter(64, MANIFEST_CACHE_FILES, ManifestWeight),
            extra_metrics: std::sync::OnceLock::new(),
            certs: std::sync::OnceLock::new(),
        })
    }

    /// The snapshot requests are answered from now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Adds `render`'s lines to `/metrics` from now on (once; later calls are ignored).
    pub fn set_extra_metrics(&self, render: ExtraMetrics) {
        let _ = self.extra_metrics.set(render);
    }

    pub(crate) fn render_extra_metrics(&self, out: &mut String) {
        if let Some(render) = self.extra_metrics.get() {
            render(out);
        }
        if let Some(certs) = self.certs.get() {
            certs.render_metrics(out);
        }
    }

    /// Whether this edge serves a certificate for `name` over HTTPS now.
    pub fn serves_https(&self, name: &str) -> bool {
        self.certs.get().is_some_and(|c| c.store().lookup(name).is_some())
    }

    /// Base hosts asked for over HTTPS that had no certificate, since the
    /// last call (at most a few hundred; whoever orders certificates checks
    /// they belong to a site).
    pub fn take_wanted_certs(&self) -> Vec<String> {
        self.certs.get().map(|c| c.store().take_wanted()).unwrap_or_default()
    }

    /// Resolves when [`Edge::take_wanted_certs`] has something (never
    /// without an HTTPS listener).
    pub async fn wanted_certs_changed(&self) {
        match self.certs.get() {
            Some(c) => c.store().wanted_changed().await,
            None => std::future::pending().await,
        }
    }

    /// Whether names `a` and `b` are served the same certificate here now
    /// (both have one, and it is one).
    pub fn same_certificate(&self, a: &str, b: &str) -> bool {
        let Some(certs) = self.certs.get() else { return false };
        match (certs.store().lookup(a), certs.store().lookup(b)) {
            (Some(x), Some(y)) => Arc::ptr_eq(&x, &y),
            _ => false,
        }
    }

    /// Serves custom domains' certificates through `certs` from now on (once;
    /// later calls are ignored): they are loaded for the current table at
    /// once, and for each table published after it before it is swapped in,
    /// so a site redirects to HTTPS only once its certificate is served.
    pub async fn set_certs(&self, certs: Arc<certs::EdgeCerts>) {
        if self.certs.set(certs.clone()).is_ok() {
            // Base hosts asked for without a certificate may get one on demand.
            let own: Vec<String> =
                std::iter::once(self.base_domain.clone()).chain(self.preview_domain.clone()).collect();
            certs.store().want_on_miss(&own);
            let snapshot = self.snapshot.load_full();
            certs.apply(snapshot.table()).await;
        }
    }

    /// Sends one JSON line per request to `log` from now on.
    pub fn set_access_log(&self, log: access_log::AccessLog) {
        let _ = self.access_log.set(log);
    }

    /// Marks the edge as draining: `/readyz` answers 503 so load balancers
    /// stop sending new traffic while in-flight requests finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.drain.send_replace(true);
    }

    /// Resolves once draining has started (at once if it has).
    pub async fn drain_requested(&self) {
        let mut rx = self.drain.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// The connection cap and per-site caps, with their counters.
    pub fn overload(&self) -> &sorry::Overload {
        &self.overload
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether the edge should receive traffic: a routing snapshot is loaded
    /// and it is not draining.
    pub fn is_ready(&self) -> bool {
        self.snapshot.load().version > 0 && !self.draining.load(Ordering::Relaxed)
    }

    /// A small blob's bytes, from memory or the store (then remembered).
    async fn cached_blob(&self, hash: &ContentHash) -> Result<Bytes, StoreError> {
        if let Some(b) = self.cache.get(hash) {
            self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b);
        }
        self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
        let bytes = self.blobs.get(hash).await?;
        self.cache.insert(*hash, bytes.clone());
        Ok(bytes)
    }

    /// The blob as an open file on this machine, with its length, if the
    /// store keeps one (`None` also when opening it failed: the caller reads
    /// it the usual way).
    async fn local_file(&self, hash: &ContentHash) -> Option<(Arc<std::fs::File>, u64)> {
        if let Some(f) = self.open_files.get(hash) {
            return Some(f);
        }
        match self.blobs.local_file(hash).await {
            Ok(Some(f)) => {
                let len = match f.metadata() {
                    Ok(m) => m.len(),
                    Err(e) => {
                        tracing::debug!(blob = %hash, error = %e, "no local file to send");
                        return None;
                    }
                };
                let f = (Arc::new(f), len);
                self.open_files.insert(*hash, f.clone());
                Some(f)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(blob = %hash, error = %e, "no local file to send");
                None
            }
        }
    }

    /// A manifest, from the cache or the blob store.
    pub async fn manifest(&self, hash: &ContentHash) -> Result<Arc<Manifest>, StoreError> {
        if let Some(m) = self.manifests.get(hash) {
            return Ok(m.clone());
        }
        let bytes = self.blobs.get(hash).await?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Db(format!("manifest {hash} is unreadable: {e}")))?;
        // Compile the rules now, not on the first visitor's request.
        if let Some(rules) = &manifest.rules {
            rules.matcher();
        }
        let manifest = Arc::new(manifest);
        self.manifests.insert(*hash, manifest.clone());
        Ok(manifest)
    }
}

#[async_trait]
impl RoutingSink for Edge {
    /// Loads the manifests of every active branch of the sites that changed
    /// first, then swaps the snapshot in one atomic store: requests see the
    /// old table or the new one, never a mix.
    async fn publish(&self, table: RoutingTable) -> Result<(), StoreError> {
        let current = self.snapshot.load();
        if table.version <= current.version && current.version != 0 {
            return Ok(());
        }
        // Only the sites whose part changed are loaded and built again.
        let mut manifests = HashMap::new();
        for part in current.changes(&table) {
            for row in &part.branches {
                if let std::collections::hash_map::Entry::Vacant(slot) = manifests.entry(row.manifest) {
                    slot.insert(self.manifest(&row.manifest).await?);
                }
            }
        }
        if let Some(certs) = self.certs.get() {
            certs.apply(&table).await;
        }
        let snapshot = Snapshot::update(&current, &table, &manifests);
        tracing::debug!(version = table.version, sites = snapshot.site_count(), "routing snapshot swapped");
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    fn prime(&self, hash: &ContentHash, manifest: &Arc<Manifest>) {
        if let Some(rules) = &manifest.rules {
            rules.matcher();
        }
        self.manifests.insert(*hash, manifest.clone());
    }
}

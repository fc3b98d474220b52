//! `chanto serve --role edge`: an edge node. It serves sites from a routing
//! snapshot it pulls from the control plane (`--control`, authenticated with
//! a node token, never an API token), reads blobs from the shared object
//! store through its bounded disk cache, and never reads or writes metadata.
//!
//! Static stability: the node keeps its last snapshot and the manifests it
//! serves on its own disk (`DATA/edge/`, written atomically), so it starts
//! and serves every active site with the control plane, the database and the
//! object store all down. With nothing on disk it answers 503 (and `/readyz`
//! 503) until its first snapshot arrives, never a 404 for a site it does not
//! know yet.
//!
//! Distribution: a long-poll (`GET /api/v1/nodes/routing?after=V&wait=25&delta=1`)
//! is the fast path, a pull every `--routing-poll` the safety net. The
//! control plane answers with a delta (only the sites that changed since V)
//! when it can, else the whole snapshot. A new version is checked (format,
//! version only forward, a delta only on its base), the manifest of every
//! active branch of the sites that changed is loaded and hash-checked, the
//! blobs of its hot files are fetched into the disk cache; only then is it
//! written to disk (a delta appended to a journal, the whole snapshot
//! rewritten every [`JOURNAL_MAX`] deltas) and swapped in. A snapshot that
//! fails any of this is refused: the node keeps serving the one it has, reports the refusal in its heartbeat (so the
//! activation that published it names this node) and tries again later.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chanto_core::{ContentHash, Manifest};
use chanto_edge::Edge;
use chanto_store::node_wire::{
    Heartbeat, NodeRole, ROUTING_KIND_HEADER, Refusal, RoutingDelta, RoutingSnapshot, SNAPSHOT_FORMAT,
};
use chanto_store::{BlobStore, CachedBlobStore, RoutingSink, RoutingTable, StoreError};
use futures_util::StreamExt;

use crate::cli::ServeArgs;
use crate::serve::{bind, check_edge_args, edge_config, host_name, node_name, write_file_atomic};

/// How often the node reports to the control plane (and at once after every
/// snapshot it loads or refuses).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The pause before resending a heartbeat that failed.
const HEARTBEAT_RETRY: Duration = Duration::from_secs(1);
/// How long one long-poll waits for a change, in seconds.
const LONG_POLL_WAIT: u64 = 25;
/// The largest snapshot the node accepts.
const MAX_SNAPSHOT_BYTES: usize = 256 << 20;
/// Blobs fetched into the disk cache before a snapshot is swapped in, at most.
const HOT_BLOBS: usize = 4096;
/// Files up to this size count as hot (besides every `index.html` and `404.html`).
const HOT_MAX_SIZE: u64 = 256 << 10;
/// Blob fetches in flight while a snapshot is checked.
const FETCH_CONCURRENCY: usize = 16;
/// The pause before pulling again after an answer that was not newer (or a
/// delta from another version).
const STALE_PAUSE: Duration = Duration::from_millis(50);
/// Deltas journaled before the whole snapshot is written again.
const JOURNAL_MAX: usize = 256;

/// A running edge node.
pub struct EdgeNode {
    /// The edge's bound address.
    pub edge_addr: SocketAddr,
    /// The edge's HTTPS address (`--https`).
    pub https_addr: Option<SocketAddr>,
    /// The admin listener's bound address.
    pub admin_addr: SocketAddr,
    edge: Arc<Edge>,
    puller: Arc<Puller>,
    drain_grace: Duration,
    data: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Stops following the control plane (routing stream, poll, heartbeat):
    /// only once the listeners have closed, so a draining edge never answers
    /// from a routing table it no longer updates.
    following: tokio::sync::watch::Sender<bool>,
    followers: Vec<tokio::task::JoinHandle<()>>,
    _lock: std::fs::File,
}

impl EdgeNode {
    /// Waits for Ctrl-C, SIGTERM or `POST /drain` on the admin listener,
    /// then drains (`--drain-grace`) and stops; the heartbeat says so.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        crate::serve::drain(&self.edge, self.drain_grace).await;
        self.puller.report.notify_one();
        // The listeners first (they may still answer requests on kept-alive
        // connections after the grace): routing keeps following until they
        // are closed, since the control plane no longer counts a draining
        // edge when it says a deploy is live everywhere.
        crate::serve::finish(self.stop, self.tasks, &self.data).await;
        let _ = self.following.send(true);
        let followers = futures_util::future::join_all(self.followers);
        if tokio::time::timeout(Duration::from_secs(5), followers).await.is_err() {
            tracing::warn!("the routing and heartbeat tasks did not stop within 5 s; stopping anyway");
        }
        Ok(())
    }
}

/// The control plane's URL: http(s), no query, no trailing slash.
fn control_url(args: &ServeArgs) -> anyhow::Result<String> {
    let Some(url) = &args.control else {
        bail!(
            "--role edge needs --control URL: the control plane's API URL this edge pulls its routing from (e.g. http://control.internal:8787)"
        );
    };
    let parsed = reqwest::Url::parse(url).with_context(|| {
        format!("--control {url:?} is not a URL; give the control plane's API URL, e.g. http://10.0.0.5:8787")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("--control {url:?}: expected an http:// or https:// URL with a host, e.g. https://control.internal:8787");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        bail!(
            "--control {url:?}: give only scheme, host, port and path (no user, query or fragment); the node token goes in --node-token"
        );
    }
    if parsed.scheme() == "http" && !is_loopback_url(url) {
        tracing::warn!(control = %url, "--control is plain http to another host: the node token and the routing table cross the network unencrypted; use https (or a private network you trust)");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Whether `url`'s host is this machine (`localhost` or a loopback address).
fn is_loopback_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else { return false };
    let host = parsed.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads the node token from `--node-token FILE` (its first line).
fn node_token(args: &ServeArgs) -> anyhow::Result<String> {
    let Some(path) = &args.node_token else {
        bail!(
            "--role edge needs --node-token FILE: a file holding a node token from `chanto nodes token create NAME --output FILE` on the control plane"
        );
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the node token file {} (--node-token)", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    let prefix = chanto_store::node_wire::NODE_TOKEN_PREFIX;
    if !token.starts_with(prefix)
        || token.len() > 256
        || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        bail!(
            "{} (--node-token) does not hold a node token (one line starting with {prefix}); create one with `chanto nodes token create NAME --output FILE` — an API or admin token is not accepted",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(file = %path.display(), "the node token file is readable by other users; chmod 600 it");
        }
    }
    Ok(token)
}

/// The edge's blob store: the shared object store behind the bounded disk
/// cache. No request is sent at start, so a node starts while the store is down.
async fn open_blobs(args: &ServeArgs, data: &Path) -> anyhow::Result<Arc<EdgeBlobs>> {
    let url = args.blobs.as_str();
    if !url.starts_with("s3://") {
        bail!(
            "--role edge reads blobs from the object store the control plane writes: pass the same --blobs s3://BUCKET/PREFIX (and --s3-endpoint) as the control plane, not {url:?}"
        );
    }
    let mut options = chanto_store::S3Options::new(url, String::new());
    options.endpoint = args.s3_endpoint.clone();
    // A visitor waits on these: an object store that does not answer gives a
    // prompt 503, not a hang.
    options.timeout = Duration::from_secs(5);
    options.connect_timeout = Duration::from_secs(1);
    options.max_retries = 1;
    options.retry_timeout = Duration::from_secs(3);
    let s3 = chanto_store::S3BlobStore::connect_unchecked(options)
        .await
        .with_context(|| format!("opening the blob store {url}"))?;
    let cache_dir = args.blob_cache_dir.clone().unwrap_or_else(|| data.join("blob-cache"));
    let cached = CachedBlobStore::open(s3, &cache_dir, args.blob_cache_size)
        .with_context(|| format!("opening the blob cache {}", cache_dir.display()))?;
    Ok(Arc::new(cached))
}

/// The edge node's blob store: the object store behind the disk cache.
type EdgeBlobs = CachedBlobStore<chanto_store::S3BlobStore>;

/// Refuses flags that belong to the control plane, so an operator does not
/// believe an edge does something it never will.
fn refuse_control_flags(args: &ServeArgs) -> anyhow::Result<()> {
    if args.meta != "sqlite" {
        bail!(
            "--role edge never reads metadata: drop --meta (and CHANTO_META); the edge gets its routing from --control"
        );
    }
    if args.public_api_url.is_some() {
        bail!("--role edge has no API: drop --public-api-url");
    }
    if args.acme_directory.is_some()
        || args.acme_email.is_some()
        || args.acme_root.is_some()
        || args.acme_eab_kid.is_some()
        || args.acme_dns_hook.is_some()
        || args.acme_challenge != crate::cli::AcmeChallenge::Http01
    {
        bail!(
            "--role edge orders no certificates (the control plane does, and the node fetches them and answers its challenges): drop --acme-directory, --acme-email, --acme-root, --acme-eab-* and --acme-challenge"
        );
    }
    Ok(())
}

/// Starts an edge node: checks the flags, serves the snapshot on disk (if
/// any) at once, then pulls newer ones from the control plane.
pub async fn start(args: &ServeArgs) -> anyhow::Result<EdgeNode> {
    refuse_control_flags(args)?;
    let control = control_url(args)?;
    if args.https.is_some() && control.starts_with("http://") && !is_loopback_url(&control) {
        bail!(
            "--https on an edge node fetches certificate keys from --control {control}: give an https:// control URL (keys never cross the network in the clear), or terminate TLS in front of the node"
        );
    }
    let token = node_token(args)?;
    let (base_domain, preview_domain) = check_edge_args(args)?;
    let data = args.data.clone();
    std::fs::create_dir_all(&data).with_context(|| format!("creating the data directory {}", data.display()))?;
    let Some(lock) = crate::serve::lock_data_dir(&data)? else {
        bail!("another chanto is already serving {}; stop it or pass another --data", data.display());
    };
    let _ = std::fs::remove_file(data.join("addresses.json"));
    let node_id = node_name(&data)?;
    let blobs = open_blobs(args, &data).await?;
    let edge = Edge::new(edge_config(args, base_domain, preview_domain)?, blobs.clone() as Arc<dyn BlobStore>);
    if let Some(path) = &args.access_log {
        let (log, _writer) = chanto_edge::access_log::AccessLog::spawn(path.clone())
            .with_context(|| format!("opening the access log {}", path.display()))?;
        edge.set_access_log(log);
    }
    let disk = Disk::new(data.join("edge"))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .user_agent(concat!("chanto-edge/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")?;

    let edge_listener = bind("--edge", "the edge (sites)", args.edge).await?;
    let https_listener = match args.https {
        Some(addr) => Some(bind("--https", "the edge over HTTPS", addr).await?),
        None => None,
    };
    let admin_listener = bind("--admin", "the admin listener", args.admin).await?;
    let edge_addr = edge_listener.local_addr()?;
    let https_addr = https_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    // Certificates come from the control plane (and are kept on disk), set
    // before the snapshot on disk is loaded so it serves HTTPS at once.
    let tls = match &https_listener {
        Some(_) => {
            let source = crate::https::NodeCerts {
                http: http.clone(),
                control: control.clone(),
                token: token.clone(),
                dir: data.join("edge").join("certs"),
            };
            let certs = Arc::new(chanto_edge::certs::EdgeCerts::new(
                Arc::new(chanto_edge::tls::CertStore::new()),
                Arc::new(source),
            ));
            let config = chanto_edge::tls::server_config(certs.store().clone());
            edge.set_certs(certs).await;
            Some(config)
        }
        None => None,
    };
    let admin_addr = admin_listener.local_addr()?;

    let puller = Arc::new(Puller {
        edge: edge.clone(),
        blobs,
        disk,
        http,
        control,
        token,
        node: NodeInfo {
            node_id,
            name: host_name(),
            zone: args.zone.clone(),
            role: args.role.wire(),
            edge_addr: edge_addr.to_string(),
        },
        served: tokio::sync::Mutex::new(Served::default()),
        state: std::sync::Mutex::new(PullState::default()),
        report: tokio::sync::Notify::new(),
        refused_total: AtomicU64::new(0),
        control_errors: AtomicU64::new(0),
        traffic: Default::default(),
    });
    match puller.boot_from_disk().await {
        Ok(Some(version)) => tracing::info!(version, "serving the routing snapshot kept on disk"),
        Ok(None) => tracing::info!("no routing snapshot on disk yet: not ready until the control plane sends one"),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the routing snapshot on disk could not be loaded; not ready until the control plane sends one")
        }
    }
    let metrics = Arc::downgrade(&puller);
    edge.set_extra_metrics(Box::new(move |out| {
        if let Some(p) = metrics.upgrade() {
            p.render_metrics(out);
        }
    }));

    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = vec![tokio::spawn(chanto_edge::server::serve(
        edge_listener,
        chanto_edge::router(edge.clone()),
        chanto_edge::server::ServerLimits::default(),
        stopped(stop_rx.clone()),
    ))];
    if let (Some(listener), Some(config)) = (https_listener, tls) {
        tasks.push(tokio::spawn(chanto_edge::server::serve_tls(
            listener,
            chanto_edge::router(edge.clone()),
            config,
            chanto_edge::server::ServerLimits::default(),
            stopped(stop_rx.clone()),
        )));
    }
    // The admin listener stays up until the process exits, so /readyz can say
    // "draining" while the edge finishes its requests.
    tokio::spawn(chanto_edge::server::serve_router(
        admin_listener,
        chanto_edge::admin_router_with(edge.clone(), None),
        chanto_edge::server::ServerLimits::default(),
        std::future::pending(),
    ));
    let (following, following_rx) = tokio::sync::watch::channel(false);
    let mut followers = Vec::new();
    if !args.no_routing_stream {
        followers.push(tokio::spawn(puller.clone().stream_loop(following_rx.clone())));
    }
    followers.push(tokio::spawn(
        puller.clone().poll_loop(args.routing_poll.max(Duration::from_millis(100)), following_rx.clone()),
    ));
    followers.push(tokio::spawn(puller.clone().heartbeat_loop(following_rx)));
    drop(stop_rx);

    let addresses = serde_json::json!({
        "role": "edge",
        "edge": edge_addr.to_string(),
        "https": https_addr.map(|a| a.to_string()),
        "api": null,
        "admin": admin_addr.to_string(),
        "pid": std::process::id(),
    });
    write_file_atomic(&data.join("addresses.json"), serde_json::to_string_pretty(&addresses)?.as_bytes(), 0o644)?;
    tracing::info!(edge = %edge_addr, admin = %admin_addr, control = %puller.control, zone = %args.zone, data = %data.display(), "chanto edge node is serving");
    Ok(EdgeNode {
        edge_addr,
        https_addr,
        admin_addr,
        edge,
        puller,
        drain_grace: args.drain_grace,
        data,
        stop,
        tasks,
        following,
        followers,
        _lock: lock,
    })
}

/// Who this node is, as its heartbeat says.
struct NodeInfo {
    node_id: String,
    name: String,
    zone: String,
    role: NodeRole,
    edge_addr: String,
}

/// What the puller knows beyond the snapshot the edge serves.
#[derive(Default)]
struct PullState {
    /// When the snapshot served was published.
    published_at: Option<i64>,
    /// The newest snapshot refused, and why.
    refused: Option<Refusal>,
    /// Refusals in a row (backoff).
    refusal_streak: u32,
    /// When the last pull got an answer from the control plane.
    last_contact: Option<Instant>,
    /// The epoch of the snapshot served (deltas apply only within it).
    epoch: String,
}

struct Puller {
    edge: Arc<Edge>,
    blobs: Arc<EdgeBlobs>,
    disk: Disk,
    http: reqwest::Client,
    control: String,
    token: String,
    node: NodeInfo,
    /// One snapshot is checked and swapped at a time; the lock holds what
    /// is served (a new version reads, hashes and parses only the manifests
    /// of the sites it changes).
    served: tokio::sync::Mutex<Served>,
    state: std::sync::Mutex<PullState>,
    /// Wakes the heartbeat loop (after a swap or a refusal).
    report: tokio::sync::Notify,
    refused_total: AtomicU64,
    control_errors: AtomicU64,
    /// The last minute of the edge's response counters (for heartbeats).
    traffic: std::sync::Mutex<chanto_store::node_wire::TrafficWindow>,
}

/// What a pull brought.
enum Update {
    /// A whole snapshot.
    Full(RoutingSnapshot),
    /// The sites that changed since the version served.
    Delta(RoutingDelta),
}

impl Update {
    fn version(&self) -> u64 {
        match self {
            Self::Full(s) => s.version,
            Self::Delta(d) => d.version,
        }
    }
}

/// What became of an update.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Swapped in.
    Loaded,
    /// Not newer than what is served, or a delta from another version: pull again.
    Stale,
    /// Refused (the node keeps what it serves).
    Refused,
}

/// What the node serves: the table, the manifests of its active branches
/// (with how many branches use each) and their blobs (with how many of
/// those manifests use each), kept up to date change by change.
#[derive(Default)]
struct Served {
    table: RoutingTable,
    manifests: HashMap<ContentHash, (Arc<Manifest>, u32)>,
    blobs: HashMap<ContentHash, u32>,
    /// Deltas in the journal since the whole snapshot was last written.
    journaled: usize,
}

impl Served {
    /// Makes `table` the one served, counting manifests and blobs of the
    /// sites that changed (a manifest new to the node comes from `prepared`).
    /// Returns the blobs that became active and those no longer active.
    fn advance(&mut self, table: RoutingTable, prepared: &Prepared) -> (Vec<ContentHash>, Vec<ContentHash>) {
        let mut gained = Vec::new();
        let mut lost = Vec::new();
        for (site, part) in table.changed_since(&self.table) {
            for row in part.map(|p| p.branches.as_slice()).unwrap_or_default() {
                match self.manifests.get_mut(&row.manifest) {
                    Some((_, n)) => *n += 1,
                    None => {
                        if let Some((_, m)) = prepared.get(&row.manifest) {
                            self.manifests.insert(row.manifest, (m.clone(), 1));
                            gained.push(m.clone());
                        }
                    }
                }
            }
            for row in self.table.sites.get(site).map(|p| p.branches.as_slice()).unwrap_or_default() {
                if let Some((m, n)) = self.manifests.get_mut(&row.manifest) {
                    *n -= 1;
                    if *n == 0 {
                        lost.push(m.clone());
                        self.manifests.remove(&row.manifest);
                    }
                }
            }
        }
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for m in &gained {
            for hash in blobs_of(m) {
                let n = self.blobs.entry(hash).or_insert(0);
                *n += 1;
                if *n == 1 {
                    added.push(hash);
                }
            }
        }
        for m in &lost {
            for hash in blobs_of(m) {
                if let Some(n) = self.blobs.get_mut(&hash) {
                    *n -= 1;
                    if *n == 0 {
                        self.blobs.remove(&hash);
                        removed.push(hash);
                    }
                }
            }
        }
        self.table = table;
        (added, removed)
    }
}

/// Why a pull got no snapshot.
enum PullError {
    /// The control plane could not be asked (down, a timeout, a 5xx).
    Unreachable(String),
    /// The control plane refused this node (bad or revoked token).
    Denied(String),
}

impl Puller {
    fn state(&self) -> std::sync::MutexGuard<'_, PullState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads DATA/edge/routing.json (with the journal's deltas) and its
    /// manifests, and serves them.
    async fn boot_from_disk(&self) -> anyhow::Result<Option<u64>> {
        let mut served = self.served.lock().await;
        let Some((snap, manifests)) = self.disk.load()? else { return Ok(None) };
        for (hash, manifest) in &manifests {
            self.edge.prime(hash, manifest);
        }
        let version = snap.version;
        self.state().epoch = epoch_or_none(snap.epoch.clone());
        let prepared: Prepared = manifests.into_iter().map(|(h, m)| (h, (None, m))).collect();
        let mut fresh = Served { journaled: self.disk.journal_len(), ..Served::default() };
        let (active, _) = fresh.advance(snap.table.clone(), &prepared);
        self.blobs.set_active(active.into_iter().collect());
        self.edge.publish(snap.table).await.context("loading the routing snapshot kept on disk")?;
        self.state().published_at = Some(snap.published_at);
        *served = fresh;
        Ok(Some(version))
    }

    /// Asks the control plane for a snapshot newer than `after`, waiting up
    /// to `wait` seconds for one.
    async fn fetch(&self, after: u64, wait: u64) -> Result<Option<Update>, PullError> {
        let epoch = self.state().epoch.clone();
        let url = format!("{}/api/v1/nodes/routing?after={after}&wait={wait}&delta=1&epoch={epoch}", self.control);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(wait + 10))
            .send()
            .await
            .map_err(|e| PullError::Unreachable(format!("asking {} for routing: {e}", self.control)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            self.state().last_contact = Some(Instant::now());
            return Ok(None);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let body = resp.text().await.unwrap_or_default();
            return Err(PullError::Denied(format!(
                "{} refused this node's token ({status}: {}); create a node token with `chanto nodes token create NAME --output FILE` and pass it with --node-token",
                self.control,
                body.chars().take(300).collect::<String>()
            )));
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(PullError::Unreachable(format!(
                "{} answered {status} for routing: {}",
                self.control,
                body.chars().take(300).collect::<String>()
            )));
        }
        if resp.content_length().is_some_and(|n| n > MAX_SNAPSHOT_BYTES as u64) {
            return Err(PullError::Unreachable(format!(
                "the routing snapshot from {} is larger than {MAX_SNAPSHOT_BYTES} bytes",
                self.control
            )));
        }
        let delta = resp.headers().get(ROUTING_KIND_HEADER).is_some_and(|v| v.as_bytes() == b"delta");
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| PullError::Unreachable(format!("reading routing from {}: {e}", self.control)))?;
            if body.len() + chunk.len() > MAX_SNAPSHOT_BYTES {
                return Err(PullError::Unreachable(format!(
                    "the routing snapshot from {} is larger than {MAX_SNAPSHOT_BYTES} bytes",
                    self.control
                )));
            }
            body.extend_from_slice(&chunk);
        }
        self.state().last_contact = Some(Instant::now());
        let parsed = if delta {
            serde_json::from_slice::<RoutingDelta>(&body).map(Update::Delta)
        } else {
            serde_json::from_slice::<RoutingSnapshot>(&body).map(Update::Full)
        };
        match parsed {
            Ok(update) => Ok(Some(update)),
            Err(e) => {
                // Refused like any snapshot that cannot be loaded; its
                // version, if it has one, is what the refusal names.
                let version = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("version").and_then(|v| v.as_u64()))
                    .unwrap_or(0);
                self.refuse(
                    version,
                    format!(
                        "the routing {} is not valid JSON of format {SNAPSHOT_FORMAT}: {e}",
                        if delta { "delta" } else { "snapshot" }
                    ),
                );
                Ok(None)
            }
        }
    }

    /// Records a refusal: the node keeps what it serves.
    fn refuse(&self, version: u64, error: String) {
        tracing::error!(version, error = %error, "routing snapshot refused; still serving the previous one");
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state();
        state.refusal_streak = state.refusal_streak.saturating_add(1);
        if version > self.edge.snapshot().version {
            state.refused = Some(Refusal { version, error });
        }
        drop(state);
        self.report.notify_one();
    }

    /// Checks an update, makes the manifests and hot blobs of the sites it
    /// changes available, writes it to disk and swaps it in; or refuses it.
    async fn apply(&self, update: Update) -> Outcome {
        let mut served = self.served.lock().await;
        let version = update.version();
        if version <= self.edge.snapshot().version {
            return Outcome::Stale; // Never backwards (also a version the other loop loaded meanwhile).
        }
        let (table, published_at, epoch) = match &update {
            Update::Full(snap) => {
                if let Err(e) = check_snapshot(snap) {
                    self.refuse(version, e);
                    return Outcome::Refused;
                }
                let mut table = snap.table.clone();
                // Parts equal to those served stay shared: only real changes are rebuilt.
                table.share_unchanged(&served.table);
                (table, snap.published_at, snap.epoch.clone())
            }
            Update::Delta(delta) => {
                if delta.base != served.table.version || delta.epoch != self.state().epoch {
                    tracing::debug!(
                        base = delta.base,
                        serving = served.table.version,
                        "a delta from another version; pulling again"
                    );
                    return Outcome::Stale;
                }
                match delta.apply(&served.table) {
                    Ok(table) => (table, delta.published_at, delta.epoch.clone()),
                    Err(e) => {
                        self.refuse(version, e);
                        return Outcome::Refused;
                    }
                }
            }
        };
        let prepared = match self.prepare(&table, &served).await {
            Ok(p) => p,
            Err(error) => {
                self.refuse(version, error);
                return Outcome::Refused;
            }
        };
        for (hash, (_, manifest)) in &prepared {
            self.edge.prime(hash, manifest);
        }
        let written = match &update {
            Update::Full(_) => None,
            Update::Delta(delta) => Some(self.disk.append(delta, &prepared)),
        };
        if let Err(e) = self.edge.publish(table.clone()).await {
            self.refuse(version, format!("loading the snapshot: {e}"));
            return Outcome::Refused;
        }
        let (added, removed) = served.advance(table, &prepared);
        self.blobs.change_active(&added, &removed);
        // The whole snapshot after a whole one arrived or the journal grew
        // long; written after the swap, so the activation does not wait for it.
        let rewrite = match written {
            None => true,
            Some(Ok(())) => {
                served.journaled += 1;
                served.journaled >= JOURNAL_MAX
            }
            Some(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "could not journal the routing delta; writing the whole snapshot");
                true
            }
        };
        if rewrite {
            let snap = RoutingSnapshot {
                format: SNAPSHOT_FORMAT,
                version,
                published_at,
                epoch: epoch.clone(),
                table: served.table.clone(),
            };
            match self.disk.store(&snap, &prepared, &served.manifests) {
                Ok(()) => served.journaled = 0,
                // Serving goes on; only a restart would lose this version.
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "could not keep the routing snapshot on disk; a restart would serve an older one")
                }
            }
        }
        let mut state = self.state();
        state.published_at = Some(published_at);
        state.epoch = epoch_or_none(epoch);
        state.refusal_streak = 0;
        if state.refused.as_ref().is_some_and(|r| r.version <= version) {
            state.refused = None;
        }
        drop(state);
        tracing::info!(version, "routing snapshot swapped in");
        self.report.notify_one();
        Outcome::Loaded
    }

    /// Everything a table needs before it may be served: the manifests of
    /// the active branches of the sites that changed from what is served
    /// (with their bytes, to keep on disk, for those the node did not have)
    /// and their hot blobs in the cache.
    async fn prepare(&self, table: &RoutingTable, served: &Served) -> Result<Prepared, String> {
        let mut manifests = HashMap::new();
        let mut hot: Vec<(ContentHash, String)> = Vec::new();
        let mut seen_blobs = HashSet::new();
        let changed = table.changed_since(&served.table);
        for row in changed.iter().filter_map(|(_, p)| p.as_ref()).flat_map(|p| p.branches.iter()) {
            if manifests.contains_key(&row.manifest) {
                continue;
            }
            if let Some((m, _)) = served.manifests.get(&row.manifest).filter(|_| self.disk.has_manifest(&row.manifest))
            {
                manifests.insert(row.manifest, (None, m.clone()));
                continue;
            }
            let what = format!("the manifest {} of site {} branch {}", row.manifest, row.site, row.branch);
            let bytes = match self.disk.read_manifest(&row.manifest) {
                Some(bytes) => bytes,
                None => self.blobs.get(&row.manifest).await.map_err(|e| describe(&what, &e))?,
            };
            if ContentHash::of(&bytes) != row.manifest {
                return Err(format!("{what} does not hash to its name"));
            }
            let manifest: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| format!("{what} is unreadable: {e}"))?;
            let known = self.disk.has_manifest(&row.manifest);
            if !known {
                // Hot files of a deploy this node has not served before.
                let mut files: Vec<_> = manifest.files.iter().collect();
                files.sort_by_key(|(path, e)| (!is_entry_page(path), e.size));
                for (path, entry) in files {
                    if hot.len() >= HOT_BLOBS {
                        break;
                    }
                    if (is_entry_page(path) || entry.size <= HOT_MAX_SIZE) && seen_blobs.insert(entry.hash) {
                        hot.push((entry.hash, format!("{path} of site {} branch {}", row.site, row.branch)));
                    }
                }
            }
            manifests.insert(row.manifest, (Some(bytes), Arc::new(manifest)));
        }
        let blobs = self.blobs.clone();
        let mut fetches =
            futures_util::stream::iter(
                hot.into_iter().map(|(hash, what)| {
                    let blobs = blobs.clone();
                    async move {
                        blobs.get(&hash).await.map(|_| ()).map_err(|e| describe(&format!("blob {hash} ({what})"), &e))
                    }
                }),
            )
            .buffer_unordered(FETCH_CONCURRENCY);
        while let Some(result) = fetches.next().await {
            result?;
        }
        Ok(manifests)
    }

    /// Pulls once; returns the pause before the next long-poll.
    async fn pull_once(&self, wait: u64) -> Duration {
        let after = self.edge.snapshot().version;
        match self.fetch(after, wait).await {
            Ok(Some(update)) => match self.apply(update).await {
                Outcome::Loaded => Duration::ZERO,
                // Soon, not at once: a control that kept answering with a
                // delta that does not apply must not get a tight loop.
                Outcome::Stale => STALE_PAUSE,
                Outcome::Refused => {
                    let streak = self.state().refusal_streak.min(5);
                    Duration::from_secs(1 << streak).min(Duration::from_secs(30))
                }
            },
            Ok(None) => Duration::ZERO,
            Err(PullError::Unreachable(e)) | Err(PullError::Denied(e)) => {
                let n = self.control_errors.fetch_add(1, Ordering::Relaxed);
                // Every error is counted; the log gets the first and then one in 20.
                if n.is_multiple_of(20) {
                    tracing::warn!(error = %e, "could not pull routing; serving the snapshot this node has");
                }
                Duration::from_secs(1)
            }
        }
    }

    /// The fast path: a long-poll held open, renewed as soon as it answers.
    async fn stream_loop(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut pause = Duration::ZERO;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(pause) => {}
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                p = self.pull_once(LONG_POLL_WAIT) => pause = p,
            }
        }
    }

    /// The safety net: a pull every `every`, whatever the long-poll does.
    async fn poll_loop(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        // The first pull goes at once: a node starting from an empty disk is
        // ready as soon as the control plane answers.
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = self.pull_once(0) => {}
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        let snapshot = self.edge.snapshot();
        let state = self.state();
        let now = chanto_store::now_millis();
        Heartbeat {
            node_id: self.node.node_id.clone(),
            name: self.node.name.clone(),
            zone: self.node.zone.clone(),
            role: self.node.role,
            routing_version: snapshot.version,
            snapshot_age_ms: state.published_at.map(|p| now.saturating_sub(p).max(0) as u64),
            ready: self.edge.is_ready(),
            draining: self.edge.is_draining(),
            refused: state.refused.clone().filter(|r| r.version > snapshot.version),
            software: env!("CARGO_PKG_VERSION").to_owned(),
            edge_addr: Some(self.node.edge_addr.clone()),
            wanted_certs: self.edge.take_wanted_certs(),
            traffic: self.traffic.lock().expect("traffic").sample(now, self.edge.metrics.counts()),
        }
    }

    /// Reports to the control plane every few seconds, and at once after a
    /// snapshot is swapped in or refused; a last time when draining starts.
    async fn heartbeat_loop(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let url = format!("{}/api/v1/nodes/heartbeat", self.control);
        let mut failures = 0u64;
        loop {
            let beat = self.heartbeat();
            let sent =
                self.http.post(&url).bearer_auth(&self.token).timeout(Duration::from_secs(5)).json(&beat).send().await;
            match sent {
                Ok(r) if r.status().is_success() => failures = 0,
                Ok(r) => {
                    failures += 1;
                    if failures % 20 == 1 {
                        tracing::warn!(status = %r.status(), "the control plane refused this node's heartbeat");
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures % 20 == 1 {
                        tracing::warn!(error = %e, "could not report to the control plane");
                    }
                }
            }
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = self.report.notified() => {}
                // A heartbeat that did not land is sent again sooner: the
                // control plane counts this node only while it hears from it.
                _ = tokio::time::sleep(if failures == 0 { HEARTBEAT_EVERY } else { HEARTBEAT_RETRY }) => {}
            }
        }
    }

    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let state = self.state();
        let now = chanto_store::now_millis();
        out.push_str("# HELP chanto_edge_routing_age_seconds Time since the control plane published the routing snapshot this node serves.\n# TYPE chanto_edge_routing_age_seconds gauge\n");
        match state.published_at {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "chanto_edge_routing_age_seconds {:.3}",
                    now.saturating_sub(p).max(0) as f64 / 1000.0
                );
            }
            None => out.push_str("chanto_edge_routing_age_seconds NaN\n"),
        }
        out.push_str("# HELP chanto_edge_routing_refused_total Routing snapshots this node refused (it kept serving the one it had).\n# TYPE chanto_edge_routing_refused_total counter\n");
        let _ = writeln!(out, "chanto_edge_routing_refused_total {}", self.refused_total.load(Ordering::Relaxed));
        out.push_str("# HELP chanto_edge_control_errors_total Pulls from the control plane that failed.\n# TYPE chanto_edge_control_errors_total counter\n");
        let _ = writeln!(out, "chanto_edge_control_errors_total {}", self.control_errors.load(Ordering::Relaxed));
        out.push_str("# HELP chanto_edge_control_contact_age_seconds Time since the control plane last answered a pull.\n# TYPE chanto_edge_control_contact_age_seconds gauge\n");
        match state.last_contact {
            Some(t) => {
                let _ = writeln!(out, "chanto_edge_control_contact_age_seconds {:.3}", t.elapsed().as_secs_f64());
            }
            None => out.push_str("chanto_edge_control_contact_age_seconds NaN\n"),
        }
    }
}

/// Every blob a deploy serves (files and their precompressed variants),
/// each once: those of active branches' deploys the disk cache evicts last.
fn blobs_of(m: &Manifest) -> HashSet<ContentHash> {
    let mut set = HashSet::new();
    for entry in m.files.values() {
        set.insert(entry.hash);
        set.extend(entry.variants.iter().map(|v| v.hash));
    }
    set
}

/// An epoch as the control plane makes them (it goes into the pull's URL),
/// or none (the node then gets whole snapshots only).
fn epoch_or_none(epoch: String) -> String {
    if epoch.len() <= 64 && epoch.bytes().all(|b| b.is_ascii_alphanumeric()) { epoch } else { String::new() }
}

/// A whole snapshot's own consistency (its rows are checked as it is grouped).
fn check_snapshot(snap: &RoutingSnapshot) -> Result<(), String> {
    if snap.format != SNAPSHOT_FORMAT {
        return Err(format!(
            "snapshot format {} is unknown to this edge (it reads format {SNAPSHOT_FORMAT}); run the same chanto version on the edge as on the control plane",
            snap.format
        ));
    }
    if snap.version != snap.table.version {
        return Err(format!("the snapshot says version {} but its table says {}", snap.version, snap.table.version));
    }
    Ok(())
}

/// Parsed manifests by hash.
type Manifests = HashMap<ContentHash, Arc<Manifest>>;

/// A snapshot's manifests by hash, with the bytes of those the node did not
/// serve before (to keep on disk).
type Prepared = HashMap<ContentHash, (Option<bytes::Bytes>, Arc<Manifest>)>;

/// A page every deploy is likely asked for first.
fn is_entry_page(path: &str) -> bool {
    path == "index.html" || path == "404.html" || path.ends_with("/index.html")
}

/// A store error in words for a refusal.
fn describe(what: &str, e: &StoreError) -> String {
    match e {
        StoreError::NotFound(_) => format!("{what} is missing from the object store"),
        other => format!("{what} could not be read: {other}"),
    }
}

/// The node's own disk: `DIR/routing.json` (a whole snapshot, written to a
/// temporary file and renamed into place), `DIR/routing.log` (the deltas
/// since, one JSON line each, appended and synced) and
/// `DIR/manifests/<hash>` (the manifests of its active branches, each
/// written atomically before the snapshot or delta that needs it).
struct Disk {
    dir: PathBuf,
}

impl Disk {
    fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("manifests")).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    fn routing_path(&self) -> PathBuf {
        self.dir.join("routing.json")
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("routing.log")
    }

    fn manifest_path(&self, hash: &ContentHash) -> PathBuf {
        self.dir.join("manifests").join(hash.to_hex())
    }

    fn has_manifest(&self, hash: &ContentHash) -> bool {
        self.manifest_path(hash).is_file()
    }

    /// A manifest kept on disk, if it is there and still hashes to its name.
    fn read_manifest(&self, hash: &ContentHash) -> Option<bytes::Bytes> {
        let bytes = std::fs::read(self.manifest_path(hash)).ok()?;
        (ContentHash::of(&bytes) == *hash).then(|| bytes.into())
    }

    /// Deltas in the journal.
    fn journal_len(&self) -> usize {
        std::fs::read(self.journal_path()).map_or(0, |b| b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count())
    }

    /// The snapshot on disk with the journal's deltas applied, and its
    /// manifests; `None` when there is none. A journal line that does not
    /// parse or apply (a write cut short) ends the replay there.
    fn load(&self) -> anyhow::Result<Option<(RoutingSnapshot, Manifests)>> {
        let path = self.routing_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut snap: RoutingSnapshot =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is not a routing snapshot", path.display()))?;
        if snap.format != SNAPSHOT_FORMAT || snap.version != snap.table.version || snap.version == 0 {
            bail!("{} has format {} version {}: not one this edge reads", path.display(), snap.format, snap.version);
        }
        let journal = std::fs::read(self.journal_path()).unwrap_or_default();
        for (i, line) in journal.split(|c| *c == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let applied = serde_json::from_slice::<RoutingDelta>(line).map_err(|e| e.to_string()).and_then(|d| {
                if d.version <= snap.version {
                    return Ok(None); // Already in the snapshot.
                }
                if d.epoch != snap.epoch {
                    return Err(format!("a delta of epoch {:?} after a snapshot of epoch {:?}", d.epoch, snap.epoch));
                }
                d.apply(&snap.table).map(|t| Some((t, d.published_at)))
            });
            match applied {
                Ok(None) => {}
                Ok(Some((table, published_at))) => {
                    snap = RoutingSnapshot { version: table.version, published_at, table, ..snap };
                }
                Err(e) => {
                    tracing::warn!(line = i + 1, error = %e, journal = %self.journal_path().display(), "the routing journal ends early here; serving the version before it");
                    break;
                }
            }
        }
        let mut manifests = HashMap::new();
        for row in snap.table.branches() {
            if manifests.contains_key(&row.manifest) {
                continue;
            }
            let Some(bytes) = self.read_manifest(&row.manifest) else {
                bail!(
                    "{} is missing or damaged (site {} branch {})",
                    self.manifest_path(&row.manifest).display(),
                    row.site,
                    row.branch
                );
            };
            let manifest: Manifest = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is unreadable", self.manifest_path(&row.manifest).display()))?;
            manifests.insert(row.manifest, Arc::new(manifest));
        }
        Ok(Some((snap, manifests)))
    }

    /// Writes the manifests among `prepared` the node did not have.
    fn write_manifests(&self, prepared: &Prepared) -> anyhow::Result<()> {
        for (hash, (bytes, _)) in prepared {
            if let Some(bytes) = bytes
                && !self.has_manifest(hash)
            {
                write_file_atomic(&self.manifest_path(hash), bytes, 0o600)?;
            }
        }
        Ok(())
    }

    /// Journals `delta` after the manifests it needs.
    fn append(&self, delta: &RoutingDelta, prepared: &Prepared) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        self.write_manifests(prepared)?;
        let mut line = serde_json::to_vec(delta)?;
        line.push(b'\n');
        let path = self.journal_path();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.write_all(&line).with_context(|| format!("writing {}", path.display()))?;
        f.sync_data().with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Keeps `snap` whole (the journal starts again) and its manifests;
    /// removes manifests no longer in `keep`.
    fn store(
        &self,
        snap: &RoutingSnapshot,
        prepared: &Prepared,
        keep: &HashMap<ContentHash, (Arc<Manifest>, u32)>,
    ) -> anyhow::Result<()> {
        self.write_manifests(prepared)?;
        write_file_atomic(&self.routing_path(), &serde_json::to_vec(snap)?, 0o600)?;
        match std::fs::remove_file(self.journal_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", self.journal_path().display())),
        }
        if let Ok(entries) = std::fs::read_dir(self.dir.join("manifests")) {
            for entry in entries.flatten() {
                let keep = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<ContentHash>().ok())
                    .is_some_and(|h| keep.contains_key(&h));
                if !keep {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

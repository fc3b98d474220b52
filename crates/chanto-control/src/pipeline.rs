//! The deploy pipeline and everything else that changes metadata: sites,
//! deploys (create → upload what is missing → finalize), activation, rollback,
//! expiry. Every change that affects serving ends by publishing a new routing
//! table to the edges and waiting until they serve it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chanto_core::content::{COMPRESS_MIN_BYTES, content_type_for, is_compressible};
use chanto_core::{
    BranchName, ContentHash, DeployId, Encoding, Manifest, ManifestEntry, SiteName, Variant, normalize_manifest_path,
};
use chanto_store::{
    ActivationKind, BlobStore, ByteStream, DeployFile, DeployRecord, MetaStore, NewDeploy, RoutingAnnouncement,
    RoutingChange, RoutingSink, RoutingTable, SiteRecord, StoreError, VariantRecord, now_millis, random_bytes,
};
use futures_util::StreamExt;

use crate::{ApiError, ControlConfig};

/// What a client declares about one file of a new deploy.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec {
    /// Hash of its bytes.
    pub hash: ContentHash,
    /// Its size in bytes.
    pub size: u64,
}

/// The request to start a deploy, as the API received it.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Branch to deploy; the site's production branch when absent.
    pub branch: Option<BranchName>,
    /// The author's message.
    pub message: Option<String>,
    /// Upload without activating.
    pub draft: bool,
    /// Where it comes from (`cli`, `build <id>`).
    pub source: String,
    /// Path → file, paths as the client sent them.
    pub files: BTreeMap<String, FileSpec>,
}

/// Variant records kept in memory (about 100 bytes each).
const RECORDED_VARIANTS_CACHED: usize = 400_000;

/// Longest deploy message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// A deploy in progress: its files, and the blobs it may receive.
struct UploadSession {
    files: Vec<DeployFile>,
    /// Declared size of each blob.
    sizes: HashMap<ContentHash, u64>,
    /// The blobs the store lacked when the deploy was created: the only ones
    /// finalize must look for, since garbage collection keeps every blob an
    /// uploading deploy references.
    required: Vec<ContentHash>,
    /// Blobs whose variants are made as soon as they arrive, so they are
    /// ready (or nearly) when finalize wants them: those a small deploy
    /// needs (see [`VARIANTS_INLINE_MAX`]).
    compress_on_arrival: HashSet<ContentHash>,
}

impl UploadSession {
    fn new(files: Vec<DeployFile>, sizes: HashMap<ContentHash, u64>, required: Vec<ContentHash>) -> Self {
        let mut compress_on_arrival = HashSet::new();
        if required.iter().map(|h| sizes[h]).sum::<u64>() <= VARIANTS_INLINE_MAX {
            let required: HashSet<&ContentHash> = required.iter().collect();
            let mut types = ContentTypes::default();
            for f in files.iter().filter(|f| required.contains(&f.hash) && !chanto_rules::is_rule_file(&f.path)) {
                if is_precompress_candidate(types.of(&f.path), f.size) {
                    compress_on_arrival.insert(f.hash);
                }
            }
        }
        Self { files, sizes, required, compress_on_arrival }
    }

    /// A session rebuilt from metadata (after a restart): every blob is checked.
    fn from_files(files: Vec<DeployFile>) -> Self {
        let sizes: HashMap<ContentHash, u64> = files.iter().map(|f| (f.hash, f.size)).collect();
        let required = sizes.keys().copied().collect();
        Self { files, sizes, required, compress_on_arrival: HashSet::new() }
    }
}

/// Whether a file of this type and size gets precompressed variants: a
/// compressible type, not tiny.
fn is_precompress_candidate(content_type: &str, size: u64) -> bool {
    size >= COMPRESS_MIN_BYTES && is_compressible(content_type)
}

/// Content types worked out once per file extension: a deploy of 10,000
/// files has a handful of extensions.
#[derive(Default)]
struct ContentTypes(HashMap<String, String>);

impl ContentTypes {
    /// The `Content-Type` of `path` ([`content_type_for`], which only looks at the extension).
    fn of(&mut self, path: &str) -> &str {
        let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        if !self.0.contains_key(ext) {
            self.0.insert(ext.to_owned(), content_type_for(path));
        }
        &self.0[ext]
    }
}

/// Recently written manifests kept whole: a redeploy takes the variants of
/// its unchanged files from the manifest it replaces.
const RECENT_MANIFESTS: usize = 4;

/// Finalize makes the variants still missing itself when they come from at
/// most this many bytes of source (about 60 ms of brotli at the default
/// quality on one core); beyond that the deploy goes live at once and gets
/// its variants in the background (see [`Control::finalize`]).
pub const VARIANTS_INLINE_MAX: u64 = 1 << 20;

/// What [`Control::precompress`] found and made.
struct Precompressed {
    /// Every variant known, by source blob and encoding.
    variants: HashMap<(ContentHash, Encoding), Variant>,
    /// Variants made since the last record, to record after a sync.
    fresh: Vec<VariantRecord>,
    /// Whether every compressible file's variants are known.
    complete: bool,
}

fn only_made(known: HashMap<(ContentHash, Encoding), Option<Variant>>) -> HashMap<(ContentHash, Encoding), Variant> {
    known.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

/// The variants known for blob `hash`, in the order manifests list them.
fn variants_of(hash: ContentHash, variants: &HashMap<(ContentHash, Encoding), Variant>) -> Vec<Variant> {
    let mut out: Vec<Variant> = Encoding::ALL.iter().filter_map(|e| variants.get(&(hash, *e)).cloned()).collect();
    out.sort_by_key(|v| v.encoding);
    out
}

/// Sets each manifest entry's variants to those known for its blob.
fn add_variants(manifest: &mut Manifest, variants: &HashMap<(ContentHash, Encoding), Variant>) {
    for entry in manifest.files.values_mut() {
        entry.variants = variants_of(entry.hash, variants);
    }
}

/// The control plane: owns metadata and blobs, tells edges what to serve.
pub struct Control {
    /// Metadata repository.
    pub meta: Arc<dyn MetaStore>,
    /// Blob store.
    pub blobs: Arc<dyn BlobStore>,
    /// Settings.
    pub config: ControlConfig,
    sinks: Vec<Arc<dyn RoutingSink>>,
    /// Serialises routing publications so versions only grow; holds the
    /// last table published (version 0, empty: none yet).
    routing: tokio::sync::Mutex<RoutingTable>,
    sessions: Mutex<HashMap<DeployId, Arc<UploadSession>>>,
    known_tokens: Mutex<HashSet<ContentHash>>,
    /// When personal tokens' use was last written.
    pub(crate) token_touches: crate::auth::TouchCache,
    /// Failed password sign-ins lately.
    pub(crate) login_throttle: crate::accounts::LoginThrottle,
    /// The API's (and console's) public base URL, for links it hands out.
    pub(crate) public_url: std::sync::OnceLock<String>,
    /// The API's operations by method and route (for the audit log).
    operations: std::sync::OnceLock<crate::auth::Operations>,
    /// Deploy operations hold it shared; garbage collection holds it alone, so
    /// a blob a new deploy was just told it need not upload is never deleted
    /// between that answer and the deploy's file list being recorded.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
    /// Garbage collection's memory between passes, and its totals.
    pub gc_state: crate::gc::GcState,
    /// Background precompressions in progress, by source blob.
    inflight: Mutex<HashMap<ContentHash, tokio::sync::watch::Receiver<bool>>>,
    /// Variants made in the background whose blobs may not be durable yet:
    /// they are recorded in metadata only by a finalize, after it synced the
    /// blob store, so no record ever names a blob a crash could lose.
    pub(crate) unrecorded: Mutex<HashMap<ContentHash, Vec<VariantRecord>>>,
    /// Variant records already in metadata, so a redeploy of ten thousand
    /// unchanged files does not look each one up again.
    pub(crate) recorded: quick_cache::sync::Cache<(ContentHash, Encoding), Option<Variant>>,
    /// Manifests written lately, by hash.
    recent_manifests: quick_cache::sync::Cache<ContentHash, Arc<Manifest>>,
    /// Compression threads, one per core, for what finalize waits for.
    /// Dedicated rather than tokio's blocking pool: the encoder's megabytes
    /// of tables then stay in a few threads' allocator heaps instead of 32
    /// (measured: 310 → 530 MB peak).
    compressor: rayon::ThreadPool,
    /// The same at the lowest CPU priority, for variants made after a deploy
    /// went live: they use only CPU time nothing else wants.
    background_compressor: rayon::ThreadPool,
    /// Bounds background precompression tasks holding a blob in memory.
    background_slots: Arc<tokio::sync::Semaphore>,
    /// Git-driven builds, when this server runs them.
    pub(crate) builds: std::sync::OnceLock<Arc<crate::builds::Builds>>,
    /// Notifications, when this server sends them.
    pub(crate) notifier: std::sync::OnceLock<Arc<crate::notify::Notifier>>,
    /// Certificate sealing and domain checks, when enabled.
    pub(crate) domains: std::sync::OnceLock<Arc<crate::domains::DomainService>>,
    /// Automatic certificates, when an ACME CA is configured.
    pub(crate) acme: std::sync::OnceLock<Arc<crate::acme_orders::AcmeOrders>>,
    /// Single sign-on to the console, when a provider is configured.
    pub(crate) oidc: std::sync::OnceLock<Arc<crate::oidc::Oidc>>,
    /// Edge nodes: the snapshot long-polls answer with, token checks, the activation wait.
    pub nodes: crate::nodes::NodeHub,
}

impl Control {
    /// A control plane over these stores, publishing routing to `sinks`.
    pub fn new(
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        config: ControlConfig,
        sinks: Vec<Arc<dyn RoutingSink>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            meta,
            blobs,
            config,
            sinks,
            routing: tokio::sync::Mutex::new(RoutingTable::default()),
            sessions: Mutex::new(HashMap::new()),
            known_tokens: Mutex::new(HashSet::new()),
            token_touches: Default::default(),
            login_throttle: Default::default(),
            public_url: std::sync::OnceLock::new(),
            operations: std::sync::OnceLock::new(),
            gc_lock: tokio::sync::RwLock::new(()),
            gc_state: Default::default(),
            inflight: Mutex::new(HashMap::new()),
            unrecorded: Mutex::new(HashMap::new()),
            recorded: quick_cache::sync::Cache::new(RECORDED_VARIANTS_CACHED),
            recent_manifests: quick_cache::sync::Cache::new(RECENT_MANIFESTS),
            background_slots: Arc::new(tokio::sync::Semaphore::new(32)),
            builds: std::sync::OnceLock::new(),
            notifier: std::sync::OnceLock::new(),
            domains: std::sync::OnceLock::new(),
            acme: std::sync::OnceLock::new(),
            oidc: std::sync::OnceLock::new(),
            nodes: Default::default(),
            compressor: compression_threads("chanto-compress", false),
            background_compressor: compression_threads("chanto-compress-bg", true),
        })
    }

    /// Re-reads what `change` names of the routing table and hands the new
    /// table to every edge, returning once they serve it. Returns the table's
    /// version. Only the sites named are read again: every other site's part
    /// is shared with the last table, so edges rebuild only what changed.
    pub async fn publish_routing(&self, change: RoutingChange) -> Result<u64, StoreError> {
        // Every activation, rollback and branch removal ends here: their events are in the outbox.
        self.poke_notifier();
        let mut current = self.routing.lock().await;
        // From the store: on a shared one every process's versions come from
        // one counter, so another process's listener can tell a table is newer.
        let version = self.meta.routing_version_after(current.version, change.sites()).await?;
        // A version not right after ours: another process published in
        // between (a shared store), and its changes are not in our table.
        let change = if current.version == 0 || version != current.version + 1 { RoutingChange::All } else { change };
        let mut table = current.reload(self.meta.as_ref(), version, &change).await?;
        if change == RoutingChange::All {
            table.share_unchanged(&current);
        }
        self.install_routing(&mut current, table).await?;
        Ok(version)
    }

    /// Makes `table` the current one: remote edges start pulling while
    /// in-process ones load it.
    async fn install_routing(&self, current: &mut RoutingTable, table: RoutingTable) -> Result<(), StoreError> {
        self.nodes.publish(&table, current);
        // Before the sinks: a sink's failure must not make the next version reuse this one.
        *current = table.clone();
        for sink in &self.sinks {
            sink.publish(table.clone()).await?;
        }
        Ok(())
    }

    /// Re-reads the routing table and hands it to every edge as the
    /// announced version, if that is newer than the last table this process
    /// published (another process on a shared store published it). Only the
    /// sites the announcement names are read when it comes right after the
    /// version this process has; otherwise everything. Returns whether it
    /// did. Versions handed to the edges never go backwards.
    pub async fn publish_routing_if_newer(&self, announced: &RoutingAnnouncement) -> Result<bool, StoreError> {
        let mut current = self.routing.lock().await;
        let version = announced.version;
        if version <= current.version {
            return Ok(false);
        }
        // Read after the version: the table holds at least what it announced.
        let table = match &announced.sites {
            Some(sites) if current.version != 0 && version == current.version + 1 => {
                current.reload(self.meta.as_ref(), version, &RoutingChange::Sites(sites.clone())).await?
            }
            _ => {
                let mut table = RoutingTable::load(self.meta.as_ref(), version).await?;
                table.share_unchanged(&current);
                table
            }
        };
        self.install_routing(&mut current, table).await?;
        Ok(true)
    }

    /// Follows the routing changes other processes on a shared metadata
    /// store publish (PostgreSQL: `LISTEN`, and a re-read of the version
    /// after every reconnect): each newer version's table goes to this
    /// process's edges. Nothing to do on a store only this process uses.
    pub fn follow_shared_routing(self: &Arc<Self>) {
        let Some(mut versions) = self.meta.watch_routing_versions() else { return };
        let control = Arc::downgrade(self);
        tokio::spawn(async move {
            while versions.changed().await.is_ok() {
                loop {
                    let a = versions.borrow_and_update().clone();
                    let Some(control) = control.upgrade() else { return };
                    match control.publish_routing_if_newer(&a).await {
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(version = a.version, error = %e, "could not load the routing table another process published; retrying");
                            drop(control);
                            // Again in a second, or at once for a newer version.
                            tokio::select! {
                                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                                changed = versions.changed() => if changed.is_err() { return },
                            }
                        }
                    }
                }
            }
        });
    }

    /// Creates the first admin token if there is none; returns it (the only
    /// time it exists in clear) so the caller can show and save it.
    pub async fn ensure_admin_token(&self) -> Result<Option<String>, StoreError> {
        if self.meta.token_count().await? > 0 {
            return Ok(None);
        }
        let token = format!("chanto_{}", hex::encode(random_bytes::<32>()));
        self.meta.add_token("admin", &token_hash(&token), now_millis()).await?;
        Ok(Some(token))
    }

    /// Sets the public base URL of the API and console (`--public-api-url`,
    /// or the API listener's address), for the links handed out (once).
    pub fn set_public_url(&self, url: String) {
        let _ = self.public_url.set(url.trim_end_matches('/').to_owned());
    }

    /// Turns on single sign-on to the console with this provider (once).
    pub fn enable_oidc(&self, oidc: crate::oidc::Oidc) {
        let _ = self.oidc.set(Arc::new(oidc));
    }

    /// The API's operations by method and route (computed once).
    pub fn operations(&self) -> &crate::auth::Operations {
        self.operations.get_or_init(|| {
            use utoipa::OpenApi as _;
            crate::auth::operations(&crate::api::ApiDoc::openapi())
        })
    }

    /// Whether `token` is the instance's admin token. Tokens are 256-bit
    /// random, so a fast hash is enough to store them safely; verified
    /// hashes are cached.
    pub async fn check_token(&self, token: &str) -> Result<bool, StoreError> {
        let hash = token_hash(token);
        if self.known_tokens.lock().expect("token cache").contains(&hash) {
            return Ok(true);
        }
        let ok = self.meta.token_exists(&hash).await?;
        if ok {
            self.known_tokens.lock().expect("token cache").insert(hash);
        }
        Ok(ok)
    }

    /// Creates a site.
    pub async fn create_site(&self, name: &SiteName, production_branch: &BranchName) -> Result<SiteRecord, ApiError> {
        let site = self.meta.create_site(name, production_branch, now_millis()).await?;
        tracing::info!(site = %name, branch = %production_branch, "site created");
        Ok(site)
    }

    /// A site, or 404.
    pub async fn site(&self, name: &SiteName) -> Result<SiteRecord, ApiError> {
        self.meta.get_site(name).await?.ok_or_else(|| ApiError::not_found(format!("site {name}")))
    }

    /// Deletes a site and stops serving it.
    pub async fn delete_site(&self, name: &SiteName) -> Result<(), ApiError> {
        self.meta.delete_site(name).await?;
        if let Some(builds) = self.builds.get() {
            builds.forget_site(name).await;
        }
        self.publish_routing(RoutingChange::site(name)).await?;
        tracing::info!(site = %name, "site deleted");
        Ok(())
    }

    /// A deploy, or 404.
    pub async fn deploy(&self, id: &DeployId) -> Result<DeployRecord, ApiError> {
        self.meta.get_deploy(id).await?.ok_or_else(|| ApiError::not_found(format!("deploy {id}")))
    }

    /// Validates a deploy request, records the deploy and answers which blobs
    /// the store lacks (invariant 5: upload only what is missing).
    pub async fn create_deploy(
        &self,
        site: &SiteName,
        req: DeployRequest,
    ) -> Result<(DeployRecord, Vec<ContentHash>), ApiError> {
        let mut phases = Phases::new();
        let site_rec = self.site(site).await?;
        let branch = req.branch.unwrap_or(site_rec.production_branch);
        if let Some(m) = &req.message
            && m.len() > MAX_MESSAGE_BYTES
        {
            return Err(ApiError::from(chanto_core::ValidationError::new(
                "message",
                format!("message is {} bytes; the limit is {MAX_MESSAGE_BYTES}", m.len()),
            )));
        }
        if req.files.is_empty() {
            return Err(ApiError::from(chanto_core::ValidationError::new(
                "files",
                "the deploy has no files; deploy a directory that contains at least one file",
            )));
        }
        if req.files.len() > self.config.max_files {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_files",
                format!("the deploy has {} files; the limit is {}", req.files.len(), self.config.max_files),
            )
            .field("files"));
        }
        let mut files = Vec::with_capacity(req.files.len());
        let mut seen = HashSet::with_capacity(req.files.len());
        for (raw, spec) in &req.files {
            let path = normalize_manifest_path(raw)?;
            if spec.size > self.config.max_file_size {
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "file_too_large",
                    format!(
                        "{path} is {} bytes; the largest file a deploy may hold is {} bytes",
                        spec.size, self.config.max_file_size
                    ),
                )
                .field(format!("files[{raw:?}]")));
            }
            if !seen.insert(path.clone()) {
                return Err(ApiError::from(chanto_core::ValidationError::new(
                    format!("files[{raw:?}]"),
                    format!("path names the same file as another entry ({path})"),
                )));
            }
            files.push(DeployFile { path, hash: spec.hash, size: spec.size });
        }
        let mut sizes = HashMap::with_capacity(files.len());
        for f in &files {
            if let Some(prev) = sizes.insert(f.hash, f.size)
                && prev != f.size
            {
                return Err(ApiError::from(chanto_core::ValidationError::new(
                    format!("files[{:?}]", f.path),
                    format!("hash {} is declared with two sizes ({prev} and {})", f.hash, f.size),
                )));
            }
        }
        phases.done("validate");
        let id = DeployId::from_random(random_bytes());
        // Garbage collection in this process waits; other processes' passes
        // are handled by the marks read below.
        let _gc = self.gc_lock.read().await;
        let record = self
            .meta
            .create_deploy(NewDeploy {
                id: id.clone(),
                site: site.clone(),
                branch,
                message: req.message,
                draft: req.draft,
                source: req.source,
                files: files.clone(),
                created_at: now_millis(),
            })
            .await?;
        phases.done("record");
        let unique: Vec<ContentHash> = sizes.keys().copied().collect();
        // Read after the file list is recorded and before the store is
        // asked (the order `gc.rs` relies on): a blob some garbage
        // collection is deleting is uploaded again, as if missing.
        let being_deleted = self.meta.blobs_being_deleted().await?;
        // The blobs the branch's live deploy holds are in the store, so only
        // the others are looked up (a one-file redeploy of a 10,000-file site
        // asks a remote store about one blob, not 10,000). Why this is safe:
        // a live deploy is ready, so finalize found each of its blobs in the
        // store; garbage collection never deletes a blob a recorded deploy
        // references (crate::gc), so they stayed there while it existed, and
        // it existed when it was read here, after this deploy's own file
        // list (which keeps them from then on) was recorded. A marked blob
        // is still sent back below. Not the node's disk cache: a cached copy
        // says nothing about the shared store.
        let live = match self.meta.branch(site, &record.branch).await?.and_then(|b| b.active_deploy) {
            Some(live) => self.meta.deploy_files(&live).await?.into_iter().map(|f| f.hash).collect(),
            None => HashSet::new(),
        };
        let ask: Vec<ContentHash> = unique.iter().filter(|h| !live.contains(*h)).copied().collect();
        let mut required = self.blobs.missing(&ask).await?;
        if !being_deleted.is_empty() {
            let known: HashSet<ContentHash> = required.iter().copied().collect();
            required.extend(unique.iter().filter(|h| being_deleted.contains(h) && !known.contains(h)));
        }
        phases.done("missing");
        let session = UploadSession::new(files, sizes, required.clone());
        self.sessions.lock().expect("sessions").insert(id.clone(), Arc::new(session));
        tracing::info!(site = %site, deploy = %id, branch = %record.branch, files = record.file_count, required = required.len(), phases = %phases, "deploy created");
        Ok((record, required))
    }

    async fn session(&self, id: &DeployId) -> Result<Arc<UploadSession>, ApiError> {
        if let Some(s) = self.sessions.lock().expect("sessions").get(id) {
            return Ok(s.clone());
        }
        // After a restart: rebuild the session from metadata.
        let deploy = self.deploy(id).await?;
        ensure_uploading(&deploy)?;
        let session = Arc::new(UploadSession::from_files(self.meta.deploy_files(id).await?));
        self.sessions.lock().expect("sessions").insert(id.clone(), session.clone());
        Ok(session)
    }

    /// Receives one blob of a deploy in progress, verifying its hash and size.
    pub async fn upload(
        self: &Arc<Self>,
        id: &DeployId,
        hash: &ContentHash,
        body: ByteStream,
    ) -> Result<u64, ApiError> {
        let _gc = self.gc_lock.read().await;
        let session = self.session(id).await?;
        let Some(&size) = session.sizes.get(hash) else {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "not_in_deploy",
                format!("blob {hash} is not part of deploy {id}; upload only hashes the deploy declared"),
            )
            .field("hash"));
        };
        // Only a small deploy's blobs are compressed as they arrive: for a
        // large one, compression competing with the upload for the disk and
        // the CPU made a 200 MB deploy 2.8× slower (bench/deploy); finalize
        // has its variants made after going live.
        let stored = self.blobs.put(hash, body, size).await?;
        if session.compress_on_arrival.contains(hash) {
            self.precompress_in_background(*hash, false);
        }
        Ok(stored)
    }

    /// Completes a deploy: checks every blob arrived, makes precompressed
    /// variants, writes the manifest, marks it ready and (unless a draft)
    /// activates it. Nothing is live until the final pointer flip. Finalizing
    /// a deploy that is already complete answers it unchanged, so a client
    /// whose first finalize timed out can safely retry.
    ///
    /// Returns the deploy and the warnings its rule files drew.
    pub async fn finalize(self: &Arc<Self>, id: &DeployId) -> Result<(DeployRecord, Vec<String>), ApiError> {
        let _gc = self.gc_lock.read().await;
        let started = Instant::now();
        let deploy = self.deploy(id).await?;
        if deploy.state.is_complete() {
            return Ok((deploy, Vec::new()));
        }
        ensure_uploading(&deploy)?;
        let mut phases = Phases::new();
        let session = self.session(id).await?;
        // Every required blob is looked up again, also those this process
        // stored: a put of a blob that already existed stores nothing, and a
        // garbage collection in another process may have deleted it since
        // (crate::gc: the deletion marks send such a blob back to the client).
        let missing = self.blobs.missing(&session.required).await?;
        phases.done("missing");
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(100).map(|h| h.to_hex()).collect();
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "missing_blobs",
                format!("{} blobs of this deploy were never uploaded; upload them, then finalize again", missing.len()),
            )
            .details(serde_json::json!({ "missing": shown, "count": missing.len() })));
        }
        let rules = self.compile_rules(id, &deploy.site, &session.files).await?;
        let warnings: Vec<String> = rules.iter().flat_map(|r| r.warnings.iter().map(|w| w.to_string())).collect();
        phases.done("rules");
        // A file the branch's live deploy has with the same bytes keeps the
        // variants it has there; only the others are looked up (or made).
        let base = self.live_manifest(&deploy).await?;
        let mut types = ContentTypes::default();
        let mut manifest = Manifest { version: Manifest::VERSION, files: BTreeMap::new(), rules };
        let mut look_up = Vec::new();
        // Rule files configure the site; they are not part of it (a password
        // or an internal path in them is nobody's business).
        for f in session.files.iter().filter(|f| !chanto_rules::is_rule_file(&f.path)) {
            let content_type = types.of(&f.path);
            let carried = base.as_ref().and_then(|b| b.files.get(&f.path)).filter(|e| e.hash == f.hash);
            let variants = match carried {
                Some(e) if !e.variants.is_empty() => e.variants.clone(),
                _ => {
                    if is_precompress_candidate(content_type, f.size) {
                        look_up.push((f.path.clone(), f.hash, f.size));
                    }
                    Vec::new()
                }
            };
            let entry = ManifestEntry { hash: f.hash, size: f.size, content_type: content_type.to_owned(), variants };
            manifest.files.insert(f.path.clone(), entry);
        }
        phases.done("files");
        let made =
            self.precompress(look_up.iter().map(|(_, h, size)| (*h, *size)).collect(), VARIANTS_INLINE_MAX).await?;
        phases.done("variants");
        for (path, _, _) in &look_up {
            let entry = manifest.files.get_mut(path).expect("listed above");
            entry.variants = variants_of(entry.hash, &made.variants);
        }
        let (manifest_hash, manifest) = self.store_manifest(manifest).await?;
        phases.done("manifest");
        // Everything recorded from here on names blobs that must survive a crash.
        self.blobs.sync().await?;
        phases.done("sync");
        self.record_variants(made.fresh).await?;
        if !made.complete {
            self.meta.set_variants_pending(id).await?;
        }
        let mut record = self.meta.mark_ready(id, &manifest_hash, now_millis()).await?;
        self.sessions.lock().expect("sessions").remove(id);
        if !record.draft {
            self.meta.activate(id, ActivationKind::Deploy, now_millis()).await?;
            record = self.deploy(id).await?;
        }
        phases.done("activate");
        self.publish_routing(RoutingChange::site(&record.site)).await?;
        phases.done("routing");
        tracing::info!(site = %record.site, deploy = %id, branch = %record.branch, state = %record.state, ms = started.elapsed().as_millis() as u64, phases = %phases, variants_pending = !made.complete, "deploy finalized");
        if !made.complete {
            self.finish_variants_later(id.clone(), manifest_hash, manifest);
        }
        Ok((record, warnings))
    }

    /// Serialises `manifest`, stores it and hands it to in-process edges
    /// (which then take it as built instead of reading it back).
    async fn store_manifest(&self, manifest: Manifest) -> Result<(ContentHash, Arc<Manifest>), ApiError> {
        // Sized up front (about 300 bytes an entry): growing by doubling
        // copied and page-faulted megabytes for a large site.
        let mut bytes = Vec::with_capacity(4096 + manifest.files.len() * 320);
        serde_json::to_writer(&mut bytes, &manifest)
            .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        let hash = self.blobs.put_bytes(Bytes::from(bytes)).await?;
        let manifest = Arc::new(manifest);
        for sink in &self.sinks {
            sink.prime(&hash, &manifest);
        }
        self.recent_manifests.insert(hash, manifest.clone());
        Ok((hash, manifest))
    }

    /// The manifest of the deploy live on `deploy`'s branch, if this process
    /// wrote it lately.
    async fn live_manifest(&self, deploy: &DeployRecord) -> Result<Option<Arc<Manifest>>, ApiError> {
        let Some(live) = self.meta.branch(&deploy.site, &deploy.branch).await?.and_then(|b| b.active_deploy) else {
            return Ok(None);
        };
        let manifest = self.meta.get_deploy(&live).await?.and_then(|d| d.manifest);
        Ok(manifest.and_then(|h| self.recent_manifests.get(&h)))
    }

    /// Records variants made since the blob store was last synced (call it
    /// only after a sync), and remembers them.
    async fn record_variants(&self, fresh: Vec<VariantRecord>) -> Result<(), ApiError> {
        if fresh.is_empty() {
            return Ok(());
        }
        self.meta.put_variants(&fresh).await?;
        for (src, enc, v) in fresh {
            self.recorded.insert((src, enc), v);
        }
        Ok(())
    }

    /// Makes the variants a live deploy went without, then swaps in a
    /// manifest that has them, in the background.
    fn finish_variants_later(self: &Arc<Self>, id: DeployId, manifest_hash: ContentHash, manifest: Arc<Manifest>) {
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            match this.finish_variants(&id, manifest_hash, &manifest).await {
                Ok(true) => {
                    tracing::info!(deploy = %id, ms = started.elapsed().as_millis() as u64, "precompressed variants added to the deploy")
                }
                Ok(false) => tracing::info!(deploy = %id, "deploy changed or went away before its variants were added"),
                Err(e) => {
                    tracing::warn!(deploy = %id, error = %e, "adding precompressed variants failed; the next start retries")
                }
            }
        });
    }

    /// Makes every variant `manifest` lacks (at background priority, one
    /// blob per task as uploads do), stores the manifest with them, records
    /// it if the deploy still has `manifest_hash` (compare and set) and
    /// publishes routing. Returns whether the deploy got the new manifest.
    async fn finish_variants(
        self: &Arc<Self>,
        id: &DeployId,
        manifest_hash: ContentHash,
        manifest: &Manifest,
    ) -> Result<bool, ApiError> {
        let sizes: HashMap<ContentHash, u64> = manifest
            .files
            .values()
            .filter(|e| is_precompress_candidate(&e.content_type, e.size))
            .map(|e| (e.hash, e.size))
            .collect();
        // Blobs whose variants are remembered need no task (a redeploy that
        // changed a few files of ten thousand).
        let candidates: Vec<ContentHash> = sizes
            .keys()
            .filter(|h| Encoding::ALL.iter().any(|e| self.recorded.get(&(**h, *e)).is_none()))
            .copied()
            .collect();
        for h in &candidates {
            self.precompress_in_background(*h, true);
        }
        self.wait_inflight(&candidates).await;
        let _gc = self.gc_lock.read().await;
        let made = self.precompress(sizes, u64::MAX).await?;
        let mut upgraded = manifest.clone();
        add_variants(&mut upgraded, &made.variants);
        let (new_hash, _) = self.store_manifest(upgraded).await?;
        self.blobs.sync().await?;
        self.record_variants(made.fresh).await?;
        if !self.meta.replace_manifest(id, &manifest_hash, &new_hash).await? {
            return Ok(false);
        }
        let change = match self.meta.get_deploy(id).await? {
            Some(d) => RoutingChange::site(&d.site),
            None => RoutingChange::All,
        };
        self.publish_routing(change).await?;
        Ok(true)
    }

    /// Finishes the variants of every deploy that went live without them
    /// before the last stop (see [`Control::finalize`]), in the background.
    /// Returns how many it started; a deploy whose manifest cannot be read
    /// is logged and left as it is (served without variants).
    pub async fn resume_variants(self: &Arc<Self>) -> Result<usize, ApiError> {
        let mut started = 0;
        for (id, hash) in self.meta.variants_pending().await? {
            let manifest = match self.blobs.get(&hash).await {
                Ok(bytes) => serde_json::from_slice::<Manifest>(&bytes).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match manifest {
                Ok(manifest) => {
                    tracing::info!(deploy = %id, "finishing the precompressed variants of a deploy that went live without them");
                    self.finish_variants_later(id, hash, Arc::new(manifest));
                    started += 1;
                }
                Err(e) => {
                    tracing::warn!(deploy = %id, manifest = %hash, error = %e, "cannot read the manifest of a deploy waiting for variants; it stays uncompressed")
                }
            }
        }
        Ok(started)
    }

    /// Parses the deploy's rule files (see [`chanto_rules::RULE_FILES`]). A
    /// file in error fails the deploy, naming every error's file, line and
    /// column: nothing goes live with rules it cannot follow.
    async fn compile_rules(
        &self,
        id: &DeployId,
        site: &SiteName,
        files: &[DeployFile],
    ) -> Result<Option<chanto_rules::RuleSet>, ApiError> {
        let mut sources = Vec::new();
        for f in files.iter().filter(|f| chanto_rules::is_rule_file(&f.path)) {
            sources.push((f.path.as_str(), self.blobs.get(&f.hash).await?));
        }
        // The site's profile setting (checked when it was set; a name this
        // release does not know counts as none).
        let profile = self.meta.site_profile(site).await?.and_then(|p| p.parse::<chanto_rules::Profile>().ok());
        if sources.is_empty() && profile.is_none() {
            return Ok(None);
        }
        let refs: Vec<(&str, &[u8])> = sources.iter().map(|(p, b)| (*p, &b[..])).collect();
        match chanto_rules::compile_for(&refs, profile) {
            Ok(set) if set.is_empty() && set.warnings.is_empty() => Ok(None),
            Ok(mut set) => {
                crate::access::seal_auth(&mut set).await?;
                Ok(Some(set))
            }
            Err(errors) => {
                let shown: Vec<String> = errors.iter().take(20).map(|e| e.to_string()).collect();
                let more = errors.len().saturating_sub(shown.len());
                let summary = format!(
                    "the deploy's rule files have {} error{}; fix them and deploy again:\n  {}{}",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" },
                    shown.join("\n  "),
                    if more > 0 { format!("\n  … and {more} more") } else { String::new() }
                );
                self.meta.mark_failed(id, &summary, now_millis()).await?;
                self.sessions.lock().expect("sessions").remove(id);
                tracing::info!(deploy = %id, errors = errors.len(), "deploy failed: invalid rule files");
                Err(ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules", summary)
                    .field(errors[0].file.clone())
                    .details(serde_json::json!({ "errors": errors })))
            }
        }
    }

    /// Makes the missing brotli and gzip variants of one source blob and
    /// stores them; returns what it learned (variants, or "not smaller").
    async fn make_variants(&self, src: ContentHash, background: bool) -> Result<Vec<VariantRecord>, ApiError> {
        let bytes = self.blobs.get(&src).await?;
        let (bq, gl) = (self.config.brotli_quality, self.config.gzip_level);
        // Only the compression runs on the compression threads: storing the
        // variants waits on the disk while they compress the next blob.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pool = if background { &self.background_compressor } else { &self.compressor };
        pool.spawn(move || {
            let _ = tx.send(Encoding::ALL.map(|enc| (enc, compress_if_smaller(&bytes, enc, bq, gl))));
        });
        let compressed = rx.await.map_err(|_| {
            ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", "a compression thread failed")
        })?;
        let mut out = Vec::new();
        for (enc, data) in compressed {
            let variant = match data {
                Some(data) => {
                    let size = data.len() as u64;
                    let hash = self.blobs.put_bytes(Bytes::from(data)).await?;
                    Some(Variant { encoding: enc, hash, size })
                }
                None => None,
            };
            out.push((src, enc, variant));
        }
        Ok(out)
    }

    /// Starts making a blob's variants in a task of its own: for a deploy
    /// that went live without them (`background`: at the lowest CPU
    /// priority), or for a small deploy's blob as it arrives (on the
    /// threads finalize uses). They wait in `unrecorded` until recorded
    /// after a sync. At most one task per blob; at most one compression per
    /// core at a time.
    fn precompress_in_background(self: &Arc<Self>, src: ContentHash, background: bool) {
        let (done, rx) = tokio::sync::watch::channel(false);
        {
            let mut inflight = self.inflight.lock().expect("inflight");
            if inflight.contains_key(&src) {
                return;
            }
            inflight.insert(src, rx);
        }
        let this = self.clone();
        tokio::spawn(async move {
            let result = async {
                let _slot = this.background_slots.acquire().await.map_err(|e| {
                    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })?;
                let _gc = this.gc_lock.read().await;
                if this.meta.variants(&[src]).await?.len() < Encoding::ALL.len() {
                    let made = this.make_variants(src, background).await?;
                    this.unrecorded.lock().expect("unrecorded").insert(src, made);
                }
                Ok::<(), ApiError>(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(blob = %src, error = %e, "background precompression failed; finalize will retry");
            }
            this.inflight.lock().expect("inflight").remove(&src);
            let _ = done.send(true);
        });
    }

    /// Gathers the brotli and gzip variants of the deploy's compressible
    /// files: those recorded, those made in the background since. If what is
    /// left to make is at most `inline_max` bytes of source, waits for the
    /// background tasks already on it and makes the rest (in parallel);
    /// otherwise leaves it to them and answers `complete: false`.
    async fn precompress(&self, sizes: HashMap<ContentHash, u64>, inline_max: u64) -> Result<Precompressed, ApiError> {
        let mut known: HashMap<(ContentHash, Encoding), Option<Variant>> = HashMap::new();
        let mut look_up = Vec::new();
        for h in sizes.keys() {
            let mut all = true;
            for enc in Encoding::ALL {
                match self.recorded.get(&(*h, enc)) {
                    Some(v) => drop(known.insert((*h, enc), v)),
                    None => all = false,
                }
            }
            if !all {
                look_up.push(*h);
            }
        }
        for (src, enc, v) in self.meta.variants(&look_up).await? {
            self.recorded.insert((src, enc), v.clone());
            known.insert((src, enc), v);
        }
        let mut fresh = Vec::new();
        let unmade = |known: &HashMap<(ContentHash, Encoding), Option<Variant>>| -> Vec<ContentHash> {
            let mut todo: Vec<ContentHash> = sizes
                .keys()
                .filter(|h| Encoding::ALL.iter().any(|e| !known.contains_key(&(**h, *e))))
                .copied()
                .collect();
            todo.sort();
            todo
        };
        self.take_unrecorded(&unmade(&known), &mut known, &mut fresh);
        let todo = unmade(&known);
        if todo.iter().map(|h| sizes[h]).sum::<u64>() > inline_max {
            return Ok(Precompressed { variants: only_made(known), fresh, complete: false });
        }
        self.wait_inflight(&todo).await;
        // Whatever a task did not leave in `unrecorded` is made below.
        self.take_unrecorded(&todo, &mut known, &mut fresh);
        let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let made: Vec<Result<Vec<VariantRecord>, ApiError>> = futures_util::stream::iter(unmade(&known))
            .map(|src| self.make_variants(src, false))
            .buffer_unordered(parallel)
            .collect()
            .await;
        for r in made {
            for (src, enc, v) in r? {
                known.insert((src, enc), v.clone());
                fresh.push((src, enc, v));
            }
        }
        Ok(Precompressed { variants: only_made(known), fresh, complete: true })
    }

    /// Waits until no background task is making variants of `sources` (a
    /// task that failed or vanished counts as done).
    async fn wait_inflight(&self, sources: &[ContentHash]) {
        let waiting: Vec<tokio::sync::watch::Receiver<bool>> = {
            let inflight = self.inflight.lock().expect("inflight");
            sources.iter().filter_map(|h| inflight.get(h).cloned()).collect()
        };
        for mut rx in waiting {
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// Moves the variants background tasks made of `sources` into `known`
    /// and `fresh` (to be recorded after the next sync).
    fn take_unrecorded(
        &self,
        sources: &[ContentHash],
        known: &mut HashMap<(ContentHash, Encoding), Option<Variant>>,
        fresh: &mut Vec<VariantRecord>,
    ) {
        let mut unrecorded = self.unrecorded.lock().expect("unrecorded");
        for h in sources {
            if let Some(made) = unrecorded.remove(h) {
                for (src, enc, v) in &made {
                    known.insert((*src, *enc), v.clone());
                }
                fresh.extend(made);
            }
        }
    }

    /// Activates any complete deploy on its branch (also "roll back to this deploy").
    /// Returns the deploy and the one it replaced.
    pub async fn publish(&self, id: &DeployId) -> Result<(DeployRecord, Option<DeployId>), ApiError> {
        let previous = self.meta.activate(id, ActivationKind::Publish, now_millis()).await?;
        let record = self.deploy(id).await?;
        self.publish_routing(RoutingChange::site(&record.site)).await?;
        tracing::info!(site = %record.site, deploy = %id, branch = %record.branch, previous = ?previous, "deploy published");
        Ok((record, previous.filter(|p| p != id)))
    }

    /// Rolls a branch back: to `to`, or to the deploy that was live before
    /// the current one (repeated rollbacks walk further back; the rule is
    /// [`chanto_store::rollback::rollback_walk`]). Without `branch`: the
    /// branch of `to`, else production.
    /// Returns (the deploy rolled back from, the deploy now active).
    pub async fn rollback(
        &self,
        site: &SiteName,
        branch: Option<BranchName>,
        to: Option<DeployId>,
    ) -> Result<(DeployId, DeployRecord), ApiError> {
        let branch = match (branch, &to) {
            (Some(b), _) => b,
            (None, Some(id)) => match self.meta.get_deploy(id).await? {
                Some(d) if &d.site == site => d.branch,
                _ => return Err(StoreError::NotFound(format!("deploy {id} of site {site}")).into()),
            },
            (None, None) => self.site(site).await?.production_branch,
        };
        let (from, to) = self.meta.rollback(site, &branch, to.as_ref(), now_millis()).await?;
        self.publish_routing(RoutingChange::site(site)).await?;
        tracing::info!(site = %site, branch = %branch, from = %from, to = %to, "rolled back");
        Ok((from, self.deploy(&to).await?))
    }

    /// Expires deploys left unfinalized longer than the upload window and
    /// drops their upload sessions. Returns how many expired.
    pub async fn expire_uploads(&self, now: chanto_store::UnixMillis) -> Result<usize, StoreError> {
        let cutoff = now - self.config.upload_ttl.as_millis() as i64;
        let expired = self.meta.expire_uploads(cutoff).await?;
        let mut sessions = self.sessions.lock().expect("sessions");
        for id in &expired {
            sessions.remove(id);
            tracing::info!(deploy = %id, "unfinished deploy expired");
        }
        Ok(expired.len())
    }

    /// Runs the janitor forever: expiry every `interval`, retention and
    /// garbage collection ([`Control::collect_garbage`]) every `gc_every` intervals.
    pub async fn run_janitor(self: Arc<Self>, interval: std::time::Duration, gc_every: u32) {
        let mut tick = tokio::time::interval(interval);
        let mut n: u32 = 0;
        loop {
            tick.tick().await;
            if let Err(e) = self.expire_uploads(now_millis()).await {
                tracing::warn!(error = %e, "janitor: expiring uploads failed; will retry");
            }
            n = n.wrapping_add(1);
            if gc_every > 0
                && n.is_multiple_of(gc_every)
                && let Err(e) = self.collect_garbage(now_millis(), false).await
            {
                tracing::warn!(error = %e, "janitor: garbage collection failed; will retry");
            }
        }
    }
}

/// Milliseconds spent in each named phase of an operation, for its log line.
struct Phases {
    last: Instant,
    spent: Vec<(&'static str, u128)>,
}

impl Phases {
    fn new() -> Self {
        Self { last: Instant::now(), spent: Vec::new() }
    }

    /// Ends the phase called `name` now.
    fn done(&mut self, name: &'static str) {
        let now = Instant::now();
        self.spent.push((name, (now - self.last).as_millis()));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, ms)) in self.spent.iter().enumerate() {
            write!(f, "{}{name}={ms}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}

/// One compression thread per core, named `name-<i>`; at the lowest CPU
/// priority if `background`.
fn compression_threads(name: &'static str, background: bool) -> rayon::ThreadPool {
    let mut b = rayon::ThreadPoolBuilder::new()
        .num_threads(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
        .thread_name(move |i| format!("{name}-{i}"));
    if background {
        b = b.start_handler(|_| background_priority());
    }
    b.build().expect("starting compression threads")
}

/// Lowers the calling thread's CPU priority to the lowest (nice 19), so
/// compression uses only the CPU time uploads, builds and the edge leave
/// idle. Best effort: an error leaves the priority as it was.
fn background_priority() {
    // On Linux a thread id names one thread for setpriority.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::debug!(error = %e, "could not lower the compression thread's priority");
    }
}

fn ensure_uploading(deploy: &DeployRecord) -> Result<(), ApiError> {
    if deploy.state == chanto_core::DeployState::Uploading {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "deploy_not_uploading",
            format!("deploy {} is {}: it takes no more uploads; start a new deploy", deploy.id, deploy.state),
        ))
    }
}

fn compress_if_smaller(bytes: &[u8], enc: Encoding, bq: u32, gl: u32) -> Option<Vec<u8>> {
    let out = crate::precompress::compress(bytes, enc, bq, gl);
    // Keep a variant only when it saves at least 5%: less is not worth a Vary.
    (out.len() as u64 * 100 <= bytes.len() as u64 * 95).then_some(out)
}

/// The stored hash of an API token.
pub fn token_hash(token: &str) -> ContentHash {
    ContentHash::from_blake3(blake3::Hasher::new_derive_key("chanto api token v1").update(token.as_bytes()).finalize())
}

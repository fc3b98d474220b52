//! Retention and garbage collection through the real `Control` and its API
//! (`oneshot`, no socket), on SQLite + a local blob directory and on
//! PostgreSQL + S3 (s3s-fs) behind the disk cache, from chanto-testkit. The
//! clock is passed in (`collect_garbage(now, …)`), so the grace period is
//! stepped over without sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use chanto_control::gc::GcReport;
use chanto_control::{Control, ControlConfig, router};
use chanto_core::ContentHash;
use chanto_store::{
    BlobInfo, BlobStore, ByteStream, CachedBlobStore, LocalBlobStore, MetaStore, OpenBlob, PostgresMeta, RoutingSink,
    RoutingTable, S3BlobStore, S3Options, SqliteMeta, StoreError, UnixMillis, now_millis,
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::ServiceExt;

const HOUR: i64 = 3_600_000;

/// Records routing tables (stands in for an edge).
#[derive(Default)]
struct RecordingSink(Mutex<Vec<RoutingTable>>);

#[async_trait]
impl RoutingSink for RecordingSink {
    async fn publish(&self, table: RoutingTable) -> Result<(), StoreError> {
        self.0.lock().unwrap().push(table);
        Ok(())
    }
}

/// Which real stores a test runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    SqliteLocal,
    /// PostgreSQL, and S3 behind the edge's disk cache.
    PostgresS3,
}

/// One metadata store and one blob store, as several processes would share them.
struct Stores {
    meta_url: Option<String>,
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    /// The disk cache in front of S3, to look into.
    cache: Option<Arc<CachedBlobStore<S3BlobStore>>>,
    dir: tempfile::TempDir,
}

impl Stores {
    async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::SqliteLocal => Self {
                meta_url: None,
                meta: Arc::new(SqliteMeta::open(&dir.path().join("meta.db")).unwrap()),
                blobs: Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap()),
                cache: None,
                dir,
            },
            Backend::PostgresS3 => {
                let url = chanto_testkit::pg::shared().create_database("gc");
                let meta = Arc::new(PostgresMeta::connect(&url, None).await.unwrap());
                let server = chanto_testkit::s3::S3Server::shared();
                let bucket = server.create_bucket();
                let mut o = S3Options::new(format!("s3://{bucket}/chanto"), "gc-test");
                o.endpoint = Some(server.endpoint());
                o.credentials =
                    Some((chanto_testkit::s3::ACCESS_KEY.to_owned(), chanto_testkit::s3::SECRET_KEY.to_owned()));
                let s3 = S3BlobStore::connect(o).await.unwrap();
                let cache = Arc::new(CachedBlobStore::open(s3, dir.path().join("cache"), 64 << 20).unwrap());
                Self { meta_url: Some(url), meta, blobs: cache.clone(), cache: Some(cache), dir }
            }
        }
    }

    /// A second handle on the same metadata, as another process would open it.
    async fn meta_again(&self) -> Arc<dyn MetaStore> {
        match &self.meta_url {
            Some(url) => Arc::new(PostgresMeta::connect(url, None).await.unwrap()),
            None => Arc::new(SqliteMeta::open(&self.dir.path().join("meta.db")).unwrap()),
        }
    }
}

struct Harness {
    control: Arc<Control>,
    sink: Arc<RecordingSink>,
    token: String,
}

fn config(grace: Duration, depth: u32) -> ControlConfig {
    let mut c = ControlConfig::new("localhost", 8080);
    c.gc_grace = grace;
    c.rollback_depth = depth;
    c
}

impl Harness {
    async fn on(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>, config: ControlConfig) -> Self {
        let sink = Arc::new(RecordingSink::default());
        let control = Control::new(meta, blobs, config, vec![sink.clone() as Arc<dyn RoutingSink>]);
        let token = match control.ensure_admin_token().await.unwrap() {
            Some(t) => t,
            // A second "process" on the same metadata: give it its own token.
            None => {
                let t = format!("chanto_second_{}", hex_of(&now_millis().to_be_bytes()));
                control.meta.add_token("second", &chanto_control::pipeline::token_hash(&t), 0).await.unwrap();
                t
            }
        };
        Self { control, sink, token }
    }

    async fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = router(self.control.clone()).oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
        self.raw(method, path, Some(&self.token), body).await
    }

    async fn site(&self, name: &str) {
        let (s, v) = self.call("POST", "/api/v1/sites", json!({"name": name})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Creates a deploy; returns its id and the hashes it must upload.
    async fn create(&self, site: &str, files: &[(&str, &'static [u8])], draft: bool) -> (String, Vec<String>) {
        let manifest: serde_json::Map<String, Value> = files
            .iter()
            .map(|(p, b)| (p.to_string(), json!({"hash": ContentHash::of(b).to_hex(), "size": b.len()})))
            .collect();
        let (s, created) = self
            .call("POST", &format!("/api/v1/sites/{site}/deploys"), json!({"draft": draft, "files": manifest}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let id = created["deploy"]["id"].as_str().unwrap().to_owned();
        (id, serde_json::from_value(created["required"].clone()).unwrap())
    }

    async fn upload(&self, id: &str, bytes: &'static [u8]) -> (StatusCode, Value) {
        let hash = ContentHash::of(bytes);
        self.raw("PUT", &format!("/api/v1/deploys/{id}/blobs/{hash}"), Some(&self.token), Body::from(bytes)).await
    }

    async fn upload_required(&self, id: &str, files: &[(&str, &'static [u8])], required: &[String]) {
        for (_, b) in files {
            if required.contains(&ContentHash::of(b).to_hex()) {
                let (s, v) = self.upload(id, b).await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
            }
        }
    }

    async fn finalize(&self, id: &str) -> (StatusCode, Value) {
        self.call("POST", &format!("/api/v1/deploys/{id}/finalize"), Value::Null).await
    }

    /// Creates, uploads and finalizes a deploy; returns its id.
    async fn deploy(&self, site: &str, files: &[(&str, &'static [u8])]) -> String {
        let (id, required) = self.create(site, files, false).await;
        self.upload_required(&id, files, &required).await;
        let (s, v) = self.finalize(&id).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        id
    }

    async fn gc(&self, now: UnixMillis, dry_run: bool) -> GcReport {
        self.control.collect_garbage(now, dry_run).await.unwrap()
    }

    fn last_table(&self) -> RoutingTable {
        self.sink.0.lock().unwrap().last().cloned().expect("a routing table was published")
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn has(blobs: &dyn BlobStore, bytes: &[u8]) -> bool {
    blobs.has(&ContentHash::of(bytes)).await.unwrap()
}

/// A blob unreferenced but within the grace period is kept; once the grace
/// has passed since it was first seen unreferenced, it is deleted (and its
/// cached copy with it), and the report's bytes are its bytes.
async fn grace_period_is_honoured(backend: Backend) {
    let stores = Stores::new(backend).await;
    let h = Harness::on(stores.meta.clone(), stores.blobs.clone(), config(Duration::from_secs(3600), 10)).await;
    h.site("keep").await;
    h.site("gone").await;
    h.deploy("keep", &[("index.html", b"kept page")]).await;
    h.deploy("gone", &[("index.html", b"doomed page"), ("style.css", b"doomed style")]).await;
    // Read through the disk cache, so a cached copy exists.
    if let Some(cache) = &stores.cache {
        stores.blobs.get(&ContentHash::of(b"doomed page")).await.unwrap();
        assert!(cache.path_of(&ContentHash::of(b"doomed page")).exists(), "the blob is in the disk cache");
    }
    let (s, _) = h.call("DELETE", "/api/v1/sites/gone", Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Three blobs are garbage now: two files and a manifest.
    let t0 = now_millis() + 1;
    let r = h.gc(t0, false).await;
    assert_eq!((r.blobs_deleted, r.blobs_waiting), (0, 3), "{r:?}");
    assert_eq!(r.next_deletable_at, Some(t0 + HOUR));
    assert!(r.bytes_waiting > (b"doomed page".len() + b"doomed style".len()) as u64);
    assert!(has(&*stores.blobs, b"doomed page").await);
    // A minute before the grace is over: still kept.
    let r = h.gc(t0 + HOUR - 60_000, false).await;
    assert_eq!((r.blobs_deleted, r.blobs_waiting), (0, 3), "{r:?}");
    assert!(has(&*stores.blobs, b"doomed style").await);

    // A dry run at the end of the grace says what a real pass then deletes.
    let dry = h.gc(t0 + HOUR, true).await;
    assert_eq!((dry.blobs_deleted, dry.blobs_waiting), (3, 0), "{dry:?}");
    assert!(has(&*stores.blobs, b"doomed style").await, "a dry run deletes nothing");
    let sizes: Vec<BlobInfo> = stores.blobs.list_sizes().await.unwrap();
    let r = h.gc(t0 + HOUR, false).await;
    assert_eq!((r.blobs_deleted, r.bytes_deleted, r.blobs_waiting), (dry.blobs_deleted, dry.bytes_deleted, 0));
    let left: Vec<BlobInfo> = stores.blobs.list_sizes().await.unwrap();
    let freed: u64 = sizes.iter().filter(|b| !left.contains(b)).map(|b| b.size).sum();
    assert_eq!(r.bytes_deleted, freed, "bytes reported are the bytes that went");
    assert!(!has(&*stores.blobs, b"doomed page").await);
    assert!(!has(&*stores.blobs, b"doomed style").await);
    assert!(has(&*stores.blobs, b"kept page").await, "referenced blobs stay");
    if let Some(cache) = &stores.cache {
        assert!(!cache.path_of(&ContentHash::of(b"doomed page")).exists(), "the cached copy went too");
    }
    let totals = &h.control.gc_state;
    assert_eq!(totals.blobs_deleted.load(std::sync::atomic::Ordering::Relaxed), 3);
}

/// A blob that becomes referenced again within the grace (redeployed) is
/// kept, and starts its grace afresh when unreferenced again.
async fn a_blob_referenced_again_is_kept(backend: Backend) {
    let stores = Stores::new(backend).await;
    let h = Harness::on(stores.meta.clone(), stores.blobs.clone(), config(Duration::from_secs(3600), 10)).await;
    h.site("docs").await;
    let (wip, required) = h.create("docs", &[("a.html", b"comes back")], false).await;
    h.upload_required(&wip, &[("a.html", b"comes back")], &required).await;
    h.control.expire_uploads(now_millis() + 2 * HOUR).await.unwrap();
    let t0 = now_millis() + 1;
    assert_eq!(h.gc(t0, false).await.blobs_waiting, 1);
    // Deployed again before the grace is over.
    h.deploy("docs", &[("a.html", b"comes back")]).await;
    let r = h.gc(t0 + 2 * HOUR, false).await;
    assert_eq!((r.blobs_deleted, r.blobs_waiting), (0, 0), "{r:?}");
    assert!(has(&*stores.blobs, b"comes back").await);
}

#[tokio::test]
async fn grace_period_is_honoured_on_sqlite_and_local() {
    grace_period_is_honoured(Backend::SqliteLocal).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (run with --run-ignored all, or scripts/test)"]
async fn grace_period_is_honoured_on_postgres_and_s3() {
    grace_period_is_honoured(Backend::PostgresS3).await;
}

#[tokio::test]
async fn a_blob_referenced_again_is_kept_on_sqlite_and_local() {
    a_blob_referenced_again_is_kept(Backend::SqliteLocal).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (run with --run-ignored all, or scripts/test)"]
async fn a_blob_referenced_again_is_kept_on_postgres_and_s3() {
    a_blob_referenced_again_is_kept(Backend::PostgresS3).await;
}

/// The real blob store, whose deletes wait at a gate the test opens: it
/// stops a garbage collection pass at the moment it deletes, so a test can
/// run another process's deploy in exactly that window.
struct GatedDeletes {
    inner: Arc<dyn BlobStore>,
    reached: Notify,
    open: tokio::sync::Semaphore,
}

#[async_trait]
impl BlobStore for GatedDeletes {
    async fn has(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        self.inner.has(hash).await
    }
    async fn missing(&self, hashes: &[ContentHash]) -> Result<Vec<ContentHash>, StoreError> {
        self.inner.missing(hashes).await
    }
    async fn put(&self, hash: &ContentHash, body: ByteStream, max_size: u64) -> Result<u64, StoreError> {
        self.inner.put(hash, body, max_size).await
    }
    async fn put_bytes(&self, bytes: Bytes) -> Result<ContentHash, StoreError> {
        self.inner.put_bytes(bytes).await
    }
    async fn get(&self, hash: &ContentHash) -> Result<Bytes, StoreError> {
        self.inner.get(hash).await
    }
    async fn open(&self, hash: &ContentHash) -> Result<OpenBlob, StoreError> {
        self.inner.open(hash).await
    }
    async fn delete(&self, hash: &ContentHash) -> Result<(), StoreError> {
        self.reached.notify_one();
        self.open.acquire().await.expect("gate").forget();
        self.inner.delete(hash).await
    }
    async fn list(&self) -> Result<Vec<ContentHash>, StoreError> {
        self.inner.list().await
    }
    async fn list_sizes(&self) -> Result<Vec<BlobInfo>, StoreError> {
        self.inner.list_sizes().await
    }
    async fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync().await
    }
}

/// Two processes on one metadata store and one blob store: A deploys, B
/// collects garbage. A deploy that names a blob B is deleting is told to
/// upload it, whichever comes first; a deploy recorded before B's pass keeps
/// its blobs; nothing ever goes live with a blob missing.
async fn a_deploy_racing_gc_in_another_process_never_loses_a_blob(backend: Backend) {
    let stores = Stores::new(backend).await;
    let a = Harness::on(stores.meta.clone(), stores.blobs.clone(), config(Duration::ZERO, 10)).await;
    let gate = Arc::new(GatedDeletes {
        inner: stores.blobs.clone(),
        reached: Notify::new(),
        open: tokio::sync::Semaphore::new(0),
    });
    let b = Harness::on(stores.meta_again().await, gate.clone(), config(Duration::ZERO, 10)).await;
    a.site("docs").await;
    let shared: &[(&str, &'static [u8])] = &[("shared.css", b"shared style")];

    // 1. The blob is stored but unreferenced (its deploy expired).
    let (old, required) = a.create("docs", shared, false).await;
    a.upload_required(&old, shared, &required).await;
    a.control.expire_uploads(now_millis() + 2 * HOUR).await.unwrap();

    // 2. B's pass has marked it and read the references again, and is
    //    about to delete it; now A starts a deploy that needs it.
    let pass = tokio::spawn({
        let b = b.control.clone();
        async move { b.collect_garbage(now_millis() + 1, false).await.unwrap() }
    });
    gate.reached.notified().await;
    let files: &[(&str, &'static [u8])] = &[("index.html", b"new page"), ("shared.css", b"shared style")];
    let (d1, required) = a.create("docs", files, false).await;
    assert!(
        required.contains(&ContentHash::of(b"shared style").to_hex()),
        "a deploy must upload a blob being deleted, even though it is present: {required:?}"
    );
    // B deletes it; A then uploads it as told and goes live whole.
    gate.open.add_permits(1);
    let report = pass.await.unwrap();
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert!(!has(&*stores.blobs, b"shared style").await);
    a.upload_required(&d1, files, &required).await;
    let (s, v) = a.finalize(&d1).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(has(&*stores.blobs, b"shared style").await, "the live deploy's blob is there");
    assert!(stores.meta.blobs_being_deleted().await.unwrap().is_empty(), "the pass cleared its marks");

    // 3. A deploy recorded before a pass starts keeps its blobs: B's pass
    //    finds them referenced, even those the deploy was told not to upload.
    let lonely: &[(&str, &'static [u8])] = &[("lonely.css", b"lonely style")];
    let (old, required) = a.create("docs", lonely, false).await;
    a.upload_required(&old, lonely, &required).await;
    a.control.expire_uploads(now_millis() + 2 * HOUR).await.unwrap();
    let (d2, required) = a.create("docs", &[("again.css", b"lonely style")], false).await;
    assert!(required.is_empty(), "the blob is present and not being deleted");
    gate.open.add_permits(1);
    let report = b.gc(now_millis() + 1, false).await;
    assert_eq!(report.blobs_deleted, 0, "{report:?}");
    gate.open.acquire().await.unwrap().forget();
    let (s, v) = a.finalize(&d2).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(has(&*stores.blobs, b"lonely style").await);

    // 4. The narrow case left: a deploy uploads a marked blob before B
    //    deletes it. Finalize then refuses (nothing half-live) and names the
    //    blob, and uploading it again completes the deploy.
    let stale: &[(&str, &'static [u8])] = &[("late.css", b"late style")];
    let (old, required) = a.create("docs", stale, false).await;
    a.upload_required(&old, stale, &required).await;
    a.control.expire_uploads(now_millis() + 2 * HOUR).await.unwrap();
    let pass = tokio::spawn({
        let b = b.control.clone();
        async move { b.collect_garbage(now_millis() + 1, false).await.unwrap() }
    });
    gate.reached.notified().await;
    let (d3, required) = a.create("docs", stale, false).await;
    assert_eq!(required, vec![ContentHash::of(b"late style").to_hex()]);
    a.upload_required(&d3, stale, &required).await;
    gate.open.add_permits(1);
    assert_eq!(pass.await.unwrap().blobs_deleted, 1);
    let (s, v) = a.finalize(&d3).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "missing_blobs");
    a.upload_required(&d3, stale, &required).await;
    let (s, v) = a.finalize(&d3).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(has(&*stores.blobs, b"late style").await);
}

#[tokio::test]
async fn a_deploy_racing_gc_in_another_process_never_loses_a_blob_on_sqlite_and_local() {
    a_deploy_racing_gc_in_another_process_never_loses_a_blob(Backend::SqliteLocal).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (run with --run-ignored all, or scripts/test)"]
async fn a_deploy_racing_gc_in_another_process_never_loses_a_blob_on_postgres_and_s3() {
    a_deploy_racing_gc_in_another_process_never_loses_a_blob(Backend::PostgresS3).await;
}

/// Garbage collection passes with no grace at all, run again and again
/// while one process creates, uploads and finalizes deploys: every deploy
/// that goes live has every blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_while_gc_runs_in_the_same_process_keep_their_blobs() {
    let stores = Stores::new(Backend::SqliteLocal).await;
    let h = Arc::new(Harness::on(stores.meta.clone(), stores.blobs.clone(), config(Duration::ZERO, 10)).await);
    h.site("docs").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = tokio::spawn({
        let (c, stop) = (h.control.clone(), stop.clone());
        async move {
            let mut passes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.collect_garbage(now_millis() + 1, false).await.unwrap();
                passes += 1;
                tokio::task::yield_now().await;
            }
            passes
        }
    });
    static PAGES: std::sync::LazyLock<Vec<Vec<u8>>> =
        std::sync::LazyLock::new(|| (0..20).map(|i| format!("page {}", i % 7).into_bytes()).collect());
    let mut ids = Vec::new();
    for (i, page) in PAGES.iter().enumerate() {
        let page: &'static [u8] = page;
        let files: Vec<(&str, &'static [u8])> = vec![("index.html", page), ("same.css", b"always here")];
        let (id, required) = h.create("docs", &files, false).await;
        tokio::task::yield_now().await;
        h.upload_required(&id, &files, &required).await;
        tokio::task::yield_now().await;
        let (s, v) = h.finalize(&id).await;
        assert_eq!(s, StatusCode::OK, "deploy {i}: {v}");
        ids.push(id);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(collector.await.unwrap() > 0);
    // Every deploy is complete and every blob its manifest names is there.
    for table_row in h.last_table().permalinks().cloned().collect::<Vec<_>>() {
        let manifest: chanto_core::Manifest =
            serde_json::from_slice(&stores.blobs.get(&table_row.manifest).await.unwrap()).unwrap();
        for entry in manifest.files.values() {
            assert!(stores.blobs.has(&entry.hash).await.unwrap(), "deploy {} lost {}", table_row.deploy, entry.hash);
        }
    }
    assert_eq!(h.last_table().permalinks().count(), ids.len());
}

/// Retention keeps the newest N of a branch, the active deploy, the ones a
/// rollback within the depth reaches and the one still uploading; prunes the
/// rest (gone from listings, permalinks, `GET /deploys/{id}`); their blobs
/// follow after the grace period.
async fn retention_prunes_only_what_nothing_needs(backend: Backend) {
    let stores = Stores::new(backend).await;
    let h = Harness::on(stores.meta.clone(), stores.blobs.clone(), config(Duration::from_secs(3600), 1)).await;
    h.site("docs").await;
    static PAGES: [&[u8]; 5] = [b"page one", b"page two", b"page three", b"page four", b"page five"];
    let mut ids = Vec::new();
    for page in PAGES {
        ids.push(h.deploy("docs", &[("index.html", page), ("logo.svg", b"<svg/>")]).await);
    }
    // An old deploy published again is active; the newest is then a rollback away.
    let (s, v) = h.call("POST", &format!("/api/v1/deploys/{}/publish", ids[1]), Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (uploading, _) = h.create("docs", &[("index.html", b"page six")], false).await;

    // Without retention nothing is pruned.
    assert_eq!(h.gc(now_millis() + 1, true).await.deploys_pruned, 0);
    let (s, v) = h.call("PUT", "/api/v1/sites/docs/retention", json!({"keep_deploys": 1})).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"keep_deploys": 1})));
    let (_, v) = h.call("GET", "/api/v1/sites/docs/retention", Value::Null).await;
    assert_eq!(v, json!({"keep_deploys": 1}));

    // Kept: the uploading one, the newest complete (ids[4], also the one
    // rollback reaches at depth 1), the active (ids[1]). Pruned: 3, 2, 0.
    let t0 = now_millis() + 1;
    let dry = h.gc(t0, true).await;
    let want = vec![ids[3].clone(), ids[2].clone(), ids[0].clone()];
    assert_eq!(dry.pruned.len(), 1, "{dry:?}");
    assert_eq!((dry.pruned[0].site.as_str(), dry.pruned[0].branch.as_str()), ("docs", "main"));
    assert_eq!(dry.pruned[0].deploys, want);
    assert_eq!(dry.blobs_deleted, 0, "within the grace nothing goes, even in a dry run");
    // Their pages and manifests would wait out the grace.
    assert_eq!(dry.blobs_waiting, 6, "{dry:?}");
    let (_, listed) = h.call("GET", "/api/v1/sites/docs/deploys", Value::Null).await;
    assert_eq!(listed.as_array().unwrap().len(), 6, "a dry run prunes nothing");

    let real = h.gc(t0, false).await;
    assert_eq!((real.pruned.clone(), real.deploys_pruned), (dry.pruned.clone(), 3));
    assert_eq!(real.blobs_waiting, dry.blobs_waiting);
    let (_, listed) = h.call("GET", "/api/v1/sites/docs/deploys", Value::Null).await;
    let listed: Vec<&str> = listed.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![uploading.as_str(), ids[4].as_str(), ids[1].as_str()]);
    for gone in &want {
        let (s, _) = h.call("GET", &format!("/api/v1/deploys/{gone}"), Value::Null).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(h.last_table().permalinks().all(|p| p.deploy.as_str() != gone), "permalink of {gone} is gone");
    }
    assert!(has(&*stores.blobs, b"page one").await, "its blobs wait out the grace");

    // Rollback reaches what the depth promised (ids[4], live before the
    // publish of ids[1]); the walk goes on to what was live before that
    // (ids[3]), which was pruned, so it stops there, never at a pruned one.
    let (s, v) = h.call("POST", "/api/v1/sites/docs/rollback", Value::Null).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deploy"]["id"], ids[4]);
    let (s, v) = h.call("POST", "/api/v1/sites/docs/rollback", Value::Null).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // After the grace: the pruned deploys' own blobs go; shared ones stay.
    // This pass also prunes ids[1]: after the rollback to ids[4] it is
    // neither active nor on the rollback walk (publish brings such a deploy
    // back; rollback only walks to what was live before).
    let r = h.gc(t0 + HOUR, false).await;
    assert_eq!(r.pruned.iter().flat_map(|p| p.deploys.clone()).collect::<Vec<_>>(), vec![ids[1].clone()], "{r:?}");
    assert_eq!(r.blobs_deleted, 6, "{r:?}");
    for page in [&PAGES[0], &PAGES[2], &PAGES[3]] {
        assert!(!has(&*stores.blobs, page).await);
    }
    for page in [PAGES[1], PAGES[4], b"<svg/>".as_slice()] {
        assert!(has(&*stores.blobs, page).await);
    }
    let totals = &h.control.gc_state;
    assert_eq!(totals.deploys_pruned.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[tokio::test]
async fn retention_prunes_only_what_nothing_needs_on_sqlite_and_local() {
    retention_prunes_only_what_nothing_needs(Backend::SqliteLocal).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL (run with --run-ignored all, or scripts/test)"]
async fn retention_prunes_only_what_nothing_needs_on_postgres_and_s3() {
    retention_prunes_only_what_nothing_needs(Backend::PostgresS3).await;
}

/// Hostile input to the retention setting and the gc endpoint: refused with
/// the field named, nothing changed; no token or a wrong one is 401.
#[tokio::test]
async fn hostile_input_is_refused_and_changes_nothing() {
    let stores = Stores::new(Backend::SqliteLocal).await;
    let h = Harness::on(stores.meta.clone(), stores.blobs.clone(), config(Duration::ZERO, 10)).await;
    h.site("docs").await;
    h.call("PUT", "/api/v1/sites/docs/retention", json!({"keep_deploys": 3})).await;
    for (body, status, field) in [
        (json!({"keep_deploys": -1}), StatusCode::UNPROCESSABLE_ENTITY, "keep_deploys"),
        (json!({"keep_deploys": 1e12}), StatusCode::UNPROCESSABLE_ENTITY, "keep_deploys"),
        (json!({"keep_deploys": 99999999999u64}), StatusCode::UNPROCESSABLE_ENTITY, "keep_deploys"),
        (json!({"keep_deploys": 10001}), StatusCode::BAD_REQUEST, "keep_deploys"),
        (json!({"keep_deploys": "5"}), StatusCode::UNPROCESSABLE_ENTITY, "keep_deploys"),
        (json!({"keep_deploys": null}), StatusCode::UNPROCESSABLE_ENTITY, "keep_deploys"),
        (json!({"keep_deploys": 2, "keep_all": true}), StatusCode::UNPROCESSABLE_ENTITY, ""),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, ""),
        (json!("keep"), StatusCode::UNPROCESSABLE_ENTITY, ""),
    ] {
        let (s, v) = h.call("PUT", "/api/v1/sites/docs/retention", body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], field, "{body}: {v}");
        }
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let (s, v) = h.raw("PUT", "/api/v1/sites/docs/retention", Some(&h.token), Body::from("{\"keep_deploys\": 2")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, v) = h.call("GET", "/api/v1/sites/docs/retention", Value::Null).await;
    assert_eq!(v, json!({"keep_deploys": 3}), "bad input changed nothing");
    let (s, _) = h.call("PUT", "/api/v1/sites/nope/retention", json!({"keep_deploys": 1})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.call("PUT", "/api/v1/sites/..%2f/retention", json!({"keep_deploys": 1})).await;
    assert!(s.is_client_error());

    // An unreferenced blob, to see that refused runs delete nothing.
    let (wip, required) = h.create("docs", &[("a.html", b"orphan")], false).await;
    h.upload_required(&wip, &[("a.html", b"orphan")], &required).await;
    h.control.expire_uploads(now_millis() + 2 * HOUR).await.unwrap();
    for (body, status) in [
        (Body::from(r#"{"dry_run": "yes"}"#), StatusCode::UNPROCESSABLE_ENTITY),
        (Body::from(r#"{"dry_run": 0}"#), StatusCode::UNPROCESSABLE_ENTITY),
        (Body::from(r#"{"dry_run": null}"#), StatusCode::UNPROCESSABLE_ENTITY),
        (Body::from(r#"{}"#), StatusCode::UNPROCESSABLE_ENTITY),
        (Body::from(r#"{"dry_run": false, "force": true}"#), StatusCode::UNPROCESSABLE_ENTITY),
        (Body::from(r#"{"dry_run": fal"#), StatusCode::BAD_REQUEST),
        (Body::empty(), StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = h.raw("POST", "/api/v1/gc", Some(&h.token), body).await;
        assert_eq!(s, status, "{v}");
    }
    let (s, v) = h.raw("POST", "/api/v1/gc", Some(&h.token), Body::from(r#"{"dry_run": "yes"}"#)).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("dry_run")));
    for token in [None, Some("chanto_not_a_token"), Some("")] {
        let (s, _) = h.raw("POST", "/api/v1/gc", token, Body::from(r#"{"dry_run": false}"#)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = h.raw("PUT", "/api/v1/sites/docs/retention", token, Body::from(r#"{"keep_deploys": 0}"#)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert!(has(&*stores.blobs, b"orphan").await, "no refused call deleted anything");
    let (s, v) = h.call("POST", "/api/v1/gc", json!({"dry_run": false})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["blobs_deleted"], 1);
    assert!(!has(&*stores.blobs, b"orphan").await);

    // The OpenAPI document describes both.
    let (_, doc) = h.raw("GET", "/api/v1/openapi.json", None, Body::empty()).await;
    assert!(doc["paths"]["/api/v1/gc"]["post"].is_object());
    assert!(doc["paths"]["/api/v1/sites/{site}/retention"]["put"].is_object());
    assert!(doc["components"]["schemas"]["GcReport"].is_object());
}

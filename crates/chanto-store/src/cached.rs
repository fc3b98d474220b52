//! A bounded local disk cache of blobs in front of a remote store, so a node
//! serves its hot sites from its own disk (with `sendfile`) even when the
//! object store is slow or down.
//!
//! Files live at `DIR/ab/cdef…`. A blob read through the cache is streamed
//! from the remote store into a temporary file `DIR/ab/.tmp-…`, hashed as it
//! arrives, flushed, and renamed into place only if its size and hash match,
//! so a file in the cache is always a whole, verified blob (a crash leaves at
//! most a temporary file, removed on the next open). The cache holds at most
//! its capacity in bytes and evicts the least recently used blobs first; a
//! blob larger than an eighth of the capacity is streamed through uncached.
//! Writes go through to the remote store only: the cache fills on reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chanto_core::ContentHash;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::{BlobInfo, BlobStore, ByteStream, OpenBlob, StoreError};

/// Temporary files start with this (no blob name does).
const TMP_PREFIX: &str = ".tmp-";

/// Which blobs the cache holds, their sizes, and their order of last use.
/// Blobs of the deploys being served (`active`) have an order of their own
/// and are evicted only once no other blob is left.
#[derive(Default)]
struct Lru {
    entries: HashMap<ContentHash, (u64, u64)>,
    /// Blobs not in `active`, by last use.
    order: BTreeMap<u64, ContentHash>,
    /// Blobs in `active`, by last use.
    active_order: BTreeMap<u64, ContentHash>,
    active: HashSet<ContentHash>,
    tick: u64,
    total: u64,
}

impl Lru {
    fn order_for(&mut self, hash: &ContentHash) -> &mut BTreeMap<u64, ContentHash> {
        if self.active.contains(hash) { &mut self.active_order } else { &mut self.order }
    }

    /// Marks `hash` used now; false if it is not held.
    fn touch(&mut self, hash: &ContentHash) -> bool {
        let Some(&(size, tick)) = self.entries.get(hash) else { return false };
        self.tick += 1;
        let now = self.tick;
        let order = self.order_for(hash);
        order.remove(&tick);
        order.insert(now, *hash);
        self.entries.insert(*hash, (size, now));
        true
    }

    /// Adds (or refreshes) `hash`, then returns the blobs to evict so the
    /// total fits `capacity`: the least recently used first, those of
    /// active deploys last.
    fn insert(&mut self, hash: ContentHash, size: u64, capacity: u64) -> Vec<ContentHash> {
        self.remove(&hash);
        self.tick += 1;
        let now = self.tick;
        self.entries.insert(hash, (size, now));
        self.order_for(&hash).insert(now, hash);
        self.total += size;
        let mut evicted = Vec::new();
        while self.total > capacity {
            let Some((_, oldest)) = self.order.pop_first().or_else(|| self.active_order.pop_first()) else { break };
            if let Some((size, _)) = self.entries.remove(&oldest) {
                self.total -= size;
            }
            evicted.push(oldest);
        }
        evicted
    }

    fn remove(&mut self, hash: &ContentHash) {
        if let Some((size, tick)) = self.entries.remove(hash) {
            self.order_for(hash).remove(&tick);
            self.total -= size;
        }
    }

    /// Makes `active` the set evicted last.
    fn set_active(&mut self, active: HashSet<ContentHash>) {
        for (hash, &(_, tick)) in &self.entries {
            match (self.active.contains(hash), active.contains(hash)) {
                (false, true) => {
                    self.order.remove(&tick);
                    self.active_order.insert(tick, *hash);
                }
                (true, false) => {
                    self.active_order.remove(&tick);
                    self.order.insert(tick, *hash);
                }
                _ => {}
            }
        }
        self.active = active;
    }

    /// Adds `added` to the set evicted last and takes `removed` out of it.
    fn change_active(&mut self, added: &[ContentHash], removed: &[ContentHash]) {
        for hash in removed {
            if self.active.remove(hash)
                && let Some(&(_, tick)) = self.entries.get(hash)
            {
                self.active_order.remove(&tick);
                self.order.insert(tick, *hash);
            }
        }
        for hash in added {
            if self.active.insert(*hash)
                && let Some(&(_, tick)) = self.entries.get(hash)
            {
                self.order.remove(&tick);
                self.active_order.insert(tick, *hash);
            }
        }
    }
}

/// A blob from [`CachedBlobStore::fetch`]: a verified file in the cache, or
/// (too large to cache) the remote store's stream.
enum Fetched {
    Cached(std::fs::File),
    Passthrough(OpenBlob),
}

/// A [`BlobStore`] that keeps a bounded, least-recently-used disk cache of the
/// blobs read from `inner` (see the module docs).
pub struct CachedBlobStore<S> {
    inner: S,
    dir: PathBuf,
    capacity: u64,
    /// Larger blobs are not cached (one would push out many hot small ones).
    max_entry: u64,
    lru: Mutex<Lru>,
    /// One fill per blob at a time: concurrent readers of an uncached blob
    /// wait for the first one's download instead of each starting their own.
    filling: Mutex<HashMap<ContentHash, Arc<tokio::sync::Mutex<()>>>>,
    counters: Counters,
    probe: crate::health::ProbeCache,
}

/// The cache's counters for `/metrics`.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    /// Blobs too large to cache, streamed through.
    passthrough: AtomicU64,
    /// Fills that failed (the remote store, or the cache's own disk).
    fill_errors: AtomicU64,
}

impl<S: BlobStore> CachedBlobStore<S> {
    /// Opens (creating if needed) a cache of at most `capacity` bytes in
    /// `dir` in front of `inner`: removes temporary files a crash left, keeps
    /// the blobs already there (least recently written evicted first) up to
    /// the capacity.
    pub fn open(inner: S, dir: impl Into<PathBuf>, capacity: u64) -> Result<Self, StoreError> {
        let dir = dir.into();
        let ctx = |e| StoreError::io(format!("opening the blob cache {}", dir.display()), e);
        std::fs::create_dir_all(&dir).map_err(ctx)?;
        let mut found: Vec<(std::time::SystemTime, ContentHash, u64)> = Vec::new();
        for shard in std::fs::read_dir(&dir).map_err(ctx)? {
            let shard = shard.map_err(ctx)?;
            let prefix = shard.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !shard.file_type().map_err(ctx)?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(shard.path()).map_err(ctx)? {
                let file = file.map_err(ctx)?;
                let name = file.file_name().to_string_lossy().into_owned();
                match format!("{prefix}{name}").parse::<ContentHash>() {
                    Ok(hash) if !name.starts_with(TMP_PREFIX) => {
                        let meta = file.metadata().map_err(ctx)?;
                        found.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), hash, meta.len()));
                    }
                    // A download a crash interrupted, or a stray file.
                    _ => std::fs::remove_file(file.path()).map_err(ctx)?,
                }
            }
        }
        found.sort();
        let store = Self {
            inner,
            dir,
            capacity,
            max_entry: (capacity / 8).max(1),
            lru: Mutex::default(),
            filling: Mutex::default(),
            counters: Counters::default(),
            probe: crate::health::ProbeCache::default(),
        };
        for (_, hash, size) in found {
            let evicted = store.lru.lock().expect("cache index").insert(hash, size, capacity);
            store.remove_files(&evicted);
        }
        Ok(store)
    }

    /// The remote store behind the cache.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Bytes the cache holds now.
    pub fn cached_bytes(&self) -> u64 {
        self.lru.lock().expect("cache index").total
    }

    /// Names the blobs of the deploys being served: the cache evicts them
    /// only when nothing else is left to evict (an edge node calls this with
    /// every file of its active branches after each routing change).
    pub fn set_active(&self, active: HashSet<ContentHash>) {
        self.lru.lock().expect("cache index").set_active(active);
    }

    /// Changes the set [`Self::set_active`] made by what one routing change
    /// added and removed (the cost grows with the change, not the cache).
    pub fn change_active(&self, added: &[ContentHash], removed: &[ContentHash]) {
        self.lru.lock().expect("cache index").change_active(added, removed);
    }

    /// Whether `hash` is in the cache (without marking it used).
    pub fn is_cached(&self, hash: &ContentHash) -> bool {
        self.lru.lock().expect("cache index").entries.contains_key(hash)
    }

    /// The cache file of `hash`.
    pub fn path_of(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    fn remove_files(&self, evicted: &[ContentHash]) {
        self.counters.evictions.fetch_add(evicted.len() as u64, Ordering::Relaxed);
        for h in evicted {
            // A reader holding the file open keeps reading it: unlinking
            // only drops the name.
            if let Err(e) = std::fs::remove_file(self.path_of(h))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(blob = %h, error = %e, "could not evict a cached blob");
            }
        }
    }

    /// The cached file of `hash`, marked used; `None` if not cached (or its
    /// file vanished behind the cache's back, which is then forgotten).
    fn hit(&self, hash: &ContentHash) -> Option<std::fs::File> {
        if !self.lru.lock().expect("cache index").touch(hash) {
            return None;
        }
        match std::fs::File::open(self.path_of(hash)) {
            Ok(f) => Some(f),
            Err(_) => {
                self.lru.lock().expect("cache index").remove(hash);
                None
            }
        }
    }

    /// The blob from the cache, or fetched from the remote store into it.
    async fn fetch(&self, hash: &ContentHash) -> Result<Fetched, StoreError> {
        if let Some(f) = self.hit(hash) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Fetched::Cached(f));
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let gate = self.filling.lock().expect("fill gates").entry(*hash).or_default().clone();
        let result = {
            let _one_fill = gate.lock().await;
            match self.hit(hash) {
                Some(f) => Ok(Fetched::Cached(f)),
                None => self.fill(hash).await,
            }
        };
        let mut gates = self.filling.lock().expect("fill gates");
        // Ours and the map's: no one else waits on this gate.
        if Arc::strong_count(&gate) <= 2 {
            gates.remove(hash);
        }
        result
    }

    /// Downloads `hash` into a temporary file, verifies it, renames it into
    /// place and records it; streams it through instead when too large.
    async fn fill(&self, hash: &ContentHash) -> Result<Fetched, StoreError> {
        let open = self.inner.open(hash).await.inspect_err(|_| {
            self.counters.fill_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        if open.len > self.max_entry {
            self.counters.passthrough.fetch_add(1, Ordering::Relaxed);
            return Ok(Fetched::Passthrough(open));
        }
        let path = self.path_of(hash);
        let shard = path.parent().expect("a cache file has a shard folder").to_owned();
        let r: [u8; 8] = crate::random_bytes();
        let tmp = shard.join(format!("{TMP_PREFIX}{:016x}", u64::from_le_bytes(r)));
        let result = self.download(hash, open, &shard, &tmp, &path).await;
        if result.is_err() {
            self.counters.fill_errors.fetch_add(1, Ordering::Relaxed);
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        let (file, len) = result?;
        let evicted = self.lru.lock().expect("cache index").insert(*hash, len, self.capacity);
        self.remove_files(&evicted);
        Ok(Fetched::Cached(file))
    }

    async fn download(
        &self,
        hash: &ContentHash,
        mut open: OpenBlob,
        shard: &Path,
        tmp: &Path,
        path: &Path,
    ) -> Result<(std::fs::File, u64), StoreError> {
        let ctx = || format!("caching blob {hash} in {}", self.dir.display());
        tokio::fs::create_dir_all(shard).await.map_err(|e| StoreError::io(ctx(), e))?;
        let mut file = tokio::fs::File::create(tmp).await.map_err(|e| StoreError::io(ctx(), e))?;
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        while let Some(chunk) = open.body.next().await {
            let chunk = chunk.map_err(|e| StoreError::io(format!("reading blob {hash} from the remote store"), e))?;
            len += chunk.len() as u64;
            if len > open.len {
                break;
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| StoreError::io(ctx(), e))?;
        }
        let actual = ContentHash::from_blake3(hasher.finalize());
        if len != open.len || actual != *hash {
            return Err(StoreError::io(
                format!("reading blob {hash} from the remote store"),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{len} bytes hashing to {actual} arrived, of {} announced: the object is damaged",
                        open.len
                    ),
                ),
            ));
        }
        // Flushed before the rename: after a power cut a cache file is whole or absent.
        file.sync_data().await.map_err(|e| StoreError::io(ctx(), e))?;
        drop(file);
        let reader = std::fs::File::open(tmp).map_err(|e| StoreError::io(ctx(), e))?;
        tokio::fs::rename(tmp, path).await.map_err(|e| StoreError::io(ctx(), e))?;
        Ok((reader, len))
    }
}

/// Reads a whole file off the async threads.
async fn read_file(file: std::fs::File, hash: ContentHash) -> Result<Bytes, StoreError> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut out).map(|_| Bytes::from(out))
    })
    .await
    .map_err(|e| StoreError::io(format!("reading cached blob {hash}"), std::io::Error::other(e)))?
    .map_err(|e| StoreError::io(format!("reading cached blob {hash}"), e))
}

async fn collect(mut body: ByteStream, hash: &ContentHash) -> Result<Bytes, StoreError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.map_err(|e| StoreError::io(format!("reading blob {hash}"), e))?);
    }
    Ok(Bytes::from(out))
}

#[async_trait]
impl<S: BlobStore> BlobStore for CachedBlobStore<S> {
    async fn has(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        if self.is_cached(hash) {
            return Ok(true);
        }
        self.inner.has(hash).await
    }

    async fn missing(&self, hashes: &[ContentHash]) -> Result<Vec<ContentHash>, StoreError> {
        // The remote store is asked about every blob, cached or not: a copy
        // in this node's cache proves nothing about the shared store, where
        // another node's garbage collection may have deleted the blob, and
        // a deploy told "no need to upload" would go live without it there.
        self.inner.missing(hashes).await
    }

    async fn put(&self, hash: &ContentHash, body: ByteStream, max_size: u64) -> Result<u64, StoreError> {
        self.inner.put(hash, body, max_size).await
    }

    async fn get(&self, hash: &ContentHash) -> Result<Bytes, StoreError> {
        match self.fetch(hash).await? {
            Fetched::Cached(f) => read_file(f, *hash).await,
            Fetched::Passthrough(open) => collect(open.body, hash).await,
        }
    }

    async fn open(&self, hash: &ContentHash) -> Result<OpenBlob, StoreError> {
        match self.fetch(hash).await? {
            Fetched::Cached(f) => {
                let len = f.metadata().map_err(|e| StoreError::io(format!("opening cached blob {hash}"), e))?.len();
                let body = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 64 * 1024);
                Ok(OpenBlob { len, body: Box::pin(body) })
            }
            Fetched::Passthrough(open) => Ok(open),
        }
    }

    async fn open_range(&self, hash: &ContentHash, start: u64, len: u64) -> Result<ByteStream, StoreError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        match self.fetch(hash).await? {
            Fetched::Cached(f) => {
                let mut file = tokio::fs::File::from_std(f);
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|e| StoreError::io(format!("reading cached blob {hash}"), e))?;
                Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024)))
            }
            Fetched::Passthrough(open) => {
                drop(open);
                self.inner.open_range(hash, start, len).await
            }
        }
    }

    /// The cached file (fetched into the cache first if need be), so the
    /// edge sends it with `sendfile`; `None` for a blob too large to cache.
    async fn local_file(&self, hash: &ContentHash) -> Result<Option<std::fs::File>, StoreError> {
        match self.fetch(hash).await? {
            Fetched::Cached(f) => Ok(Some(f)),
            Fetched::Passthrough(_) => Ok(None),
        }
    }

    async fn delete(&self, hash: &ContentHash) -> Result<(), StoreError> {
        self.lru.lock().expect("cache index").remove(hash);
        self.remove_files(std::slice::from_ref(hash));
        self.inner.delete(hash).await
    }

    async fn list(&self) -> Result<Vec<ContentHash>, StoreError> {
        self.inner.list().await
    }

    /// The remote store's blobs: the cache holds copies, not blobs of its own.
    async fn list_sizes(&self) -> Result<Vec<BlobInfo>, StoreError> {
        self.inner.list_sizes().await
    }

    fn write_back(&self) {
        self.inner.write_back();
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync().await
    }

    /// The remote store's checks, then the cache's: its directory takes
    /// files, and how full it is. A cache that cannot be written is
    /// `degraded`: what it holds is served, what it lacks is not.
    async fn health(&self) -> Vec<crate::health::Check> {
        use crate::health::{Check, LOW_SPACE, State, bytes, probe_dir};
        let cache = async {
            let backend = format!("disk {}", self.dir.display());
            let fill = format!("{} of {} used", bytes(self.cached_bytes()), bytes(self.capacity));
            match probe_dir(&self.dir).await {
                Ok(free) if free < LOW_SPACE => Check::new(
                    "blob-cache",
                    backend,
                    State::Degraded,
                    format!("{fill}; only {} free on its disk: blobs not yet cached cannot be fetched", bytes(free)),
                ),
                Ok(_) => Check::new("blob-cache", backend, State::Up, format!("writable, {fill}")),
                Err(e) => Check::new(
                    "blob-cache",
                    backend,
                    State::Degraded,
                    format!("{e}; {fill}: only cached blobs are served"),
                ),
            }
        };
        let timed_out = || {
            let backend = format!("disk {}", self.dir.display());
            let why = format!("no answer from its disk within {} s", crate::health::PROBE_TIMEOUT.as_secs());
            Check::new("blob-cache", backend, State::Degraded, why)
        };
        let (mut checks, cache) = futures_util::join!(self.inner.health(), self.probe.get(cache, timed_out));
        checks.push(cache);
        checks
    }

    fn render_metrics(&self, out: &mut String) {
        use crate::health::header;
        use std::fmt::Write;
        self.inner.render_metrics(out);
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counters = [
            ("chanto_blob_cache_hits_total", "Blob reads answered from the disk cache.", get(&c.hits)),
            (
                "chanto_blob_cache_misses_total",
                "Blob reads the disk cache had to fetch from the object store.",
                get(&c.misses),
            ),
            (
                "chanto_blob_cache_evictions_total",
                "Blobs evicted from the disk cache to stay within its limit.",
                get(&c.evictions),
            ),
            (
                "chanto_blob_cache_passthrough_total",
                "Blobs too large to cache, streamed from the object store.",
                get(&c.passthrough),
            ),
            (
                "chanto_blob_cache_fill_errors_total",
                "Fetches into the disk cache that failed (object store or disk).",
                get(&c.fill_errors),
            ),
        ];
        for (name, help, v) in counters {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {v}");
        }
        header(out, "chanto_blob_cache_bytes", "gauge", "Bytes of blobs the disk cache holds.");
        let _ = writeln!(out, "chanto_blob_cache_bytes {}", self.cached_bytes());
        header(out, "chanto_blob_cache_limit_bytes", "gauge", "The disk cache's size limit (--blob-cache-size).");
        let _ = writeln!(out, "chanto_blob_cache_limit_bytes {}", self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> ContentHash {
        ContentHash::of(&[n])
    }

    #[test]
    fn the_least_recently_used_go_first() {
        let mut lru = Lru::default();
        assert!(lru.insert(h(1), 40, 100).is_empty());
        assert!(lru.insert(h(2), 40, 100).is_empty());
        assert!(lru.touch(&h(1)));
        // 1 was used after 2: 2 goes.
        assert_eq!(lru.insert(h(3), 40, 100), vec![h(2)]);
        assert_eq!(lru.total, 80);
        assert!(!lru.touch(&h(2)));
        // Re-inserting counts a blob once.
        assert!(lru.insert(h(3), 40, 100).is_empty());
        assert_eq!(lru.total, 80);
        lru.remove(&h(1));
        assert_eq!(lru.total, 40);
    }

    #[test]
    fn blobs_of_active_deploys_go_last() {
        let mut lru = Lru::default();
        for n in 1..=3 {
            assert!(lru.insert(h(n), 30, 100).is_empty());
        }
        // 1 is the oldest, but an active deploy holds it.
        lru.set_active([h(1)].into());
        assert_eq!(lru.insert(h(4), 30, 100), vec![h(2)]);
        assert!(lru.touch(&h(1)));
        assert_eq!(lru.insert(h(5), 30, 100), vec![h(3)]);
        // Only active blobs left to evict: the oldest of them goes.
        lru.set_active([h(1), h(4), h(5), h(6)].into());
        assert_eq!(lru.insert(h(6), 30, 100), vec![h(4)]);
        // A blob no active deploy holds goes before any that one does.
        assert_eq!(lru.insert(h(8), 30, 100), vec![h(8)]);
        // No longer active: back in the common order, by its last use.
        lru.set_active(HashSet::new());
        assert_eq!(lru.insert(h(7), 30, 100), vec![h(1)]);
        assert_eq!(lru.total, 90);
        assert_eq!(lru.order.len() + lru.active_order.len(), lru.entries.len());
    }

    #[test]
    fn a_change_to_the_active_set_moves_only_its_blobs() {
        let mut lru = Lru::default();
        for n in 1..=3 {
            assert!(lru.insert(h(n), 30, 100).is_empty());
        }
        lru.change_active(&[h(1), h(9)], &[]);
        assert_eq!(lru.insert(h(4), 30, 100), vec![h(2)]);
        // 1 no longer active, 3 now is: 1 (the oldest) goes next.
        lru.change_active(&[h(3)], &[h(1), h(9)]);
        assert_eq!(lru.insert(h(5), 30, 100), vec![h(1)]);
        assert_eq!(lru.active, [h(3)].into());
        assert_eq!(lru.order.len() + lru.active_order.len(), lru.entries.len());
    }
}

//! The blob store: file bytes named by their content hash. Blobs are immutable;
//! a blob is written whole or not at all, and only under the hash of its bytes.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chanto_core::ContentHash;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::io::AsyncWriteExt;

use crate::StoreError;

/// A stream of body chunks, as an upload arrives or a blob is read.
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A blob opened for reading.
pub struct OpenBlob {
    /// Its size in bytes.
    pub len: u64,
    /// Its bytes.
    pub body: ByteStream,
}

/// Where blobs live. Every backend passes [`crate::conformance::blob_store`].
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Whether the blob is stored.
    async fn has(&self, hash: &ContentHash) -> Result<bool, StoreError>;

    /// Of `hashes`, the ones the store lacks, in the order given.
    async fn missing(&self, hashes: &[ContentHash]) -> Result<Vec<ContentHash>, StoreError> {
        let mut out = Vec::new();
        for h in hashes {
            if !self.has(h).await? {
                out.push(*h);
            }
        }
        Ok(out)
    }

    /// Stores `body` under `hash`, verifying that the bytes hash to it and that
    /// there are at most `max_size` of them. On any error nothing is stored.
    /// Returns the size written.
    async fn put(&self, hash: &ContentHash, body: ByteStream, max_size: u64) -> Result<u64, StoreError>;

    /// Stores bytes already in memory (a manifest, a compressed variant).
    async fn put_bytes(&self, bytes: Bytes) -> Result<ContentHash, StoreError> {
        let hash = ContentHash::of(&bytes);
        let len = bytes.len() as u64;
        let body: ByteStream = Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
        self.put(&hash, body, len).await?;
        Ok(hash)
    }

    /// Reads a whole blob into memory.
    async fn get(&self, hash: &ContentHash) -> Result<Bytes, StoreError>;

    /// Opens a blob for streaming.
    async fn open(&self, hash: &ContentHash) -> Result<OpenBlob, StoreError>;

    /// Opens `len` bytes of a blob starting at `start` (the caller checked
    /// the bounds against the manifest). Backends override this to seek.
    async fn open_range(&self, hash: &ContentHash, start: u64, len: u64) -> Result<ByteStream, StoreError> {
        let open = self.open(hash).await?;
        let mut skip = start;
        let mut left = len;
        let body = open.body.filter_map(move |chunk| {
            let out = match chunk {
                Err(e) => Some(Err(e)),
                Ok(mut c) => {
                    let drop_n = skip.min(c.len() as u64) as usize;
                    skip -= drop_n as u64;
                    let _ = c.split_to(drop_n);
                    let keep = left.min(c.len() as u64) as usize;
                    left -= keep as u64;
                    c.truncate(keep);
                    (!c.is_empty()).then_some(Ok(c))
                }
            };
            std::future::ready(out)
        });
        Ok(Box::pin(body))
    }

    /// Deletes a blob; deleting a missing blob is not an error.
    async fn delete(&self, hash: &ContentHash) -> Result<(), StoreError>;

    /// Every stored blob's hash (for garbage collection and checks).
    async fn list(&self) -> Result<Vec<ContentHash>, StoreError>;
}

/// Blobs as files in a local directory: `ROOT/ab/cdef…` (the first two hex
/// digits fan out into 256 folders). Writes go to `ROOT/.tmp/` and are renamed
/// into place once verified and synced, so a reader never sees a partial blob.
pub struct LocalBlobStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl LocalBlobStore {
    /// Opens (creating if needed) a store rooted at `root`, and removes
    /// temporary files that a crash left behind.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let tmp = root.join(".tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self { root, tmp })
    }

    /// The file that holds `hash`.
    pub fn path_of(&self, hash: &ContentHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    fn tmp_path(&self) -> PathBuf {
        let r: [u8; 8] = crate::random_bytes();
        self.tmp.join(format!("{:016x}", u64::from_le_bytes(r)))
    }

    async fn write_verified(
        &self,
        tmp: &Path,
        hash: &ContentHash,
        mut body: ByteStream,
        max_size: u64,
    ) -> Result<u64, StoreError> {
        let ctx = || format!("writing blob {hash}");
        let mut file = tokio::fs::File::create(tmp).await.map_err(|e| StoreError::io(ctx(), e))?;
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::io(format!("receiving blob {hash}"), e))?;
            len += chunk.len() as u64;
            if len > max_size {
                return Err(StoreError::TooLarge { limit: max_size });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| StoreError::io(ctx(), e))?;
        }
        let actual = ContentHash::from_blake3(hasher.finalize());
        if actual != *hash {
            return Err(StoreError::HashMismatch { expected: *hash, actual });
        }
        file.sync_data().await.map_err(|e| StoreError::io(ctx(), e))?;
        drop(file);
        let dest = self.path_of(hash);
        let dir = dest.parent().expect("blob paths have a parent");
        tokio::fs::create_dir_all(dir).await.map_err(|e| StoreError::io(ctx(), e))?;
        tokio::fs::rename(tmp, &dest).await.map_err(|e| StoreError::io(ctx(), e))?;
        Ok(len)
    }
}

fn not_found(hash: &ContentHash) -> StoreError {
    StoreError::NotFound(format!("blob {hash}"))
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn has(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        match tokio::fs::metadata(self.path_of(hash)).await {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io(format!("checking blob {hash}"), e)),
        }
    }

    async fn missing(&self, hashes: &[ContentHash]) -> Result<Vec<ContentHash>, StoreError> {
        let paths: Vec<(ContentHash, PathBuf)> = hashes.iter().map(|h| (*h, self.path_of(h))).collect();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (h, p) in paths {
                match std::fs::metadata(&p) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => out.push(h),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(h),
                    Err(e) => return Err(StoreError::io(format!("checking blob {h}"), e)),
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Db(format!("blob check task failed: {e}")))?
    }

    async fn put(&self, hash: &ContentHash, body: ByteStream, max_size: u64) -> Result<u64, StoreError> {
        let tmp = self.tmp_path();
        let result = self.write_verified(&tmp, hash, body, max_size).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn get(&self, hash: &ContentHash) -> Result<Bytes, StoreError> {
        match tokio::fs::read(self.path_of(hash)).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found(hash)),
            Err(e) => Err(StoreError::io(format!("reading blob {hash}"), e)),
        }
    }

    async fn open(&self, hash: &ContentHash) -> Result<OpenBlob, StoreError> {
        let file = match tokio::fs::File::open(self.path_of(hash)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(hash)),
            Err(e) => return Err(StoreError::io(format!("opening blob {hash}"), e)),
        };
        let len = file.metadata().await.map_err(|e| StoreError::io(format!("opening blob {hash}"), e))?.len();
        let body = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
        Ok(OpenBlob { len, body: Box::pin(body) })
    }

    async fn open_range(&self, hash: &ContentHash, start: u64, len: u64) -> Result<ByteStream, StoreError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = match tokio::fs::File::open(self.path_of(hash)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(hash)),
            Err(e) => return Err(StoreError::io(format!("opening blob {hash}"), e)),
        };
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| StoreError::io(format!("reading blob {hash}"), e))?;
        let body = tokio_util::io::ReaderStream::with_capacity(file.take(len), 64 * 1024);
        Ok(Box::pin(body))
    }

    async fn delete(&self, hash: &ContentHash) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path_of(hash)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("deleting blob {hash}"), e)),
        }
    }

    async fn list(&self) -> Result<Vec<ContentHash>, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let ctx = |e| StoreError::io(format!("listing {}", root.display()), e);
            for dir in std::fs::read_dir(&root).map_err(ctx)? {
                let dir = dir.map_err(ctx)?;
                let prefix = dir.file_name().to_string_lossy().into_owned();
                if prefix.len() != 2 || !dir.path().is_dir() {
                    continue;
                }
                for file in std::fs::read_dir(dir.path()).map_err(ctx)? {
                    let name = file.map_err(ctx)?.file_name();
                    if let Ok(h) = format!("{prefix}{}", name.to_string_lossy()).parse() {
                        out.push(h);
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Db(format!("blob list task failed: {e}")))?
    }
}

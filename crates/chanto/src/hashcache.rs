//! A cache of file hashes between deploys of the same directory, keyed by
//! path, size, modification and status-change times, and inode (git's index
//! works the same way; ctime catches tools that reset mtime, such as
//! reproducible builds),
//! so a redeploy hashes only files that changed. Entries whose modification
//! time is too close to when the cache was written are not trusted ("racy"
//! entries: the file could have changed again within the clock's resolution).
//! The server verifies every uploaded blob against its hash, so a wrong entry
//! can at worst make a deploy fail, never store wrong bytes under a name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chanto_core::ContentHash;
use serde::{Deserialize, Serialize};

use chanto_control::walk::LocalFile;

/// Entries modified this close (ns) to the cache's writing are rehashed.
const RACY_NS: i128 = 2_000_000_000;

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    version: u32,
    written_ns: i128,
    entries: HashMap<String, Entry>,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
struct Entry {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: (u64, u64),
    hash: ContentHash,
}

/// The hashes known for one deployed directory.
pub struct HashCache {
    path: Option<PathBuf>,
    old: CacheFile,
    new: HashMap<String, Entry>,
}

fn cache_root() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHANTO_CACHE_DIR") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("chanto"))
}

fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

impl HashCache {
    /// Loads the cache of `dir` (an unreadable or missing cache is empty).
    /// `enabled: false` gives a cache that knows nothing and saves nothing.
    pub fn load(dir: &Path, enabled: bool) -> Self {
        let path = enabled
            .then(|| {
                let canon = dir.canonicalize().ok()?;
                let key = blake3::hash(canon.as_os_str().as_encoded_bytes()).to_hex();
                Some(cache_root()?.join("hashes").join(format!("{}.json", &key[..32])))
            })
            .flatten();
        let old = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|c| c.version == 1)
            .unwrap_or_default();
        Self { path, old, new: HashMap::new() }
    }

    /// The cached hash of `f`, if its size, mtime and inode are unchanged and
    /// the entry is not racy.
    pub fn get(&self, f: &LocalFile) -> Option<ContentHash> {
        let e = self.old.entries.get(&f.path)?;
        let fresh = e.size == f.size && e.mtime_ns == f.mtime_ns && e.ctime_ns == f.ctime_ns && e.ino == f.ino;
        let racy = f.mtime_ns.max(f.ctime_ns) >= self.old.written_ns - RACY_NS;
        (fresh && !racy).then_some(e.hash)
    }

    /// Records the hash of `f` for the next deploy.
    pub fn put(&mut self, f: &LocalFile, hash: ContentHash) {
        self.new.insert(
            f.path.clone(),
            Entry { size: f.size, mtime_ns: f.mtime_ns, ctime_ns: f.ctime_ns, ino: f.ino, hash },
        );
    }

    /// Saves the entries recorded with [`HashCache::put`] (best effort: a
    /// cache that cannot be written only makes the next deploy hash again).
    pub fn save(self) {
        let Some(path) = self.path else { return };
        let file = CacheFile { version: 1, written_ns: now_ns(), entries: self.new };
        let Ok(bytes) = serde_json::to_vec(&file) else { return };
        if let Some(dir) = path.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &path).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, mtime_ns: i128) -> LocalFile {
        LocalFile { path: path.into(), abs: PathBuf::from(path), size, mtime_ns, ctime_ns: mtime_ns, ino: (1, 2) }
    }

    #[test]
    fn trusts_only_unchanged_settled_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        // The cache file lives in a temp dir instead of the user's cache.
        let load = |enabled| {
            let mut c = HashCache::load(dir.path(), enabled);
            if enabled {
                c.path = Some(cache_dir.path().join("h.json"));
                c.old = std::fs::read(cache_dir.path().join("h.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
            }
            c
        };
        let h = ContentHash::of(b"x");
        let old = file("a.html", 1, 1_000_000_000);
        let recent = file("b.html", 1, now_ns());
        let mut c = load(true);
        assert_eq!(c.get(&old), None);
        c.put(&old, h);
        c.put(&recent, h);
        c.save();
        let c = load(true);
        assert_eq!(c.get(&old), Some(h));
        assert_eq!(c.get(&recent), None, "modified just before the cache was written: racy");
        assert_eq!(c.get(&file("a.html", 2, 1_000_000_000)), None, "size changed");
        assert_eq!(c.get(&file("a.html", 1, 1_000_000_001)), None, "mtime changed");
        assert_eq!(c.get(&LocalFile { ctime_ns: 5, ..old.clone() }), None, "content rewritten, mtime reset");
        assert_eq!(c.get(&LocalFile { ino: (9, 9), ..old.clone() }), None, "replaced by another file");
        assert_eq!(load(false).get(&old), None, "a disabled cache knows nothing");
    }
}

//! Runs the shared conformance suites against the embedded backends.

use chanto_store::{LocalBlobStore, SqliteMeta, conformance};

#[tokio::test]
async fn local_blob_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::open(dir.path().join("blobs")).unwrap();
    conformance::blob_store(&store).await;
    // Nothing half-written is left behind by the failed puts.
    assert_eq!(std::fs::read_dir(dir.path().join("blobs/.tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn sqlite_meta_conforms() {
    let meta = SqliteMeta::in_memory().unwrap();
    conformance::meta_store(&meta).await;
}

#[tokio::test]
async fn sqlite_meta_conforms_on_disk_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    conformance::meta_store(&SqliteMeta::open(&path).unwrap()).await;
    // Reopening an already migrated database is a no-op.
    let again = SqliteMeta::open(&path).unwrap();
    use chanto_store::MetaStore;
    assert_eq!(again.list_sites().await.unwrap().len(), 1);
}

/// A real full device: a 1 MiB tmpfs. Writing a 2 MiB blob must fail with
/// `Full`, leave no temporary file, and store nothing. Needs root to mount;
/// elsewhere the test says so and passes without running.
#[tokio::test]
async fn local_blob_store_on_a_full_disk() {
    use chanto_core::ContentHash;
    use chanto_store::{BlobStore, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let store = LocalBlobStore::open(mnt.join("blobs")).unwrap();
    let big = bytes::Bytes::from(vec![7u8; 2 << 20]);
    let hash = ContentHash::of(&big);
    let body: chanto_store::ByteStream = Box::pin(futures_util::stream::iter(
        big.chunks(64 * 1024).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
    ));
    let err = store.put(&hash, body, u64::MAX).await.unwrap_err();
    assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
    assert_eq!(err.http_status_code(), 507);
    assert!(!store.has(&hash).await.unwrap());
    assert_eq!(std::fs::read_dir(mnt.join("blobs/.tmp")).unwrap().count(), 0);
    // The store still works once space is there again.
    let small = store.put_bytes(bytes::Bytes::from_static(b"fits")).await.unwrap();
    assert!(store.has(&small).await.unwrap());
}

//! Runs the shared conformance suites against the embedded backends.

use chanto_store::{LocalBlobStore, SqliteMeta, conformance};

/// Files anywhere under `dir`.
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| if e.file_type().unwrap().is_dir() { files_under(&e.path()) } else { 1 })
        .sum()
}

/// Temporary files the store's staging area holds.
fn temporary_files(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join(".staged"))
        .unwrap()
        .flat_map(|shard| std::fs::read_dir(shard.unwrap().path()).unwrap())
        .filter(|f| f.as_ref().unwrap().file_name().to_string_lossy().starts_with(".tmp"))
        .count()
}

#[tokio::test]
async fn local_blob_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::open(dir.path().join("blobs")).unwrap();
    conformance::blob_store(&store).await;
    // Nothing half-written is left behind by the failed puts.
    assert_eq!(temporary_files(&dir.path().join("blobs")), 0);
}

/// A crash between a blob's write and the next sync can leave its staged file
/// incomplete; reopening the store drops such files and keeps whole ones,
/// staged or synced, so a blob the store reports is always whole.
#[tokio::test]
async fn local_blob_store_drops_blobs_a_crash_left_incomplete() {
    use chanto_core::ContentHash;
    use chanto_store::BlobStore;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let (synced, whole, torn) = (
        bytes::Bytes::from_static(b"synced before the crash"),
        bytes::Bytes::from_static(b"staged and whole"),
        bytes::Bytes::from_static(b"staged, then torn by the crash"),
    );
    {
        let store = LocalBlobStore::open(&root).unwrap();
        store.put_bytes(synced.clone()).await.unwrap();
        store.sync().await.unwrap();
        store.put_bytes(whole.clone()).await.unwrap();
        let torn_hash = store.put_bytes(torn.clone()).await.unwrap();
        // What a power cut can leave: the name durable, the bytes not.
        let hex = torn_hash.to_hex();
        std::fs::write(root.join(".staged").join(&hex[..2]).join(&hex[2..]), b"").unwrap();
        std::fs::write(root.join(".staged/00/not-a-hash"), b"junk").unwrap();
        std::fs::write(root.join(".staged/00/.tmp-0123456789abcdef"), b"half").unwrap();
    }
    let store = LocalBlobStore::open(&root).unwrap();
    assert_eq!(store.get(&ContentHash::of(&synced)).await.unwrap(), synced);
    assert_eq!(store.get(&ContentHash::of(&whole)).await.unwrap(), whole);
    assert!(!store.has(&ContentHash::of(&torn)).await.unwrap(), "the torn blob must be uploaded again");
    assert_eq!(store.list().await.unwrap().len(), 2);
    assert!(!root.join(".staged/00/not-a-hash").exists());
    assert_eq!(temporary_files(&root), 0);
    // After a sync everything is in place and nothing is left staged.
    store.sync().await.unwrap();
    store.settle().await;
    assert_eq!(files_under(&root.join(".staged")), 0);
    assert_eq!(store.get(&ContentHash::of(&whole)).await.unwrap(), whole);
}

#[tokio::test]
async fn sqlite_meta_conforms() {
    let meta = SqliteMeta::in_memory().unwrap();
    conformance::meta_store(&meta).await;
}

#[tokio::test]
async fn sqlite_build_store_conforms() {
    conformance::build_store(&SqliteMeta::in_memory().unwrap()).await;
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
/// `Full`, leave no temporary file, and store nothing. Needs root to mount,
/// so it is ignored by a plain `cargo test` (counted as skipped) and run, or
/// failed, by `scripts/test`.
#[tokio::test]
#[ignore = "needs root to mount a tmpfs; scripts/test runs it (--run-ignored all)"]
async fn local_blob_store_on_a_full_disk() {
    use chanto_core::ContentHash;
    use chanto_store::{BlobStore, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .output()
        .expect("running mount");
    assert!(
        mount.status.success(),
        "this test needs root to mount a 1 MiB tmpfs: {}",
        String::from_utf8_lossy(&mount.stderr)
    );
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
    assert_eq!(temporary_files(&mnt.join("blobs")), 0);
    // The store still works once space is there again.
    let small = store.put_bytes(bytes::Bytes::from_static(b"fits")).await.unwrap();
    assert!(store.has(&small).await.unwrap());
}

#[tokio::test]
async fn sqlite_platform_state_conforms() {
    conformance::platform_state(&SqliteMeta::in_memory().unwrap()).await;
}

#[tokio::test]
async fn sqlite_notify_store_conforms() {
    conformance::notify_store(&SqliteMeta::in_memory().unwrap()).await;
}

#[tokio::test]
async fn sqlite_node_store_conforms() {
    conformance::node_store(&SqliteMeta::in_memory().unwrap()).await;
}

#[tokio::test]
async fn sqlite_account_store_conforms() {
    conformance::account_store(&SqliteMeta::in_memory().unwrap()).await;
}

#[tokio::test]
async fn sqlite_domain_store_conforms() {
    conformance::domain_store(&SqliteMeta::in_memory().unwrap()).await;
}

// ---- PostgreSQL: the same suites on a real server (crates/chanto-testkit
// starts one per test binary; each test has a database of its own), plus the
// cases only a shared server has.

/// `chanto migrate` copies the tables `dump::TABLES` names: it must name
/// every table and column of the SQLite schema, so a migration that forgets
/// dump.rs fails here. (`postgres::dump_tables_match_the_schema` checks the
/// other side.)
#[test]
fn dump_tables_match_the_sqlite_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(SqliteMeta::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    let mut st = c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").unwrap();
    let tables: Vec<String> = st.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
    let mut live = std::collections::BTreeMap::new();
    for t in tables {
        let mut st = c.prepare(&format!("SELECT name FROM pragma_table_info('{t}')")).unwrap();
        let mut cols: Vec<String> = st.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect();
        cols.sort();
        live.insert(t, cols);
    }
    assert_eq!(live, dumped(&[]));
}

/// `dump::TABLES` as table → sorted column names, plus `extra` columns on
/// every table that has them in PostgreSQL.
fn dumped(extra: &[&str]) -> std::collections::BTreeMap<String, Vec<String>> {
    chanto_store::dump::TABLES
        .iter()
        .map(|t| {
            let mut cols: Vec<String> = t.columns.iter().map(|c| c.name.to_owned()).collect();
            if t.pg_seq {
                cols.extend(extra.iter().map(|e| e.to_string()));
            }
            cols.sort();
            (t.name.to_owned(), cols)
        })
        .collect()
}

mod postgres {
    use std::collections::HashSet;

    use chanto_core::{BranchName, BuildId, ContentHash, DeployId, SiteName};
    use chanto_store::{
        BuildStore, MetaStore, NewBuild, NewDelivery, NewDeploy, NotifyStore, PostgresMeta, StoreError, Subscription,
        conformance,
    };
    use chanto_testkit::pg;

    /// A store on a fresh database of the shared server, and the database's URL.
    async fn fresh(name: &str) -> (PostgresMeta, String) {
        let url = pg::shared().create_database(name);
        (PostgresMeta::connect(&url, None).await.unwrap(), url)
    }

    /// `dump::TABLES` names every table and column of the PostgreSQL schema
    /// (PostgreSQL's `seq` ordering columns aside, which `pg_seq` marks).
    #[tokio::test]
    #[ignore = "needs PostgreSQL (scripts/test starts it)"]
    async fn dump_tables_match_the_schema() {
        let (_meta, url) = fresh("dump_tables").await;
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT table_name::text, column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name <> 'chanto_schema'",
                &[],
            )
            .await
            .unwrap();
        let mut live: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for r in rows {
            live.entry(r.get(0)).or_default().push(r.get(1));
        }
        live.values_mut().for_each(|v| v.sort());
        assert_eq!(live, super::dumped(&["seq"]));
    }

    fn db_name(url: &str) -> &str {
        url.rsplit('/').next().unwrap()
    }

    fn build(n: u32, site: &SiteName, at: i64) -> NewBuild {
        let mut id = [0u8; 8];
        id[..4].copy_from_slice(&n.to_be_bytes());
        NewBuild {
            id: BuildId::from_random(id),
            site: site.clone(),
            branch: format!("b{n}").parse().unwrap(),
            git_ref: "main".into(),
            commit: Some("abc".into()),
            pull_request: None,
            trigger: "manual".into(),
            title: None,
            author: None,
            message: None,
            retry_of: None,
            untrusted: false,
            skip_reason: None,
            created_at: at,
        }
    }

    #[tokio::test]
    async fn postgres_meta_conforms_and_reconnects() {
        let (meta, url) = fresh("meta").await;
        conformance::meta_store(&meta).await;
        // Connecting again to a migrated database changes nothing.
        let again = PostgresMeta::connect(&url, None).await.unwrap();
        assert_eq!(again.list_sites().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn postgres_platform_state_conforms() {
        conformance::platform_state(&fresh("platform_state").await.0).await;
    }

    #[tokio::test]
    async fn postgres_build_store_conforms() {
        conformance::build_store(&fresh("builds").await.0).await;
    }

    #[tokio::test]
    async fn postgres_notify_store_conforms() {
        conformance::notify_store(&fresh("notify").await.0).await;
    }

    #[tokio::test]
    async fn postgres_node_store_conforms() {
        conformance::node_store(&fresh("nodes").await.0).await;
    }

    #[tokio::test]
    async fn postgres_account_store_conforms() {
        conformance::account_store(&fresh("accounts").await.0).await;
    }

    #[tokio::test]
    async fn postgres_domain_store_conforms() {
        conformance::domain_store(&fresh("domains").await.0).await;
    }

    /// Two processes (two pools) on one database claim every queued build
    /// between them, and no build twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_two_processes_claim_each_build_once() {
        let (a, url) = fresh("claim_builds").await;
        let b = PostgresMeta::connect(&url, None).await.unwrap();
        let site: SiteName = "app".parse().unwrap();
        a.create_site(&site, &"main".parse().unwrap(), 1).await.unwrap();
        const N: u32 = 40;
        let mut queued = HashSet::new();
        for n in 0..N {
            queued.insert(a.enqueue_build(build(n, &site, 10 + n as i64), true).await.unwrap().id);
        }
        let drain = |store: PostgresMeta| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let me = chanto_store::Owner::new_run("node");
                while let Some(b) = store.claim_build(&me, 100).await.unwrap() {
                    got.push(b.id);
                }
                got
            })
        };
        let (from_a, from_b) = tokio::join!(drain(a.clone()), drain(b.clone()));
        let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
        let mut all: Vec<BuildId> = from_a.iter().chain(&from_b).cloned().collect();
        assert_eq!(all.len(), N as usize, "a: {from_a:?}, b: {from_b:?}");
        all.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        all.dedup();
        assert_eq!(all.into_iter().collect::<HashSet<_>>(), queued, "every build claimed exactly once");
        assert!(b.claim_build(&chanto_store::Owner::new_run("b"), 101).await.unwrap().is_none());
    }

    /// Two processes racing for the same due deliveries: each goes to exactly one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_two_processes_claim_each_delivery_once() {
        let (a, url) = fresh("claim_deliveries").await;
        let b = PostgresMeta::connect(&url, None).await.unwrap();
        let site: SiteName = "app".parse().unwrap();
        a.create_site(&site, &"main".parse().unwrap(), 1).await.unwrap();
        const SUBS: usize = 12;
        for i in 0..SUBS {
            a.add_subscription(Subscription {
                id: format!("sub_{i:02}"),
                site: site.clone(),
                channel: "webhook".into(),
                config: vec![1],
                display: "x".into(),
                filter: "{}".into(),
                created_at: 1,
            })
            .await
            .unwrap();
        }
        a.enqueue_build(build(1, &site, 5), true).await.unwrap();
        let events = a.pending_events(10).await.unwrap();
        assert_eq!(events.len(), 1);
        let deliveries: Vec<NewDelivery> = (0..SUBS)
            .map(|i| NewDelivery {
                subscription: format!("sub_{i:02}"),
                action: "send".into(),
                key: None,
                event_kind: events[0].kind.clone(),
                event_id: "e1".into(),
                payload: "{}".into(),
            })
            .collect();
        // Fanning out is once only too, whoever tries.
        let (fa, fb) =
            tokio::join!(a.fan_out(events[0].seq, deliveries.clone(), 6), b.fan_out(events[0].seq, deliveries, 6));
        assert!(fa.unwrap() ^ fb.unwrap(), "exactly one fan-out");
        let due = a.due_deliveries(10, 100).await.unwrap();
        assert_eq!(due.len(), SUBS);
        for d in due {
            let (oa, ob) = (chanto_store::Owner::new_run("a"), chanto_store::Owner::new_run("b"));
            let (ca, cb) =
                tokio::join!(a.claim_delivery(d.id, 0, &oa, 10, 1_000), b.claim_delivery(d.id, 0, &ob, 10, 1_000));
            let (ca, cb) = (ca.unwrap(), cb.unwrap());
            assert!(ca ^ cb, "delivery {} claimed by a: {ca}, by b: {cb}", d.id);
        }
        assert!(a.due_deliveries(10, 100).await.unwrap().is_empty(), "all leased");
    }

    /// A connection cut in the middle of a transaction (the backend killed
    /// with pg_terminate_backend while the call waits on a lock) fails the
    /// call as unavailable (503), keeps nothing of it, and the next call works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_connection_dropped_mid_transaction() {
        let (meta, url) = fresh("dropped").await;
        let site: SiteName = "app".parse().unwrap();
        meta.create_site(&site, &"main".parse().unwrap(), 1).await.unwrap();
        let deploy = |n: u8| NewDeploy {
            id: DeployId::from_random([n; 8]),
            site: site.clone(),
            branch: "feature".parse().unwrap(),
            message: None,
            draft: false,
            source: "cli".into(),
            files: vec![chanto_store::DeployFile { path: "index.html".into(), hash: ContentHash::of(b"x"), size: 1 }],
            created_at: 2,
        };
        // Another session holds the deploys table: create_deploy inserts the
        // new branch, then waits on the lock mid-transaction.
        let (locker, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        locker.batch_execute("BEGIN; LOCK TABLE deploys IN ACCESS EXCLUSIVE MODE").await.unwrap();
        let call = tokio::spawn({
            let meta = meta.clone();
            let d = deploy(1);
            async move { meta.create_deploy(d).await }
        });
        // Wait (on the observable event) until the call waits on the lock, then cut its connection.
        let db = db_name(&url).to_owned();
        let terminated = loop {
            let row = locker
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
                    &[&db],
                )
                .await
                .unwrap();
            if row.get::<_, i64>(0) > 0 {
                break true;
            }
            tokio::task::yield_now().await;
        };
        assert!(terminated);
        locker.batch_execute("ROLLBACK").await.unwrap();
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert_eq!(err.http_status_code(), 503);
        // Nothing half-written: neither the branch nor the deploy exists.
        assert!(meta.branch(&site, &"feature".parse().unwrap()).await.unwrap().is_none());
        assert!(meta.get_deploy(&DeployId::from_random([1; 8])).await.unwrap().is_none());
        // And the same call now succeeds on a fresh connection.
        let d = meta.create_deploy(deploy(1)).await.unwrap();
        assert_eq!(d.branch_label, "feature");
    }

    /// A server of the test's own (to stop or freeze), a store on it, and
    /// site `app` on branch `main`.
    async fn own_server_with_one_site(prefix: &str) -> (pg::PgServer, PostgresMeta) {
        let server = pg::PgServer::start();
        let url = server.create_database(prefix);
        let meta = PostgresMeta::connect(&url, None).await.unwrap();
        meta.create_site(&"app".parse().unwrap(), &"main".parse().unwrap(), 1).await.unwrap();
        (server, meta)
    }

    /// The server stopped between calls: calls fail as unavailable (503)
    /// naming the metadata store; once it is back the same store works
    /// without being recreated.
    #[tokio::test]
    async fn postgres_restarted_between_calls() {
        let (server, meta) = own_server_with_one_site("restart").await;
        let main: BranchName = "main".parse().unwrap();
        server.stop();
        let err = meta.list_sites().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert_eq!(err.http_status_code(), 503);
        assert!(err.to_string().contains("metadata store"), "{err}");
        // The build watch's round trip: a heartbeat of no builds must reach
        // the database too, or an idle node would count the database as
        // reachable during an outage.
        let owner = chanto_store::Owner { node: "n".into(), run: "r".into() };
        let err = meta.heartbeat_builds(&owner, &[], 5).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        server.start_again();
        assert_eq!(meta.heartbeat_builds(&owner, &[], 6).await.unwrap(), []);
        assert_eq!(meta.list_sites().await.unwrap().len(), 1);
        meta.create_site(&"two".parse().unwrap(), &main, 2).await.unwrap();
        assert_eq!(meta.list_sites().await.unwrap().len(), 2);
    }

    /// A frozen server (stopped, not gone: connections are accepted and
    /// nothing answers) fails calls within seconds, as unavailable, both on a
    /// pooled connection and on a new one; after it thaws the same store works.
    #[tokio::test]
    async fn postgres_frozen_fails_fast_and_recovers() {
        let (server, meta) = own_server_with_one_site("frozen").await;
        let main: BranchName = "main".parse().unwrap();
        // Several idle connections, each of which the pool would check in turn.
        let calls: Vec<_> = (0..4).map(|_| meta.list_sites()).collect();
        for r in futures_util::future::join_all(calls).await {
            r.unwrap();
        }
        let frozen = server.freeze();
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let err = meta.list_sites().await.unwrap_err();
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
            assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
            assert!(err.to_string().contains("metadata store"), "{err}");
        }
        drop(frozen);
        let started = std::time::Instant::now();
        loop {
            match meta.list_sites().await {
                Ok(sites) => break assert_eq!(sites.len(), 1),
                Err(e) => assert!(started.elapsed() < std::time::Duration::from_secs(20), "no recovery: {e}"),
            }
        }
        meta.create_site(&"two".parse().unwrap(), &main, 2).await.unwrap();
    }

    /// A database migrated by a newer chanto is refused, with the versions named.
    #[tokio::test]
    async fn postgres_refuses_a_newer_schema() {
        let (_meta, url) = fresh("newer").await;
        pg::shared().psql(db_name(&url), "UPDATE chanto_schema SET version = 99");
        let err = PostgresMeta::connect(&url, None).await.unwrap_err().to_string();
        assert!(err.contains("schema version 99, newer than this chanto knows"), "{err}");
    }

    /// Nothing listening: the error names the URL without its password, and the cause.
    #[tokio::test]
    async fn postgres_unreachable_at_start_names_the_url_not_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("postgres://chanto:hunter2secret@127.0.0.1:{port}/chanto");
        let err = PostgresMeta::connect(&url, None).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(text.contains(&format!("postgres://chanto:***@127.0.0.1:{port}/chanto")), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(!text.contains("hunter2secret"), "{text}");
    }

    /// The shared server has TLS off: the default (prefer) connects in
    /// plain text, as libpq; `require` refuses to, saying how to fix it.
    #[tokio::test]
    async fn postgres_require_refuses_a_server_without_tls_and_prefer_falls_back() {
        let (_meta, url) = fresh("no_tls").await;
        PostgresMeta::connect(&format!("{url}?sslmode=prefer"), None).await.unwrap();
        let err = PostgresMeta::connect(&format!("{url}?sslmode=require"), None).await.unwrap_err().to_string();
        assert!(err.contains("server does not support TLS"), "{err}");
        assert!(err.contains("sslmode=require insists on it: turn `ssl` on in the server's postgresql.conf"), "{err}");
    }

    /// The routing version is a sequence every process shares, and each new
    /// version is announced with NOTIFY on `chanto_routing`.
    #[tokio::test]
    async fn postgres_routing_versions_grow_across_processes() {
        use futures_util::StreamExt;
        let (a, url) = fresh("routing").await;
        let b = PostgresMeta::connect(&url, None).await.unwrap();
        let (listener, mut conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = m {
                    let _ = heard_tx.send((n.channel().to_owned(), n.payload().to_owned()));
                }
            }
        });
        listener.batch_execute(&format!("LISTEN {}", chanto_store::postgres::ROUTING_CHANNEL)).await.unwrap();
        let v0 = b.next_routing_version(None).await.unwrap();
        assert_eq!(heard.recv().await.unwrap(), ("chanto_routing".to_owned(), v0.to_string()));
        let mut watched = a.watch_routing();
        let v1 = a.next_routing_version(None).await.unwrap();
        // Listening (it read v1 after its LISTEN) before v2 is announced.
        tokio::time::timeout(std::time::Duration::from_secs(20), watched.wait_for(|a| a.version >= v1))
            .await
            .expect("the listener heard v1")
            .unwrap();
        let docs: chanto_core::SiteName = "docs".parse().unwrap();
        let v2 = b.next_routing_version(Some(std::slice::from_ref(&docs))).await.unwrap();
        assert_eq!(heard.recv().await.unwrap().1, v1.to_string());
        assert_eq!(heard.recv().await.unwrap().1, format!("{v2} = docs"));
        // The other process's listener hears the sites a version changed.
        let seen = tokio::time::timeout(std::time::Duration::from_secs(20), watched.wait_for(|a| a.version >= v2))
            .await
            .expect("the listener heard v2")
            .unwrap()
            .clone();
        assert_eq!(seen, chanto_store::RoutingAnnouncement { version: v2, sites: Some(vec![docs]) });
        let v3 = a.next_routing_version(None).await.unwrap();
        assert!(v0 < v1 && v1 < v2 && v2 < v3, "{v0} {v1} {v2} {v3}");
    }
}

// ---- S3 backend: the same suite on an S3-compatible server (s3s-fs, in
// process on loopback, one per test binary, a fresh bucket per test), then
// the cases only a shared server has.

mod s3 {
    use std::time::Duration;

    use bytes::Bytes;
    use chanto_core::ContentHash;
    use chanto_store::{BlobStore, ByteStream, CachedBlobStore, S3BlobStore, S3Options, StoreError, conformance};
    use chanto_testkit::s3::{ACCESS_KEY, Fault, FaultProxy, S3Server, SECRET_KEY};
    use futures_util::StreamExt;

    /// Options for `s3://BUCKET/chanto` at `endpoint`, as install `install`.
    fn options(endpoint: &str, bucket: &str, install: &str) -> S3Options {
        let mut o = S3Options::new(format!("s3://{bucket}/chanto"), install);
        o.endpoint = Some(endpoint.to_owned());
        o.credentials = Some((ACCESS_KEY.to_owned(), SECRET_KEY.to_owned()));
        o
    }

    /// A store on a fresh bucket of the shared server.
    async fn fresh() -> (S3BlobStore, String) {
        let server = S3Server::shared();
        let bucket = server.create_bucket();
        (S3BlobStore::connect(options(&server.endpoint(), &bucket, "install-a")).await.unwrap(), bucket)
    }

    fn chunks_of(bytes: &Bytes, size: usize) -> ByteStream {
        let parts: Vec<Result<Bytes, std::io::Error>> =
            (0..bytes.len()).step_by(size).map(|i| Ok(bytes.slice(i..(i + size).min(bytes.len())))).collect();
        Box::pin(futures_util::stream::iter(parts))
    }

    async fn read_stream(mut body: ByteStream) -> Result<Vec<u8>, std::io::Error> {
        let mut out = Vec::new();
        while let Some(c) = body.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    /// Fails a test that would otherwise hang (it is a guard, not a timing
    /// assertion: the bounds under test are seconds, this is minutes).
    async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(120), f).await.unwrap_or_else(|_| panic!("{what} hung"))
    }

    #[tokio::test]
    async fn s3_blob_store_conforms() {
        let (store, _) = fresh().await;
        conformance::blob_store(&store).await;
    }

    #[tokio::test]
    async fn cached_s3_blob_store_conforms() {
        let (store, _) = fresh().await;
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedBlobStore::open(store, dir.path().join("cache"), 1 << 20).unwrap();
        conformance::blob_store(&cached).await;
    }

    /// A blob larger than one PUT goes up as a multipart upload that becomes
    /// visible only once its hash matched; a wrong one leaves nothing.
    #[tokio::test]
    async fn s3_large_blobs_go_up_in_parts_and_only_when_verified() {
        let (store, _) = fresh().await;
        let big = Bytes::from((0..20u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let hash = ContentHash::of(&big);
        let claimed = ContentHash::of(b"not these bytes");
        match store.put(&claimed, chunks_of(&big, 1 << 20), u64::MAX).await {
            Err(StoreError::HashMismatch { actual, .. }) => assert_eq!(actual, hash),
            other => panic!("expected HashMismatch, got {other:?}"),
        }
        assert!(!store.has(&claimed).await.unwrap());
        assert!(store.list().await.unwrap().is_empty(), "nothing visible after a refused multipart upload");
        assert_eq!(store.put(&hash, chunks_of(&big, 1 << 20), u64::MAX).await.unwrap(), big.len() as u64);
        assert_eq!(store.get(&hash).await.unwrap(), big);
        // Again: already there, verified and not uploaded twice.
        assert_eq!(store.put(&hash, chunks_of(&big, 3 << 20), u64::MAX).await.unwrap(), big.len() as u64);
        let range = read_stream(store.open_range(&hash, 9 << 20, 100).await.unwrap()).await.unwrap();
        assert_eq!(range, &big[9 << 20..(9 << 20) + 100]);
        // Over the limit mid-way through the parts: refused, nothing stored.
        let other = Bytes::from(vec![3u8; 12 << 20]);
        assert!(matches!(
            store.put(&ContentHash::of(&other), chunks_of(&other, 1 << 20), 10 << 20).await,
            Err(StoreError::TooLarge { .. })
        ));
        assert_eq!(store.list().await.unwrap(), vec![hash]);
    }

    /// The marker object: a second install on the same prefix is refused with
    /// the way out named, `claim` takes the prefix over.
    #[tokio::test]
    async fn s3_marker_refuses_a_second_install_unless_it_claims() {
        let server = S3Server::shared();
        let bucket = server.create_bucket();
        let endpoint = server.endpoint();
        S3BlobStore::connect(options(&endpoint, &bucket, "install-a")).await.unwrap();
        // The same install again: fine.
        S3BlobStore::connect(options(&endpoint, &bucket, "install-a")).await.unwrap();
        let err = S3BlobStore::connect(options(&endpoint, &bucket, "install-b")).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert!(msg.contains(&format!("s3://{bucket}/chanto")), "{msg}");
        assert!(msg.contains("install-a") && msg.contains("--blobs-claim"), "{msg}");
        // Another prefix of the same bucket is another store.
        let mut elsewhere = options(&endpoint, &bucket, "install-b");
        elsewhere.url = format!("s3://{bucket}/other");
        S3BlobStore::connect(elsewhere).await.unwrap();
        // Claiming takes it over; the first install is then the stranger.
        let mut claim = options(&endpoint, &bucket, "install-b");
        claim.claim = true;
        S3BlobStore::connect(claim).await.unwrap();
        S3BlobStore::connect(options(&endpoint, &bucket, "install-b")).await.unwrap();
        let err = S3BlobStore::connect(options(&endpoint, &bucket, "install-a")).await.unwrap_err();
        assert!(err.to_string().contains("install-b"), "{err}");
    }

    #[tokio::test]
    async fn s3_wrong_credentials_and_a_missing_bucket_are_clear_errors() {
        let server = S3Server::shared();
        let bucket = server.create_bucket();
        let mut wrong = options(&server.endpoint(), &bucket, "install-a");
        wrong.credentials = Some((ACCESS_KEY.to_owned(), "not-the-secret".to_owned()));
        let msg = bounded("connecting", S3BlobStore::connect(wrong)).await.unwrap_err().to_string();
        assert!(msg.contains("credentials") && msg.contains("AWS_SECRET_ACCESS_KEY"), "{msg}");
        assert!(msg.contains(&server.endpoint()), "names where: {msg}");
        let missing = options(&server.endpoint(), "no-such-bucket-here", "install-a");
        let msg = bounded("connecting", S3BlobStore::connect(missing)).await.unwrap_err().to_string();
        assert!(msg.contains("\"no-such-bucket-here\" does not exist") && msg.contains("--blobs"), "{msg}");
        let msg = S3BlobStore::connect(S3Options::new("s3://Bad_Bucket/x", "i")).await.unwrap_err().to_string();
        assert!(msg.contains("s3://BUCKET/PREFIX"), "{msg}");
        let mut plain = options("http://192.0.2.1:9000", &bucket, "install-a");
        plain.url = format!("s3://{bucket}/x");
        let msg = S3BlobStore::connect(plain).await.unwrap_err().to_string();
        assert!(msg.contains("loopback") && msg.contains("https://"), "{msg}");
    }

    /// The object store answering 503: a bounded number of retries, then a
    /// prompt error that maps to 503; nothing stored by a failed put; all
    /// well again once the store is back.
    #[tokio::test]
    async fn s3_store_answering_503_fails_after_bounded_retries_and_recovers() {
        let server = S3Server::shared();
        let bucket = server.create_bucket();
        let proxy = FaultProxy::start(server.addr());
        let store = S3BlobStore::connect(options(&proxy.endpoint(), &bucket, "install-a")).await.unwrap();
        let kept = store.put_bytes(Bytes::from_static(b"stored before the outage")).await.unwrap();
        proxy.set(Fault::Unavailable);
        let err = bounded("a read from a 503ing store", store.get(&kept)).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert_eq!(err.http_status_code(), 503);
        assert!(err.is_retryable());
        assert!(err.to_string().contains(&format!("s3://{bucket}/chanto")), "{err}");
        let attempts = proxy.faulted();
        assert!((2..=4).contains(&attempts), "retried a bounded number of times: {attempts} attempts");
        let lost = Bytes::from_static(b"uploaded during the outage");
        assert!(bounded("a write", store.put_bytes(lost.clone())).await.is_err());
        proxy.set(Fault::None);
        assert_eq!(&store.get(&kept).await.unwrap()[..], b"stored before the outage");
        assert!(!store.has(&ContentHash::of(&lost)).await.unwrap(), "a failed put stored nothing");
    }

    /// A store that accepts requests and never answers: the request timeout
    /// turns it into an error instead of a hang.
    #[tokio::test]
    async fn s3_store_that_never_answers_times_out() {
        let server = S3Server::shared();
        let bucket = server.create_bucket();
        let proxy = FaultProxy::start(server.addr());
        let mut o = options(&proxy.endpoint(), &bucket, "install-a");
        o.timeout = Duration::from_millis(500);
        o.max_retries = 1;
        let store = S3BlobStore::connect(o).await.unwrap();
        let kept = store.put_bytes(Bytes::from_static(b"slow")).await.unwrap();
        proxy.set(Fault::Hang);
        let err = bounded("a read from a silent store", store.get(&kept)).await.unwrap_err();
        assert_eq!(err.http_status_code(), 503, "{err}");
        assert!(proxy.faulted() >= 1);
        proxy.set(Fault::None);
        assert_eq!(&store.get(&kept).await.unwrap()[..], b"slow");
    }

    /// A blob in one node's disk cache that another node's garbage
    /// collection deleted from the shared store is missing: a deploy told
    /// otherwise would go live without it everywhere but here.
    #[tokio::test]
    async fn cached_store_asks_the_shared_store_what_is_missing() {
        let server = S3Server::shared();
        let bucket = server.create_bucket();
        let here = S3BlobStore::connect(options(&server.endpoint(), &bucket, "install-a")).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedBlobStore::open(here, dir.path().join("cache"), 1 << 20).unwrap();
        let page = cached.put_bytes(Bytes::from_static(b"a page both nodes served")).await.unwrap();
        assert_eq!(&cached.get(&page).await.unwrap()[..], b"a page both nodes served");
        assert!(cached.is_cached(&page));
        let elsewhere = S3BlobStore::connect(options(&server.endpoint(), &bucket, "install-a")).await.unwrap();
        elsewhere.delete(&page).await.unwrap();
        assert_eq!(cached.missing(&[page]).await.unwrap(), vec![page], "a cached copy is not the shared store's");
    }

    /// The disk cache in front of a store that goes down: what was read
    /// before is served from disk (and as a local file, for sendfile); what
    /// was not gets a prompt 503-mapped error.
    #[tokio::test]
    async fn cached_store_serves_cached_blobs_while_the_store_is_down() {
        let server = S3Server::shared();
        let bucket = server.create_bucket();
        let proxy = FaultProxy::start(server.addr());
        let store = S3BlobStore::connect(options(&proxy.endpoint(), &bucket, "install-a")).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedBlobStore::open(store, dir.path().join("cache"), 1 << 20).unwrap();
        let hot = cached.put_bytes(Bytes::from_static(b"a hot page")).await.unwrap();
        let cold = cached.put_bytes(Bytes::from_static(b"a page nobody read")).await.unwrap();
        assert_eq!(&cached.get(&hot).await.unwrap()[..], b"a hot page");
        assert!(cached.is_cached(&hot) && !cached.is_cached(&cold));
        proxy.set(Fault::Unavailable);
        assert_eq!(&cached.get(&hot).await.unwrap()[..], b"a hot page");
        assert!(cached.local_file(&hot).await.unwrap().is_some());
        assert_eq!(read_stream(cached.open_range(&hot, 2, 3).await.unwrap()).await.unwrap(), b"hot");
        assert!(cached.has(&hot).await.unwrap());
        let err = bounded("an uncached read", cached.get(&cold)).await.unwrap_err();
        assert_eq!(err.http_status_code(), 503, "{err}");
        assert!(bounded("an uncached open", cached.open(&cold)).await.is_err());
        // The cache survives a restart of the node.
        drop(cached);
        let store = S3BlobStore::connect(options(&server.endpoint(), &bucket, "install-a")).await.unwrap();
        let reopened = CachedBlobStore::open(store, dir.path().join("cache"), 1 << 20).unwrap();
        assert!(reopened.is_cached(&hot));
    }

    /// The cache holds at most its capacity, least recently used out first.
    #[tokio::test]
    async fn cached_store_stays_within_its_capacity() {
        let (store, _) = fresh().await;
        let dir = tempfile::tempdir().unwrap();
        let cached = CachedBlobStore::open(store, dir.path().join("cache"), 8 * 1024).unwrap();
        let blobs: Vec<ContentHash> = {
            let mut v = Vec::new();
            for i in 0..6u8 {
                v.push(cached.put_bytes(Bytes::from(vec![i; 1000])).await.unwrap());
            }
            v
        };
        for h in &blobs {
            cached.get(h).await.unwrap();
            // The first stays hot.
            cached.get(&blobs[0]).await.unwrap();
        }
        assert!(cached.cached_bytes() <= 8 * 1024);
        assert!(cached.is_cached(&blobs[0]) && cached.is_cached(&blobs[5]));
        let on_disk: u64 = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .flat_map(|s| std::fs::read_dir(s.unwrap().path()).unwrap())
            .map(|f| f.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk, cached.cached_bytes());
        // Too large to cache (over an eighth of the capacity): served, not kept.
        let large = cached.put_bytes(Bytes::from(vec![9u8; 2000])).await.unwrap();
        assert_eq!(cached.get(&large).await.unwrap().len(), 2000);
        assert!(!cached.is_cached(&large));
        assert!(cached.local_file(&large).await.unwrap().is_none());
    }

    /// An object damaged in the store (short, or other bytes) is an error on
    /// read, never served as whole, and never enters the disk cache.
    #[tokio::test]
    async fn s3_damaged_objects_are_detected_on_read() {
        let server = S3Server::shared();
        let (store, bucket) = fresh().await;
        let good = Bytes::from_static(b"the original bytes of this blob");
        let hash = store.put_bytes(good.clone()).await.unwrap();
        let file = server.object_file(&bucket, &store.key_of(&hash));
        assert_eq!(std::fs::read(&file).unwrap(), good, "s3s-fs keeps the object at {}", file.display());
        for damage in [&b"the original bytes of this blo"[..], b"THE original bytes of this blob"] {
            std::fs::write(&file, damage).unwrap();
            assert!(store.get(&hash).await.is_err(), "get served a damaged object");
            if let Ok(open) = store.open(&hash).await {
                assert!(read_stream(open.body).await.is_err(), "open streamed a damaged object to its end");
            }
            let dir = tempfile::tempdir().unwrap();
            let again = S3BlobStore::connect(options(&server.endpoint(), &bucket, "install-a")).await.unwrap();
            let cached = CachedBlobStore::open(again, dir.path().join("cache"), 1 << 20).unwrap();
            assert!(cached.get(&hash).await.is_err());
            assert!(cached.local_file(&hash).await.is_err());
            assert!(!cached.is_cached(&hash));
            assert_eq!(cached.cached_bytes(), 0);
        }
    }
}

//! The conformance suites every backend must pass: one for blob stores, one for
//! metadata repositories. Each backend's tests call these with a fresh instance.

use bytes::Bytes;
use chanto_core::{BranchName, ContentHash, DeployId, DeployState, SiteName};
use futures_util::StreamExt;

use crate::{ActivationKind, BlobStore, ByteStream, DeployFile, MetaStore, NewDeploy, StoreError};

fn stream_of(chunks: Vec<&'static [u8]>) -> ByteStream {
    Box::pin(futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))))
}

async fn read_all(store: &dyn BlobStore, hash: &ContentHash) -> Vec<u8> {
    let mut open = store.open(hash).await.expect("open");
    let mut out = Vec::new();
    while let Some(chunk) = open.body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(open.len, out.len() as u64);
    out
}

/// Runs the blob-store suite against an empty store. Panics on the first failure.
pub async fn blob_store(store: &dyn BlobStore) {
    let hello = ContentHash::of(b"hello world");
    assert!(!store.has(&hello).await.unwrap(), "empty store has nothing");
    assert!(matches!(store.get(&hello).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.open(&hello).await, Err(StoreError::NotFound(_))));

    // A streamed put in several chunks, verified against its hash.
    let n = store.put(&hello, stream_of(vec![b"hello", b" ", b"world"]), 1024).await.unwrap();
    assert_eq!(n, 11);
    assert!(store.has(&hello).await.unwrap());
    assert_eq!(&store.get(&hello).await.unwrap()[..], b"hello world");
    assert_eq!(read_all(store, &hello).await, b"hello world");

    // Ranges: any window of the bytes.
    for (start, len, want) in [(0, 5, &b"hello"[..]), (6, 5, b"world"), (10, 1, b"d"), (3, 0, b"")] {
        let mut body = store.open_range(&hello, start, len).await.unwrap();
        let mut got = Vec::new();
        while let Some(c) = body.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, want, "range {start}+{len}");
    }

    // A backend that keeps local files hands out one holding exactly the
    // bytes (the edge sends it with sendfile); a missing blob has none.
    if let Some(file) = store.local_file(&hello).await.unwrap() {
        use std::io::Read;
        let mut got = Vec::new();
        (&file).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello world");
        assert!(store.local_file(&ContentHash::of(b"absent")).await.is_err());
    }

    // Putting the same blob again is harmless.
    store.put(&hello, stream_of(vec![b"hello world"]), 1024).await.unwrap();

    // Syncing keeps every blob readable, and syncing again is harmless.
    store.sync().await.unwrap();
    store.sync().await.unwrap();
    assert!(store.has(&hello).await.unwrap());
    assert_eq!(read_all(store, &hello).await, b"hello world");
    store.put(&hello, stream_of(vec![b"hello world"]), 1024).await.unwrap();
    assert_eq!(store.list().await.unwrap().iter().filter(|h| **h == hello).count(), 1, "listed once");

    // Bytes that do not match the name are refused and never stored.
    let claimed = ContentHash::of(b"something else");
    match store.put(&claimed, stream_of(vec![b"evil bytes"]), 1024).await {
        Err(StoreError::HashMismatch { expected, actual }) => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, ContentHash::of(b"evil bytes"));
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(!store.has(&claimed).await.unwrap());
    assert!(!store.has(&ContentHash::of(b"evil bytes")).await.unwrap());

    // Over the size limit: refused, nothing stored.
    let big = ContentHash::of(b"0123456789");
    assert!(matches!(
        store.put(&big, stream_of(vec![b"01234", b"56789"]), 9).await,
        Err(StoreError::TooLarge { limit: 9 })
    ));
    assert!(!store.has(&big).await.unwrap());

    // A body that fails mid-way stores nothing.
    let broken: ByteStream = Box::pin(futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"0123")),
        Err(std::io::Error::other("client went away")),
    ]));
    assert!(store.put(&big, broken, 100).await.is_err());
    assert!(!store.has(&big).await.unwrap());

    // The empty blob is a blob.
    let empty = store.put_bytes(Bytes::new()).await.unwrap();
    assert_eq!(empty, ContentHash::of(b""));
    assert_eq!(store.get(&empty).await.unwrap().len(), 0);

    // missing() answers in order; list() sees exactly what was stored.
    let m = store.missing(&[big, hello, claimed]).await.unwrap();
    assert_eq!(m, vec![big, claimed]);
    let mut want = vec![hello, empty];
    want.sort();
    assert_eq!(store.list().await.unwrap(), want);
    // list_sizes() sees the same blobs, each with its size and a time it was stored.
    let sized = store.list_sizes().await.unwrap();
    assert_eq!(sized.iter().map(|b| b.hash).collect::<Vec<_>>(), want);
    let size_of = |h: &ContentHash| sized.iter().find(|b| b.hash == *h).map(|b| b.size);
    assert_eq!((size_of(&hello), size_of(&empty)), (Some(11), Some(0)));
    let now = crate::now_millis();
    for b in &sized {
        assert!(
            b.stored_at > now - 3_600_000 && b.stored_at <= now + 60_000,
            "stored_at {} is not about now",
            b.stored_at
        );
    }

    store.delete(&hello).await.unwrap();
    store.delete(&hello).await.unwrap();
    assert!(!store.has(&hello).await.unwrap());
    assert_eq!(store.list_sizes().await.unwrap().iter().map(|b| b.hash).collect::<Vec<_>>(), vec![empty]);
}

fn file(path: &str, bytes: &[u8]) -> DeployFile {
    DeployFile { path: path.into(), hash: ContentHash::of(bytes), size: bytes.len() as u64 }
}

fn new_deploy(id: u8, site: &SiteName, branch: &str, draft: bool, now: i64) -> NewDeploy {
    NewDeploy {
        id: DeployId::from_random([id; 8]),
        site: site.clone(),
        branch: branch.parse().unwrap(),
        message: Some(format!("deploy {id}")),
        draft,
        source: "cli".into(),
        files: vec![file("index.html", &[id]), file("a/b.css", b"shared")],
        created_at: now,
    }
}

/// Runs the metadata suite against an empty repository. Panics on the first failure.
pub async fn meta_store(meta: &dyn MetaStore) {
    let site: SiteName = "docs".parse().unwrap();
    let main: BranchName = "main".parse().unwrap();

    // Sites.
    assert!(meta.list_sites().await.unwrap().is_empty());
    let s = meta.create_site(&site, &main, 1).await.unwrap();
    assert_eq!(s.name, site);
    assert!(matches!(meta.create_site(&site, &main, 2).await, Err(StoreError::Conflict(_))));
    meta.create_site(&"blog".parse().unwrap(), &main, 3).await.unwrap();
    let names: Vec<String> = meta.list_sites().await.unwrap().into_iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, vec!["blog", "docs"]);
    assert!(meta.get_site(&"nope".parse().unwrap()).await.unwrap().is_none());

    // A deploy is created uploading, with its files, on an unknown site it fails.
    let d1 = meta.create_deploy(new_deploy(1, &site, "main", false, 10)).await.unwrap();
    assert_eq!(d1.state, DeployState::Uploading);
    assert_eq!(d1.file_count, 2);
    assert_eq!(d1.total_size, 7);
    let mut files = meta.deploy_files(&d1.id).await.unwrap();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(files[0].path, "a/b.css");
    assert!(matches!(
        meta.create_deploy(new_deploy(9, &"ghost".parse().unwrap(), "main", false, 10)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(meta.create_deploy(new_deploy(1, &site, "main", false, 11)).await, Err(StoreError::Conflict(_))));

    // Not complete: cannot be activated.
    assert!(matches!(meta.activate(&d1.id, ActivationKind::Deploy, 12).await, Err(StoreError::Conflict(_))));
    let manifest = ContentHash::of(b"manifest 1");
    // Going live before its variants: marked first, listed once complete.
    meta.set_variants_pending(&d1.id).await.unwrap();
    assert!(meta.variants_pending().await.unwrap().is_empty(), "an uploading deploy has nothing to finish");
    let ghost: DeployId = "0123456789abcdef".parse().unwrap();
    assert!(matches!(meta.set_variants_pending(&ghost).await, Err(StoreError::NotFound(_))));
    let r = meta.mark_ready(&d1.id, &manifest, 13).await.unwrap();
    assert_eq!(r.state, DeployState::Ready);
    assert_eq!(r.manifest, Some(manifest));
    assert!(matches!(meta.mark_ready(&d1.id, &manifest, 14).await, Err(StoreError::Conflict(_))));
    assert_eq!(meta.variants_pending().await.unwrap(), vec![(d1.id.clone(), manifest)]);
    // The manifest is swapped only if it is still the one expected.
    let upgraded = ContentHash::of(b"manifest 1 with variants");
    assert!(!meta.replace_manifest(&d1.id, &upgraded, &manifest).await.unwrap());
    assert!(!meta.replace_manifest(&ghost, &manifest, &upgraded).await.unwrap());
    assert!(meta.replace_manifest(&d1.id, &manifest, &upgraded).await.unwrap());
    assert_eq!(meta.get_deploy(&d1.id).await.unwrap().unwrap().manifest, Some(upgraded));
    assert!(meta.variants_pending().await.unwrap().is_empty(), "swapping clears the mark");
    assert!(meta.replace_manifest(&d1.id, &upgraded, &manifest).await.unwrap());
    let prev = meta.activate(&d1.id, ActivationKind::Deploy, 15).await.unwrap();
    assert_eq!(prev, None);
    assert_eq!(meta.get_deploy(&d1.id).await.unwrap().unwrap().state, DeployState::Active);

    // A second and third deploy; each activation supersedes the one before.
    let d2 = meta.create_deploy(new_deploy(2, &site, "main", false, 20)).await.unwrap();
    meta.mark_ready(&d2.id, &ContentHash::of(b"m2"), 21).await.unwrap();
    assert_eq!(meta.activate(&d2.id, ActivationKind::Deploy, 22).await.unwrap(), Some(d1.id.clone()));
    let d3 = meta.create_deploy(new_deploy(3, &site, "main", false, 30)).await.unwrap();
    meta.mark_ready(&d3.id, &ContentHash::of(b"m3"), 31).await.unwrap();
    meta.activate(&d3.id, ActivationKind::Deploy, 32).await.unwrap();
    assert_eq!(meta.get_deploy(&d1.id).await.unwrap().unwrap().state, DeployState::Superseded);
    assert_eq!(meta.get_deploy(&d2.id).await.unwrap().unwrap().state, DeployState::Superseded);

    // Rollback walks back through history: 3 → 2 → 1, then there is nothing left.
    assert_eq!(meta.rollback(&site, &main, None, 40).await.unwrap(), (d3.id.clone(), d2.id.clone()));
    assert_eq!(meta.rollback(&site, &main, None, 41).await.unwrap(), (d2.id.clone(), d1.id.clone()));
    assert!(matches!(meta.rollback(&site, &main, None, 42).await, Err(StoreError::Conflict(_))));
    assert_eq!(meta.branch(&site, &main).await.unwrap().unwrap().active_deploy, Some(d1.id.clone()));
    assert_eq!(meta.get_deploy(&d3.id).await.unwrap().unwrap().state, DeployState::Superseded);
    // "Rolled back": taken off the air by a rollback and not live since.
    let rolled = |ids: Vec<DeployId>| {
        let mut ids: Vec<String> = ids.into_iter().map(|d| d.to_string()).collect();
        ids.sort();
        ids
    };
    let ids = |ds: &[&DeployId]| {
        let mut ids: Vec<String> = ds.iter().map(|d| d.to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(rolled(meta.rolled_back(&site, None).await.unwrap()), ids(&[&d2.id, &d3.id]));
    assert_eq!(rolled(meta.rolled_back(&site, Some(&main)).await.unwrap()), ids(&[&d2.id, &d3.id]));

    // After rollbacks and a publish, rollbacks walk back through what was
    // live before the publish, most recently live first, each deploy once
    // (#20: this used to stop after one with "no earlier deploy").
    meta.activate(&d3.id, ActivationKind::Publish, 43).await.unwrap();
    assert_eq!(rolled(meta.rolled_back(&site, None).await.unwrap()), ids(&[&d2.id]), "d3 is live again, d1 previous");
    assert_eq!(meta.rollback_walk(&site, &main).await.unwrap(), vec![d1.id.clone(), d2.id.clone()]);
    assert_eq!(meta.rollback(&site, &main, None, 44).await.unwrap(), (d3.id.clone(), d1.id.clone()));
    assert_eq!(meta.rollback_walk(&site, &main).await.unwrap(), vec![d2.id.clone()]);
    assert_eq!(meta.rollback(&site, &main, None, 45).await.unwrap(), (d1.id.clone(), d2.id.clone()));
    assert!(meta.rollback_walk(&site, &main).await.unwrap().is_empty());
    assert!(matches!(meta.rollback(&site, &main, None, 46).await, Err(StoreError::Conflict(_))));
    assert_eq!(meta.branch(&site, &main).await.unwrap().unwrap().active_deploy, Some(d2.id.clone()));
    // A deploy, a rollback, a new deploy: the next rollback goes to what was
    // live just before the new one, not to the deploy rolled away from.
    let d3b = meta.create_deploy(new_deploy(31, &site, "main", false, 47)).await.unwrap();
    meta.mark_ready(&d3b.id, &ContentHash::of(b"m3b"), 47).await.unwrap();
    meta.activate(&d3b.id, ActivationKind::Deploy, 47).await.unwrap();
    assert_eq!(meta.rollback(&site, &main, None, 47).await.unwrap(), (d3b.id.clone(), d2.id.clone()));
    assert_eq!(meta.rollback(&site, &main, None, 47).await.unwrap(), (d2.id.clone(), d1.id.clone()));
    assert_eq!(rolled(meta.rolled_back(&site, None).await.unwrap()), ids(&[&d2.id, &d3.id, &d3b.id]));
    // --to: any complete deploy of the branch except the live one.
    assert!(matches!(meta.rollback(&site, &main, Some(&d1.id), 48).await, Err(StoreError::Conflict(_))));
    assert!(matches!(meta.rollback(&site, &main, Some(&ghost), 48).await, Err(StoreError::NotFound(_))));
    assert_eq!(meta.rollback(&site, &main, Some(&d3.id), 48).await.unwrap(), (d1.id.clone(), d3.id.clone()));
    assert_eq!(meta.rollback(&site, &main, Some(&d1.id), 49).await.unwrap(), (d3.id.clone(), d1.id.clone()));
    let ghost_branch: BranchName = "nowhere".parse().unwrap();
    assert!(matches!(meta.rollback(&site, &ghost_branch, None, 49).await, Err(StoreError::NotFound(_))));
    assert!(matches!(meta.rollback_walk(&site, &ghost_branch).await, Err(StoreError::NotFound(_))));

    // Drafts stay ready and are not on the branch.
    let draft = meta.create_deploy(new_deploy(4, &site, "main", true, 50)).await.unwrap();
    meta.mark_ready(&draft.id, &ContentHash::of(b"m4"), 51).await.unwrap();
    assert!(meta.get_deploy(&draft.id).await.unwrap().unwrap().draft);
    assert_eq!(meta.branch(&site, &main).await.unwrap().unwrap().active_deploy, Some(d1.id.clone()));

    // Another branch gets its own label and pointer.
    let feature: BranchName = "feature/Login".parse().unwrap();
    let f1 = meta.create_deploy(new_deploy(5, &site, "feature/Login", false, 60)).await.unwrap();
    meta.mark_ready(&f1.id, &ContentHash::of(b"m5"), 61).await.unwrap();
    meta.activate(&f1.id, ActivationKind::Deploy, 62).await.unwrap();
    let fb = meta.branch(&site, &feature).await.unwrap().unwrap();
    assert_eq!(fb.label, "feature-login");
    // A branch whose label collides gets a distinct one.
    let f2 = meta.create_deploy(new_deploy(6, &site, "feature-login", false, 63)).await.unwrap();
    let collide = meta.branch(&site, &f2.branch).await.unwrap().unwrap();
    assert_ne!(collide.label, "feature-login");
    assert!(collide.label.starts_with("feature-login-"));
    // --to a deploy of another branch is refused.
    assert!(matches!(meta.rollback(&site, &main, Some(&f1.id), 64).await, Err(StoreError::Conflict(_))));
    assert!(meta.rollback_walk(&site, &feature).await.unwrap().is_empty());
    // Per branch; another site's or an unknown branch's are none; an unknown site is NotFound.
    assert!(meta.rolled_back(&site, Some(&feature)).await.unwrap().is_empty());
    assert!(meta.rolled_back(&site, Some(&ghost_branch)).await.unwrap().is_empty());
    assert!(meta.rolled_back(&"blog".parse().unwrap(), None).await.unwrap().is_empty());
    assert!(matches!(meta.rolled_back(&"nope".parse().unwrap(), None).await, Err(StoreError::NotFound(_))));

    // Routing rows: one per branch with an active deploy.
    let rows = meta.routing_table(None).await.unwrap();
    let docs: Vec<_> = rows.iter().filter(|r| r.site == site).collect();
    assert_eq!(docs.len(), 2, "{rows:?}");
    // One site's rows alone are the same rows.
    assert_eq!(meta.routing_table(Some(&site)).await.unwrap().iter().collect::<Vec<_>>(), docs);
    assert!(meta.routing_table(Some(&"no-such-site".parse().unwrap())).await.unwrap().is_empty());
    let main_row = docs.iter().find(|r| r.branch == main).unwrap();
    assert!(main_row.production);
    assert_eq!(main_row.deploy, d1.id);
    assert_eq!(main_row.manifest, manifest);
    assert_eq!(main_row.ready_at, 13);
    let permalinks = meta.permalinks(None).await.unwrap();
    assert!(permalinks.iter().any(|p| p.site == site && p.deploy == draft.id && p.ready_at == 51));
    let by_id = |mut v: Vec<crate::Permalink>| {
        v.sort_by_key(|p| p.deploy.to_string());
        v
    };
    assert_eq!(
        by_id(meta.permalinks(Some(&site)).await.unwrap()),
        by_id(permalinks.iter().filter(|p| p.site == site).cloned().collect())
    );
    assert!(!permalinks.iter().any(|p| p.deploy == f2.id), "uploading deploys have no permalink");

    // Listing: newest first, filtered by branch.
    let all = meta.list_deploys(&site, None).await.unwrap();
    assert_eq!(all.first().unwrap().id, f2.id);
    let only_main = meta.list_deploys(&site, Some(&main)).await.unwrap();
    assert_eq!(only_main.len(), 5);

    // Expiry: only uploading deploys older than the cutoff, and their upload
    // sessions (file lists) are dropped.
    let expired = meta.expire_uploads(64).await.unwrap();
    assert_eq!(expired, vec![f2.id.clone()]);
    assert_eq!(meta.get_deploy(&f2.id).await.unwrap().unwrap().state, DeployState::Expired);
    assert!(meta.deploy_files(&f2.id).await.unwrap().is_empty());
    assert!(matches!(meta.mark_ready(&f2.id, &manifest, 65).await, Err(StoreError::Conflict(_))));

    // Failed deploys never activate.
    let bad = meta.create_deploy(new_deploy(7, &site, "main", false, 70)).await.unwrap();
    meta.mark_failed(&bad.id, "compression failed", 71).await.unwrap();
    let bad = meta.get_deploy(&bad.id).await.unwrap().unwrap();
    assert_eq!(bad.state, DeployState::Failed);
    assert_eq!(bad.error.as_deref(), Some("compression failed"));
    assert!(meta.activate(&bad.id, ActivationKind::Publish, 72).await.is_err());

    // Variants are remembered per source blob, including "not worth it".
    let src = ContentHash::of(b"source");
    assert!(meta.variants(&[src]).await.unwrap().is_empty());
    let v = chanto_core::Variant { encoding: chanto_core::Encoding::Br, hash: ContentHash::of(b"br"), size: 2 };
    meta.put_variants(&[(src, chanto_core::Encoding::Br, Some(v.clone())), (src, chanto_core::Encoding::Gzip, None)])
        .await
        .unwrap();
    let got = meta.variants(&[src]).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&(src, chanto_core::Encoding::Br, Some(v))));

    // Blob references cover every non-expired deploy's files and manifests,
    // and the variants of those files.
    let shared_br =
        chanto_core::Variant { encoding: chanto_core::Encoding::Br, hash: ContentHash::of(b"shared br"), size: 1 };
    meta.put_variants(&[(ContentHash::of(b"shared"), chanto_core::Encoding::Br, Some(shared_br))]).await.unwrap();
    let refs = meta.referenced_blobs(&[]).await.unwrap();
    assert!(refs.contains(&ContentHash::of(b"shared")));
    assert!(refs.contains(&ContentHash::of(b"shared br")));
    assert!(refs.contains(&manifest));
    assert!(!refs.contains(&ContentHash::of(b"br")), "variants of unreferenced sources are not references");

    // Forgetting a source's blobs forgets its variants.
    meta.forget_variants(&[src]).await.unwrap();
    assert!(meta.variants(&[src]).await.unwrap().is_empty());

    // Tokens are looked up by hash only.
    let th = ContentHash::of(b"token");
    assert!(!meta.token_exists(&th).await.unwrap());
    assert_eq!(meta.token_count().await.unwrap(), 0);
    meta.add_token("admin", &th, 80).await.unwrap();
    assert!(meta.token_exists(&th).await.unwrap());
    assert_eq!(meta.token_count().await.unwrap(), 1);

    // Access policies: set, replaced, listed, cleared; permalinks know their branch.
    use chanto_core::{AccessPolicy, AccessScope, AccessUser};
    let policy = AccessPolicy {
        users: vec![AccessUser { user: "alice".into(), hash: "$argon2id$x".into() }],
        allow: vec!["10.0.0.0/8".parse().unwrap()],
        ..Default::default()
    };
    let feature = AccessScope::Branch("feature".parse().unwrap());
    meta.set_access(&site, &AccessScope::Previews, &policy).await.unwrap();
    meta.set_access(&site, &feature, &AccessPolicy::default()).await.unwrap();
    meta.set_access(&site, &feature, &policy).await.unwrap();
    let got = meta.access(&site).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&(feature.clone(), policy.clone())));
    assert_eq!(meta.all_access().await.unwrap().len(), 2);
    assert!(meta.clear_access(&site, &feature).await.unwrap());
    assert!(!meta.clear_access(&site, &feature).await.unwrap());
    assert_eq!(meta.access(&site).await.unwrap(), vec![(AccessScope::Previews, policy)]);
    let nowhere: SiteName = "no-such-site".parse().unwrap();
    assert!(matches!(
        meta.set_access(&nowhere, &AccessScope::Site, &AccessPolicy::default()).await,
        Err(StoreError::NotFound(_))
    ));
    let links = meta.permalinks(None).await.unwrap();
    assert!(links.iter().any(|p| p.deploy == d1.id && p.production && p.branch.as_str() == "main"), "{links:?}");

    // Proxy origins per site: replaced whole, listed sorted, per site.
    assert!(meta.proxy_origins(None).await.unwrap().is_empty());
    let (a, b) = ("https://b.example.com:443".to_owned(), "http://10.0.0.5:8080".to_owned());
    meta.set_proxy_origins(&site, std::slice::from_ref(&a)).await.unwrap();
    meta.set_proxy_origins(&site, &[a.clone(), b.clone(), a.clone()]).await.unwrap();
    assert_eq!(meta.proxy_origins(None).await.unwrap(), vec![(site.clone(), vec![b.clone(), a.clone()])]);
    assert_eq!(meta.proxy_origins(Some(&site)).await.unwrap(), vec![(site.clone(), vec![b.clone(), a.clone()])]);
    assert!(meta.proxy_origins(Some(&nowhere)).await.unwrap().is_empty());
    meta.set_proxy_origins(&site, &[]).await.unwrap();
    assert!(meta.proxy_origins(None).await.unwrap().is_empty());
    meta.set_proxy_origins(&site, std::slice::from_ref(&a)).await.unwrap();
    // A site's part of the routing table, read alone, is the part the whole table has.
    let whole = crate::RoutingTable::load(meta, 1).await.unwrap();
    let mut alone = crate::SiteRouting::load(meta, &site).await.unwrap();
    let mut part = (*whole.sites[&site]).clone();
    for p in [&mut alone, &mut part] {
        p.permalinks.sort_by_key(|l| l.deploy.to_string());
    }
    assert_eq!(alone, part);
    assert!(crate::SiteRouting::load(meta, &nowhere).await.unwrap().is_empty());
    assert!(matches!(meta.set_proxy_origins(&nowhere, &[]).await, Err(StoreError::NotFound(_))));

    // Retention: deploys kept per branch, per site; 0 keeps all.
    assert!(meta.all_keep_deploys().await.unwrap().is_empty());
    meta.set_keep_deploys(&site, 3).await.unwrap();
    meta.set_keep_deploys(&site, 2).await.unwrap();
    assert_eq!(meta.all_keep_deploys().await.unwrap(), vec![(site.clone(), 2)]);
    meta.set_keep_deploys(&site, 0).await.unwrap();
    assert!(meta.all_keep_deploys().await.unwrap().is_empty());
    // The site's profile setting.
    assert_eq!(meta.site_profile(&site).await.unwrap(), None);
    meta.set_site_profile(&site, Some("netlify")).await.unwrap();
    meta.set_site_profile(&site, Some("amplify")).await.unwrap();
    assert_eq!(meta.site_profile(&site).await.unwrap().as_deref(), Some("amplify"));
    meta.set_site_profile(&site, None).await.unwrap();
    assert_eq!(meta.site_profile(&site).await.unwrap(), None);
    meta.set_site_profile(&site, Some("firebase")).await.unwrap();
    meta.set_keep_deploys(&site, 5).await.unwrap();
    assert!(matches!(meta.set_keep_deploys(&nowhere, 1).await, Err(StoreError::NotFound(_))));

    // What retention keeps for rollbacks: the walk repeated rollbacks take.
    let before = meta.rollback_walk(&site, &main).await.unwrap();
    meta.activate(&d2.id, ActivationKind::Publish, 90).await.unwrap();
    let walk = meta.rollback_walk(&site, &main).await.unwrap();
    assert!(!walk.contains(&d2.id), "the live deploy is not a rollback target: {walk:?} (before {before:?})");
    assert!(walk.contains(&d1.id), "{walk:?}");

    // Pruning deletes deploys, but never an active or an uploading one.
    let uploading = meta.create_deploy(new_deploy(8, &site, "main", false, 91)).await.unwrap();
    assert!(meta.referenced_blobs(&[]).await.unwrap().contains(&ContentHash::of(b"m3")));
    let without_d3 = meta.referenced_blobs(std::slice::from_ref(&d3.id)).await.unwrap();
    assert!(!without_d3.contains(&ContentHash::of(b"m3")), "a deploy excluded counts as gone");
    assert!(without_d3.contains(&ContentHash::of(b"m2")));
    let mut pruned =
        meta.prune_deploys(&[d2.id.clone(), d3.id.clone(), draft.id.clone(), uploading.id.clone()]).await.unwrap();
    pruned.sort();
    let mut want = vec![d3.id.clone(), draft.id.clone()];
    want.sort();
    assert_eq!(pruned, want);
    assert!(meta.get_deploy(&d3.id).await.unwrap().is_none());
    assert!(meta.get_deploy(&d2.id).await.unwrap().is_some());
    assert_eq!(meta.get_deploy(&uploading.id).await.unwrap().unwrap().state, DeployState::Uploading);
    assert!(meta.list_deploys(&site, None).await.unwrap().iter().all(|d| d.id != d3.id && d.id != draft.id));
    assert!(meta.permalinks(None).await.unwrap().iter().all(|p| p.deploy != d3.id));
    assert!(!meta.referenced_blobs(&[]).await.unwrap().contains(&ContentHash::of(b"m3")));
    let without_pruned: Vec<DeployId> = walk.iter().filter(|d| **d != d3.id).cloned().collect();
    assert_eq!(meta.rollback_walk(&site, &main).await.unwrap(), without_pruned, "a pruned deploy leaves the walk");
    assert!(meta.prune_deploys(std::slice::from_ref(&d3.id)).await.unwrap().is_empty());

    // Blobs being deleted: marked, renewed, cleared.
    let (x, y) = (ContentHash::of(b"x"), ContentHash::of(b"y"));
    assert!(meta.blobs_being_deleted().await.unwrap().is_empty());
    meta.mark_deleting(&[x, y], 100).await.unwrap();
    meta.mark_deleting(&[x], 101).await.unwrap();
    assert_eq!(meta.blobs_being_deleted().await.unwrap(), std::collections::HashSet::from([x, y]));
    meta.clear_deleting(&[x]).await.unwrap();
    assert_eq!(meta.blobs_being_deleted().await.unwrap(), std::collections::HashSet::from([y]));
    meta.clear_deleting(&[y]).await.unwrap();
    meta.clear_deleting(&[]).await.unwrap();
    assert!(meta.blobs_being_deleted().await.unwrap().is_empty());

    // Deleting a site removes its deploys, branches, policies and proxy origins.
    meta.delete_site(&site).await.unwrap();
    assert!(meta.all_keep_deploys().await.unwrap().is_empty());
    assert!(meta.all_access().await.unwrap().is_empty());
    assert!(meta.proxy_origins(None).await.unwrap().is_empty());
    assert!(meta.get_deploy(&d1.id).await.unwrap().is_none());
    assert!(meta.routing_table(None).await.unwrap().iter().all(|r| r.site != site));
    assert!(crate::SiteRouting::load(meta, &site).await.unwrap().is_empty());
    assert!(matches!(meta.delete_site(&site).await, Err(StoreError::NotFound(_))));
}

/// A run of a node (see [`crate::Owner`]).
fn owner(node: &str, run: &str) -> crate::Owner {
    crate::Owner { node: node.into(), run: run.into() }
}

fn new_build(n: u8, site: &SiteName, branch: &str, at: crate::UnixMillis) -> crate::NewBuild {
    crate::NewBuild {
        id: chanto_core::BuildId::from_random([n; 8]),
        site: site.clone(),
        branch: branch.parse().unwrap(),
        git_ref: branch.into(),
        commit: None,
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

/// Runs the suite of what `chanto apply` remembers per site
/// ([`MetaStore::platform_state`]) against an empty repository. Panics on the
/// first failure.
pub async fn platform_state(meta: &dyn MetaStore) {
    use crate::PlatformState;
    let main: BranchName = "main".parse().unwrap();
    let (docs, blog): (SiteName, SiteName) = ("docs".parse().unwrap(), "blog".parse().unwrap());
    let nowhere: SiteName = "nowhere".parse().unwrap();
    // Created out of name order: reads sort by site name, not by creation.
    meta.create_site(&docs, &main, 1).await.unwrap();
    meta.create_site(&blog, &main, 2).await.unwrap();
    let row = |site: &SiteName, key: &str, value: &str| PlatformState {
        site: site.clone(),
        key: key.to_owned(),
        value: value.to_owned(),
    };
    assert!(meta.platform_state(None).await.unwrap().is_empty());
    assert!(meta.platform_state(Some(&docs)).await.unwrap().is_empty());

    // Two keys on one site, one on the other; keys sort bytewise ("B" before "a").
    meta.set_platform_state(&docs, "ref:api_key", Some("env:DOCS_API_KEY")).await.unwrap();
    meta.set_platform_state(&docs, "notify:deploys", Some("sub_0123")).await.unwrap();
    meta.set_platform_state(&blog, "ref:TOKEN", Some("env:BLOG_TOKEN")).await.unwrap();
    meta.set_platform_state(&blog, "ref:a", Some("env:A")).await.unwrap();
    assert_eq!(
        meta.platform_state(None).await.unwrap(),
        vec![
            row(&blog, "ref:TOKEN", "env:BLOG_TOKEN"),
            row(&blog, "ref:a", "env:A"),
            row(&docs, "notify:deploys", "sub_0123"),
            row(&docs, "ref:api_key", "env:DOCS_API_KEY"),
        ]
    );
    assert_eq!(
        meta.platform_state(Some(&docs)).await.unwrap(),
        vec![row(&docs, "notify:deploys", "sub_0123"), row(&docs, "ref:api_key", "env:DOCS_API_KEY")]
    );
    // Overwrite one, remove one; removing an absent key is fine.
    meta.set_platform_state(&docs, "notify:deploys", Some("sub_4567")).await.unwrap();
    meta.set_platform_state(&blog, "ref:a", None).await.unwrap();
    meta.set_platform_state(&blog, "ref:a", None).await.unwrap();
    meta.set_platform_state(&docs, "never:set", None).await.unwrap();
    assert_eq!(
        meta.platform_state(None).await.unwrap(),
        vec![
            row(&blog, "ref:TOKEN", "env:BLOG_TOKEN"),
            row(&docs, "notify:deploys", "sub_4567"),
            row(&docs, "ref:api_key", "env:DOCS_API_KEY"),
        ]
    );
    // Long keys and values (a secret key of hundreds of bytes, a long
    // reference), and text that is not ASCII, are kept as given.
    let (long_key, long_value) = (format!("ref:{}", "k".repeat(600)), format!("env:{}é", "V".repeat(4200)));
    meta.set_platform_state(&blog, &long_key, Some(&long_value)).await.unwrap();
    assert_eq!(
        meta.platform_state(Some(&blog)).await.unwrap(),
        vec![row(&blog, "ref:TOKEN", "env:BLOG_TOKEN"), row(&blog, &long_key, &long_value)]
    );
    meta.set_platform_state(&blog, &long_key, None).await.unwrap();

    // An unknown site: NotFound, to set, remove or read.
    assert!(matches!(meta.set_platform_state(&nowhere, "k", Some("v")).await, Err(StoreError::NotFound(_))));
    assert!(matches!(meta.set_platform_state(&nowhere, "k", None).await, Err(StoreError::NotFound(_))));
    assert!(matches!(meta.platform_state(Some(&nowhere)).await, Err(StoreError::NotFound(_))));

    // Deleting a site takes its keys with it; the other site's stay.
    meta.delete_site(&docs).await.unwrap();
    assert_eq!(meta.platform_state(None).await.unwrap(), vec![row(&blog, "ref:TOKEN", "env:BLOG_TOKEN")]);
    // A site created again under the name starts with nothing remembered.
    meta.create_site(&docs, &main, 3).await.unwrap();
    assert!(meta.platform_state(Some(&docs)).await.unwrap().is_empty());
    assert_eq!(meta.platform_state(None).await.unwrap().len(), 1);
}

/// The suite every [`crate::BuildStore`] backend must pass (on an empty store).
pub async fn build_store(meta: &dyn MetaStore) {
    use crate::{BuildOutcome, EnvVar, GitConnection, WebhookDelivery};
    use chanto_core::BuildState;
    let site: SiteName = "app".parse().unwrap();
    let main: BranchName = "main".parse().unwrap();
    meta.create_site(&site, &main, 1).await.unwrap();

    // Connections: set, replace, read, delete.
    let conn = GitConnection {
        site: site.clone(),
        repository: "https://example.com/a.git".into(),
        credential: Some(vec![1, 2, 3]),
        webhook_secret: vec![9; 32],
        settings: "{}".into(),
        created_at: 1,
        updated_at: 1,
    };
    meta.set_git(conn.clone()).await.unwrap();
    meta.set_git(GitConnection { repository: "file:///r".into(), updated_at: 2, ..conn.clone() }).await.unwrap();
    let got = meta.get_git(&site).await.unwrap().unwrap();
    assert_eq!((got.repository.as_str(), got.created_at, got.updated_at), ("file:///r", 1, 2));
    assert_eq!(meta.list_git().await.unwrap().len(), 1);

    // The queue: first in, first out; a newer build of a branch supersedes a queued one.
    let b1 = meta.enqueue_build(new_build(1, &site, "main", 10), true).await.unwrap();
    assert_eq!(b1.state, BuildState::Queued);
    let b2 = meta.enqueue_build(new_build(2, &site, "main", 11), true).await.unwrap();
    assert_eq!(meta.get_build(&b1.id).await.unwrap().unwrap().state, BuildState::Superseded);
    meta.enqueue_build(new_build(3, &site, "dev", 12), true).await.unwrap();
    let (a, a_again, b) = (owner("node-a", "run-1"), owner("node-a", "run-2"), owner("node-b", "run-1"));
    let claimed = meta.claim_build(&a, 20).await.unwrap().unwrap();
    assert_eq!((claimed.id.clone(), claimed.state, claimed.started_at), (b2.id.clone(), BuildState::Running, Some(20)));
    meta.set_build_commit(&claimed.id, "abc", Some("msg".into()), None, 21).await.unwrap();
    meta.set_build_phases(&claimed.id, "[1]").await.unwrap();
    let done = meta
        .finish_build(
            &claimed.id,
            BuildOutcome { state: BuildState::Succeeded, error: None, deploy: None, phases: "[2]".into() },
            30,
        )
        .await
        .unwrap();
    assert_eq!(
        (done.commit.as_deref(), done.message.as_deref(), done.phases.as_str()),
        (Some("abc"), Some("msg"), "[2]")
    );
    let again = meta
        .finish_build(
            &claimed.id,
            BuildOutcome { state: BuildState::Failed, error: None, deploy: None, phases: "[]".into() },
            31,
        )
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    // A skipped build is recorded ended; only a queued build can be cancelled this way.
    let skipped = meta
        .enqueue_build(
            crate::NewBuild { skip_reason: Some("[skip ci]".into()), ..new_build(4, &site, "main", 13) },
            true,
        )
        .await
        .unwrap();
    assert_eq!((skipped.state, skipped.finished_at), (BuildState::Skipped, Some(13)));
    let queued = meta.enqueue_build(new_build(5, &site, "other", 14), true).await.unwrap();
    assert_eq!(meta.cancel_queued(&queued.id, "no", 15).await.unwrap().unwrap().state, BuildState::Cancelled);
    assert!(meta.cancel_queued(&queued.id, "no", 16).await.unwrap().is_none());
    assert!(meta.cancel_queued(&done.id, "no", 16).await.unwrap().is_none());
    // The dev build runs on node A. Node B leaves it alone while A's
    // heartbeat is fresh; nobody recovers a build of its own run.
    let dev = meta.claim_build(&a, 40).await.unwrap().unwrap();
    assert_eq!(dev.branch.as_str(), "dev");
    assert_eq!((dev.runner.as_deref(), dev.heartbeat_at), (Some("node-a"), Some(40)));
    assert!(meta.claim_build(&b, 41).await.unwrap().is_none());
    assert!(meta.recover_builds(&b, 40, 45).await.unwrap().is_empty(), "a fresh heartbeat of another node");
    assert!(meta.recover_builds(&a, 40, 45).await.unwrap().is_empty(), "its own run's fresh build");
    assert_eq!(meta.heartbeat_builds(&a, std::slice::from_ref(&dev.id), 60).await.unwrap(), []);
    assert_eq!(meta.get_build(&dev.id).await.unwrap().unwrap().heartbeat_at, Some(60));
    assert_eq!(
        meta.heartbeat_builds(&b, std::slice::from_ref(&dev.id), 20_000).await.unwrap(),
        std::slice::from_ref(&dev.id),
        "another node's heartbeat does not keep it"
    );
    assert!(meta.recover_builds(&b, 60, 20_000).await.unwrap().is_empty(), "a heartbeat at the limit is fresh");
    // A's heartbeat goes stale: B interrupts it, and A's runner learns it lost the build.
    let interrupted = meta.recover_builds(&b, 61, 20_060).await.unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!((&interrupted[0].id, interrupted[0].state), (&dev.id, BuildState::Interrupted));
    let why = interrupted[0].error.as_deref().unwrap_or_default();
    assert!(why.contains("node-a") && why.contains("no heartbeat for 20 s"), "{why}");
    assert!(meta.recover_builds(&b, i64::MAX, 20_061).await.unwrap().is_empty(), "interrupted once");
    assert_eq!(
        meta.heartbeat_builds(&a, std::slice::from_ref(&dev.id), 20_100).await.unwrap(),
        std::slice::from_ref(&dev.id)
    );
    let listed = meta.list_builds(&site, None, 10).await.unwrap();
    assert_eq!(listed.len(), 6);
    // The recovery queued dev's retry in the same transaction, in dev's place in the queue.
    let retry = listed.iter().find(|r| r.retry_of.as_ref() == Some(&dev.id)).expect("dev's retry");
    assert_eq!((retry.state, retry.created_at, retry.branch.as_str()), (BuildState::Queued, dev.created_at, "dev"));
    assert_eq!(retry.trigger, format!("retry of {} (interrupted)", dev.id));
    // It is the next build claimed.
    let claimed_retry = meta.claim_build(&b, 20_150).await.unwrap().unwrap();
    assert_eq!(claimed_retry.id, retry.id);
    // A retry interrupted in turn is not retried again.
    let again = meta.recover_builds(&a, i64::MAX, 20_160).await.unwrap();
    assert_eq!(again.iter().map(|r| &r.id).collect::<Vec<_>>(), [&retry.id]);
    let listed = meta.list_builds(&site, None, 10).await.unwrap();
    assert_eq!(listed.len(), 6, "no retry of a retry");
    let listed: Vec<_> = listed.into_iter().filter(|r| r.retry_of.is_none()).collect();
    // Newest first: the cancelled "other", the skipped "main", then the interrupted "dev".
    let order: Vec<_> = listed.iter().map(|b| (b.branch.as_str().to_owned(), b.state)).collect();
    assert_eq!(
        order[..3],
        [
            ("other".to_owned(), BuildState::Cancelled),
            ("main".to_owned(), BuildState::Skipped),
            ("dev".to_owned(), BuildState::Interrupted)
        ]
    );
    assert_eq!(meta.list_builds(&site, Some(&main), 1).await.unwrap().len(), 1);
    // Node A restarts (a new run of the same node): its last run's build is
    // certainly dead (one process per data directory) and is recovered at
    // once, whatever its heartbeat says; another node's fresh one is not.
    let late = meta.enqueue_build(new_build(6, &site, "late", 50), true).await.unwrap();
    let other = meta.enqueue_build(new_build(7, &site, "other2", 51), true).await.unwrap();
    assert_eq!(meta.claim_build(&a, 20_200).await.unwrap().unwrap().id, late.id);
    assert_eq!(meta.claim_build(&b, 20_200).await.unwrap().unwrap().id, other.id);
    let restarted = meta.recover_builds(&a_again, i64::MIN, 20_300).await.unwrap();
    assert_eq!(restarted.iter().map(|r| &r.id).collect::<Vec<_>>(), [&late.id]);
    assert_eq!(restarted[0].error.as_deref(), Some("the server stopped while this build ran"));
    assert_eq!(meta.get_build(&other.id).await.unwrap().unwrap().state, BuildState::Running);
    // Its retry is queued first (the place of `late`); take it out of the way.
    let late_retry = meta.claim_build(&b, 20_310).await.unwrap().unwrap();
    assert_eq!(late_retry.retry_of.as_ref(), Some(&late.id));
    meta.finish_build(
        &late_retry.id,
        BuildOutcome { state: BuildState::Failed, error: None, deploy: None, phases: "[]".into() },
        20_320,
    )
    .await
    .unwrap();
    // A build of the caller's own run whose heartbeat went stale lost its
    // runner (live runners keep theirs fresh): recovered like any other.
    let orphan = meta.enqueue_build(new_build(8, &site, "orphan", 52), true).await.unwrap();
    assert_eq!(meta.claim_build(&a_again, 20_400).await.unwrap().unwrap().id, orphan.id);
    meta.heartbeat_builds(&b, std::slice::from_ref(&other.id), 30_000).await.unwrap();
    let stale = meta.recover_builds(&a_again, 30_000 - 1000, 30_001).await.unwrap();
    assert_eq!(stale.iter().map(|r| &r.id).collect::<Vec<_>>(), [&orphan.id], "B's build is fresh");
    let why = stale[0].error.as_deref().unwrap_or_default();
    assert!(why.contains("ended without recording") && why.contains("no heartbeat for 9 s"), "{why}");

    // Variables: site-wide and per branch, replace, remove.
    let var = |branch: Option<&str>, value: &str| EnvVar {
        branch: branch.map(|b| b.parse().unwrap()),
        name: "API".into(),
        value: value.as_bytes().to_vec(),
        secret: false,
        updated_at: 1,
    };
    meta.set_env(&site, var(None, "a")).await.unwrap();
    meta.set_env(&site, var(None, "b")).await.unwrap();
    meta.set_env(&site, var(Some("dev"), "c")).await.unwrap();
    let vars = meta.list_env(&site).await.unwrap();
    assert_eq!(vars.len(), 2);
    assert_eq!((vars[0].branch.as_ref(), vars[0].value.as_slice()), (None, b"b".as_slice()));
    assert!(meta.unset_env(&site, Some(&"dev".parse().unwrap()), "API").await.unwrap());
    assert!(!meta.unset_env(&site, Some(&"dev".parse().unwrap()), "API").await.unwrap());

    // Build hooks are found by their secret's hash.
    let secret = ContentHash::of(b"secret");
    let hook = crate::BuildHook {
        id: "h1".into(),
        site: site.clone(),
        name: "cms".into(),
        branch: None,
        secret_hash: secret,
        created_at: 1,
    };
    meta.add_hook(hook.clone()).await.unwrap();
    assert_eq!(meta.find_hook(&secret).await.unwrap(), Some(hook));
    assert_eq!(meta.list_hooks(&site).await.unwrap().len(), 1);
    assert!(meta.delete_hook(&site, "h1").await.unwrap());
    assert!(meta.find_hook(&secret).await.unwrap().is_none());

    // Deliveries, newest first.
    for i in 0..3 {
        let d = WebhookDelivery {
            source: "github".into(),
            event: "push".into(),
            outcome: "refused".into(),
            detail: format!("n{i}"),
            build: None,
            at: i,
        };
        meta.record_delivery(&site, d).await.unwrap();
    }
    let ds = meta.list_deliveries(&site, 2).await.unwrap();
    assert_eq!(ds.iter().map(|d| d.detail.as_str()).collect::<Vec<_>>(), ["n2", "n1"]);

    // Polled heads, previews, branch removal, disconnect.
    meta.set_polled_head(&site, "main", "a").await.unwrap();
    meta.set_polled_head(&site, "main", "b").await.unwrap();
    assert_eq!(meta.polled_heads(&site).await.unwrap(), vec![("main".to_string(), "b".to_string())]);
    meta.set_preview_closed(&site, 7, Some(100)).await.unwrap();
    assert_eq!(meta.closed_previews(100).await.unwrap(), vec![(site.clone(), 7)]);
    assert!(meta.closed_previews(99).await.unwrap().is_empty());
    meta.set_production_branch(&site, &"trunk".parse().unwrap()).await.unwrap();
    assert_eq!(meta.get_site(&site).await.unwrap().unwrap().production_branch.as_str(), "trunk");
    meta.set_preview_closed(&site, 7, None).await.unwrap();
    assert!(meta.closed_previews(1000).await.unwrap().is_empty());
    meta.create_deploy(new_deploy(9, &site, "dev", false, 60)).await.unwrap();
    assert!(meta.branch(&site, &"dev".parse().unwrap()).await.unwrap().is_some());
    assert!(meta.delete_branch(&site, &"dev".parse().unwrap(), 70).await.unwrap());
    assert!(meta.branch(&site, &"dev".parse().unwrap()).await.unwrap().is_none());
    assert!(!meta.delete_branch(&site, &"dev".parse().unwrap(), 70).await.unwrap());
    assert!(meta.delete_git(&site).await.unwrap());
    assert!(meta.get_git(&site).await.unwrap().is_none());
}

/// The notification contract: state changes write the outbox in their own transaction, fan-out happens once,
/// a subscription's deliveries go out in order, attempts are kept, and pruning keeps what is pending.
pub async fn notify_store(meta: &dyn MetaStore) {
    use crate::{BuildOutcome, DeliveryAttempt, DeliveryNext, NewDelivery, Subscription};
    use chanto_core::BuildState;
    let site: SiteName = "app".parse().unwrap();
    let main: BranchName = "main".parse().unwrap();
    meta.create_site(&site, &main, 1).await.unwrap();
    let kinds = |events: &[crate::OutboxEvent]| events.iter().map(|e| e.kind.clone()).collect::<Vec<_>>();
    // A site nobody listens to writes no events.
    meta.enqueue_build(new_build(9, &site, "main", 1), true).await.unwrap();
    meta.cancel_queued(&chanto_core::BuildId::from_random([9; 8]), "x", 1).await.unwrap();
    assert!(meta.pending_events(10).await.unwrap().is_empty());
    assert!(!meta.record_site_event(&site, "certificate.failed", "main", "{}", 1).await.unwrap());
    assert!(meta.record_site_event(&site, "certificate.renamed", "main", "{}", 1).await.is_err());
    assert!(matches!(
        meta.record_site_event(&"nosite".parse().unwrap(), "certificate.failed", "main", "{}", 1).await,
        Err(StoreError::NotFound(_))
    ));

    // Subscriptions.
    let sub = |id: &str| Subscription {
        id: id.into(),
        site: site.clone(),
        channel: "webhook".into(),
        config: vec![1, 2],
        display: "https://example.com/…".into(),
        filter: "{}".into(),
        created_at: 2,
    };
    meta.add_subscription(sub("sub_a")).await.unwrap();
    meta.add_subscription(sub("sub_b")).await.unwrap();
    assert!(meta.add_subscription(sub("sub_a")).await.is_err(), "ids are unique");
    assert_eq!(meta.list_subscriptions(&site).await.unwrap().len(), 2);
    assert_eq!(meta.get_subscription(&site, "sub_a").await.unwrap().unwrap().config, vec![1, 2]);
    assert!(meta.get_subscription(&site, "sub_zz").await.unwrap().is_none());

    // A build's life and a deploy's life write the outbox.
    let b = meta.enqueue_build(new_build(1, &site, "main", 10), true).await.unwrap();
    let replaced_by = meta.enqueue_build(new_build(2, &site, "main", 11), true).await.unwrap();
    assert_eq!(meta.get_build(&b.id).await.unwrap().unwrap().state, BuildState::Superseded);
    let (a, node_b, b_again) = (owner("node-a", "run-1"), owner("node-b", "run-1"), owner("node-b", "run-2"));
    let running = meta.claim_build(&a, 12).await.unwrap().unwrap();
    assert_eq!(running.id, replaced_by.id);
    assert_eq!(kinds(&meta.pending_events(100).await.unwrap()).len(), 3, "no start before the commit is known");
    meta.set_build_commit(&running.id, "abc", None, None, 12).await.unwrap();
    meta.set_build_commit(&running.id, "abc", None, None, 12).await.unwrap();
    let d = meta.create_deploy(new_deploy(1, &site, "main", false, 13)).await.unwrap();
    meta.mark_ready(&d.id, &ContentHash::of(b"m1"), 14).await.unwrap();
    meta.activate(&d.id, ActivationKind::Deploy, 15).await.unwrap();
    let outcome =
        BuildOutcome { state: BuildState::Succeeded, error: None, deploy: Some(d.id.clone()), phases: "[]".into() };
    meta.finish_build(&running.id, outcome, 16).await.unwrap();
    let d2 = meta.create_deploy(new_deploy(2, &site, "main", false, 17)).await.unwrap();
    meta.mark_ready(&d2.id, &ContentHash::of(b"m2"), 18).await.unwrap();
    meta.activate(&d2.id, ActivationKind::Deploy, 19).await.unwrap();
    meta.rollback(&site, &main, None, 20).await.unwrap();
    // A skipped build reports nothing; a preview's activation and removal report as previews.
    meta.enqueue_build(
        crate::NewBuild { skip_reason: Some("[skip ci]".into()), ..new_build(3, &site, "main", 21) },
        true,
    )
    .await
    .unwrap();
    meta.set_preview_closed(&site, 7, None).await.unwrap();
    let p = meta.create_deploy(new_deploy(3, &site, "pr-7", false, 22)).await.unwrap();
    meta.mark_ready(&p.id, &ContentHash::of(b"m3"), 23).await.unwrap();
    meta.activate(&p.id, ActivationKind::Deploy, 24).await.unwrap();
    assert!(meta.delete_branch(&site, &"pr-7".parse().unwrap(), 2000).await.unwrap());

    let events = meta.pending_events(100).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            "build.queued",
            "build.cancelled",
            "build.queued",
            "build.started",
            "deploy.ready",
            "deploy.activated",
            "build.succeeded",
            "deploy.ready",
            "deploy.activated",
            "deploy.rolled_back",
            "deploy.ready",
            "preview.ready",
            "preview.removed"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!((events[1].build.as_ref(), events[1].at), (Some(&b.id), 11));
    assert_eq!(events[6].deploy.as_ref(), Some(&d.id), "a finished build names its deploy");
    let rolled = &events[9];
    assert_eq!((rolled.deploy.as_ref(), rolled.detail.as_deref()), (Some(&d.id), Some(d2.id.as_str())));
    assert_eq!(events[12].branch, "pr-7");
    assert_eq!(meta.pending_events(2).await.unwrap().len(), 2);

    // Fan-out happens once; deliveries only for subscriptions that still exist.
    let nd = |s: &str, key: Option<&str>| NewDelivery {
        subscription: s.into(),
        action: "send".into(),
        key: key.map(Into::into),
        event_kind: "build.queued".into(),
        event_id: "evt".into(),
        payload: "{}".into(),
    };
    let first = events[0].seq;
    assert!(
        meta.fan_out(first, vec![nd("sub_a", Some("k")), nd("sub_b", None), nd("sub_gone", None)], 30).await.unwrap()
    );
    assert!(!meta.fan_out(first, vec![nd("sub_a", None)], 31).await.unwrap(), "fanned out twice");
    assert!(meta.fan_out(events[1].seq, vec![nd("sub_a", Some("k"))], 32).await.unwrap());
    assert_eq!(meta.pending_events(100).await.unwrap().len(), events.len() - 2);
    // One due delivery per subscription, oldest first.
    let due = meta.due_deliveries(40, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.subscription.as_str()).collect::<Vec<_>>(), ["sub_a", "sub_b"]);
    assert!(meta.due_deliveries(29, 10).await.unwrap().is_empty(), "not due yet");
    let (a1, b1) = (due[0].clone(), due[1].clone());
    // A claim leases one attempt: a second claim (by any node), or a stale one, takes nothing.
    assert!(meta.claim_delivery(a1.id, 0, &a, 40, 45).await.unwrap());
    assert!(!meta.claim_delivery(a1.id, 0, &a, 40, 45).await.unwrap());
    assert!(!meta.claim_delivery(a1.id, 0, &node_b, 44, 45).await.unwrap(), "another node's unexpired lease");
    assert!(!meta.claim_delivery(b1.id, 3, &a, 40, 45).await.unwrap(), "attempts differ");
    assert_eq!(meta.due_deliveries(40, 10).await.unwrap().len(), 1, "sub_a's delivery is leased");
    assert!(
        meta.claim_delivery(a1.id, 0, &node_b, 45, 1000).await.unwrap(),
        "a lease that ran out, taken by another node"
    );
    assert_eq!(meta.next_due().await.unwrap(), Some(30), "sub_b's delivery is due; sub_a's leased");
    // A node starting frees only its own earlier runs' leases: never another node's, never its live run's.
    assert_eq!(meta.release_leases(&owner("node-a", "run-2")).await.unwrap(), 0, "node B's lease stays");
    assert_eq!(meta.release_leases(&node_b).await.unwrap(), 0, "the live run keeps its lease");
    assert!(!meta.claim_delivery(a1.id, 0, &a, 46, 47).await.unwrap());
    assert_eq!(meta.release_leases(&b_again).await.unwrap(), 1, "node B restarted: its last run's lease is freed");
    assert!(meta.claim_delivery(a1.id, 0, &a, 46, 47).await.unwrap());
    assert_eq!((a1.state.as_str(), a1.attempts, a1.key.as_deref()), ("pending", 0, Some("k")));
    let attempt = |n: u32, outcome: &str| DeliveryAttempt {
        n,
        at: 41,
        duration_ms: 5,
        status: Some(503),
        outcome: outcome.into(),
        response: "busy".into(),
    };
    meta.record_attempt(a1.id, attempt(1, "retry: 503"), DeliveryNext::Retry(100), 41).await.unwrap();
    let late = meta.record_attempt(a1.id, attempt(1, "delivered"), DeliveryNext::Delivered, 42).await;
    assert!(matches!(late, Err(StoreError::Conflict(_))), "a second record of attempt 1: {late:?}");
    assert_eq!(meta.next_due().await.unwrap(), Some(30), "sub_b's delivery is still due");
    meta.record_attempt(b1.id, attempt(1, "delivered"), DeliveryNext::Delivered, 42).await.unwrap();
    assert_eq!(meta.next_due().await.unwrap(), Some(100));
    assert!(meta.due_deliveries(99, 10).await.unwrap().is_empty(), "sub_a waits for its first delivery");
    assert!(!meta.newer_delivered("sub_a", "k", a1.id).await.unwrap());
    meta.record_attempt(a1.id, attempt(2, "delivered"), DeliveryNext::Delivered, 101).await.unwrap();
    let a2 = meta.due_deliveries(200, 10).await.unwrap().remove(0);
    assert!(a2.id > a1.id);
    assert!(meta.newer_delivered("sub_a", "k", a1.id - 1).await.unwrap());
    assert!(!meta.newer_delivered("sub_a", "other", a1.id - 1).await.unwrap());
    meta.record_attempt(a2.id, attempt(1, "dead: 404"), DeliveryNext::Dead, 201).await.unwrap();
    assert_eq!(meta.next_due().await.unwrap(), None);

    let listed = meta.list_notify_deliveries(&site, None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|d| d.state.as_str()).collect::<Vec<_>>(), ["dead", "delivered", "delivered"]);
    assert_eq!(meta.list_notify_deliveries(&site, Some("sub_b"), 10).await.unwrap().len(), 1);
    let (d1, attempts) = meta.get_notify_delivery(&site, a1.id).await.unwrap().unwrap();
    assert_eq!((d1.state.as_str(), d1.attempts, d1.last_error), ("delivered", 2, None));
    assert_eq!(attempts.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(), ["retry: 503", "delivered"]);
    assert_eq!(attempts[0].status, Some(503));
    assert!(meta.get_notify_delivery(&"other".parse().unwrap(), a1.id).await.is_err(), "no such site");

    // An ended delivery can be sent again (as a new delivery); a pending one cannot.
    let again = meta.redeliver(&site, a2.id, 202).await.unwrap().expect("a2 exists");
    assert!(again > a2.id);
    let (copy, attempts) = meta.get_notify_delivery(&site, again).await.unwrap().unwrap();
    assert_eq!((copy.state.as_str(), copy.attempts, copy.next_at, attempts.len()), ("pending", 0, 202, 0));
    assert_eq!(
        (copy.subscription, copy.key, copy.event_id),
        (a2.subscription.clone(), a2.key.clone(), a2.event_id.clone())
    );
    assert!(matches!(meta.redeliver(&site, again, 203).await, Err(StoreError::Conflict(_))));
    assert_eq!(meta.redeliver(&site, 999_999, 203).await.unwrap(), None);
    meta.claim_delivery(again, 0, &a, 203, 204).await.unwrap();
    meta.record_attempt(again, attempt(1, "delivered"), DeliveryNext::Delivered, 204).await.unwrap();

    // The one pull request comment.
    assert_eq!(meta.forge_comment("sub_a", 7).await.unwrap(), None);
    meta.set_forge_comment("sub_a", 7, "123").await.unwrap();
    meta.set_forge_comment("sub_a", 7, "124").await.unwrap();
    assert_eq!(meta.forge_comment("sub_a", 7).await.unwrap().as_deref(), Some("124"));

    // Pruning keeps pending work; removing a subscription removes its deliveries.
    meta.fan_out(events[2].seq, vec![nd("sub_b", None)], 300).await.unwrap();
    assert!(meta.prune_notifications(1000).await.unwrap() >= 5);
    assert_eq!(meta.list_notify_deliveries(&site, None, 10).await.unwrap().len(), 1);
    // Old events go whether fanned out or not (sent that late they would mislead).
    let recent = events.iter().filter(|e| e.at >= 1000).count();
    assert_eq!(meta.pending_events(100).await.unwrap().len(), recent);
    assert!(meta.delete_subscription(&site, "sub_b").await.unwrap());
    assert!(!meta.delete_subscription(&site, "sub_b").await.unwrap());
    assert!(meta.list_notify_deliveries(&site, None, 10).await.unwrap().is_empty());
    // An event the control plane decides (certificates) goes through the
    // same outbox, its body in `detail`.
    assert!(meta.record_site_event(&site, "certificate.expiring", "main", "{\"x\":1}", 2000).await.unwrap());
    let last = meta.pending_events(100).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.branch.as_str(), last.detail.as_deref()),
        ("certificate.expiring", "main", Some("{\"x\":1}"))
    );
    assert_eq!((last.build, last.deploy), (None, None));
    // Deleting the site takes everything with it.
    meta.delete_site(&site).await.unwrap();
    assert!(meta.pending_events(100).await.unwrap().is_empty());
}

/// Runs the node suite (tokens and heartbeats) against an empty repository.
pub async fn node_store(meta: &dyn MetaStore) {
    use crate::node_wire::{Heartbeat, NodeRole, Refusal};
    // Tokens: stored by hash, listed oldest first, never confused.
    let (h1, h2) = (ContentHash::of(b"chn_one"), ContentHash::of(b"chn_two"));
    let t1 = meta.add_node_token("nt_01", "zone-a", &h1, 10).await.unwrap();
    assert_eq!((t1.id.as_str(), t1.name.as_str(), t1.created_at, t1.revoked_at), ("nt_01", "zone-a", 10, None));
    meta.add_node_token("nt_02", "zone-b", &h2, 11).await.unwrap();
    assert!(matches!(
        meta.add_node_token("nt_01", "again", &ContentHash::of(b"x"), 12).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(meta.add_node_token("nt_03", "same hash", &h1, 12).await, Err(StoreError::Conflict(_))));
    let listed = meta.list_node_tokens().await.unwrap();
    assert_eq!(listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["nt_01", "nt_02"]);
    assert_eq!(meta.node_token_by_hash(&h2).await.unwrap().unwrap().id, "nt_02");
    assert!(meta.node_token_by_hash(&ContentHash::of(b"chn_unknown")).await.unwrap().is_none());
    // An API token's hash is no node token, and the other way round.
    meta.add_token("api", &ContentHash::of(b"chanto_api"), 13).await.unwrap();
    assert!(meta.node_token_by_hash(&ContentHash::of(b"chanto_api")).await.unwrap().is_none());
    assert!(!meta.token_exists(&h1).await.unwrap());
    // Use is noted and never goes back in time.
    meta.touch_node_token("nt_01", 20).await.unwrap();
    meta.touch_node_token("nt_01", 15).await.unwrap();
    assert_eq!(meta.node_token_by_hash(&h1).await.unwrap().unwrap().last_used_at, Some(20));
    // Revocation: kept and listed, the first time stays.
    let revoked = meta.revoke_node_token("nt_01", 30).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(30));
    assert_eq!(meta.revoke_node_token("nt_01", 40).await.unwrap().unwrap().revoked_at, Some(30));
    assert!(meta.revoke_node_token("nt_99", 40).await.unwrap().is_none());
    assert_eq!(meta.node_token_by_hash(&h1).await.unwrap().unwrap().revoked_at, Some(30));
    assert_eq!(meta.list_node_tokens().await.unwrap().len(), 2);
    assert_eq!(meta.node_token_by_hash(&h2).await.unwrap().unwrap().revoked_at, None);

    // Heartbeats: one record per node, replaced, first_seen kept.
    let hb = |id: &str, zone: &str, version: u64| Heartbeat {
        node_id: id.into(),
        name: format!("edge-{id}"),
        zone: zone.into(),
        role: NodeRole::Edge,
        routing_version: version,
        snapshot_age_ms: Some(1500),
        ready: true,
        draining: false,
        refused: None,
        software: "0.1.0".into(),
        edge_addr: Some("10.0.0.1:8080".into()),
        wanted_certs: vec![],
        traffic: Some(crate::node_wire::Traffic {
            window_ms: 60_000,
            requests: 900,
            client_errors: 12,
            server_errors: 3,
        }),
    };
    let first = meta.record_heartbeat(&hb("n1", "b", 3), 100).await.unwrap();
    assert_eq!(first.traffic, hb("n1", "b", 3).traffic, "traffic is kept");
    assert_eq!((first.first_seen, first.last_heartbeat, first.routing_version), (100, 100, 3));
    meta.record_heartbeat(&hb("n2", "a", 2), 110).await.unwrap();
    let refusing = Heartbeat {
        refused: Some(Refusal { version: 5, error: "blob b3… of site docs is missing".into() }),
        draining: true,
        ready: false,
        snapshot_age_ms: None,
        edge_addr: None,
        wanted_certs: vec![],
        role: NodeRole::All,
        traffic: None,
        ..hb("n1", "c", 4)
    };
    let again = meta.record_heartbeat(&refusing, 200).await.unwrap();
    assert_eq!((again.first_seen, again.last_heartbeat, again.routing_version), (100, 200, 4));
    assert_eq!(again.refused, refusing.refused);
    assert_eq!((again.role, again.ready, again.draining, again.zone.as_str()), (NodeRole::All, false, true, "c"));
    assert_eq!((again.snapshot_age_ms, again.edge_addr.as_deref(), again.traffic), (None, None, None));
    let nodes = meta.list_nodes(0).await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(), ["n2", "n1"], "by zone");
    assert_eq!(nodes[1], again);
    assert_eq!(nodes[0].snapshot_age_ms, Some(1500));
    // A refusal that is over is cleared by the next heartbeat.
    let cleared = meta.record_heartbeat(&hb("n1", "c", 5), 210).await.unwrap();
    assert_eq!(cleared.refused, None);
    // Silent nodes drop out of the list, and are pruned.
    assert_eq!(meta.list_nodes(150).await.unwrap().len(), 1);
    assert_eq!(meta.prune_nodes(150).await.unwrap(), 1);
    assert_eq!(meta.list_nodes(0).await.unwrap().len(), 1);
    // Large versions and ages survive.
    let big = meta
        .record_heartbeat(&Heartbeat { snapshot_age_ms: Some(1 << 40), ..hb("n3", "a", 1 << 53) }, 300)
        .await
        .unwrap();
    assert_eq!((big.routing_version, big.snapshot_age_ms), (1 << 53, Some(1 << 40)));
}

/// Runs the domain-store suite against an empty repository. Panics on the first failure.
pub async fn domain_store(meta: &dyn MetaStore) {
    use crate::domains::*;
    let (docs, blog): (SiteName, SiteName) = ("docs".parse().unwrap(), "blog".parse().unwrap());
    let main: BranchName = "main".parse().unwrap();
    meta.create_site(&docs, &main, 1).await.unwrap();
    meta.create_site(&blog, &main, 1).await.unwrap();
    let new = |name: &str, branch: Option<&str>, twin: Option<&str>| NewDomain {
        name: name.into(),
        branch: branch.map(|b| b.parse().unwrap()),
        twin_of: twin.map(str::to_owned),
        verify_token: format!("tok-{name}"),
    };
    // An apex with its www twin, and a branch's domain: the first is primary.
    let added = meta
        .add_domains(&docs, &[new("example.com", None, None), new("www.example.com", None, Some("example.com"))], 10)
        .await
        .unwrap();
    assert_eq!(added.len(), 2);
    assert!(added[0].primary && !added[1].primary);
    assert_eq!(added[0].state, DomainState::PendingVerification);
    assert_eq!((added[0].verified_at, added[0].cert_id.as_deref(), added[0].created_at), (None, None, 10));
    assert_eq!(added[1].twin_of.as_deref(), Some("example.com"));
    assert_eq!(added[0].verify_token, "tok-example.com");
    meta.add_domains(&docs, &[new("staging.example.com", Some("staging"), None)], 11).await.unwrap();
    // A name belongs to one site: the error names the site that has it, and
    // nothing of a refused batch is kept.
    match meta.add_domains(&blog, &[new("blog.example.org", None, None), new("example.com", None, None)], 12).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("site docs"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(meta.domain("blog.example.org").await.unwrap().is_none(), "all or none");
    match meta.add_domains(&docs, &[new("example.com", None, None)], 12).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("already"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        meta.add_domains(&"nosite".parse().unwrap(), &[new("x.example", None, None)], 12).await,
        Err(StoreError::NotFound(_))
    ));
    meta.add_domains(&blog, &[new("blog.example.org", None, None)], 13).await.unwrap();
    let listed = meta.domains(Some(&docs)).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["example.com", "staging.example.com", "www.example.com"]
    );
    assert_eq!(listed[1].branch.as_ref().map(|b| b.as_str()), Some("staging"));
    let all = meta.domains(None).await.unwrap();
    assert_eq!(all.iter().map(|d| (d.site.as_str(), d.name.as_str())).next(), Some(("blog", "blog.example.org")));
    assert_eq!(all.len(), 4);
    assert_eq!(meta.domain("www.example.com").await.unwrap().unwrap().site, docs);

    // One primary per site.
    meta.set_primary(&docs, "www.example.com").await.unwrap();
    let primaries: Vec<String> =
        meta.domains(Some(&docs)).await.unwrap().into_iter().filter(|d| d.primary).map(|d| d.name).collect();
    assert_eq!(primaries, ["www.example.com"]);
    assert!(matches!(meta.set_primary(&docs, "blog.example.org").await, Err(StoreError::NotFound(_))));
    assert!(matches!(meta.set_primary(&blog, "example.com").await, Err(StoreError::NotFound(_))));
    assert_eq!(meta.domains(Some(&docs)).await.unwrap().iter().filter(|d| d.primary).count(), 1, "unchanged");

    // States and verification.
    meta.set_domain_state("example.com", DomainState::Failed, Some("DNS points elsewhere"), Some("add an A record"))
        .await
        .unwrap();
    let failed = meta.domain("example.com").await.unwrap().unwrap();
    assert_eq!((failed.state, failed.reason.as_deref()), (DomainState::Failed, Some("DNS points elsewhere")));
    meta.mark_verified("example.com", "http", 20).await.unwrap();
    meta.mark_verified("example.com", "dns", 30).await.unwrap();
    let verified = meta.domain("example.com").await.unwrap().unwrap();
    assert_eq!(
        (verified.state, verified.reason, verified.verified_at, verified.verified_by.as_deref()),
        (DomainState::Issuing, None, Some(20), Some("http"))
    );
    assert!(matches!(meta.mark_verified("nope.example", "http", 1).await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        meta.set_domain_state("nope.example", DomainState::Active, None, None).await,
        Err(StoreError::NotFound(_))
    ));

    // TLS settings: defaults, set, listed only when not default.
    assert_eq!(meta.site_tls(&docs).await.unwrap(), SiteTls::default());
    assert!(meta.all_site_tls().await.unwrap().is_empty());
    let strict =
        SiteTls { https_redirect: true, hsts_max_age: 63_072_000, hsts_include_subdomains: true, hsts_preload: true };
    meta.set_site_tls(&docs, &strict).await.unwrap();
    meta.set_site_tls(&blog, &SiteTls::default()).await.unwrap();
    assert_eq!(meta.site_tls(&docs).await.unwrap(), strict);
    assert_eq!(meta.all_site_tls().await.unwrap(), vec![(docs.clone(), strict)]);
    assert_eq!(strict.hsts_header().as_deref(), Some("max-age=63072000; includeSubDomains; preload"));
    assert!(matches!(meta.site_tls(&"nosite".parse().unwrap()).await, Err(StoreError::NotFound(_))));

    // ACME: a challenge and the backoff ride on the domain until a
    // certificate is stored, which clears them.
    // A TLS-ALPN-01 challenge keeps its certificate; an HTTP-01 one put
    // after it has none.
    let alpn = AcmeChallenge {
        token: "tok_A-b".into(),
        key_authorization: "tok_A-b.thumb".into(),
        alpn_pem: Some("-----BEGIN CERTIFICATE-----\n...".into()),
    };
    meta.set_challenge("www.example.com", Some(&alpn)).await.unwrap();
    assert_eq!(meta.domain("www.example.com").await.unwrap().unwrap().challenge, Some(alpn));
    let ch = AcmeChallenge { token: "tok_A-b".into(), key_authorization: "tok_A-b.thumb".into(), alpn_pem: None };
    meta.set_challenge("www.example.com", Some(&ch)).await.unwrap();
    meta.record_order_failure("www.example.com", 3, Some(9_000)).await.unwrap();
    let www = meta.domain("www.example.com").await.unwrap().unwrap();
    assert_eq!((www.challenge.as_ref(), www.attempts, www.next_attempt_at), (Some(&ch), 3, Some(9_000)));
    assert!(matches!(meta.set_challenge("missing.example", Some(&ch)).await, Err(StoreError::NotFound(_))));
    assert!(matches!(meta.record_order_failure("missing.example", 1, None).await, Err(StoreError::NotFound(_))));
    // Accounts: the first stored for a directory stays.
    let dir = "https://acme.example/dir";
    assert_eq!(meta.acme_account(dir).await.unwrap(), None);
    assert_eq!(meta.put_acme_account(dir, &[1, 2, 3], 10).await.unwrap(), vec![1, 2, 3]);
    assert_eq!(meta.put_acme_account(dir, &[9, 9], 11).await.unwrap(), vec![1, 2, 3], "the first account stays");
    assert_eq!(meta.acme_account(dir).await.unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(meta.acme_account("https://other.example/dir").await.unwrap(), None);
    // Leases: one holder at a time; the holder extends; a lapsed one moves.
    assert!(meta.take_lease("acme:example.com", "node-a", 1_000, 500).await.unwrap());
    assert!(!meta.take_lease("acme:example.com", "node-b", 1_200, 500).await.unwrap(), "held by node-a");
    assert!(meta.take_lease("acme:example.com", "node-a", 1_400, 500).await.unwrap(), "the holder extends");
    assert!(!meta.take_lease("acme:example.com", "node-b", 1_800, 500).await.unwrap(), "extended to 1900");
    assert!(meta.take_lease("acme:example.com", "node-b", 1_901, 500).await.unwrap(), "lapsed: node-b takes it");
    meta.release_lease("acme:example.com", "node-a").await.unwrap();
    assert!(!meta.take_lease("acme:example.com", "node-a", 1_950, 500).await.unwrap(), "not node-a's to release");
    meta.release_lease("acme:example.com", "node-b").await.unwrap();
    assert!(meta.take_lease("acme:example.com", "node-a", 1_960, 500).await.unwrap(), "released: free");
    assert!(meta.take_lease("acme:other.example", "node-b", 1_960, 500).await.unwrap(), "names are separate");

    // Certificates: stored once, served by the named domains, kept sealed.
    let cert = CertificateRecord {
        id: "c1".into(),
        source: CertificateSource::Upload,
        names: vec!["example.com".into(), "www.example.com".into()],
        chain_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        key_sealed: vec![0, 1, 2, 255],
        not_before: 100,
        not_after: 1 << 42,
        issuer: "Test CA".into(),
        created_at: 40,
    };
    assert!(matches!(
        meta.store_certificate(&cert, &["example.com".into(), "missing.example".into()], "upload", 40).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(meta.certificate("c1").await.unwrap().is_none(), "nothing kept of a refused store");
    meta.store_certificate(&cert, &["example.com".into(), "www.example.com".into()], "upload", 40).await.unwrap();
    meta.store_certificate(&cert, &["www.example.com".into()], "upload", 41).await.unwrap();
    assert_eq!(meta.certificate("c1").await.unwrap().unwrap(), cert);
    let www = meta.domain("www.example.com").await.unwrap().unwrap();
    assert_eq!((www.state, www.cert_id.as_deref()), (DomainState::Active, Some("c1")));
    assert_eq!((www.verified_at, www.verified_by.as_deref()), (Some(40), Some("upload")));
    assert_eq!((www.challenge, www.attempts, www.next_attempt_at), (None, 0, None), "a stored certificate clears them");
    assert_eq!(meta.domain("example.com").await.unwrap().unwrap().verified_by.as_deref(), Some("http"));
    assert_eq!(meta.certificates_in_use().await.unwrap(), vec![cert.clone()]);
    let spare = CertificateRecord { id: "c0".into(), ..cert.clone() };
    meta.store_certificate(&spare, &[], "upload", 42).await.unwrap();
    assert_eq!(meta.certificates_in_use().await.unwrap().len(), 1);
    assert_eq!(meta.prune_certificates().await.unwrap(), 1);
    assert!(meta.certificate("c0").await.unwrap().is_none());

    // The base domain's certificates: a failure before any certificate, a
    // certificate (clearing the backoff), a failure after it (keeping it);
    // one in use is never pruned; removing lets it go.
    assert_eq!(meta.base_certificates().await.unwrap(), vec![]);
    meta.record_base_failure("*.base.test", 1, Some(5_000), "hook failed", 50).await.unwrap();
    let failed = &meta.base_certificates().await.unwrap()[0];
    assert_eq!((failed.cert_id.as_deref(), failed.attempts, failed.reason.as_deref()), (None, 1, Some("hook failed")));
    let wild = CertificateRecord { id: "cb".into(), names: vec!["*.base.test".into()], ..cert.clone() };
    meta.store_base_certificate("*.base.test", &wild, 51).await.unwrap();
    meta.record_base_failure("*.base.test", 2, Some(6_000), "renewal failed", 52).await.unwrap();
    let base = meta.base_certificates().await.unwrap();
    assert_eq!(base.len(), 1);
    assert_eq!(
        (base[0].cert_id.as_deref(), base[0].attempts, base[0].next_attempt_at, base[0].updated_at),
        (Some("cb"), 2, Some(6_000), 52)
    );
    meta.store_base_certificate("*.base.test", &wild, 53).await.unwrap();
    let base = &meta.base_certificates().await.unwrap()[0];
    assert_eq!((base.attempts, base.next_attempt_at, base.reason.as_deref()), (0, None, None));
    assert_eq!(meta.prune_certificates().await.unwrap(), 0);
    assert!(meta.certificates_in_use().await.unwrap().iter().any(|c| c.id == "cb"));
    // A base host asked for on demand: a row without a certificate, once;
    // its challenge until the certificate is stored.
    assert!(meta.want_base_certificate("docs.base.test", 60).await.unwrap());
    assert!(!meta.want_base_certificate("docs.base.test", 61).await.unwrap());
    let ch = AcmeChallenge { token: "t1".into(), key_authorization: "t1.k".into(), alpn_pem: None };
    meta.set_base_challenge("docs.base.test", Some(&ch)).await.unwrap();
    assert!(matches!(meta.set_base_challenge("nope.base.test", Some(&ch)).await, Err(StoreError::NotFound(_))));
    let rows = meta.base_certificates().await.unwrap();
    let host = rows.iter().find(|r| r.pattern == "docs.base.test").unwrap();
    assert_eq!((host.cert_id.as_deref(), host.challenge.as_ref(), host.updated_at), (None, Some(&ch), 60));
    meta.store_base_certificate("docs.base.test", &wild, 62).await.unwrap();
    let rows = meta.base_certificates().await.unwrap();
    let host = rows.iter().find(|r| r.pattern == "docs.base.test").unwrap();
    assert_eq!(
        (host.cert_id.as_deref(), host.challenge.as_ref()),
        (Some("cb"), None),
        "a stored certificate clears it"
    );
    assert!(meta.remove_base_certificate("docs.base.test").await.unwrap());
    assert!(meta.remove_base_certificate("*.base.test").await.unwrap());
    assert!(!meta.remove_base_certificate("*.base.test").await.unwrap());
    assert_eq!(meta.prune_certificates().await.unwrap(), 1);
    assert!(meta.certificate("cb").await.unwrap().is_none());
    assert!(meta.certificate("c1").await.unwrap().is_some(), "in use: kept");

    // Removing the apex removes its twin; the primary moves on.
    meta.set_primary(&docs, "www.example.com").await.unwrap();
    assert_eq!(meta.remove_domain(&docs, "example.com").await.unwrap(), ["example.com", "www.example.com"]);
    let left = meta.domains(Some(&docs)).await.unwrap();
    assert_eq!(left.iter().map(|d| (d.name.as_str(), d.primary)).collect::<Vec<_>>(), [("staging.example.com", true)]);
    assert!(matches!(meta.remove_domain(&docs, "example.com").await, Err(StoreError::NotFound(_))));
    assert!(matches!(meta.remove_domain(&blog, "staging.example.com").await, Err(StoreError::NotFound(_))));
    // A freed name can be taken by another site.
    meta.add_domains(&blog, &[new("example.com", None, None)], 50).await.unwrap();
    assert_eq!(meta.prune_certificates().await.unwrap(), 1, "c1 is served by nothing now");
    // Deleting a site drops its domains and settings.
    meta.delete_site(&blog).await.unwrap();
    assert!(meta.domain("example.com").await.unwrap().is_none());
    assert_eq!(meta.domains(None).await.unwrap().len(), 1);
}

/// Runs the account suite (users, personal tokens, the audit log) against
/// an empty repository.
pub async fn account_store(meta: &dyn MetaStore) {
    use crate::accounts::{ApiToken, AuditEntry, AuditQuery, Role, Scope, UserRecord};
    let user = |id: &str, name: &str, role: Role| UserRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        role,
        password_hash: Some(format!("$argon2id$hash-of-{name}")),
        created_at: 10,
        last_login_at: None,
        sso_subject: None,
    };
    // Users: unique names, listed by name, found by name and id.
    meta.create_user(&user("u_2", "bob", Role::Viewer)).await.unwrap();
    meta.create_user(&user("u_1", "alice", Role::Admin)).await.unwrap();
    assert!(matches!(meta.create_user(&user("u_3", "alice", Role::Viewer)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(meta.create_user(&user("u_1", "carol", Role::Viewer)).await, Err(StoreError::Conflict(_))));
    let names: Vec<String> = meta.users().await.unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(meta.user_by_name("bob").await.unwrap().unwrap(), user("u_2", "bob", Role::Viewer));
    assert_eq!(meta.user_by_id("u_1").await.unwrap().unwrap().name, "alice");
    assert!(meta.user_by_name("nobody").await.unwrap().is_none());
    // Role and password changes; sign-ins noted.
    assert_eq!(meta.set_user_role("bob", Role::Developer).await.unwrap().unwrap().role, Role::Developer);
    assert!(meta.set_user_role("nobody", Role::Admin).await.unwrap().is_none());
    assert!(meta.set_user_password("bob", None).await.unwrap());
    assert!(!meta.set_user_password("nobody", Some("x")).await.unwrap());
    assert_eq!(meta.user_by_name("bob").await.unwrap().unwrap().password_hash, None);
    meta.touch_user_login("u_2", 99).await.unwrap();
    assert_eq!(meta.user_by_name("bob").await.unwrap().unwrap().last_login_at, Some(99));
    // Single sign-on identities: one user each, found by it, unlinked with None.
    let sub = "https://id.example.com u-123";
    assert!(meta.user_by_sso(sub).await.unwrap().is_none());
    assert_eq!(meta.set_user_sso("bob", Some(sub)).await.unwrap().unwrap().sso_subject.as_deref(), Some(sub));
    assert_eq!(meta.user_by_sso(sub).await.unwrap().unwrap().name, "bob");
    assert!(meta.set_user_sso("bob", Some(sub)).await.unwrap().is_some(), "linking again is no conflict");
    assert!(matches!(meta.set_user_sso("alice", Some(sub)).await, Err(StoreError::Conflict(_))));
    assert!(meta.set_user_sso("nobody", Some("other")).await.unwrap().is_none());
    let mut linked = user("u_3", "carol", Role::Viewer);
    linked.sso_subject = Some(sub.to_owned());
    assert!(matches!(meta.create_user(&linked).await, Err(StoreError::Conflict(_))), "a second user with it");
    assert_eq!(meta.set_user_sso("bob", None).await.unwrap().unwrap().sso_subject, None);
    assert!(meta.user_by_sso(sub).await.unwrap().is_none());

    // Personal tokens: by hash with their owner, never an admin or node token.
    let token = |id: &str, user_id: &str, scope: Scope| ApiToken {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        name: format!("{id} laptop"),
        scope,
        created_at: 20,
        expires_at: Some(1000),
        last_used_at: None,
        revoked_at: None,
    };
    let (h1, h2, h3) = (ContentHash::of(b"chp_1"), ContentHash::of(b"chp_2"), ContentHash::of(b"chp_3"));
    meta.add_api_token(&token("pt_1", "u_1", Scope::Admin), &h1).await.unwrap();
    meta.add_api_token(&token("pt_2", "u_2", Scope::Deploy), &h2).await.unwrap();
    assert!(matches!(meta.add_api_token(&token("pt_1", "u_2", Scope::Read), &h3).await, Err(StoreError::Conflict(_))));
    assert!(matches!(meta.add_api_token(&token("pt_3", "u_2", Scope::Read), &h1).await, Err(StoreError::Conflict(_))));
    assert!(matches!(meta.add_api_token(&token("pt_3", "u_9", Scope::Read), &h3).await, Err(StoreError::NotFound(_))));
    let (t, owner) = meta.api_token_by_hash(&h2).await.unwrap().unwrap();
    assert_eq!((t, owner.name.as_str()), (token("pt_2", "u_2", Scope::Deploy), "bob"));
    assert!(meta.api_token_by_hash(&h3).await.unwrap().is_none());
    assert!(!meta.token_exists(&h1).await.unwrap(), "a personal token is no admin token");
    assert!(meta.node_token_by_hash(&h1).await.unwrap().is_none(), "nor a node token");
    let ids = |list: Vec<ApiToken>| list.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(meta.api_tokens(None).await.unwrap()), ["pt_1", "pt_2"]);
    assert_eq!(ids(meta.api_tokens(Some("u_2")).await.unwrap()), ["pt_2"]);
    // Use never goes back in time; revocation keeps the first time.
    meta.touch_api_token("pt_2", 50).await.unwrap();
    meta.touch_api_token("pt_2", 40).await.unwrap();
    assert_eq!(meta.api_token_by_hash(&h2).await.unwrap().unwrap().0.last_used_at, Some(50));
    assert_eq!(meta.revoke_api_token("pt_2", 60).await.unwrap().unwrap().revoked_at, Some(60));
    assert_eq!(meta.revoke_api_token("pt_2", 70).await.unwrap().unwrap().revoked_at, Some(60));
    assert!(meta.revoke_api_token("pt_9", 70).await.unwrap().is_none());
    // Sessions: by id hash with their user; used, ended one by one or all
    // of a user's at once, pruned when idle or too old.
    use crate::accounts::SessionRecord;
    let session = |user_id: &str, at: i64| SessionRecord {
        user_id: user_id.to_owned(),
        csrf: format!("csrf-{at}"),
        created_at: at,
        last_seen_at: at,
    };
    let (s1, s2, s3) = (ContentHash::of(b"s1"), ContentHash::of(b"s2"), ContentHash::of(b"s3"));
    meta.create_session(&s1, &session("u_2", 100)).await.unwrap();
    meta.create_session(&s2, &session("u_2", 200)).await.unwrap();
    meta.create_session(&s3, &session("u_1", 300)).await.unwrap();
    assert!(matches!(meta.create_session(&s1, &session("u_1", 1)).await, Err(StoreError::Conflict(_))));
    let (got, who) = meta.session(&s1).await.unwrap().unwrap();
    assert_eq!((got, who.name.as_str()), (session("u_2", 100), "bob"));
    assert!(meta.session(&ContentHash::of(b"nope")).await.unwrap().is_none());
    meta.touch_session(&s1, 150).await.unwrap();
    meta.touch_session(&s1, 120).await.unwrap();
    assert_eq!(meta.session(&s1).await.unwrap().unwrap().0.last_seen_at, 150);
    assert!(meta.delete_session(&s1).await.unwrap());
    assert!(!meta.delete_session(&s1).await.unwrap());
    meta.create_session(&s1, &session("u_2", 400)).await.unwrap();
    assert_eq!(meta.delete_user_sessions("u_2").await.unwrap(), 2);
    assert!(meta.session(&s2).await.unwrap().is_none());
    // Pruning: idle since before 250, or made before 0.
    meta.create_session(&s2, &session("u_2", 240)).await.unwrap();
    assert_eq!(meta.prune_sessions(250, 0).await.unwrap(), 1);
    assert!(meta.session(&s3).await.unwrap().is_some());
    assert_eq!(meta.prune_sessions(0, 301).await.unwrap(), 1, "too old, however fresh");
    meta.create_session(&s2, &session("u_2", 500)).await.unwrap();

    // Invitations: one per user (a new one replaces the old), used once,
    // never after they expire.
    let (i1, i2, i3) = (ContentHash::of(b"i1"), ContentHash::of(b"i2"), ContentHash::of(b"i3"));
    meta.create_invite(&i1, "u_2", 100, 1000).await.unwrap();
    assert_eq!(meta.invite(&i1, 500).await.unwrap().unwrap().name, "bob");
    meta.create_invite(&i2, "u_2", 200, 1000).await.unwrap();
    assert!(meta.invite(&i1, 500).await.unwrap().is_none(), "replaced");
    assert!(meta.invite(&i2, 1000).await.unwrap().is_none(), "expired at its time");
    assert_eq!(meta.take_invite(&i2, 500).await.unwrap().unwrap().name, "bob");
    assert!(meta.take_invite(&i2, 500).await.unwrap().is_none(), "used once");
    meta.create_invite(&i3, "u_2", 200, 300).await.unwrap();
    assert!(meta.take_invite(&i3, 400).await.unwrap().is_none(), "expired");
    assert!(meta.invite(&i3, 0).await.unwrap().is_none(), "an expired one is gone once tried");
    meta.create_invite(&i1, "u_2", 600, 9000).await.unwrap();

    // Deleting a user takes their tokens, sessions and invitations.
    assert!(meta.delete_user("bob").await.unwrap());
    assert!(meta.session(&s2).await.unwrap().is_none());
    assert!(meta.invite(&i1, 700).await.unwrap().is_none());
    assert!(!meta.delete_user("bob").await.unwrap());
    assert!(meta.api_token_by_hash(&h2).await.unwrap().is_none());
    assert_eq!(ids(meta.api_tokens(None).await.unwrap()), ["pt_1"]);

    // The audit log: increasing ids, newest first, paged, by actor.
    let entry = |at: i64, actor: &str, action: &str| AuditEntry {
        id: 0,
        at,
        actor: actor.to_owned(),
        via: "pt_1".to_owned(),
        source: "127.0.0.1".to_owned(),
        action: action.to_owned(),
        target: "/api/v1/sites/docs/env/API_KEY".to_owned(),
        status: 200,
    };
    let mut ids = Vec::new();
    for (i, actor) in ["alice", "bob", "alice", "alice"].iter().enumerate() {
        ids.push(meta.append_audit(&entry(100 + i as i64, actor, "set_env")).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let all = meta.audit(&AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|e| e.at).collect::<Vec<_>>(), [103, 102, 101, 100]);
    assert_eq!(all[0], AuditEntry { id: ids[3], ..entry(103, "alice", "set_env") });
    let page = meta.audit(&AuditQuery { limit: 2, before: Some(ids[2]), actor: None }).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[1], ids[0]]);
    let alice = meta.audit(&AuditQuery { limit: 10, actor: Some("alice".into()), before: None }).await.unwrap();
    assert_eq!(alice.len(), 3);
    // A zero limit still answers (one entry), a huge one is capped.
    assert_eq!(meta.audit(&AuditQuery { limit: 0, ..Default::default() }).await.unwrap().len(), 1);
    assert_eq!(meta.audit(&AuditQuery { limit: u32::MAX, ..Default::default() }).await.unwrap().len(), 4);
}

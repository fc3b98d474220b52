//! `chanto dev DIR`: serves a local folder through the edge itself (the same
//! rules, headers, 404 page and HTTP semantics as a deploy), rebuilding
//! whenever a file changes. A rule file with errors is reported with file,
//! line and column, and the last good version keeps serving, as a deploy
//! with bad rules never goes live.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use chanto_core::content::content_type_for;
use chanto_core::{ContentHash, DeployId, Manifest, ManifestEntry};
use chanto_edge::{Edge, EdgeConfig};
use chanto_store::{BlobStore, LocalBlobStore, RoutingRow, RoutingSink, RoutingTable};

use chanto_control::walk::{LocalFile, walk};

/// How often the folder is checked for changes.
const POLL: Duration = Duration::from_millis(300);

/// What `chanto dev` was asked.
pub struct DevOptions {
    /// The folder to serve.
    pub dir: PathBuf,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Request header with the client's country, for country rules.
    pub country_header: Option<axum::http::HeaderName>,
}

/// A file as last read: its identity, and its hash.
type Seen = HashMap<String, ((u64, i128, (u64, u64)), ContentHash)>;

struct Dev {
    dir: PathBuf,
    edge: Arc<Edge>,
    blobs: Arc<LocalBlobStore>,
    seen: Seen,
    signature: Option<blake3::Hash>,
    version: u64,
}

/// Runs until interrupted.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("chanto-dev-{}", std::process::id()));
    let blobs = Arc::new(LocalBlobStore::open(&scratch).with_context(|| format!("creating {}", scratch.display()))?);
    let mut config = EdgeConfig::new("localhost");
    config.fallback_site = Some("dev".into());
    // The edge believes a country header only from trusted proxies; in
    // `chanto dev` the developer on this machine plays that proxy.
    if opts.country_header.is_some() {
        config.trusted_proxies = vec!["127.0.0.0/8".parse()?, "::1/128".parse()?];
    }
    config.country_header = opts.country_header;
    let edge = Edge::new(config, blobs.clone() as Arc<dyn BlobStore>);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}; pass --listen with a free address", opts.listen))?;
    let addr = listener.local_addr()?;
    let mut dev =
        Dev { dir: opts.dir.clone(), edge: edge.clone(), blobs, seen: HashMap::new(), signature: None, version: 0 };
    dev.rebuild().await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chanto_edge::server::serve(
        listener,
        chanto_edge::router(edge),
        chanto_edge::server::ServerLimits { drain_timeout: Duration::from_secs(1), ..Default::default() },
        async move {
            let _ = stop_rx.await;
        },
    ));
    println!("Serving {} at http://{addr}/ (rules and headers as deployed; Ctrl-C stops)", opts.dir.display());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(POLL) => {
                if let Err(e) = dev.rebuild().await {
                    eprintln!("error: {e:#}");
                }
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

impl Dev {
    /// Reads the folder; if anything changed, stores new files, compiles the
    /// rules and serves the new version. Errors leave the last version live.
    async fn rebuild(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.clone();
        let files = tokio::task::spawn_blocking(move || walk(&dir)).await??;
        let mut sig = blake3::Hasher::new();
        for f in &files {
            sig.update(f.path.as_bytes()).update(&f.size.to_le_bytes()).update(&f.mtime_ns.to_le_bytes());
            sig.update(&f.ctime_ns.to_le_bytes());
        }
        let sig = sig.finalize();
        if self.signature == Some(sig) {
            return Ok(());
        }
        let mut seen = Seen::new();
        let mut manifest = Manifest { version: Manifest::VERSION, ..Default::default() };
        let mut rule_sources = Vec::new();
        for f in &files {
            let identity = (f.size, f.mtime_ns, f.ino);
            let (hash, bytes) = match self.seen.get(&f.path) {
                Some((id, hash)) if *id == identity => (*hash, None),
                _ => {
                    let bytes = read(f).await?;
                    let hash = self.blobs.put_bytes(bytes.clone()).await?;
                    (hash, Some(bytes))
                }
            };
            seen.insert(f.path.clone(), (identity, hash));
            // Rule files configure the site; they are not served as part of it.
            if chanto_rules::is_rule_file(&f.path) {
                let bytes = match bytes {
                    Some(b) => b,
                    None => self.blobs.get(&hash).await?,
                };
                rule_sources.push((f.path.clone(), bytes));
                continue;
            }
            let entry =
                ManifestEntry { hash, size: f.size, content_type: content_type_for(&f.path), variants: Vec::new() };
            manifest.files.insert(f.path.clone(), entry);
        }
        let refs: Vec<(&str, &[u8])> = rule_sources.iter().map(|(p, b)| (p.as_str(), &b[..])).collect();
        let rules = match chanto_rules::compile(&refs) {
            Ok(mut set) => {
                chanto_control::access::seal_auth(&mut set).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                set
            }
            Err(errors) => {
                self.signature = Some(sig);
                self.seen = seen;
                eprintln!("The rule files have errors; still serving the last good version:");
                for e in errors {
                    eprintln!("  {e}");
                }
                return Ok(());
            }
        };
        for w in &rules.warnings {
            eprintln!("  {w}");
        }
        let (redirects, headers) = (rules.redirects.len(), rules.headers.len());
        manifest.rules = (!rules.is_empty()).then_some(rules);
        let manifest_hash = self.blobs.put_bytes(Bytes::from(serde_json::to_vec(&manifest)?)).await?;
        self.version += 1;
        let row = RoutingRow {
            site: "dev".parse()?,
            branch: "main".parse()?,
            label: "main".into(),
            production: true,
            deploy: DeployId::from_random(chanto_store::random_bytes()),
            manifest: manifest_hash,
            ready_at: chanto_store::now_millis(),
        };
        let table = RoutingTable {
            version: self.version,
            branches: vec![row],
            permalinks: Vec::new(),
            access: Vec::new(),
            proxy_origins: Vec::new(),
        };
        self.edge.publish(table).await?;
        if self.version > 1 {
            println!("Reloaded: {} files, {redirects} redirect rules, {headers} header rules", files.len());
        }
        self.signature = Some(sig);
        self.seen = seen;
        Ok(())
    }
}

async fn read(f: &LocalFile) -> anyhow::Result<Bytes> {
    let path: &Path = &f.abs;
    Ok(Bytes::from(tokio::fs::read(path).await.with_context(|| format!("reading {}", path.display()))?))
}

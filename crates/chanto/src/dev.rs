//! `chanto dev DIR`: serves a local folder through the edge itself (the same
//! rules, headers, 404 page and HTTP semantics as a deploy), rebuilding
//! whenever a file changes, and reloading open pages once the new version is
//! served (`crate::reload`). A rule file with errors is reported with file,
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
/// After a change is seen, the folder must stay unchanged this long before
/// it is served, so an editor's save or a build writing many files becomes
/// one reload of the finished state, not several of half-written ones.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A folder that never settles is served anyway after this long.
const MAX_SETTLE: Duration = Duration::from_secs(2);

/// What `chanto dev` was asked.
pub struct DevOptions {
    /// The folder to serve.
    pub dir: PathBuf,
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// Request header with the client's country, for country rules.
    pub country_header: Option<axum::http::HeaderName>,
    /// Reload open pages on change (`--no-reload` turns it off).
    pub reload: bool,
    /// Most live-reload streams at once.
    pub reload_clients: usize,
    /// How often an idle live-reload stream gets a keep-alive comment.
    pub reload_keepalive: Duration,
}

/// A file as last read: its identity, and its hash.
type Seen = HashMap<String, ((u64, i128, (u64, u64)), ContentHash)>;

struct Dev {
    dir: PathBuf,
    /// The project root `dir` is the published directory of, and its layout
    /// (root rule files, ignored files), when DIR was a project root.
    project: Option<(PathBuf, chanto_build::ProjectLayout)>,
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
    // A project root serves what its config publishes, as `chanto deploy` deploys it.
    let project = crate::deploy::project_layout(&opts.dir)?.map(|l| (opts.dir.clone(), l));
    let (dir, chosen_by) = match &project {
        Some((root, layout)) => (root.join(&layout.publish), format!(" ({})", layout.chosen_by)),
        None => (opts.dir.clone(), String::new()),
    };
    let mut dev =
        Dev { dir: dir.clone(), project, edge: edge.clone(), blobs, seen: HashMap::new(), signature: None, version: 0 };
    let first = dev.scan().await?;
    dev.rebuild(&first).await?;
    let reload = opts.reload.then(|| crate::reload::Reload::new(opts.reload_clients, opts.reload_keepalive));
    if let Some(r) = &reload {
        r.served(dev.version);
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = chanto_edge::router(edge);
    let shared = reload.clone();
    let server = tokio::spawn(chanto_edge::server::serve_per_peer(
        listener,
        move |peer| crate::reload::DevService { edge: service.with_peer(peer), reload: shared.clone() },
        chanto_edge::server::ServerLimits { drain_timeout: Duration::from_secs(1), ..Default::default() },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let reloading = if reload.is_some() { "; pages reload when files change" } else { "" };
    say(format_args!(
        "Serving {}{chosen_by} at http://{addr}/ (rules and headers as deployed{reloading}; Ctrl-C stops)",
        dir.display()
    ));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(POLL) => {
                match dev.settle().await {
                    Ok(true) => {
                        if let Some(r) = &reload {
                            r.served(dev.version);
                        }
                    }
                    Ok(false) => {}
                    Err(e) => complain(format_args!("error: {e:#}")),
                }
            }
        }
    }
    if let Some(r) = &reload {
        r.close();
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The folder's files as last listed, and their signature (names, sizes,
/// times): equal signatures mean nothing changed.
struct Scan {
    files: Vec<LocalFile>,
    signature: blake3::Hash,
}

impl Dev {
    /// Lists the folder.
    async fn scan(&self) -> anyhow::Result<Scan> {
        let dir = self.dir.clone();
        let project = self.project.clone();
        let files = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<LocalFile>> {
            let mut files = walk(&dir)?;
            if let Some((root, layout)) = &project {
                // As `chanto deploy` sends them.
                chanto_control::walk::apply_layout(&mut files, root, layout)
                    .with_context(|| format!("reading the rule files at {}", root.display()))?;
            }
            Ok(files)
        })
        .await??;
        let mut sig = blake3::Hasher::new();
        for f in &files {
            sig.update(f.path.as_bytes()).update(&f.size.to_le_bytes()).update(&f.mtime_ns.to_le_bytes());
            sig.update(&f.ctime_ns.to_le_bytes());
        }
        Ok(Scan { files, signature: sig.finalize() })
    }

    /// If the folder changed, waits until it has stayed unchanged for
    /// [`DEBOUNCE`] (at most [`MAX_SETTLE`]), then rebuilds. Returns whether
    /// a new version is being served.
    async fn settle(&mut self) -> anyhow::Result<bool> {
        let mut scan = self.scan().await?;
        if self.signature == Some(scan.signature) {
            return Ok(false);
        }
        let started = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(DEBOUNCE).await;
            let again = self.scan().await?;
            let settled = again.signature == scan.signature;
            scan = again;
            if settled || started.elapsed() >= MAX_SETTLE {
                break;
            }
        }
        self.rebuild(&scan).await
    }

    /// Stores new files, compiles the rules and serves the new version.
    /// Errors leave the last version live. Returns whether a new version is
    /// being served.
    async fn rebuild(&mut self, scan: &Scan) -> anyhow::Result<bool> {
        let (files, sig) = (&scan.files, scan.signature);
        if self.signature == Some(sig) {
            return Ok(false);
        }
        let mut seen = Seen::new();
        let mut manifest = Manifest { version: Manifest::VERSION, ..Default::default() };
        let mut rule_sources = Vec::new();
        for f in files {
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
                complain(format_args!("The rule files have errors; still serving the last good version:"));
                for e in errors {
                    complain(format_args!("  {e}"));
                }
                return Ok(false);
            }
        };
        for w in &rules.warnings {
            complain(format_args!("  {w}"));
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
        let table = RoutingTable::from_rows(self.version, vec![row], Vec::new(), Vec::new(), Vec::new());
        self.edge.publish(table).await?;
        if self.version > 1 {
            say(format_args!("Reloaded: {} files, {redirects} redirect rules, {headers} header rules", files.len()));
        }
        self.signature = Some(sig);
        self.seen = seen;
        Ok(true)
    }
}

/// Prints a line on stdout. A reader that went away (`chanto dev . | head -1`
/// to grab the address, a closed terminal, a log pipe that died) does not
/// stop the server: the browser tabs on it keep working, the line is
/// dropped, and Ctrl-C stays the way to stop. `println!` would panic here
/// (Rust ignores SIGPIPE), and `main`'s closed-pipe exit is for the
/// short-lived commands only.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// [`say`] on stderr: errors and warnings about the folder.
fn complain(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

async fn read(f: &LocalFile) -> anyhow::Result<Bytes> {
    let path: &Path = &f.abs;
    Ok(Bytes::from(tokio::fs::read(path).await.with_context(|| format!("reading {}", path.display()))?))
}

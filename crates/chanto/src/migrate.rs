//! `chanto migrate`: moves a stopped embedded install (SQLite `DATA/meta.db`
//! and `DATA/blobs`) onto PostgreSQL and an S3 bucket. Blobs go first (those
//! the target has are skipped, so a rerun continues where one stopped), then
//! all metadata in one target transaction, then every table's row count is
//! compared. `DATA/secret.key` and `DATA/install-id` stay in the data
//! directory: the node serving the new backends needs the same secret.key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use chanto_core::ContentHash;
use chanto_store::dump::{self, Dump, ImportOptions};
use chanto_store::{BlobStore, ByteStream, LocalBlobStore, SqliteMeta};
use futures_util::StreamExt;

/// `chanto migrate` flags.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Stop `chanto serve` on DATA first. Then, e.g.:
  AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… PGPASSWORD=… \\
    chanto migrate --from /var/lib/chanto --to-meta postgres://chanto@db:5432/chanto \\
      --to-blobs s3://bucket/chanto --s3-endpoint https://s3.internal
  chanto serve --data /var/lib/chanto --meta postgres://chanto@db:5432/chanto \\
      --blobs s3://bucket/chanto --s3-endpoint https://s3.internal
Interrupted? Run the same command again: blobs already copied are skipped, and
no metadata is written until the last step, in one transaction.")]
pub struct MigrateArgs {
    /// The data directory of the install to copy (holds meta.db and blobs/).
    #[arg(long, value_name = "DATA_DIR")]
    pub from: PathBuf,
    /// The target metadata store: `postgres://USER@HOST:PORT/DB` (password
    /// from the URL, --meta-password-file, $PGPASSWORD or ~/.pgpass), or
    /// `sqlite:PATH`.
    #[arg(long, value_name = "URL")]
    pub to_meta: String,
    /// The target blob store: `s3://BUCKET/PREFIX` (credentials from AWS_*)
    /// or `file:DIR`.
    #[arg(long, value_name = "URL")]
    pub to_blobs: String,
    /// The URL of an S3-compatible server for `--to-blobs s3://…`.
    #[arg(long, value_name = "URL", env = "CHANTO_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// A file holding the PostgreSQL password (its first line).
    #[arg(long, value_name = "PATH")]
    pub meta_password_file: Option<PathBuf>,
    /// Take over an `s3://` prefix whose marker names another install.
    #[arg(long)]
    pub blobs_claim: bool,
    /// Delete every row of chanto's tables in the target metadata store
    /// before loading (refused without it when the target holds any row).
    #[arg(long)]
    pub replace_target: bool,
}

/// Blobs copied at once.
const PARALLEL: usize = 8;
/// Blobs checked against the target per request batch.
const BATCH: usize = 256;

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let data = &args.from;
    // Checked before anything is opened, so nothing is created in a wrong place.
    if !data.is_dir() {
        bail!("--from {}: no such directory; give the data directory of a stopped `chanto serve`", data.display());
    }
    let meta_db = data.join("meta.db");
    if !meta_db.is_file() {
        bail!(
            "--from {}: not a chanto data directory ({} is missing); give the directory `chanto serve --data` used",
            data.display(),
            meta_db.display()
        );
    }
    let Some(lock) = crate::serve::lock_data_dir(data)? else {
        bail!("{} is being served: stop `chanto serve` on {} first", data.display(), data.display());
    };
    let source_meta = SqliteMeta::open(&meta_db)
        .map_err(|e| anyhow::anyhow!("opening the source metadata {}: {e}", meta_db.display()))?;
    let source_blobs = LocalBlobStore::open(data.join("blobs"))
        .with_context(|| format!("opening the source blobs {}", data.join("blobs").display()))?;

    let (target_meta, meta_name): (Box<dyn Dump>, String) = match args.to_meta.strip_prefix("sqlite:") {
        Some(path) => {
            if args.meta_password_file.is_some() {
                bail!("--meta-password-file is for a PostgreSQL --to-meta URL; SQLite has no password");
            }
            let path = PathBuf::from(path);
            if path == meta_db || path.canonicalize().ok() == meta_db.canonicalize().ok() {
                bail!("--to-meta {} is the source database; give another path", path.display());
            }
            let m =
                SqliteMeta::open(&path).map_err(|e| anyhow::anyhow!("opening --to-meta {}: {e}", path.display()))?;
            (Box::new(m), format!("SQLite at {}", path.display()))
        }
        None => {
            let pg = crate::serve::postgres_meta("--to-meta", &args.to_meta, args.meta_password_file.as_deref(), true)
                .await?;
            let name = format!("PostgreSQL at {}", pg.url());
            (Box::new(pg), name)
        }
    };
    let target_blobs: Arc<dyn BlobStore> = match args.to_blobs.as_str() {
        url if url.starts_with("s3://") => Arc::new(
            crate::serve::s3_store(
                url,
                args.s3_endpoint.clone(),
                crate::serve::install_id(data)?,
                args.blobs_claim,
                false,
            )
            .await?,
        ),
        url if url.starts_with("file:") => {
            let dir = PathBuf::from(&url[5..]);
            if dir.canonicalize().ok().is_some() && dir.canonicalize().ok() == data.join("blobs").canonicalize().ok() {
                bail!("--to-blobs {url} is the source blob directory; give another directory");
            }
            Arc::new(LocalBlobStore::open(&dir).with_context(|| format!("opening --to-blobs {}", dir.display()))?)
        }
        other => bail!("--to-blobs {other:?}: expected s3://BUCKET/PREFIX or file:DIR"),
    };

    // Refuse a non-empty target before spending time on blobs.
    if !args.replace_target {
        let held: Vec<String> = target_meta
            .counts()
            .await?
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| format!("{t} ({n})"))
            .collect();
        if !held.is_empty() {
            bail!(
                "the target metadata store {meta_name} is not empty: it holds rows in {}; migrate into an empty database, or pass --replace-target to delete chanto's tables there first",
                held.join(", ")
            );
        }
    } else {
        eprintln!(
            "warning: --replace-target: every row of chanto's tables in {meta_name} will be deleted and replaced"
        );
    }

    let blobs = copy_blobs(&source_blobs, data, target_blobs.as_ref()).await?;
    target_blobs.sync().await.context("flushing the target blob store")?;

    eprintln!("metadata: copying every table into {meta_name} in one transaction");
    let report = dump::copy(&source_meta, target_meta.as_ref(), ImportOptions { replace: args.replace_target })
        .await
        .map_err(|e| anyhow::anyhow!("copying the metadata into {meta_name}: {e}"))?;
    println!("{:<22} {:>10} {:>10}", "table", "source", "target");
    for ((t, a), (_, b)) in report.source.iter().zip(&report.target) {
        println!("{t:<22} {a:>10} {b:>10}{}", if a == b { "" } else { "   MISMATCH" });
    }
    let mismatched = report.mismatches();
    if !mismatched.is_empty() {
        let names: Vec<&str> = mismatched.iter().map(|(t, _, _)| *t).collect();
        bail!("row counts differ in table(s) {} after the copy; do not serve from the target", names.join(", "));
    }
    println!(
        "migrated {}: {} blobs ({} bytes; {} copied, {} already there), {} rows in {} tables into {meta_name} and {}",
        data.display(),
        blobs.total,
        blobs.bytes,
        blobs.copied,
        blobs.skipped,
        report.source.iter().map(|(_, n)| n).sum::<u64>(),
        report.source.len(),
        args.to_blobs
    );
    println!(
        "next: chanto serve --data {} --meta <the --to-meta URL> --blobs {}{} (keep {} with it: it unseals the secrets)",
        data.display(),
        args.to_blobs,
        args.s3_endpoint.as_deref().map(|e| format!(" --s3-endpoint {e}")).unwrap_or_default(),
        data.join("secret.key").display()
    );
    drop(lock);
    Ok(())
}

/// What the blob copy did.
struct BlobReport {
    total: u64,
    copied: u64,
    skipped: u64,
    bytes: u64,
}

/// Copies every source blob the target lacks, `PARALLEL` at once. Bytes are
/// hashed as they are read: a source blob that does not hash to its name
/// stops the copy naming it (and the target, which verifies too, keeps nothing of it).
async fn copy_blobs(source: &LocalBlobStore, data: &Path, target: &dyn BlobStore) -> anyhow::Result<BlobReport> {
    let all = source.list().await.with_context(|| format!("listing the blobs in {}", data.join("blobs").display()))?;
    let total = all.len() as u64;
    eprintln!("blobs: {total} in {}", data.join("blobs").display());
    let copied = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let mut skipped = 0u64;
    for chunk in all.chunks(BATCH) {
        let missing = target.missing(chunk).await.context("checking which blobs the target has")?;
        skipped += (chunk.len() - missing.len()) as u64;
        let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(missing)
            .map(|hash| {
                let (copied, bytes) = (&copied, &bytes);
                async move {
                    let blob = source.open(&hash).await.with_context(|| format!("reading source blob {hash}"))?;
                    let len = blob.len;
                    let body = verified(hash, blob.body);
                    target.put(&hash, body, len).await.with_context(|| format!("copying blob {hash} to the target"))?;
                    copied.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(len, Ordering::Relaxed);
                    Ok(())
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for r in results {
            r?;
        }
        eprintln!(
            "blobs: {}/{total} done ({} copied, {} bytes; {skipped} already in the target)",
            copied.load(Ordering::Relaxed) + skipped,
            copied.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed)
        );
    }
    Ok(BlobReport { total, copied: copied.into_inner(), skipped, bytes: bytes.into_inner() })
}

/// `body` with its hash checked at the end: the last item is an error if
/// the bytes do not hash to `hash`, so the target never completes the write.
fn verified(hash: ContentHash, body: ByteStream) -> ByteStream {
    let state = (body, blake3::Hasher::new(), false);
    Box::pin(futures_util::stream::unfold(state, move |(mut body, mut hasher, done)| async move {
        if done {
            return None;
        }
        match body.next().await {
            Some(Ok(chunk)) => {
                hasher.update(&chunk);
                Some((Ok(chunk), (body, hasher, false)))
            }
            Some(Err(e)) => Some((Err(e), (body, hasher, true))),
            None => {
                let actual = ContentHash::from_blake3(hasher.finalize());
                if actual == hash {
                    None
                } else {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "source blob {hash} is damaged: its bytes hash to {actual}; restore it from a backup or delete the deploys using it"
                        ),
                    );
                    Some((Err(e), (body, hasher, true)))
                }
            }
        }
    }))
}

//! `chanto backup create | verify | restore`: a consistent copy of what cannot
//! be rebuilt (metadata, blobs, the key that opens sealed secrets), a check
//! that a copy is whole, and a restore into a new data directory. Embedded
//! installs (SQLite + local blobs) are backed up by the command; PostgreSQL
//! and S3 installs by `pg_dump` and a copy of the bucket (docs/backup.md),
//! which `verify --meta … --blobs …` then checks.
//!
//! A backup directory holds `meta.db` (a `VACUUM INTO` snapshot), `blobs/ab/cdef…`
//! (the layout of `DATA/blobs`), `secret.key`, `install-id`, `admin.token`
//! when present, and `backup.json`, written last: without it the backup is
//! incomplete.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use chanto_core::{ContentHash, DeployId, Manifest};
use chanto_store::snapshot::{SQLITE_SCHEMA_VERSION, SnapshotFile};
use chanto_store::{BlobStore, LocalBlobStore, MetaStore, S3BlobStore, SqliteMeta};
use serde::{Deserialize, Serialize};

use crate::cli::{BackupCommand, BackupCreateArgs, BackupRestoreArgs, BackupVerifyArgs};
use crate::deploy::human_bytes;

/// The backup format this chanto writes and reads.
const FORMAT: u32 = 1;
/// The file that marks a backup complete, written last.
const INFO_FILE: &str = "backup.json";
/// The metadata snapshot.
const META_FILE: &str = "meta.db";
/// Blobs, fanned out as in `DATA/blobs`.
const BLOBS_DIR: &str = "blobs";
/// backup.json is a few kilobytes; anything past this is not one.
const MAX_INFO_BYTES: u64 = 1 << 20;
/// Files of the data directory a backup carries besides metadata and blobs,
/// with the mode each is written with.
const DATA_FILES: [(&str, u32); 3] = [
    // Opens sealed secrets (git credentials, secret variables, notification
    // settings): without it they are lost; as secret as the admin token.
    ("secret.key", 0o600),
    // Names this install in an S3 prefix's marker object.
    ("install-id", 0o644),
    // The admin token in clear, as `chanto serve` wrote it.
    ("admin.token", 0o600),
];

/// What `backup.json` records. Unknown fields are refused: a file that says
/// more than chanto wrote was not written by chanto.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupInfo {
    /// [`FORMAT`].
    format: u32,
    /// The chanto that wrote the backup.
    chanto_version: String,
    /// The snapshot's SQLite schema version.
    schema_version: u32,
    /// When the snapshot was taken (RFC 3339, UTC).
    created_at: String,
    /// The snapshot's BLAKE3 hash and size.
    meta_hash: ContentHash,
    meta_bytes: u64,
    /// Rows per table in the snapshot.
    tables: BTreeMap<String, u64>,
    /// Blobs copied, and their bytes.
    blob_count: u64,
    blob_bytes: u64,
    /// The other files copied (names from [`DATA_FILES`]), by BLAKE3 hash.
    files: BTreeMap<String, ContentHash>,
}

/// Runs a `chanto backup` subcommand.
pub async fn run(cmd: BackupCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Create(args) => create(&args, json).await,
        BackupCommand::Verify(args) => verify(&args, json).await,
        BackupCommand::Restore(args) => restore(&args, json).await,
    }
}

/// The procedure for installs on PostgreSQL or S3 (also in docs/backup.md).
const REMOTE_PROCEDURE: &str = "\
This install keeps its metadata or blobs outside the data directory, so
`chanto backup create` does not copy them (it copies SQLite + local blobs
only). Back it up in this order (docs/backup.md has the details):

  1. Dump the database first:
       pg_dump --format=custom --file=chanto.pgdump 'postgres://USER@HOST/DB'
  2. Then copy the bucket prefix (blobs are immutable, and the garbage
     collector deletes only blobs no deploy references, so every blob the
     dump references is still there when the copy runs after it):
       aws s3 sync s3://BUCKET/PREFIX ./blobs-copy   (or rclone, mc mirror)
  3. Copy DATA/secret.key (mode 0600: it opens the sealed secrets) and
     DATA/install-id.

To check a live install, or a restored database and bucket:
  chanto backup verify --meta 'postgres://USER@HOST/DB' --blobs s3://BUCKET/PREFIX [--s3-endpoint URL] [--deep]
";

async fn create(args: &BackupCreateArgs, json: bool) -> anyhow::Result<()> {
    if args.meta.trim() != "sqlite" || args.blobs != "file" {
        print!("{REMOTE_PROCEDURE}");
        bail!(
            "no backup was written: --meta {} / --blobs {} are not the embedded stores; follow the procedure above",
            chanto_store::postgres::redact_url(args.meta.trim()),
            args.blobs
        );
    }
    let data = &args.data;
    let live = data.join(META_FILE);
    if !live.is_file() {
        bail!(
            "{} has no {META_FILE}: it is not a chanto data directory; pass the directory `chanto serve --data` uses with --data",
            data.display()
        );
    }
    let dest = &args.dest;
    refuse_non_empty(dest, "DEST")?;
    let staging = Staging::beside(dest)?;
    let tmp = staging.path.clone();

    // 1. The metadata at one instant, without the server's lock.
    let snapshot = tmp.join(META_FILE);
    chanto_store::snapshot::sqlite_snapshot(&live, &snapshot).context("taking the metadata snapshot")?;
    let created_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (schema_version, tables) = {
        let snap = SnapshotFile::open(&snapshot)?;
        (snap.schema_version()?, snap.table_counts()?)
    };
    let (meta_hash, meta_bytes) = hash_file(&snapshot)?;

    // 2. Every blob the snapshot references, read from the snapshot (not the
    // live database, which has moved on), each hash-checked as it is copied.
    let refs = SqliteMeta::open_read_only(&snapshot).context("reading the metadata snapshot")?;
    let mut source = Blobs::Copy { from: data.join("blobs"), to: tmp.join(BLOBS_DIR) };
    let walked = walk(&refs, &mut source).await?;
    drop(refs);
    if let Some(problem) = walked.problems.first() {
        let rerun = if walked.missing_required > 0 {
            " A blob the snapshot references is gone from the data directory: most likely the server's garbage collector deleted it because its deploy was deleted after the snapshot was taken. Run `chanto backup create` again."
        } else {
            ""
        };
        bail!("no backup was written: {problem}{rerun}");
    }

    // 3. The files that open and name the install.
    let mut files = BTreeMap::new();
    for (name, mode) in DATA_FILES {
        let from = data.join(name);
        match std::fs::read(&from) {
            Ok(bytes) => {
                write_new(&tmp.join(name), &bytes, mode)?;
                files.insert(name.to_owned(), ContentHash::of(&bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
        }
    }
    sync_dir_tree(&tmp)?;

    // 4. backup.json last, then the whole directory into place.
    let info = BackupInfo {
        format: FORMAT,
        chanto_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        created_at,
        meta_hash,
        meta_bytes,
        tables,
        blob_count: walked.blobs,
        blob_bytes: walked.bytes,
        files,
    };
    write_new(&tmp.join(INFO_FILE), &serde_json::to_vec_pretty(&info)?, 0o600)?;
    staging.finish(dest)?;

    if json {
        return crate::commands::print_json(&serde_json::json!({ "dest": dest, "backup": info }));
    }
    let deploys = info.tables.get("deploys").copied().unwrap_or(0);
    let sites = info.tables.get("sites").copied().unwrap_or(0);
    println!("Backup written to {}", dest.display());
    println!(
        "  metadata: snapshot taken {} (schema {}, {sites} sites, {deploys} deploys)",
        info.created_at, info.schema_version
    );
    println!("  blobs: {} ({})", info.blob_count, human_bytes(info.blob_bytes));
    if walked.skipped > 0 {
        println!("  skipped {} blobs of uploads still in progress (those deploys were not finished)", walked.skipped);
    }
    if info.files.contains_key("secret.key") {
        println!(
            "  secret.key copied with mode 0600: it opens the stored secrets (git credentials, secret variables, notification settings). Keep this backup as private as the data directory."
        );
    }
    println!(
        "Check it with `chanto backup verify {}`; practise the restore with `chanto backup restore {} --data NEW_DIR`.",
        dest.display(),
        dest.display()
    );
    Ok(())
}

async fn verify(args: &BackupVerifyArgs, json: bool) -> anyhow::Result<()> {
    let (what, report) = match (&args.src, &args.meta, &args.blobs) {
        (Some(src), None, None) => (src.display().to_string(), verify_dir(src).await?),
        (None, Some(meta), Some(blobs)) => {
            let redacted = chanto_store::postgres::redact_url(meta);
            (format!("{redacted} + {blobs}"), verify_remote(args, meta, blobs).await?)
        }
        _ => bail!("give a backup directory (chanto backup verify DIR) or --meta URL and --blobs s3://… together"),
    };
    if json {
        crate::commands::print_json(&serde_json::json!({
            "checked": what,
            "ok": report.problems.is_empty(),
            "summary": report.summary,
            "problems": report.problems,
        }))?;
    } else {
        println!("{what}:");
        for line in &report.summary {
            println!("  {line}");
        }
        for p in &report.problems {
            println!("  PROBLEM: {p}");
        }
    }
    if !report.problems.is_empty() {
        bail!("{what} failed verification: {} problem(s): {}", report.problems.len(), report.problems.join("; "));
    }
    if !json {
        println!("OK");
    }
    Ok(())
}

async fn restore(args: &BackupRestoreArgs, json: bool) -> anyhow::Result<()> {
    let src = &args.src;
    let report = verify_dir(src).await?;
    if !report.problems.is_empty() {
        bail!("{} is not a whole backup, nothing was restored: {}", src.display(), report.problems.join("; "));
    }
    let info = read_info(src).map_err(|p| anyhow!(p))?;
    let target = &args.data;
    refuse_non_empty(target, "--data")?;
    let staging = Staging::beside(target)?;
    let tmp = staging.path.clone();

    // The snapshot, checked again as copied (the backup may change under us).
    let meta_to = tmp.join(META_FILE);
    std::fs::copy(src.join(META_FILE), &meta_to)
        .with_context(|| format!("copying {} to {}", src.join(META_FILE).display(), meta_to.display()))?;
    set_mode(&meta_to, 0o600)?;
    if hash_file(&meta_to)?.0 != info.meta_hash {
        bail!("{} changed while it was restored; nothing was restored", src.join(META_FILE).display());
    }
    // Blobs go through the blob store, which checks each one's bytes against its name.
    let store = LocalBlobStore::open(tmp.join("blobs"))?;
    let (mut count, mut bytes) = (0u64, 0u64);
    for (hash, path) in list_backup_blobs(&src.join(BLOBS_DIR))? {
        let file = tokio::fs::File::open(&path).await.with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata().await?.len();
        let body = tokio_util_stream(file);
        store.put(&hash, body, len).await.with_context(|| format!("restoring blob {hash} from {}", path.display()))?;
        count += 1;
        bytes += len;
    }
    store.sync().await?;
    store.settle().await;
    drop(store);
    for (name, mode) in DATA_FILES {
        if let Some(expected) = info.files.get(name) {
            let bytes =
                std::fs::read(src.join(name)).with_context(|| format!("reading {}", src.join(name).display()))?;
            if ContentHash::of(&bytes) != *expected {
                bail!("{} changed while it was restored; nothing was restored", src.join(name).display());
            }
            write_new(&tmp.join(name), &bytes, mode)?;
        }
    }
    sync_dir_tree(&tmp)?;
    staging.finish(target)?;
    if json {
        return crate::commands::print_json(&serde_json::json!({
            "data": target, "blob_count": count, "blob_bytes": bytes, "backup_created_at": info.created_at,
        }));
    }
    println!(
        "Restored the backup of {} into {}: metadata (schema {}), {count} blobs ({}){}.",
        info.created_at,
        target.display(),
        info.schema_version,
        human_bytes(bytes),
        if info.files.contains_key("secret.key") { ", secret.key (mode 0600)" } else { "" }
    );
    println!("Serve it with `chanto serve --data {}`.", target.display());
    Ok(())
}

/// A file's bytes as a stream for [`BlobStore::put`].
fn tokio_util_stream(file: tokio::fs::File) -> chanto_store::ByteStream {
    use futures_util::StreamExt;
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 << 10];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    stream.boxed()
}

/// What a check found: lines for the summary, and every problem by name.
struct Report {
    summary: Vec<String>,
    problems: Vec<String>,
}

/// Reads and checks `backup.json`; the error names the file, field and fix.
fn read_info(src: &Path) -> Result<BackupInfo, String> {
    let path = src.join(INFO_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{} is missing: this is not a backup, or `chanto backup create` did not finish writing it",
                path.display()
            ));
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let len = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
    if len > MAX_INFO_BYTES {
        return Err(format!(
            "{} is {len} bytes, more than a backup.json ever is ({MAX_INFO_BYTES}); it was not written by chanto",
            path.display()
        ));
    }
    let mut text = Vec::new();
    file.take(MAX_INFO_BYTES).read_to_end(&mut text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut de = serde_json::Deserializer::from_slice(&text);
    let info: BackupInfo = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let field = if at == "." { String::new() } else { format!("field `{at}`: ") };
        format!("{} is not a chanto backup.json: {field}{}", path.display(), e.inner())
    })?;
    if info.format != FORMAT {
        return Err(format!(
            "{}: format {} is not {FORMAT}, the one this chanto reads; use the chanto that wrote it ({})",
            path.display(),
            info.format,
            info.chanto_version
        ));
    }
    if let Some(name) = info.files.keys().find(|n| !DATA_FILES.iter().any(|(f, _)| f == n)) {
        return Err(format!(
            "{}: files: {name:?} is not a file a backup holds ({}); the file was not written by chanto",
            path.display(),
            DATA_FILES.map(|(f, _)| f).join(", ")
        ));
    }
    Ok(info)
}

/// Checks a backup directory (see the module docs); IO errors of the
/// machine doing the check are errors, everything wrong with the backup a
/// named problem.
async fn verify_dir(src: &Path) -> anyhow::Result<Report> {
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    if !src.is_dir() {
        bail!("{} is not a directory; give the directory `chanto backup create` wrote", src.display());
    }
    let info = match read_info(src) {
        Ok(info) => Some(info),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let meta_path = src.join(META_FILE);
    let snapshot_ok = if !meta_path.is_file() {
        problems.push(format!("{} is missing", meta_path.display()));
        false
    } else {
        let (hash, len) = hash_file(&meta_path)?;
        if let Some(info) = &info
            && (hash != info.meta_hash || len != info.meta_bytes)
        {
            problems.push(format!(
                "{}: {len} bytes hashing to {hash}, but backup.json records {} bytes hashing to {}: the snapshot is damaged or was replaced",
                meta_path.display(),
                info.meta_bytes,
                info.meta_hash
            ));
        }
        match check_snapshot(&meta_path) {
            Ok((version, tables)) => {
                if let Some(info) = &info {
                    if version != info.schema_version {
                        problems.push(format!(
                            "{}: schema version {version}, but backup.json records {}",
                            meta_path.display(),
                            info.schema_version
                        ));
                    }
                    for name in tables.keys().chain(info.tables.keys()).collect::<BTreeSet<_>>() {
                        let (found, recorded) = (tables.get(name), info.tables.get(name));
                        if found != recorded {
                            let show = |n: Option<&u64>| n.map_or("no table".to_owned(), |n| format!("{n} rows"));
                            problems.push(format!(
                                "{}: table {name:?} has {}, backup.json records {}",
                                meta_path.display(),
                                show(found),
                                show(recorded)
                            ));
                        }
                    }
                }
                summary.push(format!(
                    "metadata: schema {version} (this chanto knows {SQLITE_SCHEMA_VERSION}), {} tables, {} deploys",
                    tables.len(),
                    tables.get("deploys").copied().unwrap_or(0)
                ));
                true
            }
            Err(p) => {
                problems.push(p);
                false
            }
        }
    };
    if let Some(info) = &info {
        summary.insert(0, format!("backup of {} by chanto {}", info.created_at, info.chanto_version));
        for (name, expected) in &info.files {
            match std::fs::read(src.join(name)) {
                Ok(bytes) if ContentHash::of(&bytes) == *expected => {}
                Ok(_) => problems.push(format!("{}: its bytes are not those backed up", src.join(name).display())),
                Err(e) => problems.push(format!("{}: {e}", src.join(name).display())),
            }
        }
    }
    if snapshot_ok {
        let refs = SqliteMeta::open_read_only(&meta_path)?;
        let mut source = Blobs::Dir { root: src.join(BLOBS_DIR) };
        match walk(&refs, &mut source).await {
            Ok(walked) => {
                summary.push(format!(
                    "blobs: {} present and whole ({}), {} deploys' manifests read",
                    walked.blobs,
                    human_bytes(walked.bytes),
                    walked.manifests
                ));
                if let Some(info) = &info
                    && (walked.blobs != info.blob_count || walked.bytes != info.blob_bytes)
                    && walked.problems.is_empty()
                {
                    problems.push(format!(
                        "{}: {} blobs of {} bytes, but backup.json records {} of {}",
                        src.join(BLOBS_DIR).display(),
                        walked.blobs,
                        walked.bytes,
                        info.blob_count,
                        info.blob_bytes
                    ));
                }
                problems.extend(walked.problems);
            }
            Err(e) => problems.push(format!("{}: reading what it references: {e:#}", meta_path.display())),
        }
    } else {
        summary.push("blobs: not checked (the metadata snapshot cannot be read)".to_owned());
    }
    Ok(Report { summary, problems })
}

/// Integrity, schema version and row counts of a snapshot; the problem, by
/// file, if any.
fn check_snapshot(path: &Path) -> Result<(u32, BTreeMap<String, u64>), String> {
    let named = |e: chanto_store::StoreError| format!("{}: not a readable SQLite database: {e}", path.display());
    let snap = SnapshotFile::open(path).map_err(named)?;
    let found = snap.integrity_problems().map_err(named)?;
    if !found.is_empty() {
        return Err(format!("{}: integrity check failed: {}", path.display(), found.join("; ")));
    }
    let version = snap.schema_version().map_err(named)?;
    if version > SQLITE_SCHEMA_VERSION {
        return Err(format!(
            "{}: schema version {version} is newer than this chanto knows ({SQLITE_SCHEMA_VERSION}); use a newer chanto",
            path.display()
        ));
    }
    if version == 0 {
        return Err(format!("{}: holds no chanto metadata (schema version 0)", path.display()));
    }
    Ok((version, snap.table_counts().map_err(named)?))
}

/// Checks a PostgreSQL + S3 install: the schema is this chanto's, and every
/// blob its metadata references is in the bucket (and with --deep, whole).
async fn verify_remote(args: &BackupVerifyArgs, meta: &str, blobs: &str) -> anyhow::Result<Report> {
    if !blobs.starts_with("s3://") {
        bail!(
            "--blobs {blobs:?}: expected s3://BUCKET/PREFIX (a backup directory is checked with `chanto backup verify DIR`)"
        );
    }
    let pg = crate::serve::postgres_meta("--meta", meta, args.meta_password_file.as_deref(), false).await?;
    // Read-only: the marker object is neither read nor written.
    let s3 = crate::serve::s3_store(blobs, args.s3_endpoint.clone(), String::new(), false, true).await?;
    let listed: BTreeSet<ContentHash> = s3.list().await?.into_iter().collect();
    let mut source = Blobs::Remote { store: &s3, listed: &listed, deep: args.deep };
    let walked = walk(&pg, &mut source).await?;
    let summary = vec![
        format!("metadata: PostgreSQL, schema {} (this chanto's)", chanto_store::postgres::SCHEMA_VERSION),
        format!(
            "blobs: {} referenced blobs present{}, {} deploys' manifests read; {} blobs in the bucket",
            walked.blobs,
            if args.deep { format!(" and whole ({}, --deep)", human_bytes(walked.bytes)) } else { String::new() },
            walked.manifests,
            listed.len()
        ),
    ];
    Ok(Report { summary, problems: walked.problems })
}

/// Where the blobs a walk visits are, and what visiting one does.
enum Blobs<'a> {
    /// Copy from a live data directory's blob store into a backup, checking
    /// each blob's bytes against its name.
    Copy { from: PathBuf, to: PathBuf },
    /// Check a backup's blobs.
    Dir { root: PathBuf },
    /// Check an object store's blobs (present in `listed`; with `deep`, read and hashed).
    Remote { store: &'a S3BlobStore, listed: &'a BTreeSet<ContentHash>, deep: bool },
}

/// What visiting a blob found.
enum Visit {
    Missing,
    Corrupt(ContentHash),
    Whole { len: u64, bytes: Option<Vec<u8>> },
}

impl Blobs<'_> {
    /// Visits `hash`; `want` asks for its bytes (a manifest, to read).
    async fn visit(&mut self, hash: &ContentHash, want: bool) -> anyhow::Result<Visit> {
        match self {
            Blobs::Copy { from, to } => {
                let Some(file) = LocalBlobStore::find_blob(from, hash)? else { return Ok(Visit::Missing) };
                copy_checked(file, hash, to, want)
            }
            Blobs::Dir { root } => {
                let path = blob_path(root, hash);
                let file = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Visit::Missing),
                    Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
                };
                let (actual, len, bytes) = hash_reader(file, want)?;
                Ok(if actual != *hash { Visit::Corrupt(actual) } else { Visit::Whole { len, bytes } })
            }
            Blobs::Remote { store, listed, deep } => {
                if !listed.contains(hash) {
                    return Ok(Visit::Missing);
                }
                if !*deep && !want {
                    return Ok(Visit::Whole { len: 0, bytes: None });
                }
                match store.get(hash).await {
                    Ok(bytes) => {
                        let actual = ContentHash::of(&bytes);
                        if actual != *hash {
                            return Ok(Visit::Corrupt(actual));
                        }
                        Ok(Visit::Whole { len: bytes.len() as u64, bytes: want.then(|| bytes.to_vec()) })
                    }
                    Err(chanto_store::StoreError::HashMismatch { actual, .. }) => Ok(Visit::Corrupt(actual)),
                    Err(chanto_store::StoreError::NotFound(_)) => Ok(Visit::Missing),
                    Err(e) => Err(e).with_context(|| format!("reading blob {hash}")),
                }
            }
        }
    }
}

/// What a walk over the referenced blobs found.
struct Walked {
    /// Blobs present and whole, and their bytes.
    blobs: u64,
    bytes: u64,
    /// Manifests read.
    manifests: u64,
    /// Blobs of unfinished uploads that were not there (never required).
    skipped: u64,
    /// Required blobs missing.
    missing_required: u64,
    /// Each problem, naming the blob and the deploy that needs it.
    problems: Vec<String>,
}

/// Visits every blob `meta` references. Required: the manifest of every
/// complete deploy and every file and variant that manifest lists. Also
/// visited: what else the metadata references (files of uploads still in
/// progress, remembered variants), which may be absent.
async fn walk(meta: &dyn MetaStore, source: &mut Blobs<'_>) -> anyhow::Result<Walked> {
    let mut w = Walked { blobs: 0, bytes: 0, manifests: 0, skipped: 0, missing_required: 0, problems: Vec::new() };
    let mut done = BTreeSet::new();
    let mut required: BTreeMap<ContentHash, (DeployId, String)> = BTreeMap::new();
    let mut permalinks = meta.permalinks(None).await.context("reading the deploys")?;
    permalinks.sort_by_key(|p| p.deploy.to_string());
    for p in &permalinks {
        let who = format!("the manifest of deploy {} of site {}", p.deploy, p.site);
        if !done.insert(p.manifest) {
            continue;
        }
        match source.visit(&p.manifest, true).await? {
            Visit::Missing => {
                w.missing_required += 1;
                w.problems.push(format!("blob {} ({who}) is missing", p.manifest));
            }
            Visit::Corrupt(actual) => {
                w.problems.push(format!("blob {} ({who}) is corrupt: its bytes hash to {actual}", p.manifest))
            }
            Visit::Whole { len, bytes } => {
                w.blobs += 1;
                w.bytes += len;
                w.manifests += 1;
                match serde_json::from_slice::<Manifest>(bytes.as_deref().unwrap_or_default()) {
                    Ok(m) => {
                        for (path, e) in &m.files {
                            for h in std::iter::once(&e.hash).chain(e.variants.iter().map(|v| &v.hash)) {
                                required.entry(*h).or_insert_with(|| (p.deploy.clone(), path.clone()));
                            }
                        }
                    }
                    Err(e) => w.problems.push(format!("blob {} ({who}) is not a manifest: {e}", p.manifest)),
                }
            }
        }
    }
    for (hash, (deploy, path)) in &required {
        if !done.insert(*hash) {
            continue;
        }
        match source.visit(hash, false).await? {
            Visit::Missing => {
                w.missing_required += 1;
                w.problems.push(format!("blob {hash} (file {path:?} of deploy {deploy}) is missing"));
            }
            Visit::Corrupt(actual) => w
                .problems
                .push(format!("blob {hash} (file {path:?} of deploy {deploy}) is corrupt: its bytes hash to {actual}")),
            Visit::Whole { len, .. } => {
                w.blobs += 1;
                w.bytes += len;
            }
        }
    }
    let mut rest: Vec<ContentHash> =
        meta.referenced_blobs(&[]).await.context("reading the referenced blobs")?.into_iter().collect();
    rest.sort();
    for hash in rest {
        if !done.insert(hash) {
            continue;
        }
        match source.visit(&hash, false).await? {
            Visit::Missing => w.skipped += 1,
            Visit::Corrupt(actual) => w.problems.push(format!("blob {hash} is corrupt: its bytes hash to {actual}")),
            Visit::Whole { len, .. } => {
                w.blobs += 1;
                w.bytes += len;
            }
        }
    }
    Ok(w)
}

/// `ROOT/ab/cdef…`.
fn blob_path(root: &Path, hash: &ContentHash) -> PathBuf {
    let hex = hash.to_hex();
    root.join(&hex[..2]).join(&hex[2..])
}

/// Copies an open blob into `to` under its name through a temporary file,
/// hashing as it goes; a blob whose bytes do not match is not kept.
fn copy_checked(file: std::fs::File, hash: &ContentHash, to: &Path, want: bool) -> anyhow::Result<Visit> {
    let dest = blob_path(to, hash);
    let dir = dest.parent().expect("a blob path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{}", &hash.to_hex()[2..]));
    let mut out = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    let mut reader = std::io::BufReader::with_capacity(256 << 10, file);
    let mut hasher = blake3::Hasher::new();
    let mut kept = want.then(Vec::new);
    let mut len = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = reader.read(&mut buf).with_context(|| format!("reading blob {hash} of the data directory"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).with_context(|| format!("writing {}", tmp.display()))?;
        if let Some(k) = kept.as_mut() {
            k.extend_from_slice(&buf[..n]);
        }
        len += n as u64;
    }
    let actual = ContentHash::from_blake3(hasher.finalize());
    if actual != *hash {
        let _ = std::fs::remove_file(&tmp);
        return Ok(Visit::Corrupt(actual));
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("writing {}", dest.display()))?;
    Ok(Visit::Whole { len, bytes: kept })
}

/// Hashes what `r` reads, keeping the bytes if `keep`.
fn hash_reader(r: impl Read, keep: bool) -> anyhow::Result<(ContentHash, u64, Option<Vec<u8>>)> {
    let mut reader = std::io::BufReader::with_capacity(256 << 10, r);
    let mut hasher = blake3::Hasher::new();
    let mut kept = keep.then(Vec::new);
    let mut len = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(k) = kept.as_mut() {
            k.extend_from_slice(&buf[..n]);
        }
        len += n as u64;
    }
    Ok((ContentHash::from_blake3(hasher.finalize()), len, kept))
}

/// A file's BLAKE3 hash and size.
fn hash_file(path: &Path) -> anyhow::Result<(ContentHash, u64)> {
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (h, len, _) = hash_reader(f, false).with_context(|| format!("reading {}", path.display()))?;
    Ok((h, len))
}

/// Every blob file of a backup's `blobs/` (names checked: two hex digits,
/// then the other 62); anything else there is refused by name.
fn list_backup_blobs(root: &Path) -> anyhow::Result<Vec<(ContentHash, PathBuf)>> {
    let mut out = Vec::new();
    let shards = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    for shard in shards {
        let shard = shard?;
        let prefix = shard.file_name().to_string_lossy().into_owned();
        if !shard.file_type()?.is_dir() {
            bail!("{}: not a blob directory; remove it", shard.path().display());
        }
        for entry in std::fs::read_dir(shard.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let hash: ContentHash = format!("{prefix}{name}").parse().map_err(|_| {
                anyhow!("{}: not a blob (blob names are 64 hex digits); remove it", entry.path().display())
            })?;
            if !entry.file_type()?.is_file() {
                bail!("{}: not a regular file; remove it", entry.path().display());
            }
            out.push((hash, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Refuses a path that exists and is not an empty directory, naming it.
fn refuse_non_empty(path: &Path, flag: &str) -> anyhow::Result<()> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{flag} {} exists and is not empty; nothing was written. Give a new directory (or move that one away)",
                    path.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if path.exists() => {
            bail!("{flag} {} exists and is not a directory; give a new directory", path.display())
        }
        Err(e) => Err(e).with_context(|| format!("reading {flag} {}", path.display())),
    }
}

/// A temporary directory beside the target, renamed onto it when complete
/// and removed if anything fails first, so the target is whole or absent.
struct Staging {
    path: PathBuf,
    done: bool,
}

impl Staging {
    fn beside(target: &Path) -> anyhow::Result<Self> {
        let name = target.file_name().ok_or_else(|| {
            anyhow!("{} names no directory; give a path such as ./backup-2026-01-01", target.display())
        })?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let r: [u8; 6] = chanto_store::random_bytes();
        let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let path = parent.join(format!(".{}.partial-{suffix}", name.to_string_lossy()));
        std::fs::DirBuilder::new().mode(0o700).create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, done: false })
    }

    /// Moves the finished directory onto `target` (absent, or an empty
    /// directory that is replaced).
    fn finish(mut self, target: &Path) -> anyhow::Result<()> {
        if target.is_dir() {
            std::fs::remove_dir(target)
                .with_context(|| format!("{} is no longer empty; nothing was written", target.display()))?;
        }
        std::fs::rename(&self.path, target)
            .with_context(|| format!("moving {} to {}", self.path.display(), target.display()))?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes a new file with `mode`, synced.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Makes everything written under `dir` durable with one file-system sync
/// (one fsync per blob would cost more than the copying).
fn sync_dir_tree(dir: &Path) -> anyhow::Result<()> {
    let d = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    rustix::fs::syncfs(&d).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

//! `chanto deploy`: hash every file in parallel, send the manifest, upload
//! only the blobs the server lacks (in parallel, with retries and backoff),
//! then finalize. Re-running after any interruption resumes: blobs already
//! stored are never sent again.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chanto_control::api::{CreateDeployRequest, CreateDeployResponse, DeployView, FileEntry, UploadResponse};
use chanto_core::ContentHash;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::client::{CallError, Client, seg};
use crate::hashcache::HashCache;
use chanto_control::walk::{LocalFile, walk};

/// What `chanto deploy` was asked to do.
pub struct DeployPlan<'a> {
    /// Directory to deploy.
    pub dir: &'a std::path::Path,
    /// Site.
    pub site: &'a str,
    /// Branch, or the production branch.
    pub branch: Option<&'a str>,
    /// Message.
    pub message: Option<&'a str>,
    /// Upload without activating.
    pub draft: bool,
    /// Parallel uploads.
    pub parallel: usize,
    /// Print progress (to stderr).
    pub progress: bool,
    /// Reuse hashes of files unchanged since the last deploy of this directory.
    pub hash_cache: bool,
    /// The project `dir` is the published directory of, and what its config
    /// says (files left out; root config files that carry rules).
    pub project: Option<(&'a std::path::Path, &'a chanto_build::ProjectLayout)>,
}

/// Largest root config file read to find a project's layout.
const MAX_PROJECT_FILE: u64 = 1 << 20;

/// What the project at `root` says to deploy: the published directory and
/// its layout, or `None` when no firebase.json, netlify.toml, amplify.yml
/// or chanto.toml there names one.
pub fn project_layout(root: &std::path::Path) -> anyhow::Result<Option<chanto_build::ProjectLayout>> {
    let read = |name: &str| -> Option<String> {
        let path = root.join(name);
        let m = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
        if m.len() > MAX_PROJECT_FILE {
            return Some(" ".repeat(MAX_PROJECT_FILE as usize + 1));
        }
        std::fs::read_to_string(&path).ok()
    };
    let layout = chanto_build::project_layout(&read).map_err(|e| anyhow!("{}: {e}", root.display()))?;
    let Some(l) = layout else { return Ok(None) };
    let canon_root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
    let publish = root.join(&l.publish);
    let Ok(canon) = publish.canonicalize() else {
        // A config copied into the published directory itself (how rule
        // files were always read): that directory is the site, as before.
        eprintln!(
            "note: {} names {} ({}), which is not there; deploying {} itself",
            root.display(),
            publish.display(),
            l.chosen_by,
            root.display()
        );
        return Ok(None);
    };
    if !canon.starts_with(&canon_root) || !canon.is_dir() {
        bail!(
            "{} names {:?} to deploy ({}), which is not a directory inside the project; name one inside it",
            root.display(),
            l.publish,
            l.chosen_by
        );
    }
    Ok(Some(l))
}

/// The outcome, as `--json` prints it.
#[derive(Serialize)]
pub struct DeployOutcome {
    /// The finished deploy.
    pub deploy: DeployView,
    /// Files in the deploy.
    pub files: usize,
    /// Blobs the server lacked.
    pub required: usize,
    /// Blobs uploaded by this run.
    pub uploaded: usize,
    /// Bytes uploaded by this run.
    pub uploaded_bytes: u64,
    /// Wall time of the whole deploy.
    pub elapsed_ms: u64,
    /// Where it is live (the finalize answer's `deploy.edges`, also here as
    /// in the publish and rollback answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edges: Option<chanto_store::node_wire::EdgeRollout>,
}

struct Hashed {
    file: LocalFile,
    hash: ContentHash,
}

/// Files at or above this size are hashed through a memory map, in parallel.
const MMAP_MIN: u64 = 1 << 20;

fn hash_file(f: &LocalFile) -> anyhow::Result<(ContentHash, u64)> {
    let mut hasher = blake3::Hasher::new();
    if f.size >= MMAP_MIN {
        hasher.update_mmap_rayon(&f.abs).with_context(|| format!("reading {}", f.abs.display()))?;
    } else {
        let bytes = std::fs::read(&f.abs).with_context(|| format!("reading {}", f.abs.display()))?;
        hasher.update(&bytes);
    }
    Ok((ContentHash::from_blake3(hasher.finalize()), hasher.count()))
}

/// Runs a deploy end to end.
pub async fn run(client: &Client, plan: DeployPlan<'_>) -> anyhow::Result<DeployOutcome> {
    let started = Instant::now();
    let dir = plan.dir.to_owned();
    let say = |msg: String| {
        if plan.progress {
            eprintln!("{msg}");
        }
    };

    let use_cache = plan.hash_cache;
    let project = plan.project.map(|(root, layout)| (root.to_owned(), layout.clone()));
    let (files, rehashed, cache) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(Vec<Hashed>, usize, HashCache)> {
            // The cache (a few MB of JSON for a large site) is read while the tree is walked.
            let (files, mut cache) = rayon::join(|| walk(&dir), || HashCache::load(&dir, use_cache));
            let mut files = files?;
            if let Some((root, layout)) = &project {
                chanto_control::walk::apply_layout(&mut files, root, layout)
                    .with_context(|| format!("reading the rule files at {}", root.display()))?;
                if files.is_empty() {
                    bail!("{} leaves no files to deploy in {} (its ignore list)", layout.chosen_by, dir.display());
                }
            }
            let hashed: Vec<(Hashed, bool)> = files
                .into_par_iter()
                .map(|file| {
                    if let Some(hash) = cache.get(&file) {
                        return Ok((Hashed { file, hash }, false));
                    }
                    let (hash, size) = hash_file(&file)?;
                    Ok((Hashed { file: LocalFile { size, ..file }, hash }, true))
                })
                .collect::<anyhow::Result<_>>()?;
            let rehashed = hashed.iter().filter(|(_, fresh)| *fresh).count();
            for (h, _) in &hashed {
                cache.put(&h.file, h.hash);
            }
            Ok((hashed.into_iter().map(|(h, _)| h).collect(), rehashed, cache))
        })
        .await??;
    // Written while the server works; waited for before returning.
    let cache_saved = tokio::task::spawn_blocking(move || cache.save());
    let total: u64 = files.iter().map(|h| h.file.size).sum();
    say(format!(
        "{} ({}), {rehashed} hashed, {} unchanged since the last deploy, in {:.2}s",
        crate::commands::count(files.len() as u64, "file"),
        human_bytes(total),
        files.len() - rehashed,
        started.elapsed().as_secs_f64()
    ));

    let request = CreateDeployRequest {
        branch: plan
            .branch
            .map(|b| b.parse())
            .transpose()
            .map_err(|e: chanto_core::ValidationError| anyhow!("--branch: {}", e.message))?,
        message: plan.message.map(str::to_owned),
        draft: plan.draft,
        files: files
            .iter()
            .map(|h| (h.file.path.clone(), FileEntry { hash: h.hash, size: h.file.size }))
            .collect::<BTreeMap<_, _>>(),
    };
    let create_path = format!("/sites/{}/deploys", seg(plan.site));
    let created: CreateDeployResponse =
        with_retries("creating the deploy", || client.post(&create_path, &request)).await?;
    let id = created.deploy.id.clone();

    // One upload per missing blob, from the first file that has it.
    let mut by_hash: BTreeMap<ContentHash, &LocalFile> = BTreeMap::new();
    for h in &files {
        by_hash.entry(h.hash).or_insert(&h.file);
    }
    let todo: Vec<(ContentHash, LocalFile)> =
        created.required.iter().filter_map(|h| by_hash.get(h).map(|f| (*h, (*f).clone()))).collect();
    let todo_bytes: u64 = todo.iter().map(|(_, f)| f.size).sum();
    say(format!(
        "deploy {id}: {} of {} to upload ({}), {} already on the server",
        todo.len(),
        crate::commands::count(by_hash.len() as u64, "blob"),
        human_bytes(todo_bytes),
        by_hash.len() - todo.len()
    ));

    let bar = if plan.progress && std::io::stderr().is_terminal() && !todo.is_empty() {
        let bar = ProgressBar::new(todo_bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Some(bar)
    } else {
        None
    };
    let uploaded_bytes = Arc::new(AtomicU64::new(0));
    let uploads = futures_util::stream::iter(batches(&todo))
        .map(|unit| {
            let (client, bar, counter, id) = (client.clone(), bar.clone(), uploaded_bytes.clone(), id.clone());
            async move {
                let size = match unit {
                    Upload::One(hash, file) => upload_one(&client, id.as_str(), hash, &file).await?,
                    Upload::Batch(files) => upload_batch(&client, id.as_str(), files).await?,
                };
                counter.fetch_add(size, Ordering::Relaxed);
                if let Some(bar) = &bar {
                    bar.inc(size);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(plan.parallel.max(1));
    let results: Vec<anyhow::Result<()>> = uploads.collect().await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let failures: Vec<String> = results.into_iter().filter_map(|r| r.err()).map(|e| format!("{e:#}")).collect();
    if !failures.is_empty() {
        let shown = failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n  ");
        return Err(anyhow!(
            "{} of {} uploads failed; nothing went live, and running the same command again uploads only what is missing:\n  {shown}",
            failures.len(),
            todo.len()
        ));
    }
    if !todo.is_empty() {
        say(format!("uploaded {} ({})", crate::commands::count(todo.len() as u64, "blob"), human_bytes(todo_bytes)));
    }
    let finalize_path = format!("/deploys/{id}/finalize");
    let empty = serde_json::json!({});
    let deploy: DeployView = with_retries("finalizing the deploy", || client.post(&finalize_path, &empty)).await?;
    // Best effort, like the cache itself: a failed save only means hashing again.
    let _ = cache_saved.await;
    Ok(DeployOutcome {
        edges: deploy.edges.clone(),
        deploy,
        files: files.len(),
        required: created.required.len(),
        uploaded: todo.len(),
        uploaded_bytes: uploaded_bytes.load(Ordering::Relaxed),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// One request's worth of uploads.
enum Upload {
    /// A large file, streamed on its own.
    One(ContentHash, LocalFile),
    /// Small files, in one batch request.
    Batch(Vec<(ContentHash, LocalFile)>),
}

/// Most files in one batch.
const BATCH_FILES: usize = 128;
/// Most bytes in one batch (so `--parallel` batches in flight stay small).
const BATCH_BYTES: u64 = 2 << 20;

/// Groups the blobs to upload: files up to [`chanto_control::batch::MAX_BLOB`]
/// into batches, larger ones alone.
fn batches(todo: &[(ContentHash, LocalFile)]) -> Vec<Upload> {
    let mut out = Vec::new();
    let (mut batch, mut bytes) = (Vec::new(), 0u64);
    for (hash, file) in todo {
        if file.size > chanto_control::batch::MAX_BLOB {
            out.push(Upload::One(*hash, file.clone()));
            continue;
        }
        if !batch.is_empty() && (batch.len() == BATCH_FILES || bytes + file.size > BATCH_BYTES) {
            out.push(Upload::Batch(std::mem::take(&mut batch)));
            bytes = 0;
        }
        bytes += file.size;
        batch.push((*hash, file.clone()));
    }
    if !batch.is_empty() {
        out.push(Upload::Batch(batch));
    }
    out
}

/// A local file that could not be read, as an error that is not retried.
fn unreadable(path: &std::path::Path, e: std::io::Error) -> CallError {
    CallError { status: Some(0), code: None, message: format!("reading {}: {e}", path.display()), retry_after: None }
}

/// Uploads one file; returns its size.
async fn upload_one(client: &Client, id: &str, hash: ContentHash, file: &LocalFile) -> anyhow::Result<u64> {
    let what = format!("uploading {}", file.path);
    let _: UploadResponse = with_retries(&what, || async {
        let bytes = tokio::fs::read(&file.abs).await.map_err(|e| unreadable(&file.abs, e))?;
        client.put_bytes(&format!("/deploys/{id}/blobs/{hash}"), reqwest::Body::from(bytes)).await
    })
    .await
    .map_err(|e| if is_hash_mismatch(&e) { changed_while_deploying(&file.path) } else { e })?;
    Ok(file.size)
}

/// Whether the server refused a blob whose bytes did not hash to its name.
fn is_hash_mismatch(e: &anyhow::Error) -> bool {
    e.downcast_ref::<CallError>().and_then(|c| c.code.as_deref()) == Some("hash_mismatch")
}

fn changed_while_deploying(path: &str) -> anyhow::Error {
    anyhow!("{path} changed while deploying; run `chanto deploy` again")
}

/// Uploads small files in one request (see [`chanto_control::batch`]);
/// returns their size.
async fn upload_batch(client: &Client, id: &str, files: Vec<(ContentHash, LocalFile)>) -> anyhow::Result<u64> {
    use chanto_control::batch::{CONTENT_TYPE, HEADER_LEN, encode_header};
    let files = Arc::new(files);
    let size: u64 = files.iter().map(|(_, f)| f.size).sum();
    let first = files.first().map(|(_, f)| f.path.clone()).unwrap_or_default();
    let what = format!("uploading {} files ({first}, …)", files.len());
    let path = format!("/deploys/{id}/blobs");
    let result: Result<chanto_control::api::BatchResponse, _> = with_retries(&what, || {
        let files = files.clone();
        async {
            let body = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, CallError> {
                use std::io::Read;
                // Each file is read straight into the body: no buffer per file.
                let mut body = Vec::with_capacity(files.iter().map(|(_, f)| f.size as usize + HEADER_LEN).sum());
                for (hash, file) in files.iter() {
                    let at = body.len();
                    body.extend_from_slice(&[0; HEADER_LEN]);
                    let read = std::fs::File::open(&file.abs)
                        .and_then(|mut f| f.read_to_end(&mut body))
                        .map_err(|e| unreadable(&file.abs, e))?;
                    body[at..at + HEADER_LEN].copy_from_slice(&encode_header(hash, read as u64));
                }
                Ok(body)
            })
            .await
            .map_err(|e| unreadable(std::path::Path::new("the files to upload"), std::io::Error::other(e)))??;
            client.post_bytes(&path, CONTENT_TYPE, reqwest::Body::from(body)).await
        }
    })
    .await;
    match result {
        Ok(_) => Ok(size),
        Err(e) if is_hash_mismatch(&e) => {
            // Name the file: the one whose bytes no longer hash to what was sent.
            let changed =
                files.iter().find(|(h, f)| std::fs::read(&f.abs).map(|b| ContentHash::of(&b) != *h).unwrap_or(true));
            match changed {
                Some((_, f)) => Err(changed_while_deploying(&f.path)),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Calls `f` until it succeeds, a non-retryable error comes back, or five
/// attempts failed; waits 250 ms × 2ⁿ (with jitter, or the server's
/// `Retry-After`) between attempts.
pub async fn with_retries<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    const ATTEMPTS: u32 = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && e.status != Some(0) && attempt < ATTEMPTS => {
                let base = Duration::from_millis(250 << (attempt - 1));
                let jitter = Duration::from_millis(u64::from(rand_u16()) % (base.as_millis() as u64 / 2 + 1));
                let wait = e.retry_after.map(Duration::from_secs).unwrap_or(base + jitter).min(Duration::from_secs(30));
                tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %e, "{what}: retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(what.to_owned())),
        }
    }
}

fn rand_u16() -> u16 {
    let r: [u8; 2] = chanto_store::random_bytes();
    u16::from_le_bytes(r)
}

/// `1234567` → `1.2 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

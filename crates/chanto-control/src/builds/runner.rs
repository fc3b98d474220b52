//! One build, from claim to deploy: a fresh work directory, a shallow fetch
//! of exactly the commit, the build spec, the cache, each command through
//! `sh -c` inside the bubblewrap sandbox (its own network, pid and mount
//! namespaces; killed whole on timeout or cancel), and the output through the
//! deploy pipeline. Every line of output goes to the build's log with secrets
//! masked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chanto_build::{BuildVars, Context, Masker, SpecInput};
use chanto_core::{BranchName, BuildState, ContentHash};
use chanto_store::{BuildOutcome, BuildRecord, GitConnection, now_millis};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{Builds, CredentialKind, GitSettings, PhaseView, init};
use crate::pipeline::{DeployRequest, FileSpec};
use crate::{ApiError, Control};

/// The first user id of builds when the server runs as root: build slot `n`
/// runs as `BUILD_UID_BASE + n`, so concurrent builds never share a user (a
/// process limit per user is a limit per build, and one build cannot signal
/// or trace another's processes).
pub const BUILD_UID_BASE: u32 = 100_000;
/// Largest build spec file read from a repository.
const MAX_SPEC_BYTES: u64 = 1 << 20;
/// The PATH builds see.
const BUILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How often a running build's disk use is measured.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Files of `/etc` a build sees (when the host has them): name resolution,
/// CA certificates, the dynamic linker's cache, time zone, alternatives.
const ETC_FILES: &[&str] = &[
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "localtime",
    "timezone",
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "mime.types",
    "os-release",
    "debian_version",
];

/// What one build may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory per process (`RLIMIT_DATA`: heap and private
    /// mappings; not address space, which JavaScript engines reserve by the
    /// tens of gigabytes).
    pub memory: u64,
    /// Processes (`RLIMIT_NPROC` of the build's own user; only when the
    /// server is root, since otherwise builds share the server's user).
    pub processes: u64,
    /// Bytes of the work tree and home together (measured every 5 s; the
    /// build is stopped past it), and the largest file (`RLIMIT_FSIZE`).
    pub disk: u64,
    /// Size of the build's private `/tmp` (a tmpfs, so it is memory).
    pub tmp: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory: 4 << 30, processes: 1024, disk: 10 << 30, tmp: 1 << 30 }
    }
}

/// How builds are kept from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// Builds run inside bubblewrap (see [`Sandbox`]).
    Sandbox(Sandbox),
    /// No working sandbox: every build fails with this reason. chanto never
    /// runs a repository's commands outside the sandbox.
    Unavailable(String),
}

/// A working bubblewrap sandbox: its own network (loopback only; out through
/// the egress proxy), pid, IPC and UTS namespaces; a file system of `/usr`,
/// `/lib*`, `/bin`, `/sbin`, a minimal `/etc`, the build's work tree and
/// home, and a size-capped `/tmp`; as a user of its own when the server is root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The `bwrap` program.
    pub bwrap: PathBuf,
    /// The chanto binary, run inside as the sandbox's init and proxy relay.
    pub program: PathBuf,
    /// Whether each build slot gets its own user id (the server is root).
    pub per_build_users: bool,
}

impl Isolation {
    /// What this machine allows: the sandbox when `bwrap` (the given path,
    /// else the first on `PATH`) works here, running `program` inside as its
    /// init; else why not.
    pub async fn detect(bwrap: Option<PathBuf>, program: PathBuf) -> Self {
        let install = "install bubblewrap (Debian and Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`) and restart chanto";
        let found = bwrap.or_else(|| {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|d| d.join("bwrap"))
                .find(|p| p.is_file())
        });
        let Some(bwrap) = found.filter(|p| p.is_file()) else {
            return Self::Unavailable(format!("bubblewrap (`bwrap`) is not installed; {install}"));
        };
        let sandbox = Sandbox { bwrap, program, per_build_users: rustix::process::geteuid().is_root() };
        // The probe runs exactly what a build runs: the same mounts, the
        // same user, the init with its relay, in a scratch work tree.
        let scratch = std::env::temp_dir().join(format!("chanto-sandbox-probe-{}", std::process::id()));
        let result = sandbox.probe(&scratch).await;
        let _ = std::fs::remove_dir_all(&scratch);
        match result {
            Ok(()) => Self::Sandbox(sandbox),
            Err(why) => Self::Unavailable(format!(
                "bubblewrap ({}) cannot make the build sandbox here: {why}; check that user namespaces are enabled (sysctl kernel.unprivileged_userns_clone=1) or {install}",
                sandbox.bwrap.display()
            )),
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Self::Sandbox(s) if s.per_build_users => format!(
                "bubblewrap sandbox ({}), own network namespace with egress through chanto's proxy, a user per build slot (uid {BUILD_UID_BASE}+)",
                s.bwrap.display()
            ),
            Self::Sandbox(s) => format!(
                "bubblewrap sandbox ({}), own network namespace with egress through chanto's proxy, as the server's user (not root)",
                s.bwrap.display()
            ),
            Self::Unavailable(why) => format!("no build sandbox, so builds are refused: {why}"),
        }
    }
}

/// The files one sandboxed command needs besides its script.
struct SandboxRun<'a> {
    cwd: &'a Path,
    work: &'a Path,
    home: &'a Path,
    /// `passwd` and `group` for the build's user.
    etc: &'a Path,
    /// The egress proxy's socket.
    socket: &'a Path,
    hidden: &'a [PathBuf],
    user: Option<(u32, u32)>,
    limits: &'a Limits,
}

impl Sandbox {
    async fn probe(&self, scratch: &Path) -> Result<(), String> {
        let user = self.per_build_users.then_some((BUILD_UID_BASE, BUILD_UID_BASE));
        let (work, home, etc) = (scratch.join("work"), scratch.join("home"), scratch.join("etc"));
        for d in [&work, &home, &etc] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        write_identity(&etc, user, &home).map_err(|e| format!("writing {}: {e}", etc.display()))?;
        chown_tree(&[scratch], user).await?;
        let socket = scratch.join("egress.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).map_err(|e| e.to_string())?;
        chown_tree(&[&socket], user).await?;
        let limits = Limits::default();
        let run = SandboxRun {
            cwd: &work,
            work: &work,
            home: &home,
            etc: &etc,
            socket: &socket,
            hidden: &[],
            user,
            limits: &limits,
        };
        let mut cmd = self.command("test -w . && test ! -e /root/. && id -u", &run);
        cmd.env_clear().env("PATH", BUILD_PATH).stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| "the probe took over 30 s".to_string())?
            .map_err(|e| format!("running it: {e}"))?;
        if !out.status.success() {
            return Err(format!("it exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(())
    }

    /// The command that runs `script` in the sandbox.
    fn command(&self, script: &str, r: &SandboxRun<'_>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bwrap);
        c.args(["--unshare-all", "--die-with-parent", "--new-session", "--hostname", "chanto-build"]);
        c.args(["--ro-bind", "/usr", "/usr"]);
        for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::symlink_metadata(dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(dir) {
                        c.arg("--symlink").arg(target).arg(dir);
                    }
                }
                Ok(m) if m.is_dir() => {
                    c.args(["--ro-bind", dir, dir]);
                }
                _ => {}
            }
        }
        c.args(["--dir", "/etc"]);
        for f in ETC_FILES {
            let p = format!("/etc/{f}");
            c.args(["--ro-bind-try", &p, &p]);
        }
        c.arg("--ro-bind").arg(r.etc.join("passwd")).arg("/etc/passwd");
        c.arg("--ro-bind").arg(r.etc.join("group")).arg("/etc/group");
        c.args(["--dev", "/dev", "--proc", "/proc"]);
        c.arg("--size").arg(r.limits.tmp.to_string()).args([
            "--tmpfs",
            "/tmp",
            "--dir",
            "/var",
            "--symlink",
            "../tmp",
            "/var/tmp",
        ]);
        for w in [r.work, r.home] {
            c.arg("--bind").arg(w).arg(w);
        }
        // Whatever of the data directory lies under a bound path stays unseen.
        for h in r.hidden {
            if h.starts_with("/usr") || h.starts_with(r.work) || h.starts_with(r.home) {
                c.arg("--tmpfs").arg(h);
            }
        }
        c.arg("--ro-bind").arg(&self.program).arg(init::SANDBOX_PROGRAM);
        c.arg("--bind").arg(r.socket).arg(init::SANDBOX_SOCKET);
        c.arg("--chdir").arg(r.cwd);
        c.args(["--", init::SANDBOX_PROGRAM, init::SUBCOMMAND, "--relay", init::SANDBOX_SOCKET, "--port"]);
        c.arg(init::PROXY_PORT.to_string());
        // The init lowers its own limits, which the command inherits and
        // cannot raise again.
        c.arg("--memory").arg(r.limits.memory.to_string()).arg("--file-size").arg(r.limits.disk.to_string());
        if r.user.is_some() {
            c.arg("--processes").arg(r.limits.processes.to_string());
        }
        c.args(["--", "/bin/sh", "-c", script]);
        if let Some((uid, gid)) = r.user {
            c.uid(uid).gid(gid);
        }
        c
    }
}

/// Writes `passwd` and `group` naming the build's user (`build`), so tools
/// that look their user up (`id -un`, ssh, npm) find one.
fn write_identity(etc: &Path, user: Option<(u32, u32)>, home: &Path) -> std::io::Result<()> {
    let (uid, gid) = user.unwrap_or_else(|| (rustix::process::getuid().as_raw(), rustix::process::getgid().as_raw()));
    let mut passwd = String::new();
    let mut group = String::new();
    if uid != 0 {
        passwd.push_str("root:x:0:0:root:/root:/usr/sbin/nologin\n");
        group.push_str("root:x:0:\n");
    }
    passwd.push_str(&format!("build:x:{uid}:{gid}:chanto build:{}:/bin/sh\n", home.display()));
    group.push_str(&format!("build:x:{gid}:\n"));
    if uid != 65534 {
        passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
        group.push_str("nogroup:x:65534:\n");
    }
    std::fs::write(etc.join("passwd"), passwd)?;
    std::fs::write(etc.join("group"), group)
}

/// Hands paths (recursively) to the build's user.
async fn chown_tree(paths: &[&Path], user: Option<(u32, u32)>) -> Result<(), String> {
    let Some((uid, gid)) = user else { return Ok(()) };
    for p in paths {
        let status = tokio::process::Command::new("chown").arg("-hR").arg(format!("{uid}:{gid}")).arg(p).status().await;
        if !status.is_ok_and(|s| s.success()) {
            return Err(format!("handing {} to uid {uid} failed", p.display()));
        }
    }
    Ok(())
}

/// Bytes a directory tree takes on disk (symlinks not followed).
fn disk_use(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += m.blocks() * 512;
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    total
}

/// Longest line kept in a build log; longer output is cut into lines of this size.
const MAX_LINE_BYTES: usize = 64 << 10;
/// Largest build log; output beyond it is dropped (the build goes on).
const MAX_LOG_BYTES: u64 = 64 << 20;

/// The build log: masked lines appended to a file that followers read.
struct Log {
    file: tokio::fs::File,
    masker: Masker,
    written: u64,
}

impl Log {
    async fn line(&mut self, text: &str) {
        if self.written >= MAX_LOG_BYTES {
            return;
        }
        let masked = self.masker.mask(text);
        let mut bytes = masked.into_owned().into_bytes();
        bytes.push(b'\n');
        self.written += bytes.len() as u64;
        if self.written >= MAX_LOG_BYTES {
            bytes.extend_from_slice(
                format!("[chanto: the log reached {} MiB; further output is not kept]\n", MAX_LOG_BYTES >> 20)
                    .as_bytes(),
            );
        }
        if let Err(e) = self.file.write_all(&bytes).await {
            tracing::warn!(error = %e, "writing a build log failed");
        }
    }
}

/// Reads a command's output into lines of about [`MAX_LINE_BYTES`], so
/// output without newlines cannot grow the server's memory. A long line is
/// never cut inside an occurrence of a secret (`secrets`), since the log
/// masks a line at a time: a secret cut in two would be kept in clear.
async fn pump_lines(
    r: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    tx: tokio::sync::mpsc::Sender<String>,
    secrets: Arc<Vec<Vec<u8>>>,
) {
    use tokio::io::AsyncReadExt;
    let mut r = r;
    let longest = secrets.iter().map(Vec::len).max().unwrap_or(0);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
            if tx.send(String::from_utf8_lossy(&pending[start..start + i]).into_owned()).await.is_err() {
                return;
            }
            start += i + 1;
        }
        pending.drain(..start);
        // Cut only once every secret that could cross the cut has fully arrived.
        while pending.len() >= MAX_LINE_BYTES + longest {
            let cut = cut_outside_secrets(&pending, MAX_LINE_BYTES, &secrets);
            let rest = pending.split_off(cut);
            if tx.send(String::from_utf8_lossy(&pending).into_owned()).await.is_err() {
                return;
            }
            pending = rest;
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(String::from_utf8_lossy(&pending).into_owned()).await;
    }
}

/// Where to cut `text` near `at` so that no occurrence of a secret spans the
/// cut: before the occurrence, or after it when it starts the text.
fn cut_outside_secrets(text: &[u8], at: usize, secrets: &[Vec<u8>]) -> usize {
    let mut cut = at;
    // Moving the cut back can land inside another occurrence: repeat until none spans it.
    for _ in 0..64 {
        let spanning = secrets.iter().filter(|s| !s.is_empty() && s.len() > 1).find_map(|s| {
            let from = cut.saturating_sub(s.len() - 1);
            let to = (cut + s.len() - 1).min(text.len());
            text[from..to].windows(s.len()).position(|w| w == &s[..]).map(|i| (from + i, s.len()))
        });
        match spanning {
            Some((0, len)) => return len,
            Some((start, _)) => cut = start,
            None => return cut,
        }
    }
    cut
}

/// Where a build stands while it runs.
struct Run {
    id: chanto_core::BuildId,
    meta: Arc<dyn chanto_store::MetaStore>,
    log: Log,
    phases: Vec<PhaseView>,
    cancel: tokio::sync::watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    /// Secret values (and each line of a multi-line one), for cutting long lines.
    secrets: Arc<Vec<Vec<u8>>>,
    /// The secret values the log masks.
    secret_values: Vec<String>,
    /// While a sandboxed command runs: the directories whose size is
    /// bounded, and the bound.
    disk: Option<(Vec<PathBuf>, u64)>,
}

/// Why a step stopped the build.
enum Stop {
    Failed(String),
    Superseded(String),
    Cancelled,
    TimedOut,
    Skipped,
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Stop::Failed(e.message)
    }
}

impl Run {
    /// Records a finished phase, also in metadata, so `chanto builds show`
    /// follows a running build.
    async fn phase(&mut self, name: &str, started: Instant, status: &str, exit_code: Option<i32>) {
        self.phases.push(PhaseView {
            name: name.into(),
            status: status.into(),
            exit_code,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        let json = serde_json::to_string(&self.phases).expect("phases serialize");
        if let Err(e) = self.meta.set_build_phases(&self.id, &json).await {
            tracing::warn!(build = %self.id, error = %e, "recording a build phase failed");
        }
    }

    fn stopped(&self) -> Option<Stop> {
        if *self.cancel.borrow() {
            Some(Stop::Cancelled)
        } else if tokio::time::Instant::now() >= self.deadline {
            Some(Stop::TimedOut)
        } else {
            None
        }
    }

    /// Runs one process to its end, its output into the log. Kills its whole
    /// process group on cancel or timeout (for a sandboxed command that is
    /// bubblewrap, and with it the sandbox's pid namespace: nothing the
    /// command started survives), and when the disk bound is passed.
    async fn exec(&mut self, mut cmd: tokio::process::Command) -> Result<(), (Stop, Option<i32>)> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| (Stop::Failed(format!("starting the command failed: {e}")), None))?;
        let pid = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(256);
        let secrets = self.secrets.clone();
        let pump = |r: Box<dyn tokio::io::AsyncRead + Unpin + Send>, tx: tokio::sync::mpsc::Sender<String>| {
            tokio::spawn(pump_lines(r, tx, secrets.clone()))
        };
        let out = pump(Box::new(child.stdout.take().expect("piped")), tx.clone());
        let err = pump(Box::new(child.stderr.take().expect("piped")), tx);
        let mut cancel = self.cancel.clone();
        let mut disk_check = tokio::time::interval(DISK_CHECK_EVERY);
        disk_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some(l) => self.log.line(&l).await,
                    None => break None,
                },
                _ = tokio::time::sleep_until(self.deadline) => break Some(Stop::TimedOut),
                _ = async { let _ = cancel.wait_for(|c| *c).await; } => break Some(Stop::Cancelled),
                _ = disk_check.tick(), if self.disk.is_some() => {
                    let (dirs, limit) = self.disk.clone().expect("checked");
                    let used = tokio::task::spawn_blocking(move || dirs.iter().map(|d| disk_use(d)).sum::<u64>())
                        .await
                        .unwrap_or(0);
                    if used > limit {
                        break Some(Stop::Failed(format!(
                            "the build's files took {} MiB, over its disk limit of {} MiB (chanto serve --build-disk)",
                            used >> 20,
                            limit >> 20
                        )));
                    }
                }
            }
        };
        if let Some(stop) = stop {
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            out.abort();
            err.abort();
            while let Ok(l) = rx.try_recv() {
                self.log.line(&l).await;
            }
            return Err((stop, None));
        }
        let status = child.wait().await.map_err(|e| (Stop::Failed(format!("waiting for the command: {e}")), None))?;
        // Whatever the command left running in the background goes with it.
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        if status.success() {
            Ok(())
        } else {
            let code = status.code();
            Err((
                Stop::Failed(format!(
                    "the command exited with status {}",
                    code.map_or("(killed)".into(), |c| c.to_string())
                )),
                code,
            ))
        }
    }

    /// A git command (run as the server, never inside the sandbox).
    async fn git(&mut self, dir: &Path, env: &[(String, String)], args: &[&str]) -> Result<(), Stop> {
        let mut cmd = git_command(dir, env);
        cmd.args(args);
        self.log.line(&format!("$ git {}", args.join(" "))).await;
        self.exec(cmd).await.map_err(|(s, _)| s)
    }
}

/// git as the server runs it: no system or global configuration (HOME is
/// `/nonexistent`, so a `.gitconfig` the repository checks out is never read),
/// no hooks, no prompts.
fn git_command(dir: &Path, env: &[(String, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| BUILD_PATH.into()))
        .env("HOME", "/nonexistent")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(["-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false"])
        .current_dir(dir);
    cmd
}

/// The environment that hands git the site's credential, and the key file to delete afterwards.
fn credential_env(
    builds: &Builds,
    conn: &GitConnection,
    settings: &GitSettings,
    key_file: &Path,
) -> Result<Vec<(String, String)>, String> {
    let Some(sealed) = &conn.credential else { return Ok(Vec::new()) };
    let secret = builds.sealer.open_string(sealed).map_err(|e| e.to_string())?;
    match settings.credential_kind {
        Some(CredentialKind::SshKey) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(key_file)
                .map_err(|e| format!("writing the deploy key: {e}"))?;
            let mut key = secret.into_bytes();
            if !key.ends_with(b"\n") {
                key.push(b'\n');
            }
            f.write_all(&key).map_err(|e| format!("writing the deploy key: {e}"))?;
            let known = builds.config.cache_dir.join("known_hosts");
            Ok(vec![(
                "GIT_SSH_COMMAND".into(),
                format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile='{}'",
                    key_file.display(),
                    known.display()
                ),
            )])
        }
        _ => {
            use base64::Engine;
            let user = settings.username.as_deref().unwrap_or("x-access-token");
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
            Ok(vec![
                ("GIT_CONFIG_COUNT".into(), "1".into()),
                ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
                ("GIT_CONFIG_VALUE_0".into(), format!("Authorization: Basic {basic}")),
            ])
        }
    }
}

/// The remote's branch heads (`git ls-remote --heads`), for polling.
pub(super) async fn ls_remote(
    builds: &Builds,
    conn: &GitConnection,
    settings: &GitSettings,
) -> Result<Vec<(String, String)>, ApiError> {
    let key = builds.config.work_dir.join(format!("poll-{}.key", conn.site));
    let fail = |m: String| ApiError::new(axum::http::StatusCode::BAD_GATEWAY, "git_failed", m);
    let env = credential_env(builds, conn, settings, &key).map_err(fail)?;
    let out = git_command(&builds.config.work_dir, &env)
        .args(["ls-remote", "--heads", "--", &conn.repository])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await;
    let _ = std::fs::remove_file(&key);
    let out = out.map_err(|_| fail("git ls-remote took over 60 s".into()))?.map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("git ls-remote failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (sha, r) = l.split_once('\t')?;
            Some((r.strip_prefix("refs/heads/")?.to_owned(), sha.to_owned()))
        })
        .collect())
}

/// Runs a claimed build to its end and records how it ended.
pub(super) async fn run(
    control: &Arc<Control>,
    builds: &Arc<Builds>,
    b: BuildRecord,
    slot: usize,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (switch, cancel) = tokio::sync::watch::channel(false);
    builds.running.lock().expect("running builds").insert(b.id.clone(), (b.site.clone(), b.branch.clone(), switch));
    let work = builds.config.work_dir.join(b.id.as_str());
    let started = Instant::now();
    tracing::info!(build = %b.id, site = %b.site, branch = %b.branch, "build started");
    let outcome = match execute(control, builds, &b, &work, cancel, slot).await {
        Ok(o) => o,
        Err(e) => BuildOutcome {
            state: BuildState::Failed,
            error: Some(format!("the build could not start: {}", e.message)),
            deploy: None,
            phases: "[]".into(),
        },
    };
    let _ = tokio::fs::remove_file(work.with_extension("key")).await;
    // The end is recorded whatever happens meanwhile: while the metadata store
    // is unreachable, this runner keeps trying (the build's heartbeat keeps
    // it this process's), so a build never stays `running` after its end.
    // Unless the server is shutting down: then it gives up, and the next
    // start of this node recovers the build (interrupted, retried).
    let finished = loop {
        match control.meta.finish_build(&b.id, outcome.clone(), now_millis()).await {
            Err(chanto_store::StoreError::Unavailable(e)) if *shutdown.borrow() => {
                break Err(chanto_store::StoreError::Unavailable(format!(
                    "{e}; the server is shutting down, so its next start recovers the build"
                )));
            }
            Err(chanto_store::StoreError::Unavailable(e)) => {
                tracing::warn!(build = %b.id, error = %e, "recording the end of a build failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => break other,
        }
    };
    control.poke_notifier();
    match finished {
        Ok(r) => {
            tracing::info!(build = %b.id, site = %b.site, state = %r.state, seconds = started.elapsed().as_secs_f64(), deploy = ?r.deploy, "build ended")
        }
        Err(e) => tracing::warn!(build = %b.id, error = %e, "recording the end of a build failed"),
    }
    // Only now: until the end is recorded, a cancel must find the switch.
    builds.running.lock().expect("running builds").remove(&b.id);
    // Removing a large work tree takes a while: the runner goes on meanwhile.
    tokio::spawn(async move {
        let _ = tokio::fs::remove_dir_all(&work).await;
        let _ = tokio::fs::remove_dir_all(work.with_extension("home")).await;
        let _ = tokio::fs::remove_dir_all(work.with_extension("etc")).await;
    });
}

/// The path of a build's log.
pub(super) fn log_path(builds: &Builds, id: &chanto_core::BuildId) -> PathBuf {
    builds.config.log_dir.join(format!("{id}.log"))
}

async fn execute(
    control: &Arc<Control>,
    builds: &Builds,
    b: &BuildRecord,
    work: &Path,
    cancel: tokio::sync::watch::Receiver<bool>,
    slot: usize,
) -> Result<BuildOutcome, ApiError> {
    let site = control.site(&b.site).await?;
    let conn = control.meta.get_git(&b.site).await?.ok_or_else(|| super::not_connected(&b.site))?;
    let settings: GitSettings = serde_json::from_str(&conn.settings).unwrap_or_default();
    let timeout = settings.timeout_secs.map_or(builds.config.default_timeout, Duration::from_secs);

    // Variables: site-wide, then the branch's; secrets withheld from untrusted builds.
    let mut user_vars: BTreeMap<String, String> = BTreeMap::new();
    let mut secrets = Vec::new();
    let mut withheld = Vec::new();
    let vars = control.meta.list_env(&b.site).await?;
    for scope_is_branch in [false, true] {
        for v in vars.iter().filter(|v| v.branch.is_some() == scope_is_branch) {
            if v.branch.as_ref().is_some_and(|br| *br != b.branch) {
                continue;
            }
            let value = if v.secret {
                if b.untrusted {
                    withheld.push(v.name.clone());
                    continue;
                }
                let plain = builds.sealer.open_string(&v.value).map_err(|e| {
                    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                })?;
                secrets.push(plain.clone());
                plain
            } else {
                String::from_utf8_lossy(&v.value).into_owned()
            };
            user_vars.insert(v.name.clone(), value);
        }
    }
    if let Some(c) = &conn.credential
        && let Ok(plain) = builds.sealer.open_string(c)
    {
        secrets.push(plain);
    }

    tokio::fs::create_dir_all(&builds.config.log_dir).await.map_err(io_err)?;
    let file =
        tokio::fs::OpenOptions::new().create(true).append(true).open(log_path(builds, &b.id)).await.map_err(io_err)?;
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    for s in &secrets {
        patterns.push(s.clone().into_bytes());
        if s.contains('\n') {
            patterns.extend(s.lines().map(|l| l.trim_end_matches('\r').as_bytes().to_vec()));
        }
    }
    let mut run = Run {
        id: b.id.clone(),
        meta: control.meta.clone(),
        log: Log { file, masker: Masker::new(secrets.clone()), written: 0 },
        secret_values: secrets,
        phases: Vec::new(),
        cancel,
        deadline: tokio::time::Instant::now() + timeout,
        timeout,
        secrets: Arc::new(patterns),
        disk: None,
    };
    let result = match (&settings.platform_config, &builds.config.isolation) {
        // Nothing of the repository runs: no sandbox needed.
        (Some(path), _) => {
            platform_steps(control, builds, b, &site.production_branch, &conn, &settings, path, work, &mut run)
                .await
                .map(|()| None)
        }
        (None, Isolation::Unavailable(why)) => {
            tracing::error!(build = %b.id, site = %b.site, reason = %why, "a build was refused: no build sandbox");
            Err(Stop::Failed(format!(
                "chanto runs builds only inside its sandbox, which this server does not have: {why}"
            )))
        }
        (None, Isolation::Sandbox(sandbox)) => {
            let user = sandbox.per_build_users.then(|| {
                let id = BUILD_UID_BASE + slot as u32;
                (id, id)
            });
            let ctx =
                StepContext { production: &site.production_branch, conn: &conn, settings: &settings, sandbox, user };
            steps(control, builds, b, &ctx, user_vars, withheld, work, &mut run).await.map(Some)
        }
    };
    let (state, error, deploy) = match result {
        Ok(deploy) => (BuildState::Succeeded, None, deploy),
        Err(Stop::Failed(why)) => (BuildState::Failed, Some(run.log.masker.mask(&why).into_owned()), None),
        Err(Stop::Cancelled) => (BuildState::Cancelled, Some("cancelled".into()), None),
        Err(Stop::TimedOut) => (
            BuildState::TimedOut,
            Some(format!(
                "the build ran past its time limit of {} and was stopped",
                humantime::format_duration(run.timeout)
            )),
            None,
        ),
        Err(Stop::Skipped) => {
            (BuildState::Skipped, Some("the commit message asks not to build it ([skip ci])".into()), None)
        }
        Err(Stop::Superseded(why)) => (BuildState::Superseded, Some(why), None),
    };
    match &error {
        Some(e) => run.log.line(&format!("build {state}: {e}")).await,
        None => run.log.line("build succeeded").await,
    }
    let _ = run.log.file.flush().await;
    Ok(BuildOutcome { state, error, deploy, phases: serde_json::to_string(&run.phases).expect("phases serialize") })
}

fn io_err(e: std::io::Error) -> ApiError {
    ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("build files: {e}"))
}

/// What a build's steps run with.
struct StepContext<'a> {
    production: &'a BranchName,
    conn: &'a GitConnection,
    settings: &'a GitSettings,
    sandbox: &'a Sandbox,
    /// The build's own user, when the server is root.
    user: Option<(u32, u32)>,
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    control: &Arc<Control>,
    builds: &Builds,
    b: &BuildRecord,
    ctx: &StepContext<'_>,
    user_vars: BTreeMap<String, String>,
    withheld: Vec<String>,
    work: &Path,
    run: &mut Run,
) -> Result<chanto_core::DeployId, Stop> {
    let (production, conn, settings) = (ctx.production, ctx.conn, ctx.settings);
    let failed = |m: String| Stop::Failed(m);
    let (commit, message) = checkout(control, builds, b, conn, settings, work, run).await?;

    // The build spec.
    let started = Instant::now();
    let context = if b.pull_request.is_some() {
        Context::DeployPreview
    } else if b.branch == *production {
        Context::Production
    } else {
        Context::BranchDeploy
    };
    // Files the spec could not be read from (a symlink, too large): said, never followed.
    let refused = std::cell::RefCell::new(Vec::<String>::new());
    let resolved = {
        let read = |name: &str| {
            checkout_file(work, name).unwrap_or_else(|why| {
                let mut refused = refused.borrow_mut();
                if !refused.contains(&why) {
                    refused.push(why);
                }
                None
            })
        };
        chanto_build::resolve_spec(&SpecInput {
            read: &read,
            context,
            branch: b.branch.as_str(),
            settings: &settings.build,
        })
    };
    let refused = refused.into_inner();
    let (spec, warnings) = match resolved {
        Ok(s) => s,
        Err(e) => {
            run.phase("spec", started, "failed", None).await;
            let why = if refused.is_empty() { String::new() } else { format!(" ({})", refused.join("; ")) };
            return Err(failed(format!("{e}{why}")));
        }
    };
    for why in &refused {
        run.log.line(&format!("warning: {why}")).await;
    }
    run.log
        .line(&format!(
            "build spec from {}: {} phase(s), publish {:?}",
            spec.source,
            spec.phases.len(),
            display_dir(&spec.publish)
        ))
        .await;
    for w in &warnings {
        run.log.line(&format!("warning: {w}")).await;
    }
    if !withheld.is_empty() {
        run.log
            .line(&format!("secret variables withheld from this pull request from a fork: {}", withheld.join(", ")))
            .await;
    }
    run.phase("spec", started, "succeeded", None).await;

    // Restore the cache.
    let cache_root = builds.config.cache_dir.join(b.site.as_str()).join(b.branch.label());
    let cache_dirs: Vec<String> = spec.cache_paths.iter().filter_map(|p| cache_dir_of(p)).collect();
    for p in &cache_dirs {
        let (from, to) = (cache_root.join(p), work.join(p));
        // Only into a place the repository has not already taken, through
        // real directories: a symlink in the tree must not send root's copy elsewhere.
        if from.exists() && within_without_symlinks(work, p, false) {
            if let Some(parent) = to.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let ok = tokio::process::Command::new("cp").arg("-a").arg("--").arg(&from).arg(&to).status().await;
            if ok.is_ok_and(|s| s.success()) {
                run.log.line(&format!("restored cache {p}")).await;
            }
        }
    }

    // Hand the tree to the build's user, with a passwd entry naming it.
    let home = work.with_extension("home");
    let etc = work.with_extension("etc");
    for dir in [&home, &etc] {
        tokio::fs::create_dir_all(dir).await.map_err(|e| failed(format!("creating {}: {e}", dir.display())))?;
    }
    write_identity(&etc, ctx.user, &home).map_err(|e| failed(format!("writing the build's passwd: {e}")))?;
    chown_tree(&[work, &home], ctx.user).await.map_err(failed)?;

    // The build's only way out: its own proxy, on a socket only its user can open.
    let socket = work.with_extension("sock");
    let _egress = super::egress::Egress::start(&socket, builds.config.egress.clone(), ctx.user, b.id.to_string())
        .map_err(|e| failed(format!("starting the build's egress proxy at {}: {e}", socket.display())))?;

    // The environment: the spec's, the site's and branch's variables, then chanto's own.
    let branch_url = control.config.url_for(&format!("{}--{}", b.branch.label(), b.site));
    let vars = BuildVars {
        site: b.site.as_str(),
        branch: b.branch.as_str(),
        commit: &commit,
        build_id: b.id.as_str(),
        pull_request: b.pull_request,
        site_url: &control.config.url_for(b.site.as_str()),
        url: &branch_url,
        deploy_url: &branch_url,
        context,
        repository_url: &conn.repository,
    };
    let user_vars: Vec<(String, String)> = user_vars.into_iter().collect();
    let base_env = [
        ("PATH".to_string(), BUILD_PATH.to_string()),
        ("HOME".to_string(), home.display().to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("TERM".to_string(), "dumb".to_string()),
    ];
    let proxy = format!("http://127.0.0.1:{}", init::PROXY_PORT);
    let proxy_env: Vec<(String, String)> =
        ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]
            .iter()
            .map(|k| (k.to_string(), proxy.clone()))
            .chain(["NO_PROXY", "no_proxy"].iter().map(|k| (k.to_string(), "localhost,127.0.0.1,::1".to_string())))
            .collect();
    let env =
        chanto_build::merge_env(&[&base_env, &proxy_env, &spec.env, &user_vars, &chanto_build::builtin_env(&vars)]);

    // Run the phases.
    let cwd = work.join(&spec.base);
    if !cwd.is_dir() {
        return Err(failed(format!("the base directory {:?} does not exist in the repository", spec.base)));
    }
    let hidden = builds.config.hidden.clone();
    for phase in &spec.phases {
        let started = Instant::now();
        run.log.line(&format!("--- {} ---", phase.name)).await;
        for command in &phase.commands {
            if let Some(stop) = run.stopped() {
                run.phase(&phase.name, started, status_of(&stop), None).await;
                return Err(stop);
            }
            run.log.line(&format!("$ {command}")).await;
            let sandboxed = SandboxRun {
                cwd: &cwd,
                work,
                home: &home,
                etc: &etc,
                socket: &socket,
                hidden: &hidden,
                user: ctx.user,
                limits: &builds.config.limits,
            };
            let mut cmd = ctx.sandbox.command(command, &sandboxed);
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            run.disk = Some((vec![work.to_path_buf(), home.clone()], builds.config.limits.disk));
            let result = run.exec(cmd).await;
            run.disk = None;
            if let Err((stop, code)) = result {
                run.phase(&phase.name, started, status_of(&stop), code).await;
                return Err(match stop {
                    Stop::Failed(why) => Stop::Failed(format!("{} phase: `{command}`: {why}", phase.name)),
                    other => other,
                });
            }
        }
        run.phase(&phase.name, started, "succeeded", Some(0)).await;
    }
    if let Some(stop) = run.stopped() {
        return Err(stop);
    }

    // A newer build of this branch that already went live wins: an older
    // commit never replaces it (a retried or redelivered build).
    if let Ok(recent) = control.meta.list_builds(&b.site, Some(&b.branch), 50).await
        && let Some(newer) = recent.iter().find(|o| o.created_at > b.created_at && o.state == BuildState::Succeeded)
    {
        return Err(Stop::Superseded(format!("build {} of a newer push already went live", newer.id)));
    }

    // Deploy the output through the same pipeline as `chanto deploy`.
    let started = Instant::now();
    let deployed = deploy_output(control, b, &commit, message.as_deref(), work, &spec, &settings.build).await;
    match deployed {
        Ok((deploy, files, uploaded, warnings)) => {
            for w in warnings {
                run.log.line(&format!("warning: {w}")).await;
            }
            run.log.line(&format!("deployed {files} files ({uploaded} new blobs) as deploy {deploy}")).await;
            run.phase("deploy", started, "succeeded", None).await;
            // Save the cache.
            for p in &cache_dirs {
                let (from, to) = (work.join(p), cache_root.join(p));
                // Only a real directory reached through real directories: a
                // symlink here could hand the server's own files to the next build.
                if within_without_symlinks(work, p, true) && from.is_dir() {
                    let _ = tokio::fs::remove_dir_all(&to).await;
                    if let Some(parent) = to.parent() {
                        let _ = tokio::fs::create_dir_all(parent).await;
                    }
                    if tokio::fs::rename(&from, &to).await.is_ok() {
                        run.log.line(&format!("saved cache {p}")).await;
                    }
                }
            }
            Ok(deploy)
        }
        Err(why) => {
            run.phase("deploy", started, "failed", None).await;
            Err(failed(why))
        }
    }
}

/// A platform config site's build: checks out the commit, reads the
/// configuration (never through a symlink), resolves its secret references
/// from the server's environment (`env:CHANTO_PLATFORM_*` only) and plans
/// it against what is live; the plan goes to the log and is kept for the
/// pull request's comment. On the production branch (not a pull request,
/// not from a fork) it then applies the plan, one change after the other,
/// each audited as this build's; destroys are left to the CLI. Nothing of
/// the repository runs.
#[allow(clippy::too_many_arguments)]
async fn platform_steps(
    control: &Arc<Control>,
    builds: &Builds,
    b: &BuildRecord,
    production: &BranchName,
    conn: &GitConnection,
    settings: &GitSettings,
    path: &str,
    work: &Path,
    run: &mut Run,
) -> Result<(), Stop> {
    use super::platform_build::{StoredPlan, files_hash, merged_key, plan_key, read_files, resolve_secrets};
    checkout(control, builds, b, conn, settings, work, run).await?;
    let applies = b.branch == *production && b.pull_request.is_none() && !b.untrusted;

    let started = Instant::now();
    run.log.line(&format!("--- plan: {path} ---")).await;
    let files = match read_files(work, path) {
        Ok(f) => f,
        Err(e) => {
            run.phase("plan", started, "failed", None).await;
            return Err(Stop::Failed(e));
        }
    };
    let hash = files_hash(&files);
    let named: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let config = match crate::platform::parse_files(&named) {
        Ok(c) => c,
        Err(e) => {
            let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
            for l in &lines {
                run.log.line(l).await;
            }
            run.phase("plan", started, "failed", None).await;
            return Err(Stop::Failed(lines.join("\n")));
        }
    };
    let secrets = match resolve_secrets(&config, |name| std::env::var(name).ok()) {
        Ok(s) => s,
        Err(problems) => {
            for l in &problems {
                run.log.line(l).await;
            }
            run.phase("plan", started, "failed", None).await;
            return Err(Stop::Failed(problems.join("\n")));
        }
    };
    // The values resolved are masked in the log like the site's own secrets.
    let mut masked = run.secret_values.clone();
    masked.extend(secrets.values().cloned());
    run.log.masker = Masker::new(masked);
    // One apply at a time, held from the plan to the end of the apply, so
    // no other apply changes what this one planned against.
    let _one_at_a_time = if applies { Some(crate::platform_ops::applying().await) } else { None };
    let planned = match control.plan_platform(config, &secrets, &[]).await {
        Ok(p) => p,
        Err(e) => {
            for l in e.message.lines() {
                run.log.line(l).await;
            }
            run.phase("plan", started, "failed", None).await;
            return Err(Stop::Failed(e.message));
        }
    };
    let mut text = planned.plan.render_text();
    let destroys: Vec<&str> = planned
        .plan
        .changes
        .iter()
        .filter(|c| c.action == crate::platform::Action::Destroy)
        .map(|c| c.address.as_str())
        .collect();
    let destroy_refusal = (!destroys.is_empty()).then(|| {
        format!(
            "the plan destroys {}; destroys are applied only from the CLI: chanto apply --allow-destroy",
            destroys.join(", ")
        )
    });
    if let Some(r) = &destroy_refusal {
        text.push_str(&format!("\nNote: {r}. A build of the production branch does not apply this plan.\n"));
    }
    for l in text.lines() {
        run.log.line(l).await;
    }
    let keep = |text: &str| {
        let stored = serde_json::to_string(&StoredPlan::new(b.id.as_str(), text, &hash)).expect("a plan serializes");
        let key = plan_key(b.branch.as_str());
        async move {
            if let Err(e) = control.meta.set_platform_state(&b.site, &key, Some(&stored)).await {
                tracing::warn!(build = %b.id, error = %e, "keeping the plan for the pull request's comment failed");
            }
        }
    };
    keep(&text).await;
    if applies {
        // The pull request this merge applies: the one whose last plan was
        // of these same files. Its comment gets the result.
        let merged = control.meta.platform_state(Some(&b.site)).await.unwrap_or_default().into_iter().filter_map(|r| {
            let n: u64 = r.key.strip_prefix("plan:pr-")?.parse().ok()?;
            let p: StoredPlan = serde_json::from_str(&r.value).ok()?;
            (p.files == hash).then_some(n)
        });
        if let Some(n) = merged.max() {
            let _ = control.meta.set_platform_state(&b.site, &merged_key(b.id.as_str()), Some(&n.to_string())).await;
            run.log.line(&format!("this applies pull request #{n} (its last plan was of these files)")).await;
        }
    }
    run.phase("plan", started, "succeeded", None).await;
    if !applies {
        if b.branch == *production && b.untrusted {
            run.log.line("not applied: the build is of a fork's pull request").await;
        } else {
            run.log.line(&format!("not applied: only builds of the production branch ({production}) apply")).await;
        }
        return Ok(());
    }
    if let Some(stop) = run.stopped() {
        return Err(stop);
    }

    let started = Instant::now();
    run.log.line("--- apply ---").await;
    if let Some(r) = destroy_refusal {
        run.phase("apply", started, "failed", None).await;
        return Err(Stop::Failed(r));
    }
    let principal = crate::auth::Principal {
        actor: format!("build {}", b.id),
        user: None,
        via: format!("git {}", b.trigger),
        scope: chanto_store::Scope::Admin,
    };
    let source = format!("build {} of {} at {}", b.id, b.site, b.commit.as_deref().unwrap_or(&b.git_ref));
    let changes = planned.plan.changes.clone();
    let applied = control.apply_changes(&planned, &changes, Vec::new(), false, &principal, &source).await;
    match applied {
        Ok(mut resp) => {
            // A note can hold what is shown once (a new connection's webhook
            // secret): build logs are for every reader, so it stays out.
            for a in &mut resp.applied {
                if a.note.is_some() {
                    a.note = Some(
                        "made a webhook secret, not written to build logs: see it with `chanto git connect --rotate-webhook-secret`"
                            .into(),
                    );
                }
            }
            resp.text = crate::platform_ops::apply_text(&resp);
            for l in resp.text.lines() {
                run.log.line(l).await;
            }
            keep(&format!("{text}\n{}", resp.text)).await;
            if let Some(f) = resp.failed {
                run.phase("apply", started, "failed", None).await;
                return Err(Stop::Failed(format!(
                    "applying {} failed: {} (what was applied stays; the next push to {production} applies the rest)",
                    f.address, f.error
                )));
            }
            run.phase("apply", started, "succeeded", None).await;
            Ok(())
        }
        Err(e) => {
            run.phase("apply", started, "failed", None).await;
            Err(Stop::Failed(e.message))
        }
    }
}

/// Fetches exactly the build's commit into `work` (shallow), checks that a
/// webhook's commit is still the head of its ref, and removes git's own
/// files: the commit and its message.
async fn checkout(
    control: &Arc<Control>,
    builds: &Builds,
    b: &BuildRecord,
    conn: &GitConnection,
    settings: &GitSettings,
    work: &Path,
    run: &mut Run,
) -> Result<(String, Option<String>), Stop> {
    let failed = |m: String| Stop::Failed(m);
    // Fetch exactly the commit, shallow.
    let started = Instant::now();
    let _ = tokio::fs::remove_dir_all(work).await;
    tokio::fs::create_dir_all(work).await.map_err(|e| failed(format!("creating the work directory: {e}")))?;
    let key = work.with_extension("key");
    let env = credential_env(builds, conn, settings, &key).map_err(failed)?;
    run.log.line(&format!("fetching {} from {}", b.commit.as_deref().unwrap_or(&b.git_ref), conn.repository)).await;
    let fetched = async {
        run.git(work, &env, &["init", "-q"]).await?;
        run.git(work, &env, &["remote", "add", "origin", "--", &conn.repository]).await?;
        let by_ref =
            if b.git_ref.starts_with("refs/") { b.git_ref.clone() } else { format!("refs/heads/{}", b.git_ref) };
        let wanted = b.commit.clone().unwrap_or_else(|| by_ref.clone());
        if run.git(work, &env, &["fetch", "-q", "--depth", "1", "--no-tags", "origin", &wanted]).await.is_err() {
            if b.commit.is_none() {
                return Err(Stop::Failed(format!("fetching {by_ref} from {} failed; see the log", conn.repository)));
            }
            run.log.line("the remote does not serve commits by id; fetching the ref instead").await;
            run.git(work, &env, &["fetch", "-q", "--depth", "50", "--no-tags", "origin", &by_ref]).await?;
        }
        let target = b.commit.clone().unwrap_or_else(|| "FETCH_HEAD".into());
        run.git(work, &env, &["checkout", "-q", "--detach", &target]).await
    }
    .await;
    let _ = std::fs::remove_file(&key);
    if let Err(stop) = fetched {
        run.phase("fetch", started, status_of(&stop), None).await;
        return Err(stop);
    }
    let head = git_output(work, &["log", "-1", "--format=%H%x00%an%x00%B"]).await.map_err(failed)?;
    let mut parts = head.splitn(3, '\0');
    let commit = parts.next().unwrap_or_default().trim().to_owned();
    let author = parts.next().map(str::to_owned);
    let message = parts.next().map(|m| m.trim().to_owned());
    run.log.line(&format!("checked out {commit}")).await;
    run.phase("fetch", started, "succeeded", None).await;
    if let Err(e) = control.meta.set_build_commit(&b.id, &commit, message.clone(), author, now_millis()).await {
        tracing::warn!(build = %b.id, error = %e, "recording the build's commit failed");
    }
    if b.trigger == "poll" && message.as_deref().is_some_and(chanto_build::skip_requested) {
        return Err(Stop::Skipped);
    }
    // A webhook names a commit, but forges do not sign when they sent it: a
    // replayed or late delivery of an old push must not deploy an old commit.
    // Build it only while it is still the head of its ref.
    if b.trigger.ends_with(" push") || b.trigger.ends_with(" pull request") {
        let wanted =
            if b.git_ref.starts_with("refs/") { b.git_ref.clone() } else { format!("refs/heads/{}", b.git_ref) };
        let key = work.with_extension("key");
        let env = credential_env(builds, conn, settings, &key).map_err(failed)?;
        let out =
            git_command(work, &env).args(["ls-remote", "--", &conn.repository, &wanted]).kill_on_drop(true).output();
        let out = tokio::time::timeout(Duration::from_secs(60), out).await;
        let _ = std::fs::remove_file(&key);
        match out {
            Ok(Ok(o)) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                let head = text
                    .lines()
                    .find_map(|l| l.split_once('\t').filter(|(_, r)| *r == wanted).map(|(h, _)| h.to_owned()));
                match head {
                    Some(h) if h != commit => {
                        return Err(Stop::Superseded(format!(
                            "{wanted} has moved on to {h}; the push of that commit builds instead"
                        )));
                    }
                    None => return Err(Stop::Superseded(format!("{wanted} no longer exists on the remote"))),
                    Some(_) => {}
                }
            }
            _ => {
                run.log
                    .line("warning: could not check that the commit is still the head of its ref; building it anyway")
                    .await
            }
        }
    }
    // Remove git's own files before anything else runs: the build sees a plain tree.
    let _ = tokio::fs::remove_dir_all(work.join(".git")).await;
    Ok((commit, message))
}

/// Whether `rel` under `root` is reached through real directories only (no
/// symlink at any step) and, when `exists`, is itself there and no symlink;
/// when not `exists`, that it is not there yet.
fn within_without_symlinks(root: &Path, rel: &str, exists: bool) -> bool {
    let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    let mut at = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." || *part == "." {
            return false;
        }
        at.push(part);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return false,
            Ok(m) if last => return exists && m.is_dir(),
            Ok(m) if !m.is_dir() => return false,
            Ok(_) => {}
            Err(_) => return !exists,
        }
    }
    !parts.is_empty() && !exists
}

/// The directory a cache path names: Amplify writes globs (`node_modules/**/*`),
/// chanto caches the directory before the first wildcard. `None` for a path
/// that names the whole tree.
fn cache_dir_of(path: &str) -> Option<String> {
    let dir: Vec<&str> =
        path.split('/').take_while(|s| !s.contains(['*', '?', '['])).filter(|s| !s.is_empty() && *s != ".").collect();
    (!dir.is_empty()).then(|| dir.join("/"))
}

fn status_of(stop: &Stop) -> &'static str {
    match stop {
        Stop::Failed(_) => "failed",
        Stop::Cancelled => "cancelled",
        Stop::TimedOut => "timed_out",
        Stop::Skipped => "skipped",
        Stop::Superseded(_) => "superseded",
    }
}

fn display_dir(d: &str) -> &str {
    if d.is_empty() { "." } else { d }
}

/// Reads a build spec file from the checkout: only a regular file (never a
/// symlink, which could point anywhere on the server), at most 1 MiB, `None`
/// otherwise.
fn read_spec_file(work: &Path, name: &str) -> Option<String> {
    checkout_file(work, name).ok().flatten()
}

/// Reads a config file from the checkout, `name` its path from the root (a
/// root file, or `<base>/netlify.toml`): `Ok(None)` when it is not there, an
/// error saying why when it is there but not read: it is a symlink or is
/// reached through one (which could point anywhere on the server: the
/// repository is untrusted), is not a regular file, or is over 1 MiB.
fn checkout_file(work: &Path, name: &str) -> Result<Option<String>, String> {
    if let Some((dir, _)) = name.rsplit_once('/')
        && !within_without_symlinks(work, dir, true)
    {
        // Not there yet, reached through real directories: no such file.
        if within_without_symlinks(work, dir, false) {
            return Ok(None);
        }
        return Err(format!(
            "{name} is not read: {dir} is not a directory of the repository (a symlink, or reached through one); \
             config files are read only through real directories"
        ));
    }
    let path = work.join(name);
    let Ok(meta) = std::fs::symlink_metadata(&path) else { return Ok(None) };
    if meta.file_type().is_symlink() {
        return Err(format!("{name} is not read: it is a symlink, which is never followed; commit the file itself"));
    }
    if !meta.is_file() {
        return Err(format!("{name} is not read: it is not a regular file"));
    }
    if meta.len() > MAX_SPEC_BYTES {
        return Err(format!(
            "{name} is not read: it is {} bytes; build spec files may be at most 1 MiB, so move data out of it",
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map(Some).map_err(|e| format!("{name} is not read: {e}"))
}

async fn git_output(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = git_command(dir, &[]).args(args).output().await.map_err(|e| format!("running git: {e}"))?;
    if !out.status.success() {
        return Err(format!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Blobs uploaded at once from a build's output.
const UPLOADS_IN_FLIGHT: usize = 32;
/// Output files up to this size are kept in memory between hashing and upload.
const KEEP_IN_MEMORY: u64 = 1 << 20;
/// At most this many bytes of one build's output are kept in memory at once.
const MEMORY_BUDGET: u64 = 64 << 20;

/// One file of a build's output, hashed.
struct OutputFile {
    path: String,
    abs: PathBuf,
    hash: ContentHash,
    size: u64,
    /// The bytes, for small files (read once: hashed, then uploaded).
    bytes: Option<bytes::Bytes>,
}

impl OutputFile {
    fn read(f: crate::walk::LocalFile, budget: &std::sync::atomic::AtomicU64) -> Result<Self, String> {
        use std::sync::atomic::Ordering;
        let fail = |e: std::io::Error| format!("reading {}: {e}", f.path);
        let kept = f.size <= KEEP_IN_MEMORY
            && budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(f.size)).is_ok();
        let mut file = open_no_follow(&f.abs).map_err(fail)?;
        if kept {
            let mut buf = Vec::with_capacity(f.size as usize);
            std::io::Read::read_to_end(&mut file, &mut buf).map_err(fail)?;
            let bytes = bytes::Bytes::from(buf);
            return Ok(Self {
                hash: ContentHash::of(&bytes),
                size: bytes.len() as u64,
                bytes: Some(bytes),
                path: f.path,
                abs: f.abs,
            });
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(&mut file).map_err(fail)?;
        let size = file.metadata().map_err(fail)?.len();
        Ok(Self { hash: ContentHash::from_blake3(hasher.finalize()), size, bytes: None, path: f.path, abs: f.abs })
    }
}

/// Opens a file of a build's output, never through a symlink in its last
/// component (the walk already refused symlinked directories).
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32).open(path)
}

/// Walks the publish directory, hashes its files, uploads what the store
/// lacks and finalizes (which activates). Returns the deploy, the file count
/// the number of blobs uploaded and the warnings its rule files drew.
async fn deploy_output(
    control: &Arc<Control>,
    b: &BuildRecord,
    commit: &str,
    message: Option<&str>,
    work: &Path,
    spec: &chanto_build::BuildSpec,
    settings: &chanto_build::SiteBuildSettings,
) -> Result<(chanto_core::DeployId, usize, usize, Vec<String>), String> {
    // The build just wrote its output (and git its checkout) to the disk
    // the blob store is on; the sync at finalize waits for all of it, so
    // start writing now, while the output is hashed and uploaded. Measured
    // by bench/builds: the first build's sync took 454 ms without this.
    control.blobs.write_back();
    let publish = work.join(&spec.publish);
    let canon_work = work.canonicalize().map_err(|e| e.to_string())?;
    let canon = publish.canonicalize().map_err(|_| {
        format!(
            "the publish directory {:?} does not exist after the build; check `publish` (or artifacts.baseDirectory) in {}",
            display_dir(&spec.publish),
            spec.source
        )
    })?;
    if !canon.starts_with(&canon_work) {
        return Err(format!("the publish directory {:?} points outside the repository", spec.publish));
    }
    // What the platform reads from the checkout's root (its rule files, and
    // netlify.toml from the site's base directory when it has one) and
    // leaves out (Firebase's ignore list): the same layout `chanto deploy` uses.
    let layout =
        chanto_build::build_layout(spec, settings, &|name| read_spec_file(work, name)).map_err(|e| e.to_string())?;
    let root = work.to_owned();
    let (files, links) = tokio::task::spawn_blocking(move || -> Result<(Vec<OutputFile>, Vec<String>), String> {
        use rayon::prelude::*;
        let (listed, links) = crate::walk::walk_no_follow(&canon).map_err(|e| e.to_string())?;
        let budget = std::sync::atomic::AtomicU64::new(MEMORY_BUDGET);
        let mut files = listed
            .into_par_iter()
            // Rule files at the top configure the deploy; they are never "ignored".
            .filter(|f| chanto_rules::is_rule_file(&f.path) || !chanto_build::excluded(&layout, &f.path))
            .filter(|f| !layout.rule_files.iter().any(|r| r.name == f.path))
            .map(|f| OutputFile::read(f, &budget))
            .collect::<Result<Vec<_>, String>>()?;
        // The root's (or base directory's) copy is the one the platform
        // reads. A file in the checkout, reached through real directories
        // only and opened without following a symlink the build may have
        // left there.
        for rule in &layout.rule_files {
            let path = &rule.path;
            if let Some((dir, _)) = path.rsplit_once('/')
                && !within_without_symlinks(&root, dir, true)
            {
                return Err(format!("{path} is not read: {dir} is no longer a directory of the repository"));
            }
            let listed = crate::walk::LocalFile::of(rule.name, &root.join(path))
                .map_err(|e| format!("reading {path} in the repository: {e}"))?;
            files.push(OutputFile::read(listed, &budget)?);
        }
        Ok((files, links))
    })
    .await
    .map_err(|e| e.to_string())??;
    if files.is_empty() {
        return Err("the build produced no files to deploy (artifacts.files matched nothing)".into());
    }
    let first_line = message.and_then(|m| m.lines().next()).unwrap_or_default();
    let short = &commit[..commit.len().min(12)];
    let title = match &b.title {
        Some(t) => format!("{t} ({short})"),
        None => format!("{first_line} ({short})").trim().to_owned(),
    };
    let req = DeployRequest {
        branch: Some(b.branch.clone()),
        message: Some(title.chars().take(500).collect()),
        draft: false,
        source: format!("build {}", b.id),
        files: files.iter().map(|f| (f.path.clone(), FileSpec { hash: f.hash, size: f.size })).collect(),
    };
    let (deploy, required) = control.create_deploy(&b.site, req).await.map_err(|e| e.message)?;
    let by_hash: std::collections::HashMap<ContentHash, &OutputFile> = files.iter().map(|f| (f.hash, f)).collect();
    let mut uploads = tokio::task::JoinSet::new();
    for h in &required {
        if uploads.len() >= UPLOADS_IN_FLIGHT
            && let Some(done) = uploads.join_next().await
        {
            done.map_err(|e| e.to_string())??;
        }
        let file = *by_hash.get(h).ok_or_else(|| format!("no file for blob {h}"))?;
        let (control, id, h, abs, bytes) =
            (control.clone(), deploy.id.clone(), *h, file.abs.clone(), file.bytes.clone());
        uploads.spawn(async move {
            let stream = match bytes {
                Some(b) => futures_util::stream::once(async move { Ok(b) }).boxed(),
                None => {
                    let f = open_no_follow(&abs).map_err(|e| format!("reading {}: {e}", abs.display()))?;
                    let f = tokio::fs::File::from_std(f);
                    tokio_util::io::ReaderStream::with_capacity(f, 256 << 10).boxed()
                }
            };
            control.upload(&id, &h, stream).await.map(|_| ()).map_err(|e| e.message)
        });
    }
    while let Some(done) = uploads.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    // Finalizing makes the deploy live. Another server may have taken this
    // build for dead since the last heartbeat (and queued its retry): check
    // it is still this server's, by refreshing its heartbeat now.
    let lost = control
        .meta
        .heartbeat_builds(&control.config.owner, std::slice::from_ref(&b.id), now_millis())
        .await
        .map_err(|e| format!("checking that this server still runs the build failed: {e}"))?;
    if !lost.is_empty() {
        tracing::warn!(build = %b.id, deploy = %deploy.id, "another server took this build over before its deploy went live; not activating it");
        return Err("another server took this build over (its heartbeat was late) before its deploy went live; the deploy was not activated".into());
    }
    let (record, mut warnings) = control.finalize(&deploy.id).await.map_err(|e| e.message)?;
    for link in links {
        warnings.push(format!("{link} is a symlink; a build's output is read without following links, so it was not deployed (copy the file instead)"));
    }
    Ok((record.id, files.len(), required.len(), warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_are_read_through_real_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let (root, host) = (dir.path().join("work"), dir.path().join("host"));
        std::fs::create_dir_all(root.join("site")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("netlify.toml"), "host secret").unwrap();
        std::fs::write(root.join("site/netlify.toml"), "[build]").unwrap();
        std::os::unix::fs::symlink(&host, root.join("linked")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink(host.join("netlify.toml"), root.join("real/netlify.toml")).unwrap();
        std::fs::write(root.join("big"), "").unwrap();
        assert_eq!(checkout_file(&root, "site/netlify.toml"), Ok(Some("[build]".into())));
        assert_eq!(checkout_file(&root, "missing/netlify.toml"), Ok(None));
        assert_eq!(checkout_file(&root, "site/deeper/netlify.toml"), Ok(None));
        let e = checkout_file(&root, "linked/netlify.toml").unwrap_err();
        assert!(e.starts_with("linked/netlify.toml is not read: linked is not a directory"), "{e}");
        let e = checkout_file(&root, "real/netlify.toml").unwrap_err();
        assert!(e.contains("it is a symlink"), "{e}");
        // A file where the base directory should be.
        let e = checkout_file(&root, "big/netlify.toml").unwrap_err();
        assert!(e.contains("big is not a directory"), "{e}");
        std::fs::create_dir_all(root.join("huge")).unwrap();
        std::fs::write(root.join("huge/netlify.toml"), vec![b'#'; MAX_SPEC_BYTES as usize + 1]).unwrap();
        let e = checkout_file(&root, "huge/netlify.toml").unwrap_err();
        assert!(e.contains("at most 1 MiB"), "{e}");
        assert_eq!(read_spec_file(&root, "huge/netlify.toml"), None);
    }

    #[test]
    fn cache_paths_never_go_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/deep")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("real/inner")).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        // Saving (it must exist, as a real directory, through real directories).
        assert!(within_without_symlinks(root, "real", true));
        assert!(within_without_symlinks(root, "real/deep", true));
        for bad in ["link", "link/x", "real/inner", "real/inner/x", "file", "missing", "../real", "", "real/../real"] {
            assert!(!within_without_symlinks(root, bad, true), "{bad}");
        }
        // Restoring (it must not exist yet, and its parents must be real directories).
        assert!(within_without_symlinks(root, "new", false));
        assert!(within_without_symlinks(root, "real/new/deeper", false));
        for bad in ["real", "link", "link/new", "real/inner/new", "file/new", "..", ""] {
            assert!(!within_without_symlinks(root, bad, false), "{bad}");
        }
    }

    #[tokio::test]
    async fn output_without_newlines_is_cut_into_bounded_lines() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mut input = vec![b'a'; MAX_LINE_BYTES * 3 + 10];
        input.extend_from_slice(b"\nshort\nlast");
        let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = Box::new(std::io::Cursor::new(input));
        pump_lines(reader, tx, Arc::new(Vec::new())).await;
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push(l);
        }
        let lens: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE_BYTES, MAX_LINE_BYTES, MAX_LINE_BYTES, 10, 5, 4]);
        assert_eq!(lines[4], "short");
    }

    /// Lines are masked one at a time: a secret the 64 KiB cut splits in two
    /// would reach the log in clear, half on each line.
    #[tokio::test]
    async fn a_secret_across_the_line_cut_is_still_masked() {
        let secret = "s3cr3t-straddling-value";
        for offset in [1, 5, secret.len() - 1] {
            let mut input = vec![b'a'; MAX_LINE_BYTES - offset];
            input.extend_from_slice(secret.as_bytes());
            input.extend_from_slice(&vec![b'b'; MAX_LINE_BYTES]);
            input.extend_from_slice(b"\n");
            let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
            let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = Box::new(std::io::Cursor::new(input));
            pump_lines(reader, tx, Arc::new(vec![secret.as_bytes().to_vec()])).await;
            let masker = Masker::new([secret.to_string()]);
            let mut lines = Vec::new();
            while let Some(l) = rx.recv().await {
                lines.push(masker.mask(&l).into_owned());
            }
            assert!(lines.len() >= 2, "the line was cut");
            assert!(lines.iter().all(|l| l.len() <= MAX_LINE_BYTES + secret.len()), "lines stay bounded");
            for part in ["s3cr3t", "straddling", "-value"] {
                assert!(!lines.iter().any(|l| l.contains(part)), "{part:?} of the secret leaked at offset {offset}");
            }
            assert_eq!(lines.iter().filter(|l| l.contains("***")).count(), 1);
        }
    }

    #[test]
    fn cuts_avoid_every_secret() {
        let text = b"xxabcdyy";
        assert_eq!(cut_outside_secrets(text, 4, &[b"abcd".to_vec()]), 2);
        assert_eq!(cut_outside_secrets(text, 2, &[b"abcd".to_vec()]), 2);
        assert_eq!(cut_outside_secrets(text, 6, &[b"abcd".to_vec()]), 6);
        assert_eq!(cut_outside_secrets(b"abcdzz", 2, &[b"abcd".to_vec()]), 4, "a secret at the start: cut after it");
        // Moving the cut back lands in another secret: it moves again.
        assert_eq!(cut_outside_secrets(b"..PQRSTUV..", 7, &[b"TUV".to_vec(), b"PQRST".to_vec()]), 2);
    }

    #[test]
    fn cache_paths_name_directories() {
        for (path, dir) in [
            ("node_modules/**/*", Some("node_modules")),
            ("node_modules", Some("node_modules")),
            (".cache/gatsby/*", Some(".cache/gatsby")),
            ("./vendor/", Some("vendor")),
            ("**/*", None),
            ("*", None),
        ] {
            assert_eq!(cache_dir_of(path).as_deref(), dir, "{path}");
        }
    }
}

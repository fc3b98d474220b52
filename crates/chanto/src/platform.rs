//! `chanto export`, `chanto plan` and `chanto apply`: configuration as code
//! (issue 19), the CLI side. The file's format and plans are
//! `chanto_control::platform`; the API's requests and answers are
//! `chanto_control::platform_ops`.
//!
//! **Secrets.** The file names them (`env:VAR`, `file:PATH`); this side
//! reads them where it runs and sends their values with the request, as
//! `chanto env set --secret` sends one. A reference that cannot be read is
//! named with the `file:line:column` where it is written, all of them in
//! one run, before anything is sent.
//!
//! **Exit codes.** `chanto plan` exits 0 when nothing changes, 2 when
//! something does and 1 on an error (`terraform plan -detailed-exitcode`),
//! through [`crate::commands::Exit`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use chanto_control::platform::{self, Action, MAX_FILE_BYTES, MAX_FILES, Plan, PlatformConfig, SavedPlan, SecretRef};
use chanto_control::platform_ops::{
    ApplyRequest, ApplyResponse, ConfigFile, ExportResponse, MAX_REQUEST_BYTES, PlanRequest, PlanResponse,
};
use clap::Args;

use crate::client::{CallError, Client};
use crate::commands::{Exit, count, print_json};

/// The configuration `chanto plan` reads without `-f`.
pub const DEFAULT_FILE: &str = "chanto.platform.toml";

/// Largest secret a `file:` reference may read.
pub const MAX_SECRET_BYTES: usize = 64 << 10;

/// `chanto export` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write the configuration to this file (whole or not at all) instead of
    /// standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace FILE if it is already there.
    #[arg(long, requires = "out")]
    pub force: bool,
}

/// `chanto plan` flags.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The configuration: a file, or a directory whose *.toml files (not
    /// those in its subdirectories) together make it.
    #[arg(short = 'f', long = "file", value_name = "PATH", default_value = DEFAULT_FILE)]
    pub file: PathBuf,
    /// Also save the plan to this file (mode 0600), for `chanto apply PLAN`.
    #[arg(long, value_name = "PLAN")]
    pub out: Option<PathBuf>,
    /// Plan only this site (repeat for more): other sites are neither
    /// compared nor changed, so a file holding one site (from `chanto
    /// import`) adds it without destroying the rest. Without it the file is
    /// the whole truth: a live site it does not declare is destroyed.
    #[arg(long = "site", value_name = "NAME")]
    pub sites: Vec<String>,
}

/// `chanto apply` flags.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The plan `chanto plan --out PLAN` saved.
    #[arg(value_name = "PLAN", required_unless_present = "file", conflicts_with = "file")]
    pub plan: Option<PathBuf>,
    /// Instead of a saved plan: plan this configuration now (a file, or a
    /// directory of *.toml files), show the plan, and apply it once you type
    /// `yes` (as `terraform apply` without a plan file).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// With -f: plan and apply only this site (repeat for more).
    #[arg(long = "site", value_name = "NAME", requires = "file")]
    pub sites: Vec<String>,
    /// With -f: apply without asking (needed when standard input is not a terminal).
    #[arg(long, requires = "file")]
    pub auto_approve: bool,
    /// Let the plan destroy what it destroys (a site the configuration no
    /// longer declares goes with all its deploys).
    #[arg(long)]
    pub allow_destroy: bool,
}

// ------------------------------------------------------------------ commands

/// `chanto export`.
pub async fn export(client: &Client, args: ExportArgs, json: bool) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        refuse_directory(out)?;
        if !args.force && std::fs::symlink_metadata(out).is_ok() {
            bail!("{} is already there; nothing written (pass --force to replace it)", out.display());
        }
    }
    let resp: ExportResponse = client.get("/platform").await.map_err(|e| api_error(e, "chanto export"))?;
    if let Some(out) = &args.out {
        write_atomic(out, resp.config.as_bytes(), 0o666)?;
    }
    if json {
        return print_json(&resp);
    }
    match &args.out {
        Some(out) => println!("Wrote {} from what is live on {}", out.display(), client.server()),
        None => print!("{}", resp.config),
    }
    eprint!("{}", secrets_note(&resp));
    Ok(())
}

/// What `chanto export` says on standard error about the references it wrote.
fn secrets_note(resp: &ExportResponse) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if resp.secrets.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "The configuration names {} by reference; `chanto plan` and `chanto apply` read them on the machine that runs them:",
        count(resp.secrets.len() as u64, "secret")
    );
    let width = resp.secrets.iter().map(|s| s.reference.chars().count()).max().unwrap_or(0);
    for s in &resp.secrets {
        let made_up = if s.remembered { "" } else { "  (name made up by the export)" };
        let _ = writeln!(out, "  {:width$}  {}{made_up}", s.reference, s.used_by.join(", "));
    }
    let made_up: Vec<&str> = resp.secrets.iter().filter(|s| !s.remembered).map(|s| s.reference.as_str()).collect();
    if !made_up.is_empty() {
        let example = made_up
            .iter()
            .find_map(|r| r.strip_prefix("env:"))
            .map(|v| format!(" (export {v}=…; for file:PATH, write the value to PATH)"))
            .unwrap_or_else(|| " (write each value to the file its file: reference names)".into());
        let _ = writeln!(
            out,
            "No apply set {} from a file, so the export made up {}: set each to the live value under that name before `chanto plan`{example}, or plan will show the value changing.",
            if made_up.len() == 1 { "that secret" } else { "these secrets" },
            if made_up.len() == 1 { "its name".to_owned() } else { format!("their {} names", made_up.len()) },
        );
    }
    out
}

/// Reads, checks and resolves a configuration here (only `sites`, if any named).
fn prepare(file: &Path, sites: &[String], command: &str) -> anyhow::Result<(Source, BTreeMap<String, String>)> {
    let source = read_config(file)?;
    let mut config = parse_source(&source)?;
    if !sites.is_empty() {
        let mut only = Vec::new();
        for s in sites {
            only.push(s.parse::<chanto_core::SiteName>().map_err(|e| anyhow!("--site {s}: {e}"))?);
        }
        config.sites.retain(|name, _| only.contains(name));
    }
    let secrets =
        resolve_secrets(&config, &source.files, &source.dir, command, "", &env_var).map_err(unresolved_error)?;
    Ok((source, secrets))
}

fn plan_request(source: &Source, secrets: BTreeMap<String, String>, sites: &[String]) -> PlanRequest {
    PlanRequest {
        files: source.files.iter().map(|(name, text)| ConfigFile { name: name.clone(), text: text.clone() }).collect(),
        secrets,
        sites: sites.to_vec(),
    }
}

/// `chanto plan`.
pub async fn plan(client: &Client, args: PlanArgs, json: bool) -> anyhow::Result<()> {
    let (source, secrets) = prepare(&args.file, &args.sites, "chanto plan")?;
    // Checked before anything is sent: the plan file must be writable where
    // it says, and must not replace the configuration.
    let directory = match &args.out {
        Some(out) => {
            refuse_directory(out)?;
            refuse_overwriting_source(out, &source)?;
            Some(record_directory(&source.dir)?)
        }
        None => None,
    };
    let request = plan_request(&source, secrets, &args.sites);
    let resp: PlanResponse = client.post("/platform/plan", &request).await.map_err(|e| api_error(e, "chanto plan"))?;
    if json {
        println!("{}", resp.plan.to_json());
    } else {
        print!("{}", resp.text);
    }
    if let Some(out) = &args.out {
        let mut saved = resp.saved;
        saved.directory = directory;
        write_atomic(out, saved.to_json().as_bytes(), 0o600)?;
        let said = format!("Saved the plan to {}; apply it with: chanto apply {}", out.display(), shell_word(out));
        if json {
            eprintln!("{said}");
        } else {
            println!("\n{said}");
        }
    }
    plan_outcome(&resp.plan)
}

/// `chanto plan`'s result for a plan: 0 no changes, 2 changes.
fn plan_outcome(plan: &Plan) -> anyhow::Result<()> {
    match u8::try_from(plan.exit_code()) {
        Ok(0) => Ok(()),
        Ok(code) => Err(Exit(code).into()),
        Err(_) => Err(Exit(1).into()),
    }
}

/// `chanto apply PLAN`, or `chanto apply -f FILE` (plan, show, ask, apply).
pub async fn apply(client: &Client, args: ApplyArgs, json: bool) -> anyhow::Result<()> {
    let (request, command) = match (&args.plan, &args.file) {
        (Some(path), _) => {
            let (saved, config) = read_plan(path)?;
            refuse_destroys(&saved.plan, args.allow_destroy, &format!("chanto apply {}", shell_word(path)))?;
            let dir = match &saved.directory {
                Some(d) => PathBuf::from(d),
                None => parent_dir(path),
            };
            let command = format!("chanto apply {}", shell_word(path));
            let place = path.display().to_string();
            let secrets = resolve_secrets(&config, &[], &dir, &command, &place, &env_var).map_err(unresolved_error)?;
            (ApplyRequest { plan: saved, secrets, allow_destroy: args.allow_destroy }, command)
        }
        (None, Some(file)) => {
            let command = format!("chanto apply -f {}", shell_word(file));
            let (source, secrets) = prepare(file, &args.sites, &command)?;
            let request = plan_request(&source, secrets.clone(), &args.sites);
            let resp: PlanResponse =
                client.post("/platform/plan", &request).await.map_err(|e| api_error(e, "chanto apply"))?;
            print!("{}", resp.text);
            if resp.plan.is_empty() {
                return Ok(());
            }
            refuse_destroys(&resp.plan, args.allow_destroy, &command)?;
            if !args.auto_approve {
                confirm()?;
            }
            let mut saved = resp.saved;
            saved.directory = Some(record_directory(&source.dir)?);
            (ApplyRequest { plan: saved, secrets, allow_destroy: args.allow_destroy }, command)
        }
        (None, None) => bail!("give the plan to apply (`chanto plan --out PLAN`), or -f FILE to plan and apply now"),
    };
    let resp: ApplyResponse =
        client.post("/platform/apply", &request).await.map_err(|e| api_error(e, "chanto apply"))?;
    if json {
        print_json(&resp)?;
    } else {
        print!("{}", resp.text);
    }
    match &resp.failed {
        None => Ok(()),
        Some(f) => bail!(
            "{} failed: {}\nfix it and run the same `{command}` again: what was applied is skipped",
            f.address,
            f.error
        ),
    }
}

/// An API error, with what it means for these commands.
fn api_error(e: CallError, command: &str) -> anyhow::Error {
    if e.status == Some(404) && e.code.as_deref() == Some("not_found") {
        return anyhow!(
            "{command}: the server has no configuration-as-code API (/api/v1/platform): it runs an older chanto; upgrade it"
        );
    }
    e.into()
}

// ---------------------------------------------------------------- reading

/// Why a file was not read.
#[derive(Debug)]
enum ReadError {
    Missing,
    Directory,
    NotRegular,
    TooBig(u64),
    Io(std::io::Error),
}

impl ReadError {
    fn describe(&self, max: usize) -> String {
        match self {
            Self::Missing => "does not exist".into(),
            Self::Directory => "is a directory, not a file".into(),
            Self::NotRegular => "is not a regular file (a FIFO, a socket or a device)".into(),
            Self::TooBig(n) => format!("is {n} bytes, over the limit of {max}"),
            Self::Io(e) => format!("cannot be read: {e}"),
        }
    }
}

/// Reads a regular file of at most `max` bytes. Opened without blocking
/// and checked before reading, so a FIFO or a device is refused instead of
/// waited on.
fn read_regular(path: &Path, max: usize) -> Result<Vec<u8>, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::Missing,
        std::io::ErrorKind::IsADirectory => ReadError::Directory,
        _ => ReadError::Io(e),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(ReadError::Directory);
    }
    if !meta.is_file() {
        return Err(ReadError::NotRegular);
    }
    if meta.len() > max as u64 {
        return Err(ReadError::TooBig(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > max {
        return Err(ReadError::TooBig(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A configuration as read: each file's name (as given, relative to the
/// current directory) and text, in the order to parse them, and the
/// directory its `file:` references resolve in.
#[derive(Debug)]
pub struct Source {
    /// Names and texts.
    pub files: Vec<(String, String)>,
    /// The file's directory, or the directory given.
    pub dir: PathBuf,
}

/// Reads `-f PATH`: a file, or a directory's `*.toml` files sorted by name
/// (not recursive; hidden files skipped, as the shell's `*.toml` skips them).
pub fn read_config(path: &Path) -> anyhow::Result<Source> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == Path::new(DEFAULT_FILE) => bail!(
            "there is no {DEFAULT_FILE} here: give the configuration with -f PATH (a file, or a directory of *.toml files), \
             or write one from what is live with `chanto export --out {DEFAULT_FILE}`"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{} does not exist", path.display()),
        Err(e) => bail!("{}: {e}", path.display()),
    };
    if !meta.is_dir() {
        return Ok(Source { files: vec![read_text(path)?], dir: parent_dir(path) });
    }
    let entries = std::fs::read_dir(path).map_err(|e| anyhow!("reading the directory {}: {e}", path.display()))?;
    let mut names: Vec<OsString> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| anyhow!("reading the directory {}: {e}", path.display()))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(platform::is_config_file_name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        bail!(
            "{} has no *.toml files; a configuration directory holds chanto.platform.toml or several *.toml files (subdirectories are not read)",
            path.display()
        );
    }
    if names.len() > MAX_FILES {
        bail!(
            "{} has {} *.toml files; a configuration has at most {MAX_FILES}: merge some",
            path.display(),
            names.len()
        );
    }
    names.sort();
    let files = names.iter().map(|n| read_text(&path.join(n))).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Source { files, dir: path.to_owned() })
}

fn read_text(path: &Path) -> anyhow::Result<(String, String)> {
    let bytes = read_regular(path, MAX_FILE_BYTES).map_err(|e| match e {
        ReadError::TooBig(_) => anyhow!(
            "{}: {}; a configuration file holds at most 1 MiB: split it into a directory of files",
            path.display(),
            e.describe(MAX_FILE_BYTES)
        ),
        e => anyhow!("{}: {}", path.display(), e.describe(MAX_FILE_BYTES)),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{}: not UTF-8 text (at byte {}); a configuration file is UTF-8 TOML",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok((path.display().to_string(), text))
}

/// Parses a configuration, every problem named with `file:line:column`.
fn parse_source(source: &Source) -> anyhow::Result<PlatformConfig> {
    let files: Vec<(&str, &str)> = source.files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    platform::parse_files(&files).map_err(|e| {
        anyhow!("the configuration has {}; nothing was sent to the server:\n{e}", count(e.0.len() as u64, "problem"))
    })
}

/// A path's directory: `.` for a bare file name.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The configuration's directory as a saved plan records it: absolute.
fn record_directory(dir: &Path) -> anyhow::Result<String> {
    let abs = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .map_err(|e| anyhow!("cannot tell the absolute path of {} to record in the plan: {e}", dir.display()))?;
    abs.to_str().map(str::to_owned).ok_or_else(|| {
        anyhow!("{} is not UTF-8, so the plan cannot record it: move the configuration to a UTF-8 path", abs.display())
    })
}

/// Reads a saved plan and the configuration it carries.
fn read_plan(path: &Path) -> anyhow::Result<(SavedPlan, PlatformConfig)> {
    let bytes = read_regular(path, MAX_REQUEST_BYTES).map_err(|e| match e {
        ReadError::Missing => {
            anyhow!("{} does not exist; save a plan with `chanto plan --out {}`", path.display(), shell_word(path))
        }
        e => anyhow!("{}: {}", path.display(), e.describe(MAX_REQUEST_BYTES)),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow!("{}: not a chanto plan file (not UTF-8 text); save one with `chanto plan --out`", path.display())
    })?;
    let saved = SavedPlan::from_json(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let config = saved.desired().map_err(|e| {
        anyhow!(
            "{}: the configuration inside the plan does not read ({e}); make the plan again with `chanto plan --out`",
            path.display()
        )
    })?;
    Ok((saved, config))
}

/// Refuses, before anything is sent, a plan that destroys without `--allow-destroy`.
/// Asks before `chanto apply -f` applies: only `yes` does, as Terraform asks.
fn confirm() -> anyhow::Result<()> {
    use std::io::{BufRead as _, IsTerminal as _};
    if !std::io::stdin().is_terminal() {
        bail!(
            "nothing was applied: standard input is not a terminal to ask on; pass --auto-approve to apply without asking"
        );
    }
    print!("\nApply these changes? Only 'yes' applies: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("nothing was applied (the answer was not 'yes')");
    }
    Ok(())
}

fn refuse_destroys(plan: &Plan, allow_destroy: bool, command: &str) -> anyhow::Result<()> {
    let destroyed: Vec<&str> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Destroy || c.requires_allow_destroy)
        .map(|c| c.address.as_str())
        .collect();
    if allow_destroy || destroyed.is_empty() {
        return Ok(());
    }
    bail!(
        "the plan destroys {}: {}; nothing was applied. A site the configuration no longer declares goes with all its deploys. \
         If that is what you want, run `{command} --allow-destroy`",
        count(destroyed.len() as u64, "resource"),
        destroyed.join(", "),
    )
}

/// Refuses a plan file that would replace one of the configuration's files.
fn refuse_overwriting_source(out: &Path, source: &Source) -> anyhow::Result<()> {
    let Ok(out_abs) = std::fs::canonicalize(out) else { return Ok(()) };
    for (name, _) in &source.files {
        if std::fs::canonicalize(name).is_ok_and(|p| p == out_abs) {
            bail!("--out {} is a file of the configuration; save the plan elsewhere (plan.json)", out.display());
        }
    }
    Ok(())
}

fn refuse_directory(out: &Path) -> anyhow::Result<()> {
    if out.is_dir() {
        bail!("{} is a directory; give a file name", out.display());
    }
    Ok(())
}

/// Writes a file whole or not at all: a temporary file beside it, renamed over it.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().ok_or_else(|| anyhow!("{} does not name a file", path.display()))?.to_owned();
    name.push(".chanto-tmp");
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        // A leftover from an interrupted run is replaced, never written through.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow!("writing {}: {e}", path.display())
    })
}

/// A path as a shell word, quoted when it needs to be.
fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,%".contains(c)) {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------- secrets

/// This process's environment.
fn env_var(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The error for references that could not be read.
fn unresolved_error(lines: Vec<String>) -> anyhow::Error {
    anyhow!(
        "cannot read {}; nothing was sent to the server:\n{}",
        count(lines.len() as u64, "secret reference"),
        lines.join("\n")
    )
}

/// Reads every reference `config` uses: `env:VAR` through `env`, `file:PATH`
/// absolute or relative to `dir` (less one trailing newline). The values by
/// reference as written, or one line per reference that cannot be read,
/// each naming where it is first written in `files` (else `place`), the
/// secrets it stands for and how to fix it before `command`.
fn resolve_secrets(
    config: &PlatformConfig,
    files: &[(String, String)],
    dir: &Path,
    command: &str,
    place: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut uses: BTreeMap<SecretRef, Vec<String>> = BTreeMap::new();
    for u in config.secrets() {
        uses.entry(u.reference).or_default().push(u.key);
    }
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    for reference in config.references() {
        let written = reference.to_string();
        match resolve_one(&reference, dir, command, env) {
            Ok(value) => {
                values.insert(written, value);
            }
            Err(problem) => {
                let at = locate(files, &written).unwrap_or_else(|| place.to_owned());
                let at = if at.is_empty() { String::new() } else { format!("{at}: ") };
                let used: &[String] = uses.get(&reference).map_or(&[], Vec::as_slice);
                let by = match used {
                    [] => String::new(),
                    [one] => format!(" (the secret of {one})"),
                    [first, rest @ ..] => format!(" (the secret of {first} and {} more)", rest.len()),
                };
                problems.push(format!("{at}{written}{by} {problem}"));
            }
        }
    }
    if problems.is_empty() { Ok(values) } else { Err(problems) }
}

/// One reference's value, or what is wrong and how to fix it.
fn resolve_one(
    reference: &SecretRef,
    dir: &Path,
    command: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<String, String> {
    match reference {
        SecretRef::Env(var) => match env(var) {
            None => Err(format!("is not set: export {var}=… before {command}")),
            Some(v) if v.is_empty() => Err(format!("is set but empty: export {var}=… (the secret) before {command}")),
            Some(v) => v
                .into_string()
                .map_err(|_| format!("is not UTF-8 text: set {var} to the secret as text before {command}")),
        },
        SecretRef::File(p) => {
            let path = dir.join(p);
            let shown = path.display();
            let bytes = read_regular(&path, MAX_SECRET_BYTES).map_err(|e| {
                let fix = match e {
                    ReadError::Missing => format!("write the secret to it before {command}"),
                    ReadError::TooBig(_) => {
                        "a secret is at most 64 KiB: point the reference at the secret alone".into()
                    }
                    ReadError::Io(_) => format!("make it readable by this user before {command}"),
                    ReadError::Directory | ReadError::NotRegular => {
                        "point the reference at a regular file holding the secret".into()
                    }
                };
                format!("reads {shown}, which {}: {fix}", e.describe(MAX_SECRET_BYTES))
            })?;
            let bytes = bytes.strip_suffix(b"\r\n").or_else(|| bytes.strip_suffix(b"\n")).unwrap_or(&bytes);
            if bytes.is_empty() {
                return Err(format!("reads {shown}, which is empty: write the secret to it before {command}"));
            }
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                format!("reads {shown}, which is not UTF-8 text: store the secret as text (base64 for a binary key)")
            })
        }
    }
}

/// Where `reference` is first written in `files` (quoted, outside a
/// comment): `file:line:column`, 1-based, the column in characters.
fn locate(files: &[(String, String)], reference: &str) -> Option<String> {
    let escaped = reference.replace('\\', r"\\").replace('"', "\\\"");
    let needles = [format!("\"{escaped}\""), format!("'{reference}'")];
    for (name, text) in files {
        let mut first: Option<usize> = None;
        for needle in &needles {
            let mut from = 0;
            while let Some(i) = text[from..].find(needle.as_str()) {
                let at = from + i;
                if !in_comment(text, at) {
                    first = Some(first.map_or(at, |f| f.min(at)));
                    break;
                }
                // The needle starts with an ASCII quote: the next byte is a char boundary.
                from = at + 1;
            }
        }
        if let Some(at) = first {
            let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let line = text[..at].matches('\n').count() + 1;
            let column = text[line_start..at].chars().count() + 1;
            return Some(format!("{name}:{line}:{column}"));
        }
    }
    None
}

/// Whether byte `at` of `text` is inside a `#` comment (read from the start
/// of its line, skipping quoted strings).
fn in_comment(text: &str, at: usize) -> bool {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text[start..at].chars() {
        match quote {
            None if c == '#' => return true,
            None if c == '"' || c == '\'' => quote = Some(c),
            None => {}
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: impl AsRef<[u8]>) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }

    fn fifo(path: &Path) {
        rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    }

    fn err(r: anyhow::Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.expect_err("refused"))
    }

    fn names(s: &Source) -> Vec<&str> {
        s.files.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn a_directory_reads_its_toml_files_in_name_order_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("platform");
        write(&dir.join("b.toml"), "[site.b]\n");
        write(&dir.join("a.toml"), "[site.a]\n");
        write(&dir.join("notes.md"), "not toml");
        write(&dir.join(".hidden.toml"), "not = [read");
        write(&dir.join("toml"), "no extension");
        write(&dir.join("sub/c.toml"), "[site.c]\n");
        let s = read_config(&dir).unwrap();
        let shown = dir.display().to_string();
        assert_eq!(names(&s), [format!("{shown}/a.toml"), format!("{shown}/b.toml")]);
        assert_eq!(s.files[0].1, "[site.a]\n");
        assert_eq!(s.dir, dir);
        let config = parse_source(&s).unwrap();
        assert_eq!(config.sites.len(), 2);

        // A file: its directory is where file: references resolve.
        let s = read_config(&dir.join("a.toml")).unwrap();
        assert_eq!(names(&s), [format!("{shown}/a.toml")]);
        assert_eq!(s.dir, dir);
        assert_eq!(parent_dir(Path::new("chanto.platform.toml")), Path::new("."));
        assert_eq!(parent_dir(Path::new("platform/docs.toml")), Path::new("platform"));
    }

    #[test]
    fn a_directory_without_toml_files_or_with_too_many_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty");
        write(&empty.join("README.md"), "hi");
        write(&empty.join("sub/a.toml"), "[site.a]\n");
        let e = err(read_config(&empty));
        assert!(e.contains("has no *.toml files"), "{e}");

        let many = tmp.path().join("many");
        for i in 0..=MAX_FILES {
            write(&many.join(format!("s{i:04}.toml")), "");
        }
        let e = err(read_config(&many));
        assert!(e.contains(&format!("{} *.toml files; a configuration has at most {MAX_FILES}", MAX_FILES + 1)), "{e}");

        let e = err(read_config(&tmp.path().join("nope")));
        assert!(e.contains("nope does not exist"), "{e}");
    }

    #[test]
    fn an_oversized_non_utf8_or_irregular_configuration_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big.toml");
        write(&big, vec![b'#'; MAX_FILE_BYTES + 1]);
        let e = err(read_config(&big));
        assert!(e.contains("big.toml: is 1048577 bytes") && e.contains("split it into a directory"), "{e}");
        // At the limit it reads.
        write(&big, vec![b'#'; MAX_FILE_BYTES]);
        read_config(&big).unwrap();

        let latin1 = tmp.path().join("latin1.toml");
        write(&latin1, b"# caf\xe9\n");
        let e = err(read_config(&latin1));
        assert!(e.contains("latin1.toml: not UTF-8 text (at byte 5)"), "{e}");

        // A FIFO is refused at once, not waited on: as the file and inside a directory.
        let pipe = tmp.path().join("pipe.toml");
        fifo(&pipe);
        let e = err(read_config(&pipe));
        assert!(e.contains("pipe.toml: is not a regular file"), "{e}");
        let piped = tmp.path().join("piped");
        write(&piped.join("a.toml"), "[site.a]\n");
        fifo(&piped.join("b.toml"));
        let e = err(read_config(&piped));
        assert!(e.contains("b.toml: is not a regular file"), "{e}");

        // A directory named like a file.
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(dir.join("x.toml")).unwrap();
        let e = err(read_config(&dir));
        assert!(e.contains("x.toml: is a directory, not a file"), "{e}");
    }

    #[test]
    fn parse_errors_name_every_file_line_and_column() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("a.toml"), "[site.a]\nbogus = 1\n");
        write(&tmp.path().join("b.toml"), "[site.b]\nkeep_deploys = \"x\"\n");
        let s = read_config(tmp.path()).unwrap();
        let e = err(parse_source(&s));
        let shown = tmp.path().display();
        assert!(e.starts_with("the configuration has 2 problems; nothing was sent to the server:\n"), "{e}");
        assert!(e.contains(&format!("\n{shown}/a.toml:2:1: ")), "{e}");
        assert!(e.contains(&format!("\n{shown}/b.toml:2:")), "{e}");
    }

    const CONFIG: &str = r#"[site.docs]

[site.docs.env]
PLAIN = "x"
API_KEY = { secret = "env:DOCS_API_KEY" }
# OLD = { secret = "env:MISSING_VAR" }
MISSING = { secret = "env:MISSING_VAR" }
EMPTY = { secret = "env:EMPTY_VAR" }
LF = { secret = "file:secrets/lf" }
CRLF = { secret = 'file:secrets/crlf' }
ONE = { secret = "file:secrets/one" }
"#;

    fn env(name: &str) -> Option<OsString> {
        match name {
            "DOCS_API_KEY" => Some("k3y".into()),
            "EMPTY_VAR" => Some(OsString::new()),
            _ => None,
        }
    }

    fn config(text: &str) -> (PlatformConfig, Vec<(String, String)>) {
        let files = vec![("platform/docs.toml".to_owned(), text.to_owned())];
        (platform::parse("platform/docs.toml", text).unwrap(), files)
    }

    #[test]
    fn references_resolve_from_the_environment_and_files_less_one_newline() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("secrets/lf"), "line one\n\n");
        write(&tmp.path().join("secrets/crlf"), "windows\r\n");
        write(&tmp.path().join("secrets/one"), "no newline");
        let abs = tmp.path().join("elsewhere/abs");
        write(&abs, "absolute\n");
        let text =
            CONFIG.replace("env:MISSING_VAR", "env:DOCS_API_KEY").replace("env:EMPTY_VAR", "env:DOCS_API_KEY").replace(
                "ONE = { secret = \"file:secrets/one\" }",
                &format!("ONE = {{ secret = \"file:secrets/one\" }}\nABS = {{ secret = \"file:{}\" }}", abs.display()),
            );
        let (config, files) = config(&text);
        let got = resolve_secrets(&config, &files, tmp.path(), "chanto plan", "", &env).unwrap();
        let want: BTreeMap<String, String> = [
            ("env:DOCS_API_KEY", "k3y"),
            ("file:secrets/lf", "line one\n"),
            ("file:secrets/crlf", "windows"),
            ("file:secrets/one", "no newline"),
            (&format!("file:{}", abs.display()), "absolute"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn every_unreadable_reference_is_named_where_it_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        // secrets/lf is missing; the others are too big, not UTF-8, a FIFO, a directory.
        write(&tmp.path().join("secrets/crlf"), vec![b'x'; MAX_SECRET_BYTES + 1]);
        write(&tmp.path().join("secrets/one"), b"\xff\xfe\n");
        let text = format!(
            "{CONFIG}PIPE = {{ secret = \"file:secrets/pipe\" }}\nDIR = {{ secret = \"file:secrets\" }}\nEMPTYFILE = {{ secret = \"file:secrets/empty\" }}\n"
        );
        fifo(&tmp.path().join("secrets/pipe"));
        write(&tmp.path().join("secrets/empty"), "\n");
        let (config, files) = config(&text);
        let lines = resolve_secrets(&config, &files, tmp.path(), "chanto plan", "", &env).unwrap_err();
        let dir = tmp.path().display();
        let want = [
            "platform/docs.toml:8:20: env:EMPTY_VAR (the secret of site.docs.env[\"EMPTY\"].value) is set but empty: export EMPTY_VAR=… (the secret) before chanto plan".to_owned(),
            // The commented-out line 6 does not count.
            "platform/docs.toml:7:22: env:MISSING_VAR (the secret of site.docs.env[\"MISSING\"].value) is not set: export MISSING_VAR=… before chanto plan".to_owned(),
            format!("platform/docs.toml:13:18: file:secrets (the secret of site.docs.env[\"DIR\"].value) reads {dir}/secrets, which is a directory, not a file: point the reference at a regular file holding the secret"),
            format!("platform/docs.toml:10:19: file:secrets/crlf (the secret of site.docs.env[\"CRLF\"].value) reads {dir}/secrets/crlf, which is 65537 bytes, over the limit of 65536: a secret is at most 64 KiB: point the reference at the secret alone"),
            format!("platform/docs.toml:14:24: file:secrets/empty (the secret of site.docs.env[\"EMPTYFILE\"].value) reads {dir}/secrets/empty, which is empty: write the secret to it before chanto plan"),
            format!("platform/docs.toml:9:17: file:secrets/lf (the secret of site.docs.env[\"LF\"].value) reads {dir}/secrets/lf, which does not exist: write the secret to it before chanto plan"),
            format!("platform/docs.toml:11:18: file:secrets/one (the secret of site.docs.env[\"ONE\"].value) reads {dir}/secrets/one, which is not UTF-8 text: store the secret as text (base64 for a binary key)"),
            format!("platform/docs.toml:12:19: file:secrets/pipe (the secret of site.docs.env[\"PIPE\"].value) reads {dir}/secrets/pipe, which is not a regular file (a FIFO, a socket or a device): point the reference at a regular file holding the secret"),
        ];
        assert_eq!(lines, want);
        let e = format!("{:#}", unresolved_error(lines));
        assert!(
            e.starts_with(
                "cannot read 8 secret references; nothing was sent to the server:\nplatform/docs.toml:8:20: "
            ),
            "{e}"
        );
    }

    #[test]
    fn a_reference_used_twice_is_named_once_at_its_first_place() {
        let text = "[site.a]\n\n[site.a.env]\nX = { secret = \"env:GONE\" }\n";
        let other = "[site.b.env]\nY = { secret = \"env:GONE\" }\nZ = { secret = \"env:GONE\" }\n";
        let files = vec![("a.toml".to_owned(), text.to_owned()), ("b.toml".to_owned(), other.to_owned())];
        let config = platform::parse_files(&[("a.toml", text), ("b.toml", other)]).unwrap();
        let lines = resolve_secrets(&config, &files, Path::new("."), "chanto plan", "", &env).unwrap_err();
        assert_eq!(
            lines,
            [
                "a.toml:4:16: env:GONE (the secret of site.a.env[\"X\"].value and 2 more) is not set: export GONE=… before chanto plan"
            ]
        );
        // Without the files (apply: the plan's configuration), the plan file is named.
        let lines =
            resolve_secrets(&config, &[], Path::new("."), "chanto apply plan.json", "plan.json", &env).unwrap_err();
        assert_eq!(
            lines,
            [
                "plan.json: env:GONE (the secret of site.a.env[\"X\"].value and 2 more) is not set: export GONE=… before chanto apply plan.json"
            ]
        );
        // Only in b.toml: found there; columns count characters, not bytes.
        let files = vec![("a.toml".to_owned(), "# é\n".to_owned()), ("b.toml".to_owned(), "é = 'env:GONE'".to_owned())];
        assert_eq!(locate(&files, "env:GONE").as_deref(), Some("b.toml:1:5"));
        assert_eq!(locate(&files, "env:ELSE"), None);
        assert!(in_comment("x = \"#\" # \"env:A\"", 10));
        assert!(!in_comment("x = \"#\\\"\" , \"env:A\"", 12));
    }

    fn plan_of(live: &str, desired: &str) -> Plan {
        let live = platform::parse("live", live).unwrap();
        let desired = platform::parse("desired", desired).unwrap();
        platform::plan(&live, &desired, &Default::default())
    }

    #[test]
    fn destroys_are_refused_here_without_allow_destroy() {
        let plan = plan_of("[site.old]\n[site.keep]\n", "[site.keep]\n[site.new]\n");
        let e = err(refuse_destroys(&plan, false, &format!("chanto apply {}", shell_word(Path::new("my plan.json")))));
        assert!(e.starts_with("the plan destroys 1 resource: site.old; nothing was applied."), "{e}");
        assert!(e.contains("run `chanto apply 'my plan.json' --allow-destroy`"), "{e}");
        refuse_destroys(&plan, true, "chanto apply plan.json").unwrap();
        refuse_destroys(&plan_of("", "[site.new]\n"), false, "chanto apply plan.json").unwrap();
    }

    #[test]
    fn plan_exits_0_without_changes_2_with_and_1_on_an_error() {
        assert_eq!(crate::commands::outcome(plan_outcome(&plan_of("[site.a]\n", "[site.a]\n"))), (0, None));
        assert_eq!(crate::commands::outcome(plan_outcome(&plan_of("", "[site.a]\n"))), (2, None));
        assert_eq!(
            crate::commands::outcome(Err(anyhow!("the configuration has 1 problem"))),
            (1, Some("the configuration has 1 problem".to_owned()))
        );
        assert_eq!(crate::commands::outcome(Err(anyhow::Error::from(Exit(1)).context("ignored"))), (1, None));
    }

    #[test]
    fn a_saved_plan_is_read_with_its_file_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("plan.json");
        let e = err(read_plan(&path));
        assert!(e.contains("plan.json does not exist; save a plan with `chanto plan --out"), "{e}");
        write(&path, "{}");
        let e = err(read_plan(&path));
        assert!(e.starts_with(&format!("{}: not a chanto plan file", path.display())), "{e}");
        let desired = platform::parse("d", "[site.a]\n").unwrap();
        let plan = platform::plan(&Default::default(), &desired, &Default::default());
        let mut saved = SavedPlan::new(plan, &desired, &Default::default());
        saved.directory = Some(record_directory(tmp.path()).unwrap());
        write_atomic(&path, saved.to_json().as_bytes(), 0o600).unwrap();
        let (back, config) = read_plan(&path).unwrap();
        assert_eq!(back, saved);
        assert_eq!(config, desired);
        assert!(Path::new(back.directory.as_deref().unwrap()).is_absolute());
    }

    #[test]
    fn files_are_written_whole_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("plan.json");
        write(&tmp.path().join("plan.json.chanto-tmp"), "a leftover");
        std::fs::set_permissions(tmp.path().join("plan.json.chanto-tmp"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!tmp.path().join("plan.json.chanto-tmp").exists());
        let e = err(refuse_directory(tmp.path()));
        assert!(e.contains("is a directory; give a file name"), "{e}");
        let e = err(write_atomic(&tmp.path().join("no/such/dir/x"), b"x", 0o600));
        assert!(e.starts_with("writing "), "{e}");

        // --out naming a file of the configuration is refused.
        let conf = tmp.path().join("chanto.platform.toml");
        write(&conf, "[site.a]\n");
        let source = read_config(&conf).unwrap();
        let e = err(refuse_overwriting_source(&conf, &source));
        assert!(e.contains("is a file of the configuration"), "{e}");
        refuse_overwriting_source(&path, &source).unwrap();
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word(Path::new("plans/plan.json")), "plans/plan.json");
        assert_eq!(shell_word(Path::new("my plan.json")), "'my plan.json'");
        assert_eq!(shell_word(Path::new("it's")), r"'it'\''s'");
    }

    #[test]
    fn an_export_lists_its_references_and_which_names_it_made_up() {
        use chanto_control::platform_ops::ExportedSecret;
        let resp = ExportResponse {
            config: String::new(),
            secrets: vec![
                ExportedSecret {
                    reference: "env:DOCS_API_KEY".into(),
                    used_by: vec!["site.docs.env[\"API_KEY\"].value".into()],
                    remembered: true,
                },
                ExportedSecret {
                    reference: "env:DOCS_GIT_TOKEN".into(),
                    used_by: vec!["site.docs.git.credential".into()],
                    remembered: false,
                },
            ],
        };
        let note = secrets_note(&resp);
        assert!(note.starts_with("The configuration names 2 secrets by reference;"), "{note}");
        assert!(note.contains("\n  env:DOCS_API_KEY    site.docs.env[\"API_KEY\"].value\n"), "{note}");
        assert!(
            note.contains("\n  env:DOCS_GIT_TOKEN  site.docs.git.credential  (name made up by the export)\n"),
            "{note}"
        );
        assert!(note.contains("made up its name: set each to the live value under that name before `chanto plan` (export DOCS_GIT_TOKEN=…"), "{note}");
        assert_eq!(secrets_note(&ExportResponse { config: String::new(), secrets: vec![] }), "");
    }
}

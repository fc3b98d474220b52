//! Git-driven builds: a site connected to a repository builds every matching
//! branch push and pull request, and deploys the output through the same
//! pipeline as `chanto deploy`. Triggers (forge webhooks, build hooks,
//! polling, the API) only queue builds; runners claim them from the database
//! queue, so a queued build survives a restart and a build that was running
//! when the server died is retried once.

pub mod api;
pub mod egress;
pub mod init;
pub mod platform_build;
mod runner;
pub mod sealed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chanto_build::{BranchFilter, SiteBuildSettings};
use chanto_core::{BranchName, BuildId, BuildState, ContentHash, SiteName, ValidationError};
use chanto_store::{
    BuildHook, BuildRecord, EnvVar, GitConnection, NewBuild, RoutingChange, WebhookDelivery, now_millis, random_bytes,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use egress::{AllowedDestination, EgressPolicy};
pub use runner::{BUILD_UID_BASE, Isolation, Limits, Sandbox};
use sealed::Sealer;

use crate::{ApiError, Control};

/// Settings of the build runners.
#[derive(Debug, Clone)]
pub struct BuildsConfig {
    /// Where builds check out and run (one fresh directory per build).
    pub work_dir: PathBuf,
    /// Where build logs are kept.
    pub log_dir: PathBuf,
    /// Where build caches are kept, per site and branch.
    pub cache_dir: PathBuf,
    /// Directories builds must never see (the data directory).
    pub hidden: Vec<PathBuf>,
    /// Builds that run at once.
    pub concurrency: usize,
    /// A build's time limit unless its site sets another.
    pub default_timeout: Duration,
    /// The API's public URL, for the webhook and build hook URLs it shows.
    pub api_url: String,
    /// How builds are kept from the host.
    pub isolation: Isolation,
    /// Where builds may connect through their egress proxy.
    pub egress: Arc<EgressPolicy>,
    /// What one build may use.
    pub limits: Limits,
}

/// The build service inside a [`Control`]: settings, the sealer, and the
/// runners' shared state.
pub struct Builds {
    config: BuildsConfig,
    sealer: Sealer,
    /// Wakes idle runners when a build is queued.
    wake: tokio::sync::Notify,
    /// Cancel switches of running builds, with their site and branch.
    running: Mutex<HashMap<BuildId, RunningBuild>>,
    /// Refused webhooks recorded per site in the current minute (at most
    /// [`REFUSED_RECORDED_PER_MINUTE`], so a flood of forgeries cannot push
    /// real deliveries out of the log).
    refused: Mutex<HashMap<SiteName, (std::time::Instant, u32)>>,
}

type RunningBuild = (SiteName, BranchName, tokio::sync::watch::Sender<bool>);

impl Builds {
    /// A build service with these settings and sealer.
    pub fn new(config: BuildsConfig, sealer: Sealer) -> Self {
        Self {
            config,
            sealer,
            wake: tokio::sync::Notify::new(),
            running: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// After a site is deleted: stops its builds and removes its build caches.
    pub(crate) async fn forget_site(&self, site: &SiteName) {
        self.cancel_running(site, None);
        let _ = tokio::fs::remove_dir_all(self.config.cache_dir.join(site.as_str())).await;
    }

    /// Signals every running build of a site (of one branch, if given) to stop.
    fn cancel_running(&self, site: &SiteName, branch: Option<&BranchName>) {
        for (id, (s, b, switch)) in self.running.lock().expect("running builds").iter() {
            if s == site && branch.is_none_or(|br| br == b) {
                tracing::info!(build = %id, site = %site, "cancelling a build whose site or branch is going away");
                let _ = switch.send(true);
            }
        }
    }

    /// Its settings.
    pub fn config(&self) -> &BuildsConfig {
        &self.config
    }
}

/// How a repository credential is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An access token, sent over https.
    Token,
    /// An SSH deploy key (private key, OpenSSH format).
    SshKey,
}

/// A connection's settings, stored as JSON beside the sealed secrets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GitSettings {
    /// Branches built on push (globs: `*` within a path segment, `**` across);
    /// empty: every branch. The production branch is always built.
    #[serde(default)]
    pub include: Vec<String>,
    /// Branches never built automatically, even when included.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Remove a branch's environment when the branch is deleted.
    #[serde(default = "yes")]
    pub delete_branches: bool,
    /// Build pull requests into `pr-<n>` previews.
    #[serde(default = "yes")]
    pub pull_request_previews: bool,
    /// Also build pull requests from forks (always in the sandbox, never
    /// with secret variables; their preview gets the site's previews
    /// password like any other). Off: a fork's pull request is ignored.
    #[serde(default = "yes")]
    pub fork_pull_requests: bool,
    /// Days a closed pull request's preview is kept (0: removed at once).
    #[serde(default)]
    pub preview_retention_days: u32,
    /// Poll the remote with `git ls-remote` every this many seconds (for remotes without webhooks).
    #[serde(default)]
    pub poll_interval_secs: Option<u64>,
    /// A build's time limit in seconds (default: the server's, 30 minutes).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// The site's own build settings, used when the repository has no build spec.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub build: SiteBuildSettings,
    /// The kind of the stored credential.
    #[serde(default)]
    pub credential_kind: Option<CredentialKind>,
    /// User name sent with a token over https (`x-access-token` if absent;
    /// GitLab wants `oauth2`).
    #[serde(default)]
    pub username: Option<String>,
    /// The site is a *platform config* site: the path in the repository of
    /// `chanto.platform.toml` (a file, or a directory of `.toml` files). Its
    /// builds run no command and deploy nothing: they plan the configuration
    /// (shown in the log and the pull request's comment) and, on the
    /// production branch, apply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_config: Option<String>,
}

/// Why `path` cannot name a configuration in a repository: relative, no
/// `..`, no leading `/`, no control characters, at most 1,024 bytes.
pub(crate) fn platform_config_problem(path: &str) -> Option<&'static str> {
    let bad = path.trim().is_empty()
        || path.len() > 1024
        || path.starts_with('/')
        || path.starts_with('\\')
        || path.chars().any(char::is_control)
        || path.split(['/', '\\']).any(|part| part == "..");
    bad.then_some(
        "the configuration's path in the repository: relative, without .. (chanto.platform.toml, or a directory such as platform)",
    )
}

fn yes() -> bool {
    true
}

impl Default for GitSettings {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: Vec::new(),
            delete_branches: true,
            pull_request_previews: true,
            fork_pull_requests: true,
            preview_retention_days: 0,
            poll_interval_secs: None,
            timeout_secs: None,
            build: SiteBuildSettings::default(),
            credential_kind: None,
            username: None,
            platform_config: None,
        }
    }
}

impl GitSettings {
    fn filter(&self) -> Result<BranchFilter, ApiError> {
        BranchFilter::new(self.include.clone(), self.exclude.clone())
            .map_err(|e| ApiError::from(ValidationError::new("include", e.to_string())))
    }
}

/// Refused webhooks recorded per site and minute.
const REFUSED_RECORDED_PER_MINUTE: u32 = 20;
/// Longest time limit a site may set: a day.
pub(crate) const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Shortest polling interval.
pub(crate) const MIN_POLL_SECS: u64 = 10;
/// Largest credential (an SSH key is a few KiB).
const MAX_CREDENTIAL_BYTES: usize = 64 << 10;

/// Connects a site to a repository (or changes its connection).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// Clone URL: `https://…`, `ssh://…`, `git@host:path`, `file://…` or a
    /// repository's absolute path on the server (checked to be one on connect).
    pub repository: String,
    /// An access token for https (stored encrypted, never shown back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// An SSH deploy key (stored encrypted, never shown back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<String>,
    /// Keep the stored credential when none is given (default), or drop it.
    #[serde(default)]
    pub clear_credential: bool,
    /// Make a new webhook secret (the old one stops working).
    #[serde(default)]
    pub rotate_webhook_secret: bool,
    /// Change the site's production branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_branch: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub settings: GitSettings,
}

/// A connection as the API shows it: never a credential.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GitView {
    /// The site.
    pub site: String,
    /// The repository.
    pub repository: String,
    /// The site's production branch.
    pub production_branch: String,
    /// Which credential is stored, if any (never its value).
    pub credential: Option<CredentialKind>,
    /// The settings.
    pub settings: GitSettings,
    /// Where each forge should send webhooks.
    pub webhooks: WebhookUrls,
    /// Where a pull request's preview is served, with `<n>` for its number
    /// (`http://pr-<n>--docs.localhost:8080/`).
    #[serde(default)]
    pub preview_url: String,
    /// The webhook secret: shown only when it was just made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// The webhook URL for each forge.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookUrls {
    /// GitHub (`application/json`, the push, pull request and delete events).
    pub github: String,
    /// GitLab (push and merge request events).
    pub gitlab: String,
    /// Gitea and Forgejo.
    pub gitea: String,
}

/// What queues a build, before it has an id.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The branch environment to deploy to.
    pub branch: BranchName,
    /// The ref to fetch.
    pub git_ref: String,
    /// The commit, if known.
    pub commit: Option<String>,
    /// The pull request.
    pub pull_request: Option<u64>,
    /// What started it.
    pub trigger: String,
    /// A title.
    pub title: Option<String>,
    /// The author.
    pub author: Option<String>,
    /// The commit message.
    pub message: Option<String>,
    /// Withhold secret variables.
    pub untrusted: bool,
}

impl BuildRequest {
    /// A build of a branch's head.
    pub fn branch_head(branch: BranchName, trigger: impl Into<String>) -> Self {
        Self {
            git_ref: branch.to_string(),
            branch,
            commit: None,
            pull_request: None,
            trigger: trigger.into(),
            title: None,
            author: None,
            message: None,
            untrusted: false,
        }
    }
}

/// One phase of a build as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PhaseView {
    /// `fetch`, `spec`, `preBuild`, `build`, `postBuild`, `deploy`, …
    pub name: String,
    /// `succeeded`, `failed`, `cancelled` or `timed_out`.
    pub status: String,
    /// The exit status of the command that ended it, if a command did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How long it took.
    pub duration_ms: u64,
}

/// A build as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BuildView {
    /// Its id.
    pub id: String,
    /// The site.
    pub site: String,
    /// The branch environment it deploys to.
    pub branch: String,
    /// The commit (once known).
    pub commit: Option<String>,
    /// The pull request it previews.
    pub pull_request: Option<u64>,
    /// Its state.
    pub state: BuildState,
    /// What started it.
    pub trigger: String,
    /// A title.
    pub title: Option<String>,
    /// The commit's author.
    pub author: Option<String>,
    /// The commit message.
    pub message: Option<String>,
    /// The deploy it made.
    pub deploy: Option<String>,
    /// The branch environment's URL.
    pub url: String,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// Its phases so far.
    pub phases: Vec<PhaseView>,
    /// The build it retries.
    pub retry_of: Option<String>,
    /// When it was queued, started and ended (ms since the epoch).
    pub created_at: i64,
    /// When a runner took it.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// The server that claimed it (`HOST/NODE-ID`), once claimed.
    pub runner: Option<String>,
    /// When that server last said it was running it (ms since the epoch):
    /// another server retries it once this is older than the heartbeat
    /// timeout.
    pub heartbeat_at: Option<i64>,
}

impl BuildView {
    /// The view of a record.
    pub fn new(c: &Control, b: BuildRecord) -> Self {
        let label = b.branch.label();
        let url = c.config.url_for(&format!("{label}--{}", b.site));
        Self {
            id: b.id.to_string(),
            site: b.site.to_string(),
            branch: b.branch.to_string(),
            commit: b.commit,
            pull_request: b.pull_request,
            state: b.state,
            trigger: b.trigger,
            title: b.title,
            author: b.author,
            message: b.message,
            deploy: b.deploy.map(|d| d.to_string()),
            url,
            error: b.error,
            phases: serde_json::from_str(&b.phases).unwrap_or_default(),
            retry_of: b.retry_of.map(|r| r.to_string()),
            created_at: b.created_at,
            started_at: b.started_at,
            finished_at: b.finished_at,
            runner: b.runner,
            heartbeat_at: b.heartbeat_at,
        }
    }
}

/// A variable as the API shows it: a secret's value is `***`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnvView {
    /// The branch it applies to (absent: every branch).
    pub branch: Option<String>,
    /// Its name.
    pub name: String,
    /// Its value, or `***` when secret.
    pub value: String,
    /// Whether it is secret.
    pub secret: bool,
}

/// A build hook as the API shows it; `url` only when just created.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The only branch it builds (absent: any branch a request names, else production).
    pub branch: Option<String>,
    /// The secret URL to POST to: shown once, at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When it was created.
    pub created_at: i64,
}

fn builds_disabled() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "builds_disabled",
        "this server does not run builds; start it with `chanto serve` (builds are on unless --build-concurrency 0)",
    )
}

fn validate_repository(url: &str) -> Result<(), ApiError> {
    let why = match repository_problem(url) {
        Ok(()) => return Ok(()),
        Err(RepositoryProblem::Credential) => {
            "put the token in `token`, not in the URL (URLs are shown back; tokens are not)"
        }
        Err(RepositoryProblem::Other(why)) => why,
    };
    Err(ApiError::from(ValidationError::new("repository", why.to_string())))
}

/// What is wrong with a repository string, before any lookup on the server.
pub(crate) enum RepositoryProblem {
    /// A credential in an http(s) URL: each caller says where it goes instead.
    Credential,
    /// Anything else, in words.
    Other(&'static str),
}

/// The checks every repository string passes (the API's and
/// `chanto.platform.toml`'s), without the server-side check that a local
/// path is a repository.
pub(crate) fn repository_problem(url: &str) -> Result<(), RepositoryProblem> {
    use RepositoryProblem::Other;
    if url.is_empty() || url.len() > 2048 {
        return Err(Other("give the repository's clone URL (at most 2048 bytes)"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Other("the repository URL contains spaces or control characters"));
    }
    if url.starts_with('-') {
        return Err(Other("a repository URL cannot start with '-'"));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git" | "file") {
            return Err(Other("use an https://, ssh://, git://, file:// URL, user@host:path or a local path"));
        }
        if scheme.starts_with("http") && rest.split('/').next().unwrap_or("").contains('@') {
            return Err(RepositoryProblem::Credential);
        }
    }
    Ok(())
}

/// The path a repository string names on this machine, if it names one: a
/// `file://` URL, or what git itself takes for a path (no `://`, and no `:`
/// before the first `/`, which would make it the scp-like `host:path`).
/// `None` for remotes, and for `file://` URLs this does not read the way git
/// does (percent-escapes, a host).
fn local_repository_path(url: &str) -> Option<&str> {
    if let Some(rest) = url.strip_prefix("file://") {
        return (rest.starts_with('/') && !rest.contains('%')).then_some(rest);
    }
    if url.contains("://") {
        return None;
    }
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) if colon < slash => None,
        (Some(_), None) => None,
        _ => Some(url),
    }
}

/// A local repository must be there when it is connected: builds clone it on
/// this server, and a typo would otherwise show only as a failed build later.
/// Remotes are not contacted here.
async fn check_local_repository(url: &str) -> Result<(), ApiError> {
    let Some(path) = local_repository_path(url) else {
        return Ok(());
    };
    let bad = |why: String| Err(ApiError::from(ValidationError::new("repository", why)));
    if !path.starts_with('/') {
        return bad(format!(
            "{path:?} is a relative path, and builds run in their own directory; give the repository's absolute path on the server (e.g. /srv/git/site.git) or its clone URL"
        ));
    }
    let dir = Path::new(path);
    match tokio::fs::metadata(dir).await {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return bad(format!("{path} is a file, not a git repository; give the repository's directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return bad(format!(
                "{path} does not exist on the server; give the path of a clone or bare repository there (`git init --bare {path}` makes one) or the repository's clone URL"
            ));
        }
        Err(e) => return bad(format!("{path} cannot be read by the server ({e}); let its user read the repository")),
    }
    // What git checks to call a directory a repository: a work tree's .git,
    // or a bare repository's HEAD, objects and refs.
    let exists = |p: std::path::PathBuf| async move { tokio::fs::symlink_metadata(p).await.is_ok() };
    let bare = exists(dir.join("HEAD")).await && exists(dir.join("objects")).await && exists(dir.join("refs")).await;
    if !bare && !exists(dir.join(".git")).await {
        return bad(format!(
            "{path} is not a git repository (no .git, and no HEAD, objects and refs); give the repository's own directory, or run `git init` there and commit the site"
        ));
    }
    Ok(())
}

impl Control {
    /// Turns git-driven builds on for this control plane (once, at start).
    pub fn enable_builds(&self, builds: Builds) {
        let isolation = builds.config.isolation.describe();
        if self.builds.set(Arc::new(builds)).is_ok() {
            tracing::info!(isolation = %isolation, "builds enabled");
        }
    }

    /// The build service, or 503 when this server runs no builds.
    pub fn builds(&self) -> Result<&Arc<Builds>, ApiError> {
        self.builds.get().ok_or_else(builds_disabled)
    }

    fn git_view(
        &self,
        site: &SiteName,
        production: &BranchName,
        g: &GitConnection,
        secret: Option<String>,
    ) -> Result<GitView, ApiError> {
        let settings: GitSettings = serde_json::from_str(&g.settings).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("stored git settings: {e}"))
        })?;
        let api = &self.builds()?.config.api_url;
        let hook = |forge: &str| format!("{api}/api/v1/webhooks/{forge}/{site}");
        Ok(GitView {
            site: site.to_string(),
            repository: g.repository.clone(),
            production_branch: production.to_string(),
            credential: if g.credential.is_some() { settings.credential_kind } else { None },
            settings,
            webhooks: WebhookUrls { github: hook("github"), gitlab: hook("gitlab"), gitea: hook("gitea") },
            preview_url: self.config.url_for(&format!("pr-<n>--{site}")),
            webhook_secret: secret,
        })
    }

    /// Connects a site to its repository or changes the connection. The
    /// webhook secret is made on first connect (and on rotation) and shown
    /// only in that answer.
    pub async fn connect_git(&self, site: &SiteName, req: ConnectRequest) -> Result<GitView, ApiError> {
        let builds = self.builds()?.clone();
        let mut site_rec = self.site(site).await?;
        validate_repository(&req.repository)?;
        let mut settings = req.settings;
        settings.filter()?;
        if settings.timeout_secs.is_some_and(|t| t == 0 || t > MAX_TIMEOUT_SECS) {
            return Err(ValidationError::new("timeout_secs", format!("give 1 to {MAX_TIMEOUT_SECS} seconds")).into());
        }
        if settings.poll_interval_secs.is_some_and(|p| p < MIN_POLL_SECS) {
            return Err(ValidationError::new(
                "poll_interval_secs",
                format!("poll at most every {MIN_POLL_SECS} seconds"),
            )
            .into());
        }
        if let Some(u) = &settings.username
            && (u.is_empty() || u.len() > 128 || u.contains([':', '@']) || u.chars().any(char::is_control))
        {
            return Err(ValidationError::new("username", "a user name of 1-128 characters without ':' or '@'").into());
        }
        if let Some(why) = settings.platform_config.as_deref().and_then(platform_config_problem) {
            return Err(ValidationError::new("platform_config", why).into());
        }
        let credential = match (req.token, req.ssh_key) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::new("token", "give a token or an SSH key, not both").into());
            }
            (Some(t), None) => Some((CredentialKind::Token, t)),
            (None, Some(k)) => Some((CredentialKind::SshKey, k)),
            (None, None) => None,
        };
        if let Some((kind, value)) = &credential {
            let field = if *kind == CredentialKind::Token { "token" } else { "ssh_key" };
            if value.trim().is_empty() || value.len() > MAX_CREDENTIAL_BYTES || value.contains('\0') {
                return Err(ValidationError::new(
                    field,
                    format!("give a non-empty value of at most {MAX_CREDENTIAL_BYTES} bytes"),
                )
                .into());
            }
            if *kind == CredentialKind::Token && value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(ValidationError::new(field, "a token has no spaces or control characters").into());
            }
        }
        check_local_repository(&req.repository).await?;
        if let Some(p) = req.production_branch {
            let branch: BranchName = p.parse()?;
            if branch != site_rec.production_branch {
                self.meta.set_production_branch(site, &branch).await?;
                site_rec.production_branch = branch;
                self.publish_routing(RoutingChange::site(site)).await?;
            }
        }
        let existing = self.meta.get_git(site).await?;
        let now = now_millis();
        let (stored_credential, kind) = match (credential, &existing) {
            (Some((kind, value)), _) => (Some(builds.sealer.seal(value.as_bytes())), Some(kind)),
            (None, Some(e)) if !req.clear_credential => {
                let old: Option<GitSettings> = serde_json::from_str(&e.settings).ok();
                (e.credential.clone(), old.and_then(|o| o.credential_kind))
            }
            (None, _) => (None, None),
        };
        settings.credential_kind = kind.filter(|_| stored_credential.is_some());
        let (webhook_secret, shown) = match &existing {
            Some(e) if !req.rotate_webhook_secret => (e.webhook_secret.clone(), None),
            _ => {
                let secret = hex::encode(random_bytes::<24>());
                (builds.sealer.seal(secret.as_bytes()), Some(secret))
            }
        };
        let conn = GitConnection {
            site: site.clone(),
            repository: req.repository,
            credential: stored_credential,
            webhook_secret,
            settings: serde_json::to_string(&settings).expect("settings serialize"),
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
        };
        self.meta.set_git(conn.clone()).await?;
        tracing::info!(site = %site, repository = %conn.repository, "git repository connected");
        builds.wake.notify_waiters();
        self.git_view(site, &site_rec.production_branch, &conn, shown)
    }

    /// Refuses a caller below the admin scope who would make a site a
    /// platform config site, or change one's connection: its builds apply
    /// configuration to every site, which only an admin may (as `chanto
    /// apply`), so pointing one at another repository would be a way round.
    pub(crate) async fn require_platform_admin(
        &self,
        caller: &crate::auth::Principal,
        site: &SiteName,
        req: &ConnectRequest,
    ) -> Result<(), ApiError> {
        let existing = self
            .meta
            .get_git(site)
            .await?
            .and_then(|g| serde_json::from_str::<GitSettings>(&g.settings).ok())
            .and_then(|s| s.platform_config);
        if req.settings.platform_config.is_none() && existing.is_none() {
            return Ok(());
        }
        caller.require(chanto_store::Scope::Admin).map_err(|mut e| {
            e.message = format!(
                "{site} is (or would become) a platform config site, whose builds change every site's settings: {}",
                e.message
            );
            e
        })
    }

    /// A site's connection.
    pub async fn git(&self, site: &SiteName) -> Result<GitView, ApiError> {
        let site_rec = self.site(site).await?;
        let conn = self.meta.get_git(site).await?.ok_or_else(|| not_connected(site))?;
        self.git_view(site, &site_rec.production_branch, &conn, None)
    }

    /// Disconnects a site (its deploys stay).
    pub async fn disconnect_git(&self, site: &SiteName) -> Result<(), ApiError> {
        self.site(site).await?;
        if !self.meta.delete_git(site).await? {
            return Err(not_connected(site));
        }
        Ok(())
    }

    /// Sets a build variable.
    pub async fn set_env(
        &self,
        site: &SiteName,
        branch: Option<BranchName>,
        name: String,
        value: String,
        secret: bool,
    ) -> Result<EnvView, ApiError> {
        let builds = self.builds()?;
        self.site(site).await?;
        chanto_build::validate_var_name(&name)
            .map_err(|e| ApiError::from(ValidationError::new("name", e.to_string())))?;
        chanto_build::validate_var_value(&name, &value)
            .map_err(|e| ApiError::from(ValidationError::new("value", e.to_string())))?;
        let stored = if secret { builds.sealer.seal(value.as_bytes()) } else { value.clone().into_bytes() };
        let var =
            EnvVar { branch: branch.clone(), name: name.clone(), value: stored, secret, updated_at: now_millis() };
        self.meta.set_env(site, var).await?;
        Ok(EnvView {
            branch: branch.map(|b| b.to_string()),
            name,
            value: if secret { "***".into() } else { value },
            secret,
        })
    }

    /// A site's build variables, secrets masked.
    pub async fn list_env(&self, site: &SiteName) -> Result<Vec<EnvView>, ApiError> {
        self.site(site).await?;
        Ok(self
            .meta
            .list_env(site)
            .await?
            .into_iter()
            .map(|v| EnvView {
                branch: v.branch.map(|b| b.to_string()),
                name: v.name,
                value: if v.secret { "***".into() } else { String::from_utf8_lossy(&v.value).into_owned() },
                secret: v.secret,
            })
            .collect())
    }

    /// Removes a build variable.
    pub async fn unset_env(&self, site: &SiteName, branch: Option<BranchName>, name: &str) -> Result<(), ApiError> {
        self.site(site).await?;
        if !self.meta.unset_env(site, branch.as_ref(), name).await? {
            let scope = branch.map_or_else(|| "site-wide".to_owned(), |b| format!("for branch {b}"));
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{site} has no variable {name} ({scope}); `chanto env list --site {site}` lists its variables"),
            ));
        }
        Ok(())
    }

    /// Creates a build hook; its secret URL is in this answer only. It builds
    /// `branch` (default: the production branch as it is now) and nothing
    /// else, unless `any_branch` lets each request name its branch.
    pub async fn create_hook(
        &self,
        site: &SiteName,
        name: String,
        branch: Option<BranchName>,
        any_branch: bool,
    ) -> Result<HookView, ApiError> {
        let builds = self.builds()?;
        let site_rec = self.site(site).await?;
        if any_branch && branch.is_some() {
            return Err(ValidationError::new("any_branch", "give a branch or any_branch, not both").into());
        }
        // Stored without a branch means "any branch".
        let branch = if any_branch { None } else { Some(branch.unwrap_or(site_rec.production_branch)) };
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(ValidationError::new("name", "give the hook a name of 1-100 characters").into());
        }
        let secret = hex::encode(random_bytes::<24>());
        let hook = BuildHook {
            id: hex::encode(random_bytes::<6>()),
            site: site.clone(),
            name,
            branch,
            secret_hash: ContentHash::of(secret.as_bytes()),
            created_at: now_millis(),
        };
        self.meta.add_hook(hook.clone()).await?;
        Ok(HookView {
            id: hook.id,
            name: hook.name,
            branch: hook.branch.map(|b| b.to_string()),
            url: Some(format!("{}/api/v1/build_hooks/{secret}", builds.config.api_url)),
            created_at: hook.created_at,
        })
    }

    /// A site's build hooks (without their URLs).
    pub async fn list_hooks(&self, site: &SiteName) -> Result<Vec<HookView>, ApiError> {
        self.site(site).await?;
        Ok(self
            .meta
            .list_hooks(site)
            .await?
            .into_iter()
            .map(|h| HookView {
                id: h.id,
                name: h.name,
                branch: h.branch.map(|b| b.to_string()),
                url: None,
                created_at: h.created_at,
            })
            .collect())
    }

    /// Deletes a build hook.
    pub async fn delete_hook(&self, site: &SiteName, id: &str) -> Result<(), ApiError> {
        self.site(site).await?;
        if !self.meta.delete_hook(site, id).await? {
            return Err(ApiError::not_found(format!("build hook {id}")));
        }
        Ok(())
    }

    /// Queues a build of a connected site.
    pub async fn queue_build(&self, site: &SiteName, req: BuildRequest) -> Result<BuildRecord, ApiError> {
        self.add_build(site, req, None).await
    }

    async fn add_build(
        &self,
        site: &SiteName,
        req: BuildRequest,
        skip: Option<String>,
    ) -> Result<BuildRecord, ApiError> {
        let builds = self.builds()?;
        self.meta.get_git(site).await?.ok_or_else(|| not_connected(site))?;
        let record = self
            .meta
            .enqueue_build(
                NewBuild {
                    id: BuildId::from_random(random_bytes()),
                    site: site.clone(),
                    branch: req.branch,
                    git_ref: req.git_ref,
                    commit: req.commit,
                    pull_request: req.pull_request,
                    trigger: req.trigger,
                    title: req.title,
                    author: req.author,
                    message: req.message,
                    retry_of: None,
                    untrusted: req.untrusted,
                    skip_reason: skip,
                    created_at: now_millis(),
                },
                true,
            )
            .await?;
        tracing::info!(site = %site, build = %record.id, branch = %record.branch, trigger = %record.trigger, "build queued");
        builds.wake.notify_one();
        self.poke_notifier();
        Ok(record)
    }

    /// Records a build that its commit asked to skip (`[skip ci]`).
    async fn skip_build(&self, site: &SiteName, req: BuildRequest) -> Result<BuildRecord, ApiError> {
        self.add_build(site, req, Some("the commit message asks not to build it ([skip ci])".into())).await
    }

    /// Where build `id`'s log is written on this server (builds enabled).
    pub(crate) fn build_log_path(&self, id: &BuildId) -> Result<std::path::PathBuf, ApiError> {
        Ok(runner::log_path(self.builds()?, id))
    }

    /// One build.
    pub async fn build(&self, id: &BuildId) -> Result<BuildRecord, ApiError> {
        self.meta.get_build(id).await?.ok_or_else(|| ApiError::not_found(format!("build {id}")))
    }

    /// Cancels a queued or running build. A running build's processes are killed.
    pub async fn cancel_build(&self, id: &BuildId) -> Result<BuildRecord, ApiError> {
        let builds = self.builds()?;
        let b = self.build(id).await?;
        if b.state.is_final() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "build_ended",
                format!("build {id} has already ended ({})", b.state),
            ));
        }
        // A queued build is cancelled in the database; a running one through
        // its runner, which kills its processes and records the end. Between
        // a runner's claim and its switch there is a moment when neither
        // works: try again briefly.
        for _ in 0..100 {
            if let Some(r) = self.meta.cancel_queued(id, "cancelled before it started", now_millis()).await? {
                return Ok(r);
            }
            let switch = builds.running.lock().expect("running builds").get(id).map(|r| r.2.clone());
            if let Some(switch) = switch {
                let _ = switch.send(true);
                for _ in 0..200 {
                    let now = self.build(id).await?;
                    if now.state.is_final() {
                        return Ok(now);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                return self.build(id).await;
            }
            let now = self.build(id).await?;
            if now.state.is_final() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "build_ended",
                    format!("build {id} has already ended ({})", now.state),
                ));
            }
            // Another server runs it: only its runner can kill its processes.
            if now.state == BuildState::Running
                && let Some(node) = now.runner.as_deref().filter(|n| *n != self.config.owner.node)
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "build_on_other_node",
                    format!(
                        "build {id} runs on node {node}, not on this server; cancel it there (through that server's API)"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.build(id).await
    }

    /// Runs at start: builds that an earlier run of this node was running
    /// when it stopped are marked interrupted and queued again once (a retry
    /// is not retried). Builds of other processes sharing the database are
    /// left to [`Self::watch_builds`], which judges them by their heartbeat.
    pub async fn recover_builds(&self) -> Result<usize, ApiError> {
        self.recover_builds_before(i64::MIN).await
    }

    /// [`Self::recover_builds`], also taking builds of any other process
    /// whose heartbeat is older than `stale_before`.
    async fn recover_builds_before(&self, stale_before: chanto_store::UnixMillis) -> Result<usize, ApiError> {
        let builds = self.builds()?;
        let interrupted = self.meta.recover_builds(&self.config.owner, stale_before, now_millis()).await?;
        if interrupted.is_empty() {
            return Ok(0);
        }
        // The store queued the retries in the same transaction.
        let mut retried = 0;
        for b in interrupted {
            tracing::warn!(build = %b.id, site = %b.site, reason = b.error.as_deref().unwrap_or_default(), "build interrupted; its runner is gone");
            retried += usize::from(b.retry_of.is_none());
        }
        builds.wake.notify_waiters();
        self.poke_notifier();
        Ok(retried)
    }

    /// Removes a branch environment (deleted branch, closed pull request) and
    /// tells the edges. The production branch is never removed.
    pub async fn remove_branch(&self, site: &SiteName, branch: &BranchName) -> Result<bool, ApiError> {
        let site_rec = self.site(site).await?;
        if *branch == site_rec.production_branch {
            return Ok(false);
        }
        if let Some(builds) = self.builds.get() {
            builds.cancel_running(site, Some(branch));
        }
        let removed = self.meta.delete_branch(site, branch, now_millis()).await?;
        if removed {
            self.publish_routing(RoutingChange::site(site)).await?;
            tracing::info!(site = %site, branch = %branch, "branch environment removed");
        }
        Ok(removed)
    }

    /// Records a webhook delivery (best effort: a failure is logged, not returned).
    async fn record(
        &self,
        site: &SiteName,
        source: &str,
        event: &str,
        outcome: &str,
        detail: String,
        build: Option<BuildId>,
    ) {
        let d = WebhookDelivery {
            source: source.into(),
            event: event.into(),
            outcome: outcome.into(),
            detail,
            build,
            at: now_millis(),
        };
        if let Err(e) = self.meta.record_delivery(site, d).await {
            tracing::warn!(site = %site, error = %e, "recording a webhook delivery failed");
        }
    }

    /// Runs `n` build runners until `stop` turns true.
    pub async fn run_builders(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        let Ok(builds) = self.builds().cloned() else { return };
        let n = builds.config.concurrency.max(1);
        let mut tasks = Vec::with_capacity(n);
        for slot in 0..n {
            let (control, mut stop) = (self.clone(), stop.clone());
            let builds = builds.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    if *stop.borrow() {
                        return;
                    }
                    match control.meta.claim_build(&control.config.owner, now_millis()).await {
                        Ok(Some(b)) => {
                            control.poke_notifier();
                            runner::run(&control, &builds, b, slot, stop.clone()).await
                        }
                        Ok(None) => {
                            tokio::select! {
                                _ = builds.wake.notified() => {}
                                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                                _ = stop.changed() => {}
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "claiming a build failed; retrying");
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    }
                }
            }));
        }
        tasks.push(tokio::spawn(self.clone().watch_builds(builds.clone(), stop.clone())));
        futures_util::future::join_all(tasks).await;
    }

    /// Keeps this process's build claims alive and notices other processes'
    /// that died. Every quarter of the heartbeat timeout it refreshes the
    /// heartbeat of the builds it runs (and stops any that another process
    /// has meanwhile taken for dead), then recovers builds whose heartbeat is
    /// older than the timeout (its own too: a build of this run that no
    /// runner here holds any more, so nobody refreshed it, e.g. one whose end
    /// could not be recorded). It judges heartbeats only once it has
    /// reached the database without a failure for a whole timeout: after an
    /// outage every runner's heartbeat is old, and live ones need one
    /// interval to refresh theirs.
    async fn watch_builds(self: Arc<Self>, builds: Arc<Builds>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let timeout = self.config.build_heartbeat_timeout;
        let every = (timeout / 4).max(Duration::from_millis(50));
        // When the database last became reachable: set at the first
        // successful round trip after a failure (the heartbeat call below is
        // a real round trip even when no build runs here), so a node judges
        // others' heartbeats only after they had a whole timeout to refresh
        // them since the database came back.
        let mut reachable_since = Some(std::time::Instant::now());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let ids: Vec<BuildId> = builds.running.lock().expect("running builds").keys().cloned().collect();
            let lost = match self.meta.heartbeat_builds(&self.config.owner, &ids, now_millis()).await {
                Ok(lost) => {
                    reachable_since.get_or_insert_with(std::time::Instant::now);
                    lost
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refreshing the heartbeat of running builds failed; will retry");
                    reachable_since = None;
                    continue;
                }
            };
            for id in lost {
                // A build that ended normally leaves `running` just after its end is recorded: not lost.
                let Ok(Some(rec)) = self.meta.get_build(&id).await else { continue };
                if rec.state != BuildState::Interrupted {
                    continue;
                }
                let switch = builds.running.lock().expect("running builds").get(&id).map(|r| r.2.clone());
                if let Some(switch) = switch {
                    tracing::warn!(build = %id, site = %rec.site, reason = rec.error.as_deref().unwrap_or_default(), "another server took this build for dead (its heartbeat was late) and retries it; stopping it here");
                    let _ = switch.send(true);
                }
            }
            if reachable_since.is_none_or(|t| t.elapsed() < timeout) {
                continue;
            }
            let stale_before = now_millis() - timeout.as_millis() as i64;
            match self.recover_builds_before(stale_before).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(builds = n, "queued again builds whose server stopped sending heartbeats"),
                Err(e) => {
                    tracing::warn!(error = %e.message, "recovering builds of stopped servers failed; will retry");
                    reachable_since = None;
                }
            }
        }
    }

    /// Polls the remotes of sites that asked for it, and removes pull request
    /// previews whose retention ended, until `stop` turns true.
    pub async fn run_poller(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Ok(builds) = self.builds().cloned() else { return };
        let mut last: HashMap<SiteName, std::time::Instant> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.remove_closed_previews().await {
                tracing::warn!(error = %e.message, "removing closed previews failed; will retry");
            }
            let Ok(conns) = self.meta.list_git().await else { continue };
            for conn in conns {
                let Ok(settings) = serde_json::from_str::<GitSettings>(&conn.settings) else { continue };
                let Some(every) = settings.poll_interval_secs else { continue };
                if last.get(&conn.site).is_some_and(|t| t.elapsed() < Duration::from_secs(every)) {
                    continue;
                }
                last.insert(conn.site.clone(), std::time::Instant::now());
                if let Err(e) = self.poll(&builds, &conn, &settings).await {
                    tracing::warn!(site = %conn.site, error = %e.message, "polling the repository failed; will retry");
                }
            }
        }
    }

    async fn remove_closed_previews(&self) -> Result<(), ApiError> {
        for (site, number) in self.meta.closed_previews(now_millis()).await? {
            let branch: BranchName = chanto_build::preview_branch(number).parse()?;
            self.remove_branch(&site, &branch).await?;
            self.meta.set_preview_closed(&site, number, None).await?;
        }
        Ok(())
    }

    async fn poll(&self, builds: &Builds, conn: &GitConnection, settings: &GitSettings) -> Result<(), ApiError> {
        let site = self.site(&conn.site).await?;
        let heads = runner::ls_remote(builds, conn, settings).await?;
        let seen: HashMap<String, String> = self.meta.polled_heads(&conn.site).await?.into_iter().collect();
        let filter = settings.filter()?;
        for (branch, commit) in heads {
            if seen.get(&branch) == Some(&commit) {
                continue;
            }
            self.meta.set_polled_head(&conn.site, &branch, &commit).await?;
            let Ok(name) = branch.parse::<BranchName>() else { continue };
            if name != site.production_branch && !filter.matches(&branch) {
                continue;
            }
            let mut req = BuildRequest::branch_head(name, "poll");
            req.commit = Some(commit);
            self.queue_build(&conn.site, req).await?;
        }
        Ok(())
    }

    /// The build hook a secret URL names (404 for any other secret).
    pub async fn find_build_hook(&self, secret: &str) -> Result<BuildHook, ApiError> {
        self.builds()?;
        let unknown = || ApiError::not_found("build hook");
        if secret.len() != 48 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unknown());
        }
        self.meta.find_hook(&ContentHash::of(secret.as_bytes())).await?.ok_or_else(unknown)
    }

    /// Handles a build hook request: queues a build of the hook's branch. A
    /// hook made with `any_branch` (stored without a branch) builds the
    /// branch the request names, else production; any other hook builds only
    /// its own branch, and a request naming another is refused.
    pub async fn handle_build_hook(
        &self,
        secret: &str,
        branch: Option<String>,
        title: Option<String>,
    ) -> Result<BuildRecord, ApiError> {
        let hook = self.find_build_hook(secret).await?;
        let site = self.site(&hook.site).await?;
        let asked = branch.map(|b| b.parse::<BranchName>()).transpose()?;
        let branch = match (&hook.branch, asked) {
            (Some(own), Some(asked)) if *own != asked => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "branch_not_allowed",
                    format!(
                        "build hook {} builds only branch {own}; create a hook for {asked}, or one with `--any-branch` to let requests choose",
                        hook.name
                    ),
                ));
            }
            (Some(own), _) => own.clone(),
            (None, asked) => asked.unwrap_or(site.production_branch),
        };
        if let Some(t) = &title
            && t.len() > crate::pipeline::MAX_MESSAGE_BYTES
        {
            return Err(ValidationError::new("title", "the title is too long").into());
        }
        let mut req = BuildRequest::branch_head(branch, format!("build hook {}", hook.name));
        req.title = title;
        let b = self.queue_build(&hook.site, req).await?;
        self.record(
            &hook.site,
            "build_hook",
            &hook.name,
            "accepted",
            format!("queued a build of {}", b.branch),
            Some(b.id.clone()),
        )
        .await;
        Ok(b)
    }

    /// The checks a webhook passes before its body is read: builds are on,
    /// the site is connected, and the request carries the forge's signature
    /// header in its form (GitLab's token, which does not depend on the
    /// body, is verified here whole). So a request that can never be
    /// accepted is answered without reading up to 25 MiB of it.
    pub async fn webhook_gate(
        &self,
        forge: chanto_forge::Forge,
        site: &SiteName,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), ApiError> {
        let builds = self.builds()?;
        self.site(site).await?;
        let conn = self.meta.get_git(site).await?.ok_or_else(|| not_connected(site))?;
        let secret = builds
            .sealer
            .open(&conn.webhook_secret)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        match chanto_forge::verify(forge, &lookup, b"", &secret) {
            Err(e) if matches!(e.code(), "missing_signature" | "malformed_signature" | "bad_token") => {
                Err(self.refuse_webhook(builds, site, forge.as_str(), &event_name_of(headers), e).await)
            }
            _ => Ok(()),
        }
    }

    /// Records a refused webhook (at most [`REFUSED_RECORDED_PER_MINUTE`] a
    /// minute per site) and makes its answer.
    async fn refuse_webhook(
        &self,
        builds: &Builds,
        site: &SiteName,
        source: &str,
        event_name: &str,
        e: chanto_forge::WebhookError,
    ) -> ApiError {
        let record = {
            let mut refused = builds.refused.lock().expect("refused webhooks");
            let entry = refused.entry(site.clone()).or_insert((std::time::Instant::now(), 0));
            if entry.0.elapsed() >= Duration::from_secs(60) {
                *entry = (std::time::Instant::now(), 0);
            }
            entry.1 += 1;
            entry.1 <= REFUSED_RECORDED_PER_MINUTE
        };
        if record {
            tracing::warn!(site = %site, forge = source, error = %e, "webhook refused");
            self.record(site, source, event_name, "refused", e.to_string(), None).await;
        }
        ApiError::new(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST), e.code(), e.to_string())
    }

    /// Handles a forge webhook: verifies its signature with the site's
    /// secret, then queues, skips or removes what the event asks. Every
    /// delivery is recorded, refused ones with the reason.
    pub async fn handle_webhook(
        &self,
        forge: chanto_forge::Forge,
        site: &SiteName,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<WebhookAnswer, ApiError> {
        let builds = self.builds()?;
        let site_rec = self.site(site).await?;
        let conn = self.meta.get_git(site).await?.ok_or_else(|| not_connected(site))?;
        let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let event_name = event_name_of(headers);
        let source = forge.as_str();
        let secret = builds
            .sealer
            .open(&conn.webhook_secret)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
        let refuse = |e: chanto_forge::WebhookError| {
            ApiError::new(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST), e.code(), e.to_string())
        };
        if let Err(e) = chanto_forge::verify(forge, &lookup, body, &secret) {
            return Err(self.refuse_webhook(builds, site, source, &event_name, e).await);
        }
        let event = match chanto_forge::parse(forge, &lookup, body) {
            Ok(e) => e,
            Err(e) => {
                self.record(site, source, &event_name, "refused", e.to_string(), None).await;
                return Err(refuse(e));
            }
        };
        let settings: GitSettings = serde_json::from_str(&conn.settings).unwrap_or_default();
        let filter = settings.filter()?;
        let ignore = |why: String| WebhookAnswer { outcome: "ignored".into(), detail: why, build: None };
        let answer = match event {
            chanto_forge::Event::Ping => ignore("ping: the webhook is set up".into()),
            chanto_forge::Event::Ignored { reason } => ignore(reason),
            chanto_forge::Event::Push { branch, commit, message, author, .. } => match branch.parse::<BranchName>() {
                Err(e) => ignore(format!("branch {branch:?} cannot be served: {}", e.message)),
                Ok(name) if name != site_rec.production_branch && !filter.matches(&branch) => {
                    ignore(format!("branch {branch} does not match the site's build patterns"))
                }
                Ok(name) => {
                    let mut req = BuildRequest::branch_head(name, format!("{source} push"));
                    req.commit = Some(commit);
                    req.message = message.clone();
                    req.author = author;
                    let b = if message.as_deref().is_some_and(chanto_build::skip_requested) {
                        self.skip_build(site, req).await?
                    } else {
                        self.queue_build(site, req).await?
                    };
                    WebhookAnswer {
                        outcome: "accepted".into(),
                        detail: format!("{} build of {}", b.state, b.branch),
                        build: Some(b),
                    }
                }
            },
            chanto_forge::Event::BranchDeleted { branch } => {
                if !settings.delete_branches {
                    ignore(format!("branch {branch} was deleted; the site keeps deleted branches' environments"))
                } else {
                    match branch.parse::<BranchName>() {
                        Ok(name) if self.remove_branch(site, &name).await? => WebhookAnswer {
                            outcome: "accepted".into(),
                            detail: format!("removed the environment of deleted branch {branch}"),
                            build: None,
                        },
                        _ => ignore(format!("branch {branch} had no environment to remove")),
                    }
                }
            }
            chanto_forge::Event::PullRequest { number, action, head_commit, title, author, from_fork, .. } => {
                let branch: BranchName = chanto_build::preview_branch(number).parse()?;
                if !settings.pull_request_previews {
                    ignore("pull request previews are off for this site".into())
                } else if from_fork
                    && !settings.fork_pull_requests
                    && matches!(action, chanto_forge::PrAction::Opened | chanto_forge::PrAction::Updated)
                {
                    ignore(format!(
                        "pull request #{number} comes from a fork, and this site does not build pull requests from forks (`chanto git connect` without `--no-fork-prs` builds them)"
                    ))
                } else {
                    match action {
                        chanto_forge::PrAction::Opened | chanto_forge::PrAction::Updated => {
                            self.meta.set_preview_closed(site, number, None).await?;
                            let req = BuildRequest {
                                branch,
                                git_ref: pull_request_ref(forge, number),
                                commit: Some(head_commit),
                                pull_request: Some(number),
                                trigger: format!("{source} pull request"),
                                title: Some(title),
                                author,
                                message: None,
                                untrusted: from_fork,
                            };
                            let b = self.queue_build(site, req).await?;
                            WebhookAnswer {
                                outcome: "accepted".into(),
                                detail: format!("queued preview build of {}", b.branch),
                                build: Some(b),
                            }
                        }
                        chanto_forge::PrAction::Closed { .. } => {
                            let days = settings.preview_retention_days;
                            if days == 0 {
                                self.remove_branch(site, &branch).await?;
                                WebhookAnswer {
                                    outcome: "accepted".into(),
                                    detail: format!("removed preview {branch}"),
                                    build: None,
                                }
                            } else {
                                let at = now_millis() + i64::from(days) * 86_400_000;
                                self.meta.set_preview_closed(site, number, Some(at)).await?;
                                WebhookAnswer {
                                    outcome: "accepted".into(),
                                    detail: format!("preview {branch} is removed in {days} days"),
                                    build: None,
                                }
                            }
                        }
                    }
                }
            }
        };
        self.record(
            site,
            source,
            &event_name,
            &answer.outcome,
            answer.detail.clone(),
            answer.build.as_ref().map(|b| b.id.clone()),
        )
        .await;
        Ok(answer)
    }

    /// A site's webhook deliveries, newest first.
    pub async fn deliveries(&self, site: &SiteName, limit: u32) -> Result<Vec<WebhookDelivery>, ApiError> {
        self.site(site).await?;
        Ok(self.meta.list_deliveries(site, limit).await?)
    }
}

/// What a webhook did.
#[derive(Debug, Clone)]
pub struct WebhookAnswer {
    /// `accepted` or `ignored`.
    pub outcome: String,
    /// Why, in words.
    pub detail: String,
    /// The build it queued (or skipped).
    pub build: Option<BuildRecord>,
}

/// The event a webhook names (its forge's event header), for the delivery log.
fn event_name_of(headers: &axum::http::HeaderMap) -> String {
    let name = ["x-github-event", "x-gitlab-event", "x-gitea-event", "x-forgejo-event"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .unwrap_or("unknown");
    name.chars().take(64).collect()
}

/// The ref under which a forge serves a pull request's head, also for forks.
fn pull_request_ref(forge: chanto_forge::Forge, number: u64) -> String {
    match forge {
        chanto_forge::Forge::GitLab => format!("refs/merge-requests/{number}/head"),
        _ => format!("refs/pull/{number}/head"),
    }
}

pub(crate) fn not_connected(site: &SiteName) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_connected",
        format!("site {site} is not connected to a repository; run `chanto git connect --site {site} <repository>`"),
    )
}

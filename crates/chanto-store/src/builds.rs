//! The build side of the metadata repository: git connections, the build
//! queue, environment variables, incoming build hooks, the webhook delivery
//! log, polled branch heads and pull-request previews. Secrets arrive here
//! already sealed by the control plane; the store never sees them in clear.

use async_trait::async_trait;
use chanto_core::{BranchName, BuildId, BuildState, ContentHash, DeployId, SiteName};
use serde::Serialize;

use crate::{StoreError, UnixMillis};

/// A site's connection to its git repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitConnection {
    /// The site.
    pub site: SiteName,
    /// Clone URL (https, ssh, `file://` or a local path).
    pub repository: String,
    /// The sealed credential (token or deploy key), if any.
    pub credential: Option<Vec<u8>>,
    /// The sealed secret that webhooks are signed with.
    pub webhook_secret: Vec<u8>,
    /// The control plane's settings for this connection, as JSON (branch
    /// patterns, previews, polling, build settings, timeout).
    pub settings: String,
    /// When it was first connected.
    pub created_at: UnixMillis,
    /// When it was last changed.
    pub updated_at: UnixMillis,
}

/// What it takes to queue a build.
#[derive(Debug, Clone)]
pub struct NewBuild {
    /// Its id.
    pub id: BuildId,
    /// The site.
    pub site: SiteName,
    /// The branch environment it deploys to (`pr-<n>` for a pull request).
    pub branch: BranchName,
    /// The git ref to fetch (the branch itself, or the pull request's head branch).
    pub git_ref: String,
    /// The commit to build; `None` builds the ref's head at fetch time.
    pub commit: Option<String>,
    /// The pull request it previews.
    pub pull_request: Option<u64>,
    /// What started it (`github push`, `build hook deploy-main`, `poll`, `manual`, …).
    pub trigger: String,
    /// A title (pull request title, build hook title).
    pub title: Option<String>,
    /// The commit's author, when the trigger knew it.
    pub author: Option<String>,
    /// The commit message, when the trigger knew it.
    pub message: Option<String>,
    /// The build this one retries (after an interruption).
    pub retry_of: Option<BuildId>,
    /// Whether secret variables are withheld (a pull request from a fork).
    pub untrusted: bool,
    /// Record it as already `skipped`, for this reason, instead of queuing it.
    pub skip_reason: Option<String>,
    /// When it was queued.
    pub created_at: UnixMillis,
}

/// Who holds a claim (a running build, a delivery lease): one run of one
/// `chanto serve`. Several processes may share one PostgreSQL; each claim
/// names its owner, so a process recovers only claims that are certainly
/// dead: those of an earlier run of its own node (its data directory's lock
/// guarantees that run has ended), and builds whose heartbeat is older than
/// the timeout (a node that died or lost the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The node: the same across restarts of one data directory
    /// (`DATA/node-id`), whatever the host is called.
    pub node: String,
    /// This run of the node: fresh at every start.
    pub run: String,
}

impl Owner {
    /// An owner for `node`, with a fresh random run id.
    pub fn new_run(node: impl Into<String>) -> Self {
        let run: String = crate::random_bytes::<8>().iter().map(|b| format!("{b:02x}")).collect();
        Self { node: node.into(), run }
    }
}

/// Why [`BuildStore::recover_builds`] interrupted a build claimed by
/// (`node`, `run`), in words for its `error`: the same text on every backend.
pub(crate) fn interrupted_because(
    owner: &Owner,
    node: Option<&str>,
    run: Option<&str>,
    heartbeat_at: Option<UnixMillis>,
    now: UnixMillis,
) -> String {
    let silent = (now - heartbeat_at.unwrap_or(0)).max(0) / 1000;
    match (node, run) {
        // Claimed on SQLite before owners were recorded (one process per data directory: it has ended).
        (_, Some("")) => "the server stopped while this build ran".into(),
        (Some(n), Some(r)) if n == owner.node && r == owner.run => {
            format!(
                "its runner in this server ended without recording how the build ended (no heartbeat for {silent} s)"
            )
        }
        (Some(n), _) if n == owner.node => "the server stopped while this build ran".into(),
        (Some(n), _) => format!("the server running this build ({n}) stopped answering: no heartbeat for {silent} s"),
        (None, _) => format!(
            "the server running this build (a chanto that did not record its node) stopped answering: no heartbeat for {silent} s"
        ),
    }
}

/// A build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildRecord {
    /// Its id.
    pub id: BuildId,
    /// The site.
    pub site: SiteName,
    /// The branch environment it deploys to.
    pub branch: BranchName,
    /// The git ref it fetches.
    pub git_ref: String,
    /// The commit built (known once fetched, if the trigger did not say).
    pub commit: Option<String>,
    /// The pull request it previews.
    pub pull_request: Option<u64>,
    /// Where it is in its life.
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
    pub deploy: Option<DeployId>,
    /// Why it failed.
    pub error: Option<String>,
    /// Each phase's name, exit status and duration, as JSON.
    pub phases: String,
    /// The build this one retries.
    pub retry_of: Option<BuildId>,
    /// Whether secret variables are withheld.
    pub untrusted: bool,
    /// When it was queued.
    pub created_at: UnixMillis,
    /// When a runner took it.
    pub started_at: Option<UnixMillis>,
    /// When it ended.
    pub finished_at: Option<UnixMillis>,
    /// The node that claimed it (see [`Owner`]), once claimed.
    pub runner: Option<String>,
    /// When its runner last said it was still running it.
    pub heartbeat_at: Option<UnixMillis>,
}

/// How a build ended, as a runner reports it.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The final state.
    pub state: BuildState,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// The deploy it made.
    pub deploy: Option<DeployId>,
    /// Phases as JSON.
    pub phases: String,
}

/// A build environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The branch it applies to; `None` for every branch of the site.
    pub branch: Option<BranchName>,
    /// Its name.
    pub name: String,
    /// Its value: sealed when secret, UTF-8 otherwise.
    pub value: Vec<u8>,
    /// Whether it is secret (sealed at rest, masked in output).
    pub secret: bool,
    /// When it was last set.
    pub updated_at: UnixMillis,
}

/// An incoming build hook: a secret URL that starts a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildHook {
    /// Its public id.
    pub id: String,
    /// The site.
    pub site: SiteName,
    /// Its name.
    pub name: String,
    /// The branch it builds; `None` means the production branch unless the request names one.
    pub branch: Option<BranchName>,
    /// Hash of the secret in its URL (the secret itself is never stored).
    #[serde(skip)]
    pub secret_hash: ContentHash,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// One webhook request chanto received, and what it did with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookDelivery {
    /// The forge (`github`, `gitlab`, `gitea`) or `build_hook`.
    pub source: String,
    /// The event, as the forge named it.
    pub event: String,
    /// `accepted`, `ignored` or `refused`.
    pub outcome: String,
    /// Why, in words.
    pub detail: String,
    /// The build it queued.
    pub build: Option<BuildId>,
    /// When it arrived.
    pub at: UnixMillis,
}

/// The build side of the metadata repository. Every backend passes
/// [`crate::conformance::build_store`].
#[async_trait]
pub trait BuildStore: Send + Sync + 'static {
    /// Connects a site to a repository, or replaces its connection.
    async fn set_git(&self, conn: GitConnection) -> Result<(), StoreError>;
    /// A site's connection.
    async fn get_git(&self, site: &SiteName) -> Result<Option<GitConnection>, StoreError>;
    /// Every connection.
    async fn list_git(&self) -> Result<Vec<GitConnection>, StoreError>;
    /// Disconnects a site; false when it was not connected.
    async fn delete_git(&self, site: &SiteName) -> Result<bool, StoreError>;

    /// Queues a build (or records it skipped, see [`NewBuild::skip_reason`]).
    /// When `supersede`, queued builds of the same branch become `superseded`
    /// in the same transaction.
    async fn enqueue_build(&self, build: NewBuild, supersede: bool) -> Result<BuildRecord, StoreError>;
    /// Cancels a build only if it is still queued; `None` when it is not.
    async fn cancel_queued(
        &self,
        id: &BuildId,
        reason: &str,
        now: UnixMillis,
    ) -> Result<Option<BuildRecord>, StoreError>;
    /// Takes the oldest queued build for a runner of `owner` (`running`, its
    /// heartbeat `now`), if any.
    async fn claim_build(&self, owner: &Owner, now: UnixMillis) -> Result<Option<BuildRecord>, StoreError>;
    /// Refreshes the heartbeat of `owner`'s running builds `ids`. Returns those
    /// of `ids` that are no longer running under `owner` (another process
    /// recovered them, or they ended): their runner should stop.
    async fn heartbeat_builds(
        &self,
        owner: &Owner,
        ids: &[BuildId],
        now: UnixMillis,
    ) -> Result<Vec<BuildId>, StoreError>;
    /// Records the commit a running build resolved and its message and author (at `now`: a build that did not know
    /// its commit reports its start then).
    async fn set_build_commit(
        &self,
        id: &BuildId,
        commit: &str,
        message: Option<String>,
        author: Option<String>,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Records a running build's phases so far.
    async fn set_build_phases(&self, id: &BuildId, phases: &str) -> Result<(), StoreError>;
    /// Ends a queued or running build; `Conflict` if it has already ended.
    async fn finish_build(
        &self,
        id: &BuildId,
        outcome: BuildOutcome,
        now: UnixMillis,
    ) -> Result<BuildRecord, StoreError>;
    /// One build.
    async fn get_build(&self, id: &BuildId) -> Result<Option<BuildRecord>, StoreError>;
    /// A site's builds, newest first, optionally of one branch, at most `limit`.
    async fn list_builds(
        &self,
        site: &SiteName,
        branch: Option<&BranchName>,
        limit: u32,
    ) -> Result<Vec<BuildRecord>, StoreError>;
    /// Marks `interrupted` (and returns) the running builds whose runner is
    /// certainly gone: those claimed by an earlier run of `owner.node` (one
    /// process per data directory, so that run has ended), those claimed
    /// before owners were recorded on SQLite, and those whose heartbeat is
    /// older than `stale_before` (pass `i64::MIN` to judge no heartbeat) —
    /// `owner`'s own run included: its live runners keep their heartbeat
    /// fresh, so a stale one of its own is a runner that ended without
    /// recording the end. In the same transaction it queues one retry of
    /// each that is not itself a retry (`retry_of` the interrupted build,
    /// its `created_at`: its place in the queue), so an interrupted build
    /// never lacks its retry, whatever fails after.
    async fn recover_builds(
        &self,
        owner: &Owner,
        stale_before: UnixMillis,
        now: UnixMillis,
    ) -> Result<Vec<BuildRecord>, StoreError>;

    /// Sets a variable (replacing one of the same name and branch).
    async fn set_env(&self, site: &SiteName, var: EnvVar) -> Result<(), StoreError>;
    /// Removes a variable; false when there was none.
    async fn unset_env(&self, site: &SiteName, branch: Option<&BranchName>, name: &str) -> Result<bool, StoreError>;
    /// A site's variables, site-wide ones first.
    async fn list_env(&self, site: &SiteName) -> Result<Vec<EnvVar>, StoreError>;

    /// Adds a build hook.
    async fn add_hook(&self, hook: BuildHook) -> Result<(), StoreError>;
    /// A site's build hooks.
    async fn list_hooks(&self, site: &SiteName) -> Result<Vec<BuildHook>, StoreError>;
    /// Removes a build hook; false when there was none.
    async fn delete_hook(&self, site: &SiteName, id: &str) -> Result<bool, StoreError>;
    /// The hook whose secret hashes to `secret_hash`.
    async fn find_hook(&self, secret_hash: &ContentHash) -> Result<Option<BuildHook>, StoreError>;

    /// Records a webhook delivery (kept: the newest 1,000 per site).
    async fn record_delivery(&self, site: &SiteName, delivery: WebhookDelivery) -> Result<(), StoreError>;
    /// A site's webhook deliveries, newest first.
    async fn list_deliveries(&self, site: &SiteName, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError>;

    /// The branch heads polling saw last.
    async fn polled_heads(&self, site: &SiteName) -> Result<Vec<(String, String)>, StoreError>;
    /// Remembers a branch head polling saw.
    async fn set_polled_head(&self, site: &SiteName, branch: &str, commit: &str) -> Result<(), StoreError>;

    /// Changes the branch a site serves at `<site>.<base>`.
    async fn set_production_branch(&self, site: &SiteName, branch: &BranchName) -> Result<(), StoreError>;
    /// Removes a branch environment with its deploys and history; false when absent.
    async fn delete_branch(&self, site: &SiteName, branch: &BranchName, now: UnixMillis) -> Result<bool, StoreError>;
    /// Schedules the removal of a closed pull request's preview at `remove_at`
    /// (`None`: the pull request is open again, keep it).
    async fn set_preview_closed(
        &self,
        site: &SiteName,
        number: u64,
        remove_at: Option<UnixMillis>,
    ) -> Result<(), StoreError>;
    /// Previews due for removal at `now`.
    async fn closed_previews(&self, now: UnixMillis) -> Result<Vec<(SiteName, u64)>, StoreError>;
}

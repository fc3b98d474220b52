//! The metadata repository: sites, deploys, branch pointers, activation history,
//! variants and API tokens. One trait, so PostgreSQL can join SQLite without
//! touching callers; every method is one transaction.

use async_trait::async_trait;
use chanto_core::{
    AccessPolicy, AccessScope, BranchName, ContentHash, DeployId, DeployState, Encoding, SiteName, Variant,
};
use serde::Serialize;

use crate::{StoreError, UnixMillis};

/// A site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteRecord {
    /// Its name.
    pub name: SiteName,
    /// The branch served at `<site>.<base>`.
    pub production_branch: BranchName,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// One file of a deploy as the client declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployFile {
    /// Normalised manifest path.
    pub path: String,
    /// The blob's hash.
    pub hash: ContentHash,
    /// Size in bytes.
    pub size: u64,
}

/// What it takes to record a new deploy.
#[derive(Debug, Clone)]
pub struct NewDeploy {
    /// Its id.
    pub id: DeployId,
    /// The site it belongs to.
    pub site: SiteName,
    /// The branch it deploys.
    pub branch: BranchName,
    /// The author's message.
    pub message: Option<String>,
    /// Uploaded without activating: reachable only at its permalink.
    pub draft: bool,
    /// Where it came from (`cli`, later `git`, `zip`).
    pub source: String,
    /// Its files.
    pub files: Vec<DeployFile>,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// A deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRecord {
    /// Its id.
    pub id: DeployId,
    /// Its site.
    pub site: SiteName,
    /// Its branch.
    pub branch: BranchName,
    /// Its branch's DNS label (`<label>--<site>.<base>`).
    pub branch_label: String,
    /// Whether its branch is the site's production branch.
    pub production: bool,
    /// Where it is in its life.
    pub state: DeployState,
    /// The manifest blob, once ready.
    pub manifest: Option<ContentHash>,
    /// Number of files.
    pub file_count: u64,
    /// Total bytes of the files.
    pub total_size: u64,
    /// The author's message.
    pub message: Option<String>,
    /// Uploaded without activating.
    pub draft: bool,
    /// Where it came from.
    pub source: String,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it became ready, failed or expired.
    pub finished_at: Option<UnixMillis>,
}

/// A branch environment: a site's branch and the deploy it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchRecord {
    /// The site.
    pub site: SiteName,
    /// The branch.
    pub branch: BranchName,
    /// Its DNS label, unique within the site (`<label>--<site>.<base>`).
    pub label: String,
    /// The deploy it serves, if any.
    pub active_deploy: Option<DeployId>,
}

/// One row of the routing table: a branch that serves a deploy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoutingRow {
    /// The site.
    pub site: SiteName,
    /// The branch.
    pub branch: BranchName,
    /// Its DNS label.
    pub label: String,
    /// Whether it is the site's production branch.
    pub production: bool,
    /// The active deploy.
    pub deploy: DeployId,
    /// That deploy's manifest blob.
    pub manifest: ContentHash,
    /// When that deploy became ready (its files' `Last-Modified`).
    pub ready_at: UnixMillis,
}

/// A complete deploy, reachable at `<deploy-id>--<site>.<base>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Permalink {
    /// The site.
    pub site: SiteName,
    /// The deploy.
    pub deploy: DeployId,
    /// Its manifest blob.
    pub manifest: ContentHash,
    /// When it became ready.
    pub ready_at: UnixMillis,
    /// Its branch (whose access policy covers it).
    pub branch: BranchName,
    /// Whether that branch is the site's production branch.
    pub production: bool,
}

/// What is known about one encoding of one source blob: the variant, or
/// `None` when that encoding did not make the blob smaller.
pub type VariantRecord = (ContentHash, Encoding, Option<Variant>);

/// Why a deploy was activated (kept in the activation history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationKind {
    /// A new deploy finished and went live.
    Deploy,
    /// An operator published a ready deploy (possibly an old one).
    Publish,
    /// A rollback made an earlier deploy live again (see [`crate::rollback`]).
    Rollback,
}

impl ActivationKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Publish => "publish",
            Self::Rollback => "rollback",
        }
    }
}

/// One remembered key of a site (`MetaStore::platform_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformState {
    /// The site it belongs to.
    pub site: SiteName,
    /// The key (`ref:<secret key>`, `notify:<name>`).
    pub key: String,
    /// What is remembered under it (`env:VAR`, a subscription id).
    pub value: String,
}

/// The metadata repository. Every backend passes [`crate::conformance::meta_store`].
#[async_trait]
pub trait MetaStore:
    crate::BuildStore
    + crate::NotifyStore
    + crate::NodeStore
    + crate::DomainStore
    + crate::AccountStore
    + Send
    + Sync
    + 'static
{
    /// Creates a site; `Conflict` if the name is taken.
    async fn create_site(
        &self,
        name: &SiteName,
        production_branch: &BranchName,
        now: UnixMillis,
    ) -> Result<SiteRecord, StoreError>;
    /// Every site, by name.
    async fn list_sites(&self) -> Result<Vec<SiteRecord>, StoreError>;
    /// One site.
    async fn get_site(&self, name: &SiteName) -> Result<Option<SiteRecord>, StoreError>;
    /// Deletes a site with its branches, deploys and history; `NotFound` if absent.
    async fn delete_site(&self, name: &SiteName) -> Result<(), StoreError>;

    /// Records a new deploy in `uploading` state with its file list, creating
    /// its branch environment if new. `NotFound` for an unknown site.
    async fn create_deploy(&self, deploy: NewDeploy) -> Result<DeployRecord, StoreError>;
    /// The files a deploy declared (empty once its upload session is gone).
    async fn deploy_files(&self, id: &DeployId) -> Result<Vec<DeployFile>, StoreError>;
    /// One deploy.
    async fn get_deploy(&self, id: &DeployId) -> Result<Option<DeployRecord>, StoreError>;
    /// A site's deploys, newest first, optionally of one branch.
    async fn list_deploys(&self, site: &SiteName, branch: Option<&BranchName>)
    -> Result<Vec<DeployRecord>, StoreError>;
    /// `uploading` → `ready` with its manifest; `Conflict` from any other state.
    async fn mark_ready(
        &self,
        id: &DeployId,
        manifest: &ContentHash,
        now: UnixMillis,
    ) -> Result<DeployRecord, StoreError>;
    /// Notes that the deploy will go live before all its precompressed
    /// variants exist (call it before [`MetaStore::mark_ready`]), so a restart
    /// finishes them: see [`MetaStore::variants_pending`].
    async fn set_variants_pending(&self, id: &DeployId) -> Result<(), StoreError>;
    /// Swaps a complete deploy's manifest for one that adds precompressed
    /// variants, if its manifest is still `expected` (compare and set), and
    /// clears its pending mark. Returns whether it swapped. Nothing else of a
    /// deploy ever changes: callers only add variants.
    async fn replace_manifest(
        &self,
        id: &DeployId,
        expected: &ContentHash,
        manifest: &ContentHash,
    ) -> Result<bool, StoreError>;
    /// Complete deploys (ready, active or superseded) still marked as waiting
    /// for variants, oldest first, with their current manifest.
    async fn variants_pending(&self) -> Result<Vec<(DeployId, ContentHash)>, StoreError>;
    /// `uploading` → `failed` with the reason.
    async fn mark_failed(&self, id: &DeployId, error: &str, now: UnixMillis) -> Result<(), StoreError>;
    /// Makes a complete deploy its branch's active deploy in one transaction:
    /// the previous one becomes `superseded`, history records the change.
    /// Returns the previously active deploy.
    async fn activate(
        &self,
        id: &DeployId,
        kind: ActivationKind,
        now: UnixMillis,
    ) -> Result<Option<DeployId>, StoreError>;
    /// Rolls a branch back: re-activates `to`, or (without it) the next
    /// deploy of [`MetaStore::rollback_walk`], and records the rollback in
    /// history, so repeated rollbacks walk further back. `to` must be a
    /// complete deploy of that branch other than the live one. Returns
    /// (from, to); `Conflict` when there is nothing to go back to.
    async fn rollback(
        &self,
        site: &SiteName,
        branch: &BranchName,
        to: Option<&DeployId>,
        now: UnixMillis,
    ) -> Result<(DeployId, DeployId), StoreError>;
    /// The deploys successive plain rollbacks of a branch would make live, in
    /// that order (the rule: [`crate::rollback::rollback_walk`]). Empty when
    /// the branch has no live deploy or nothing before it. Retention must keep
    /// every deploy listed here.
    async fn rollback_walk(&self, site: &SiteName, branch: &BranchName) -> Result<Vec<DeployId>, StoreError>;
    /// The deploys of a site (of one branch, if given) that a rollback took
    /// off the air and that have not been live since (the rule:
    /// [`crate::rollback::rolled_back`]), in no particular order. `NotFound`
    /// for an unknown site; an unknown branch has none.
    async fn rolled_back(&self, site: &SiteName, branch: Option<&BranchName>) -> Result<Vec<DeployId>, StoreError>;
    /// Marks deploys still uploading that were created before `cutoff` as
    /// expired and drops their upload sessions. Returns their ids.
    async fn expire_uploads(&self, cutoff: UnixMillis) -> Result<Vec<DeployId>, StoreError>;

    /// One branch environment.
    async fn branch(&self, site: &SiteName, branch: &BranchName) -> Result<Option<BranchRecord>, StoreError>;
    /// Every branch that serves a deploy, with the deploy's manifest (of
    /// `site` only, when given), by site and branch.
    async fn routing_table(&self, site: Option<&SiteName>) -> Result<Vec<RoutingRow>, StoreError>;
    /// Every complete deploy, for permalinks (of `site` only, when given).
    async fn permalinks(&self, site: Option<&SiteName>) -> Result<Vec<Permalink>, StoreError>;

    /// Known variants of the given source blobs; `None` records that the
    /// encoding did not make the blob smaller.
    async fn variants(&self, sources: &[ContentHash]) -> Result<Vec<VariantRecord>, StoreError>;
    /// Remembers variants (idempotent).
    async fn put_variants(&self, variants: &[VariantRecord]) -> Result<(), StoreError>;
    /// Forgets variants whose source or variant blob is among `blobs` (called
    /// before those blobs are deleted, so no variant row points at nothing).
    async fn forget_variants(&self, blobs: &[ContentHash]) -> Result<(), StoreError>;
    /// Every blob that a deploy (not expired or failed) still references: files,
    /// manifests and their variants. Deploys in `excluding` count as gone (a
    /// dry run of garbage collection asks as if they were pruned).
    async fn referenced_blobs(
        &self,
        excluding: &[DeployId],
    ) -> Result<std::collections::HashSet<ContentHash>, StoreError>;

    /// Notes that garbage collection is about to delete these blobs (or
    /// renews the note), so a deploy created from now on uploads them again
    /// instead of counting on them: see [`MetaStore::blobs_being_deleted`].
    async fn mark_deleting(&self, blobs: &[ContentHash], now: UnixMillis) -> Result<(), StoreError>;
    /// Drops the notes [`MetaStore::mark_deleting`] made for these blobs.
    async fn clear_deleting(&self, blobs: &[ContentHash]) -> Result<(), StoreError>;
    /// Every blob some garbage collection (of any process) is deleting: a
    /// new deploy asks for these as if the store lacked them.
    async fn blobs_being_deleted(&self) -> Result<std::collections::HashSet<ContentHash>, StoreError>;

    /// Sets how many deploys per branch a site keeps (0: all).
    async fn set_keep_deploys(&self, site: &SiteName, keep: u32) -> Result<(), StoreError>;
    /// Every site that keeps a limited number of deploys per branch, by name.
    async fn all_keep_deploys(&self) -> Result<Vec<(SiteName, u32)>, StoreError>;
    /// Sets whose defaults a site's next deploys follow (`netlify`, …; the
    /// control plane checks the name); `None`: the deploy's own files decide.
    async fn set_site_profile(&self, site: &SiteName, profile: Option<&str>) -> Result<(), StoreError>;
    /// The site's profile setting, if it has one.
    async fn site_profile(&self, site: &SiteName) -> Result<Option<String>, StoreError>;
    /// What `chanto apply` remembers beside a site's settings: the reference each
    /// secret was applied from (`ref:<secret key>` → `env:VAR`) and each
    /// subscription's name (`notify:<name>` → its id). Every site's, or one site's,
    /// sorted by site then key. Goes away with its site.
    async fn platform_state(&self, site: Option<&SiteName>) -> Result<Vec<PlatformState>, StoreError>;
    /// Sets (`Some`) or removes (`None`) one key of a site; `NotFound` if the site does not exist.
    async fn set_platform_state(&self, site: &SiteName, key: &str, value: Option<&str>) -> Result<(), StoreError>;
    /// Deletes deploys (retention), with their file lists and activation
    /// history; a deploy that is active or uploading by then is left alone.
    /// Returns the ids deleted.
    async fn prune_deploys(&self, ids: &[DeployId]) -> Result<Vec<DeployId>, StoreError>;

    /// Number of API tokens.
    async fn token_count(&self) -> Result<u64, StoreError>;

    /// Sets (replaces) the access policy of a scope of a site.
    async fn set_access(&self, site: &SiteName, scope: &AccessScope, policy: &AccessPolicy) -> Result<(), StoreError>;

    /// Removes a scope's policy; false when it had none.
    async fn clear_access(&self, site: &SiteName, scope: &AccessScope) -> Result<bool, StoreError>;

    /// A site's policies, by scope.
    async fn access(&self, site: &SiteName) -> Result<Vec<(AccessScope, AccessPolicy)>, StoreError>;

    /// Every site's policies (for the routing table).
    async fn all_access(&self) -> Result<Vec<(SiteName, AccessScope, AccessPolicy)>, StoreError>;

    /// Sets (replaces) the origins a site's proxy rules may reach
    /// (`scheme://host:port`, as [`chanto_core`] callers normalise them);
    /// empty: none.
    async fn set_proxy_origins(&self, site: &SiteName, origins: &[String]) -> Result<(), StoreError>;

    /// Every site's proxy origins (of `site` only, when given; for the
    /// routing table), sites without any left out, each list sorted.
    async fn proxy_origins(&self, site: Option<&SiteName>) -> Result<Vec<(SiteName, Vec<String>)>, StoreError>;
    /// Stores a token's hash (never the token).
    async fn add_token(&self, name: &str, hash: &ContentHash, now: UnixMillis) -> Result<(), StoreError>;
    /// Whether a token with this hash exists.
    async fn token_exists(&self, hash: &ContentHash) -> Result<bool, StoreError>;

    /// The store's state for `/readyz`, probed within
    /// [`crate::health::PROBE_TIMEOUT`] (a hung database answers `down`, not
    /// never). The default knows nothing and says so.
    async fn health(&self) -> crate::health::Check {
        crate::health::Check::new("metadata", "unknown", crate::health::State::Up, "no probe for this backend")
    }

    /// Writes the store's counters (pool use, query latency, errors) as
    /// Prometheus text. The default has none.
    fn render_metrics(&self, _out: &mut String) {}

    /// The version of the next routing table this process publishes; `last`
    /// is the last one it published. A store several processes share hands
    /// out versions from one counter every process sees (PostgreSQL: a
    /// sequence, announced with `NOTIFY`), always above `last`; a store only
    /// this process uses counts on from `last`. `sites` are the sites the
    /// version changes (`None`: any), for other processes' listeners.
    async fn routing_version_after(&self, last: u64, _sites: Option<&[SiteName]>) -> Result<u64, StoreError> {
        Ok(last + 1)
    }

    /// For a store several processes share: the newest routing version any
    /// of them published, with the sites it changed when known, kept current
    /// in the background (a hint to re-read the routing table). `None` for a
    /// store only this process uses.
    fn watch_routing_versions(&self) -> Option<tokio::sync::watch::Receiver<crate::RoutingAnnouncement>> {
        None
    }
}

//! Storage cleanup: retention (prune all but the last N deploys of each
//! branch of a site that asks for it) and garbage collection (delete the
//! blobs no deploy references once they have stayed unreferenced for the
//! grace period). One code path serves the janitor, `POST /api/v1/gc` and
//! `chanto gc [--dry-run]`.
//!
//! Why a blob a deploy may still need is never deleted (ARCHITECTURE.md has
//! the long form): a deploy records its file list before it asks the blob
//! store what is missing. Garbage collection first marks the blobs it is
//! about to delete in metadata (`MetaStore::mark_deleting`), then reads the
//! references again, then deletes only the blobs still unreferenced; a new
//! deploy reads the marks before it asks the store, and uploads a marked
//! blob as if it were missing. Either the deploy's file list was recorded
//! before the second read (so the blob is kept), or the deploy sees the mark
//! (or, once the mark is gone, sees the blob gone), so no process's deploy
//! is ever told "you need not upload X" for an X about to go.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chanto_core::{BranchName, ContentHash, DeployId, DeployState, Encoding, SiteName};
use chanto_store::{BlobInfo, RoutingChange, UnixMillis};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ApiError, Control};

/// Most deploys per branch a site may ask to keep (a larger number is a
/// typo: 0 keeps all).
pub const MAX_KEEP_DEPLOYS: u32 = 10_000;

/// What garbage collection remembers between passes, and its totals.
#[derive(Default)]
pub struct GcState {
    /// When each blob was first seen unreferenced, in this process (a
    /// restart forgets, which only makes blobs wait longer).
    first_unreferenced: Mutex<HashMap<ContentHash, UnixMillis>>,
    /// Blobs deleted since start.
    pub blobs_deleted: AtomicU64,
    /// Bytes of those blobs.
    pub bytes_deleted: AtomicU64,
    /// Deploys pruned by retention since start.
    pub deploys_pruned: AtomicU64,
}

/// Deploys pruned (or, in a dry run, to be pruned) of one branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrunedDeploys {
    /// The site.
    pub site: String,
    /// The branch.
    pub branch: String,
    /// The deploys, newest first.
    pub deploys: Vec<String>,
}

/// What a garbage collection pass did, or in a dry run would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
    /// The grace period: seconds a blob stays unreferenced before it is deleted.
    pub grace_seconds: u64,
    /// How many rollbacks per branch retention keeps possible.
    pub rollback_depth: u32,
    /// Deploys pruned by retention (would be, in a dry run), per site and branch.
    pub pruned: Vec<PrunedDeploys>,
    /// Their number.
    pub deploys_pruned: u64,
    /// Blobs deleted (would be, in a dry run).
    pub blobs_deleted: u64,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Unreferenced blobs still within the grace period.
    pub blobs_waiting: u64,
    /// Their bytes.
    pub bytes_waiting: u64,
    /// When the first of those becomes deletable (Unix milliseconds).
    pub next_deletable_at: Option<UnixMillis>,
    /// Blobs some deploy references.
    pub blobs_referenced: u64,
}

/// A site's retention setting.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Deploys kept per branch (the newest; older ones are pruned unless
    /// active, uploading or within the rollback depth). 0 keeps all.
    pub keep_deploys: u32,
}

/// The deploys `depth` successive rollbacks of a branch can reach, given
/// the branch's rollback walk (`MetaStore::rollback_walk`, the order repeated
/// plain rollbacks visit, one rule shared with `MetaStore::rollback`).
pub fn rollback_reachable(walk: &[DeployId], depth: u32) -> HashSet<DeployId> {
    walk.iter().take(depth as usize).cloned().collect()
}

/// Which deploys of one branch retention prunes: `deploys` newest first;
/// the newest `keep` complete ones are kept, with every failed or expired
/// one newer than the last of them; never one in `protected`, nor one
/// active or uploading.
pub fn retention_victims(
    deploys: &[(DeployId, DeployState)],
    keep: u32,
    protected: &HashSet<DeployId>,
) -> Vec<DeployId> {
    let mut kept_complete = 0u32;
    let mut out = Vec::new();
    for (id, state) in deploys {
        if kept_complete < keep {
            if state.is_complete() {
                kept_complete += 1;
            }
            continue;
        }
        if matches!(state, DeployState::Active | DeployState::Uploading) || protected.contains(id) {
            continue;
        }
        out.push(id.clone());
    }
    out
}

impl Control {
    /// Retention, then garbage collection, as of `now` (the clock is passed
    /// in so tests can step over the grace period). A dry run changes
    /// nothing and reports what a real pass at `now` would do.
    pub async fn collect_garbage(&self, now: UnixMillis, dry_run: bool) -> Result<GcReport, ApiError> {
        let _exclusive = self.gc_lock.write().await;
        let planned = self.retention_plan().await?;
        let planned_ids: Vec<DeployId> = planned.values().flatten().cloned().collect();
        let pruned = if dry_run || planned_ids.is_empty() {
            planned
        } else {
            let done: HashSet<DeployId> = self.meta.prune_deploys(&planned_ids).await?.into_iter().collect();
            if !done.is_empty() {
                let sites: BTreeSet<SiteName> = planned
                    .iter()
                    .filter(|(_, ids)| ids.iter().any(|d| done.contains(d)))
                    .map(|((s, _), _)| s.clone())
                    .collect();
                self.publish_routing(RoutingChange::Sites(sites.into_iter().collect())).await?;
            }
            planned
                .into_iter()
                .map(|(k, ids)| (k, ids.into_iter().filter(|d| done.contains(d)).collect::<Vec<_>>()))
                .filter(|(_, ids)| !ids.is_empty())
                .collect()
        };
        let deploys_pruned = pruned.values().map(Vec::len).sum::<usize>() as u64;
        for ((site, branch), ids) in &pruned {
            tracing::info!(site = %site, branch = %branch, deploys = ids.len(), dry_run, "retention pruned deploys");
        }

        // A dry run asks as if the planned deploys were gone.
        let excluding = if dry_run { planned_ids } else { Vec::new() };
        let referenced = self.referenced(&excluding).await?;
        let listed = self.blobs.list_sizes().await?;
        let grace = self.config.gc_grace.as_millis() as i64;
        let (mut deletable, mut waiting): (Vec<BlobInfo>, Vec<(BlobInfo, UnixMillis)>) = (Vec::new(), Vec::new());
        {
            let mut seen = self.gc_state.first_unreferenced.lock().expect("gc state");
            let mut next = HashMap::new();
            for b in listed.iter().filter(|b| !referenced.contains(&b.hash)) {
                let first = seen.get(&b.hash).copied().unwrap_or(now);
                next.insert(b.hash, first);
                // Young blobs wait too: one another process is still
                // working with (variants not recorded yet) is young.
                let since = first.max(b.stored_at);
                match since.saturating_add(grace) {
                    at if at <= now => deletable.push(*b),
                    at => waiting.push((*b, at)),
                }
            }
            if !dry_run {
                *seen = next;
            }
        }
        if !dry_run && !deletable.is_empty() {
            deletable = self.delete_blobs(deletable, now).await?;
        }
        let report = GcReport {
            dry_run,
            grace_seconds: self.config.gc_grace.as_secs(),
            rollback_depth: self.config.rollback_depth,
            pruned: pruned
                .into_iter()
                .map(|((site, branch), ids)| PrunedDeploys {
                    site: site.to_string(),
                    branch: branch.to_string(),
                    deploys: ids.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            deploys_pruned,
            blobs_deleted: deletable.len() as u64,
            bytes_deleted: deletable.iter().map(|b| b.size).sum(),
            blobs_waiting: waiting.len() as u64,
            bytes_waiting: waiting.iter().map(|(b, _)| b.size).sum(),
            next_deletable_at: waiting.iter().map(|(_, at)| *at).min(),
            blobs_referenced: listed.iter().filter(|b| referenced.contains(&b.hash)).count() as u64,
        };
        if !dry_run {
            let s = &self.gc_state;
            s.blobs_deleted.fetch_add(report.blobs_deleted, Ordering::Relaxed);
            s.bytes_deleted.fetch_add(report.bytes_deleted, Ordering::Relaxed);
            s.deploys_pruned.fetch_add(report.deploys_pruned, Ordering::Relaxed);
        }
        tracing::info!(
            dry_run,
            deploys_pruned = report.deploys_pruned,
            blobs_deleted = report.blobs_deleted,
            bytes_deleted = report.bytes_deleted,
            blobs_waiting = report.blobs_waiting,
            "garbage collection done"
        );
        Ok(report)
    }

    /// Every blob a deploy not in `excluding` references, with the variants
    /// this process made for deploys still uploading (recorded only at finalize).
    async fn referenced(&self, excluding: &[DeployId]) -> Result<HashSet<ContentHash>, ApiError> {
        let mut referenced = self.meta.referenced_blobs(excluding).await?;
        for made in self.unrecorded.lock().expect("unrecorded").values() {
            referenced.extend(made.iter().filter_map(|(_, _, v)| v.as_ref().map(|v| v.hash)));
        }
        Ok(referenced)
    }

    /// Marks `candidates` as being deleted, reads the references again, and
    /// deletes those still unreferenced (see the module's comment for why in
    /// this order). Returns the blobs deleted.
    async fn delete_blobs(&self, candidates: Vec<BlobInfo>, now: UnixMillis) -> Result<Vec<BlobInfo>, ApiError> {
        let hashes: Vec<ContentHash> = candidates.iter().map(|b| b.hash).collect();
        self.meta.mark_deleting(&hashes, now).await?;
        let result = async {
            let referenced = self.referenced(&[]).await?;
            let doomed: Vec<BlobInfo> = candidates.into_iter().filter(|b| !referenced.contains(&b.hash)).collect();
            let doomed_hashes: Vec<ContentHash> = doomed.iter().map(|b| b.hash).collect();
            self.meta.forget_variants(&doomed_hashes).await?;
            {
                let mut unrecorded = self.unrecorded.lock().expect("unrecorded");
                for h in &doomed_hashes {
                    unrecorded.remove(h);
                    for enc in Encoding::ALL {
                        self.recorded.remove(&(*h, enc));
                    }
                }
            }
            self.gc_state.first_unreferenced.lock().expect("gc state").retain(|h, _| !referenced.contains(h));
            for h in &doomed_hashes {
                // A cached store drops its cached copy too.
                self.blobs.delete(h).await?;
                self.gc_state.first_unreferenced.lock().expect("gc state").remove(h);
            }
            Ok::<_, ApiError>(doomed)
        }
        .await;
        // Cleared even after an error: a stale mark only makes deploys upload again.
        let cleared = self.meta.clear_deleting(&hashes).await;
        let doomed = result?;
        cleared?;
        Ok(doomed)
    }

    /// The deploys retention would prune now, per site and branch.
    async fn retention_plan(&self) -> Result<BTreeMap<(SiteName, BranchName), Vec<DeployId>>, ApiError> {
        let mut out = BTreeMap::new();
        for (site, keep) in self.meta.all_keep_deploys().await? {
            if keep == 0 {
                continue;
            }
            let mut by_branch: BTreeMap<BranchName, Vec<(DeployId, DeployState)>> = BTreeMap::new();
            for d in self.meta.list_deploys(&site, None).await? {
                by_branch.entry(d.branch).or_default().push((d.id, d.state));
            }
            for (branch, deploys) in by_branch {
                if deploys.len() <= keep as usize {
                    continue;
                }
                let walk = self.meta.rollback_walk(&site, &branch).await?;
                let protected = rollback_reachable(&walk, self.config.rollback_depth);
                let victims = retention_victims(&deploys, keep, &protected);
                if !victims.is_empty() {
                    out.insert((site.clone(), branch), victims);
                }
            }
        }
        Ok(out)
    }

    /// Sets how many deploys per branch a site keeps (0: all); pruning
    /// happens at the next garbage collection.
    pub async fn set_retention(&self, site: &SiteName, keep: u32) -> Result<Retention, ApiError> {
        self.site(site).await?;
        if keep > MAX_KEEP_DEPLOYS {
            let msg = format!("keep_deploys is {keep}; the most is {MAX_KEEP_DEPLOYS} (0 keeps every deploy)");
            return Err(chanto_core::ValidationError::new("keep_deploys", msg).into());
        }
        self.meta.set_keep_deploys(site, keep).await?;
        tracing::info!(site = %site, keep_deploys = keep, "retention set");
        Ok(Retention { keep_deploys: keep })
    }

    /// A site's retention setting.
    pub async fn retention(&self, site: &SiteName) -> Result<Retention, ApiError> {
        self.site(site).await?;
        let all = self.meta.all_keep_deploys().await?;
        Ok(Retention { keep_deploys: all.into_iter().find(|(s, _)| s == site).map(|(_, k)| k).unwrap_or(0) })
    }
}

/// A garbage collection request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// `true`: report what would go, change nothing. Required, so a bare
    /// `POST` never deletes by accident.
    pub dry_run: bool,
}

#[utoipa::path(post, path = "/api/v1/gc", tag = "storage", security(("token" = [])), request_body = GcRequest,
    responses((status = 200, body = GcReport), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "dry_run missing or not a boolean")))]
pub(crate) async fn run_gc(
    axum::extract::State(c): axum::extract::State<std::sync::Arc<Control>>,
    crate::api::ApiJson(req): crate::api::ApiJson<GcRequest>,
) -> Result<axum::Json<GcReport>, ApiError> {
    Ok(axum::Json(c.collect_garbage(chanto_store::now_millis(), req.dry_run).await?))
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/retention", tag = "storage", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")),
    responses((status = 200, body = Retention), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_retention(
    axum::extract::State(c): axum::extract::State<std::sync::Arc<Control>>,
    axum::extract::Path(site): axum::extract::Path<String>,
) -> Result<axum::Json<Retention>, ApiError> {
    Ok(axum::Json(c.retention(&site.parse()?).await?))
}

#[utoipa::path(put, path = "/api/v1/sites/{site}/retention", tag = "storage", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")), request_body = Retention,
    responses((status = 200, body = Retention), (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "keep_deploys negative, too large or not a number")))]
pub(crate) async fn put_retention(
    axum::extract::State(c): axum::extract::State<std::sync::Arc<Control>>,
    axum::extract::Path(site): axum::extract::Path<String>,
    crate::api::ApiJson(req): crate::api::ApiJson<Retention>,
) -> Result<axum::Json<Retention>, ApiError> {
    Ok(axum::Json(c.set_retention(&site.parse()?, req.keep_deploys).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> DeployId {
        DeployId::from_random([n; 8])
    }

    fn ids(ns: &[u8]) -> Vec<DeployId> {
        ns.iter().map(|n| id(*n)).collect()
    }

    fn set(ns: &[u8]) -> HashSet<DeployId> {
        ns.iter().map(|n| id(*n)).collect()
    }

    #[test]
    fn rollback_reach_is_the_first_steps_of_the_walk() {
        let walk = ids(&[3, 2, 1]);
        for (depth, want) in [(0, &[][..]), (1, &[3][..]), (2, &[3, 2][..]), (9, &[3, 2, 1][..])] {
            assert_eq!(rollback_reachable(&walk, depth), set(want), "depth {depth}");
        }
        assert!(rollback_reachable(&[], 5).is_empty());
    }

    #[test]
    fn retention_keeps_the_newest_and_the_protected() {
        use DeployState::*;
        let d = |n: u8, s: DeployState| (id(n), s);
        let deploys = vec![
            d(9, Uploading),
            d(8, Failed),
            d(7, Active),
            d(6, Superseded),
            d(5, Ready),
            d(4, Expired),
            d(3, Superseded),
        ];
        // Keep 2 complete (7 and 6); 9 and 8 are newer than them; 5, 4, 3 go.
        assert_eq!(retention_victims(&deploys, 2, &HashSet::new()), ids(&[5, 4, 3]));
        // Protected (rollback reach) stays.
        assert_eq!(retention_victims(&deploys, 2, &set(&[3])), ids(&[5, 4]));
        // An old deploy that is active (published again) stays.
        let deploys = vec![d(3, Superseded), d(2, Superseded), d(1, Active)];
        assert_eq!(retention_victims(&deploys, 1, &HashSet::new()), ids(&[2]));
        // An uploading deploy is never pruned, however old.
        let deploys = vec![d(3, Active), d(2, Superseded), d(1, Uploading)];
        assert_eq!(retention_victims(&deploys, 1, &HashSet::new()), ids(&[2]));
        assert!(retention_victims(&deploys, 10, &HashSet::new()).is_empty());
    }
}

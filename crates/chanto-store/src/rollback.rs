//! The rollback walk: which deploys successive `chanto rollback`s reach on a
//! branch. One pure function over the branch's activation history, shared by
//! every metadata backend (and by anything that must keep those deploys, such
//! as retention), so they cannot disagree about what "roll back" means.

/// One row of a branch's activation history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The deploy that went live.
    pub deploy: String,
    /// Whether a rollback (rather than a deploy or publish) made it live.
    pub rollback: bool,
    /// Whether the deploy still exists and is complete (ready, active or
    /// superseded): only those can go live again.
    pub complete: bool,
}

/// The deploys that successive plain rollbacks reach from `current`, in the
/// order they reach them.
///
/// The rule users expect: a rollback returns to whatever was live before the
/// current deploy, and each further rollback steps one further back. The
/// walk starts at the last deploy or publish (the newest entry that is not a
/// rollback) and lists the deploys that were live before it, most recently
/// live first, each once, that deploy itself left out. Rollbacks only move
/// along that list: after rolling back to its n-th deploy, the next rollback
/// goes to the (n+1)-th. So after "rollback, then publish", a rollback goes
/// to what was live just before the publish (not to the deploy rolled away
/// from), and repeating it keeps walking back; a publish starts a new walk.
/// A current deploy that is not on the list (a `--to` jump elsewhere) walks
/// from the list's start. Deploys no longer complete are skipped.
pub fn rollback_walk(history: &[HistoryEntry], current: &str) -> Vec<String> {
    let Some(start) = history.iter().rposition(|e| !e.rollback) else { return Vec::new() };
    let started_by = history[start].deploy.as_str();
    let mut walk: Vec<&HistoryEntry> = Vec::new();
    for e in history[..start].iter().rev() {
        if e.deploy != started_by && !walk.iter().any(|w| w.deploy == e.deploy) {
            walk.push(e);
        }
    }
    let from = walk.iter().position(|e| e.deploy == current).map_or(0, |i| i + 1);
    walk[from..].iter().filter(|e| e.complete && e.deploy != current).map(|e| e.deploy.clone()).collect()
}

/// The deploys of one branch that a rollback took off the air: each was live,
/// the activation that replaced it was a rollback, and it has not been live
/// since. `chanto deploys list` calls them "rolled back" (the rest of the
/// deploys that were once live are "previous").
///
/// `history` is the branch's activations, oldest first: each row is the
/// deploy that went live then, so the row after a deploy's last row is the
/// activation that moved the branch away from it. The live deploy (the last
/// row) is never listed. A deploy rolled away from and later published or
/// rolled back to again counts from its newest time live: a later deploy
/// superseding it makes it "previous", a later rollback "rolled back".
/// Deploys retention pruned have no rows left (`prune_deploys` deletes them),
/// so the row after a deploy can be a rollback away from a pruned deploy that
/// replaced it; that deploy is then listed too (only possible when a newer
/// deploy was pruned while an older one of the same branch was kept).
pub fn rolled_back(history: &[HistoryEntry]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    // Newest first, so each deploy is judged by its newest row.
    for (i, e) in history.iter().enumerate().rev() {
        if seen.contains(&e.deploy.as_str()) {
            continue;
        }
        seen.push(&e.deploy);
        if e.complete && history.get(i + 1).is_some_and(|next| next.rollback) {
            out.push(e.deploy.clone());
        }
    }
    out
}

/// Checks that `rollback --to` may make `to` live on `branch`: a complete
/// deploy of that branch that is not already live.
pub(crate) fn check_target(
    to: &crate::DeployRecord,
    branch: &chanto_core::BranchName,
    active: &str,
) -> Result<(), crate::StoreError> {
    use crate::StoreError::Conflict;
    if &to.branch != branch {
        return Err(Conflict(format!(
            "deploy {} is a deploy of branch {}, not {branch}; roll back branch {} with --branch {}",
            to.id, to.branch, to.branch, to.branch
        )));
    }
    if to.id.as_str() == active {
        return Err(Conflict(format!("deploy {} is already live on {branch}", to.id)));
    }
    if !to.state.is_complete() {
        return Err(Conflict(format!("deploy {} is {}; only a complete deploy can go live", to.id, to.state)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// History from a compact script: `d1` a deploy, `r:d1` a rollback to d1,
    /// `x:d1` a deploy since deleted.
    fn h(script: &str) -> Vec<HistoryEntry> {
        script
            .split_whitespace()
            .map(|s| {
                let (rollback, complete, d) = match s.split_once(':') {
                    Some(("r", d)) => (true, true, d),
                    Some(("x", d)) => (false, false, d),
                    _ => (false, true, s),
                };
                HistoryEntry { deploy: d.to_owned(), rollback, complete }
            })
            .collect()
    }

    fn walk(script: &str, current: &str) -> Vec<String> {
        rollback_walk(&h(script), current)
    }

    #[test]
    fn walks_back_one_deploy_per_rollback() {
        assert_eq!(walk("d1 d2 d3", "d3"), ["d2", "d1"]);
        assert_eq!(walk("d1 d2 d3 r:d2", "d2"), ["d1"]);
        assert!(walk("d1 d2 d3 r:d2 r:d1", "d1").is_empty());
        assert!(walk("d1", "d1").is_empty());
        assert!(walk("", "d1").is_empty());
    }

    #[test]
    fn after_rollback_then_publish_the_walk_goes_on() {
        // The report in #20: roll back, publish a fix, roll back twice.
        assert_eq!(walk("d1 d2 r:d1 d3", "d3"), ["d1", "d2"]);
        assert_eq!(walk("d1 d2 r:d1 d3 r:d1", "d1"), ["d2"]);
        // Walk all the way down, publish the newest again, walk again.
        assert_eq!(walk("d1 d2 d3 r:d2 r:d1 d3", "d3"), ["d1", "d2"]);
        // Publishing an older deploy: back to what was live before it.
        assert_eq!(walk("d1 d2 d3 d1", "d1"), ["d3", "d2"]);
    }

    #[test]
    fn a_jump_elsewhere_walks_from_the_start() {
        assert_eq!(walk("d1 d2 d3 d4 r:d2", "d2"), ["d1"], "--to d2 continues below it");
        assert_eq!(walk("d1 d2 d3 r:d9", "d9"), ["d2", "d1"], "a deploy off the list");
    }

    fn rolled(script: &str) -> Vec<String> {
        let mut r = rolled_back(&h(script));
        r.sort();
        r
    }

    #[test]
    fn rolled_back_is_what_a_rollback_left_and_nothing_revived() {
        assert!(rolled("").is_empty());
        assert!(rolled("d1 d2 d3").is_empty(), "superseded by deploys: previous, not rolled back");
        assert_eq!(rolled("d1 d2 d3 r:d2"), ["d3"]);
        assert_eq!(rolled("d1 d2 d3 r:d2 r:d1"), ["d2", "d3"]);
        // Published again: live, then superseded by a deploy (previous).
        assert_eq!(rolled("d1 d2 d3 r:d2 r:d1 d3"), ["d2"]);
        assert_eq!(rolled("d1 d2 r:d1 d2"), Vec::<String>::new());
        assert!(rolled("d1 d2 r:d1 d2 d3").is_empty());
        // Rolled back to, then rolled away from again.
        assert_eq!(rolled("d1 d2 r:d1 d3 r:d1"), ["d2", "d3"]);
        assert_eq!(rolled("d1 d2 d3 r:d1 r:d3"), ["d1"], "--to forward: d1 was rolled away from");
        // The live deploy is never "rolled back", whatever came before.
        assert!(!rolled("d1 d2 r:d1").contains(&"d1".to_owned()));
        // Deleted deploys are not listed.
        assert!(rolled("d1 x:d2 r:d1").is_empty());
    }

    #[test]
    fn deleted_deploys_are_skipped() {
        assert_eq!(walk("d1 x:d2 d3", "d3"), ["d1"]);
    }
}

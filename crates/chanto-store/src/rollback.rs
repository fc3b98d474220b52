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

    #[test]
    fn deleted_deploys_are_skipped() {
        assert_eq!(walk("d1 x:d2 d3", "d3"), ["d1"]);
    }
}

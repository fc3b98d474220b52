//! A deploy plan: what making a deploy the production one would change, file by file and rule by rule, against
//! the deploy production serves now. Pure: the caller loads both sides and renders the plan
//! ([`crate::pr_comment`] shows it on a pull request).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// One file of a deploy, as the plan compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanFile {
    /// Path of the file in the deploy, e.g. `blog/index.html`.
    pub path: String,
    /// Content hash; two files with the same path, hash and size are the same file.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
}

/// One side of the comparison: its files (any order) and its rules, each rendered by the caller as one line (e.g.
/// `redirect /old /new 301`, `header /* X-Frame-Options: DENY`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanSide {
    /// The deploy's files, in any order. When a path appears more than once, the last one counts.
    pub files: Vec<PlanFile>,
    /// The deploy's rules, one line each.
    pub rules: Vec<String>,
}

/// What replacing production's deploy by another would change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeployPlan {
    /// Files only in the new deploy, sorted by path (`old_size` is `None`).
    pub added: Vec<PlanChange>,
    /// Files in both whose hash or size differ, sorted by path.
    pub changed: Vec<PlanChange>,
    /// Files only in production, sorted by path (`new_size` is `None`).
    pub removed: Vec<PlanChange>,
    /// How many files are identical (same path, hash and size) on both sides.
    pub unchanged: u64,
    /// Sizes of the added files plus the growth of the changed files that grew.
    pub bytes_added: u64,
    /// Sizes of the removed files plus the shrinkage of the changed files that shrank.
    pub bytes_removed: u64,
    /// Rule lines of the new deploy that production lacks (a multiset difference, in the new deploy's order).
    pub rules_added: Vec<String>,
    /// Rule lines of production that the new deploy lacks (a multiset difference, in production's order).
    pub rules_removed: Vec<String>,
}

/// One file that the plan adds, changes or removes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanChange {
    /// Path of the file.
    pub path: String,
    /// Its size in production, when it is there.
    pub old_size: Option<u64>,
    /// Its size in the new deploy, when it is there.
    pub new_size: Option<u64>,
}

impl DeployPlan {
    /// Whether the plan changes nothing: no file added, changed or removed, and no rule added or removed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.rules_added.is_empty()
            && self.rules_removed.is_empty()
    }

    /// How many files the plan adds, changes or removes.
    pub(crate) fn files_touched(&self) -> usize {
        self.added.len() + self.changed.len() + self.removed.len()
    }
}

/// Compares `head` (the deploy to publish) with `base`, production's active deploy (`None` when production has
/// none: then every file and rule is added).
///
/// Files are matched by path and are the same when hash and size both match. When a side lists a path more than
/// once, the last entry wins. Rules are compared as multisets of lines: a line repeated twice in `head` but once in
/// `base` is added once; a change of order alone is not reported. Runs in O(n log n).
pub fn deploy_plan(base: Option<&PlanSide>, head: &PlanSide) -> DeployPlan {
    let empty = PlanSide::default();
    let base = base.unwrap_or(&empty);
    let old = by_path(&base.files);
    let new = by_path(&head.files);
    let mut plan = DeployPlan::default();

    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let order = match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => o.path.cmp(&n.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let o = old[i];
                plan.bytes_removed = plan.bytes_removed.saturating_add(o.size);
                plan.removed.push(PlanChange { path: o.path.clone(), old_size: Some(o.size), new_size: None });
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = new[j];
                plan.bytes_added = plan.bytes_added.saturating_add(n.size);
                plan.added.push(PlanChange { path: n.path.clone(), old_size: None, new_size: Some(n.size) });
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (o, n) = (old[i], new[j]);
                if o.hash == n.hash && o.size == n.size {
                    plan.unchanged += 1;
                } else {
                    if n.size >= o.size {
                        plan.bytes_added = plan.bytes_added.saturating_add(n.size - o.size);
                    } else {
                        plan.bytes_removed = plan.bytes_removed.saturating_add(o.size - n.size);
                    }
                    plan.changed.push(PlanChange {
                        path: n.path.clone(),
                        old_size: Some(o.size),
                        new_size: Some(n.size),
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }

    plan.rules_added = multiset_minus(&head.rules, &base.rules);
    plan.rules_removed = multiset_minus(&base.rules, &head.rules);
    plan
}

/// The files sorted by path, one per path: the last listed wins.
fn by_path(files: &[PlanFile]) -> Vec<&PlanFile> {
    let mut map: BTreeMap<&str, &PlanFile> = BTreeMap::new();
    for f in files {
        map.insert(&f.path, f);
    }
    map.into_values().collect()
}

/// The lines of `a` left after taking away each line of `b` once, in `a`'s order.
fn multiset_minus(a: &[String], b: &[String]) -> Vec<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in b {
        *counts.entry(line).or_default() += 1;
    }
    a.iter()
        .filter(|line| match counts.get_mut(line.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, hash: &str, size: u64) -> PlanFile {
        PlanFile { path: path.into(), hash: hash.into(), size }
    }

    fn side(files: &[(&str, &str, u64)], rules: &[&str]) -> PlanSide {
        PlanSide {
            files: files.iter().map(|(p, h, s)| file(p, h, *s)).collect(),
            rules: rules.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn change(path: &str, old: Option<u64>, new: Option<u64>) -> PlanChange {
        PlanChange { path: path.into(), old_size: old, new_size: new }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_production_deploy_adds_everything() {
        let head = side(&[("b.css", "h2", 20), ("a.html", "h1", 10)], &["redirect /a /b 301"]);
        let plan = deploy_plan(None, &head);
        assert_eq!(plan.added, vec![change("a.html", None, Some(10)), change("b.css", None, Some(20))]);
        assert!(plan.changed.is_empty() && plan.removed.is_empty());
        assert_eq!((plan.unchanged, plan.bytes_added, plan.bytes_removed), (0, 30, 0));
        assert_eq!(plan.rules_added, strings(&["redirect /a /b 301"]));
        assert!(plan.rules_removed.is_empty());
        assert!(!plan.is_empty());
        // An empty production deploy is the same as none.
        assert_eq!(deploy_plan(Some(&PlanSide::default()), &head), plan);
    }

    #[test]
    fn empty_against_empty_and_identical_sides() {
        let plan = deploy_plan(None, &PlanSide::default());
        assert_eq!(plan, DeployPlan::default());
        assert!(plan.is_empty());

        let s = side(&[("a", "1", 1), ("b", "2", 2)], &["header /* X: y", "redirect /a /b"]);
        let mut shuffled = s.clone();
        shuffled.files.reverse();
        shuffled.rules.reverse();
        let plan = deploy_plan(Some(&s), &shuffled);
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.unchanged, 2);
        assert_eq!((plan.bytes_added, plan.bytes_removed), (0, 0));
    }

    #[test]
    fn add_change_remove_and_bytes() {
        let base = side(
            &[("same", "s", 5), ("grow", "g1", 100), ("shrink", "k1", 300), ("gone", "x", 40), ("rehash", "r1", 7)],
            &[],
        );
        let head = side(
            &[("same", "s", 5), ("grow", "g2", 150), ("shrink", "k2", 200), ("new", "n", 9), ("rehash", "r2", 7)],
            &[],
        );
        let plan = deploy_plan(Some(&base), &head);
        assert_eq!(plan.added, vec![change("new", None, Some(9))]);
        assert_eq!(
            plan.changed,
            vec![
                change("grow", Some(100), Some(150)),
                change("rehash", Some(7), Some(7)),
                change("shrink", Some(300), Some(200)),
            ]
        );
        assert_eq!(plan.removed, vec![change("gone", Some(40), None)]);
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.bytes_added, 9 + 50);
        assert_eq!(plan.bytes_removed, 40 + 100);
        // Same hash, different size (a broken store) still counts as a change.
        let plan = deploy_plan(Some(&side(&[("a", "h", 1)], &[])), &side(&[("a", "h", 2)], &[]));
        assert_eq!(plan.changed, vec![change("a", Some(1), Some(2))]);
    }

    #[test]
    fn rules_are_a_multiset_difference() {
        // (base, head, added, removed)
        type Lines<'a> = &'a [&'a str];
        let cases: &[(Lines, Lines, Lines, Lines)] = &[
            (&["a", "b"], &["a", "b"], &[], &[]),
            (&["a"], &["a", "a"], &["a"], &[]),
            (&["a", "a", "b"], &["b", "a"], &[], &["a"]),
            (&["x", "y"], &["z", "y", "w"], &["z", "w"], &["x"]),
            (&["b", "a"], &["a", "b"], &[], &[]),
            (&[], &["c", "a", "c"], &["c", "a", "c"], &[]),
        ];
        for (base, head, added, removed) in cases {
            let plan = deploy_plan(Some(&side(&[], base)), &side(&[], head));
            assert_eq!(plan.rules_added, strings(added), "{base:?} -> {head:?}");
            assert_eq!(plan.rules_removed, strings(removed), "{base:?} -> {head:?}");
            assert_eq!(plan.is_empty(), added.is_empty() && removed.is_empty());
        }
    }

    #[test]
    fn duplicate_paths_last_one_wins() {
        let base = side(&[("a", "old", 1), ("a", "cur", 2)], &[]);
        let head = side(&[("a", "cur", 2), ("b", "1", 1), ("b", "2", 3)], &[]);
        let plan = deploy_plan(Some(&base), &head);
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.added, vec![change("b", None, Some(3))]);
        assert!(plan.changed.is_empty() && plan.removed.is_empty());
        assert_eq!(plan.files_touched(), 1);
    }

    #[test]
    fn huge_sizes_saturate() {
        let plan = deploy_plan(None, &side(&[("a", "1", u64::MAX), ("b", "2", u64::MAX)], &[]));
        assert_eq!(plan.bytes_added, u64::MAX);
    }

    #[test]
    fn serialises() {
        let plan = deploy_plan(None, &side(&[("a", "1", 3)], &[]));
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(v["added"][0], serde_json::json!({ "path": "a", "old_size": null, "new_size": 3 }));
        assert_eq!(v["unchanged"], 0);
    }

    /// The plan at scale is exact; how long it takes is measured by
    /// `cargo bench -p chanto-notify --bench plan`, not asserted here.
    #[test]
    fn hundred_thousand_files_are_planned_exactly() {
        let n = 100_000u64;
        let base: Vec<PlanFile> = (0..n).map(|i| file(&format!("dir{}/file{i}.html", i % 97), "h", i)).collect();
        let mut head: Vec<PlanFile> = base.iter().rev().cloned().collect();
        // Change every 10th, drop every 7th, add 1000 new.
        for (k, f) in head.iter_mut().enumerate() {
            if k % 10 == 0 {
                f.hash = "h2".into();
            }
        }
        head.retain(|f| f.size % 7 != 0);
        head.extend((0..1000).map(|i| file(&format!("new/{i}"), "n", 1)));
        let plan =
            deploy_plan(Some(&PlanSide { files: base, rules: vec![] }), &PlanSide { files: head, rules: vec![] });
        assert_eq!(plan.added.len(), 1000);
        assert_eq!(plan.removed.len() as u64, n.div_ceil(7));
        assert_eq!(plan.added.len() + plan.changed.len() + plan.unchanged as usize, 100_000 - 14_286 + 1000);
        assert!(plan.added.windows(2).all(|w| w[0].path < w[1].path));
        assert!(plan.changed.windows(2).all(|w| w[0].path < w[1].path));
    }
}

//! Subscription filters: which events, on which branches (glob patterns), a site's subscriber wants to hear about.

use serde::{Deserialize, Serialize};

use crate::error::preview;
use crate::{Error, Event, EventKind};

/// Longest branch pattern accepted, in bytes (git refs are rarely longer than 255).
pub const MAX_PATTERN_LEN: usize = 255;

/// A validated subscription filter. Deserialises from `{"events": [...], "branches": [...]}` (both optional,
/// unknown keys refused), validating like [`Filter::new`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFilter")]
pub struct Filter {
    events: Vec<EventKind>,
    branches: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    events: Vec<EventKind>,
    #[serde(default)]
    branches: Vec<String>,
}

impl TryFrom<RawFilter> for Filter {
    type Error = Error;

    fn try_from(raw: RawFilter) -> Result<Self, Error> {
        Filter::new(raw.events, raw.branches)
    }
}

impl Filter {
    /// A filter for `events` (empty: every event) on branches matching any of `branches` (empty: every branch).
    ///
    /// Patterns are the same globs as `git connect --include` (`chanto_build::glob_matches`): `*` matches within one
    /// path segment (not `/`), `**` matches anything including `/` (`**/x` also matches `x`),
    /// `?` matches one character other than `/`; everything else matches itself. So `feature/*` matches
    /// `feature/login` but not `feature/a/b`, and `release/**` matches both `release/1.0` and `release/1/rc`.
    /// Duplicate events are dropped and events are kept sorted.
    pub fn new(mut events: Vec<EventKind>, branches: Vec<String>) -> Result<Self, Error> {
        events.sort();
        events.dedup();
        for (index, pattern) in branches.iter().enumerate() {
            if let Some(reason) = pattern_problem(pattern) {
                return Err(Error::BadBranchPattern { index, pattern: preview(pattern), reason });
            }
        }
        Ok(Filter { events, branches })
    }

    /// A filter matching every event on every branch.
    pub fn all() -> Self {
        Filter::default()
    }

    /// The events this filter lets through (empty: all).
    pub fn events(&self) -> &[EventKind] {
        &self.events
    }

    /// The branch patterns (empty: all branches).
    pub fn branches(&self) -> &[String] {
        &self.branches
    }

    /// Whether a subscriber with this filter is told about `e`.
    pub fn matches(&self, e: &Event) -> bool {
        let event_ok = self.events.is_empty() || self.events.contains(&e.kind);
        event_ok && (self.branches.is_empty() || self.branches.iter().any(|p| chanto_build::glob_matches(p, &e.branch)))
    }
}

/// Why a branch pattern cannot be used, as the end of an error message, or `None` if it can.
fn pattern_problem(pattern: &str) -> Option<&'static str> {
    if pattern.is_empty() {
        return Some("is empty; remove it (an empty `branches` list already means every branch)");
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Some("is longer than 255 bytes; shorten it, using `*` or `**` for the varying part");
    }
    if pattern.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Some("contains whitespace or a control character, which git branch names cannot; remove it");
    }
    if pattern.contains(['[', ']', '\\', '~', '^', ':']) {
        return Some(
            "contains one of `[ ] \\ ~ ^ :`, which git branch names cannot; only `*`, `**` and `?` are special",
        );
    }
    if pattern.contains("***") {
        return Some("has three `*` in a row; use `*` (within a segment) or `**` (across `/`)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::event;

    #[test]
    fn glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("main", "main", true),
            ("main", "mainline", false),
            ("*", "main", true),
            ("*", "feature/x", false),
            ("**", "feature/x/y", true),
            ("**", "", true),
            ("feature/*", "feature/login", true),
            ("feature/*", "feature/a/b", false),
            ("feature/*", "feature/", true),
            ("release/**", "release/1/rc", true),
            ("release/**", "release", false),
            ("**/hotfix", "a/b/hotfix", true),
            ("**/hotfix", "hotfix", true),
            ("v?.?", "v1.2", true),
            ("v?.?", "v1.23", false),
            ("a?c", "a/c", false),
            ("*-preview", "pr-12-preview", true),
            ("dépôt-*", "dépôt-1", true),
            ("a*b*c*d", "aXbYcZd", true),
            ("a*b*c*d", "aXbYcZ", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(chanto_build::glob_matches(pattern, text), *want, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn new_refuses_bad_patterns() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("feature x", "whitespace"),
            ("[ab]", "`[ ] \\ ~ ^ :`"),
            ("a***", "three `*`"),
            (&"x".repeat(256), "longer than 255"),
        ];
        for (pattern, want) in cases {
            let err = Filter::new(vec![], vec!["main".into(), pattern.to_string()]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("branches[1] "), "{msg}");
            assert!(msg.contains(want), "{pattern:?}: {msg}");
            assert_eq!(err.status(), 422);
        }
    }

    #[test]
    fn matches_events_and_branches() {
        let f = Filter::new(
            vec![EventKind::BuildFailed, EventKind::DeployActivated, EventKind::BuildFailed],
            vec!["main".into(), "release/**".into()],
        )
        .unwrap();
        assert_eq!(f.events(), &[EventKind::BuildFailed, EventKind::DeployActivated]);
        let mut e = event(EventKind::BuildFailed);
        assert!(f.matches(&e));
        e.branch = "release/2/rc".into();
        assert!(f.matches(&e));
        e.branch = "feature/x".into();
        assert!(!f.matches(&e));
        e.branch = "main".into();
        e.kind = EventKind::BuildSucceeded;
        assert!(!f.matches(&e));
        assert!(Filter::all().matches(&e));
    }

    #[test]
    fn certificate_events_reach_every_event_subscriptions_and_explicit_lists_only() {
        let e = crate::fixtures::certificate(EventKind::CertificateFailed);
        assert!(Filter::all().matches(&e), "a subscription to every event hears of certificates");
        let builds = Filter::new(vec![EventKind::BuildFailed, EventKind::DeployActivated], vec![]).unwrap();
        assert!(!builds.matches(&e), "an explicit list gets only what it lists");
        let certs: Filter = serde_json::from_str(r#"{"events": ["certificate.failed"]}"#).unwrap();
        assert!(certs.matches(&e));
        assert!(!certs.matches(&crate::fixtures::certificate(EventKind::CertificateExpiring)));
        // The branch is the one the domain serves: branch filters apply as to any event.
        let main_only = Filter::new(vec![], vec!["main".into()]).unwrap();
        assert!(main_only.matches(&e));
        assert!(!main_only.matches(&Event { branch: "staging".into(), ..e }));
    }

    #[test]
    fn deserialises_with_validation() {
        let f: Filter = serde_json::from_str(r#"{"events": ["build.failed"], "branches": ["main"]}"#).unwrap();
        assert_eq!(f.events(), &[EventKind::BuildFailed]);
        assert_eq!(serde_json::from_str::<Filter>("{}").unwrap(), Filter::all());
        let err = serde_json::from_str::<Filter>(r#"{"branches": [""]}"#).unwrap_err().to_string();
        assert!(err.contains("branches[0]"), "{err}");
        let err = serde_json::from_str::<Filter>(r#"{"event": []}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `event`"), "{err}");
        let err = serde_json::from_str::<Filter>(r#"{"events": ["build.exploded"]}"#).unwrap_err().to_string();
        assert!(err.contains("build.exploded"), "{err}");
        let back: Filter = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}

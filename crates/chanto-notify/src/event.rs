//! The event model every channel renders: what happened to which site, branch and build, with its links.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// What happened. Serialised (in webhook bodies and stored filters) as the dotted name of [`EventKind::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// A build was queued (by a push, a pull request or by hand).
    #[serde(rename = "build.queued")]
    BuildQueued,
    /// A runner started the build.
    #[serde(rename = "build.started")]
    BuildStarted,
    /// The build finished and its output was uploaded as a deploy.
    #[serde(rename = "build.succeeded")]
    BuildSucceeded,
    /// The build failed; `error` says why.
    #[serde(rename = "build.failed")]
    BuildFailed,
    /// The build was cancelled before it finished.
    #[serde(rename = "build.cancelled")]
    BuildCancelled,
    /// A deploy is finalised and can be served.
    #[serde(rename = "deploy.ready")]
    DeployReady,
    /// A deploy became the one served for its branch.
    #[serde(rename = "deploy.activated")]
    DeployActivated,
    /// A branch was pointed back at an earlier deploy.
    #[serde(rename = "deploy.rolled_back")]
    DeployRolledBack,
    /// A pull-request preview is being served.
    #[serde(rename = "preview.ready")]
    PreviewReady,
    /// A pull-request preview was removed (the pull request closed).
    #[serde(rename = "preview.removed")]
    PreviewRemoved,
}

/// How an event reads at a glance; decides colours and badge statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Something worked (green).
    Success,
    /// Something failed (red).
    Failure,
    /// Neither good nor bad: cancelled, rolled back, removed (grey).
    Neutral,
    /// Work in progress (yellow).
    Pending,
}

impl Outcome {
    /// The colour as `#rrggbb`, the same as the status badge's.
    pub fn color_hex(self) -> &'static str {
        match self {
            Outcome::Success => "#44cc11",
            Outcome::Failure => "#e05d44",
            Outcome::Neutral => "#9f9f9f",
            Outcome::Pending => "#dfb317",
        }
    }

    /// The colour as a `0xRRGGBB` integer, as Discord wants it.
    pub fn color_rgb(self) -> u32 {
        match self {
            Outcome::Success => 0x44cc11,
            Outcome::Failure => 0xe05d44,
            Outcome::Neutral => 0x9f9f9f,
            Outcome::Pending => 0xdfb317,
        }
    }
}

/// Every event name, for error messages.
pub(crate) const EVENT_NAMES: &str = "build.queued, build.started, build.succeeded, build.failed, build.cancelled, \
    deploy.ready, deploy.activated, deploy.rolled_back, preview.ready, preview.removed";

impl EventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [EventKind; 10] = [
        EventKind::BuildQueued,
        EventKind::BuildStarted,
        EventKind::BuildSucceeded,
        EventKind::BuildFailed,
        EventKind::BuildCancelled,
        EventKind::DeployReady,
        EventKind::DeployActivated,
        EventKind::DeployRolledBack,
        EventKind::PreviewReady,
        EventKind::PreviewRemoved,
    ];

    /// The stable dotted name, e.g. `build.succeeded`: used in webhook bodies, filters and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BuildQueued => "build.queued",
            EventKind::BuildStarted => "build.started",
            EventKind::BuildSucceeded => "build.succeeded",
            EventKind::BuildFailed => "build.failed",
            EventKind::BuildCancelled => "build.cancelled",
            EventKind::DeployReady => "deploy.ready",
            EventKind::DeployActivated => "deploy.activated",
            EventKind::DeployRolledBack => "deploy.rolled_back",
            EventKind::PreviewReady => "preview.ready",
            EventKind::PreviewRemoved => "preview.removed",
        }
    }

    /// A short human title, e.g. `Build succeeded`.
    pub fn title(self) -> &'static str {
        match self {
            EventKind::BuildQueued => "Build queued",
            EventKind::BuildStarted => "Build started",
            EventKind::BuildSucceeded => "Build succeeded",
            EventKind::BuildFailed => "Build failed",
            EventKind::BuildCancelled => "Build cancelled",
            EventKind::DeployReady => "Deploy ready",
            EventKind::DeployActivated => "Deploy activated",
            EventKind::DeployRolledBack => "Deploy rolled back",
            EventKind::PreviewReady => "Preview ready",
            EventKind::PreviewRemoved => "Preview removed",
        }
    }

    /// How the event reads at a glance.
    pub fn outcome(self) -> Outcome {
        match self {
            EventKind::BuildQueued | EventKind::BuildStarted => Outcome::Pending,
            EventKind::BuildSucceeded
            | EventKind::DeployReady
            | EventKind::DeployActivated
            | EventKind::PreviewReady => Outcome::Success,
            EventKind::BuildFailed => Outcome::Failure,
            EventKind::BuildCancelled | EventKind::DeployRolledBack | EventKind::PreviewRemoved => Outcome::Neutral,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = Error;

    /// Accepts exactly the dotted names of [`EventKind::as_str`].
    fn from_str(s: &str) -> Result<Self, Error> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::UnknownEvent { name: crate::error::preview(s) })
    }
}

/// Links an event points at. Every one is an absolute `http(s)` URL made by chanto; channels drop any that is not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventUrls {
    /// Where the branch is served (moves with the branch), e.g. `https://main.site.example.org/`.
    #[serde(default)]
    pub branch: Option<String>,
    /// Where this very deploy is served, forever.
    #[serde(default)]
    pub permalink: Option<String>,
    /// The build log in the console.
    #[serde(default)]
    pub log: Option<String>,
}

/// One thing that happened to a site. Serialised as the `event` object of the webhook body ([`crate::webhook_body`]);
/// every field is always present, absent values as `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id of this event; the same on every redelivery, so receivers can drop duplicates.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// When it happened, in milliseconds since the Unix epoch (UTC).
    pub at_ms: i64,
    /// Name of the site.
    pub site: String,
    /// The branch environment: the git branch, or `pr-<n>` for a pull request's preview.
    pub branch: String,
    /// The full commit id built or deployed, when known.
    #[serde(default)]
    pub commit: Option<String>,
    /// Id of the build, for build events and deploys made by a build.
    #[serde(default)]
    pub build_id: Option<String>,
    /// Id of the deploy, once there is one.
    #[serde(default)]
    pub deploy_id: Option<String>,
    /// Number of the pull request, for previews.
    #[serde(default)]
    pub pull_request: Option<u64>,
    /// Links to the branch, the deploy and the log.
    #[serde(default)]
    pub urls: EventUrls,
    /// How long the build took, for finished builds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Author of the commit.
    #[serde(default)]
    pub author: Option<String>,
    /// The commit message, as written (untrusted: channels escape it).
    #[serde(default)]
    pub message: Option<String>,
    /// Why a build failed (the last lines of its log or the runner's error).
    #[serde(default)]
    pub error: Option<String>,
    /// The build ran code from a fork's pull request (or one whose origin could not be told): it ran in the
    /// sandbox without the site's secret variables.
    #[serde(default)]
    pub from_fork: bool,
}

impl Event {
    /// A one-line summary such as `Build failed: blog / main` (or `… / PR #12` for previews).
    pub fn headline(&self) -> String {
        match self.pull_request {
            Some(pr) => format!("{}: {} / PR #{pr} ({})", self.kind.title(), self.site, self.branch),
            None => format!("{}: {} / {}", self.kind.title(), self.site, self.branch),
        }
    }

    /// The link a notification's title points at: the log for failures and work in progress, else the
    /// permalink, else the branch URL. Only `http(s)` URLs are returned.
    pub fn primary_url(&self) -> Option<&str> {
        let u = &self.urls;
        let order = match self.kind.outcome() {
            Outcome::Failure | Outcome::Pending => [&u.log, &u.permalink, &u.branch],
            Outcome::Success | Outcome::Neutral => [&u.permalink, &u.branch, &u.log],
        };
        order.into_iter().find_map(|o| o.as_deref().and_then(crate::text::safe_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::event;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), kind);
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(kind.to_string(), kind.as_str());
        }
        let err = "build_succeeded".parse::<EventKind>().unwrap_err();
        assert!(err.to_string().contains("build.succeeded"), "{err}");
    }

    #[test]
    fn outcome_table() {
        let cases = [
            (EventKind::BuildQueued, Outcome::Pending),
            (EventKind::BuildStarted, Outcome::Pending),
            (EventKind::BuildSucceeded, Outcome::Success),
            (EventKind::BuildFailed, Outcome::Failure),
            (EventKind::BuildCancelled, Outcome::Neutral),
            (EventKind::DeployReady, Outcome::Success),
            (EventKind::DeployActivated, Outcome::Success),
            (EventKind::DeployRolledBack, Outcome::Neutral),
            (EventKind::PreviewReady, Outcome::Success),
            (EventKind::PreviewRemoved, Outcome::Neutral),
        ];
        for (kind, outcome) in cases {
            assert_eq!(kind.outcome(), outcome, "{kind}");
        }
    }

    #[test]
    fn primary_url_prefers_log_on_failure_and_skips_unsafe_urls() {
        let mut e = event(EventKind::BuildFailed);
        assert_eq!(e.primary_url(), e.urls.log.as_deref());
        e.kind = EventKind::DeployActivated;
        assert_eq!(e.primary_url(), e.urls.permalink.as_deref());
        e.urls.permalink = Some("javascript:alert(1)".into());
        assert_eq!(e.primary_url(), e.urls.branch.as_deref());
        e.urls = EventUrls::default();
        assert_eq!(e.primary_url(), None);
    }

    #[test]
    fn headline_names_pull_request() {
        let mut e = event(EventKind::PreviewReady);
        assert_eq!(e.headline(), "Preview ready: blog / main");
        e.pull_request = Some(12);
        e.branch = "fix-nav".into();
        assert_eq!(e.headline(), "Preview ready: blog / PR #12 (fix-nav)");
    }
}

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
    /// An ACME order or renewal of a custom domain's certificate failed; `error` says why, `hint` what to do.
    #[serde(rename = "certificate.failed")]
    CertificateFailed,
    /// A certificate a custom domain serves expires within 30 (or 7) days and chanto is not renewing it (an uploaded
    /// certificate, or an automatic one whose renewal keeps failing); `expires_at_ms` says when.
    #[serde(rename = "certificate.expiring")]
    CertificateExpiring,
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
    deploy.ready, deploy.activated, deploy.rolled_back, preview.ready, preview.removed, certificate.failed, \
    certificate.expiring";

impl EventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [EventKind; 12] = [
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
        EventKind::CertificateFailed,
        EventKind::CertificateExpiring,
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
            EventKind::CertificateFailed => "certificate.failed",
            EventKind::CertificateExpiring => "certificate.expiring",
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
            EventKind::CertificateFailed => "Certificate failed",
            EventKind::CertificateExpiring => "Certificate expiring",
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
            EventKind::BuildFailed | EventKind::CertificateFailed => Outcome::Failure,
            // Still served, but someone has to act before the date: a warning (yellow).
            EventKind::CertificateExpiring => Outcome::Pending,
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
    /// Why a build failed (the last lines of its log or the runner's error), or why a certificate order failed.
    #[serde(default)]
    pub error: Option<String>,
    /// The build ran code from a fork's pull request (or one whose origin could not be told): it ran in the
    /// sandbox without the site's secret variables.
    #[serde(default)]
    pub from_fork: bool,
    /// The custom domain a certificate event is about (e.g. `example.com`).
    #[serde(default)]
    pub domain: Option<String>,
    /// When the domain's certificate stops being valid, in milliseconds since the Unix epoch, for
    /// `certificate.expiring`.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// What to do about it, in words (certificate events).
    #[serde(default)]
    pub hint: Option<String>,
}

impl Event {
    /// A one-line summary such as `Build failed: blog / main` (or `… / PR #12` for previews, `… / example.com`
    /// for a custom domain's certificate).
    pub fn headline(&self) -> String {
        match (&self.domain, self.pull_request) {
            (Some(domain), _) => format!("{}: {} / {domain}", self.kind.title(), self.site),
            (None, Some(pr)) => format!("{}: {} / PR #{pr} ({})", self.kind.title(), self.site, self.branch),
            (None, None) => format!("{}: {} / {}", self.kind.title(), self.site, self.branch),
        }
    }

    /// When the certificate expires, in words relative to the event (`2024-03-10 07:08 UTC (in 5 days)`), for
    /// certificate events that carry the date.
    pub fn expiry_text(&self) -> Option<String> {
        let at = self.expires_at_ms?;
        let date = crate::time::iso8601_ms(at);
        let when = format!("{} {} UTC", &date[..10], &date[11..16]);
        let left_ms = at.saturating_sub(self.at_ms);
        let days = left_ms / 86_400_000;
        let relative = match left_ms {
            ..=0 => "already expired".to_owned(),
            1..86_400_000 => format!("in {} h", (left_ms / 3_600_000).max(1)),
            _ if days == 1 => "in 1 day".to_owned(),
            _ => format!("in {days} days"),
        };
        Some(format!("{when} ({relative})"))
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
            (EventKind::CertificateFailed, Outcome::Failure),
            (EventKind::CertificateExpiring, Outcome::Pending),
        ];
        assert_eq!(cases.len(), EventKind::ALL.len());
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
    fn certificate_headline_names_the_domain_and_expiry_reads_relative_to_the_event() {
        let mut e = crate::fixtures::certificate(EventKind::CertificateFailed);
        assert_eq!(e.headline(), "Certificate failed: blog / example.com");
        assert_eq!(e.expiry_text(), None);
        e.kind = EventKind::CertificateExpiring;
        let day = 86_400_000;
        let cases: &[(i64, &str)] = &[
            (5 * day + 3_600_000, "2024-03-10 08:08 UTC (in 5 days)"),
            (day + 1, "2024-03-06 07:08 UTC (in 1 day)"),
            (2 * 3_600_000 + 5, "2024-03-05 09:08 UTC (in 2 h)"),
            (1, "2024-03-05 07:08 UTC (in 1 h)"),
            (-day, "2024-03-04 07:08 UTC (already expired)"),
        ];
        for (left, want) in cases {
            e.expires_at_ms = Some(e.at_ms + left);
            assert_eq!(e.expiry_text().as_deref(), Some(*want), "{left}");
        }
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

//! chanto's knowledge of git forges, without IO: it verifies and parses the webhooks of GitHub, GitLab and
//! Gitea/Forgejo into the few [`Event`]s chanto acts on.
//!
//! The HTTP layer hands over a header lookup and the raw body; it calls [`verify`] first (with the site's
//! secret), then [`parse`]. Both are pure and never panic on any input. Every value in an [`Event`] is validated:
//! branch names are non-empty, at most 255 bytes, free of control characters and do not start with `-`; commit
//! ids are 40 or 64 lowercase hex digits; request numbers are positive.
//!
//! Invariant: nothing leaves this crate unverified or unvalidated; errors name the header or JSON field at
//! fault and know their HTTP status ([`WebhookError::status`]).

mod error;
mod gitlab;
mod hub;
mod payload;
mod signature;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use error::WebhookError;
pub use signature::{sign_hmac_sha256_hex, verify};

/// Largest body accepted, in bytes: GitHub's own cap on webhook payloads (25 MiB).
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// A git forge whose webhooks chanto understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    /// GitHub (github.com and GitHub Enterprise Server): `"github"`.
    GitHub,
    /// GitLab (gitlab.com and self-managed): `"gitlab"`.
    GitLab,
    /// Gitea and its fork Forgejo (Codeberg), which share a webhook format: `"gitea"`.
    Gitea,
}

impl Forge {
    /// Every forge, in a stable order.
    pub const ALL: [Forge; 3] = [Forge::GitHub, Forge::GitLab, Forge::Gitea];

    /// Machine name, as in URLs and configuration: `github`, `gitlab`, `gitea`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Gitea => "gitea",
        }
    }

    /// Name for people, as used in error messages: `GitHub`, `GitLab`, `Gitea/Forgejo`.
    pub fn name(self) -> &'static str {
        match self {
            Self::GitHub => "GitHub",
            Self::GitLab => "GitLab",
            Self::Gitea => "Gitea/Forgejo",
        }
    }
}

impl fmt::Display for Forge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Forge {
    type Err = WebhookError;

    /// Parses a machine name, ignoring ASCII case; `forgejo` is accepted as [`Forge::Gitea`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "github" => Ok(Self::GitHub),
            "gitlab" => Ok(Self::GitLab),
            "gitea" | "forgejo" => Ok(Self::Gitea),
            _ => Err(WebhookError::UnknownForge { name: payload::preview(s) }),
        }
    }
}

/// Header lookup: given a header name, its value, if any.
///
/// Names are passed in lowercase (`x-hub-signature-256`), which is how an `http::HeaderMap` stores them, so a
/// closure over `HeaderMap::get` works as is. A value that is not valid UTF-8 should be reported as absent.
pub type Headers<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What a verified webhook asks chanto to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A branch moved to a new commit (including a newly created branch).
    Push {
        /// Branch name without `refs/heads/`.
        branch: String,
        /// The branch's new commit, lowercase hex.
        commit: String,
        /// Message of that commit, when the forge sent it.
        message: Option<String>,
        /// Author of that commit (or, failing that, the pusher), when the forge sent one.
        author: Option<String>,
        /// URLs the repository can be cloned from, HTTPS first, then SSH; possibly empty.
        clone_urls: Vec<String>,
    },
    /// A branch was deleted.
    BranchDeleted {
        /// Branch name without `refs/heads/`.
        branch: String,
    },
    /// A pull/merge request was opened, updated, reopened or closed.
    PullRequest {
        /// The request's number in its repository (GitLab's `iid`), at least 1.
        number: u64,
        /// What happened to it.
        action: PrAction,
        /// Branch the changes come from.
        head_branch: String,
        /// Latest commit of that branch, lowercase hex.
        head_commit: String,
        /// Branch the request would merge into.
        base_branch: String,
        /// The request's title.
        title: String,
        /// Login of the request's author, when the forge sent it.
        author: Option<String>,
        /// Whether the changes come from another repository (a fork). When the payload does not say which
        /// repositories are involved, this is `true`: fork code must not be trusted with a site's secrets.
        from_fork: bool,
    },
    /// The forge's test delivery (GitHub's `ping`): answer 200 and do nothing.
    Ping,
    /// A well-formed event chanto does not act on (tag pushes, pull request labels, other event types): answer
    /// 202 and record the reason.
    Ignored {
        /// Why nothing is done, for people; sender-supplied parts are shortened and escaped.
        reason: String,
    },
}

/// What happened to a pull/merge request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrAction {
    /// Opened, or reopened after being closed.
    Opened,
    /// New commits were pushed to its head branch.
    Updated,
    /// Closed, by merging or not.
    Closed {
        /// Whether it was merged.
        merged: bool,
    },
}

/// Parses a verified request into what chanto acts on.
///
/// The event comes from `X-GitHub-Event`, `X-Gitlab-Event`, or `X-Gitea-Event`/`X-Forgejo-Event`. Event types and
/// actions chanto does not act on become [`Event::Ignored`] (after checking the body is JSON); malformed bodies
/// and unusable values are errors naming the JSON path. Call [`verify`] first: this function trusts its input
/// only as far as its shape.
pub fn parse(forge: Forge, headers: Headers<'_>, body: &[u8]) -> Result<Event, WebhookError> {
    check_size(body)?;
    let (header_name, event) = event_header(forge, headers)?;
    if !is_event_name(&event) {
        return Err(WebhookError::UnsupportedEvent { forge, header: header_name, value: payload::preview(&event) });
    }
    match forge {
        Forge::GitHub => hub::parse_github(&event, body),
        Forge::GitLab => gitlab::parse(&event, body),
        Forge::Gitea => hub::parse_gitea(&event, body),
    }
}

/// Looks a header up by its canonical name (lookups are made in lowercase, see [`Headers`]).
pub(crate) fn header(headers: Headers<'_>, name: &str) -> Option<String> {
    headers(&name.to_ascii_lowercase())
}

pub(crate) fn check_size(body: &[u8]) -> Result<(), WebhookError> {
    if body.len() > MAX_BODY_BYTES { Err(WebhookError::PayloadTooLarge { len: body.len() }) } else { Ok(()) }
}

fn event_header(forge: Forge, headers: Headers<'_>) -> Result<(&'static str, String), WebhookError> {
    let names: &[&'static str] = match forge {
        Forge::GitHub => &["X-GitHub-Event"],
        Forge::GitLab => &["X-Gitlab-Event"],
        Forge::Gitea => &["X-Gitea-Event", "X-Forgejo-Event"],
    };
    names.iter().find_map(|&name| header(headers, name).map(|value| (name, value.trim().to_owned()))).ok_or(
        WebhookError::MissingEvent {
            forge,
            header: match forge {
                Forge::GitHub => "X-GitHub-Event",
                Forge::GitLab => "X-Gitlab-Event",
                Forge::Gitea => "X-Gitea-Event (or X-Forgejo-Event)",
            },
        },
    )
}

/// Event names are short words (`pull_request`, `Merge Request Hook`); anything else is not from a forge.
fn is_event_name(event: &str) -> bool {
    (1..=64).contains(&event.len()) && event.bytes().all(|b| b.is_ascii_alphanumeric() || b" _-.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forge_names_round_trip() {
        for forge in Forge::ALL {
            assert_eq!(forge.as_str().parse::<Forge>().unwrap(), forge);
            assert_eq!(serde_json::to_string(&forge).unwrap(), format!("\"{}\"", forge.as_str()));
            assert_eq!(forge.to_string(), forge.as_str());
        }
        assert_eq!("Forgejo".parse::<Forge>().unwrap(), Forge::Gitea);
        assert_eq!("GitHub".parse::<Forge>().unwrap(), Forge::GitHub);
        let err = "bitbucket".parse::<Forge>().unwrap_err();
        assert_eq!((err.status(), err.code()), (404, "unknown_forge"));
    }

    #[test]
    fn event_serializes_with_kind() {
        let event = Event::PullRequest {
            number: 1,
            action: PrAction::Closed { merged: true },
            head_branch: "f".into(),
            head_commit: "a".repeat(40),
            base_branch: "main".into(),
            title: "t".into(),
            author: None,
            from_fork: false,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "pull_request");
        assert_eq!(json["action"]["closed"]["merged"], true);
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }
}

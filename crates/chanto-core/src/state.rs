//! The life of a deploy: uploading → ready → (active ⇄ superseded), or failed/expired.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a deploy is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeployState {
    /// Created; the client is uploading the blobs the store lacks.
    Uploading,
    /// Complete and immutable, never active yet (a draft, or not yet activated).
    Ready,
    /// The deploy its branch serves.
    Active,
    /// Was active; another deploy of the branch is active now. Can be published again.
    Superseded,
    /// Finalizing failed; never served.
    Failed,
    /// Never finalized within the upload window; its upload session is gone.
    Expired,
}

impl DeployState {
    /// The lowercase name stored in metadata and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploading => "uploading",
            Self::Ready => "ready",
            Self::Active => "active",
            Self::Superseded => "superseded",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    /// Whether the deploy is complete and may be served (and published).
    pub fn is_complete(self) -> bool {
        matches!(self, Self::Ready | Self::Active | Self::Superseded)
    }
}

impl fmt::Display for DeployState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeployState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "uploading" => Self::Uploading,
            "ready" => Self::Ready,
            "active" => Self::Active,
            "superseded" => Self::Superseded,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            other => return Err(format!("unknown deploy state {other:?}")),
        })
    }
}

/// Where a build is in its life: queued → running → one of the final states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    /// Waiting for a free runner.
    Queued,
    /// A runner is fetching, building or deploying it.
    Running,
    /// Built and deployed.
    Succeeded,
    /// A command failed, the spec was invalid or the output could not be deployed.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// Ran past its time limit and was killed.
    TimedOut,
    /// The server stopped while it ran; it was queued again once.
    Interrupted,
    /// Its commit asked not to be built (`[skip ci]`).
    Skipped,
    /// A newer push to its branch replaced it before it started.
    Superseded,
}

impl BuildState {
    /// Every state, in life order.
    pub const ALL: [Self; 9] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
        Self::Interrupted,
        Self::Skipped,
        Self::Superseded,
    ];

    /// The name stored in metadata and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::Interrupted => "interrupted",
            Self::Skipped => "skipped",
            Self::Superseded => "superseded",
        }
    }

    /// Whether the build is over (nothing will change it any more).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

impl fmt::Display for BuildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown build state {s:?}"))
    }
}

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

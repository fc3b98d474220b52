//! Configuration as code, wired to the live platform (issue 19):
//! `GET /api/v1/platform` writes `chanto.platform.toml` from what is live
//! (`chanto export`), `POST /api/v1/platform/plan` compares a file with it
//! (`chanto plan`), `POST /api/v1/platform/apply` carries out a saved plan
//! (`chanto apply`). The pure half (the file, plans) is [`crate::platform`].
//!
//! **Who may.** All three need the `admin` scope: the file is the whole
//! truth of every site (a plan destroys sites it does not name), an export
//! carries password hashes, and a plan says whether a value is the live
//! secret, which no narrower role may learn.
//!
//! **Secrets.** The file names them (`env:VAR`, `file:PATH`); the CLI
//! resolves them where it runs and sends the values with the request, as
//! `chanto env set --secret` sends one. The server never reads its own
//! environment or files for a reference. It compares values by keyed
//! fingerprints (BLAKE3 keyed from the sealing key), which a saved plan
//! keeps so apply refuses when a value changed; live secrets are unsealed
//! only to fingerprint them, and passwords are compared by verifying the
//! live argon2id hash. Applying remembers the reference each secret came
//! from (and each subscription's name), so an export writes the file back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::platform::{Action, Plan, SavedPlan};

/// Largest plan or apply request body (files and secrets together).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// One file of the configuration, as the CLI read it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Its name, as errors should show it (`chanto.platform.toml`, `platform/docs.toml`).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// `POST /api/v1/platform/plan`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// The configuration's files.
    pub files: Vec<ConfigFile>,
    /// The value of every secret reference the files use, by the reference
    /// as written (`env:DOCS_API_KEY`, `file:secrets/hook-key`).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// The answer to a plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanResponse {
    /// The plan (as `chanto plan --json` prints it).
    #[schema(value_type = Object)]
    pub plan: Plan,
    /// The plan for people, Terraform-style.
    pub text: String,
    /// The plan to save (`chanto plan --out`) and hand to apply.
    #[schema(value_type = Object)]
    pub saved: SavedPlan,
}

/// `POST /api/v1/platform/apply`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// A saved plan, as `POST /platform/plan` answered it.
    #[schema(value_type = Object)]
    pub plan: SavedPlan,
    /// The value of every secret reference its configuration uses.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Let the plan's destroys happen.
    #[serde(default)]
    pub allow_destroy: bool,
}

/// One change made.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Applied {
    /// The resource (`site.docs.env["API_KEY"]`).
    pub address: String,
    /// What was done.
    #[schema(value_type = String)]
    pub action: Action,
}

/// The change that stopped an apply.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Failed {
    /// The resource.
    pub address: String,
    /// What went wrong and how to fix it.
    pub error: String,
}

/// The answer to an apply: what was done, in order; if a change failed,
/// which, and what was left undone (run the same apply again once fixed:
/// what was applied is skipped).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    /// The changes made, in order.
    pub applied: Vec<Applied>,
    /// Changes of the plan already in place (an earlier apply made them).
    pub already: Vec<String>,
    /// The change that failed, if one did.
    pub failed: Option<Failed>,
    /// The changes not made because of it.
    pub not_applied: Vec<String>,
    /// A summary for people.
    pub text: String,
}

/// One secret reference an export wrote.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExportedSecret {
    /// The reference (`env:DOCS_API_KEY`).
    pub reference: String,
    /// The secrets it stands for (`site.docs.env["API_KEY"].value`).
    pub used_by: Vec<String>,
    /// Whether an apply wrote this reference (else the export made up the
    /// name, and the value must be found and set under it before a plan).
    pub remembered: bool,
}

/// The answer to `GET /api/v1/platform`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExportResponse {
    /// `chanto.platform.toml`.
    pub config: String,
    /// The secret references it uses.
    pub secrets: Vec<ExportedSecret>,
}

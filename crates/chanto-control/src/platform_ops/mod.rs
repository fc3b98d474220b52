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
    /// Plan only these sites (`chanto plan --site`): the others are neither
    /// compared nor changed. Empty: every site, and a live site the files do
    /// not declare is destroyed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
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
    /// Something to keep from it (a new repository connection's webhook secret, shown once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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

mod apply;
mod live;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

use crate::api::ApiJson;
use crate::auth::Principal;
use crate::error::ErrorBody;
use crate::platform::ParseErrors;
use crate::{ApiError, Control};

/// What an export starts with.
const EXPORT_HEADER: &str = "\
# Every site of this chanto and its settings, as `chanto export` wrote them.
# Edit, then `chanto plan -f FILE` shows what would change. Secrets are
# references (env:VAR, file:PATH), resolved where chanto plan runs.

";

/// One apply at a time in this process: two interleaved would each check
/// versions the other is changing.
static APPLYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the one apply at a time (`chanto apply`, a platform config
/// site's build on its production branch); hold it from the plan to the end
/// of the apply.
pub(crate) async fn applying() -> tokio::sync::MutexGuard<'static, ()> {
    APPLYING.lock().await
}

fn parse_failed(e: ParseErrors) -> ApiError {
    let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", lines.join("\n"))
        .details(serde_json::json!(lines))
}

impl Control {
    /// `chanto export`: the live configuration as a file.
    pub async fn export_platform(&self) -> Result<ExportResponse, ApiError> {
        let live = self.live_platform().await?;
        Ok(ExportResponse {
            config: format!("{EXPORT_HEADER}{}", crate::platform::render(&live.config)),
            secrets: live::exported_secrets(&live),
        })
    }

    /// `chanto plan`: what applying the files would change.
    pub async fn plan_files(&self, req: &PlanRequest) -> Result<PlanResponse, ApiError> {
        let files: Vec<(&str, &str)> = req.files.iter().map(|f| (f.name.as_str(), f.text.as_str())).collect();
        if files.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                "no files were sent: send the configuration's files (chanto plan -f chanto.platform.toml)",
            ));
        }
        let desired = crate::platform::parse_files(&files).map_err(parse_failed)?;
        let planned = self.plan_platform(desired, &req.secrets, &req.sites).await?;
        let mut saved = SavedPlan::new(planned.plan.clone(), &planned.desired, &planned.inputs);
        saved.sites = req.sites.clone();
        Ok(PlanResponse { text: planned.plan.render_text(), plan: planned.plan, saved })
    }

    /// `chanto apply`: carries out a saved plan if nothing it touches
    /// changed since, one change after the other, each written to the
    /// audit log. A change that fails stops the apply; what was applied
    /// stays applied, and the same plan can be applied again.
    pub async fn apply_plan(
        &self,
        principal: &Principal,
        source: &str,
        req: &ApplyRequest,
    ) -> Result<ApplyResponse, ApiError> {
        let _one_at_a_time = applying().await;
        let desired = req.plan.desired().map_err(parse_failed)?;
        let planned = self.plan_platform(desired, &req.secrets, &req.plan.sites).await?;
        let left = req.plan.remaining(&planned.plan, &planned.inputs).map_err(|conflicts| {
            ApiError::new(StatusCode::CONFLICT, "plan_stale", conflicts.join("\n"))
                .details(serde_json::json!(conflicts))
        })?;
        let allow_destroy = req.allow_destroy;
        let already: Vec<String> = req
            .plan
            .plan
            .changes
            .iter()
            .filter(|c| !left.iter().any(|l| l.address == c.address))
            .map(|c| c.address.clone())
            .collect();
        self.apply_changes(&planned, &left, already, allow_destroy, principal, source).await
    }

    /// Makes `left` (changes of `planned`), in order, each written to the
    /// audit log as `principal`'s; stops at the first that fails. The
    /// caller holds [`applying`] since before it planned.
    pub(crate) async fn apply_changes(
        &self,
        planned: &apply::Planned,
        left: &[crate::platform::Change],
        already: Vec<String>,
        allow_destroy: bool,
        principal: &Principal,
        source: &str,
    ) -> Result<ApplyResponse, ApiError> {
        let destroys: Vec<&str> =
            left.iter().filter(|c| c.action == Action::Destroy).map(|c| c.address.as_str()).collect();
        if !allow_destroy && !destroys.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "destroy_not_allowed",
                format!(
                    "the plan destroys {}; apply it with --allow-destroy (allow_destroy: true) if that is meant",
                    destroys.join(", ")
                ),
            ));
        }
        let mut out =
            ApplyResponse { applied: Vec::new(), already, failed: None, not_applied: Vec::new(), text: String::new() };
        for (i, change) in left.iter().enumerate() {
            let action = format!(
                "platform_apply_{}",
                serde_json::to_value(change.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            );
            match self.apply_change(change, planned).await {
                Ok(note) => {
                    self.audit(principal, source, &action, &change.address, 200).await;
                    out.applied.push(Applied { address: change.address.clone(), action: change.action, note });
                }
                Err(e) => {
                    self.audit(principal, source, &action, &change.address, e.status.as_u16()).await;
                    out.failed = Some(Failed { address: change.address.clone(), error: e.message });
                    out.not_applied = left[i + 1..].iter().map(|c| c.address.clone()).collect();
                    break;
                }
            }
        }
        out.text = apply_text(&out);
        Ok(out)
    }
}

/// What `chanto apply` prints of an answer (the failure's own error goes
/// to standard error as the command's error).
pub(crate) fn apply_text(resp: &ApplyResponse) -> String {
    use std::fmt::Write as _;
    let symbol = |a: Action| match a {
        Action::Create => '+',
        Action::Update => '~',
        Action::Destroy => '-',
    };
    let mut out = String::new();
    if !resp.applied.is_empty() {
        let n = resp.applied.len();
        let _ = writeln!(out, "Applied {n} change{}:", if n == 1 { "" } else { "s" });
        for a in &resp.applied {
            let _ = writeln!(out, "  {} {}", symbol(a.action), a.address);
            if let Some(note) = &a.note {
                let _ = writeln!(out, "      {note}");
            }
        }
    }
    if !resp.already.is_empty() {
        let _ = writeln!(out, "Already in place ({}):", resp.already.len());
        for a in &resp.already {
            let _ = writeln!(out, "  {a}");
        }
    }
    if let Some(f) = &resp.failed {
        let _ = writeln!(out, "Failed: {}", f.address);
        if !resp.not_applied.is_empty() {
            let _ = writeln!(out, "Not applied ({}):", resp.not_applied.len());
            for a in &resp.not_applied {
                let _ = writeln!(out, "  {a}");
            }
        }
    } else if resp.applied.is_empty() && resp.already.is_empty() {
        out.push_str("Nothing to apply: the plan has no changes.\n");
    } else if resp.applied.is_empty() {
        out.push_str("Nothing left to apply: every change of the plan is in place.\n");
    } else {
        let _ =
            writeln!(out, "Apply complete: {} applied, {} already in place.", resp.applied.len(), resp.already.len());
    }
    out
}

#[utoipa::path(get, path = "/api/v1/platform", tag = "platform", security(("token" = [])),
    responses((status = 200, body = ExportResponse, description = "Every site's settings as chanto.platform.toml"),
        (status = 403, body = ErrorBody, description = "Needs the admin scope")))]
pub(crate) async fn export(State(c): State<Arc<Control>>) -> Result<Json<ExportResponse>, ApiError> {
    Ok(Json(c.export_platform().await?))
}

#[utoipa::path(post, path = "/api/v1/platform/plan", tag = "platform", security(("token" = [])), request_body = PlanRequest,
    responses((status = 200, body = PlanResponse), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "The files do not parse (each line file:line:column), a secret's value is missing or invalid, or a change cannot be made")))]
pub(crate) async fn plan(
    State(c): State<Arc<Control>>,
    ApiJson(req): ApiJson<PlanRequest>,
) -> Result<Json<PlanResponse>, ApiError> {
    Ok(Json(c.plan_files(&req).await?))
}

#[utoipa::path(post, path = "/api/v1/platform/apply", tag = "platform", security(("token" = [])), request_body = ApplyRequest,
    responses((status = 200, body = ApplyResponse, description = "Applied, or stopped at the change in `failed`"),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Something the plan touches changed since it was made, or it destroys without allow_destroy"),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn apply(
    State(c): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
    req: Request,
) -> Result<Json<ApplyResponse>, ApiError> {
    let source = crate::auth::source_of(&req);
    let ApiJson(body) = <ApiJson<ApplyRequest> as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
    Ok(Json(c.apply_plan(&principal, &source, &body).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_says_what_was_done_and_what_was_not() {
        let resp = ApplyResponse {
            applied: vec![
                Applied { address: "site.docs".into(), action: Action::Create, note: None },
                Applied { address: "site.docs.env[\"X\"]".into(), action: Action::Update, note: None },
                Applied { address: "site.old".into(), action: Action::Destroy, note: None },
            ],
            already: vec!["site.docs.git".into()],
            failed: Some(Failed { address: "site.docs.domain[\"a.example\"]".into(), error: "taken".into() }),
            not_applied: vec!["site.docs.notify[\"n\"]".into()],
            text: String::new(),
        };
        assert_eq!(
            apply_text(&resp),
            "Applied 3 changes:\n  + site.docs\n  ~ site.docs.env[\"X\"]\n  - site.old\nAlready in place (1):\n  site.docs.git\n\
             Failed: site.docs.domain[\"a.example\"]\nNot applied (1):\n  site.docs.notify[\"n\"]\n"
        );
        let done = ApplyResponse { failed: None, not_applied: vec![], ..resp };
        assert!(apply_text(&done).ends_with("Apply complete: 3 applied, 1 already in place.\n"));
        let nothing = ApplyResponse { applied: vec![], already: vec![], ..done };
        assert_eq!(apply_text(&nothing), "Nothing to apply: the plan has no changes.\n");
    }
}

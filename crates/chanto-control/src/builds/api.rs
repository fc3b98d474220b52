//! The builds API: connecting a repository, variables, build hooks, builds
//! and their live logs (authenticated), and the two doors the outside world
//! knocks on: forge webhooks (signed) and build hooks (a secret URL).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chanto_core::{BranchName, BuildId, SiteName};
use chanto_store::WebhookDelivery;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{BuildRequest, BuildView, ConnectRequest, EnvView, GitView, HookView};
use crate::api::{ApiJson, parse_path};
use crate::{ApiError, Control};

/// Largest webhook body (GitHub caps its payloads at 25 MiB).
pub const MAX_WEBHOOK_BYTES: usize = 25 << 20;
/// Largest build hook body (a branch and a title).
pub const MAX_HOOK_BODY_BYTES: usize = 64 << 10;

/// Reads a body of at most `max` bytes: a declared `Content-Length` over it
/// is refused before anything is read, and reading stops at the bound.
async fn read_bounded(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is over {} KiB, the most this endpoint takes", max >> 10),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max).await.map_err(|_| too_large())
}

/// Connects a site to a repository, or changes its connection.
#[utoipa::path(put, path = "/api/v1/sites/{site}/git", tag = "builds", request_body = ConnectRequest,
    responses((status = 200, body = GitView)), security(("token" = [])))]
pub async fn connect(
    State(c): State<Arc<Control>>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path(site): Path<String>,
    ApiJson(req): ApiJson<ConnectRequest>,
) -> Result<Json<GitView>, ApiError> {
    let site = parse_path(&site)?;
    c.require_platform_admin(&caller, &site, &req).await?;
    Ok(Json(c.connect_git(&site, req).await?))
}

/// A site's repository connection.
#[utoipa::path(get, path = "/api/v1/sites/{site}/git", tag = "builds", responses((status = 200, body = GitView)), security(("token" = [])))]
pub async fn show(State(c): State<Arc<Control>>, Path(site): Path<String>) -> Result<Json<GitView>, ApiError> {
    Ok(Json(c.git(&parse_path(&site)?).await?))
}

/// Disconnects a site from its repository (its deploys stay).
#[utoipa::path(delete, path = "/api/v1/sites/{site}/git", tag = "builds", responses((status = 204)), security(("token" = [])))]
pub async fn disconnect(State(c): State<Arc<Control>>, Path(site): Path<String>) -> Result<StatusCode, ApiError> {
    c.disconnect_git(&parse_path(&site)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a build variable.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvRequest {
    /// Its value.
    pub value: String,
    /// Keep it secret: stored encrypted, shown as `***`, masked in build logs.
    #[serde(default)]
    pub secret: bool,
    /// Only for this branch (else every branch).
    #[serde(default)]
    pub branch: Option<String>,
}

/// Which branch a variable belongs to.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BranchQuery {
    /// A branch (absent: site-wide).
    pub branch: Option<String>,
}

fn branch_of(b: Option<String>) -> Result<Option<BranchName>, ApiError> {
    Ok(b.map(|b| b.parse()).transpose()?)
}

/// A site's build variables (secrets as `***`).
#[utoipa::path(get, path = "/api/v1/sites/{site}/env", tag = "builds", responses((status = 200, body = Vec<EnvView>)), security(("token" = [])))]
pub async fn list_env(State(c): State<Arc<Control>>, Path(site): Path<String>) -> Result<Json<Vec<EnvView>>, ApiError> {
    Ok(Json(c.list_env(&parse_path(&site)?).await?))
}

/// Sets a build variable.
#[utoipa::path(put, path = "/api/v1/sites/{site}/env/{name}", tag = "builds", request_body = EnvRequest,
    responses((status = 200, body = EnvView)), security(("token" = [])))]
pub async fn set_env(
    State(c): State<Arc<Control>>,
    Path((site, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<EnvRequest>,
) -> Result<Json<EnvView>, ApiError> {
    Ok(Json(c.set_env(&parse_path(&site)?, branch_of(req.branch)?, name, req.value, req.secret).await?))
}

/// Removes a build variable.
#[utoipa::path(delete, path = "/api/v1/sites/{site}/env/{name}", tag = "builds", params(BranchQuery),
    responses((status = 204)), security(("token" = [])))]
pub async fn unset_env(
    State(c): State<Arc<Control>>,
    Path((site, name)): Path<(String, String)>,
    Query(q): Query<BranchQuery>,
) -> Result<StatusCode, ApiError> {
    c.unset_env(&parse_path(&site)?, branch_of(q.branch)?, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a build hook.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HookRequest {
    /// A name to recognise it by (`cms`, `nightly`).
    pub name: String,
    /// The only branch it builds (default: the production branch).
    #[serde(default)]
    pub branch: Option<String>,
    /// Let each request name the branch to build (default: only `branch`).
    #[serde(default)]
    pub any_branch: bool,
}

/// A site's build hooks (their URLs are shown only at creation).
#[utoipa::path(get, path = "/api/v1/sites/{site}/build_hooks", tag = "builds", responses((status = 200, body = Vec<HookView>)), security(("token" = [])))]
pub async fn list_hooks(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
) -> Result<Json<Vec<HookView>>, ApiError> {
    Ok(Json(c.list_hooks(&parse_path(&site)?).await?))
}

/// Creates a build hook; the answer holds its secret URL, shown only this once.
#[utoipa::path(post, path = "/api/v1/sites/{site}/build_hooks", tag = "builds", request_body = HookRequest,
    responses((status = 201, body = HookView)), security(("token" = [])))]
pub async fn create_hook(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    ApiJson(req): ApiJson<HookRequest>,
) -> Result<(StatusCode, Json<HookView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(c.create_hook(&parse_path(&site)?, req.name, branch_of(req.branch)?, req.any_branch).await?),
    ))
}

/// Deletes a build hook.
#[utoipa::path(delete, path = "/api/v1/sites/{site}/build_hooks/{id}", tag = "builds", responses((status = 204)), security(("token" = [])))]
pub async fn delete_hook(
    State(c): State<Arc<Control>>,
    Path((site, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    c.delete_hook(&parse_path(&site)?, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which builds to list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BuildsQuery {
    /// Only this branch environment.
    pub branch: Option<String>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<u32>,
}

/// A site's builds, newest first.
#[utoipa::path(get, path = "/api/v1/sites/{site}/builds", tag = "builds", params(BuildsQuery),
    responses((status = 200, body = Vec<BuildView>)), security(("token" = [])))]
pub async fn list_builds(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    Query(q): Query<BuildsQuery>,
) -> Result<Json<Vec<BuildView>>, ApiError> {
    let site: SiteName = parse_path(&site)?;
    c.site(&site).await?;
    let branch = branch_of(q.branch)?;
    let rows = c.meta.list_builds(&site, branch.as_ref(), q.limit.unwrap_or(50).clamp(1, 1000)).await?;
    Ok(Json(rows.into_iter().map(|b| BuildView::new(&c, b)).collect()))
}

/// Starts a build by hand.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The branch to build (default: production).
    #[serde(default)]
    pub branch: Option<String>,
    /// A commit id to build (default: the branch's head).
    #[serde(default)]
    pub commit: Option<String>,
    /// A title for the build.
    #[serde(default)]
    pub title: Option<String>,
}

/// Queues a build of a branch (its head, or a given commit).
#[utoipa::path(post, path = "/api/v1/sites/{site}/builds", tag = "builds", request_body = StartRequest,
    responses((status = 201, body = BuildView)), security(("token" = [])))]
pub async fn start_build(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<BuildView>), ApiError> {
    let site: SiteName = parse_path(&site)?;
    let req: StartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StartRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("build request: {e}")))?
    };
    let site_rec = c.site(&site).await?;
    let branch = branch_of(req.branch)?.unwrap_or(site_rec.production_branch);
    if let Some(commit) = &req.commit
        && !(commit.len() == 40 || commit.len() == 64)
    {
        return Err(ApiError::from(chanto_core::ValidationError::new(
            "commit",
            "give a full commit id (40 hex digits)",
        )));
    }
    if let Some(commit) = &req.commit
        && !commit.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(ApiError::from(chanto_core::ValidationError::new("commit", "a commit id is hex digits")));
    }
    let mut build = BuildRequest::branch_head(branch, "manual");
    build.commit = req.commit.map(|c| c.to_ascii_lowercase());
    build.title = req.title.map(|t| t.chars().take(500).collect());
    let b = c.queue_build(&site, build).await?;
    Ok((StatusCode::CREATED, Json(BuildView::new(&c, b))))
}

/// One build.
#[utoipa::path(get, path = "/api/v1/builds/{id}", tag = "builds", responses((status = 200, body = BuildView)), security(("token" = [])))]
pub async fn get_build(State(c): State<Arc<Control>>, Path(id): Path<String>) -> Result<Json<BuildView>, ApiError> {
    let id: BuildId = parse_path(&id)?;
    let b = c.build(&id).await?;
    Ok(Json(BuildView::new(&c, b)))
}

/// Cancels a queued or running build (its processes are killed).
#[utoipa::path(post, path = "/api/v1/builds/{id}/cancel", tag = "builds", responses((status = 200, body = BuildView)), security(("token" = [])))]
pub async fn cancel_build(State(c): State<Arc<Control>>, Path(id): Path<String>) -> Result<Json<BuildView>, ApiError> {
    let id: BuildId = parse_path(&id)?;
    let b = c.cancel_build(&id).await?;
    Ok(Json(BuildView::new(&c, b)))
}

/// How to read a log.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Keep the response open and stream new lines until the build ends.
    #[serde(default)]
    pub follow: bool,
    /// Start at this byte offset.
    #[serde(default)]
    pub offset: u64,
}

/// A build's log as plain text; with `follow=true`, streamed (chunked) until the build ends.
#[utoipa::path(get, path = "/api/v1/builds/{id}/log", tag = "builds", params(LogQuery),
    responses((status = 200, content_type = "text/plain", body = String)), security(("token" = [])))]
pub async fn build_log(
    State(c): State<Arc<Control>>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let id: BuildId = parse_path(&id)?;
    c.build(&id).await?;
    let path = super::runner::log_path(c.builds()?, &id);
    let stream =
        futures_util::stream::unfold((c, id, path, q.offset, false), move |(c, id, path, offset, done)| async move {
            if done {
                return None;
            }
            loop {
                // Read what is there; the build's state is read first, so a
                // build that ended has already written its last line.
                let ended = c.build(&id).await.map(|b| b.state.is_final()).unwrap_or(true);
                let chunk = read_from(&path, offset).await;
                if !chunk.is_empty() {
                    let next = offset + chunk.len() as u64;
                    return Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (c, id, path, next, false)));
                }
                if ended || !q.follow {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut f) = tokio::fs::File::open(path).await else { return Vec::new() };
    if f.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(1 << 20).read_to_end(&mut buf).await;
    buf
}

/// A site's most recent webhook deliveries (accepted, ignored, refused), newest first.
#[utoipa::path(get, path = "/api/v1/sites/{site}/webhook_deliveries", tag = "builds",
    responses((status = 200, body = Vec<DeliveryView>)), security(("token" = [])))]
pub async fn deliveries(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    let rows = c.deliveries(&parse_path(&site)?, 100).await?;
    Ok(Json(rows.into_iter().map(DeliveryView::from).collect()))
}

/// A webhook delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// `github`, `gitlab`, `gitea` or `build_hook`.
    pub source: String,
    /// The event.
    pub event: String,
    /// `accepted`, `ignored` or `refused`.
    pub outcome: String,
    /// Why.
    pub detail: String,
    /// The build it queued.
    pub build: Option<String>,
    /// When (ms since the epoch).
    pub at: i64,
}

impl From<WebhookDelivery> for DeliveryView {
    fn from(d: WebhookDelivery) -> Self {
        Self {
            source: d.source,
            event: d.event,
            outcome: d.outcome,
            detail: d.detail,
            build: d.build.map(|b| b.to_string()),
            at: d.at,
        }
    }
}

/// What a webhook or build hook request did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HookAnswer {
    /// `accepted` or `ignored`.
    pub outcome: String,
    /// Why.
    pub detail: String,
    /// The build it queued.
    pub build: Option<String>,
}

/// Receives a forge's webhook (GitHub, GitLab, Gitea/Forgejo), signed with the site's webhook secret.
#[utoipa::path(post, path = "/api/v1/webhooks/{forge}/{site}", tag = "builds", request_body(content = String, description = "The forge's JSON payload"),
    responses((status = 202, body = HookAnswer), (status = 401, description = "bad or missing signature")))]
pub async fn webhook(
    State(c): State<Arc<Control>>,
    Path((forge, site)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<HookAnswer>), ApiError> {
    let forge: chanto_forge::Forge = forge.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no webhook endpoint for {forge:?}; use github, gitlab or gitea"),
        )
    })?;
    let site: SiteName = parse_path(&site)?;
    // Everything that can be checked without the body is checked first.
    c.webhook_gate(forge, &site, &headers).await?;
    let body = read_bounded(&headers, body, MAX_WEBHOOK_BYTES).await?;
    let a = c.handle_webhook(forge, &site, &headers, &body).await?;
    let status = if a.build.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(HookAnswer { outcome: a.outcome, detail: a.detail, build: a.build.map(|b| b.id.to_string()) })))
}

/// What a build hook request may say (in the JSON body or the query).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct TriggerRequest {
    /// The branch to build.
    #[serde(default, alias = "trigger_branch")]
    pub branch: Option<String>,
    /// A title for the build.
    #[serde(default, alias = "trigger_title")]
    pub title: Option<String>,
}

/// Starts a build through a build hook's secret URL (no token needed).
#[utoipa::path(post, path = "/api/v1/build_hooks/{secret}", tag = "builds", params(TriggerRequest),
    request_body(content = TriggerRequest, description = "Optional; the query may say the same"),
    responses((status = 202, body = HookAnswer), (status = 404, description = "no such hook")))]
pub async fn trigger_hook(
    State(c): State<Arc<Control>>,
    Path(secret): Path<String>,
    Query(q): Query<TriggerRequest>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<HookAnswer>), ApiError> {
    // The secret URL is the credential: check it before reading anything.
    c.find_build_hook(&secret).await?;
    let body = read_bounded(&headers, body, MAX_HOOK_BODY_BYTES).await?;
    let from_body: TriggerRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("build hook body: {e}")))?
    };
    let b = c.handle_build_hook(&secret, from_body.branch.or(q.branch), from_body.title.or(q.title)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(HookAnswer {
            outcome: "accepted".into(),
            detail: format!("queued a build of {}", b.branch),
            build: Some(b.id.to_string()),
        }),
    ))
}

//! The HTTP API under `/api/v1`: JSON in and out, bearer-token auth, errors as
//! [`crate::error::ErrorBody`], and an OpenAPI document generated from these
//! handlers at `/api/v1/openapi.json`.

use crate::builds::api as b;
use crate::notify::api as n;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chanto_core::{BranchName, ContentHash, DeployId, DeployState, SiteName};
use chanto_store::{DeployRecord, SiteRecord};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::ErrorBody;
use crate::pipeline::{DeployRequest, FileSpec};
use crate::{ApiError, Control};

/// Largest JSON body the API accepts (a manifest of 100,000 files fits).
pub const MAX_JSON_BYTES: usize = 64 << 20;

/// The API router. Every route but the OpenAPI document needs a bearer token.
pub fn router(control: Arc<Control>) -> Router {
    let authed = Router::new()
        .route("/sites", get(list_sites).post(create_site))
        .route("/sites/{site}", get(get_site).delete(delete_site))
        .route("/sites/{site}/deploys", get(list_deploys).post(create_deploy))
        .route("/sites/{site}/rollback", post(rollback))
        .route(
            "/sites/{site}/access",
            get(crate::access::list_access).put(crate::access::set_access).delete(crate::access::clear_access),
        )
        .route(
            "/sites/{site}/proxy_origins",
            get(crate::site_settings::get_proxy_origins).put(crate::site_settings::put_proxy_origins),
        )
        .route("/sites/{site}/retention", get(crate::gc::get_retention).put(crate::gc::put_retention))
        .route("/sites/{site}/profile", get(crate::site_settings::get_profile).put(crate::site_settings::put_profile))
        .route("/sites/{site}/domains", get(crate::domains::list).post(crate::domains::add))
        .route("/sites/{site}/domains/{name}", axum::routing::delete(crate::domains::remove))
        .route("/sites/{site}/domains/{name}/verify", post(crate::domains::verify))
        .route("/sites/{site}/domains/{name}/primary", put(crate::domains::primary))
        .route(
            "/sites/{site}/domains/{name}/certificate",
            put(crate::domains::upload).layer(DefaultBodyLimit::max(crate::domains::MAX_CERTIFICATE_BODY)),
        )
        .route("/sites/{site}/tls", get(crate::domains::get_tls).put(crate::domains::put_tls))
        .route(
            "/certificates/base",
            get(crate::base_certs::list)
                .put(crate::base_certs::upload)
                .layer(DefaultBodyLimit::max(crate::domains::MAX_CERTIFICATE_BODY)),
        )
        .route("/certificates/base/{pattern}", axum::routing::delete(crate::base_certs::remove))
        .route("/gc", post(crate::gc::run_gc))
        .route("/deploys/{id}", get(get_deploy))
        .route("/deploys/{id}/blobs", post(upload_blobs).layer(DefaultBodyLimit::disable()))
        .route("/deploys/{id}/blobs/{hash}", put(upload_blob).layer(DefaultBodyLimit::disable()))
        .route("/deploys/{id}/finalize", post(finalize))
        .route("/deploys/{id}/publish", post(publish))
        .route("/sites/{site}/git", get(b::show).put(b::connect).delete(b::disconnect))
        .route("/sites/{site}/env", get(b::list_env))
        .route("/sites/{site}/env/{name}", put(b::set_env).delete(b::unset_env))
        .route("/sites/{site}/build_hooks", get(b::list_hooks).post(b::create_hook))
        .route("/sites/{site}/build_hooks/{id}", axum::routing::delete(b::delete_hook))
        .route("/sites/{site}/builds", get(b::list_builds).post(b::start_build))
        .route("/sites/{site}/webhook_deliveries", get(b::deliveries))
        .route("/builds/{id}", get(b::get_build))
        .route("/builds/{id}/cancel", post(b::cancel_build))
        .route("/builds/{id}/log", get(b::build_log))
        .route("/sites/{site}/notifications", get(n::list).post(n::subscribe))
        .route("/sites/{site}/notifications/deliveries", get(n::deliveries))
        .route("/sites/{site}/notifications/deliveries/{id}", get(n::delivery))
        .route("/sites/{site}/notifications/deliveries/{id}/redeliver", post(n::redeliver))
        .route("/sites/{site}/notifications/{id}", axum::routing::delete(n::remove))
        .route("/sites/{site}/notifications/{id}/test", post(n::test))
        .route("/nodes", get(crate::nodes::list_nodes))
        .route(
            "/nodes/tokens",
            get(crate::nodes::list_tokens)
                .post(crate::nodes::create_token)
                .layer(DefaultBodyLimit::max(crate::nodes::MAX_NODE_BODY)),
        )
        .route("/nodes/tokens/{id}", axum::routing::delete(crate::nodes::revoke_token))
        .route("/users", get(crate::accounts::list_users).post(crate::accounts::create_user))
        .route(
            "/users/{name}",
            get(crate::accounts::get_user).patch(crate::accounts::update_user).delete(crate::accounts::delete_user),
        )
        .route("/users/{name}/invite", post(crate::accounts::invite_user))
        .route("/tokens", get(crate::accounts::list_tokens).post(crate::accounts::create_token))
        .route("/tokens/{id}", axum::routing::delete(crate::accounts::revoke_token))
        .route("/me", get(crate::accounts::me))
        .route("/audit", get(crate::accounts::audit))
        .route("/platform", get(crate::platform_ops::export))
        .route(
            "/platform/plan",
            post(crate::platform_ops::plan).layer(DefaultBodyLimit::max(crate::platform_ops::MAX_REQUEST_BYTES)),
        )
        .route(
            "/platform/apply",
            post(crate::platform_ops::apply).layer(DefaultBodyLimit::max(crate::platform_ops::MAX_REQUEST_BYTES)),
        )
        .route_layer(middleware::from_fn_with_state(control.clone(), crate::auth::require_token));
    let hooks = Router::new()
        .route("/webhooks/{forge}/{site}", post(b::webhook))
        .route("/build_hooks/{secret}", post(b::trigger_hook))
        .layer(DefaultBodyLimit::max(b::MAX_WEBHOOK_BYTES));
    let api = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/notifications/schema.json", get(n::schema))
        .route("/auth/token", post(crate::accounts::login).layer(DefaultBodyLimit::max(16 * 1024)))
        .merge(authed)
        .merge(crate::nodes::node_router(control.clone()))
        .merge(hooks)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API endpoint; see /api/v1/openapi.json")
        });
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/badge/{site}/{*branch}", get(n::badge))
        .merge(crate::console::router())
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .layer(middleware::from_fn(server_timing))
        .with_state(control)
}

/// Adds `Server-Timing: app;dur=<ms>` so clients and benchmarks can see the
/// server's own share of a request.
async fn server_timing(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let dur = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={dur:.3}")) {
        resp.headers_mut().insert("server-timing", v);
    }
    resp
}

/// A JSON body, with errors in chanto's format: syntax errors are 400 and name
/// line and column; well-formed JSON that breaks a rule is 422 and names the
/// field (e.g. `files["a.html"].hash`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|r| ApiError::new(r.status(), "invalid_body", r.body_text()))?;
        // The fast path; only a body that fails is read again to find where
        // (tracking the path costs an allocation per key: a 10,000-file
        // deploy's body has 30,000).
        if let Ok(v) = serde_json::from_slice(&bytes) {
            return Ok(Self(v));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let (value, path) = match serde_path_to_error::deserialize(&mut de) {
            Ok(v) => (Ok(v), String::new()),
            Err(e) => {
                let path = e.path().to_string();
                (Err(e.into_inner()), path)
            }
        };
        match value.and_then(|v| de.end().map(|()| v)) {
            Ok(v) => Ok(Self(v)),
            Err(inner) => {
                let status = if inner.is_data() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_REQUEST };
                let err = ApiError::new(status, "invalid_json", format!("invalid JSON body: {inner}"));
                Err(if path.is_empty() || path == "." { err } else { err.field(path) })
            }
        }
    }
}

pub(crate) fn parse_path<T: std::str::FromStr<Err = chanto_core::ValidationError>>(raw: &str) -> Result<T, ApiError> {
    raw.parse::<T>().map_err(ApiError::from)
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).to_string()
}

/// A site as the API shows it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SiteView {
    /// Its name.
    pub name: SiteName,
    /// The branch served at its production URL.
    pub production_branch: BranchName,
    /// Its production URL.
    pub url: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl SiteView {
    pub(crate) fn new(control: &Control, s: SiteRecord) -> Self {
        Self {
            url: control.config.url_for(s.name.as_str()),
            name: s.name,
            production_branch: s.production_branch,
            created_at: rfc3339(s.created_at),
        }
    }
}

/// The URLs a deploy is reachable at.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeployUrls {
    /// This deploy, forever (`<deploy-id>--<site>.<base>`).
    pub permalink: String,
    /// Its branch (`<branch>--<site>.<base>`), which serves the branch's active deploy.
    pub branch: String,
    /// The site's production URL, when the deploy is on the production branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub production: Option<String>,
}

/// A deploy as the API shows it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeployView {
    /// Its id.
    pub id: DeployId,
    /// Its site.
    pub site: SiteName,
    /// Its branch.
    pub branch: BranchName,
    /// Where it is in its life.
    pub state: DeployState,
    /// Uploaded without activating.
    pub draft: bool,
    /// Taken off the air by a rollback and not live since (its `state` is
    /// `superseded`); the CLI shows it as "rolled back". Set in deploy
    /// listings and `GET /deploys/{id}`; false elsewhere.
    #[serde(default)]
    pub rolled_back: bool,
    /// The author's message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Number of files.
    pub file_count: u64,
    /// Total size of the files in bytes.
    pub total_size: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it became ready, failed or expired (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Where to see it.
    pub urls: DeployUrls,
    /// What its rule files drew (finalize only): file, line and the issue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Where the routing version this finalize published is live (finalize
    /// only): the answer comes once every healthy edge serves it, or after
    /// `chanto serve --edge-wait` with the edges that lag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub edges: Option<chanto_store::node_wire::EdgeRollout>,
}

impl DeployView {
    pub(crate) fn new(control: &Control, d: DeployRecord) -> Self {
        let c = &control.config;
        Self {
            urls: DeployUrls {
                permalink: c.url_for(&format!("{}--{}", d.id, d.site)),
                branch: c.url_for(&format!("{}--{}", d.branch_label, d.site)),
                production: d.production.then(|| c.url_for(d.site.as_str())),
            },
            id: d.id,
            site: d.site,
            branch: d.branch,
            state: d.state,
            draft: d.draft,
            rolled_back: false,
            message: d.message,
            file_count: d.file_count,
            total_size: d.total_size,
            error: d.error,
            created_at: rfc3339(d.created_at),
            finished_at: d.finished_at.map(rfc3339),
            warnings: Vec::new(),
            edges: None,
        }
    }
}

/// Body of `POST /sites`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSiteRequest {
    /// The site's name: lowercase letters, digits and single hyphens.
    pub name: SiteName,
    /// The branch served at the production URL (default `main`).
    pub production_branch: Option<BranchName>,
}

/// One file in a deploy request.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// BLAKE3 hash of the file's bytes.
    pub hash: ContentHash,
    /// Its size in bytes.
    pub size: u64,
}

/// Body of `POST /sites/{site}/deploys`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployRequest {
    /// Branch to deploy (default: the site's production branch).
    pub branch: Option<BranchName>,
    /// A message describing the deploy.
    pub message: Option<String>,
    /// Upload without activating: reachable only at its permalink.
    #[serde(default)]
    pub draft: bool,
    /// Path (relative, `/`-separated) → file.
    pub files: BTreeMap<String, FileEntry>,
}

/// Answer to `POST /sites/{site}/deploys`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreateDeployResponse {
    /// The new deploy, `uploading`.
    pub deploy: DeployView,
    /// Hashes the server lacks: upload them (small ones many at a time with
    /// `POST /deploys/{id}/blobs`, any one with `PUT /deploys/{id}/blobs/{hash}`), then finalize.
    pub required: Vec<ContentHash>,
}

/// Answer to a blob upload.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UploadResponse {
    /// The blob's hash.
    pub hash: ContentHash,
    /// Bytes stored.
    pub size: u64,
}

/// Answer to `POST /deploys/{id}/publish`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    /// The deploy, now active.
    pub deploy: DeployView,
    /// The deploy it replaced on the branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<DeployId>,
    /// Where the new routing version is live (see [`DeployView::edges`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub edges: Option<chanto_store::node_wire::EdgeRollout>,
}

/// Body of `POST /sites/{site}/rollback`.
#[derive(Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// Branch to roll back (default: production, or the branch of `to`).
    pub branch: Option<BranchName>,
    /// Roll back to this deploy of the branch (default: the one that was
    /// live before the current one; repeated rollbacks walk further back).
    #[serde(default)]
    pub to: Option<DeployId>,
}

/// Answer to `POST /sites/{site}/rollback`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RollbackResponse {
    /// The deploy that was active.
    pub from: DeployId,
    /// The deploy active now.
    pub deploy: DeployView,
    /// Where the new routing version is live (see [`DeployView::edges`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub edges: Option<chanto_store::node_wire::EdgeRollout>,
}

/// Query of `GET /sites/{site}/deploys`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListDeploysQuery {
    /// Only deploys of this branch.
    pub branch: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/sites", tag = "sites", security(("token" = [])),
    responses((status = 200, body = Vec<SiteView>), (status = 401, body = ErrorBody)))]
async fn list_sites(State(c): State<Arc<Control>>) -> Result<Json<Vec<SiteView>>, ApiError> {
    let sites = c.meta.list_sites().await?;
    Ok(Json(sites.into_iter().map(|s| SiteView::new(&c, s)).collect()))
}

#[utoipa::path(post, path = "/api/v1/sites", tag = "sites", security(("token" = [])), request_body = CreateSiteRequest,
    responses((status = 201, body = SiteView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_site(
    State(c): State<Arc<Control>>,
    ApiJson(req): ApiJson<CreateSiteRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let branch = req.production_branch.unwrap_or_else(|| "main".parse().expect("main is a branch name"));
    let site = c.create_site(&req.name, &branch).await?;
    Ok((StatusCode::CREATED, Json(SiteView::new(&c, site))))
}

#[utoipa::path(get, path = "/api/v1/sites/{site}", tag = "sites", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")),
    responses((status = 200, body = SiteView), (status = 404, body = ErrorBody)))]
async fn get_site(State(c): State<Arc<Control>>, Path(site): Path<String>) -> Result<Json<SiteView>, ApiError> {
    let site = c.site(&parse_path(&site)?).await?;
    Ok(Json(SiteView::new(&c, site)))
}

#[utoipa::path(delete, path = "/api/v1/sites/{site}", tag = "sites", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")),
    responses((status = 204, description = "Deleted; its URLs answer 404 from now on"), (status = 404, body = ErrorBody)))]
async fn delete_site(State(c): State<Arc<Control>>, Path(site): Path<String>) -> Result<StatusCode, ApiError> {
    c.delete_site(&parse_path(&site)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/deploys", tag = "deploys", security(("token" = [])),
    params(("site" = String, Path, description = "Site name"), ListDeploysQuery),
    responses((status = 200, body = Vec<DeployView>), (status = 404, body = ErrorBody)))]
async fn list_deploys(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    Query(q): Query<ListDeploysQuery>,
) -> Result<Json<Vec<DeployView>>, ApiError> {
    let site: SiteName = parse_path(&site)?;
    let branch: Option<BranchName> = q.branch.as_deref().map(parse_path).transpose()?;
    let deploys = c.meta.list_deploys(&site, branch.as_ref()).await?;
    let rolled_back = c.meta.rolled_back(&site, branch.as_ref()).await?;
    Ok(Json(
        deploys
            .into_iter()
            .map(|d| DeployView { rolled_back: rolled_back.contains(&d.id), ..DeployView::new(&c, d) })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/sites/{site}/deploys", tag = "deploys", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")), request_body = CreateDeployRequest,
    responses((status = 201, body = CreateDeployResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn create_deploy(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    ApiJson(req): ApiJson<CreateDeployRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let site: SiteName = parse_path(&site)?;
    let req = DeployRequest {
        branch: req.branch,
        message: req.message,
        draft: req.draft,
        source: "cli".into(),
        files: req.files.into_iter().map(|(p, f)| (p, FileSpec { hash: f.hash, size: f.size })).collect(),
    };
    let (deploy, required) = c.create_deploy(&site, req).await?;
    Ok((StatusCode::CREATED, Json(CreateDeployResponse { deploy: DeployView::new(&c, deploy), required })))
}

#[utoipa::path(get, path = "/api/v1/deploys/{id}", tag = "deploys", security(("token" = [])),
    params(("id" = String, Path, description = "Deploy id")),
    responses((status = 200, body = DeployView), (status = 404, body = ErrorBody)))]
async fn get_deploy(State(c): State<Arc<Control>>, Path(id): Path<String>) -> Result<Json<DeployView>, ApiError> {
    let d = c.deploy(&parse_path(&id)?).await?;
    let rolled_back =
        d.state == DeployState::Superseded && c.meta.rolled_back(&d.site, Some(&d.branch)).await?.contains(&d.id);
    Ok(Json(DeployView { rolled_back, ..DeployView::new(&c, d) }))
}

#[utoipa::path(put, path = "/api/v1/deploys/{id}/blobs/{hash}", tag = "deploys", security(("token" = [])),
    params(("id" = String, Path, description = "Deploy id"), ("hash" = String, Path, description = "BLAKE3 hash of the body")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = UploadResponse), (status = 400, body = ErrorBody, description = "hash mismatch or not part of the deploy"),
        (status = 409, body = ErrorBody, description = "the deploy is no longer uploading"), (status = 413, body = ErrorBody), (status = 507, body = ErrorBody)))]
async fn upload_blob(
    State(c): State<Arc<Control>>,
    Path((id, hash)): Path<(String, String)>,
    body: axum::body::Body,
) -> Result<impl IntoResponse, ApiError> {
    let id: DeployId = parse_path(&id)?;
    let hash: ContentHash = parse_path(&hash)?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let size = c.upload(&id, &hash, Box::pin(stream)).await?;
    Ok((StatusCode::CREATED, Json(UploadResponse { hash, size })))
}

/// Answer to a batch of blobs.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// Blobs stored.
    pub stored: u64,
    /// Their bytes.
    pub size: u64,
}

#[utoipa::path(post, path = "/api/v1/deploys/{id}/blobs", tag = "deploys", security(("token" = [])),
    params(("id" = String, Path, description = "Deploy id")),
    request_body(content = Vec<u8>, content_type = "application/vnd.chanto.blobs",
        description = "Frames, each the blob's 32-byte BLAKE3 hash, its length as 8 bytes big-endian, then its bytes \
            (at most 1 MiB a blob). Blobs before a bad frame stay stored; sending the batch again is safe."),
    responses((status = 201, body = BatchResponse), (status = 400, body = ErrorBody, description = "hash mismatch, truncated frame, or not part of the deploy"),
        (status = 409, body = ErrorBody, description = "the deploy is no longer uploading"), (status = 413, body = ErrorBody), (status = 507, body = ErrorBody)))]
async fn upload_blobs(
    State(c): State<Arc<Control>>,
    Path(id): Path<String>,
    body: axum::body::Body,
) -> Result<impl IntoResponse, ApiError> {
    use crate::batch::{BatchError, Decoder};
    let id: DeployId = parse_path(&id)?;
    let bad = |e: BatchError| {
        let status = match e {
            BatchError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BatchError::Truncated { .. } => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, "bad_batch", e.to_string())
    };
    let mut body = body.into_data_stream();
    let mut decoder = Decoder::default();
    let (mut stored, mut size) = (0u64, 0u64);
    loop {
        while let Some((hash, bytes)) = decoder.next_frame().map_err(bad)? {
            let one: chanto_store::ByteStream = Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
            size += c.upload(&id, &hash, one).await?;
            stored += 1;
        }
        match body.next().await {
            Some(chunk) => decoder.push(&chunk.map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("reading the batch: {e}"))
            })?),
            None => break,
        }
    }
    decoder.finish().map_err(bad)?;
    Ok((StatusCode::CREATED, Json(BatchResponse { stored, size })))
}

#[utoipa::path(post, path = "/api/v1/deploys/{id}/finalize", tag = "deploys", security(("token" = [])),
    params(("id" = String, Path, description = "Deploy id")),
    responses((status = 200, body = DeployView, description = "Ready, and active unless a draft"),
        (status = 409, body = ErrorBody, description = "blobs missing, or not uploading")))]
async fn finalize(State(c): State<Arc<Control>>, Path(id): Path<String>) -> Result<Json<DeployView>, ApiError> {
    let (d, warnings) = c.finalize(&parse_path(&id)?).await?;
    let edges = Some(c.edge_rollout(c.published_version()).await);
    Ok(Json(DeployView { warnings, edges, ..DeployView::new(&c, d) }))
}

#[utoipa::path(post, path = "/api/v1/deploys/{id}/publish", tag = "deploys", security(("token" = [])),
    params(("id" = String, Path, description = "Deploy id")),
    responses((status = 200, body = PublishResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn publish(State(c): State<Arc<Control>>, Path(id): Path<String>) -> Result<Json<PublishResponse>, ApiError> {
    let (d, previous) = c.publish(&parse_path(&id)?).await?;
    let edges = Some(c.edge_rollout(c.published_version()).await);
    Ok(Json(PublishResponse { deploy: DeployView::new(&c, d), previous, edges }))
}

#[utoipa::path(post, path = "/api/v1/sites/{site}/rollback", tag = "deploys", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")), request_body(content = RollbackRequest, description = "Optional; the production branch when absent"),
    responses((status = 200, body = RollbackResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "nothing to roll back to")))]
async fn rollback(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    body: bytes::Bytes,
) -> Result<Json<RollbackResponse>, ApiError> {
    let site: SiteName = parse_path(&site)?;
    let req: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("rollback body: {e}")))?
    };
    let (from, to) = c.rollback(&site, req.branch, req.to).await?;
    let edges = Some(c.edge_rollout(c.published_version()).await);
    Ok(Json(RollbackResponse { from, deploy: DeployView::new(&c, to), edges }))
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

struct TokenAuth;

impl Modify for TokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "node_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A node token (chn_…, `chanto nodes token create`): only /nodes/routing, /nodes/heartbeat and /nodes/certificates accept it"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document of the API, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(title = "chanto API", description = "Sites, deploys, activation and rollback. Authenticate with `Authorization: Bearer <token>`: a personal token (`chp_…`; `POST /api/v1/auth/token` or `chanto login --user NAME`) or the instance's admin token. Reads need the `read` scope, deploys, publish, rollback and builds `deploy`, other changes `write`; users, other people's tokens, nodes, the audit log, instance settings and configuration as code (`/platform`) `admin`."),
    paths(list_sites, create_site, get_site, delete_site, list_deploys, create_deploy, get_deploy, upload_blob, upload_blobs, finalize, publish, rollback,
        crate::access::list_access, crate::access::set_access, crate::access::clear_access,
        crate::site_settings::get_proxy_origins, crate::site_settings::put_proxy_origins,
        crate::site_settings::get_profile, crate::site_settings::put_profile,
        crate::gc::run_gc, crate::gc::get_retention, crate::gc::put_retention,
        b::connect, b::show, b::disconnect, b::list_env, b::set_env, b::unset_env, b::list_hooks, b::create_hook, b::delete_hook,
        b::list_builds, b::start_build, b::get_build, b::cancel_build, b::build_log, b::deliveries, b::webhook, b::trigger_hook,
        n::subscribe, n::list, n::remove, n::test, n::deliveries, n::delivery, n::redeliver, n::schema, n::badge,
        crate::nodes::routing, crate::nodes::heartbeat, crate::nodes::certificate, crate::nodes::list_nodes, crate::nodes::create_token,
        crate::nodes::list_tokens, crate::nodes::revoke_token,
        crate::domains::list, crate::domains::add, crate::domains::remove, crate::domains::verify, crate::domains::primary,
        crate::domains::upload, crate::domains::get_tls, crate::domains::put_tls,
        crate::base_certs::list, crate::base_certs::upload, crate::base_certs::remove,
        crate::accounts::list_users, crate::accounts::create_user, crate::accounts::get_user, crate::accounts::update_user,
        crate::accounts::delete_user, crate::accounts::invite_user, crate::accounts::list_tokens, crate::accounts::create_token, crate::accounts::revoke_token,
        crate::accounts::me, crate::accounts::audit, crate::accounts::login,
        crate::platform_ops::export, crate::platform_ops::plan, crate::platform_ops::apply),
    modifiers(&TokenAuth),
    tags((name = "sites", description = "Sites and their production branch"), (name = "deploys", description = "Deploy, activate, roll back"), (name = "access", description = "Passwords and network lists"),
        (name = "storage", description = "Retention and garbage collection: what is deleted, and when"),
        (name = "builds", description = "Git-driven builds: repository connection, variables, hooks, builds and logs"),
        (name = "notifications", description = "Email, Slack, Discord, signed webhooks, forge statuses and pull request comments; badges"),
        (name = "nodes", description = "Edge nodes: routing snapshots and heartbeats (node tokens), the node list, node tokens"),
        (name = "domains", description = "Custom domains, their certificates, HTTPS redirects and HSTS"),
        (name = "users", description = "Users and roles, personal API tokens, password sign-in, the audit log"),
        (name = "platform", description = "Configuration as code: export every site's settings as chanto.platform.toml, plan a file against what is live, apply a saved plan (admin)"))
)]
pub struct ApiDoc;

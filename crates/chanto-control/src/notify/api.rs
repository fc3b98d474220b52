//! The notifications API: subscriptions, test sends, the delivery log (authenticated); the webhook payload's JSON
//! Schema and status badges (public).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{DeliveryView, SubscribeRequest, SubscriptionView, TestResult};
use crate::api::{ApiJson, parse_path};
use crate::{ApiError, Control};

/// Adds a notification subscription to a site.
#[utoipa::path(post, path = "/api/v1/sites/{site}/notifications", tag = "notifications", request_body = SubscribeRequest,
    responses((status = 201, body = SubscriptionView)), security(("token" = [])))]
pub async fn subscribe(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    ApiJson(req): ApiJson<SubscribeRequest>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    Ok((StatusCode::CREATED, Json(c.subscribe(&parse_path(&site)?, req).await?)))
}

/// A site's notification subscriptions (secrets masked).
#[utoipa::path(get, path = "/api/v1/sites/{site}/notifications", tag = "notifications",
    responses((status = 200, body = Vec<SubscriptionView>)), security(("token" = [])))]
pub async fn list(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
) -> Result<Json<Vec<SubscriptionView>>, ApiError> {
    Ok(Json(c.subscriptions(&parse_path(&site)?).await?))
}

/// Removes a subscription and its pending deliveries.
#[utoipa::path(delete, path = "/api/v1/sites/{site}/notifications/{id}", tag = "notifications",
    responses((status = 204)), security(("token" = [])))]
pub async fn remove(
    State(c): State<Arc<Control>>,
    Path((site, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    c.unsubscribe(&parse_path(&site)?, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a sample event to one subscription now and returns what the receiver answered. For a forge it checks the
/// token against the repository instead, touching no commit or pull request.
#[utoipa::path(post, path = "/api/v1/sites/{site}/notifications/{id}/test", tag = "notifications",
    responses((status = 200, body = TestResult)), security(("token" = [])))]
pub async fn test(
    State(c): State<Arc<Control>>,
    Path((site, id)): Path<(String, String)>,
) -> Result<Json<TestResult>, ApiError> {
    Ok(Json(c.test_subscription(&parse_path(&site)?, &id).await?))
}

/// Filters of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveriesQuery {
    /// Only this subscription's.
    pub subscription: Option<String>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<u32>,
}

/// A site's notification deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/sites/{site}/notifications/deliveries", tag = "notifications", params(DeliveriesQuery),
    responses((status = 200, body = Vec<DeliveryView>)), security(("token" = [])))]
pub async fn deliveries(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    Ok(Json(c.notify_deliveries(&parse_path(&site)?, q.subscription.as_deref(), q.limit.unwrap_or(50)).await?))
}

/// One delivery with every attempt.
#[utoipa::path(get, path = "/api/v1/sites/{site}/notifications/deliveries/{id}", tag = "notifications",
    responses((status = 200, body = DeliveryView)), security(("token" = [])))]
pub async fn delivery(
    State(c): State<Arc<Control>>,
    Path((site, id)): Path<(String, String)>,
) -> Result<Json<DeliveryView>, ApiError> {
    Ok(Json(c.notify_delivery(&parse_path(&site)?, delivery_id(&id)?).await?))
}

/// Sends an ended delivery again (a new delivery with the same event and payload, due now).
#[utoipa::path(post, path = "/api/v1/sites/{site}/notifications/deliveries/{id}/redeliver", tag = "notifications",
    responses((status = 201, body = DeliveryView), (status = 409, description = "the delivery is still pending")),
    security(("token" = [])))]
pub async fn redeliver(
    State(c): State<Arc<Control>>,
    Path((site, id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    Ok((StatusCode::CREATED, Json(c.redeliver(&parse_path(&site)?, delivery_id(&id)?).await?)))
}

pub(crate) fn delivery_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", format!("delivery id {id:?} is not a number"))
    })
}

/// The JSON Schema of the generic webhook payload.
#[utoipa::path(get, path = "/api/v1/notifications/schema.json", tag = "notifications",
    responses((status = 200, description = "JSON Schema (draft 2020-12)")))]
pub async fn schema() -> Json<serde_json::Value> {
    Json(chanto_notify::webhook_schema())
}

/// A branch's status badge (SVG): its latest build, or whether it serves a deploy. Public; unknown sites and
/// branches answer an "unknown" badge.
#[utoipa::path(get, path = "/badge/{site}/{branch}.svg", tag = "notifications",
    responses((status = 200, content_type = "image/svg+xml")))]
pub async fn badge(State(c): State<Arc<Control>>, Path((site, branch)): Path<(String, String)>) -> Response {
    let Some(branch) = branch.strip_suffix(".svg") else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "badges are at /badge/<site>/<branch>.svg")
            .into_response();
    };
    let svg = c.badge(&site, branch).await;
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml; charset=utf-8"),
            // Forges proxy badges through their image caches; keep them short-lived.
            (header::CACHE_CONTROL, "no-cache, max-age=0"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        svg,
    )
        .into_response()
}

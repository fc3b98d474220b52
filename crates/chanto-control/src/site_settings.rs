//! A site's settings for the edge beyond access policies: the origins its
//! proxy rules may reach. They reach the edge in the routing table, like
//! access policies, and take effect at once on every branch of the site.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use chanto_core::{SiteName, ValidationError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::ApiJson;
use chanto_store::RoutingChange;

use crate::{ApiError, Control};

/// Most proxy origins one site may list.
pub const MAX_PROXY_ORIGINS: usize = 50;

/// The origins a site's proxy rules may reach. An edge proxies to one only
/// when its operator's `--proxy-origin` list names it too.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyOrigins {
    /// `scheme://host[:port]` each; shown normalised (`https://api.example.com:443`).
    pub origins: Vec<String>,
}

impl Control {
    /// Replaces the origins a site's proxy rules may reach, and publishes
    /// the change to the edges.
    pub async fn set_proxy_origins(&self, site: &SiteName, origins: &[String]) -> Result<ProxyOrigins, ApiError> {
        self.site(site).await?;
        if origins.len() > MAX_PROXY_ORIGINS {
            let msg = format!("{} origins; a site lists at most {MAX_PROXY_ORIGINS}", origins.len());
            return Err(ValidationError::new("origins", msg).into());
        }
        let mut normal = Vec::with_capacity(origins.len());
        for (i, o) in origins.iter().enumerate() {
            let n = chanto_core::normalize_origin(o)
                .map_err(|e| ValidationError::new(format!("origins[{i}]"), e.to_string()))?;
            normal.push(n);
        }
        normal.sort();
        normal.dedup();
        self.meta.set_proxy_origins(site, &normal).await?;
        self.publish_routing(RoutingChange::site(site)).await?;
        tracing::info!(site = %site, origins = normal.len(), "proxy origins set");
        Ok(ProxyOrigins { origins: normal })
    }

    /// The origins a site's proxy rules may reach.
    pub async fn proxy_origins(&self, site: &SiteName) -> Result<ProxyOrigins, ApiError> {
        self.site(site).await?;
        let all = self.meta.proxy_origins(Some(site)).await?;
        let origins = all.into_iter().find(|(s, _)| s == site).map(|(_, o)| o).unwrap_or_default();
        Ok(ProxyOrigins { origins })
    }
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/proxy_origins", tag = "sites", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")),
    responses((status = 200, body = ProxyOrigins), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_proxy_origins(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
) -> Result<Json<ProxyOrigins>, ApiError> {
    Ok(Json(c.proxy_origins(&site.parse()?).await?))
}

#[utoipa::path(put, path = "/api/v1/sites/{site}/proxy_origins", tag = "sites", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")), request_body = ProxyOrigins,
    responses((status = 200, body = ProxyOrigins), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn put_proxy_origins(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    ApiJson(req): ApiJson<ProxyOrigins>,
) -> Result<Json<ProxyOrigins>, ApiError> {
    Ok(Json(c.set_proxy_origins(&site.parse()?, &req.origins).await?))
}

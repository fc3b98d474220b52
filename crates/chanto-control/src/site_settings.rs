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

/// Whose defaults a site's deploys follow where the platforms differ
/// (pretty URLs, …): a deploy's `profile` in chanto.toml wins over it, and
/// it wins over the platform the deploy's rule files come from.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteProfile {
    /// `chanto`, `netlify`, `amplify` or `firebase`; `null`: each deploy's
    /// rule files decide. Applies to deploys finalized after it is set.
    #[schema(value_type = Option<String>, example = "netlify")]
    pub profile: Option<String>,
}

impl Control {
    /// Sets (or with `None` clears) the site's profile for its next deploys.
    pub async fn set_site_profile(&self, site: &SiteName, profile: Option<&str>) -> Result<SiteProfile, ApiError> {
        self.site(site).await?;
        let profile = match profile.map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => Some(p.parse::<chanto_rules::Profile>().map_err(|e| ValidationError::new("profile", e))?),
            None => None,
        };
        self.meta.set_site_profile(site, profile.map(|p| p.as_str())).await?;
        tracing::info!(site = %site, profile = ?profile.map(|p| p.as_str()), "site profile set");
        Ok(SiteProfile { profile: profile.map(|p| p.to_string()) })
    }

    /// The site's profile setting.
    pub async fn site_profile(&self, site: &SiteName) -> Result<SiteProfile, ApiError> {
        self.site(site).await?;
        Ok(SiteProfile { profile: self.meta.site_profile(site).await? })
    }
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/profile", tag = "sites", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")),
    responses((status = 200, body = SiteProfile), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_profile(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
) -> Result<Json<SiteProfile>, ApiError> {
    Ok(Json(c.site_profile(&site.parse()?).await?))
}

#[utoipa::path(put, path = "/api/v1/sites/{site}/profile", tag = "sites", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")), request_body = SiteProfile,
    responses((status = 200, body = SiteProfile), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn put_profile(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    ApiJson(req): ApiJson<SiteProfile>,
) -> Result<Json<SiteProfile>, ApiError> {
    Ok(Json(c.set_site_profile(&site.parse()?, req.profile.as_deref()).await?))
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

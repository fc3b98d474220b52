//! The base domain's own certificates (issue 17): a wildcard for `*.BASE`
//! (and `*.PREVIEW` when previews have their own domain) serves every
//! `<site>` and `<branch>--<site>` host over HTTPS. Uploaded here
//! (`chanto certs upload --base`), or ordered by DNS-01 (`acme_orders`);
//! kept in the metadata store like custom domains' certificates, and sent
//! to every edge in the routing table ([`chanto_store::BaseCertRoute`]).
//!
//! Who may reach this: the API's token holders (admin), like every
//! certificate upload. The body is bounded
//! ([`crate::domains::MAX_CERTIFICATE_BODY`]) and checked as any upload
//! ([`crate::certcheck::check_upload`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chanto_store::{CertificateSource, RoutingChange};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::ApiJson;
use crate::domains::{CertificateView, UploadCertificate, rfc3339};
use crate::{ApiError, Control};

/// A base-domain pattern (or a base host with a certificate of its own) and what it serves.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BaseCertificateView {
    /// The wildcard, e.g. `*.example.org`.
    pub pattern: String,
    /// The certificate served for it, if any.
    pub certificate: Option<CertificateView>,
    /// Why the last order failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When chanto orders again (RFC 3339), after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
}

/// An upload's answer: the patterns it now serves, and warnings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadedBaseCertificate {
    /// Every base pattern with what it serves now.
    pub base: Vec<BaseCertificateView>,
    /// Things to know ("expires in 5 days").
    pub warnings: Vec<String>,
}

impl Control {
    /// The wildcard patterns of this installation's own domains: `*.BASE`,
    /// and `*.PREVIEW` when previews have a domain of their own.
    pub fn base_patterns(&self) -> Vec<String> {
        let mut out = vec![format!("*.{}", self.config.base_domain)];
        if let Some(p) = self.config.preview_domain.as_ref().filter(|p| **p != self.config.base_domain) {
            out.push(format!("*.{p}"));
        }
        out
    }

    /// Every base pattern with its certificate and order state, then each
    /// base host that got one on demand.
    pub async fn base_certificates(&self) -> Result<Vec<BaseCertificateView>, ApiError> {
        let now = chanto_store::now_millis();
        let rows = self.meta.base_certificates().await?;
        let mut out = Vec::new();
        let mut names = self.base_patterns();
        names.extend(rows.iter().filter(|r| !r.pattern.starts_with("*.")).map(|r| r.pattern.clone()));
        for pattern in names {
            let row = rows.iter().find(|r| r.pattern == pattern);
            let certificate = match row.and_then(|r| r.cert_id.as_deref()) {
                Some(id) => self.meta.certificate(id).await?.map(|c| CertificateView::of(&c, now)),
                None => None,
            };
            out.push(BaseCertificateView {
                pattern,
                certificate,
                reason: row.and_then(|r| r.reason.clone()),
                next_attempt: row.and_then(|r| r.next_attempt_at).map(rfc3339),
            });
        }
        Ok(out)
    }

    /// Checks an uploaded certificate for the base domain and serves it for
    /// every base pattern it covers (at least one, or it is refused).
    pub async fn upload_base_certificate(&self, req: &UploadCertificate) -> Result<UploadedBaseCertificate, ApiError> {
        let service = self.domain_service()?.clone();
        let now = chanto_store::now_millis();
        let patterns = self.base_patterns();
        // Checked against the first pattern it covers; refused naming them all.
        let mut checked = None;
        let mut problem = None;
        for pattern in &patterns {
            match crate::certcheck::check_upload(
                req.chain_pem.as_bytes(),
                req.key_pem.as_bytes(),
                pattern,
                service.trust(),
                now,
            ) {
                Ok(c) => {
                    checked = Some(c);
                    break;
                }
                Err(p) if p.code == "names_do_not_cover" => problem = Some(p),
                Err(p) => return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, p.code, p.message)),
            }
        }
        let Some(checked) = checked else {
            let p = problem.expect("at least one pattern was checked");
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                p.code,
                format!(
                    "{}; the base domain's certificate must be a wildcard for {}",
                    p.message,
                    patterns.join(" or ")
                ),
            ));
        };
        let record = service.certificate_record(&checked, CertificateSource::Upload, now);
        for pattern in &patterns {
            if record.names.iter().any(|san| crate::certcheck::name_covers(san, pattern)) {
                self.meta.store_base_certificate(pattern, &record, now).await?;
            }
        }
        self.meta.prune_certificates().await?;
        // Every table re-read: the base certificates are no site's part.
        self.publish_routing(RoutingChange::All).await?;
        tracing::info!(certificate = %record.id, names = ?record.names, not_after = %rfc3339(record.not_after), "base domain certificate uploaded");
        Ok(UploadedBaseCertificate { base: self.base_certificates().await?, warnings: checked.warnings })
    }

    /// Stops serving a base pattern's certificate (plain HTTP is unchanged;
    /// with DNS-01 ordering on, a new one is ordered).
    pub async fn remove_base_certificate(&self, pattern: &str) -> Result<Vec<BaseCertificateView>, ApiError> {
        let patterns = self.base_patterns();
        if !patterns.iter().any(|p| p == pattern) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{pattern:?} is not a base pattern of this server; its patterns are {}", patterns.join(", ")),
            ));
        }
        self.meta.remove_base_certificate(pattern).await?;
        self.meta.prune_certificates().await?;
        self.publish_routing(RoutingChange::All).await?;
        tracing::info!(pattern, "base domain certificate removed");
        self.base_certificates().await
    }
}

#[utoipa::path(get, path = "/api/v1/certificates/base", tag = "domains", security(("token" = [])),
    responses((status = 200, body = Vec<BaseCertificateView>, description = "Each base pattern (`*.BASE`, `*.PREVIEW`) and its certificate")))]
pub(crate) async fn list(State(c): State<Arc<Control>>) -> Result<Json<Vec<BaseCertificateView>>, ApiError> {
    Ok(Json(c.base_certificates().await?))
}

#[utoipa::path(put, path = "/api/v1/certificates/base", tag = "domains", security(("token" = [])),
    request_body = UploadCertificate,
    responses((status = 200, body = UploadedBaseCertificate),
        (status = 413, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody, description = "The certificate was refused; `code` says why (as for a domain's upload)")))]
pub(crate) async fn upload(
    State(c): State<Arc<Control>>,
    ApiJson(req): ApiJson<UploadCertificate>,
) -> Result<Json<UploadedBaseCertificate>, ApiError> {
    Ok(Json(c.upload_base_certificate(&req).await?))
}

#[utoipa::path(delete, path = "/api/v1/certificates/base/{pattern}", tag = "domains", security(("token" = [])),
    params(("pattern" = String, Path, description = "The base pattern, e.g. `*.example.org`")),
    responses((status = 200, body = Vec<BaseCertificateView>), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn remove(
    State(c): State<Arc<Control>>,
    Path(pattern): Path<String>,
) -> Result<Json<Vec<BaseCertificateView>>, ApiError> {
    Ok(Json(c.remove_base_certificate(&pattern).await?))
}

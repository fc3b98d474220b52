//! A site's custom domains in the console: add one, see the DNS record it
//! needs and check it, make it the primary, upload its certificate (PEM
//! chain and key; the key is write-only), remove it after a page saying
//! what stops; and the site's HTTPS settings (redirect, HSTS).

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chanto_core::SiteName;
use chanto_store::Scope;
use serde::Deserialize;

use super::session::Session;
use super::{Checked, ConfirmRemove, CsrfForm, Nav, checked_post, error_page, html, signed_in, url_escape};
use crate::domains::{AddDomain, CertificateView, DomainView, MAX_HSTS_MAX_AGE, TlsSettings, UploadCertificate};
use crate::{ApiError, Control};

/// The largest certificate upload form: a chain and its key, with room to spare.
pub(super) const MAX_CERTIFICATE_FORM: usize = 64 * 1024;

pub(super) fn routes() -> Router<Arc<Control>> {
    Router::new()
        .route("/sites/{site}/domains", get(domains_page).post(add))
        .route("/sites/{site}/domains/{name}/verify", post(verify))
        .route("/sites/{site}/domains/{name}/primary", post(primary))
        .route("/sites/{site}/domains/{name}/remove", get(remove_page).post(remove))
        .route(
            "/sites/{site}/domains/{name}/certificate",
            get(certificate_page).post(upload).layer(DefaultBodyLimit::max(MAX_CERTIFICATE_FORM)),
        )
        .route("/sites/{site}/tls", post(save_tls))
}

/// What a change's redirect says it did: `did` one of a fixed set of
/// verbs, `done` a name the page echoes only if it exists.
#[derive(Deserialize, Default)]
pub(super) struct Did {
    pub done: Option<String>,
    pub did: Option<String>,
}

/// The redirect after a change: back to `back`, saying what was done to `name`.
pub(super) fn did(back: &str, did: &str, name: &str) -> Response {
    Redirect::to(&format!("{back}?did={did}&done={}", url_escape(name))).into_response()
}

/// A certificate in a line: who issued it and until when.
pub(super) fn describe(c: &CertificateView) -> String {
    format!("{} from {}, valid until {} ({} days left)", c.source, c.issuer, &c.not_after[..10], c.days_left)
}

/// Audits a certificate upload's end. A certificate the checks refused
/// (422) comes back as its message, naming the field at fault, for the
/// form to show; any other error as its page.
pub(super) async fn finish_upload<T>(
    p: &Checked,
    c: &Control,
    result: Result<T, ApiError>,
) -> Result<T, Result<String, Response>> {
    let status = result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200);
    c.audit(&p.s.principal, &p.source, p.action, &p.target, status).await;
    match result {
        Ok(v) => Ok(v),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            let field = if e.code.starts_with("key_") { "Private key" } else { "Certificate chain" };
            Err(Ok(format!("{field}: {}", e.message)))
        }
        Err(e) => Err(Err(error_page(Some(&p.s), e, &p.back))),
    }
}

/// An upload form too large for [`MAX_CERTIFICATE_FORM`] (or not a form) as a console page.
pub(super) fn refused_form(r: FormRejection) -> Response {
    let e = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "The certificate chain and key are more than {} KiB together: paste only the chain (leaf first, then \
                 its intermediates) and its private key.",
                MAX_CERTIFICATE_FORM / 1024
            ),
        )
    } else {
        ApiError::new(r.status(), "invalid_request", r.body_text())
    };
    error_page(None, e, "/")
}

/// The certificate form's fields.
#[derive(Deserialize)]
pub(super) struct UploadForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub chain_pem: String,
    #[serde(default)]
    pub key_pem: String,
}

struct DomainRow {
    name: String,
    url: String,
    primary: bool,
    branch: Option<String>,
    state: String,
    reason: Option<String>,
    certificate: String,
    next: String,
}

/// A site's HTTPS settings as the page shows them.
struct Tls {
    https_redirect: bool,
    hsts_max_age: u64,
    hsts_include_subdomains: bool,
    hsts_preload: bool,
}

#[derive(Template)]
#[template(path = "console/domains.html")]
struct DomainsPage {
    nav: Option<Nav>,
    site: String,
    notice: Option<String>,
    domains: Vec<DomainRow>,
    tls: Tls,
    can_write: bool,
    csrf: String,
}

fn here(site: &str) -> String {
    format!("/sites/{}/domains", url_escape(site))
}

/// What a redirect's `did` and `done` say, about names of this site only.
fn notice_of(q: &Did, listed: &[DomainView]) -> Option<String> {
    if q.did.as_deref() == Some("remove") {
        return Some("Removed: the edges no longer route it to this site.".to_owned());
    }
    if q.did.as_deref() == Some("tls") {
        return Some("HTTPS settings saved; the edges apply them at once.".to_owned());
    }
    let d = listed.iter().find(|d| Some(d.name.as_str()) == q.done.as_deref())?;
    Some(match q.did.as_deref() {
        Some("add") => format!("Added {}: create its DNS record (below), then check it.", d.name),
        Some("primary") => format!("{} is the primary domain now: the site's other domains redirect to it.", d.name),
        _ if d.state == "pending_verification" => {
            let why = d.reason.as_deref().unwrap_or("no answer");
            format!("Checked {}: it does not reach this installation yet ({why}).", d.name)
        }
        _ => format!("{} reaches this installation ({}).", d.name, d.state.replace('_', " ")),
    })
}

/// The domains page of `site` (a notice of its own, or what `q` says).
async fn view(c: &Control, s: &Session, site: &str, q: &Did, notice: Option<String>) -> Response {
    let result = async {
        let name: SiteName = crate::api::parse_path(site)?;
        let listed = c.list_domains(&name).await?;
        let tls = c.tls_settings(&name).await?;
        let notice = notice.or_else(|| notice_of(q, &listed));
        let domains = listed
            .into_iter()
            .map(|d| DomainRow {
                next: match d.state.as_str() {
                    "pending_verification" => {
                        format!("Create DNS {} {} → {}, then check.", d.dns.kind, d.dns.name, d.dns.value)
                    }
                    _ => d.hint.clone().unwrap_or_default(),
                },
                certificate: d.certificate.as_ref().map_or("none yet".to_owned(), describe),
                name: d.name,
                url: d.url,
                primary: d.primary,
                branch: d.branch,
                state: d.state,
                reason: d.reason,
            })
            .collect();
        Ok::<_, ApiError>(DomainsPage {
            nav: Nav::of(s, "sites"),
            site: name.to_string(),
            notice,
            domains,
            tls: Tls {
                https_redirect: tls.https_redirect.unwrap_or(true),
                hsts_max_age: tls.hsts_max_age.unwrap_or(0),
                hsts_include_subdomains: tls.hsts_include_subdomains.unwrap_or(false),
                hsts_preload: tls.hsts_preload.unwrap_or(false),
            },
            can_write: s.may(Scope::Write),
            csrf: s.csrf.clone(),
        })
    }
    .await;
    match result {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => error_page(Some(s), e, &format!("/sites/{}", url_escape(site))),
    }
}

async fn domains_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(q): Query<Did>,
) -> Response {
    match signed_in(&c, &headers, &here(&site)).await {
        Ok(s) => view(&c, &s, &site, &q, None).await,
        Err(r) => r,
    }
}

/// The API path of a site's domain `name` plus `rest`, as audited.
fn api_target(site: &str, name: &str, rest: &str) -> String {
    format!("/api/v1/sites/{}/domains/{}{rest}", url_escape(site), url_escape(name))
}

#[derive(Deserialize)]
struct AddForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    branch: String,
    www: Option<String>,
}

async fn add(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<AddForm>,
) -> Response {
    let (back, target) = (here(&site), format!("/api/v1/sites/{}/domains", url_escape(&site)));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("add", target, back.clone())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let branch = Some(f.branch.trim()).filter(|b| !b.is_empty()).map(str::to_owned);
        let req = AddDomain { name: f.name.trim().to_owned(), branch, www: Some(f.www.is_some()) };
        c.add_domain(&name, &req).await
    }
    .await;
    p.finish(&c, 201, result, |added| did(&back, "add", added.first().map_or("", |d| d.name.as_str()))).await
}

async fn verify(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((site, domain)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (back, target) = (here(&site), api_target(&site, &domain, "/verify"));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("verify", target, back.clone())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async { c.verify_domain(&crate::api::parse_path(&site)?, &domain).await }.await;
    p.finish(&c, 200, result, |d| did(&back, "verify", &d.name)).await
}

async fn primary(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((site, domain)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (back, target) = (here(&site), api_target(&site, &domain, "/primary"));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("primary", target, back.clone())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async { c.set_primary_domain(&crate::api::parse_path(&site)?, &domain).await }.await;
    p.finish(&c, 200, result, |d| did(&back, "primary", &d.name)).await
}

/// A domain of `site` the signed-in user may change (`Scope::Write`).
async fn writable_domain(
    c: &Control,
    s: &Session,
    site: &str,
    name: &str,
) -> Result<(DomainView, Vec<DomainView>), ApiError> {
    s.principal.require(Scope::Write)?;
    let mut all = c.list_domains(&crate::api::parse_path(site)?).await?;
    let at = all
        .iter()
        .position(|d| d.name == name)
        .ok_or_else(|| ApiError::not_found(format!("domain {name:?} of site {site}")))?;
    Ok((all.remove(at), all))
}

async fn remove_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path((site, name)): Path<(String, String)>,
) -> Response {
    let s = match signed_in(&c, &headers, &here(&site)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (d, others) = match writable_domain(&c, &s, &site, &name).await {
        Ok(found) => found,
        Err(e) => return error_page(Some(&s), e, &here(&site)),
    };
    let mut what = vec![format!(
        "The edges stop routing {} to {site} at once: requests for it reach no site of this installation.",
        d.name
    )];
    let twin = format!("www.{}", d.name);
    if others.iter().any(|o| o.name == twin) {
        what.push(format!("{twin} goes too if it was added with {}.", d.name));
    }
    what.push(match &d.certificate {
        Some(cert) => format!(
            "Its certificate ({}) is no longer served for it, and is deleted unless another name uses it.",
            describe(cert)
        ),
        None => "It has no certificate.".to_owned(),
    });
    if d.primary {
        what.push("It is the primary domain: the site's other domains stop redirecting to it.".to_owned());
    }
    let page = ConfirmRemove {
        nav: Nav::of(&s, "sites"),
        title: format!("Remove {} from {site}?", d.name),
        what,
        action: format!("/sites/{site}/domains/{}/remove", d.name),
        button: format!("Remove {}", d.name),
        back: here(&site),
        csrf: s.csrf.clone(),
    };
    html(StatusCode::OK, &page)
}

async fn remove(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((site, domain)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (back, target) = (here(&site), api_target(&site, &domain, ""));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("remove", target, back.clone())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async { c.remove_domain(&crate::api::parse_path(&site)?, &domain).await }.await;
    p.finish(&c, 200, result, |_| did(&back, "remove", "")).await
}

#[derive(Template)]
#[template(path = "console/domain_certificate.html")]
struct CertificatePage {
    nav: Option<Nav>,
    site: String,
    name: String,
    current: String,
    upload_action: String,
    chain: String,
    cert_error: Option<String>,
    csrf: String,
}

/// A domain's certificate form (`chain` kept after a refusal, the key never).
async fn certificate_view(
    c: &Control,
    s: &Session,
    (site, name): (&str, &str),
    chain: String,
    cert_error: Option<String>,
) -> Response {
    let d = match writable_domain(c, s, site, name).await {
        Ok((d, _)) => d,
        Err(e) => return error_page(Some(s), e, &here(site)),
    };
    let status = if cert_error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = CertificatePage {
        nav: Nav::of(s, "sites"),
        site: site.to_owned(),
        current: d.certificate.as_ref().map_or("none".to_owned(), describe),
        upload_action: format!("/sites/{site}/domains/{}/certificate", d.name),
        name: d.name,
        chain,
        cert_error,
        csrf: s.csrf.clone(),
    };
    html(status, &page)
}

async fn certificate_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path((site, name)): Path<(String, String)>,
) -> Response {
    match signed_in(&c, &headers, &here(&site)).await {
        Ok(s) => certificate_view(&c, &s, (&site, &name), String::new(), None).await,
        Err(r) => r,
    }
}

async fn upload(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((site, domain)): Path<(String, String)>,
    form: Result<Form<UploadForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(r) => return refused_form(r),
    };
    let (back, target) = (here(&site), api_target(&site, &domain, "/certificate"));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("upload", target, back.clone())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let req = UploadCertificate { chain_pem: f.chain_pem, key_pem: f.key_pem };
    let result = async { c.upload_certificate(&crate::api::parse_path(&site)?, &domain, &req).await }.await;
    match finish_upload(&p, &c, result).await {
        Ok(up) => {
            let mut notice = match &up.domain.certificate {
                Some(cert) => format!("{} serves the uploaded certificate now: {}.", up.domain.name, describe(cert)),
                None => format!("{} serves the uploaded certificate now.", up.domain.name),
            };
            for w in &up.warnings {
                notice.push_str(&format!(" Note: {w}."));
            }
            view(&c, &p.s, &site, &Did::default(), Some(notice)).await
        }
        Err(Ok(problem)) => certificate_view(&c, &p.s, (&site, &domain), req.chain_pem, Some(problem)).await,
        Err(Err(page)) => page,
    }
}

#[derive(Deserialize)]
struct TlsForm {
    #[serde(default)]
    csrf: String,
    https_redirect: Option<String>,
    #[serde(default)]
    hsts_max_age: String,
    hsts_include_subdomains: Option<String>,
    hsts_preload: Option<String>,
}

async fn save_tls(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<TlsForm>,
) -> Response {
    let (back, target) = (here(&site), format!("/api/v1/sites/{}/tls", url_escape(&site)));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("put_tls", target, back.clone())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let max_age = f.hsts_max_age.trim().parse::<u64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!(
                    "HSTS max-age: a whole number of seconds, 0 (no header) to {MAX_HSTS_MAX_AGE} (two years); \
                     a year is 31536000"
                ),
            )
            .field("hsts_max_age")
        })?;
        let req = TlsSettings {
            https_redirect: Some(f.https_redirect.is_some()),
            hsts_max_age: Some(max_age),
            hsts_include_subdomains: Some(f.hsts_include_subdomains.is_some()),
            hsts_preload: Some(f.hsts_preload.is_some()),
        };
        c.set_tls_settings(&name, &req).await
    }
    .await;
    p.finish(&c, 200, result, |_| did(&back, "tls", "")).await
}

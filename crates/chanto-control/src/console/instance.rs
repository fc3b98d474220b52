//! The installation's own settings in the console (admins only, as in the
//! API): the base domain's certificates (list, upload PEM chain and key,
//! remove after a confirmation) and node tokens (list, make one — shown
//! once — and revoke after a confirmation).

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use chanto_store::Scope;
use serde::Deserialize;

use super::domains::{Did, MAX_CERTIFICATE_FORM, UploadForm, describe, did, finish_upload, refused_form};
use super::session::Session;
use super::{ConfirmRemove, CsrfForm, Nav, checked_post, error_page, html, signed_in, url_escape, when};
use crate::base_certs::BaseCertificateView;
use crate::domains::UploadCertificate;
use crate::{ApiError, Control};

const HERE: &str = "/instance";

pub(super) fn routes() -> Router<Arc<Control>> {
    Router::new()
        .route(HERE, get(instance_page))
        .route("/instance/base-certificates", post(upload_base).layer(DefaultBodyLimit::max(MAX_CERTIFICATE_FORM)))
        .route("/instance/base-certificates/{pattern}/remove", get(remove_base_page).post(remove_base))
        .route("/instance/node-tokens", post(make_node_token))
        .route("/instance/node-tokens/{id}/revoke", get(revoke_page).post(revoke))
}

struct BaseRow {
    pattern: String,
    /// Its removal's confirmation page.
    remove: String,
    certificate: Option<String>,
    reason: Option<String>,
}

struct NodeTokenRow {
    id: String,
    name: String,
    created: String,
    state: String,
    last_used: String,
    active: bool,
}

#[derive(Template)]
#[template(path = "console/instance.html")]
struct InstancePage {
    nav: Option<Nav>,
    notice: Option<String>,
    new_token: Option<String>,
    base: Vec<BaseRow>,
    tokens: Vec<NodeTokenRow>,
    upload_action: String,
    chain: String,
    cert_error: Option<String>,
    csrf: String,
}

/// What the page shows beyond the lists: a notice, the one showing of a
/// new token, an upload refused (its chain kept, never its key).
#[derive(Default)]
struct Extra {
    notice: Option<String>,
    new_token: Option<String>,
    chain: String,
    cert_error: Option<String>,
}

/// What a redirect's `did` and `done` say (only patterns and token ids that exist are named).
fn notice_of(q: &Did, base: &[BaseCertificateView], tokens: &[chanto_store::NodeToken]) -> Option<String> {
    let done = q.done.as_deref()?;
    match q.did.as_deref()? {
        "remove" => base.iter().find(|b| b.pattern == done).map(|b| {
            format!("{} has no certificate of its own any more: its hosts are served over plain HTTP.", b.pattern)
        }),
        "revoke" => tokens
            .iter()
            .find(|t| t.id == done)
            .map(|t| format!("Revoked {} ({}): nodes using it are refused from now on.", t.id, t.name)),
        _ => None,
    }
}

async fn view(c: &Control, s: &Session, q: &Did, extra: Extra) -> Response {
    let result = async {
        s.principal.require(Scope::Admin)?;
        let base = c.base_certificates().await?;
        let tokens = c.meta.list_node_tokens().await?;
        let notice = extra.notice.or_else(|| notice_of(q, &base, &tokens));
        Ok::<_, ApiError>(InstancePage {
            nav: Nav::of(s, "instance"),
            notice,
            new_token: extra.new_token,
            base: base
                .into_iter()
                .map(|b| BaseRow {
                    certificate: b.certificate.as_ref().map(describe),
                    remove: format!("/instance/base-certificates/{}/remove", url_escape(&b.pattern)),
                    pattern: b.pattern,
                    reason: b.reason,
                })
                .collect(),
            tokens: tokens
                .into_iter()
                .map(|t| NodeTokenRow {
                    state: t.revoked_at.map_or("active".to_owned(), |at| format!("revoked {}", when(at))),
                    active: t.revoked_at.is_none(),
                    created: when(t.created_at),
                    last_used: t.last_used_at.map_or("never".to_owned(), when),
                    id: t.id,
                    name: t.name,
                })
                .collect(),
            upload_action: "/instance/base-certificates".to_owned(),
            chain: extra.chain,
            cert_error: extra.cert_error.clone(),
            csrf: s.csrf.clone(),
        })
    }
    .await;
    let status = if extra.cert_error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    match result {
        Ok(page) => html(status, &page),
        Err(e) => error_page(Some(s), e, "/"),
    }
}

async fn instance_page(State(c): State<Arc<Control>>, headers: HeaderMap, Query(q): Query<Did>) -> Response {
    match signed_in(&c, &headers, HERE).await {
        Ok(s) => view(&c, &s, &q, Extra::default()).await,
        Err(r) => r,
    }
}

async fn upload_base(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<UploadForm>, FormRejection>,
) -> Response {
    let f = match form {
        Ok(Form(f)) => f,
        Err(r) => return refused_form(r),
    };
    let what = ("upload", "/api/v1/certificates/base".to_owned(), HERE.to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let req = UploadCertificate { chain_pem: f.chain_pem, key_pem: f.key_pem };
    let result = c.upload_base_certificate(&req).await;
    let extra = match finish_upload(&p, &c, result).await {
        Ok(up) => {
            let mut notice = "Uploaded: the base patterns it covers are served with it (below).".to_owned();
            for w in &up.warnings {
                notice.push_str(&format!(" Note: {w}."));
            }
            Extra { notice: Some(notice), ..Extra::default() }
        }
        Err(Ok(problem)) => Extra { chain: req.chain_pem, cert_error: Some(problem), ..Extra::default() },
        Err(Err(page)) => return page,
    };
    view(&c, &p.s, &Did::default(), extra).await
}

/// The confirmation page of an admin's removal, when `found` names its target.
async fn confirm(
    c: &Control,
    headers: &HeaderMap,
    found: impl AsyncFnOnce() -> Result<ConfirmRemove, ApiError>,
) -> Response {
    let s = match signed_in(c, headers, HERE).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = match s.principal.require(Scope::Admin) {
        Ok(()) => found().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(page) => html(StatusCode::OK, &ConfirmRemove { nav: Nav::of(&s, "instance"), csrf: s.csrf.clone(), ..page }),
        Err(e) => error_page(Some(&s), e, HERE),
    }
}

async fn remove_base_page(State(c): State<Arc<Control>>, headers: HeaderMap, Path(pattern): Path<String>) -> Response {
    confirm(&c, &headers, async || {
        let b = c.base_certificates().await?.into_iter().find(|b| b.pattern == pattern).ok_or_else(|| {
            ApiError::not_found(format!("{pattern:?} is not a base pattern of this server"))
        })?;
        let cert = b.certificate.as_ref().map_or("none".to_owned(), describe);
        Ok(ConfirmRemove {
            nav: None,
            title: format!("Remove the certificate of {}?", b.pattern),
            what: vec![
                format!("Its certificate ({cert}) is no longer served: site hosts under {} get no HTTPS handshake until another one is uploaded (with DNS-01 ordering on, a new one is ordered).", b.pattern),
                "Plain HTTP is unchanged; custom domains keep their own certificates.".to_owned(),
            ],
            action: format!("/instance/base-certificates/{}/remove", url_escape(&b.pattern)),
            button: format!("Remove the certificate of {}", b.pattern),
            back: HERE.to_owned(),
            csrf: String::new(),
        })
    })
    .await
}

async fn remove_base(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(pattern): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("remove", format!("/api/v1/certificates/base/{}", url_escape(&pattern)), HERE.to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = c.remove_base_certificate(&pattern).await;
    p.finish(&c, 200, result, |_| did(HERE, "remove", &pattern)).await
}

#[derive(Deserialize)]
struct NodeTokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

async fn make_node_token(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<NodeTokenForm>,
) -> Response {
    let what = ("create_token", "/api/v1/nodes/tokens".to_owned(), HERE.to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = c.create_node_token(f.name.trim()).await;
    let made =
        result.as_ref().ok().map(|(t, token)| (format!("Made node token {} ({}).", t.id, t.name), token.clone()));
    let page = p.finish(&c, 201, result, |_| Response::default()).await;
    match made {
        // Shown in this answer only (never in a URL, never again).
        Some((notice, token)) => {
            view(&c, &p.s, &Did::default(), Extra { notice: Some(notice), new_token: Some(token), ..Extra::default() })
                .await
        }
        None => page,
    }
}

async fn revoke_page(State(c): State<Arc<Control>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    confirm(&c, &headers, async || {
        let t = c
            .meta
            .list_node_tokens()
            .await?
            .into_iter()
            .find(|t| t.id == id && t.revoked_at.is_none())
            .ok_or_else(|| ApiError::not_found(format!("active node token {id:?}")))?;
        Ok(ConfirmRemove {
            nav: None,
            title: format!("Revoke node token {} ({})?", t.id, t.name),
            what: vec![
                "Every node using it is refused from its next request on (by other control processes within seconds): \
                 give those nodes a new token first."
                    .to_owned(),
                "Revoking cannot be undone; the token stays listed as revoked.".to_owned(),
            ],
            action: format!("/instance/node-tokens/{}/revoke", url_escape(&t.id)),
            button: format!("Revoke {} ({})", t.id, t.name),
            back: HERE.to_owned(),
            csrf: String::new(),
        })
    })
    .await
}

async fn revoke(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("revoke_token", format!("/api/v1/nodes/tokens/{}", url_escape(&id)), HERE.to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = c.revoke_node_token(&id).await;
    p.finish(&c, 200, result, |t| did(HERE, "revoke", &t.id)).await
}

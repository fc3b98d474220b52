//! The web console (issue 18): server-rendered HTML on the API listener,
//! templates checked at compile time (askama), no third-party hosts, a
//! Content-Security-Policy without inline script, pages that work with
//! JavaScript off (forms are plain POSTs).
//!
//! Who may reach it: anyone may see `/login`; every other page needs a
//! session ([`session`]), and each action the scope the API would ask for
//! (publish and rollback: `deploy`; the audit log: `admin`). Every POST
//! carries the session's CSRF token and, when the browser sends `Origin`,
//! must come from this console's origin. Every change is audited as the
//! API's are.

mod domains;
pub mod dotenv;
mod git;
mod instance;
pub mod log;
mod notifications;
mod oidc;
pub mod session;
mod settings;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chanto_core::{BranchName, DeployId, DeployState, SiteName};
use chanto_store::{AuditQuery, DeployRecord, Scope, UserRecord};
use serde::Deserialize;

use crate::api::{DeployView, SiteView};
use crate::{ApiError, Control};
use session::Session;

/// The largest form the console accepts.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// The largest `.env` paste.
const MAX_ENV_BYTES: usize = 128 * 1024;
/// Deploys shown on a site's page, at most.
const DEPLOYS_SHOWN: usize = 100;

/// The console's routes (merged into the API router, which adds the state).
pub fn router() -> Router<Arc<Control>> {
    Router::new()
        .route("/", get(sites_page))
        .route("/sites", post(site_create))
        .route("/sites/{site}/delete", get(site_delete_page).post(site_delete))
        .route("/login", get(login_page).post(login_submit))
        .route("/logout", post(logout))
        .route("/invite/{token}", get(invite_page).post(invite_accept))
        .route("/sites/{site}", get(site_page))
        .route("/sites/{site}/deploys/{id}", get(deploy_page))
        .route("/sites/{site}/deploys/{id}/activate", get(confirm_activate).post(activate))
        .route("/sites/{site}/builds", post(start_build))
        .route("/sites/{site}/env", get(env_page).post(env_save).layer(DefaultBodyLimit::max(MAX_ENV_BYTES)))
        .route("/sites/{site}/env/remove", post(env_remove))
        .route("/sites/{site}/access", get(access_page).post(access_change))
        .route("/sites/{site}/access/clear", post(access_clear))
        .route("/builds/{id}", get(build_page))
        .route("/builds/{id}/events", get(build_events))
        .route("/builds/{id}/log.txt", get(raw_log))
        .route("/builds/{id}/cancel", post(cancel_build))
        .route("/account", get(account_page))
        .route("/account/tokens", post(account_make_token))
        .route("/account/tokens/{id}/revoke", post(account_revoke_token))
        .route("/account/sign-out-everywhere", post(sign_out_everywhere))
        .route("/health", get(health_page))
        .route("/audit", get(audit_page))
        .merge(domains::routes())
        .merge(instance::routes())
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .merge(oidc::routes())
        .merge(git::routes())
        .merge(notifications::routes())
        .merge(settings::routes())
        .merge(users::routes())
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(middleware::from_fn(security_headers))
}

/// What every console answer carries: a strict CSP (no inline script, no
/// other hosts, no framing), no sniffing, no referrer to other origins, and
/// pages never cached (they show live state and CSRF tokens).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    // A request axum's extractors refused (a malformed form or query, a
    // body too large) answers in plain text: give it the console's page.
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    if resp.status().is_client_error() && plain {
        let status = resp.status();
        let bytes = axum::body::to_bytes(std::mem::take(resp.body_mut()), 4096).await.unwrap_or_default();
        let message = format!("The request was not one this page takes: {}", String::from_utf8_lossy(&bytes).trim());
        resp = error_page(None, ApiError::new(status, "invalid_request", message), "/");
    }
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")],
        include_str!("../../assets/console.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")],
        include_str!("../../assets/console.js"),
    )
}

/// The navigation bar's facts.
struct Nav {
    section: &'static str,
    user: String,
    role: String,
    admin: bool,
    csrf: String,
}

impl Nav {
    fn of(s: &Session, section: &'static str) -> Option<Nav> {
        Some(Nav {
            section,
            user: s.user.name.clone(),
            role: s.user.role.to_string(),
            admin: s.may(Scope::Admin),
            csrf: s.csrf.clone(),
        })
    }
}

fn html(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage {
    nav: Option<Nav>,
    title: String,
    message: String,
    back: String,
}

/// An error as a page: the API's message, the status it carries.
fn error_page(session: Option<&Session>, e: ApiError, back: &str) -> Response {
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible now",
        s if s.is_client_error() => "That did not work",
        _ => "Something went wrong",
    };
    let page = MessagePage {
        nav: session.and_then(|s| Nav::of(s, "")),
        title: title.to_owned(),
        message: with_field(&e),
        back: back.to_owned(),
    };
    html(e.status, &page)
}

/// A page of `site` as read, changed by `edit`, or the error that kept it from being read.
fn render_edited<P: Template>(
    s: &Session,
    site: &str,
    status: StatusCode,
    page: Result<P, ApiError>,
    edit: impl FnOnce(&mut P),
) -> Response {
    match page {
        Ok(mut page) => {
            edit(&mut page);
            html(status, &page)
        }
        Err(e) => error_page(Some(s), e, &format!("/sites/{}", url_escape(site))),
    }
}

/// An error's message, naming the field to fix when the message does not.
fn with_field(e: &ApiError) -> String {
    match &e.field {
        Some(f) if !e.message.contains(f.as_str()) => format!("{} (field: {f})", e.message),
        _ => e.message.clone(),
    }
}

/// A local path to go back to after signing in (never another origin).
fn safe_next(next: &str) -> String {
    let ok = next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') && next.len() < 2048;
    if ok { next.to_owned() } else { "/".to_owned() }
}

/// The signed-in session, or a redirect to the sign-in page (coming back here after).
async fn signed_in(c: &Control, headers: &HeaderMap, here: &str) -> Result<Session, Response> {
    match c.session_of(headers).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => {
            let next: String = url_escape(here);
            Err(Redirect::to(&format!("/login?next={next}")).into_response())
        }
        Err(e) => Err(error_page(None, e.into(), "/")),
    }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Refuses a POST without this session's CSRF token, or from another
/// origin (when the browser says where it comes from).
fn check_post(s: &Session, headers: &HeaderMap, csrf: &str) -> Result<(), ApiError> {
    use subtle_eq::eq;
    let forbidden = |why: &str| ApiError::new(StatusCode::FORBIDDEN, "forbidden", why.to_owned());
    if !eq(csrf.as_bytes(), s.csrf.as_bytes()) {
        return Err(forbidden("the form was stale or not this console's; reload the page and try again"));
    }
    if !same_origin(headers) {
        return Err(forbidden("the request came from another site"));
    }
    Ok(())
}

/// Whether a request comes from this console's own origin (or its browser
/// does not say where it comes from).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
}

/// Constant-time comparison (no early exit on the first differing byte).
mod subtle_eq {
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// A console POST that passed its checks: who, from where, and what it does.
struct Checked {
    s: Session,
    source: String,
    action: &'static str,
    target: String,
    back: String,
}

/// The checks every console POST makes before it changes anything: a live
/// session (else the sign-in page, coming back to `back`), the session's
/// CSRF token and this console's origin, and `scope`. A refusal is audited
/// as `action` on `target` and answered with an error page leading to `back`.
async fn checked_post(
    c: &Control,
    headers: &HeaderMap,
    peer: &Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    csrf: &str,
    scope: Scope,
    (action, target, back): (&'static str, String, String),
) -> Result<Checked, Response> {
    let s = signed_in(c, headers, &back).await?;
    let source = source(peer.as_ref().map(|e| &e.0));
    if let Err(e) = check_post(&s, headers, csrf).and_then(|()| s.principal.require(scope)) {
        c.audit(&s.principal, &source, action, &target, e.status.as_u16()).await;
        return Err(error_page(Some(&s), e, &back));
    }
    Ok(Checked { s, source, action, target, back })
}

impl Checked {
    /// Audits how the change ended (`ok` is the status of a success) and
    /// answers with `done` of its value, or an error page.
    async fn finish<T>(
        &self,
        c: &Control,
        ok: u16,
        result: Result<T, ApiError>,
        done: impl FnOnce(T) -> Response,
    ) -> Response {
        let status = result.as_ref().map_or_else(|e| e.status.as_u16(), |_| ok);
        c.audit(&self.s.principal, &self.source, self.action, &self.target, status).await;
        match result {
            Ok(v) => done(v),
            Err(e) => error_page(Some(&self.s), e, &self.back),
        }
    }
}

fn source(peer: Option<&ConnectInfo<SocketAddr>>) -> String {
    peer.map_or("unknown".to_owned(), |c| c.0.ip().to_string())
}

// ---- sign in and out ----

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    nav: Option<Nav>,
    error: Option<String>,
    next: String,
    user: String,
    /// The single sign-on button's provider name, when configured.
    sso: Option<String>,
    sso_href: String,
}

impl LoginPage {
    fn new(c: &Control, error: Option<String>, next: String, user: String) -> LoginPage {
        let sso = c.oidc.get().map(|o| o.config().label.clone());
        let sso_href = format!("/login/oidc?next={}", url_escape(&next));
        LoginPage { nav: None, error, next, user, sso, sso_href }
    }
}

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(State(c): State<Arc<Control>>, headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref().unwrap_or("/"));
    if let Ok(Some(_)) = c.session_of(&headers).await {
        return Redirect::to(&next).into_response();
    }
    html(StatusCode::OK, &LoginPage::new(&c, None, next, String::new()))
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    next: String,
}

async fn login_submit(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let source = source(peer.as_ref().map(|e| &e.0));
    let next = safe_next(&f.next);
    // A sign-in form posted from another site is refused (login CSRF).
    if !same_origin(&headers) {
        let e = ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the sign-in came from another site");
        return error_page(None, e, "/login");
    }
    let user = match c.check_sign_in(&source, &f.user, f.password).await {
        Ok(u) => u,
        Err(e) => {
            let page = LoginPage::new(&c, Some(e.message.clone()), next, f.user);
            return html(e.status, &page);
        }
    };
    let https = session::request_is_https(&headers, &peer);
    start_signed_in(&c, user, (&source, "/login"), https, &next).await
}

/// Starts a session for a user who just signed in (audited as a console
/// sign-in at `path`) and goes on to `next` with its cookie.
async fn start_signed_in(
    c: &Control,
    user: UserRecord,
    (source, path): (&str, &str),
    https: bool,
    next: &str,
) -> Response {
    let id = match c.start_session(&user).await {
        Ok(id) => id,
        Err(e) => return error_page(None, e.into(), "/login"),
    };
    let principal = crate::auth::Principal {
        actor: user.name.clone(),
        via: "console".to_owned(),
        scope: user.role.max_scope(),
        user: Some(user),
    };
    c.audit(&principal, source, "console_login", path, 303).await;
    let mut resp = Redirect::to(next).into_response();
    resp.headers_mut().append(header::SET_COOKIE, session::set_cookie(Some(&id), https));
    resp
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(c): State<Arc<Control>>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(Some(s)) = c.session_of(&headers).await {
        if let Err(e) = check_post(&s, &headers, &f.csrf) {
            return error_page(Some(&s), e, "/");
        }
        if let Err(e) = c.end_session(&s).await {
            return error_page(Some(&s), e.into(), "/");
        }
    }
    // Cleared under both names (plain HTTP and HTTPS).
    resp.headers_mut().append(header::SET_COOKIE, session::set_cookie(None, false));
    resp.headers_mut().append(header::SET_COOKIE, session::set_cookie(None, true));
    resp
}

// ---- invitations ----

#[derive(Template)]
#[template(path = "console/invite.html")]
struct InvitePage {
    nav: Option<Nav>,
    user: String,
    token: String,
    error: Option<String>,
}

/// A link that is not (or no longer) an invitation.
fn invite_gone() -> Response {
    let e = ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "This invitation link was used already, has expired, or was replaced by a newer one; ask an admin for a new one \
         (`chanto users invite NAME`).",
    );
    error_page(None, e, "/login")
}

async fn invite_page(State(c): State<Arc<Control>>, Path(token): Path<String>) -> Response {
    match c.meta.invite(&crate::accounts::invite_hash(&token), chanto_store::now_millis()).await {
        Ok(Some(user)) => html(StatusCode::OK, &InvitePage { nav: None, user: user.name, token, error: None }),
        Ok(None) => invite_gone(),
        Err(e) => error_page(None, e.into(), "/login"),
    }
}

#[derive(Deserialize, Default)]
struct InviteForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

async fn invite_accept(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(f): Form<InviteForm>,
) -> Response {
    let hash = crate::accounts::invite_hash(&token);
    let now = chanto_store::now_millis();
    let user = match c.meta.invite(&hash, now).await {
        Ok(Some(u)) => u,
        Ok(None) => return invite_gone(),
        Err(e) => return error_page(None, e.into(), "/login"),
    };
    let again = |why: String| {
        html(
            StatusCode::UNPROCESSABLE_ENTITY,
            &InvitePage { nav: None, user: user.name.clone(), token: token.clone(), error: Some(why) },
        )
    };
    if f.password != f.again {
        return again("The two passwords differ; type the same one twice.".to_owned());
    }
    if let Err(e) = crate::accounts::check_new_password(&f.password) {
        return again(e.message);
    }
    let hash_pw = match crate::access::hash_password(f.password).await {
        Ok(h) => h,
        Err(e) => return error_page(None, e, "/login"),
    };
    // The link is used up here: a second submission, even a concurrent one, finds nothing.
    let user = match c.meta.take_invite(&hash, now).await {
        Ok(Some(u)) => u,
        Ok(None) => return invite_gone(),
        Err(e) => return error_page(None, e.into(), "/login"),
    };
    if let Err(e) = c.meta.set_user_password(&user.name, Some(&hash_pw)).await {
        return error_page(None, e.into(), "/login");
    }
    let source = source(peer.as_ref().map(|e| &e.0));
    let principal = crate::auth::Principal {
        actor: user.name.clone(),
        via: "invitation".to_owned(),
        scope: user.role.max_scope(),
        user: Some(user.clone()),
    };
    c.audit(&principal, &source, "accept_invite", "/invite", 303).await;
    let id = match c.start_session(&user).await {
        Ok(id) => id,
        Err(e) => return error_page(None, e.into(), "/login"),
    };
    let https = session::request_is_https(&headers, &peer);
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, session::set_cookie(Some(&id), https));
    resp
}

// ---- sites ----

struct Badge {
    state: String,
    when: String,
}

struct SiteRow {
    name: String,
    url: String,
    last_deploy: Option<Badge>,
    last_build: Option<Badge>,
}

#[derive(Template)]
#[template(path = "console/sites.html")]
struct SitesPage {
    nav: Option<Nav>,
    sites: Vec<SiteRow>,
    can_write: bool,
    csrf: String,
}

/// A time as the console shows it: `2026-12-07 02:30 UTC`.
fn when(ms: i64) -> String {
    let t = crate::domains::rfc3339(ms);
    format!("{} {} UTC", &t[..10], &t[11..16])
}

async fn sites_page(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    let s = match signed_in(&c, &headers, "/").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result: Result<Vec<SiteRow>, ApiError> = async {
        let mut rows = Vec::new();
        for site in c.meta.list_sites().await? {
            let view = SiteView::new(&c, site.clone());
            let last_deploy = c.meta.list_deploys(&site.name, None).await?.into_iter().max_by_key(|d| d.created_at);
            let last_build = c.meta.list_builds(&site.name, None, 1).await?.into_iter().next();
            rows.push(SiteRow {
                name: site.name.to_string(),
                url: view.url,
                last_deploy: last_deploy.map(|d| Badge { state: d.state.to_string(), when: when(d.created_at) }),
                last_build: last_build.map(|b| Badge { state: b.state.to_string(), when: when(b.created_at) }),
            });
        }
        Ok(rows)
    }
    .await;
    match result {
        Ok(sites) => html(
            StatusCode::OK,
            &SitesPage { nav: Nav::of(&s, "sites"), sites, can_write: s.may(Scope::Write), csrf: s.csrf.clone() },
        ),
        Err(e) => error_page(Some(&s), e, "/"),
    }
}

struct BranchRow {
    branch: String,
    deploy: String,
    url: String,
}

struct DeployRow {
    id: String,
    branch: String,
    state: String,
    state_label: String,
    created: String,
    message: String,
    files: String,
    action: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console/site.html")]
struct SitePage {
    nav: Option<Nav>,
    site: String,
    url: String,
    production_branch: String,
    notice: Option<String>,
    branches: Vec<BranchRow>,
    branch_names: Vec<String>,
    states: Vec<&'static str>,
    filter_branch: String,
    filter_state: &'static str,
    deploys: Vec<DeployRow>,
    builds: Vec<BuildRow>,
    can_build: bool,
    can_write: bool,
    csrf: String,
}

#[derive(Deserialize, Default)]
struct NewSiteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    production_branch: String,
}

async fn site_create(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<NewSiteForm>,
) -> Response {
    let what = ("create_site", "/sites".to_owned(), "/".to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = f.name.trim().parse()?;
        let branch: BranchName = match f.production_branch.trim() {
            "" => "main".parse()?,
            b => b.parse()?,
        };
        c.create_site(&name, &branch).await
    }
    .await;
    p.finish(&c, 201, result, |site| Redirect::to(&format!("/sites/{}", site.name)).into_response()).await
}

#[derive(Template)]
#[template(path = "console/delete_site.html")]
struct DeleteSitePage {
    nav: Option<Nav>,
    site: String,
    error: Option<String>,
    csrf: String,
}

async fn site_delete_page(State(c): State<Arc<Control>>, headers: HeaderMap, Path(site): Path<String>) -> Response {
    let here = format!("/sites/{}/delete", url_escape(&site));
    let s = match signed_in(&c, &headers, &here).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        s.principal.require(Scope::Write)?;
        let name: SiteName = crate::api::parse_path(&site)?;
        c.site(&name).await
    }
    .await;
    match result {
        Ok(record) => html(
            StatusCode::OK,
            &DeleteSitePage {
                nav: Nav::of(&s, "sites"),
                site: record.name.to_string(),
                error: None,
                csrf: s.csrf.clone(),
            },
        ),
        Err(e) => error_page(Some(&s), e, "/"),
    }
}

#[derive(Deserialize, Default)]
struct DeleteSiteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn site_delete(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<DeleteSiteForm>,
) -> Response {
    let what =
        ("delete_site", format!("/api/v1/sites/{}", url_escape(&site)), format!("/sites/{}/delete", url_escape(&site)));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // Typed confirmation: the exact name, or nothing happens.
    if f.confirm.trim() != site {
        let page = DeleteSitePage {
            nav: Nav::of(&p.s, "sites"),
            site: site.clone(),
            error: Some(format!("You typed {:?}, not {site:?}: nothing was deleted.", f.confirm.trim())),
            csrf: p.s.csrf.clone(),
        };
        return html(StatusCode::UNPROCESSABLE_ENTITY, &page);
    }
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        c.delete_site(&name).await
    }
    .await;
    p.finish(&c, 204, result, |()| Redirect::to("/").into_response()).await
}

struct BuildRow {
    id: String,
    branch: String,
    state: String,
    trigger: String,
    commit: Option<String>,
    when: String,
}

#[derive(Deserialize, Default)]
struct SiteQuery {
    branch: Option<String>,
    state: Option<String>,
    done: Option<String>,
}

/// What activating `d` would be: a rollback when an older deploy than the
/// branch's live one, a publish otherwise; `None` when it cannot be made
/// live (live already, failed, expired, still uploading).
fn activation(d: &DeployRecord, live: Option<&DeployRecord>) -> Option<&'static str> {
    match d.state {
        DeployState::Ready | DeployState::Superseded => {
            Some(if live.is_some_and(|l| d.created_at < l.created_at) { "Roll back" } else { "Publish" })
        }
        _ => None,
    }
}

const STATES: [DeployState; 6] = [
    DeployState::Active,
    DeployState::Ready,
    DeployState::Superseded,
    DeployState::Uploading,
    DeployState::Failed,
    DeployState::Expired,
];

async fn site_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(q): Query<SiteQuery>,
) -> Response {
    let here = format!("/sites/{}", url_escape(&site));
    let s = match signed_in(&c, &headers, &here).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result: Result<SitePage, ApiError> = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let record = c.site(&name).await?;
        let view = SiteView::new(&c, record.clone());
        let mut all = c.meta.list_deploys(&name, None).await?;
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.as_str().cmp(a.id.as_str())));
        let rolled_back = c.meta.rolled_back(&name, None).await?;
        let live: Vec<&DeployRecord> = all.iter().filter(|d| d.state == DeployState::Active).collect();
        let mut branch_names: Vec<String> = all.iter().map(|d| d.branch.to_string()).collect();
        branch_names.sort();
        branch_names.dedup();
        let filter_branch = q.branch.clone().filter(|b| !b.is_empty()).unwrap_or_default();
        let filter_state = STATES.iter().map(|s| s.as_str()).find(|s| q.state.as_deref() == Some(*s)).unwrap_or("");
        let deploys = all
            .iter()
            .filter(|d| filter_branch.is_empty() || d.branch.as_str() == filter_branch)
            .filter(|d| filter_state.is_empty() || d.state.as_str() == filter_state)
            .take(DEPLOYS_SHOWN)
            .map(|d| {
                let live_here = live.iter().copied().find(|l| l.branch == d.branch);
                let state_label =
                    if rolled_back.contains(&d.id) { "rolled back".to_owned() } else { d.state.to_string() };
                DeployRow {
                    id: d.id.to_string(),
                    branch: d.branch.to_string(),
                    state: d.state.to_string(),
                    state_label,
                    created: when(d.created_at),
                    message: d.message.clone().unwrap_or_default(),
                    files: format!("{} ({})", d.file_count, human_bytes(d.total_size)),
                    action: if s.may(Scope::Deploy) { activation(d, live_here) } else { None },
                }
            })
            .collect();
        let branches = live
            .iter()
            .map(|d| BranchRow {
                branch: d.branch.to_string(),
                deploy: d.id.to_string(),
                url: DeployView::new(&c, (*d).clone()).urls.branch,
            })
            .collect();
        let builds = c
            .meta
            .list_builds(&name, None, 20)
            .await?
            .into_iter()
            .map(|b| BuildRow {
                id: b.id.to_string(),
                branch: b.branch.to_string(),
                state: b.state.to_string(),
                trigger: b.trigger,
                commit: b.commit.map(|c| c.chars().take(12).collect()),
                when: when(b.created_at),
            })
            .collect();
        let notice = match q.done.as_deref() {
            Some("publish") => Some("Published: the deploy is live.".to_owned()),
            Some("rollback") => Some("Rolled back: the deploy is live again.".to_owned()),
            _ => None,
        };
        Ok(SitePage {
            nav: Nav::of(&s, "sites"),
            site: name.to_string(),
            url: view.url,
            production_branch: record.production_branch.to_string(),
            notice,
            branches,
            branch_names,
            states: STATES.iter().map(|s| s.as_str()).collect(),
            filter_branch,
            filter_state,
            deploys,
            builds,
            can_build: s.may(Scope::Deploy) && c.builds().is_ok(),
            can_write: s.may(Scope::Write),
            csrf: s.csrf.clone(),
        })
    }
    .await;
    match result {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => error_page(Some(&s), e, "/"),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage {
    nav: Option<Nav>,
    verb: &'static str,
    question: String,
    site: String,
    deploy: String,
    message: String,
    created: String,
    branch: String,
    url: String,
    current: Option<String>,
    csrf: String,
}

/// The deploy `id` of `site`, the branch's live deploy, and what making it
/// live would be.
async fn activation_plan(
    c: &Control,
    site: &str,
    id: &str,
) -> Result<(SiteName, DeployRecord, Option<DeployRecord>, &'static str), ApiError> {
    let name: SiteName = crate::api::parse_path(site)?;
    let id: DeployId = crate::api::parse_path(id)?;
    let d = c.deploy(&id).await?;
    if d.site != name {
        return Err(ApiError::not_found(format!("deploy {id} of site {name}")));
    }
    let branch: &BranchName = &d.branch;
    let live = c.meta.list_deploys(&name, Some(branch)).await?.into_iter().find(|l| l.state == DeployState::Active);
    let Some(verb) = activation(&d, live.as_ref()) else {
        let why = match d.state {
            DeployState::Active => "it is live already".to_owned(),
            s => format!("it is {s}: only a complete deploy can go live"),
        };
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_activatable",
            format!("Deploy {id} cannot be made live: {why}."),
        ));
    };
    Ok((name, d, live, verb))
}

async fn confirm_activate(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
) -> Response {
    let here = format!("/sites/{}/deploys/{}/activate", url_escape(&site), url_escape(&id));
    let s = match signed_in(&c, &headers, &here).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let back = format!("/sites/{}", url_escape(&site));
    if let Err(e) = s.principal.require(Scope::Deploy) {
        return error_page(Some(&s), e, &back);
    }
    match activation_plan(&c, &site, &id).await {
        Ok((name, d, live, verb)) => {
            let v = DeployView::new(&c, d.clone());
            let url = v.urls.production.clone().unwrap_or(v.urls.branch.clone());
            let question = match verb {
                "Roll back" => format!(
                    "Roll branch {} of {name} back to this earlier deploy? It replaces the live deploy at once.",
                    d.branch
                ),
                _ => format!(
                    "Publish this deploy on branch {} of {name}? It replaces the live deploy at once.",
                    d.branch
                ),
            };
            let page = ConfirmPage {
                nav: Nav::of(&s, "sites"),
                verb,
                question,
                site: name.to_string(),
                deploy: d.id.to_string(),
                message: d.message.clone().unwrap_or_default(),
                created: when(d.created_at),
                branch: d.branch.to_string(),
                url,
                current: live.map(|l| l.id.to_string()),
                csrf: s.csrf.clone(),
            };
            html(StatusCode::OK, &page)
        }
        Err(e) => error_page(Some(&s), e, &back),
    }
}

async fn activate(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let here = format!("/sites/{}/deploys/{}/activate", url_escape(&site), url_escape(&id));
    let back = format!("/sites/{}", url_escape(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Deploy, ("console_activate", here, back)).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let (name, d, _, verb) = activation_plan(&c, &site, &id).await?;
        if verb == "Roll back" {
            c.rollback(&name, Some(d.branch.clone()), Some(d.id.clone())).await?;
            Ok::<_, ApiError>("rollback")
        } else {
            c.publish(&d.id).await?;
            Ok("publish")
        }
    }
    .await;
    // Audited under what it turned out to be: `publish` or `rollback`.
    let p = Checked { action: result.as_ref().map_or("console_activate", |a| a), ..p };
    p.finish(&c, 303, result, |action| Redirect::to(&format!("{}?done={action}", p.back)).into_response()).await
}

// ---- a deploy ----

/// Paths listed per group of the plan, and files listed, at most.
const PATHS_SHOWN: usize = 200;

#[derive(Template)]
#[template(path = "console/deploy.html")]
struct DeployPage {
    nav: Option<Nav>,
    site: String,
    id: String,
    state: String,
    state_label: String,
    error: Option<String>,
    action: Option<&'static str>,
    branch: String,
    permalink: String,
    source: String,
    /// The build that made it: id, commit, author.
    build: Option<(String, Option<String>, Option<String>)>,
    message: String,
    created: String,
    files_summary: String,
    plan: Option<chanto_notify::DeployPlan>,
    plan_summary: String,
    plan_groups: Vec<(String, Vec<String>)>,
    rules: Vec<String>,
    /// What its rule files drew at finalize (lines that were ignored, and why).
    warnings: Vec<String>,
    files: Vec<(String, String)>,
    files_hidden: usize,
}

async fn deploy_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
) -> Response {
    let here = format!("/sites/{}/deploys/{}", url_escape(&site), url_escape(&id));
    let s = match signed_in(&c, &headers, &here).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let deploy_id: DeployId = crate::api::parse_path(&id)?;
        let d = c.deploy(&deploy_id).await?;
        if d.site != name {
            return Err(ApiError::not_found(format!("deploy {deploy_id} of site {name}")));
        }
        let record = c.site(&name).await?;
        let view = DeployView::new(&c, d.clone());
        let live = c.meta.list_deploys(&name, Some(&d.branch)).await?.into_iter().find(|l| l.state == DeployState::Active);
        let rolled_back = c.meta.rolled_back(&name, Some(&d.branch)).await?.contains(&d.id);
        let build = c
            .meta
            .list_builds(&name, Some(&d.branch), 200)
            .await?
            .into_iter()
            .find(|b| b.deploy.as_ref() == Some(&d.id))
            .map(|b| (b.id.to_string(), b.commit.map(|c| c.chars().take(12).collect()), b.author));
        let (head, warnings) = match crate::notify::dispatch::side_and_warnings(&c, &d.id).await {
            Some((side, warnings)) => (Some(side), warnings),
            None => (None, Vec::new()),
        };
        let production = c.meta.branch(&name, &record.production_branch).await?.and_then(|b| b.active_deploy);
        let base = match &production {
            Some(p) if *p != d.id => crate::notify::dispatch::side(&c, p).await,
            Some(_) => head.clone(),
            None => None,
        };
        let plan = head.as_ref().map(|h| chanto_notify::deploy_plan(base.as_ref(), h));
        let (plan_summary, plan_groups) = match &plan {
            Some(p) => {
                let list = |changes: &[chanto_notify::PlanChange]| -> Vec<String> {
                    changes.iter().take(PATHS_SHOWN).map(|x| x.path.clone()).collect()
                };
                let summary = format!(
                    "{} added, {} changed, {} removed, {} unchanged; {} added, {} removed; {} rule(s) added, {} removed.",
                    p.added.len(),
                    p.changed.len(),
                    p.removed.len(),
                    p.unchanged,
                    human_bytes(p.bytes_added),
                    human_bytes(p.bytes_removed),
                    p.rules_added.len(),
                    p.rules_removed.len()
                );
                let groups = [
                    ("Added files", list(&p.added)),
                    ("Changed files", list(&p.changed)),
                    ("Removed files", list(&p.removed)),
                    ("Rules added", p.rules_added.iter().take(PATHS_SHOWN).cloned().collect()),
                    ("Rules removed", p.rules_removed.iter().take(PATHS_SHOWN).cloned().collect()),
                ]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(t, v)| (t.to_owned(), v))
                .collect();
                (summary, groups)
            }
            None => (String::new(), Vec::new()),
        };
        let (rules, mut files) = match &head {
            Some(h) => {
                let mut files: Vec<(String, String)> =
                    h.files.iter().map(|f| (f.path.clone(), human_bytes(f.size))).collect();
                files.sort();
                (h.rules.clone(), files)
            }
            None => (Vec::new(), Vec::new()),
        };
        let files_hidden = files.len().saturating_sub(PATHS_SHOWN);
        files.truncate(PATHS_SHOWN);
        Ok(DeployPage {
            nav: Nav::of(&s, "sites"),
            site: name.to_string(),
            id: d.id.to_string(),
            state: d.state.to_string(),
            state_label: if rolled_back { "rolled back".to_owned() } else { d.state.to_string() },
            error: d.error.clone(),
            action: if s.may(Scope::Deploy) { activation(&d, live.as_ref()) } else { None },
            branch: d.branch.to_string(),
            permalink: view.urls.permalink,
            source: d.source.clone(),
            build,
            message: d.message.clone().unwrap_or_default(),
            created: when(d.created_at),
            files_summary: format!("{} ({})", d.file_count, human_bytes(d.total_size)),
            plan,
            plan_summary,
            plan_groups,
            rules,
            warnings,
            files,
            files_hidden,
        })
    }
    .await;
    match result {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => error_page(Some(&s), e, &format!("/sites/{}", url_escape(&site))),
    }
}

// ---- builds ----

#[derive(Template)]
#[template(path = "console/build.html")]
struct BuildPage {
    nav: Option<Nav>,
    id: String,
    site: String,
    state: String,
    error: Option<String>,
    branch: String,
    pull_request: Option<u64>,
    commit: Option<String>,
    author: Option<String>,
    message: Option<String>,
    trigger: String,
    created: String,
    deploy: Option<String>,
    url: String,
    can_cancel: bool,
    csrf: String,
    phases: Vec<(String, String, String)>,
    lines: Vec<(u64, String)>,
    hidden: u64,
    first_shown: u64,
    /// The first error's line and where the link goes (its line here, or
    /// the raw log when it is before the tail).
    first_error: Option<(u64, String)>,
    /// That line's number (0: none).
    error_line: u64,
    live: bool,
    end: String,
}

/// The build `id` (parsed), or an error page's error.
async fn build_of(c: &Control, id: &str) -> Result<chanto_store::BuildRecord, ApiError> {
    let id: chanto_core::BuildId = crate::api::parse_path(id)?;
    c.build(&id).await
}

async fn build_page(State(c): State<Arc<Control>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let here = format!("/builds/{}", url_escape(&id));
    let s = match signed_in(&c, &headers, &here).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result: Result<BuildPage, ApiError> = async {
        let b = build_of(&c, &id).await?;
        let view = crate::builds::BuildView::new(&c, b.clone());
        let path = c.build_log_path(&b.id)?;
        let tail = tokio::task::spawn_blocking(move || log::tail(&path))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("reading the log: {e}"))
            })?;
        let phases = view
            .phases
            .iter()
            .map(|p| {
                let took = humantime::format_duration(std::time::Duration::from_secs(p.duration_ms.div_ceil(1000)));
                (p.name.clone(), p.status.clone(), took.to_string())
            })
            .collect();
        let first_shown = tail.lines.first().map_or(tail.end.line, |l| l.0);
        Ok(BuildPage {
            nav: Nav::of(&s, "sites"),
            id: b.id.to_string(),
            site: b.site.to_string(),
            state: b.state.to_string(),
            error: b.error.clone(),
            branch: b.branch.to_string(),
            pull_request: b.pull_request,
            commit: b.commit.clone(),
            author: b.author.clone(),
            message: b.message.clone(),
            trigger: b.trigger.clone(),
            created: when(b.created_at),
            deploy: b.deploy.as_ref().map(|d| d.to_string()),
            url: view.url,
            can_cancel: !b.state.is_final() && s.may(Scope::Deploy),
            csrf: s.csrf.clone(),
            phases,
            lines: tail.lines,
            hidden: tail.hidden,
            first_shown,
            first_error: tail.first_error.map(|n| {
                let href = if n >= first_shown { format!("#L{n}") } else { format!("/builds/{}/log.txt", b.id) };
                (n, href)
            }),
            error_line: tail.first_error.unwrap_or(0),
            live: !b.state.is_final(),
            end: tail.end.to_string(),
        })
    }
    .await;
    match result {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => error_page(Some(&s), e, "/"),
    }
}

#[derive(Deserialize, Default)]
struct EventsQuery {
    from: Option<String>,
}

/// The log as it grows, as Server-Sent Events: `lines` events (id:
/// `OFFSET.LINE`, so a reconnecting browser resumes where it was with
/// `Last-Event-ID`), then one `end` event with the build's final state.
async fn build_events(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let s = match c.session_of(&headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return (StatusCode::UNAUTHORIZED, "sign in first").into_response(),
        Err(e) => return error_page(None, e.into(), "/"),
    };
    let (b, path) = match async {
        let b = build_of(&c, &id).await?;
        let path = c.build_log_path(&b.id)?;
        Ok::<_, ApiError>((b, path))
    }
    .await
    {
        Ok(x) => x,
        Err(e) => return error_page(Some(&s), e, "/"),
    };
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(log::Position::parse);
    let from = resume.or_else(|| q.from.as_deref().and_then(log::Position::parse)).unwrap_or(log::Position::START);
    let build_id = b.id.clone();
    let stream = futures_util::stream::unfold((c, build_id, path, from, false), |(c, id, path, at, done)| async move {
        if done {
            return None;
        }
        loop {
            // The state first: a build that ended has written its last line.
            let state = c.build(&id).await.map(|b| b.state).ok();
            let ended = state.is_none_or(|s| s.is_final());
            let p = path.clone();
            let read = tokio::task::spawn_blocking(move || log::read_after(&p, at, ended)).await;
            let (lines, next) = match read {
                Ok(Ok(x)) => x,
                _ => (Vec::new(), at),
            };
            if !lines.is_empty() {
                let data = serde_json::json!({ "lines": lines }).to_string();
                let event = Event::default().event("lines").id(next.to_string()).data(data);
                return Some((Ok::<_, std::convert::Infallible>(event), (c, id, path, next, false)));
            }
            if ended {
                let state = state.map_or("unknown".to_owned(), |s| s.to_string());
                let event = Event::default().event("end").data(serde_json::json!({ "state": state }).to_string());
                return Some((Ok(event), (c, id, path, next, true)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let mut resp = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The whole log, as the runner wrote it (streamed from the file).
async fn raw_log(State(c): State<Arc<Control>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let here = format!("/builds/{}/log.txt", url_escape(&id));
    let s = match signed_in(&c, &headers, &here).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let b = build_of(&c, &id).await?;
        let path = c.build_log_path(&b.id)?;
        let body = match tokio::fs::File::open(&path).await {
            Ok(f) => axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => axum::body::Body::empty(),
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("reading the log: {e}"),
                ));
            }
        };
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
    }
    .await;
    result.unwrap_or_else(|e| error_page(Some(&s), e, "/"))
}

async fn start_build(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let back = format!("/sites/{}", url_escape(&site));
    let what = ("start_build", format!("{back}/builds"), back);
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Deploy, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let record = c.site(&name).await?;
        c.queue_build(&name, crate::builds::BuildRequest::branch_head(record.production_branch, "console")).await
    }
    .await;
    p.finish(&c, 303, result, |b| Redirect::to(&format!("/builds/{}", b.id)).into_response()).await
}

async fn cancel_build(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let here = format!("/builds/{}", url_escape(&id));
    let what = ("cancel_build", format!("{here}/cancel"), here.clone());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Deploy, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let b = build_of(&c, &id).await?;
        c.cancel_build(&b.id).await
    }
    .await;
    p.finish(&c, 303, result, |_| Redirect::to(&here).into_response()).await
}

// ---- build variables ----

#[derive(Template)]
#[template(path = "console/env.html")]
struct EnvPage {
    nav: Option<Nav>,
    site: String,
    notice: Option<String>,
    errors: Vec<String>,
    vars: Vec<crate::builds::EnvView>,
    can_write: bool,
    csrf: String,
    pasted: String,
    branch: String,
    secret: bool,
}

#[derive(Deserialize, Default)]
struct EnvQuery {
    saved: Option<usize>,
    removed: Option<String>,
}

/// The variables page, with what a failed paste left to fix.
async fn env_view(
    c: &Control,
    s: &Session,
    site: &str,
    notice: Option<String>,
    errors: Vec<String>,
    form: Option<EnvForm>,
) -> Result<EnvPage, ApiError> {
    let name: SiteName = crate::api::parse_path(site)?;
    let vars = c.list_env(&name).await?;
    let form = form.unwrap_or_default();
    Ok(EnvPage {
        nav: Nav::of(s, "sites"),
        site: name.to_string(),
        notice,
        errors,
        vars,
        can_write: s.may(Scope::Write),
        csrf: s.csrf.clone(),
        pasted: form.dotenv,
        branch: form.branch,
        secret: form.secret.is_some(),
    })
}

async fn env_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(q): Query<EnvQuery>,
) -> Response {
    let here = format!("/sites/{}/env", url_escape(&site));
    let s = match signed_in(&c, &headers, &here).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let notice = match (q.saved, q.removed) {
        (Some(n), _) => Some(format!("Saved {n} variable(s).")),
        // Echoed only when it is a variable name (no other text from the URL).
        (None, Some(name))
            if !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Some(format!("Removed {name}."))
        }
        _ => None,
    };
    match env_view(&c, &s, &site, notice, Vec::new(), None).await {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => error_page(Some(&s), e, "/"),
    }
}

#[derive(Deserialize, Default)]
struct EnvForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    dotenv: String,
    #[serde(default)]
    branch: String,
    secret: Option<String>,
}

async fn env_save(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<EnvForm>,
) -> Response {
    let here = format!("/sites/{}/env", url_escape(&site));
    let Checked { s, source, .. } =
        match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("set_env", here.clone(), here.clone())).await {
            Ok(p) => p,
            Err(r) => return r,
        };
    // Everything checked before anything is saved: a paste is all or nothing.
    let checked = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        c.site(&name).await?;
        let branch: Option<BranchName> = match f.branch.trim() {
            "" => None,
            b => Some(b.parse().map_err(|e: chanto_core::ValidationError| ApiError::from(e))?),
        };
        Ok::<_, ApiError>((name, branch))
    }
    .await;
    let (name, branch) = match checked {
        Ok(x) => x,
        Err(e) => return error_page(Some(&s), e, &here),
    };
    let entries = match dotenv::parse(&f.dotenv) {
        Ok(e) if e.is_empty() => Err(vec!["no NAME=value lines".to_owned()]),
        other => other,
    };
    let entries = match entries {
        Ok(e) => e,
        Err(errors) => {
            return match env_view(&c, &s, &site, None, errors, Some(f)).await {
                Ok(page) => html(StatusCode::UNPROCESSABLE_ENTITY, &page),
                Err(e) => error_page(Some(&s), e, &here),
            };
        }
    };
    let secret = f.secret.is_some();
    let mut saved = 0;
    for e in entries {
        // Each variable is audited by name (never its value), as the API's are.
        let target = format!("/api/v1/sites/{name}/env/{}", e.name);
        match c.set_env(&name, branch.clone(), e.name.clone(), e.value, secret).await {
            Ok(_) => {
                saved += 1;
                c.audit(&s.principal, &source, "set_env", &target, 200).await;
            }
            Err(err) => {
                c.audit(&s.principal, &source, "set_env", &target, err.status.as_u16()).await;
                let msg = format!("line {} ({}): {} — the lines before it were saved", e.line, e.name, err.message);
                return match env_view(&c, &s, &site, None, vec![msg], None).await {
                    Ok(page) => html(err.status, &page),
                    Err(e) => error_page(Some(&s), e, &here),
                };
            }
        }
    }
    Redirect::to(&format!("{here}?saved={saved}")).into_response()
}

#[derive(Deserialize, Default)]
struct EnvRemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    branch: String,
}

async fn env_remove(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<EnvRemoveForm>,
) -> Response {
    let here = format!("/sites/{}/env", url_escape(&site));
    let target = format!("/api/v1/sites/{}/env/{}", url_escape(&site), url_escape(&f.name));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("unset_env", target, here.clone())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let branch: Option<BranchName> = match f.branch.trim() {
            "" => None,
            b => Some(b.parse().map_err(|e: chanto_core::ValidationError| ApiError::from(e))?),
        };
        c.unset_env(&name, branch, &f.name).await
    }
    .await;
    p.finish(&c, 204, result, |()| Redirect::to(&format!("{here}?removed={}", url_escape(&f.name))).into_response())
        .await
}

// ---- passwords and networks ----

struct PolicyRow {
    scope: String,
    label: String,
    users: Vec<String>,
    allow: String,
    deny: String,
    allow_preflight: bool,
}

#[derive(Template)]
#[template(path = "console/access.html")]
struct AccessPage {
    nav: Option<Nav>,
    site: String,
    notice: Option<String>,
    policies: Vec<PolicyRow>,
    can_write: bool,
    csrf: String,
}

/// A policy's scope as forms carry it (`site`, `previews`, `branch:NAME`,
/// or `branch` with the branch in its own field): (branch, previews).
fn access_scope(scope: &str, branch: &str) -> Result<(Option<String>, bool), ApiError> {
    match scope {
        "site" => Ok((None, false)),
        "previews" => Ok((None, true)),
        "branch" if !branch.trim().is_empty() => Ok((Some(branch.trim().to_owned()), false)),
        "branch" => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "branch: name the branch")),
        s => match s.strip_prefix("branch:") {
            Some(b) => Ok((Some(b.to_owned()), false)),
            None => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("scope {s:?} is not one"))),
        },
    }
}

#[derive(Deserialize, Default)]
struct AccessQuery {
    saved: Option<String>,
}

async fn access_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(q): Query<AccessQuery>,
) -> Response {
    let here = format!("/sites/{}/access", url_escape(&site));
    let s = match signed_in(&c, &headers, &here).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        c.site(&name).await?;
        let policies = c
            .meta
            .access(&name)
            .await?
            .iter()
            .map(|(scope, p)| {
                let view = crate::access::AccessView::from_policy(scope, p);
                let label = match view.scope.as_str() {
                    "site" => "The whole site".to_owned(),
                    "previews" => "Every preview".to_owned(),
                    other => format!("Branch {}", other.trim_start_matches("branch:")),
                };
                PolicyRow {
                    label,
                    users: view.users,
                    allow: view.allow.join("\n"),
                    deny: view.deny.join("\n"),
                    allow_preflight: view.allow_preflight,
                    scope: view.scope,
                }
            })
            .collect();
        Ok::<_, ApiError>(AccessPage {
            nav: Nav::of(&s, "sites"),
            site: name.to_string(),
            // Only a fixed word is echoed back.
            notice: q.saved.filter(|v| v == "1").map(|_| "Saved; the edges apply it at once.".to_owned()),
            policies,
            can_write: s.may(Scope::Write),
            csrf: s.csrf.clone(),
        })
    }
    .await;
    match result {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => error_page(Some(&s), e, &format!("/sites/{}", url_escape(&site))),
    }
}

#[derive(Deserialize, Default)]
struct AccessForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    branch: String,
    user: Option<String>,
    password: Option<String>,
    remove_user: Option<String>,
    networks: Option<String>,
    #[serde(default)]
    allow: String,
    #[serde(default)]
    deny: String,
    allow_preflight: Option<String>,
}

/// Networks as typed, one per line (or separated by commas or spaces).
fn networks(text: &str, field: &str) -> Result<Vec<ipnet::IpNet>, ApiError> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<ipnet::IpNet>().or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!("{field}: {t:?} is not a network; write e.g. 10.0.0.0/8 or 2001:db8::/32"),
                )
            })
        })
        .collect()
}

async fn access_change(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<AccessForm>,
) -> Response {
    let here = format!("/sites/{}/access", url_escape(&site));
    let target = format!("/api/v1/sites/{}/access", url_escape(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("set_access", target, here.clone())).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let (branch, previews) = access_scope(&f.scope, &f.branch)?;
        let set_networks = f.networks.is_some();
        let req = crate::access::AccessRequest {
            branch,
            previews,
            user: f.user.filter(|u| !u.is_empty()),
            password: f.password.filter(|p| !p.is_empty()),
            remove_user: f.remove_user.filter(|u| !u.is_empty()),
            allow: if set_networks { Some(networks(&f.allow, "allowed networks")?) } else { None },
            deny: if set_networks { Some(networks(&f.deny, "denied networks")?) } else { None },
            allow_preflight: set_networks.then_some(f.allow_preflight.is_some()),
        };
        c.change_access(&name, req).await
    }
    .await;
    p.finish(&c, 200, result, |_| Redirect::to(&format!("{here}?saved=1")).into_response()).await
}

async fn access_clear(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<AccessForm>,
) -> Response {
    let here = format!("/sites/{}/access", url_escape(&site));
    let target = format!("/api/v1/sites/{}/access", url_escape(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("clear_access", target, here.clone())).await
    {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let (branch, previews) = access_scope(&f.scope, &f.branch)?;
        let scope = match (branch, previews) {
            (Some(b), _) => chanto_core::access::AccessScope::Branch(b.parse()?),
            (None, true) => chanto_core::access::AccessScope::Previews,
            (None, false) => chanto_core::access::AccessScope::Site,
        };
        c.clear_access(&name, &scope).await
    }
    .await;
    p.finish(&c, 204, result, |()| Redirect::to(&format!("{here}?saved=1")).into_response()).await
}

// ---- shared by the settings pages ----

/// A page asking to confirm a removal: what it removes and what stops, and
/// one button naming it.
#[derive(Template)]
#[template(path = "console/confirm_remove.html")]
struct ConfirmRemove {
    nav: Option<Nav>,
    title: String,
    what: Vec<String>,
    action: String,
    button: String,
    back: String,
    csrf: String,
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    done: Option<String>,
}

// ---- account ----

struct TokenRow {
    id: String,
    name: String,
    scope: String,
    state: String,
    last_used: String,
    active: bool,
}

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    nav: Option<Nav>,
    notice: Option<String>,
    new_token: Option<String>,
    user: String,
    role: String,
    tokens: Vec<TokenRow>,
    scopes: Vec<&'static str>,
    csrf: String,
}

async fn account_view(c: &Control, s: &Session, notice: Option<String>, new_token: Option<String>) -> Response {
    let tokens = match c.list_tokens(&s.principal, false).await {
        Ok(t) => t,
        Err(e) => return error_page(Some(s), e, "/"),
    };
    let rows = tokens
        .into_iter()
        .map(|t| TokenRow {
            active: t.revoked_at.is_none(),
            state: match (&t.revoked_at, &t.expires_at) {
                (Some(at), _) => format!("revoked {}", &at[..10]),
                (None, Some(at)) => format!("expires {}", &at[..10]),
                (None, None) => "never expires".to_owned(),
            },
            last_used: t.last_used_at.map_or("never".to_owned(), |at| at[..10].to_owned()),
            id: t.id,
            name: t.name,
            scope: t.scope,
        })
        .collect();
    let scopes = Scope::ALL.iter().filter(|x| **x <= s.principal.scope).map(|x| x.as_str()).rev().collect();
    let page = AccountPage {
        nav: Nav::of(s, "account"),
        notice,
        new_token,
        user: s.user.name.clone(),
        role: s.user.role.to_string(),
        tokens: rows,
        scopes,
        csrf: s.csrf.clone(),
    };
    html(StatusCode::OK, &page)
}

async fn account_page(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    match signed_in(&c, &headers, "/account").await {
        Ok(s) => account_view(&c, &s, None, None).await,
        Err(r) => r,
    }
}

#[derive(Deserialize, Default)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    scope: Option<String>,
    #[serde(default)]
    expires_in_days: String,
}

async fn account_make_token(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    let what = ("create_token", "/account/tokens".to_owned(), "/account".to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Read, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let days = match f.expires_in_days.trim() {
        "" => Ok(None),
        d => d.parse::<u32>().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "expires after: a whole number of days, or empty",
            )
        }),
    };
    let result = match days {
        Ok(days) => {
            let req =
                crate::accounts::CreateTokenRequest { name: f.name, scope: f.scope, expires_in_days: days, user: None };
            c.create_token(&p.s.principal, req).await
        }
        Err(e) => Err(e),
    };
    let made = result.as_ref().ok().map(|t| (format!("Made {} ({}).", t.id, t.name), t.token.clone()));
    let page = p.finish(&c, 201, result, |_| Response::default()).await;
    match made {
        // Shown in this answer only (never in a URL, never again).
        Some((notice, token)) => account_view(&c, &p.s, Some(notice), token).await,
        None => page,
    }
}

async fn account_revoke_token(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("revoke_token", format!("/account/tokens/{}/revoke", url_escape(&id)), "/account".to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Read, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = c.revoke_token(&p.s.principal, &id).await;
    let revoked = result.as_ref().ok().map(|t| format!("Revoked {} ({}).", t.id, t.name));
    let page = p.finish(&c, 200, result, |_| Response::default()).await;
    match revoked {
        Some(notice) => account_view(&c, &p.s, Some(notice), None).await,
        None => page,
    }
}

async fn sign_out_everywhere(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("sign_out_everywhere", "/account/sign-out-everywhere".to_owned(), "/account".to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Read, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = c.meta.delete_user_sessions(&p.s.user.id).await.map_err(ApiError::from);
    p.finish(&c, 303, result, |_| {
        let mut resp = Redirect::to("/login").into_response();
        resp.headers_mut().append(header::SET_COOKIE, session::set_cookie(None, false));
        resp.headers_mut().append(header::SET_COOKIE, session::set_cookie(None, true));
        resp
    })
    .await
}

// ---- health ----

struct NodeRow {
    name: String,
    zone: String,
    role: String,
    healthy: bool,
    health: String,
    version: u64,
    lag: u64,
    heard: String,
    software: String,
    /// Requests per minute and error shares, or why not known.
    traffic: String,
    /// Whether 5xx responses are 1 % or more of the traffic.
    erroring: bool,
}

/// A node's recent traffic in words: requests a minute and the share of
/// 5xx and 4xx answers.
fn traffic_words(t: Option<chanto_store::node_wire::Traffic>) -> (String, bool) {
    let Some(t) = t.filter(|t| t.window_ms > 0) else { return ("not reported yet".to_owned(), false) };
    let per_minute = t.requests as f64 * 60_000.0 / t.window_ms as f64;
    if t.requests == 0 {
        return (format!("no requests in the last {} s", t.window_ms / 1000), false);
    }
    let share = |n: u64| n as f64 * 100.0 / t.requests as f64;
    let server = share(t.server_errors);
    let words = format!("{per_minute:.0}/min; 5xx {server:.1} %, 4xx {:.1} %", share(t.client_errors));
    (words, server >= 1.0)
}

#[derive(Template)]
#[template(path = "console/health.html")]
struct HealthPage {
    nav: Option<Nav>,
    version: u64,
    healthy: usize,
    total: usize,
    timeout: String,
    nodes: Vec<NodeRow>,
}

async fn health_page(State(c): State<Arc<Control>>, headers: HeaderMap) -> Response {
    let s = match signed_in(&c, &headers, "/health").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let view = match c.nodes_view().await {
        Ok(v) => v,
        Err(e) => return error_page(Some(&s), e, "/"),
    };
    let nodes: Vec<NodeRow> = view
        .nodes
        .into_iter()
        .map(|n| (traffic_words(n.traffic), n))
        .map(|(traffic, n)| NodeRow {
            health: match (n.healthy, n.ready, n.draining) {
                (true, _, _) => "healthy".to_owned(),
                (false, _, true) => "draining".to_owned(),
                (false, false, _) => "not ready".to_owned(),
                (false, true, _) => "silent".to_owned(),
            },
            healthy: n.healthy,
            heard: format!("{} s ago", n.last_heartbeat_age_ms / 1000),
            name: n.name,
            zone: n.zone,
            role: n.role,
            version: n.routing_version,
            lag: n.lag,
            software: n.software,
            traffic: traffic.0,
            erroring: traffic.1,
        })
        .collect();
    let page = HealthPage {
        nav: Nav::of(&s, "health"),
        version: view.routing_version,
        healthy: nodes.iter().filter(|n| n.healthy).count(),
        total: nodes.len(),
        timeout: humantime::format_duration(std::time::Duration::from_millis(view.node_timeout_ms)).to_string(),
        nodes,
    };
    html(StatusCode::OK, &page)
}

// ---- audit ----

struct AuditRow {
    at: String,
    actor: String,
    via: String,
    source: String,
    action: String,
    target: String,
    status: u16,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    entries: Vec<AuditRow>,
    older: Option<i64>,
}

#[derive(Deserialize, Default)]
struct AuditPageQuery {
    before: Option<i64>,
}

async fn audit_page(State(c): State<Arc<Control>>, headers: HeaderMap, Query(q): Query<AuditPageQuery>) -> Response {
    let s = match signed_in(&c, &headers, "/audit").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = s.principal.require(Scope::Admin) {
        return error_page(Some(&s), e, "/");
    }
    const PAGE: u32 = 100;
    match c.meta.audit(&AuditQuery { before: q.before, actor: None, limit: PAGE }).await {
        Ok(list) => {
            let older = (list.len() as u32 == PAGE).then(|| list.last().map(|e| e.id)).flatten();
            let entries = list
                .into_iter()
                .map(|e| AuditRow {
                    at: when(e.at),
                    actor: e.actor,
                    via: e.via,
                    source: e.source,
                    action: e.action,
                    target: e.target,
                    status: e.status,
                })
                .collect();
            html(StatusCode::OK, &AuditPage { nav: Nav::of(&s, "audit"), entries, older })
        }
        Err(e) => error_page(Some(&s), e.into(), "/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_reads_as_rates_and_shares() {
        use chanto_store::node_wire::Traffic;
        assert_eq!(traffic_words(None), ("not reported yet".to_owned(), false));
        let t = Traffic { window_ms: 30_000, requests: 500, client_errors: 50, server_errors: 5 };
        assert_eq!(traffic_words(Some(t)), ("1000/min; 5xx 1.0 %, 4xx 10.0 %".to_owned(), true));
        let quiet = Traffic { window_ms: 60_000, requests: 0, client_errors: 0, server_errors: 0 };
        assert_eq!(traffic_words(Some(quiet)).0, "no requests in the last 60 s");
    }

    #[test]
    fn next_is_always_a_local_path() {
        assert_eq!(safe_next("/sites/docs"), "/sites/docs");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", "javascript:alert(1)", ""] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }

    #[test]
    fn constant_time_comparison_compares() {
        assert!(subtle_eq::eq(b"abc", b"abc"));
        assert!(!subtle_eq::eq(b"abc", b"abd"));
        assert!(!subtle_eq::eq(b"abc", b"ab"));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 KB");
        assert_eq!(human_bytes(2_000_000), "2.0 MB");
    }
}

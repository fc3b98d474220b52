//! Git and builds: a site's repository connection (connect, change,
//! disconnect), its webhook URLs and secret (shown once, when made), its
//! build hooks (the secret URL shown once, at creation) and the webhooks
//! it received. Everything goes through the same `Control` calls as the
//! API's `/sites/{site}/git`, `/build_hooks` and `/webhook_deliveries`.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chanto_core::{BranchName, SiteName};
use chanto_store::Scope;
use serde::Deserialize;

use super::session::Session;
use super::{ConfirmRemove, CsrfForm, DoneQuery, Nav, checked_post, error_page, html, signed_in, url_escape, when};
use crate::builds::{ConnectRequest, CredentialKind, GitSettings, GitView};
use crate::{ApiError, Control};

/// Webhook deliveries shown, at most.
const DELIVERIES_SHOWN: u32 = 50;

pub(super) fn routes() -> Router<Arc<Control>> {
    Router::new()
        .route("/sites/{site}/git", get(git_page).post(connect))
        .route("/sites/{site}/git/disconnect", get(disconnect_page).post(disconnect))
        .route("/sites/{site}/git/hooks", post(create_hook))
        .route("/sites/{site}/git/hooks/{id}/delete", post(delete_hook))
}

struct HookRow {
    id: String,
    name: String,
    branch: String,
    created: String,
}

struct WebhookRow {
    source: String,
    event: String,
    outcome: String,
    detail: String,
    build: Option<String>,
    at: String,
}

/// The connect form's fields, as typed (secrets are never filled back in).
#[derive(Deserialize, Default)]
struct ConnectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    repository: String,
    #[serde(default)]
    production_branch: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    ssh_key: String,
    #[serde(default)]
    username: String,
    clear_credential: Option<String>,
    rotate_webhook_secret: Option<String>,
    #[serde(default)]
    include: String,
    #[serde(default)]
    exclude: String,
    pull_request_previews: Option<String>,
    fork_pull_requests: Option<String>,
    delete_branches: Option<String>,
    #[serde(default)]
    preview_retention_days: String,
    #[serde(default)]
    poll_interval_secs: String,
    #[serde(default)]
    timeout_secs: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    publish: String,
    #[serde(default)]
    base: String,
    #[serde(default)]
    app_root: String,
}

fn on(b: bool) -> Option<String> {
    b.then(|| "on".to_owned())
}

impl ConnectForm {
    /// A new connection's defaults, or the current one's settings.
    fn of(git: Option<&GitView>) -> Self {
        let Some(g) = git else {
            let d = GitSettings::default();
            return Self {
                pull_request_previews: on(d.pull_request_previews),
                fork_pull_requests: on(d.fork_pull_requests),
                delete_branches: on(d.delete_branches),
                ..Self::default()
            };
        };
        let s = &g.settings;
        let num = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
        Self {
            repository: g.repository.clone(),
            production_branch: g.production_branch.clone(),
            username: s.username.clone().unwrap_or_default(),
            include: s.include.join("\n"),
            exclude: s.exclude.join("\n"),
            pull_request_previews: on(s.pull_request_previews),
            fork_pull_requests: on(s.fork_pull_requests),
            delete_branches: on(s.delete_branches),
            preview_retention_days: s.preview_retention_days.to_string(),
            poll_interval_secs: num(s.poll_interval_secs),
            timeout_secs: num(s.timeout_secs),
            command: s.build.command.clone().unwrap_or_default(),
            publish: s.build.publish.clone().unwrap_or_default(),
            base: s.build.base.clone().unwrap_or_default(),
            app_root: s.build.app_root.clone().unwrap_or_default(),
            ..Self::default()
        }
    }

    /// The API's request: what the form says, whole (a PUT replaces the settings).
    fn request(&self) -> Result<ConnectRequest, ApiError> {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let secs = |field: &str, s: &str| -> Result<Option<u64>, ApiError> {
            text(s).map(|t| t.parse::<u64>().map_err(|_| not_a_number(field, &t))).transpose()
        };
        let globs = |s: &str| {
            s.split(|c: char| c.is_whitespace() || c == ',').filter(|g| !g.is_empty()).map(str::to_owned).collect()
        };
        Ok(ConnectRequest {
            repository: self.repository.trim().to_owned(),
            token: text(&self.token),
            ssh_key: Some(self.ssh_key.clone()).filter(|k| !k.trim().is_empty()),
            clear_credential: self.clear_credential.is_some(),
            rotate_webhook_secret: self.rotate_webhook_secret.is_some(),
            production_branch: text(&self.production_branch),
            settings: GitSettings {
                include: globs(&self.include),
                exclude: globs(&self.exclude),
                delete_branches: self.delete_branches.is_some(),
                pull_request_previews: self.pull_request_previews.is_some(),
                fork_pull_requests: self.fork_pull_requests.is_some(),
                preview_retention_days: match secs("preview retention (days)", &self.preview_retention_days)? {
                    Some(d) => {
                        u32::try_from(d).map_err(|_| not_a_number("preview retention (days)", &d.to_string()))?
                    }
                    None => 0,
                },
                poll_interval_secs: secs("poll interval (seconds)", &self.poll_interval_secs)?,
                timeout_secs: secs("time limit (seconds)", &self.timeout_secs)?,
                build: chanto_build::SiteBuildSettings {
                    command: text(&self.command),
                    publish: text(&self.publish),
                    base: text(&self.base),
                    app_root: text(&self.app_root),
                },
                credential_kind: None,
                username: text(&self.username),
                // Kept from the connection by the handler: only `chanto git connect --platform-config` sets it.
                platform_config: None,
            },
        })
    }
}

fn not_a_number(field: &str, value: &str) -> ApiError {
    let value: String = value.chars().take(40).collect();
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("{field}: {value:?} is not a whole number"))
        .field(field)
}

#[derive(Template)]
#[template(path = "console/git.html")]
struct GitPage {
    nav: Option<Nav>,
    site: String,
    notice: Option<String>,
    error: Option<String>,
    /// Just made: shown in this answer only.
    webhook_secret: Option<String>,
    /// A build hook just made (its name, its secret URL): shown in this answer only.
    new_hook: Option<(String, String)>,
    git: Option<GitView>,
    credential: String,
    form: ConnectForm,
    hooks: Vec<HookRow>,
    deliveries: Vec<WebhookRow>,
    can_write: bool,
    csrf: String,
}

fn here(site: &str) -> String {
    format!("/sites/{}/git", url_escape(site))
}

fn api_target(site: &str, rest: &str) -> String {
    format!("/api/v1/sites/{}/{rest}", url_escape(site))
}

/// The page as it is now (no connection yet is not an error here).
async fn view(c: &Control, s: &Session, site: &str) -> Result<GitPage, ApiError> {
    let name: SiteName = crate::api::parse_path(site)?;
    let git = match c.git(&name).await {
        Ok(g) => Some(g),
        Err(e) if e.code == "not_connected" => None,
        Err(e) => return Err(e),
    };
    let hooks = c
        .list_hooks(&name)
        .await?
        .into_iter()
        .map(|h| HookRow {
            id: h.id,
            name: h.name,
            branch: h.branch.unwrap_or_else(|| "any branch a request names".to_owned()),
            created: when(h.created_at),
        })
        .collect();
    let deliveries = c
        .deliveries(&name, DELIVERIES_SHOWN)
        .await?
        .into_iter()
        .map(|d| WebhookRow {
            source: d.source,
            event: d.event,
            outcome: d.outcome,
            detail: d.detail,
            build: d.build.map(|b| b.to_string()),
            at: when(d.at),
        })
        .collect();
    let credential = match git.as_ref().and_then(|g| g.credential) {
        Some(CredentialKind::Token) => "an access token (stored encrypted, never shown)",
        Some(CredentialKind::SshKey) => "an SSH deploy key (stored encrypted, never shown)",
        None => "none (a public or local repository)",
    };
    Ok(GitPage {
        nav: Nav::of(s, "sites"),
        site: name.to_string(),
        notice: None,
        error: None,
        webhook_secret: None,
        new_hook: None,
        form: ConnectForm::of(git.as_ref()),
        credential: credential.to_owned(),
        git,
        hooks,
        deliveries,
        can_write: s.may(Scope::Write),
        csrf: s.csrf.clone(),
    })
}

/// Renders the page, changed by `edit`, or the error that kept it from being read.
async fn show(c: &Control, s: &Session, site: &str, status: StatusCode, edit: impl FnOnce(&mut GitPage)) -> Response {
    super::render_edited(s, site, status, view(c, s, site).await, edit)
}

async fn git_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let s = match signed_in(&c, &headers, &here(&site)).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Only fixed words are echoed back.
    let notice = match q.done.as_deref() {
        Some("connected") => Some("Saved; new pushes build with these settings."),
        Some("disconnected") => Some("Disconnected; the site's deploys stay."),
        Some("hook-deleted") => Some("The build hook was deleted; its URL no longer works."),
        _ => None,
    };
    show(&c, &s, &site, StatusCode::OK, |p| p.notice = notice.map(str::to_owned)).await
}

async fn connect(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<ConnectForm>,
) -> Response {
    let what = ("connect", api_target(&site, "git"), here(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let name = crate::api::parse_path(&site)?;
        let mut req = f.request()?;
        // The form has no field for it: a platform config site stays one.
        if let Ok(existing) = c.git(&name).await {
            req.settings.platform_config = existing.settings.platform_config;
        }
        c.require_platform_admin(&p.s.principal, &name, &req).await?;
        c.connect_git(&name, req).await
    }
    .await;
    let failed = result.as_ref().err().cloned();
    let secret = result.as_ref().ok().and_then(|g| g.webhook_secret.clone());
    let done =
        p.finish(&c, 200, result, |_| Redirect::to(&format!("{}?done=connected", here(&site))).into_response()).await;
    match (failed, secret) {
        // The form comes back as typed (but its secrets), with what to fix.
        (Some(e), _) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let message = super::with_field(&e);
            let form = ConnectForm { token: String::new(), ssh_key: String::new(), ..f };
            show(&c, &p.s, &site, e.status, |page| {
                page.error = Some(message);
                page.form = form;
            })
            .await
        }
        // Shown in this answer only (never in a URL, never again).
        (None, Some(secret)) => {
            show(&c, &p.s, &site, StatusCode::OK, |page| {
                page.notice = Some("Connected.".to_owned());
                page.webhook_secret = Some(secret);
            })
            .await
        }
        _ => done,
    }
}

async fn disconnect_page(State(c): State<Arc<Control>>, headers: HeaderMap, Path(site): Path<String>) -> Response {
    let s = match signed_in(&c, &headers, &format!("{}/disconnect", here(&site))).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        s.principal.require(Scope::Write)?;
        c.git(&crate::api::parse_path(&site)?).await
    }
    .await;
    match result {
        Ok(g) => html(
            StatusCode::OK,
            &ConfirmRemove {
                nav: Nav::of(&s, "sites"),
                title: format!("Disconnect {} from its repository?", g.site),
                what: vec![
                    format!("{} builds from {}.", g.site, g.repository),
                    "Pushes no longer build it and its webhooks are refused; its deploys, variables and build \
                     hooks stay, and connecting again makes a new webhook secret."
                        .to_owned(),
                ],
                action: format!("{}/disconnect", here(&g.site)),
                button: format!("Disconnect {}", g.site),
                back: here(&g.site),
                csrf: s.csrf.clone(),
            },
        ),
        Err(e) => error_page(Some(&s), e, &here(&site)),
    }
}

async fn disconnect(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("disconnect", api_target(&site, "git"), here(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async { c.disconnect_git(&crate::api::parse_path(&site)?).await }.await;
    p.finish(&c, 204, result, |()| Redirect::to(&format!("{}?done=disconnected", here(&site))).into_response()).await
}

#[derive(Deserialize, Default)]
struct HookForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    branch: String,
    any_branch: Option<String>,
}

async fn create_hook(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<HookForm>,
) -> Response {
    let what = ("create_hook", api_target(&site, "build_hooks"), here(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let branch: Option<BranchName> = match f.branch.trim() {
            "" => None,
            b => Some(b.parse().map_err(|e: chanto_core::ValidationError| ApiError::from(e).field("branch"))?),
        };
        c.create_hook(&name, f.name.trim().to_owned(), branch, f.any_branch.is_some()).await
    }
    .await;
    let made = result.as_ref().ok().and_then(|h| Some((h.name.clone(), h.url.clone()?)));
    let failed = p.finish(&c, 201, result, |_| Response::default()).await;
    match made {
        // Shown in this answer only (never in a URL, never again).
        Some(hook) => show(&c, &p.s, &site, StatusCode::OK, |page| page.new_hook = Some(hook)).await,
        None => failed,
    }
}

async fn delete_hook(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path((site, id)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("delete_hook", api_target(&site, &format!("build_hooks/{}", url_escape(&id))), here(&site));
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async { c.delete_hook(&crate::api::parse_path(&site)?, &id).await }.await;
    p.finish(&c, 204, result, |()| Redirect::to(&format!("{}?done=hook-deleted", here(&site))).into_response()).await
}

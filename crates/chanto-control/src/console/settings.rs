//! A site's retention, proxy origins and profile (`/sites/{site}/settings`), and
//! garbage collection now (admins, from `/health`). The same `Control`
//! methods as `/api/v1/sites/{site}/retention`, `…/proxy_origins`, `…/profile` and
//! `/api/v1/gc`, audited under the same operation ids.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chanto_core::SiteName;
use chanto_store::Scope;
use serde::Deserialize;

use super::{DoneQuery, Nav, checked_post, error_page, html, human_bytes, signed_in, url_escape, when};
use crate::gc::{GcReport, MAX_KEEP_DEPLOYS};
use crate::site_settings::MAX_PROXY_ORIGINS;
use crate::{ApiError, Control};

pub(super) fn routes() -> Router<Arc<Control>> {
    Router::new()
        .route("/sites/{site}/settings", get(settings_page))
        .route("/sites/{site}/settings/retention", post(retention_save))
        .route("/sites/{site}/settings/proxy_origins", post(origins_save))
        .route("/sites/{site}/settings/profile", post(profile_save))
        .route("/health/gc", post(collect_garbage))
}

#[derive(Template)]
#[template(path = "console/settings.html")]
struct SettingsPage {
    nav: Option<Nav>,
    site: String,
    notice: Option<String>,
    keep_deploys: u32,
    max_keep: u32,
    rollback_depth: u32,
    origins: Vec<String>,
    max_origins: usize,
    profile: String,
    /// Each profile, and whether it is the one set.
    profiles: Vec<(&'static str, bool)>,
    can_write: bool,
    csrf: String,
}

async fn settings_page(
    State(c): State<Arc<Control>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let s = match signed_in(&c, &headers, &format!("/sites/{}/settings", url_escape(&site))).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        let name: SiteName = crate::api::parse_path(&site)?;
        let keep_deploys = c.retention(&name).await?.keep_deploys;
        let origins = c.proxy_origins(&name).await?.origins;
        let profile = c.site_profile(&name).await?.profile.unwrap_or_default();
        // Fixed words only (no text from the URL).
        let notice = match q.done.as_deref() {
            Some("retention") if keep_deploys == 0 => Some("Saved: every deploy is kept.".to_owned()),
            Some("retention") => Some(format!("Saved: {keep_deploys} deploys per branch are kept.")),
            Some("origins") => Some(format!("Saved: {} proxy origin(s).", origins.len())),
            Some("profile") if profile.is_empty() => {
                Some("Saved: each deploy follows the platform its rule files come from.".to_owned())
            }
            Some("profile") => Some(format!("Saved: the next deploys follow {profile}'s defaults.")),
            _ => None,
        };
        Ok::<_, ApiError>(SettingsPage {
            nav: Nav::of(&s, "sites"),
            site: name.to_string(),
            notice,
            keep_deploys,
            max_keep: MAX_KEEP_DEPLOYS,
            rollback_depth: c.config.rollback_depth,
            origins,
            max_origins: MAX_PROXY_ORIGINS,
            profiles: chanto_rules::Profile::ALL.iter().map(|p| (p.as_str(), p.as_str() == profile)).collect(),
            profile,
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

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
}

/// At most `max` characters of what was typed, to quote it in an error.
fn quoted(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{:?}…", &text[..at]),
        None => format!("{text:?}"),
    }
}

/// The number of deploys kept per branch, as typed.
fn keep_deploys(raw: &str) -> Result<u32, ApiError> {
    let t = raw.trim();
    t.parse::<u32>().ok().filter(|n| *n <= MAX_KEEP_DEPLOYS).ok_or_else(|| {
        invalid(format!(
            "Deploys kept per branch: {} is not a whole number from 0 to {MAX_KEEP_DEPLOYS}; write e.g. 20, or 0 to keep every deploy",
            quoted(t)
        ))
    })
}

/// Origins as typed, one per line; every bad line is named.
fn origin_lines(text: &str) -> Result<Vec<String>, ApiError> {
    const NAMED: usize = 10;
    let lines: Vec<(usize, &str)> =
        text.lines().map(str::trim).enumerate().filter(|(_, l)| !l.is_empty()).map(|(i, l)| (i + 1, l)).collect();
    if lines.len() > MAX_PROXY_ORIGINS {
        return Err(invalid(format!("Proxy origins: {} lines; a site lists at most {MAX_PROXY_ORIGINS}", lines.len())));
    }
    let bad: Vec<String> = lines
        .iter()
        .filter(|(_, l)| chanto_core::normalize_origin(l).is_err())
        .map(|(n, l)| format!("line {n} ({})", quoted(l)))
        .collect();
    if !bad.is_empty() {
        let more = bad.len().saturating_sub(NAMED);
        let mut named = bad.into_iter().take(NAMED).collect::<Vec<_>>().join(", ");
        if more > 0 {
            named.push_str(&format!(" and {more} more"));
        }
        return Err(invalid(format!(
            "Proxy origins: {named} not an origin; write scheme://host[:port] (no path), like https://api.example.com"
        )));
    }
    Ok(lines.into_iter().map(|(_, l)| l.to_owned()).collect())
}

#[derive(Deserialize, Default)]
struct RetentionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    keep_deploys: String,
}

async fn retention_save(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<RetentionForm>,
) -> Response {
    let back = format!("/sites/{}/settings", url_escape(&site));
    let target = format!("/api/v1/sites/{}/retention", url_escape(&site));
    let p =
        match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, ("put_retention", target, back.clone())).await {
            Ok(p) => p,
            Err(r) => return r,
        };
    let result = async { c.set_retention(&crate::api::parse_path(&site)?, keep_deploys(&f.keep_deploys)?).await }.await;
    p.finish(&c, 200, result, |_| Redirect::to(&format!("{back}?done=retention")).into_response()).await
}

#[derive(Deserialize, Default)]
struct OriginsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    origins: String,
}

async fn origins_save(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<OriginsForm>,
) -> Response {
    let back = format!("/sites/{}/settings", url_escape(&site));
    let target = format!("/api/v1/sites/{}/proxy_origins", url_escape(&site));
    let what = ("put_proxy_origins", target, back.clone());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async { c.set_proxy_origins(&crate::api::parse_path(&site)?, &origin_lines(&f.origins)?).await }.await;
    p.finish(&c, 200, result, |_| Redirect::to(&format!("{back}?done=origins")).into_response()).await
}

#[derive(Deserialize, Default)]
struct ProfileForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    profile: String,
}

async fn profile_save(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Form(f): Form<ProfileForm>,
) -> Response {
    let back = format!("/sites/{}/settings", url_escape(&site));
    let target = format!("/api/v1/sites/{}/profile", url_escape(&site));
    let what = ("put_profile", target, back.clone());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Write, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let profile = Some(f.profile.as_str()).filter(|p| !p.is_empty());
    let result = async { c.set_site_profile(&crate::api::parse_path(&site)?, profile).await }.await;
    p.finish(&c, 200, result, |_| Redirect::to(&format!("{back}?done=profile")).into_response()).await
}

#[derive(Template)]
#[template(path = "console/gc.html")]
struct GcPage {
    nav: Option<Nav>,
    r: GcReport,
    deleted: String,
    waiting: String,
    next_deletable: Option<String>,
    grace: String,
}

#[derive(Deserialize, Default)]
struct GcForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    dry_run: String,
}

async fn collect_garbage(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<GcForm>,
) -> Response {
    let what = ("run_gc", "/api/v1/gc".to_owned(), "/health".to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = match f.dry_run.as_str() {
        "true" => c.collect_garbage(chanto_store::now_millis(), true).await,
        "false" => c.collect_garbage(chanto_store::now_millis(), false).await,
        _ => Err(invalid("dry_run: choose one of the two buttons (true: only report, false: remove)".to_owned())),
    };
    p.finish(&c, 200, result, |r| {
        let page = GcPage {
            nav: Nav::of(&p.s, "health"),
            deleted: human_bytes(r.bytes_deleted),
            waiting: human_bytes(r.bytes_waiting),
            next_deletable: r.next_deletable_at.map(when),
            grace: humantime::format_duration(std::time::Duration::from_secs(r.grace_seconds)).to_string(),
            r,
        };
        html(StatusCode::OK, &page)
    })
    .await
}

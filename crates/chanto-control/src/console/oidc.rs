//! Single sign-on pages ([`crate::oidc`]): leave for the provider, come back.
//!
//! Who may reach them: anyone (they are the way in). `/login/oidc` only
//! sends the browser to the configured provider, with a fresh `state`,
//! `nonce` and PKCE challenge kept in a 10-minute `HttpOnly` cookie of that
//! browser; `/login/oidc/callback` signs in only when the `state` it gets
//! matches that cookie and the provider's ID token passes every check.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::{NextQuery, error_page, safe_next, session, source, start_signed_in, subtle_eq};
use crate::oidc::{PENDING_TTL_MS, Pending};
use crate::{ApiError, Control};

/// The cookie that carries a sign-in in progress.
const PENDING_COOKIE: (&str, &str) = ("chanto_oidc", "__Host-chanto_oidc");
/// The longest `next` path a sign-in carries.
const MAX_NEXT: usize = 1024;
/// The longest provider error text shown.
const MAX_PROVIDER_TEXT: usize = 200;

pub(super) fn routes() -> Router<Arc<Control>> {
    Router::new().route("/login/oidc", get(start)).route("/login/oidc/callback", get(callback))
}

/// Where the provider sends the browser back (register it there).
pub fn redirect_uri(c: &Control) -> String {
    format!("{}/login/oidc/callback", c.public_url.get().map(String::as_str).unwrap_or(""))
}

fn not_configured() -> ApiError {
    ApiError::not_found("single sign-on: it is not configured (`chanto serve --oidc-issuer … --oidc-client-id …`)")
}

async fn start(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let Some(oidc) = c.oidc.get() else { return error_page(None, not_configured(), "/login") };
    // The sign-in in progress rides in a cookie: a long `next` is dropped
    // rather than making it too large to come back.
    let next = Some(safe_next(q.next.as_deref().unwrap_or("/"))).filter(|n| n.len() <= MAX_NEXT).unwrap_or("/".into());
    match oidc.begin(&redirect_uri(&c), next, chanto_store::now_millis()).await {
        Ok((url, pending)) => {
            let mut resp = Redirect::to(&url).into_response();
            let age = (PENDING_TTL_MS / 1000) as u32;
            let cookie = session::cookie_header(
                PENDING_COOKIE,
                Some(&pending.encode()),
                session::request_is_https(&headers, &peer),
                Some(age),
            );
            resp.headers_mut().append(header::SET_COOKIE, cookie);
            resp
        }
        Err(e) => {
            tracing::warn!(error = %e.message, "single sign-on could not start");
            error_page(None, e, "/login")
        }
    }
}

#[derive(Deserialize, Default)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn shorten(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).take(MAX_PROVIDER_TEXT).collect();
    s
}

async fn callback(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let source = source(peer.as_ref().map(|e| &e.0));
    let https = session::request_is_https(&headers, &peer);
    let result = async {
        let oidc = c.oidc.get().ok_or_else(not_configured)?;
        let label = &oidc.config().label;
        let pending = session::cookie_value(&headers, PENDING_COOKIE.0, PENDING_COOKIE.1)
            .and_then(|v| Pending::decode(&v, chanto_store::now_millis()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "expired",
                    "this sign-in took longer than 10 minutes or was started in another browser; sign in again",
                )
            })?;
        // Only an answer to this browser's own sign-in is read at all.
        let state = q.state.as_deref().unwrap_or("");
        if !subtle_eq::eq(state.as_bytes(), pending.state.as_bytes()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this answer from the sign-in provider is not for the sign-in this browser started; sign in again",
            ));
        }
        if let Some(error) = &q.error {
            let detail = q.error_description.as_deref().map(|d| format!(" ({})", shorten(d))).unwrap_or_default();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{label} did not sign you in: {}{detail}", shorten(error)),
            ));
        }
        let code = q.code.clone().filter(|c| !c.is_empty() && c.len() <= 4096).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("{label} sent no authorization code"))
        })?;
        let next = safe_next(&pending.next);
        let identity = oidc.finish(&redirect_uri(&c), pending, code).await?;
        let user = c.oidc_user(&identity, &source).await.inspect_err(|e| {
            tracing::warn!(subject = %identity.subject, error = %e.message, %source, "single sign-on refused");
        })?;
        Ok((user, next))
    }
    .await;
    let mut resp = match result {
        Ok((user, next)) => start_signed_in(&c, user, (&source, "/login/oidc"), https, &next).await,
        Err(e) => {
            tracing::warn!(error = %e.message, %source, "single sign-on failed");
            error_page(None, e, "/login")
        }
    };
    // The sign-in in progress is used up either way.
    resp.headers_mut().append(header::SET_COOKIE, session::cookie_header(PENDING_COOKIE, None, https, None));
    resp
}

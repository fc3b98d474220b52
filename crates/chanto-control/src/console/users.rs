//! Users (admins): list, add (with a password, or without one and a
//! one-time invitation link), change a role, make a new sign-in link,
//! remove. The same `Control` methods as `/api/v1/users…`; the link opens
//! the invitation page in `mod.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chanto_store::Scope;
use serde::Deserialize;

use super::{CsrfForm, Nav, checked_post, error_page, html, session, signed_in, url_escape};
use crate::{ApiError, Control};

pub(super) fn routes() -> Router<Arc<Control>> {
    Router::new()
        .route("/users", get(users_page).post(users_create))
        .route("/users/{name}/role", post(users_set_role))
        .route("/users/{name}/invite", post(users_invite))
        .route("/users/{name}/remove", get(users_remove_page).post(users_remove))
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    nav: Option<Nav>,
    notice: Option<String>,
    users: Vec<crate::accounts::UserView>,
    roles: Vec<&'static str>,
    csrf: String,
}

#[derive(Deserialize, Default)]
struct UsersQuery {
    added: Option<String>,
    changed: Option<String>,
}

async fn users_page(State(c): State<Arc<Control>>, headers: HeaderMap, Query(q): Query<UsersQuery>) -> Response {
    let s = match signed_in(&c, &headers, "/users").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if let Err(e) = s.principal.require(Scope::Admin) {
        return error_page(Some(&s), e, "/");
    }
    match c.meta.users().await {
        Ok(users) => {
            // Only a listed user's name is echoed back (no text from the URL).
            let find = |n: &Option<String>| users.iter().find(|u| Some(&u.name) == n.as_ref()).cloned();
            let notice = match (find(&q.added), find(&q.changed)) {
                (Some(u), _) => Some(format!("Added {} ({}).", u.name, u.role)),
                (None, Some(u)) => Some(format!("{} is now {}.", u.name, u.role)),
                _ => None,
            };
            let page = UsersPage {
                nav: Nav::of(&s, "users"),
                notice,
                users: users.into_iter().map(Into::into).collect(),
                roles: chanto_store::Role::ALL.iter().map(|r| r.as_str()).collect(),
                csrf: s.csrf.clone(),
            };
            html(StatusCode::OK, &page)
        }
        Err(e) => error_page(Some(&s), e.into(), "/"),
    }
}

#[derive(Deserialize, Default)]
struct NewUserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

async fn users_create(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<NewUserForm>,
) -> Response {
    // No password: the user is created with a one-time link instead.
    if f.password.is_empty() {
        let target = format!("/api/v1/users/{}/invite", url_escape(&f.name));
        let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, ("invite_user", target, "/users".into()))
            .await
        {
            Ok(p) => p,
            Err(r) => return r,
        };
        // A new user only: an existing one gets a new link from their row.
        let result = match c.meta.user_by_name(&f.name).await {
            Ok(Some(u)) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{} exists already; make them a new link with the button in their row", u.name),
            )),
            Ok(None) => c.invite_user(&f.name, Some(&f.role)).await,
            Err(e) => Err(e.into()),
        };
        return p.finish(&c, 201, result, |i| invited(&p.s, &headers, &peer, i)).await;
    }
    let what = ("create_user", "/users".to_owned(), "/users".to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let req = crate::accounts::CreateUserRequest { name: f.name, role: f.role, password: Some(f.password) };
    let result = c.create_user(req).await;
    p.finish(&c, 201, result, |u| Redirect::to(&format!("/users?added={}", url_escape(&u.name))).into_response()).await
}

/// A new one-time sign-in link for an existing user (their earlier link
/// stops working; their password, if any, works until the link is used).
async fn users_invite(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("invite_user", format!("/api/v1/users/{}/invite", url_escape(&name)), "/users".to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    // Only for a user who exists: a new one is added with the form (and a role).
    let result = match c.meta.user_by_name(&name).await {
        Ok(Some(_)) => c.invite_user(&name, None).await,
        Ok(None) => Err(ApiError::not_found(format!("user {name:?}"))),
        Err(e) => Err(e.into()),
    };
    p.finish(&c, 201, result, |i| invited(&p.s, &headers, &peer, i)).await
}

#[derive(Template)]
#[template(path = "console/invited.html")]
struct InvitedPage {
    nav: Option<Nav>,
    user: String,
    url: String,
    expires: String,
}

/// The link, shown this once: absolute (this console's address when the
/// installation has no public URL configured).
fn invited(
    s: &session::Session,
    headers: &HeaderMap,
    peer: &Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    i: crate::accounts::InviteView,
) -> Response {
    let url = match headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if i.url.starts_with('/') => {
            let https = session::request_is_https(headers, peer);
            format!("{}://{host}{}", if https { "https" } else { "http" }, i.url)
        }
        _ => i.url,
    };
    let expires = format!("{} UTC", i.expires_at.get(..16).unwrap_or(&i.expires_at).replace('T', " "));
    html(StatusCode::OK, &InvitedPage { nav: Nav::of(s, "users"), user: i.user, url, expires })
}

#[derive(Deserialize, Default)]
struct RoleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    role: String,
}

async fn users_set_role(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<RoleForm>,
) -> Response {
    let what = ("update_user", format!("/users/{}/role", url_escape(&name)), "/users".to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let req = crate::accounts::UpdateUserRequest { role: Some(f.role), ..Default::default() };
    let result = c.update_user(&name, req).await;
    p.finish(&c, 200, result, |u| Redirect::to(&format!("/users?changed={}", url_escape(&u.name))).into_response())
        .await
}

#[derive(Template)]
#[template(path = "console/remove_user.html")]
struct RemoveUserPage {
    nav: Option<Nav>,
    user: String,
    role: String,
    csrf: String,
}

async fn users_remove_page(State(c): State<Arc<Control>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let s = match signed_in(&c, &headers, "/users").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let result = async {
        s.principal.require(Scope::Admin)?;
        c.meta.user_by_name(&name).await?.ok_or_else(|| ApiError::not_found(format!("user {name:?}")))
    }
    .await;
    match result {
        Ok(u) => html(
            StatusCode::OK,
            &RemoveUserPage { nav: Nav::of(&s, "users"), user: u.name, role: u.role.to_string(), csrf: s.csrf.clone() },
        ),
        Err(e) => error_page(Some(&s), e, "/users"),
    }
}

async fn users_remove(
    State(c): State<Arc<Control>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let what = ("delete_user", format!("/api/v1/users/{}", url_escape(&name)), "/users".to_owned());
    let p = match checked_post(&c, &headers, &peer, &f.csrf, Scope::Admin, what).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = c.delete_user(&name).await;
    p.finish(&c, 204, result, |()| Redirect::to("/users").into_response()).await
}

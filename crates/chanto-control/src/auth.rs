//! Who is calling the API and what they may do (issue 18).
//!
//! Three kinds of bearer token reach `/api/v1`:
//! - the instance's **admin token** (`DATA/admin.token`): break-glass, every
//!   scope, belongs to no user;
//! - a user's **personal token** (`chp_…`): its scope, never more than its
//!   owner's role allows *now* (checked at every use, so demoting a user
//!   narrows their tokens at once), refused once revoked, expired, or when
//!   its owner is deleted;
//! - a **node token** (`chn_…`): refused here (only the node endpoints take it).
//!
//! Every route needs a [`Scope`] ([`required_scope`]): reads need `read`,
//! deploys, publish, rollback and builds `deploy`, other changes `write`,
//! users, tokens of others, nodes, the audit log and instance settings
//! `admin`. Every request that changes something (any method but GET and
//! HEAD) is written to the audit log with who, how, from where, what and the
//! status it ended with — never a body, so never a secret.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chanto_core::ContentHash;
use chanto_store::{AuditEntry, Scope, UserRecord, now_millis};

use crate::{ApiError, Control};

/// The prefix of personal API tokens.
pub const PERSONAL_TOKEN_PREFIX: &str = "chp_";
/// What the audit log and `whoami` call the instance's admin token.
pub const ADMIN_TOKEN_ACTOR: &str = "admin-token";
/// How often a token's last-used time is written, at most.
const TOUCH_EVERY_MS: i64 = 60_000;

/// The caller of one request, as the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who: the user's name, or [`ADMIN_TOKEN_ACTOR`].
    pub actor: String,
    /// The user, when a user's token was used.
    pub user: Option<UserRecord>,
    /// With what: the personal token's id, or [`ADMIN_TOKEN_ACTOR`].
    pub via: String,
    /// The widest this request may do: the token's scope within the owner's
    /// current role.
    pub scope: Scope,
}

impl Principal {
    /// The instance's admin token.
    pub fn admin_token() -> Self {
        Self { actor: ADMIN_TOKEN_ACTOR.to_owned(), user: None, via: ADMIN_TOKEN_ACTOR.to_owned(), scope: Scope::Admin }
    }

    /// Refuses unless this caller has `needed`.
    pub fn require(&self, needed: Scope) -> Result<(), ApiError> {
        if self.scope >= needed {
            return Ok(());
        }
        let why = match &self.user {
            Some(u) if u.role.max_scope() < needed => {
                format!("{} has the role {}, which does not allow it", u.name, u.role)
            }
            _ => format!("this token's scope is {}", self.scope),
        };
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {needed} scope and {why}; ask an admin, or use a token with the {needed} scope"),
        ))
    }
}

/// The scope a request needs, from its method and its route (the template
/// axum matched, without `/api/v1`).
pub fn required_scope(method: &Method, route: &str) -> Scope {
    const ADMIN_PREFIXES: [&str; 6] = ["/users", "/audit", "/nodes", "/certificates/base", "/gc", "/platform"];
    if ADMIN_PREFIXES.iter().any(|p| route == *p || route.starts_with(&format!("{p}/"))) {
        return Scope::Admin;
    }
    // One's own tokens and identity: any valid token (what a new token may
    // do is checked against the caller's scope when it is made).
    if route == "/me" || route == "/tokens" || route.starts_with("/tokens/") {
        return Scope::Read;
    }
    if method == Method::GET || method == Method::HEAD {
        return Scope::Read;
    }
    let deploying = [
        "/sites/{site}/deploys",
        "/deploys/{id}/blobs",
        "/deploys/{id}/blobs/{hash}",
        "/deploys/{id}/finalize",
        "/deploys/{id}/publish",
        "/sites/{site}/rollback",
        "/sites/{site}/builds",
        "/builds/{id}/cancel",
    ];
    if deploying.contains(&route) { Scope::Deploy } else { Scope::Write }
}

/// Whether a request to `route` is written to the audit log: every change
/// but the blob uploads inside a deploy (the deploy's creation and
/// finalization are; thousands of blob lines would bury everything else).
fn audited(method: &Method, route: &str) -> bool {
    method != Method::GET && method != Method::HEAD && !route.starts_with("/deploys/{id}/blobs")
}

/// The keyed hash personal tokens are stored and looked up by (apart from
/// admin and node tokens: one kind never stands in for another).
pub fn personal_token_hash(token: &str) -> ContentHash {
    ContentHash::from_blake3(
        blake3::Hasher::new_derive_key("chanto personal token v1").update(token.as_bytes()).finalize(),
    )
}

/// A new personal token: the prefix and 32 random bytes in hex.
pub fn new_personal_token() -> String {
    format!("{PERSONAL_TOKEN_PREFIX}{}", hex::encode(chanto_store::random_bytes::<32>()))
}

/// When each personal token's use was last written (to write it about once
/// a minute, not on every request).
#[derive(Debug, Default)]
pub struct TouchCache(Mutex<HashMap<String, i64>>);

impl TouchCache {
    /// Whether `id`'s use at `now` should be written.
    fn due(&self, id: &str, now: i64) -> bool {
        let mut map = self.0.lock().expect("touch cache");
        if map.len() > 10_000 {
            map.clear();
        }
        match map.get(id) {
            Some(t) if now - t < TOUCH_EVERY_MS => false,
            _ => {
                map.insert(id.to_owned(), now);
                true
            }
        }
    }
}

impl Control {
    /// The caller a bearer token names, or why it is refused (401).
    pub async fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        if token.starts_with(chanto_store::node_wire::NODE_TOKEN_PREFIX) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_token_kind",
                "a node token is accepted only by /api/v1/nodes/routing, /api/v1/nodes/heartbeat and /api/v1/nodes/certificates; use an API token here (a personal token, or DATA/admin.token on the server)",
            ));
        }
        if token.is_empty() || token.len() > 256 {
            return Err(ApiError::unauthorized("unknown API token"));
        }
        if let Some(rest) = token.strip_prefix(PERSONAL_TOKEN_PREFIX) {
            if rest.is_empty() {
                return Err(ApiError::unauthorized("unknown API token"));
            }
            let now = now_millis();
            let Some((t, user)) = self.meta.api_token_by_hash(&personal_token_hash(token)).await? else {
                return Err(ApiError::unauthorized(
                    "unknown API token (deleted with its user, or never made); make a new one with `chanto tokens create` or `chanto login --user NAME`",
                ));
            };
            if let Some(at) = t.revoked_at {
                return Err(ApiError::unauthorized(format!(
                    "the token {} ({}) was revoked at {}; make a new one with `chanto tokens create`",
                    t.id,
                    t.name,
                    crate::domains::rfc3339(at)
                )));
            }
            if let Some(at) = t.expires_at.filter(|at| *at <= now) {
                return Err(ApiError::unauthorized(format!(
                    "the token {} ({}) expired at {}; make a new one with `chanto tokens create`",
                    t.id,
                    t.name,
                    crate::domains::rfc3339(at)
                )));
            }
            if self.token_touches.due(&t.id, now)
                && let Err(e) = self.meta.touch_api_token(&t.id, now).await
            {
                tracing::warn!(token = %t.id, error = %e, "could not note a token's use");
            }
            let scope = t.scope.min(user.role.max_scope());
            return Ok(Principal { actor: user.name.clone(), user: Some(user), via: t.id, scope });
        }
        if self.check_token(token).await? {
            return Ok(Principal::admin_token());
        }
        Err(ApiError::unauthorized(
            "unknown API token; use a personal token (`chanto login --user NAME`) or the admin token in DATA/admin.token on the server",
        ))
    }

    /// Appends one audit entry; a failure is logged, never the caller's
    /// (the change it records has happened).
    pub async fn audit(&self, principal: &Principal, source: &str, action: &str, target: &str, status: u16) {
        let entry = AuditEntry {
            id: 0,
            at: now_millis(),
            actor: principal.actor.clone(),
            via: principal.via.clone(),
            source: source.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            status,
        };
        if let Err(e) = self.meta.append_audit(&entry).await {
            tracing::error!(actor = %entry.actor, action = %entry.action, target = %entry.target, error = %e, "could not write the audit log");
        }
    }
}

/// The peer address of a request, as the API listener saw it.
pub fn source_of(req: &Request) -> String {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map_or("unknown".to_owned(), |c| c.0.ip().to_string())
}

/// The API operation a route is (its OpenAPI operation id, as `chanto audit`
/// shows it), by method and route template.
pub type Operations = HashMap<(Method, String), String>;

/// Every operation of the OpenAPI document, by method and route (without `/api/v1`).
pub fn operations(doc: &utoipa::openapi::OpenApi) -> Operations {
    let mut out = HashMap::new();
    for (path, item) in &doc.paths.paths {
        let route = path.strip_prefix("/api/v1").unwrap_or(path).to_owned();
        let ops = [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::PATCH, &item.patch),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                out.insert((method, route.clone()), op.operation_id.clone().unwrap_or_else(|| path.clone()));
            }
        }
    }
    out
}

/// The API's gate: authenticates the bearer token, checks the route's
/// scope, hands the [`Principal`] to the handler, and audits changes.
pub async fn require_token(
    State(control): State<Arc<Control>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = crate::nodes::bearer(&req) else {
        return Err(ApiError::unauthorized(
            "missing API token: send `Authorization: Bearer <token>` (the CLI takes --token, CHANTO_TOKEN or `chanto login`)",
        ));
    };
    let principal = control.authenticate(token).await?;
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().strip_prefix("/api/v1").unwrap_or(m.as_str()).to_owned())
        .unwrap_or_default();
    let method = req.method().clone();
    let audit = audited(&method, &route);
    // The router is nested under /api/v1, which axum strips from the URI.
    let (source, target) = (source_of(&req), format!("/api/v1{}", req.uri().path()));
    let action = || control.operations().get(&(method.clone(), route.clone())).cloned().unwrap_or(route.clone());
    if let Err(e) = principal.require(required_scope(&method, &route)) {
        if audit {
            control.audit(&principal, &source, &action(), &target, StatusCode::FORBIDDEN.as_u16()).await;
        }
        return Err(e);
    }
    req.extensions_mut().insert(principal.clone());
    let response = next.run(req).await;
    if audit {
        control.audit(&principal, &source, &action(), &target, response.status().as_u16()).await;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_scope_their_kind_of_change_does() {
        let s = |m: Method, r: &str| required_scope(&m, r);
        assert_eq!(s(Method::GET, "/sites"), Scope::Read);
        assert_eq!(s(Method::GET, "/builds/{id}/log"), Scope::Read);
        assert_eq!(s(Method::POST, "/sites/{site}/deploys"), Scope::Deploy);
        assert_eq!(s(Method::POST, "/deploys/{id}/publish"), Scope::Deploy);
        assert_eq!(s(Method::POST, "/sites/{site}/rollback"), Scope::Deploy);
        assert_eq!(s(Method::POST, "/sites/{site}/builds"), Scope::Deploy);
        assert_eq!(s(Method::PUT, "/sites/{site}/env/{name}"), Scope::Write);
        assert_eq!(s(Method::POST, "/sites"), Scope::Write);
        assert_eq!(s(Method::DELETE, "/sites/{site}"), Scope::Write);
        // Admin: even reading.
        assert_eq!(s(Method::GET, "/users"), Scope::Admin);
        assert_eq!(s(Method::GET, "/audit"), Scope::Admin);
        assert_eq!(s(Method::GET, "/platform"), Scope::Admin);
        assert_eq!(s(Method::POST, "/platform/plan"), Scope::Admin);
        assert_eq!(s(Method::GET, "/nodes"), Scope::Admin);
        assert_eq!(s(Method::POST, "/nodes/tokens"), Scope::Admin);
        assert_eq!(s(Method::PUT, "/certificates/base"), Scope::Admin);
        assert_eq!(s(Method::POST, "/gc"), Scope::Admin);
        // Not fooled by a prefix of a word.
        assert_eq!(s(Method::GET, "/usersx"), Scope::Read);
        // One's own tokens: any token (narrowed where they are made).
        assert_eq!(s(Method::POST, "/tokens"), Scope::Read);
        assert_eq!(s(Method::DELETE, "/tokens/{id}"), Scope::Read);
    }

    #[test]
    fn every_change_but_blob_uploads_is_audited() {
        assert!(audited(&Method::POST, "/deploys/{id}/publish"));
        assert!(audited(&Method::DELETE, "/tokens/{id}"));
        assert!(!audited(&Method::GET, "/sites"));
        assert!(!audited(&Method::PUT, "/deploys/{id}/blobs/{hash}"));
        assert!(!audited(&Method::POST, "/deploys/{id}/blobs"));
    }

    #[test]
    fn personal_tokens_are_hashed_apart_from_admin_and_node_tokens() {
        let t = new_personal_token();
        assert!(t.starts_with(PERSONAL_TOKEN_PREFIX) && t.len() == 4 + 64, "{t}");
        assert_ne!(new_personal_token(), t);
        assert_ne!(personal_token_hash(&t), crate::pipeline::token_hash(&t));
    }
}

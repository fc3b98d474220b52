//! Access policies through the API: who may see a site, a branch, or every
//! preview. Passwords arrive in a request, are hashed with argon2id at once,
//! and never appear in a response or a log line.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chanto_core::access::{MAX_ENTRIES, check_password, check_user};
use chanto_core::{AccessPolicy, AccessScope, AccessUser, BranchName, SiteName, ValidationError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::ApiJson;
use chanto_store::RoutingChange;

use crate::{ApiError, Control};

/// Which policy a request is about: a branch's, the previews default, or
/// (neither given) the whole site's.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    /// One branch.
    pub branch: Option<String>,
    /// The default for every branch but production.
    #[serde(default)]
    pub previews: bool,
}

fn scope_of(branch: Option<&str>, previews: bool) -> Result<AccessScope, ApiError> {
    match (branch, previews) {
        (Some(_), true) => Err(ValidationError::new("previews", "give a branch or previews, not both").into()),
        (Some(b), false) => Ok(AccessScope::Branch(b.parse::<BranchName>()?)),
        (None, true) => Ok(AccessScope::Previews),
        (None, false) => Ok(AccessScope::Site),
    }
}

/// A change to one scope's policy; absent fields stay as they are.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// One branch (else the whole site, or `previews`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The default for every branch but production.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub previews: bool,
    /// Adds this user, or changes their password (with `password`).
    pub user: Option<String>,
    /// The user's password; stored only as an argon2id hash.
    pub password: Option<String>,
    /// Removes this user.
    pub remove_user: Option<String>,
    /// Replaces the allowed networks (CIDR); empty: every network.
    #[schema(value_type = Option<Vec<String>>)]
    pub allow: Option<Vec<ipnet::IpNet>>,
    /// Replaces the denied networks (CIDR).
    #[schema(value_type = Option<Vec<String>>)]
    pub deny: Option<Vec<ipnet::IpNet>>,
    /// Let CORS preflight (`OPTIONS`) through without a password.
    pub allow_preflight: Option<bool>,
}

/// One scope's policy, as the API shows it: user names, never hashes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessView {
    /// `site`, `previews` or `branch:<name>`.
    pub scope: String,
    /// Users who may sign in.
    pub users: Vec<String>,
    /// Allowed networks (empty: all).
    pub allow: Vec<String>,
    /// Denied networks.
    pub deny: Vec<String>,
    /// Whether CORS preflight passes without a password.
    pub allow_preflight: bool,
}

impl AccessView {
    /// The view of one scope's policy.
    pub fn from_policy(scope: &AccessScope, p: &AccessPolicy) -> Self {
        Self::new(scope, p)
    }

    fn new(scope: &AccessScope, p: &AccessPolicy) -> Self {
        Self {
            scope: scope.to_string(),
            users: p.users.iter().map(|u| u.user.clone()).collect(),
            allow: p.allow.iter().map(|n| n.to_string()).collect(),
            deny: p.deny.iter().map(|n| n.to_string()).collect(),
            allow_preflight: p.allow_preflight,
        }
    }
}

/// Hashes at deploy running at once: a deploy's passwords (at most
/// [`chanto_rules::MAX_PASSWORD_USERS`]) are hashed in parallel, but never
/// take more than this many blocking threads from the API and the edge.
pub const MAX_PARALLEL_HASHES: usize = 4;

/// Replaces every clear password of a rule set's `Basic-Auth` users with its
/// argon2id hash, before the set is stored anywhere. Each distinct user and
/// password is hashed once, [`MAX_PARALLEL_HASHES`] at a time.
pub async fn seal_auth(set: &mut chanto_rules::RuleSet) -> Result<(), ApiError> {
    let mut distinct: Vec<(String, String)> = Vec::new();
    for user in set.auth.iter().flat_map(|r| &r.users) {
        if let Some(pw) = &user.password
            && !distinct.iter().any(|(u, p)| *u == user.user && p == pw)
        {
            distinct.push((user.user.clone(), pw.clone()));
        }
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_HASHES));
    let mut hashing = tokio::task::JoinSet::new();
    for (i, (_, pw)) in distinct.iter().enumerate() {
        let (slots, pw) = (slots.clone(), pw.clone());
        hashing.spawn(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string());
            (i, hash_password(pw).await)
        });
    }
    let mut hashes = vec![String::new(); distinct.len()];
    while let Some(done) = hashing.join_next().await {
        let (i, hash) = done.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("hashing a password failed: {e}"))
        })?;
        hashes[i] = hash?;
    }
    for user in set.auth.iter_mut().flat_map(|r| r.users.iter_mut()) {
        if let Some(pw) = user.password.take() {
            let at = distinct.iter().position(|(u, p)| *u == user.user && *p == pw);
            user.hash = at.map(|i| hashes[i].clone());
        }
    }
    Ok(())
}

/// chanto's argon2 hasher: [`chanto_rules::CHANTO_ARGON2`], the only
/// parameters the edge verifies.
fn hasher() -> Result<argon2::Argon2<'static>, String> {
    let p = chanto_rules::CHANTO_ARGON2;
    let params = argon2::Params::new(p.m_cost, p.t_cost, p.p_cost, Some(p.output_len)).map_err(|e| e.to_string())?;
    Ok(argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params))
}

/// Hashes a password with argon2id (off the async threads: it is slow on purpose).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    let salt: [u8; 16] = chanto_store::random_bytes();
    tokio::task::spawn_blocking(move || {
        use argon2::PasswordHasher;
        let salt = argon2::password_hash::SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        hasher()?.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("hashing the password failed: {e}"))
    })
}

impl Control {
    /// Applies a change to one scope's policy and publishes it to the edges.
    pub async fn change_access(&self, site: &SiteName, req: AccessRequest) -> Result<AccessView, ApiError> {
        self.site(site).await?;
        let scope = scope_of(req.branch.as_deref(), req.previews)?;
        let mut policy =
            self.meta.access(site).await?.into_iter().find(|(s, _)| *s == scope).map(|(_, p)| p).unwrap_or_default();
        match (req.user, req.password) {
            (Some(user), Some(password)) => {
                check_user(&user)?;
                check_password(&password)?;
                let hash = hash_password(password).await?;
                match policy.users.iter_mut().find(|u| u.user == user) {
                    Some(u) => u.hash = hash,
                    None => policy.users.push(AccessUser { user, hash }),
                }
            }
            (Some(_), None) => return Err(ValidationError::new("password", "a user needs a password").into()),
            (None, Some(_)) => return Err(ValidationError::new("user", "a password needs a user").into()),
            (None, None) => {}
        }
        if let Some(gone) = req.remove_user {
            let before = policy.users.len();
            policy.users.retain(|u| u.user != gone);
            if policy.users.len() == before {
                return Err(
                    ApiError::not_found(format!("user {gone} in the {scope} policy of {site}")).field("remove_user")
                );
            }
        }
        if let Some(allow) = req.allow {
            policy.allow = allow;
        }
        if let Some(deny) = req.deny {
            policy.deny = deny;
        }
        if let Some(p) = req.allow_preflight {
            policy.allow_preflight = p;
        }
        self.put_access_policy(site, &scope, policy).await
    }

    /// Replaces one scope's whole policy (passwords already hashed) and
    /// publishes it to the edges.
    pub(crate) async fn put_access_policy(
        &self,
        site: &SiteName,
        scope: &AccessScope,
        policy: AccessPolicy,
    ) -> Result<AccessView, ApiError> {
        for (field, n) in [("users", policy.users.len()), ("allow", policy.allow.len()), ("deny", policy.deny.len())] {
            if n > MAX_ENTRIES {
                return Err(
                    ValidationError::new(field, format!("{n} entries; a policy holds at most {MAX_ENTRIES}")).into()
                );
            }
        }
        self.meta.set_access(site, scope, &policy).await?;
        self.publish_routing(RoutingChange::site(site)).await?;
        tracing::info!(site = %site, scope = %scope, users = policy.users.len(), allow = policy.allow.len(), deny = policy.deny.len(), "access policy set");
        Ok(AccessView::new(scope, &policy))
    }

    /// Removes one scope's policy; 404 when it had none.
    pub async fn clear_access(&self, site: &SiteName, scope: &AccessScope) -> Result<(), ApiError> {
        self.site(site).await?;
        if !self.meta.clear_access(site, scope).await? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "{site} has no {scope} access policy to clear; `chanto access list --site {site}` shows its policies"
                ),
            ));
        }
        self.publish_routing(RoutingChange::site(site)).await?;
        tracing::info!(site = %site, scope = %scope, "access policy cleared");
        Ok(())
    }
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/access", tag = "access", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")),
    responses((status = 200, body = Vec<AccessView>), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list_access(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
) -> Result<Json<Vec<AccessView>>, ApiError> {
    let site: SiteName = site.parse()?;
    c.site(&site).await?;
    Ok(Json(c.meta.access(&site).await?.iter().map(|(s, p)| AccessView::new(s, p)).collect()))
}

#[utoipa::path(put, path = "/api/v1/sites/{site}/access", tag = "access", security(("token" = [])),
    params(("site" = String, Path, description = "Site name")), request_body = AccessRequest,
    responses((status = 200, body = AccessView), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn set_access(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    ApiJson(req): ApiJson<AccessRequest>,
) -> Result<Json<AccessView>, ApiError> {
    Ok(Json(c.change_access(&site.parse()?, req).await?))
}

#[utoipa::path(delete, path = "/api/v1/sites/{site}/access", tag = "access", security(("token" = [])),
    params(("site" = String, Path, description = "Site name"), ScopeQuery),
    responses((status = 204, description = "Cleared"), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn clear_access(
    State(c): State<Arc<Control>>,
    Path(site): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> Result<StatusCode, ApiError> {
    let scope = scope_of(q.branch.as_deref(), q.previews)?;
    c.clear_access(&site.parse()?, &scope).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chanto_writes_the_hashes_its_rules_accept() {
        let hash = hash_password("pw".into()).await.unwrap();
        assert_eq!(chanto_rules::check_password_hash(&hash), Ok(()), "{hash}");
        // The shared constant is what the argon2 crate calls its default.
        let d = argon2::Params::default();
        let p = chanto_rules::CHANTO_ARGON2;
        assert_eq!(
            (d.m_cost(), d.t_cost(), d.p_cost(), d.output_len().unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN)),
            (p.m_cost, p.t_cost, p.p_cost, p.output_len)
        );
    }

    #[tokio::test]
    async fn a_deploys_passwords_are_hashed_once_each() {
        let text = "/a/*\n  Basic-Auth: ann:pw1 bob:pw2\n/b/*\n  Basic-Auth: ann:pw1\n";
        let mut set = chanto_rules::compile(&[("_headers", text.as_bytes())]).unwrap();
        seal_auth(&mut set).await.unwrap();
        let users: Vec<_> = set.auth.iter().flat_map(|r| &r.users).collect();
        assert!(users.iter().all(|u| u.password.is_none()));
        let hashes: Vec<&str> = users.iter().map(|u| u.hash.as_deref().unwrap()).collect();
        assert_eq!(hashes[0], hashes[2], "ann's one password, hashed once");
        assert_ne!(hashes[0], hashes[1]);
        for h in hashes {
            assert_eq!(chanto_rules::check_password_hash(h), Ok(()));
        }
    }
}

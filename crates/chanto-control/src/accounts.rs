//! Users, personal API tokens, sign-in for the CLI, and the audit log over
//! the API (issue 18). Who may reach what is [`crate::auth`]'s: users and
//! the audit log need the `admin` scope; one's own tokens and `/me` any
//! valid token; `POST /auth/token` (password sign-in) no token at all, and
//! is throttled per user and per address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chanto_store::{ApiToken, AuditQuery, Role, Scope, UserRecord, now_millis};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::ApiJson;
use crate::auth::{Principal, new_personal_token, personal_token_hash};
use crate::domains::rfc3339;
use crate::error::ErrorBody;
use crate::{ApiError, Control};

/// The longest a user name may be.
pub const MAX_USER_NAME: usize = 64;
/// The shortest password a user may have (NIST SP 800-63B asks for 8 at least).
pub const MIN_PASSWORD_CHARS: usize = 10;
/// The longest a token may live, in days.
pub const MAX_TOKEN_DAYS: u32 = 3650;
/// Failed sign-ins per user, and per address, before sign-in is refused
/// for the rest of [`THROTTLE_WINDOW_MS`].
const MAX_FAILURES: u32 = 5;
const MAX_FAILURES_PER_ADDRESS: u32 = 20;
const THROTTLE_WINDOW_MS: i64 = 15 * 60 * 1000;

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("{field}: {}", message.into()))
}

/// Checks a user name: 1 to 64 of `a-z 0-9 . _ @ -`, starting with a letter
/// or digit (an email address fits), and not the admin token's name.
pub fn check_user_name(name: &str) -> Result<(), ApiError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '@' | '-');
    if name.is_empty() || name.len() > MAX_USER_NAME {
        return Err(invalid("name", format!("a user name is 1 to {MAX_USER_NAME} characters")));
    }
    if let Some(c) = name.chars().find(|c| !ok_char(*c)) {
        return Err(invalid(
            "name",
            format!("{name:?} has {c:?}; a user name has only lowercase letters, digits and . _ @ -"),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("name", format!("{name:?} must start with a letter or a digit")));
    }
    if name == crate::auth::ADMIN_TOKEN_ACTOR {
        return Err(invalid("name", format!("{name:?} is what the audit log calls the admin token; pick another")));
    }
    Ok(())
}

/// The provider, as the audit log names the changes a single sign-on makes
/// (to `user`'s record).
fn sso_actor(user: &UserRecord) -> crate::auth::Principal {
    crate::auth::Principal { actor: user.name.clone(), via: "sso".to_owned(), scope: Scope::Read, user: None }
}

fn user_target(name: &str) -> String {
    format!("/api/v1/users/{name}")
}

/// Checks a new password: at least [`MIN_PASSWORD_CHARS`] characters, and
/// what every chanto password is (bounded, no control characters).
pub fn check_new_password(password: &str) -> Result<(), ApiError> {
    chanto_core::access::check_password(password).map_err(|e| invalid("password", e.to_string()))?;
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(invalid("password", format!("a password has at least {MIN_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

fn parse_role(s: &str) -> Result<Role, ApiError> {
    s.parse().map_err(|e: String| invalid("role", e))
}

fn parse_scope(s: &str) -> Result<Scope, ApiError> {
    s.parse().map_err(|e: String| invalid("scope", e))
}

/// A user as the API shows it (never the password hash).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    /// The name they sign in with.
    pub name: String,
    /// `viewer`, `developer` or `admin`.
    pub role: String,
    /// Whether they have a password (an invited user may not yet).
    pub has_password: bool,
    /// When the user was created (RFC 3339).
    pub created_at: String,
    /// When they last signed in (RFC 3339).
    pub last_login_at: Option<String>,
    /// The single sign-on subject (the provider's `sub` claim) that signs
    /// them in, if linked.
    pub sso_subject: Option<String>,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        Self {
            name: u.name,
            role: u.role.to_string(),
            has_password: u.password_hash.is_some(),
            created_at: rfc3339(u.created_at),
            last_login_at: u.last_login_at.map(rfc3339),
            sso_subject: u.sso_subject.as_deref().map(|s| s.split_once(' ').map_or(s, |(_, sub)| sub).to_owned()),
        }
    }
}

/// Body of `POST /users`.
#[derive(Serialize, Deserialize, ToSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// 1 to 64 of `a-z 0-9 . _ @ -`.
    pub name: String,
    /// `viewer`, `developer` or `admin`.
    pub role: String,
    /// At least 10 characters; absent: the user cannot sign in with a
    /// password until one is set.
    pub password: Option<String>,
}

/// Body of `PATCH /users/{name}`: what to change.
#[derive(Serialize, Deserialize, ToSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// A new role (their tokens are narrowed to it at once).
    pub role: Option<String>,
    /// A new password.
    pub password: Option<String>,
    /// Link them to this single sign-on subject (the provider's `sub`
    /// claim, which a refused sign-in shows); `""` unlinks them.
    pub sso_subject: Option<String>,
}

/// A personal token as listed (the token itself only when just made).
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct TokenView {
    /// Its id (`pt_…`).
    pub id: String,
    /// Whose it is.
    pub user: String,
    /// What it is for.
    pub name: String,
    /// `read`, `deploy`, `write` or `admin` (never more than its owner's role allows at use).
    pub scope: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it stops working (RFC 3339); absent: never.
    pub expires_at: Option<String>,
    /// When it was last used (RFC 3339; noted at most once a minute).
    pub last_used_at: Option<String>,
    /// When it was revoked (RFC 3339).
    pub revoked_at: Option<String>,
    /// The token (`chp_…`): only in the answer that made it; it is not shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl TokenView {
    fn of(t: ApiToken, user: &str, token: Option<String>) -> Self {
        Self {
            id: t.id,
            user: user.to_owned(),
            name: t.name,
            scope: t.scope.to_string(),
            created_at: rfc3339(t.created_at),
            expires_at: t.expires_at.map(rfc3339),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
            token,
        }
    }
}

/// Body of `POST /tokens`.
#[derive(Serialize, Deserialize, ToSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What it is for (1 to 100 characters), e.g. "CI deploys".
    pub name: String,
    /// `read`, `deploy`, `write` or `admin`; at most what the caller may do.
    /// Absent: the caller's own scope.
    pub scope: Option<String>,
    /// Days until it expires (1 to 3650); absent: never.
    pub expires_in_days: Option<u32>,
    /// Make it for this user (admin scope only); absent: the caller.
    pub user: Option<String>,
}

/// Body of `POST /auth/token`: sign in with a password, get a personal token.
#[derive(Serialize, Deserialize, ToSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user name.
    pub user: String,
    /// Their password.
    pub password: String,
    /// What the token is for; absent: "chanto login".
    pub token_name: Option<String>,
    /// Its scope; absent: the widest the user's role allows.
    pub scope: Option<String>,
    /// Days until it expires (1 to 3650); absent: 90.
    pub expires_in_days: Option<u32>,
}

/// Body of `POST /users/{name}/invite`.
#[derive(Serialize, Deserialize, ToSchema, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// The role of a user who does not exist yet (they are created without
    /// a password); ignored for an existing user, whose link sets a new
    /// password.
    pub role: Option<String>,
}

/// Answer to `POST /users/{name}/invite`: the one-time link.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct InviteView {
    /// Who it is for.
    pub user: String,
    /// Open it to set a password and sign in; it works once, for 7 days.
    pub url: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// How long an invitation link works.
pub const INVITE_DAYS: i64 = 7;

/// The hash invitation tokens are stored under.
pub fn invite_hash(token: &str) -> chanto_core::ContentHash {
    chanto_core::ContentHash::from_blake3(
        blake3::Hasher::new_derive_key("chanto invitation v1").update(token.as_bytes()).finalize(),
    )
}

/// Answer to `GET /me`: who the token says the caller is.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    /// The user's name, or `admin-token`.
    pub actor: String,
    /// The personal token's id, or `admin-token`.
    pub via: String,
    /// The user's role (absent for the admin token).
    pub role: Option<String>,
    /// What this token may do now.
    pub scope: String,
}

/// One audit entry as the API shows it.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
pub struct AuditView {
    /// Its id (increasing; `before` pages with it).
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who: a user, or `admin-token`.
    pub actor: String,
    /// With what: a personal token's id, or `admin-token`.
    pub via: String,
    /// From which address.
    pub source: String,
    /// The API operation (`publish`, `set_env`, …).
    pub action: String,
    /// The path it was done on.
    pub target: String,
    /// The HTTP status it ended with (403: refused).
    pub status: u16,
}

/// Query of `GET /audit`.
#[derive(Deserialize, IntoParams, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only entries older than this id (the next page).
    pub before: Option<i64>,
    /// Only this actor's (a user name, or `admin-token`).
    pub actor: Option<String>,
    /// At most this many (1 to 1000; default 100).
    pub limit: Option<u32>,
}

/// Failed sign-ins lately, per user and per address.
#[derive(Debug, Default)]
pub struct LoginThrottle(Mutex<HashMap<String, (u32, i64)>>);

impl LoginThrottle {
    /// How long `key` must wait (ms), if it has failed too often lately.
    fn wait(&self, key: &str, limit: u32, now: i64) -> Option<i64> {
        let map = self.0.lock().expect("throttle");
        map.get(key)
            .filter(|(n, since)| *n >= limit && now - since < THROTTLE_WINDOW_MS)
            .map(|(_, since)| since + THROTTLE_WINDOW_MS - now)
    }

    fn fail(&self, key: &str, now: i64) {
        let mut map = self.0.lock().expect("throttle");
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| now - *since < THROTTLE_WINDOW_MS);
        }
        let e = map.entry(key.to_owned()).or_insert((0, now));
        if now - e.1 >= THROTTLE_WINDOW_MS {
            *e = (0, now);
        }
        e.0 += 1;
    }

    fn clear(&self, key: &str) {
        self.0.lock().expect("throttle").remove(key);
    }
}

/// A fixed argon2id hash to verify against when the user does not exist,
/// so that the answer takes as long as for a real user.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$3Xq1Cz3jN5rj6bmE8L8nQv0sE4nH0f4f1Ck3xQ7H9nI";

/// Checks `password` against a PHC hash (off the async threads).
pub(crate) async fn verify_password(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        use argon2::PasswordVerifier as _;
        argon2::password_hash::PasswordHash::new(&hash)
            .map(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

impl Control {
    /// A user by name, or 404 naming how to list them.
    async fn user_named(&self, name: &str) -> Result<UserRecord, ApiError> {
        self.meta
            .user_by_name(name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("user {name:?} (`chanto users list` lists them)")))
    }

    /// Creates a user.
    pub async fn create_user(&self, req: CreateUserRequest) -> Result<UserView, ApiError> {
        check_user_name(&req.name)?;
        let role = parse_role(&req.role)?;
        let password_hash = match req.password {
            Some(p) => {
                check_new_password(&p)?;
                Some(crate::access::hash_password(p).await?)
            }
            None => None,
        };
        let user = UserRecord {
            id: format!("u_{}", hex::encode(chanto_store::random_bytes::<12>())),
            name: req.name,
            role,
            password_hash,
            created_at: now_millis(),
            last_login_at: None,
            sso_subject: None,
        };
        self.meta.create_user(&user).await.map_err(|e| match e {
            chanto_store::StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "a user named {} exists; change it with `chanto users set-role` or pick another name",
                    user.name
                ),
            ),
            e => e.into(),
        })?;
        tracing::info!(user = %user.name, role = %user.role, "user created");
        Ok(user.into())
    }

    /// Changes a user's role and/or password. The last admin cannot be
    /// demoted (someone must be able to manage users; the admin token
    /// aside).
    pub async fn update_user(&self, name: &str, req: UpdateUserRequest) -> Result<UserView, ApiError> {
        let user = self.user_named(name).await?;
        if req.role.is_none() && req.password.is_none() && req.sso_subject.is_none() {
            return Err(invalid("body", "nothing to change: give role, password and/or sso_subject"));
        }
        let sso = req.sso_subject.as_deref().map(|sub| self.sso_subject_of(sub)).transpose()?;
        let role = req.role.as_deref().map(parse_role).transpose()?;
        let hash = match req.password {
            Some(p) => {
                check_new_password(&p)?;
                Some(crate::access::hash_password(p).await?)
            }
            None => None,
        };
        if role.is_some_and(|r| user.role == Role::Admin && r != Role::Admin) {
            self.keep_an_admin(&user.name).await?;
        }
        // The link first: it is the change that can conflict, and then
        // nothing has changed.
        if let Some(sso) = sso {
            self.meta.set_user_sso(name, sso.as_deref()).await.map_err(|e| match e {
                chanto_store::StoreError::Conflict(m) => {
                    ApiError::new(StatusCode::CONFLICT, "conflict", format!("{m}; unlink it there first"))
                }
                e => e.into(),
            })?;
        }
        if let Some(role) = role {
            self.meta.set_user_role(name, role).await?;
        }
        if let Some(hash) = hash {
            self.meta.set_user_password(name, Some(&hash)).await?;
        }
        Ok(self.user_named(name).await?.into())
    }

    /// A one-time link for `name` to set a password and sign in: a new user
    /// (with `role`) or an existing one (a password reset). An earlier link
    /// of theirs stops working.
    pub async fn invite_user(&self, name: &str, role: Option<&str>) -> Result<InviteView, ApiError> {
        let user = match self.meta.user_by_name(name).await? {
            Some(u) => u,
            None => {
                let role = role.ok_or_else(|| {
                    invalid(
                        "role",
                        format!("{name} is a new user: give the role they get (viewer, developer or admin)"),
                    )
                })?;
                let req = CreateUserRequest { name: name.to_owned(), role: role.to_owned(), password: None };
                self.create_user(req).await?;
                self.user_named(name).await?
            }
        };
        let token = format!("chi_{}", hex::encode(chanto_store::random_bytes::<32>()));
        let now = now_millis();
        let expires = now + INVITE_DAYS * 86_400_000;
        self.meta.create_invite(&invite_hash(&token), &user.id, now, expires).await?;
        let base = self.public_url.get().map(String::as_str).unwrap_or("");
        Ok(InviteView { user: user.name, url: format!("{base}/invite/{token}"), expires_at: rfc3339(expires) })
    }

    /// Refuses when `leaving` is the only admin user.
    async fn keep_an_admin(&self, leaving: &str) -> Result<(), ApiError> {
        let admins = self.meta.users().await?.into_iter().filter(|u| u.role == Role::Admin).count();
        if admins <= 1 {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "last_admin",
                format!("{leaving} is the only admin; make another user admin first"),
            ));
        }
        Ok(())
    }

    /// Deletes a user and their tokens.
    pub async fn delete_user(&self, name: &str) -> Result<(), ApiError> {
        let user = self.user_named(name).await?;
        if user.role == Role::Admin {
            self.keep_an_admin(&user.name).await?;
        }
        self.meta.delete_user(name).await?;
        tracing::info!(user = %name, "user deleted");
        Ok(())
    }

    /// Makes a personal token for `owner`, at most `ceiling` wide.
    async fn make_token(
        &self,
        owner: &UserRecord,
        name: &str,
        scope: Option<Scope>,
        ceiling: Scope,
        days: Option<u32>,
    ) -> Result<TokenView, ApiError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(invalid("name", "a token's name is 1 to 100 printable characters (what it is for)"));
        }
        let ceiling = ceiling.min(owner.role.max_scope());
        let scope = scope.unwrap_or(ceiling);
        if scope > ceiling {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "a {scope} token is wider than {ceiling}, the most this caller may give {} (role {})",
                    owner.name, owner.role
                ),
            ));
        }
        let now = now_millis();
        let expires_at = match days {
            Some(d) if d == 0 || d > MAX_TOKEN_DAYS => {
                return Err(invalid("expires_in_days", format!("1 to {MAX_TOKEN_DAYS} days")));
            }
            Some(d) => Some(now + i64::from(d) * 86_400_000),
            None => None,
        };
        let token = new_personal_token();
        let record = ApiToken {
            id: format!("pt_{}", hex::encode(chanto_store::random_bytes::<8>())),
            user_id: owner.id.clone(),
            name: name.to_owned(),
            scope,
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        self.meta.add_api_token(&record, &personal_token_hash(&token)).await?;
        tracing::info!(user = %owner.name, token = %record.id, %scope, "personal token made");
        Ok(TokenView::of(record, &owner.name, Some(token)))
    }

    /// `POST /tokens` for `caller`.
    pub async fn create_token(&self, caller: &Principal, req: CreateTokenRequest) -> Result<TokenView, ApiError> {
        let scope = req.scope.as_deref().map(parse_scope).transpose()?;
        let owner = match (&req.user, &caller.user) {
            (Some(other), _) => {
                caller.require(Scope::Admin)?;
                self.user_named(other).await?
            }
            (None, Some(me)) => me.clone(),
            (None, None) => {
                return Err(invalid(
                    "user",
                    "the admin token belongs to no user: name the user the token is for (`--user NAME`)",
                ));
            }
        };
        self.make_token(&owner, &req.name, scope, caller.scope, req.expires_in_days).await
    }

    /// The caller's tokens, or everyone's (`all`, admin scope).
    pub async fn list_tokens(&self, caller: &Principal, all: bool) -> Result<Vec<TokenView>, ApiError> {
        let mine = caller.user.as_ref().map(|u| u.id.clone());
        let filter = match (all, &mine) {
            (false, Some(id)) => Some(id.as_str()),
            _ => {
                caller.require(Scope::Admin)?;
                None
            }
        };
        let names: HashMap<String, String> = self.meta.users().await?.into_iter().map(|u| (u.id, u.name)).collect();
        Ok(self
            .meta
            .api_tokens(filter)
            .await?
            .into_iter()
            .map(|t| {
                let user = names.get(&t.user_id).cloned().unwrap_or_default();
                TokenView::of(t, &user, None)
            })
            .collect())
    }

    /// Revokes a token: one's own, or anyone's with the admin scope.
    pub async fn revoke_token(&self, caller: &Principal, id: &str) -> Result<TokenView, ApiError> {
        let tokens = self.meta.api_tokens(None).await?;
        let t = tokens
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| ApiError::not_found(format!("token {id:?} (`chanto tokens list` lists yours)")))?;
        if caller.user.as_ref().map(|u| &u.id) != Some(&t.user_id) {
            caller.require(Scope::Admin)?;
        }
        let revoked = self.meta.revoke_api_token(id, now_millis()).await?.ok_or_else(|| ApiError::not_found(id))?;
        let owner = self.meta.user_by_id(&revoked.user_id).await?.map(|u| u.name).unwrap_or_default();
        Ok(TokenView::of(revoked, &owner, None))
    }

    /// The stored single sign-on identity for a `sub` claim (`""`: none), or
    /// why it cannot be linked.
    fn sso_subject_of(&self, sub: &str) -> Result<Option<String>, ApiError> {
        if sub.is_empty() {
            return Ok(None);
        }
        let Some(oidc) = self.oidc.get() else {
            return Err(invalid(
                "sso_subject",
                "single sign-on is not configured: start `chanto serve` with --oidc-issuer and --oidc-client-id first",
            ));
        };
        if sub.len() > 255 || sub.chars().any(|c| c.is_control() || c == ' ') {
            return Err(invalid(
                "sso_subject",
                "a subject is 1 to 255 characters without spaces or control characters",
            ));
        }
        Ok(Some(format!("{} {sub}", oidc.config().issuer.trim_end_matches('/'))))
    }

    /// Signs in whom the provider vouched for (see [`crate::oidc::decide`]):
    /// the linked user (role set from their groups when a mapping is
    /// configured; the last admin stays one), or a new linked user. What
    /// it changes is audited as done by the provider (`via sso`) from
    /// `source`.
    pub async fn oidc_user(&self, id: &crate::oidc::Identity, source: &str) -> Result<UserRecord, ApiError> {
        let Some(oidc) = self.oidc.get() else { return Err(ApiError::not_found("single sign-on (not configured)")) };
        let linked = self.meta.user_by_sso(&id.subject).await?;
        let named = match (&linked, &id.username) {
            (None, Some(name)) => self.meta.user_by_name(&name.to_lowercase()).await?,
            _ => None,
        };
        let user = match crate::oidc::decide(oidc.config(), id, linked, named)? {
            crate::oidc::Decision::SignIn(user, None) => user,
            crate::oidc::Decision::SignIn(user, Some(role)) => {
                if user.role == Role::Admin && self.keep_an_admin(&user.name).await.is_err() {
                    tracing::warn!(user = %user.name, to = %role, "the sign-in provider's groups would demote the last admin; kept admin");
                    user
                } else {
                    tracing::info!(user = %user.name, from = %user.role, to = %role, "role set by the sign-in provider's groups");
                    let changed = self.meta.set_user_role(&user.name, role).await?.unwrap_or(user);
                    self.audit(&sso_actor(&changed), source, "update_user", &user_target(&changed.name), 200).await;
                    changed
                }
            }
            crate::oidc::Decision::Create(name, role) => {
                let user = UserRecord {
                    id: format!("u_{}", hex::encode(chanto_store::random_bytes::<12>())),
                    name,
                    role,
                    password_hash: None,
                    created_at: now_millis(),
                    last_login_at: None,
                    sso_subject: Some(id.subject.clone()),
                };
                self.meta.create_user(&user).await.map_err(|e| match e {
                    chanto_store::StoreError::Conflict(_) => ApiError::new(
                        StatusCode::CONFLICT,
                        "conflict",
                        format!("a user named {} was just made by another sign-in; try again", user.name),
                    ),
                    e => e.into(),
                })?;
                tracing::info!(user = %user.name, role = %user.role, "user created at their first single sign-on");
                self.audit(&sso_actor(&user), source, "create_user", "/api/v1/users", 201).await;
                user
            }
        };
        self.meta.touch_user_login(&user.id, now_millis()).await?;
        Ok(user)
    }

    /// Checks a password sign-in: the user, or 401 (the same for an unknown
    /// user and a wrong password, in the same time), 429 when throttled.
    /// Notes the sign-in on success.
    pub async fn check_sign_in(&self, source: &str, user: &str, password: String) -> Result<UserRecord, ApiError> {
        let now = now_millis();
        let (user_key, addr_key) = (format!("user:{user}"), format!("addr:{source}"));
        let throttle = &self.login_throttle;
        if let Some(wait) =
            throttle.wait(&user_key, MAX_FAILURES, now).or(throttle.wait(&addr_key, MAX_FAILURES_PER_ADDRESS, now))
        {
            let secs = (wait + 999) / 1000;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many failed sign-ins; try again in {secs} s"),
            ));
        }
        if user.len() > MAX_USER_NAME || password.len() > chanto_core::access::MAX_PASSWORD_BYTES {
            return Err(ApiError::unauthorized("wrong user name or password"));
        }
        let found = self.meta.user_by_name(user).await?;
        let hash = found.as_ref().and_then(|u| u.password_hash.clone());
        let ok = verify_password(hash.clone().unwrap_or_else(|| DUMMY_HASH.to_owned()), password).await;
        let Some(found) = found.filter(|_| ok && hash.is_some()) else {
            throttle.fail(&user_key, now);
            throttle.fail(&addr_key, now);
            tracing::warn!(user = %user.escape_debug(), %source, "failed sign-in");
            return Err(ApiError::unauthorized("wrong user name or password"));
        };
        throttle.clear(&user_key);
        self.meta.touch_user_login(&found.id, now).await?;
        Ok(found)
    }

    /// Password sign-in for the CLI: a new personal token for the user.
    pub async fn login(&self, source: &str, req: LoginRequest) -> Result<TokenView, ApiError> {
        let user = self.check_sign_in(source, &req.user, req.password).await?;
        let scope = req.scope.as_deref().map(parse_scope).transpose()?;
        let name = req.token_name.unwrap_or_else(|| "chanto login".to_owned());
        let view = self.make_token(&user, &name, scope, Scope::Admin, Some(req.expires_in_days.unwrap_or(90))).await?;
        let principal =
            Principal { actor: user.name.clone(), via: view.id.clone(), user: Some(user), scope: Scope::Read };
        self.audit(&principal, source, "login", "/api/v1/auth/token", 201).await;
        Ok(view)
    }
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("token" = [])),
    responses((status = 200, body = Vec<UserView>), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_users(State(c): State<Arc<Control>>) -> Result<Json<Vec<UserView>>, ApiError> {
    Ok(Json(c.meta.users().await?.into_iter().map(UserView::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("token" = [])), request_body = CreateUserRequest,
    responses((status = 201, body = UserView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create_user(
    State(c): State<Arc<Control>>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(c.create_user(req).await?)))
}

#[utoipa::path(post, path = "/api/v1/users/{name}/invite", tag = "users", security(("token" = [])), request_body = InviteRequest,
    params(("name" = String, Path, description = "User name (a new one is created without a password)")),
    responses((status = 201, body = InviteView, description = "The one-time link"), (status = 422, body = ErrorBody)))]
pub(crate) async fn invite_user(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(c.invite_user(&name, req.role.as_deref()).await?)))
}

#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", security(("token" = [])),
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_user(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(c.user_named(&name).await?.into()))
}

#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users", security(("token" = [])), request_body = UpdateUserRequest,
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The last admin")))]
pub(crate) async fn update_user(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(c.update_user(&name, req).await?))
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users", security(("token" = [])),
    params(("name" = String, Path, description = "User name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The last admin")))]
pub(crate) async fn delete_user(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    c.delete_user(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /tokens`.
#[derive(Deserialize, IntoParams, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct TokensParams {
    /// Every user's tokens (admin scope).
    #[serde(default)]
    pub all: bool,
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "users", security(("token" = [])), params(TokensParams),
    responses((status = 200, body = Vec<TokenView>), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_tokens(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Principal>,
    Query(q): Query<TokensParams>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    Ok(Json(c.list_tokens(&caller, q.all).await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "users", security(("token" = [])), request_body = CreateTokenRequest,
    responses((status = 201, body = TokenView, description = "Made; `token` is shown only here"), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create_token(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Principal>,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(c.create_token(&caller, req).await?)))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "users", security(("token" = [])),
    params(("id" = String, Path, description = "Token id (pt_…)")),
    responses((status = 200, body = TokenView, description = "Revoked (again: unchanged)"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_token(
    State(c): State<Arc<Control>>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    Ok(Json(c.revoke_token(&caller, &id).await?))
}

#[utoipa::path(get, path = "/api/v1/me", tag = "users", security(("token" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub(crate) async fn me(Extension(caller): Extension<Principal>) -> Json<WhoAmI> {
    Json(WhoAmI {
        actor: caller.actor,
        via: caller.via,
        role: caller.user.map(|u| u.role.to_string()),
        scope: caller.scope.to_string(),
    })
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "users", security(("token" = [])), params(AuditParams),
    responses((status = 200, body = Vec<AuditView>), (status = 403, body = ErrorBody)))]
pub(crate) async fn audit(
    State(c): State<Arc<Control>>,
    Query(q): Query<AuditParams>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let query = AuditQuery { before: q.before, actor: q.actor, limit: q.limit.unwrap_or(100) };
    let entries = c.meta.audit(&query).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at: rfc3339(e.at),
                actor: e.actor,
                via: e.via,
                source: e.source,
                action: e.action,
                target: e.target,
                status: e.status,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/auth/token", tag = "users", request_body = LoginRequest,
    responses((status = 201, body = TokenView, description = "Signed in; `token` is shown only here"), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn login(State(c): State<Arc<Control>>, req: Request) -> Result<impl IntoResponse, ApiError> {
    let source = crate::auth::source_of(&req);
    let ApiJson(body) = <ApiJson<LoginRequest> as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
    Ok((StatusCode::CREATED, Json(c.login(&source, body).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_and_passwords_are_checked_with_reasons() {
        for ok in ["alice", "a", "bob.smith", "ops@example.com", "x_1-2"] {
            check_user_name(ok).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        }
        for (bad, why) in [
            ("", "1 to 64"),
            ("Alice", "lowercase"),
            ("a b", "lowercase"),
            ("-x", "start with"),
            ("admin-token", "admin token"),
            ("x\u{0}", "lowercase"),
        ] {
            let e = check_user_name(bad).unwrap_err();
            assert!(e.message.contains(why), "{bad:?}: {}", e.message);
        }
        assert!(check_user_name(&"a".repeat(65)).is_err());
        assert!(check_new_password("correct horse").is_ok());
        assert!(check_new_password("short").unwrap_err().message.contains("at least 10"));
        assert!(check_new_password("ten chars\u{7}!").is_err());
    }

    #[test]
    fn the_throttle_refuses_after_the_limit_and_forgets_after_the_window() {
        let t = LoginThrottle::default();
        for _ in 0..MAX_FAILURES {
            assert_eq!(t.wait("user:a", MAX_FAILURES, 1000), None);
            t.fail("user:a", 1000);
        }
        assert_eq!(t.wait("user:a", MAX_FAILURES, 2000), Some(THROTTLE_WINDOW_MS - 1000));
        assert_eq!(t.wait("user:b", MAX_FAILURES, 2000), None, "others are not held up");
        assert_eq!(t.wait("user:a", MAX_FAILURES, 1000 + THROTTLE_WINDOW_MS), None);
        t.clear("user:a");
        assert_eq!(t.wait("user:a", MAX_FAILURES, 2000), None);
    }

    #[tokio::test]
    async fn the_dummy_hash_parses_and_matches_nothing_usual() {
        // The same parameters as every real hash: as slow to check.
        assert_eq!(chanto_rules::check_password_hash(DUMMY_HASH), Ok(()));
        assert!(!verify_password(DUMMY_HASH.to_owned(), "password".to_owned()).await);
    }
}

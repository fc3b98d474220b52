//! People and what they did (issue 18): users with a role, their personal
//! API tokens (scoped, optionally expiring, stored as keyed hashes like every
//! token), and the audit log of every change made through the API.
//!
//! The instance's admin token (`DATA/admin.token`, table `tokens`) stays
//! apart: it belongs to no user and is the break-glass way in. Times are the
//! caller's, passed in.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use chanto_core::ContentHash;

use crate::{StoreError, UnixMillis};

/// What a user may do, least first: each role may do all the one before may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything but secret values.
    Viewer,
    /// Sites, deploys, publish and rollback, builds, variables, access,
    /// domains, notifications.
    Developer,
    /// All of that, plus users, tokens and instance settings.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Developer, Role::Admin];

    /// Its name in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }

    /// The widest scope a token of someone with this role can use.
    pub fn max_scope(self) -> Scope {
        match self {
            Self::Viewer => Scope::Read,
            Self::Developer => Scope::Write,
            Self::Admin => Scope::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; roles are viewer, developer and admin"))
    }
}

/// What a request may do, narrowest first: each scope includes the ones
/// before it. A token has one; a request needs one ([`Role::max_scope`]
/// bounds what a user's token can use, checked at every use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Reads (no secret values).
    Read,
    /// Reads, deploys, publish and rollback, builds.
    Deploy,
    /// Everything a developer may change.
    Write,
    /// Users, tokens, nodes and instance settings too.
    Admin,
}

impl Scope {
    /// Every scope, narrowest first.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Deploy, Scope::Write, Scope::Admin];

    /// Its name in the API, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Deploy => "deploy",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?}; scopes are read, deploy, write and admin"))
    }
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its id (`u_` + hex): what tokens and audit entries point at.
    pub id: String,
    /// The name they sign in with (unique).
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// Their password, as an argon2id PHC string; `None`: none set yet (an
    /// invited user), so password sign-in is refused.
    pub password_hash: Option<String>,
    /// When the user was created.
    pub created_at: UnixMillis,
    /// When they last signed in (password, invitation or single sign-on).
    pub last_login_at: Option<UnixMillis>,
    /// The single sign-on identity that signs them in (the provider's
    /// issuer, a space, its `sub` claim), if linked.
    pub sso_subject: Option<String>,
}

/// A personal API token as stored (without its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Its id (`pt_` + hex): what `chanto tokens revoke` takes.
    pub id: String,
    /// Whose it is.
    pub user_id: String,
    /// The name it was given (what it is for).
    pub name: String,
    /// The widest it may do (never more than its owner's role at use).
    pub scope: Scope,
    /// When it was created.
    pub created_at: UnixMillis,
    /// After this it is refused; `None`: never expires.
    pub expires_at: Option<UnixMillis>,
    /// When it was last used (updated at most about once a minute).
    pub last_used_at: Option<UnixMillis>,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at: Option<UnixMillis>,
}

/// One entry of the audit log: a change someone made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its id, increasing (0 before it is stored).
    pub id: i64,
    /// When.
    pub at: UnixMillis,
    /// Who: a user's name, or `admin-token` for the instance token.
    pub actor: String,
    /// With what: a personal token's id, `admin-token`, or a session.
    pub via: String,
    /// From which address.
    pub source: String,
    /// What: the API operation (`publish`, `set_env`, …).
    pub action: String,
    /// On what: the request's path (variable names, never values).
    pub target: String,
    /// The HTTP status it ended with.
    pub status: u16,
}

/// A console session as stored: the id itself never is (only its keyed hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The user signed in.
    pub user_id: String,
    /// The token every form of this session carries (cross-site request
    /// forgery defence beside `SameSite=Lax`).
    pub csrf: String,
    /// When it was made (the absolute timeout counts from here).
    pub created_at: UnixMillis,
    /// When it was last used (the idle timeout counts from here; written
    /// at most about once a minute).
    pub last_seen_at: UnixMillis,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries older than this id (the next page).
    pub before: Option<i64>,
    /// Only this actor's.
    pub actor: Option<String>,
    /// At most this many (the store caps it at 1000).
    pub limit: u32,
}

/// The account repository. Every backend passes [`crate::conformance::account_store`].
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates a user; `Conflict` if the name (or id) is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Every user, by name.
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// One user, by name.
    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    /// One user, by id.
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Changes a user's role; `None` when there is no such user.
    async fn set_user_role(&self, name: &str, role: Role) -> Result<Option<UserRecord>, StoreError>;
    /// Sets (or clears) a user's password hash; `false` when there is no such user.
    async fn set_user_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool, StoreError>;
    /// Notes a password sign-in at `now`.
    async fn touch_user_login(&self, id: &str, now: UnixMillis) -> Result<(), StoreError>;
    /// The user signed in by this single sign-on identity.
    async fn user_by_sso(&self, sso_subject: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Links a user to a single sign-on identity (or unlinks them with
    /// `None`); `None` when there is no such user, `Conflict` when another
    /// user has that identity.
    async fn set_user_sso(&self, name: &str, sso_subject: Option<&str>) -> Result<Option<UserRecord>, StoreError>;
    /// Deletes a user, their tokens and sessions; `false` when there is no such user.
    async fn delete_user(&self, name: &str) -> Result<bool, StoreError>;

    /// Stores a new personal token's hash (never the token); `Conflict` if
    /// the id or the hash exists, `NotFound` if the user does not.
    async fn add_api_token(&self, token: &ApiToken, hash: &ContentHash) -> Result<(), StoreError>;
    /// The token with this hash (revoked or expired ones too) and its owner.
    async fn api_token_by_hash(&self, hash: &ContentHash) -> Result<Option<(ApiToken, UserRecord)>, StoreError>;
    /// A user's tokens (every user's with `None`), revoked ones included, oldest first.
    async fn api_tokens(&self, user_id: Option<&str>) -> Result<Vec<ApiToken>, StoreError>;
    /// Revokes a token (a second revocation keeps the first time); `None`
    /// when there is no such token.
    async fn revoke_api_token(&self, id: &str, now: UnixMillis) -> Result<Option<ApiToken>, StoreError>;
    /// Notes that the token was used at `now`.
    async fn touch_api_token(&self, id: &str, now: UnixMillis) -> Result<(), StoreError>;

    /// Stores a new session under the hash of its id; `Conflict` if taken.
    async fn create_session(&self, id_hash: &ContentHash, session: &SessionRecord) -> Result<(), StoreError>;
    /// The session with this id hash and its user (`None`: unknown, or its
    /// user was deleted).
    async fn session(&self, id_hash: &ContentHash) -> Result<Option<(SessionRecord, UserRecord)>, StoreError>;
    /// Notes that the session was used at `now`.
    async fn touch_session(&self, id_hash: &ContentHash, now: UnixMillis) -> Result<(), StoreError>;
    /// Ends one session; `false` when there was none.
    async fn delete_session(&self, id_hash: &ContentHash) -> Result<bool, StoreError>;
    /// Ends every session of a user ("sign out everywhere"); how many.
    async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, StoreError>;
    /// Forgets sessions idle since before `idle_before` or made before
    /// `created_before`; how many.
    async fn prune_sessions(&self, idle_before: UnixMillis, created_before: UnixMillis) -> Result<u64, StoreError>;

    /// Stores a one-time invitation for a user (replacing any earlier one of
    /// theirs) under the hash of its token.
    async fn create_invite(
        &self,
        token_hash: &ContentHash,
        user_id: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<(), StoreError>;
    /// Uses an invitation: deletes it and returns its user when it exists
    /// and has not expired at `now` (`None` otherwise; an expired one is
    /// deleted too). A token works once, whoever asks first.
    async fn take_invite(&self, token_hash: &ContentHash, now: UnixMillis) -> Result<Option<UserRecord>, StoreError>;
    /// The user an unexpired invitation is for, without using it.
    async fn invite(&self, token_hash: &ContentHash, now: UnixMillis) -> Result<Option<UserRecord>, StoreError>;

    /// Appends an entry (its `id` is ignored); returns the id it got.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError>;
    /// Entries matching `query`, newest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The most audit entries one query returns.
pub const AUDIT_PAGE_MAX: u32 = 1000;

//! The shared metadata backend: PostgreSQL through a pool of `tokio-postgres`
//! connections (`deadpool-postgres`). Every trait method is one transaction,
//! as on SQLite; claims of build jobs and notification deliveries take their
//! row with `FOR UPDATE SKIP LOCKED`, so several control processes on one
//! database never take the same job. The schema is migrated at connect, under
//! an advisory lock, and a database newer than this binary is refused.
//!
//! Connection failures (the server down, a connection cut mid-transaction,
//! the pool unable to connect in time) surface as
//! [`StoreError::Unavailable`]: the API answers 503, and nothing of the cut
//! transaction is kept (PostgreSQL rolls it back). Pooled connections are
//! checked before reuse, so the first call after the server returns works.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chanto_core::{
    AccessPolicy, AccessScope, BranchName, ContentHash, DeployId, DeployState, Encoding, SiteName, Variant,
};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::meta::*;
use crate::postgres_health::timed;
use crate::postgres_notify::{is_preview, record_event};
use crate::postgres_tls::{PgTls, TlsSettings};
use crate::{StoreError, UnixMillis};

/// The PostgreSQL schema version (migrations) this build of chanto knows.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Schema migrations, applied in order; `chanto_schema.version` counts the ones done.
/// Text that is sorted or compared as a name uses the "C" collation, so
/// orders match SQLite's (bytewise) whatever the database's locale.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE sites (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    production_branch TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE branches (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    label TEXT COLLATE "C" NOT NULL,
    active_deploy TEXT,
    UNIQUE (site_id, name),
    UNIQUE (site_id, label)
);
CREATE TABLE deploys (
    id TEXT PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    branch_id BIGINT NOT NULL REFERENCES branches(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    manifest TEXT,
    file_count BIGINT NOT NULL,
    total_size BIGINT NOT NULL,
    message TEXT,
    draft BOOLEAN NOT NULL,
    source TEXT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT,
    variants_pending BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX deploys_by_site ON deploys (site_id, created_at);
CREATE INDEX deploys_by_state ON deploys (state, created_at);
CREATE INDEX deploys_by_branch ON deploys (branch_id);
CREATE TABLE deploy_file_lists (
    deploy_id TEXT PRIMARY KEY REFERENCES deploys(id) ON DELETE CASCADE,
    files TEXT NOT NULL
);
CREATE TABLE activations (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    branch_id BIGINT NOT NULL REFERENCES branches(id) ON DELETE CASCADE,
    deploy_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    undone BOOLEAN NOT NULL DEFAULT false,
    at BIGINT NOT NULL
);
CREATE INDEX activations_by_branch ON activations (branch_id, id);
CREATE TABLE variants (
    source TEXT COLLATE "C" NOT NULL,
    encoding TEXT COLLATE "C" NOT NULL,
    hash TEXT,
    size BIGINT,
    PRIMARY KEY (source, encoding)
);
CREATE INDEX variants_by_hash ON variants (hash);
CREATE TABLE tokens (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE access (
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    scope TEXT COLLATE "C" NOT NULL,
    policy TEXT NOT NULL,
    PRIMARY KEY (site_id, scope)
);
CREATE TABLE site_proxy_origins (
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    origin TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, origin)
);
CREATE TABLE git_connections (
    site_id BIGINT PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
    repository TEXT NOT NULL,
    credential BYTEA,
    webhook_secret BYTEA NOT NULL,
    settings TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE builds (
    id TEXT PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    branch TEXT COLLATE "C" NOT NULL,
    git_ref TEXT NOT NULL,
    commit_sha TEXT,
    pull_request BIGINT,
    state TEXT NOT NULL,
    trigger TEXT NOT NULL,
    title TEXT,
    author TEXT,
    message TEXT,
    deploy_id TEXT,
    error TEXT,
    phases TEXT NOT NULL DEFAULT '[]',
    retry_of TEXT,
    untrusted BOOLEAN NOT NULL DEFAULT false,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX builds_by_state ON builds (state, created_at, seq);
CREATE INDEX builds_by_site ON builds (site_id, created_at);
CREATE TABLE env_vars (
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    branch TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    value BYTEA NOT NULL,
    secret BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (site_id, branch, name)
);
CREATE TABLE build_hooks (
    id TEXT PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    branch TEXT,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE webhook_deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    event TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    build_id TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_by_site ON webhook_deliveries (site_id, id);
CREATE TABLE polled_heads (
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    branch TEXT COLLATE "C" NOT NULL,
    commit_sha TEXT NOT NULL,
    PRIMARY KEY (site_id, branch)
);
CREATE TABLE previews (
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    closed_at BIGINT,
    PRIMARY KEY (site_id, number)
);
CREATE TABLE notify_subscriptions (
    id TEXT PRIMARY KEY,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    config BYTEA NOT NULL,
    display TEXT NOT NULL,
    filter TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE notify_outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    branch TEXT NOT NULL,
    build_id TEXT,
    deploy_id TEXT,
    detail TEXT,
    at BIGINT NOT NULL,
    fanned BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX notify_outbox_pending ON notify_outbox (fanned, seq);
CREATE TABLE notify_deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id TEXT NOT NULL REFERENCES notify_subscriptions(id) ON DELETE CASCADE,
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    action TEXT NOT NULL,
    coalesce_key TEXT,
    event_kind TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at BIGINT NOT NULL,
    lease_until BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX notify_deliveries_pending ON notify_deliveries (state, subscription_id, id);
CREATE INDEX notify_deliveries_by_site ON notify_deliveries (site_id, id);
CREATE TABLE notify_attempts (
    delivery_id BIGINT NOT NULL REFERENCES notify_deliveries(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status INTEGER,
    outcome TEXT NOT NULL,
    response TEXT NOT NULL,
    PRIMARY KEY (delivery_id, n)
);
CREATE TABLE forge_comments (
    subscription_id TEXT NOT NULL REFERENCES notify_subscriptions(id) ON DELETE CASCADE,
    pull_request BIGINT NOT NULL,
    comment_id TEXT NOT NULL,
    PRIMARY KEY (subscription_id, pull_request)
);
-- The routing table's version: one sequence every control process shares,
-- so versions only grow whichever process publishes.
CREATE SEQUENCE routing_version;
"#,
    // 2: retention (deploys kept per branch) and the blobs a garbage
    // collection is deleting, which new deploys must upload again.
    r#"
CREATE TABLE site_retention (
    site_id BIGINT PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
    keep_deploys INTEGER NOT NULL
);
CREATE TABLE blob_deletions (
    hash TEXT COLLATE "C" PRIMARY KEY,
    at BIGINT NOT NULL
);
CREATE INDEX activations_by_deploy ON activations (deploy_id);
"#,
    // 3: claims name their owner (node and run, `builds::Owner`) and a
    // running build its runner's heartbeat, so several processes can share
    // this database. Builds running under an older chanto are judged by
    // their start time (they may still run: other processes may be live);
    // leases already taken simply run out.
    r#"
ALTER TABLE builds ADD COLUMN runner_node TEXT, ADD COLUMN runner_run TEXT, ADD COLUMN heartbeat_at BIGINT;
UPDATE builds SET heartbeat_at = coalesce(started_at, 0) WHERE state = 'running';
ALTER TABLE notify_deliveries ADD COLUMN lease_node TEXT, ADD COLUMN lease_run TEXT;
"#,
    // 4: node tokens (keyed hashes, as API tokens, but apart from them) and
    // each node's last heartbeat (SQLite migration 11 is the same).
    r#"
CREATE TABLE node_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE TABLE nodes (
    node_id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    zone TEXT COLLATE "C" NOT NULL,
    role TEXT NOT NULL,
    routing_version BIGINT NOT NULL,
    snapshot_age_ms BIGINT,
    ready BOOLEAN NOT NULL,
    draining BOOLEAN NOT NULL,
    refused_version BIGINT,
    refused_error TEXT,
    software TEXT NOT NULL,
    edge_addr TEXT,
    last_heartbeat BIGINT NOT NULL,
    first_seen BIGINT NOT NULL
);
"#,
    // 5: custom domains (one site per name), each site's HTTPS settings,
    // and certificates with their keys sealed (SQLite migration 12 is the same).
    r#"
CREATE TABLE certificates (
    id TEXT COLLATE "C" PRIMARY KEY,
    source TEXT NOT NULL,
    names TEXT NOT NULL,
    chain_pem TEXT NOT NULL,
    key_sealed BYTEA NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    issuer TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE domains (
    name TEXT COLLATE "C" PRIMARY KEY,
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    branch TEXT COLLATE "C",
    is_primary BOOLEAN NOT NULL,
    twin_of TEXT COLLATE "C",
    state TEXT NOT NULL,
    reason TEXT,
    hint TEXT,
    verify_token TEXT NOT NULL,
    verified_at BIGINT,
    verified_by TEXT,
    cert_id TEXT COLLATE "C" REFERENCES certificates(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX domains_by_site ON domains (site_id, name);
CREATE TABLE site_tls (
    site_id BIGINT PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
    https_redirect BOOLEAN NOT NULL,
    hsts_max_age BIGINT NOT NULL,
    hsts_include_subdomains BOOLEAN NOT NULL,
    hsts_preload BOOLEAN NOT NULL
);
"#,
    // 6: ACME (issue 17): the HTTP-01 challenge and the order backoff of
    // each domain, accounts by directory (credentials sealed), and leases so
    // one node orders a name at a time (SQLite migration 13 is the same).
    r#"
ALTER TABLE domains ADD COLUMN challenge_token TEXT;
ALTER TABLE domains ADD COLUMN challenge_body TEXT;
ALTER TABLE domains ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN next_attempt_at BIGINT;
CREATE TABLE acme_accounts (
    directory TEXT COLLATE "C" PRIMARY KEY,
    credentials_sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE leases (
    name TEXT COLLATE "C" PRIMARY KEY,
    owner TEXT NOT NULL,
    until_at BIGINT NOT NULL
);
"#,
    // 7: TLS-ALPN-01 (issue 17): the challenge certificate and its
    // throwaway key (PEM) a domain answers `acme-tls/1` handshakes with while
    // an order is under way (SQLite migration 14 is the same).
    "ALTER TABLE domains ADD COLUMN challenge_alpn TEXT;",
    // 8: the base domain's own certificates (issue 17): `*.BASE` (and
    // `*.PREVIEW`) serve every `<site>` and `<branch>--<site>` host over
    // HTTPS; uploaded, or ordered by DNS-01 with the order's backoff
    // (SQLite migration 15 is the same).
    r#"
CREATE TABLE base_certificates (
    pattern TEXT COLLATE "C" PRIMARY KEY,
    cert_id TEXT REFERENCES certificates(id),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    reason TEXT,
    updated_at BIGINT NOT NULL
);
"#,
    // 9: certificates on demand for base hosts (issue 17): a row per exact
    // host asked for, with the ACME challenge it answers while ordered
    // (SQLite migration 16 is the same).
    "ALTER TABLE base_certificates ADD COLUMN challenge_token TEXT;
ALTER TABLE base_certificates ADD COLUMN challenge_body TEXT;
ALTER TABLE base_certificates ADD COLUMN challenge_alpn TEXT;",
    // 10: users, their personal API tokens, console sessions and the audit log (issue 18;
    // SQLite migration 17 is the same).
    r#"
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens(user_id);
CREATE TABLE audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    via TEXT NOT NULL,
    source TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    status INTEGER NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log(actor, id);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE TABLE invites (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
"#,
    // 11: a user's single sign-on identity (issue 18, OIDC): the provider's
    // issuer and subject, one user each (SQLite migration 18 is the same).
    "ALTER TABLE users ADD COLUMN sso_subject TEXT;
CREATE UNIQUE INDEX users_sso_subject ON users(sso_subject);",
    // 12: each node's responses over the last minute, from its heartbeat
    // (JSON; the health page's request and error rates; SQLite 19).
    "ALTER TABLE nodes ADD COLUMN traffic TEXT;",
    // 13: whose defaults a site's deploys follow, when the site says
    // (issue 19; SQLite 20).
    "CREATE TABLE site_profile (
    site_id BIGINT PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
    profile TEXT NOT NULL
);",
    // 14: what `chanto apply` remembers beside a site's settings: the
    // reference each secret came from, each subscription's name (SQLite 21).
    r#"CREATE TABLE platform_state (
    site_id BIGINT NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (site_id, key)
);"#,
];

/// The advisory lock key that serialises migrations of one database ("chanto").
const MIGRATION_LOCK: i64 = 0x6368_616e_746f;

/// The channel a new routing version is announced on (`NOTIFY`, a hint only:
/// a listener re-reads the version after any reconnect, because notifications
/// sent while it was disconnected are lost).
pub const ROUTING_CHANNEL: &str = "chanto_routing";

/// Connections in the pool.
const POOL_SIZE: usize = 16;

/// How long a call waits for a connection (new or pooled) before it fails as
/// unavailable: the API should answer 503 quickly, not hang, when the
/// database is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call waits in all for a connection: the pool may try several
/// idle connections (each check a round trip bounded by [`RECYCLE_TIMEOUT`])
/// and then open one, and a frozen server (stopped, not gone: it accepts
/// connections and never answers) would make those waits add up. A deploy
/// with the database frozen fails in seconds, naming it.
const CONN_DEADLINE: Duration = Duration::from_secs(3);

/// The check of a pooled connection before reuse: one round trip.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one statement may take before the call fails as unavailable. No
/// statement chanto runs comes near it on a healthy server; a frozen one
/// never answers, and `statement_timeout` (the server's own) cannot help.
pub(crate) const STATEMENT_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Metadata in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresMeta {
    pool: Pool,
    /// The URL with any password replaced, for messages.
    url: String,
    /// The last `/readyz` probe (see [`crate::postgres_health`]).
    probe: std::sync::Arc<crate::health::ProbeCache>,
    /// How to connect, for the routing listener's own connection.
    pub(crate) config: tokio_postgres::Config,
    /// The TLS every connection uses (the pool's and the listener's).
    pub(crate) tls: PgTls,
    tls_settings: TlsSettings,
}

impl std::fmt::Debug for PostgresMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresMeta").field("url", &self.url).finish_non_exhaustive()
    }
}

/// `url` with any password in it replaced by `***`, for logs and errors:
/// `postgres://user:secret@host/db` and `password=secret` (key=value form or
/// query parameter) both.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    // `password=...` up to the next separator (space, `&`), in either form.
    let mut redacted = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let boundary = i == 0 || matches!(rest.as_bytes()[i - 1], b' ' | b'&' | b'?');
        redacted.push_str(&rest[..i + 9]);
        rest = &rest[i + 9..];
        if boundary {
            let end = rest.find([' ', '&']).unwrap_or(rest.len());
            redacted.push_str("***");
            rest = &rest[end..];
        }
    }
    redacted.push_str(rest);
    redacted
}

/// The password from a libpq password file (`~/.pgpass` or `$PGPASSFILE`):
/// lines `host:port:database:user:password`, `*` matching anything, `\:` and
/// `\\` escaped. libpq ignores a file others can read; so does this.
fn passfile_password(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = match std::env::var_os("PGPASSFILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => Path::new(&std::env::var_os("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "ignoring the password file: others can read it (chmod 0600 it)");
        return None;
    }
    passfile_lookup(&std::fs::read_to_string(&path).ok()?, host, port, db, user)
}

/// The password in a password file's `text` for this host, port, database
/// and user: the first matching line wins.
fn passfile_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::with_capacity(5);
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], host)
            && matches(&fields[1], &port)
            && matches(&fields[2], db)
            && matches(&fields[3], user)
        {
            return Some(fields.swap_remove(4));
        }
    }
    None
}

impl PostgresMeta {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`
    /// or libpq's `key=value` form), migrates it and returns the store. The
    /// password is, in order: the URL's, `password` (e.g. read from
    /// `--meta-password-file`), `$PGPASSWORD`, then the password file
    /// (`$PGPASSFILE` or `~/.pgpass`). TLS follows libpq's `sslmode` and
    /// `sslrootcert` (or `$PGSSLMODE`, `$PGSSLROOTCERT`; see
    /// [`crate::postgres_tls`]). Errors name the URL without its password,
    /// and the cause.
    pub async fn connect(url: &str, password: Option<String>) -> Result<Self, StoreError> {
        Self::connect_with(url, password, true).await
    }

    /// Connects to a database chanto already set up, changing nothing: no
    /// migration. A database without chanto's schema, or with a schema of
    /// another version than this chanto's, is refused with the version named
    /// (for `chanto backup verify`, which checks a database as it is).
    pub async fn connect_existing(url: &str, password: Option<String>) -> Result<Self, StoreError> {
        Self::connect_with(url, password, false).await
    }

    async fn connect_with(url: &str, password: Option<String>, migrate: bool) -> Result<Self, StoreError> {
        let redacted = redact_url(url);
        // tokio-postgres knows neither verify-ca/verify-full nor sslrootcert:
        // chanto takes them out and enforces them in its own connector.
        let (url, tls_settings) = crate::postgres_tls::split(url, &|k| std::env::var(k).ok())
            .map_err(|e| StoreError::Config(format!("{redacted}: {e}")))?;
        let mut config = tokio_postgres::Config::from_str(&url).map_err(|e| {
            StoreError::Db(format!("{redacted} is not a PostgreSQL URL: {e}; use postgres://USER@HOST:PORT/DB"))
        })?;
        config.ssl_mode(tls_settings.driver_mode());
        // As libpq: no TLS over a Unix socket.
        let hosts = config.get_hosts();
        if !hosts.is_empty() && hosts.iter().all(|h| matches!(h, tokio_postgres::config::Host::Unix(_))) {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        let tls = PgTls::new(&tls_settings).map_err(|e| StoreError::Config(format!("{redacted}: {e}")))?;
        if config.get_user().is_none() {
            return Err(StoreError::Db(format!("{redacted} names no user; use postgres://USER@HOST:PORT/DB")));
        }
        if config.get_dbname().is_none() {
            return Err(StoreError::Db(format!("{redacted} names no database; use postgres://USER@HOST:PORT/DB")));
        }
        if config.get_password().is_none() {
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                Some(tokio_postgres::config::Host::Unix(p)) => p.to_string_lossy().into_owned(),
                None => "localhost".to_owned(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let found = password.or_else(|| std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty())).or_else(|| {
                passfile_password(&host, port, config.get_dbname().unwrap_or(""), config.get_user().unwrap_or(""))
            });
            if let Some(p) = found {
                config.password(p);
            }
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        // Dead peers (a server host gone without a FIN) are noticed.
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("chanto");
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            // A pooled connection is checked with a round trip before reuse:
            // after a server restart every idle connection is dead, and the
            // first call must not be the one to find out.
            ManagerConfig { recycling_method: RecyclingMethod::Verified },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Db(format!("PostgreSQL connection pool for {redacted}: {e}")))?;
        let meta = Self { pool, url: redacted, probe: Default::default(), config, tls, tls_settings };
        let mut c = meta.pool.get().await.map_err(|e| {
            let cause = pool_cause(&e);
            let hint = meta.tls_settings.hint(&cause).map(|h| format!("; {h}")).unwrap_or_default();
            StoreError::Unavailable(format!("cannot connect to PostgreSQL at {}: {cause}{hint}", meta.url))
        })?;
        if migrate {
            meta.migrate(&mut c).await?;
            return Ok(meta);
        }
        let has_schema = c
            .query_opt(
                "SELECT 1 FROM pg_tables WHERE tablename = 'chanto_schema' AND schemaname = current_schema()",
                &[],
            )
            .await?
            .is_some();
        let version = match has_schema {
            true => c
                .query_opt("SELECT version FROM chanto_schema", &[])
                .await?
                .map(|r| r.try_get::<_, i32>(0))
                .transpose()?,
            false => None,
        };
        match version {
            None => Err(StoreError::Db(format!(
                "the database at {} holds no chanto metadata (no chanto_schema table); check the URL names the database chanto uses, or that the restore completed",
                meta.url
            ))),
            Some(v) if v as usize != MIGRATIONS.len() => Err(StoreError::Db(format!(
                "the database at {} has schema version {v}, this chanto knows {}: {}",
                meta.url,
                MIGRATIONS.len(),
                if v as usize > MIGRATIONS.len() {
                    "use a newer chanto"
                } else {
                    "start `chanto serve` on it once to migrate it, or use the chanto that wrote it"
                }
            ))),
            Some(_) => Ok(meta),
        }
    }

    /// The database's URL, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TLS its connections use (`sslmode`, `sslrootcert`).
    pub fn tls_settings(&self) -> &TlsSettings {
        &self.tls_settings
    }

    async fn migrate(&self, c: &mut Object) -> Result<(), StoreError> {
        let tx = c.transaction().await?;
        // Two processes starting at once: the second waits, then sees the
        // schema the first made.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS chanto_schema (version INTEGER NOT NULL)").await?;
        let version = match tx.query_opt("SELECT version FROM chanto_schema", &[]).await? {
            Some(row) => row.try_get::<_, i32>(0)? as usize,
            None => {
                tx.execute("INSERT INTO chanto_schema (version) VALUES (0)", &[]).await?;
                0
            }
        };
        if version > MIGRATIONS.len() {
            return Err(StoreError::Db(format!(
                "the database at {} has schema version {version}, newer than this chanto knows ({}); run a newer chanto",
                self.url,
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.batch_execute(sql).await?;
            tx.execute("UPDATE chanto_schema SET version = $1", &[&((i + 1) as i32)]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A pooled connection.
    pub(crate) async fn conn(&self) -> Result<Object, StoreError> {
        let cause = match tokio::time::timeout(CONN_DEADLINE, self.pool.get()).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(e)) => pool_cause(&e),
            Err(_) => {
                format!("no connection within {} s (the server accepts but does not answer)", CONN_DEADLINE.as_secs())
            }
        };
        let e =
            StoreError::Unavailable(format!("the metadata store (PostgreSQL at {}) is unreachable: {cause}", self.url));
        crate::postgres_health::count_error(&e);
        Err(e)
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(crate) fn probe_cache(&self) -> &crate::health::ProbeCache {
        &self.probe
    }

    /// The next routing table version, from a sequence every process on this
    /// database shares, announced with `NOTIFY` on [`ROUTING_CHANNEL`] (a
    /// hint: listeners re-read after a reconnect), naming the `sites` it
    /// changes when given ([`crate::RoutingAnnouncement::payload`]).
    pub async fn next_routing_version(&self, sites: Option<&[SiteName]>) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let v: i64 = one(&tx, "SELECT nextval('routing_version')", &[]).await?.try_get(0)?;
        let payload = crate::RoutingAnnouncement::payload(v as u64, sites);
        exec(&tx, "SELECT pg_notify($1, $2)", &[&ROUTING_CHANNEL, &payload]).await?;
        tx.commit().await?;
        Ok(v as u64)
    }

    /// How many connections the pool holds and how many are idle.
    pub fn pool_status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.available)
    }
}

/// Why the pool gave no connection, in words.
fn pool_cause(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => error_cause(e),
        PoolError::Timeout(_) => format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()),
        e => e.to_string(),
    }
}

/// An error with its causes, one after the other ("error connecting to
/// server: Connection refused (os error 111)").
pub(crate) fn error_cause(e: &tokio_postgres::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// Whether the error means the server could not be reached or the connection
/// was lost (rather than a statement failing).
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 08: connection exception; 57P01-03: shutting down, cannot connect now; 53300: too many connections.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300");
    }
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // Errors without a database error and without a cause are the driver's own
    // (e.g. "connection closed", "unexpected message"): the connection is gone.
    std::error::Error::source(e).is_none() && e.code().is_none() && e.to_string().contains("connection")
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_unavailable(&e) {
            return Self::Unavailable(format!("the metadata store (PostgreSQL) failed: {}", error_cause(&e)));
        }
        if let Some(db) = e.as_db_error()
            && db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
        {
            return Self::Conflict(db.message().to_owned());
        }
        Self::Db(error_cause(&e))
    }
}

/// Runs a (cached) statement and returns its rows.
pub(crate) async fn rows(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
    timed(async { Ok(tx.query(&tx.prepare_cached(sql).await?, params).await?) }).await
}

/// Runs a (cached) statement that returns at most one row.
pub(crate) async fn opt(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<Option<Row>, StoreError> {
    timed(async { Ok(tx.query_opt(&tx.prepare_cached(sql).await?, params).await?) }).await
}

/// Runs a (cached) statement that returns exactly one row.
pub(crate) async fn one(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
    timed(async { Ok(tx.query_one(&tx.prepare_cached(sql).await?, params).await?) }).await
}

/// Runs a (cached) statement and returns how many rows it changed.
pub(crate) async fn exec(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
    timed(async { Ok(tx.execute(&tx.prepare_cached(sql).await?, params).await?) }).await
}

/// Column `i` parsed into a chanto type.
pub(crate) fn col<T: FromStr>(r: &Row, i: usize) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let s: String = r.try_get(i)?;
    s.parse::<T>().map_err(|e| StoreError::Db(format!("stored value {s:?}: {e}")))
}

/// A stored access policy (JSON) in column `i`.
fn policy_col(r: &Row, i: usize) -> Result<AccessPolicy, StoreError> {
    let policy: String = r.try_get(i)?;
    serde_json::from_str(&policy).map_err(|e| StoreError::Db(format!("stored access policy: {e}")))
}

/// Column `i`, if not NULL, parsed into a chanto type.
pub(crate) fn opt_col<T: FromStr>(r: &Row, i: usize) -> Result<Option<T>, StoreError>
where
    T::Err: std::fmt::Display,
{
    let s: Option<String> = r.try_get(i)?;
    s.map(|s| s.parse::<T>().map_err(|e| StoreError::Db(format!("stored value {s:?}: {e}")))).transpose()
}

/// A site's id; `NotFound` if there is no such site.
pub(crate) async fn site_id(tx: &Tx<'_>, name: &SiteName) -> Result<i64, StoreError> {
    opt(tx, "SELECT id FROM sites WHERE name = $1", &[&name.as_str()])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("site {name}")))
}

/// A deploy's file list as stored: `[[path, hash, size], ...]`, as on SQLite.
fn encode_files(files: &[DeployFile]) -> Result<String, StoreError> {
    let rows: Vec<(&str, &ContentHash, u64)> = files.iter().map(|f| (f.path.as_str(), &f.hash, f.size)).collect();
    serde_json::to_string(&rows).map_err(|e| StoreError::Db(format!("encoding a file list: {e}")))
}

fn decode_files(stored: &str) -> Result<Vec<DeployFile>, StoreError> {
    let rows: Vec<(String, ContentHash, u64)> =
        serde_json::from_str(stored).map_err(|e| StoreError::Db(format!("stored file list: {e}")))?;
    Ok(rows.into_iter().map(|(path, hash, size)| DeployFile { path, hash, size }).collect())
}

const DEPLOY_COLUMNS: &str = "d.id, s.name, b.name, b.label, b.name = s.production_branch, d.state, d.manifest, d.file_count, d.total_size, d.message, d.draft, d.source, d.error, d.created_at, d.finished_at";
const DEPLOY_FROM: &str = "deploys d JOIN sites s ON s.id = d.site_id JOIN branches b ON b.id = d.branch_id";

fn deploy_row(r: &Row) -> Result<DeployRecord, StoreError> {
    Ok(DeployRecord {
        id: col(r, 0)?,
        site: col(r, 1)?,
        branch: col(r, 2)?,
        branch_label: r.try_get(3)?,
        production: r.try_get(4)?,
        state: col(r, 5)?,
        manifest: opt_col(r, 6)?,
        file_count: r.try_get::<_, i64>(7)? as u64,
        total_size: r.try_get::<_, i64>(8)? as u64,
        message: r.try_get(9)?,
        draft: r.try_get(10)?,
        source: r.try_get(11)?,
        error: r.try_get(12)?,
        created_at: r.try_get(13)?,
        finished_at: r.try_get(14)?,
    })
}

async fn get_deploy_tx(tx: &Tx<'_>, id: &str) -> Result<Option<DeployRecord>, StoreError> {
    opt(tx, &format!("SELECT {DEPLOY_COLUMNS} FROM {DEPLOY_FROM} WHERE d.id = $1"), &[&id])
        .await?
        .map(|r| deploy_row(&r))
        .transpose()
}

fn site_row(r: &Row) -> Result<SiteRecord, StoreError> {
    Ok(SiteRecord { name: col(r, 0)?, production_branch: col(r, 1)?, created_at: r.try_get(2)? })
}

/// Sets the active deploy of a branch and the states around it.
/// A branch's id and live deploy (`lock`: `FOR UPDATE`); `NotFound` names
/// the branch and site.
async fn branch_row(
    tx: &Tx<'_>,
    site_id: i64,
    site: &SiteName,
    branch: &BranchName,
    lock: bool,
) -> Result<(i64, Option<String>), StoreError> {
    let sql = if lock {
        "SELECT id, active_deploy FROM branches WHERE site_id = $1 AND name = $2 FOR UPDATE"
    } else {
        "SELECT id, active_deploy FROM branches WHERE site_id = $1 AND name = $2"
    };
    let row = opt(tx, sql, &[&site_id, &branch.as_str()])
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("branch {branch} of site {site}")))?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// A branch's activation history, oldest first, for [`crate::rollback::rollback_walk`].
async fn branch_history(tx: &Tx<'_>, branch_id: i64) -> Result<Vec<crate::rollback::HistoryEntry>, StoreError> {
    rows(
        tx,
        "SELECT a.deploy_id, a.kind = 'rollback', COALESCE(d.state IN ('ready', 'active', 'superseded'), false)
         FROM activations a LEFT JOIN deploys d ON d.id = a.deploy_id
         WHERE a.branch_id = $1 ORDER BY a.id",
        &[&branch_id],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(crate::rollback::HistoryEntry { deploy: r.try_get(0)?, rollback: r.try_get(1)?, complete: r.try_get(2)? })
    })
    .collect()
}

async fn flip(tx: &Tx<'_>, branch_id: i64, from: Option<&str>, to: &str) -> Result<(), StoreError> {
    if let Some(from) = from {
        exec(tx, "UPDATE deploys SET state = 'superseded' WHERE id = $1", &[&from]).await?;
    }
    exec(tx, "UPDATE deploys SET state = 'active' WHERE id = $1", &[&to]).await?;
    exec(tx, "UPDATE branches SET active_deploy = $1 WHERE id = $2", &[&to, &branch_id]).await?;
    Ok(())
}

fn variant_row(r: &Row) -> Result<VariantRecord, StoreError> {
    let source: ContentHash = col(r, 0)?;
    let encoding = match r.try_get::<_, String>(1)?.as_str() {
        "br" => Encoding::Br,
        _ => Encoding::Gzip,
    };
    let variant = match opt_col::<ContentHash>(r, 2)? {
        Some(hash) => Some(Variant { encoding, hash, size: r.try_get::<_, Option<i64>>(3)?.unwrap_or(0) as u64 }),
        None => None,
    };
    Ok((source, encoding, variant))
}

fn hexes(hashes: &[ContentHash]) -> Vec<String> {
    hashes.iter().map(|h| h.to_hex()).collect()
}

#[async_trait]
impl MetaStore for PostgresMeta {
    async fn routing_version_after(&self, last: u64, sites: Option<&[SiteName]>) -> Result<u64, StoreError> {
        // Above `last` even if the sequence is behind (a restored database).
        Ok(self.next_routing_version(sites).await?.max(last + 1))
    }

    fn watch_routing_versions(&self) -> Option<tokio::sync::watch::Receiver<crate::RoutingAnnouncement>> {
        Some(self.watch_routing())
    }

    async fn create_site(
        &self,
        name: &SiteName,
        production_branch: &BranchName,
        now: UnixMillis,
    ) -> Result<SiteRecord, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "INSERT INTO sites (name, production_branch, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            &[&name.as_str(), &production_branch.as_str(), &now],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("site {name} already exists; pick another name or deploy to it")));
        }
        tx.commit().await?;
        Ok(SiteRecord { name: name.clone(), production_branch: production_branch.clone(), created_at: now })
    }

    async fn list_sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = rows(&tx, "SELECT name, production_branch, created_at FROM sites ORDER BY name", &[])
            .await?
            .iter()
            .map(site_row)
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn get_site(&self, name: &SiteName) -> Result<Option<SiteRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = opt(&tx, "SELECT name, production_branch, created_at FROM sites WHERE name = $1", &[&name.as_str()])
            .await?
            .map(|r| site_row(&r))
            .transpose()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn delete_site(&self, name: &SiteName) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(&tx, "DELETE FROM sites WHERE name = $1", &[&name.as_str()]).await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("site {name}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_deploy(&self, d: NewDeploy) -> Result<DeployRecord, StoreError> {
        let files = encode_files(&d.files)?;
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let site_id = site_id(&tx, &d.site).await?;
        let existing =
            opt(&tx, "SELECT id FROM branches WHERE site_id = $1 AND name = $2", &[&site_id, &d.branch.as_str()])
                .await?;
        let branch_id: i64 = match existing {
            Some(r) => r.try_get(0)?,
            None => {
                let mut label = d.branch.label();
                let taken_sql = "SELECT 1 FROM branches WHERE site_id = $1 AND label = $2";
                if opt(&tx, taken_sql, &[&site_id, &label]).await?.is_some() {
                    label = d.branch.label_with_suffix();
                    if opt(&tx, taken_sql, &[&site_id, &label]).await?.is_some() {
                        return Err(StoreError::Conflict(format!("branch {} has no free hostname label", d.branch)));
                    }
                }
                one(
                    &tx,
                    "INSERT INTO branches (site_id, name, label) VALUES ($1, $2, $3) RETURNING id",
                    &[&site_id, &d.branch.as_str(), &label],
                )
                .await?
                .try_get(0)?
            }
        };
        let total: u64 = d.files.iter().map(|f| f.size).sum();
        let inserted = exec(
            &tx,
            "INSERT INTO deploys (id, site_id, branch_id, state, file_count, total_size, message, draft, source, created_at)
             VALUES ($1, $2, $3, 'uploading', $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            &[
                &d.id.as_str(),
                &site_id,
                &branch_id,
                &(d.files.len() as i64),
                &(total as i64),
                &d.message,
                &d.draft,
                &d.source,
                &d.created_at,
            ],
        )
        .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!("deploy {} already exists", d.id)));
        }
        exec(&tx, "INSERT INTO deploy_file_lists (deploy_id, files) VALUES ($1, $2)", &[&d.id.as_str(), &files])
            .await?;
        let rec = get_deploy_tx(&tx, d.id.as_str()).await?.ok_or_else(|| StoreError::Db("deploy vanished".into()))?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn deploy_files(&self, id: &DeployId) -> Result<Vec<DeployFile>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let stored = opt(&tx, "SELECT files FROM deploy_file_lists WHERE deploy_id = $1", &[&id.as_str()]).await?;
        tx.commit().await?;
        let mut files = match stored {
            Some(r) => decode_files(&r.try_get::<_, String>(0)?)?,
            None => Vec::new(),
        };
        files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    async fn get_deploy(&self, id: &DeployId) -> Result<Option<DeployRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = get_deploy_tx(&tx, id.as_str()).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn list_deploys(
        &self,
        site: &SiteName,
        branch: Option<&BranchName>,
    ) -> Result<Vec<DeployRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        site_id(&tx, site).await?;
        let sql = format!(
            "SELECT {DEPLOY_COLUMNS} FROM {DEPLOY_FROM} WHERE s.name = $1 AND ($2::text IS NULL OR b.name = $2::text)
             ORDER BY d.created_at DESC, d.seq DESC"
        );
        let out = rows(&tx, &sql, &[&site.as_str(), &branch.map(|b| b.as_str())])
            .await?
            .iter()
            .map(deploy_row)
            .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn mark_ready(
        &self,
        id: &DeployId,
        manifest: &ContentHash,
        now: UnixMillis,
    ) -> Result<DeployRecord, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // The row lock makes a concurrent mark_ready/mark_failed wait, then see the new state.
        exec(&tx, "SELECT 1 FROM deploys WHERE id = $1 FOR UPDATE", &[&id.as_str()]).await?;
        let cur = get_deploy_tx(&tx, id.as_str()).await?.ok_or_else(|| StoreError::NotFound(format!("deploy {id}")))?;
        if cur.state != DeployState::Uploading {
            return Err(StoreError::Conflict(format!(
                "deploy {id} is {}, not uploading; start a new deploy",
                cur.state
            )));
        }
        exec(
            &tx,
            "UPDATE deploys SET state = 'ready', manifest = $2, finished_at = $3 WHERE id = $1",
            &[&id.as_str(), &manifest.to_hex(), &now],
        )
        .await?;
        let sid = site_id(&tx, &cur.site).await?;
        record_event(&tx, sid, "deploy.ready", cur.branch.as_str(), None, Some(id.as_str()), None, now).await?;
        let rec = get_deploy_tx(&tx, id.as_str()).await?.ok_or_else(|| StoreError::Db("deploy vanished".into()))?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn set_variants_pending(&self, id: &DeployId) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(&tx, "UPDATE deploys SET variants_pending = true WHERE id = $1", &[&id.as_str()]).await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("deploy {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn replace_manifest(
        &self,
        id: &DeployId,
        expected: &ContentHash,
        manifest: &ContentHash,
    ) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE deploys SET manifest = $3, variants_pending = false
             WHERE id = $1 AND manifest = $2 AND state IN ('ready', 'active', 'superseded')",
            &[&id.as_str(), &expected.to_hex(), &manifest.to_hex()],
        )
        .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn variants_pending(&self) -> Result<Vec<(DeployId, ContentHash)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = rows(
            &tx,
            "SELECT id, manifest FROM deploys
             WHERE variants_pending AND manifest IS NOT NULL AND state IN ('ready', 'active', 'superseded')
             ORDER BY created_at, seq",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?)))
        .collect::<Result<_, StoreError>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn mark_failed(&self, id: &DeployId, error: &str, now: UnixMillis) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n = exec(
            &tx,
            "UPDATE deploys SET state = 'failed', error = $2, finished_at = $3 WHERE id = $1 AND state = 'uploading'",
            &[&id.as_str(), &error, &now],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("deploy {id} is not uploading")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn activate(
        &self,
        id: &DeployId,
        kind: ActivationKind,
        now: UnixMillis,
    ) -> Result<Option<DeployId>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Lock the branch first: activations and rollbacks of one branch
        // happen one after the other, each seeing the last one's result.
        let branch = opt(
            &tx,
            "SELECT b.id, b.active_deploy FROM deploys d JOIN branches b ON b.id = d.branch_id WHERE d.id = $1
             FOR UPDATE OF b",
            &[&id.as_str()],
        )
        .await?;
        let d = get_deploy_tx(&tx, id.as_str()).await?.ok_or_else(|| StoreError::NotFound(format!("deploy {id}")))?;
        if !d.state.is_complete() {
            return Err(StoreError::Conflict(format!(
                "deploy {id} is {}; only a ready deploy can be activated",
                d.state
            )));
        }
        let branch = branch.ok_or_else(|| StoreError::NotFound(format!("deploy {id}")))?;
        let (branch_id, active): (i64, Option<String>) = (branch.try_get(0)?, branch.try_get(1)?);
        if active.as_deref() == Some(id.as_str()) {
            return Ok(Some(id.clone()));
        }
        flip(&tx, branch_id, active.as_deref(), id.as_str()).await?;
        exec(
            &tx,
            "INSERT INTO activations (branch_id, deploy_id, kind, at) VALUES ($1, $2, $3, $4)",
            &[&branch_id, &id.as_str(), &kind.as_str(), &now],
        )
        .await?;
        let sid = site_id(&tx, &d.site).await?;
        let event = if is_preview(&tx, sid, d.branch.as_str()).await? { "preview.ready" } else { "deploy.activated" };
        record_event(&tx, sid, event, d.branch.as_str(), None, Some(id.as_str()), active.as_deref(), now).await?;
        tx.commit().await?;
        active
            .map(|a| a.parse::<DeployId>().map_err(|e| StoreError::Db(format!("stored value {a:?}: {e}"))))
            .transpose()
    }

    async fn rollback(
        &self,
        site: &SiteName,
        branch: &BranchName,
        to: Option<&DeployId>,
        now: UnixMillis,
    ) -> Result<(DeployId, DeployId), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let site_id = site_id(&tx, site).await?;
        // Lock the branch: activations and rollbacks of one branch take turns.
        let (branch_id, active) = branch_row(&tx, site_id, site, branch, true).await?;
        let active = active
            .ok_or_else(|| StoreError::Conflict(format!("branch {branch} of site {site} has no active deploy")))?;
        let target = match to {
            Some(to) => {
                let d = get_deploy_tx(&tx, to.as_str())
                    .await?
                    .filter(|d| &d.site == site)
                    .ok_or_else(|| StoreError::NotFound(format!("deploy {to} of site {site}")))?;
                crate::rollback::check_target(&d, branch, &active)?;
                to.to_string()
            }
            None => crate::rollback::rollback_walk(&branch_history(&tx, branch_id).await?, &active)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "branch {branch} of site {site} has no earlier deploy to roll back to; pick one with `chanto rollback --site {site} --to DEPLOY` (ids from `chanto deploys list --site {site} --branch {branch}`), or activate a ready deploy with `chanto publish ID`"
                    ))
                })?,
        };
        flip(&tx, branch_id, Some(&active), &target).await?;
        exec(
            &tx,
            "INSERT INTO activations (branch_id, deploy_id, kind, at) VALUES ($1, $2, $3, $4)",
            &[&branch_id, &target, &ActivationKind::Rollback.as_str(), &now],
        )
        .await?;
        record_event(&tx, site_id, "deploy.rolled_back", branch.as_str(), None, Some(&target), Some(&active), now)
            .await?;
        tx.commit().await?;
        let parse = |s: &str| s.parse::<DeployId>().map_err(|e| StoreError::Db(format!("stored value {s:?}: {e}")));
        Ok((parse(&active)?, parse(&target)?))
    }

    async fn rollback_walk(&self, site: &SiteName, branch: &BranchName) -> Result<Vec<DeployId>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let site_id = site_id(&tx, site).await?;
        let (branch_id, active) = branch_row(&tx, site_id, site, branch, false).await?;
        let history = branch_history(&tx, branch_id).await?;
        tx.commit().await?;
        let Some(active) = active else { return Ok(Vec::new()) };
        crate::rollback::rollback_walk(&history, &active)
            .into_iter()
            .map(|s| s.parse::<DeployId>().map_err(|e| StoreError::Db(format!("stored value {s:?}: {e}"))))
            .collect()
    }

    async fn rolled_back(&self, site: &SiteName, branch: Option<&BranchName>) -> Result<Vec<DeployId>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let site_id = site_id(&tx, site).await?;
        let branches: Vec<i64> = rows(
            &tx,
            "SELECT id FROM branches WHERE site_id = $1 AND ($2::text IS NULL OR name = $2::text)",
            &[&site_id, &branch.map(|b| b.as_str())],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for b in branches {
            out.extend(crate::rollback::rolled_back(&branch_history(&tx, b).await?));
        }
        tx.commit().await?;
        out.into_iter()
            .map(|s| s.parse::<DeployId>().map_err(|e| StoreError::Db(format!("stored value {s:?}: {e}"))))
            .collect()
    }

    async fn expire_uploads(&self, cutoff: UnixMillis) -> Result<Vec<DeployId>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let expired = rows(
            &tx,
            "UPDATE deploys SET state = 'expired', finished_at = $1
             WHERE id IN (SELECT id FROM deploys WHERE state = 'uploading' AND created_at < $1 FOR UPDATE)
             RETURNING id, created_at, seq",
            &[&cutoff],
        )
        .await?;
        let mut ids: Vec<(i64, i64, String)> = expired
            .iter()
            .map(|r| Ok((r.try_get(1)?, r.try_get(2)?, r.try_get(0)?)))
            .collect::<Result<_, StoreError>>()?;
        ids.sort();
        let names: Vec<String> = ids.into_iter().map(|(_, _, id)| id).collect();
        exec(&tx, "DELETE FROM deploy_file_lists WHERE deploy_id = ANY($1)", &[&names]).await?;
        tx.commit().await?;
        names
            .iter()
            .map(|s| s.parse::<DeployId>().map_err(|e| StoreError::Db(format!("stored value {s:?}: {e}"))))
            .collect()
    }

    async fn branch(&self, site: &SiteName, branch: &BranchName) -> Result<Option<BranchRecord>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let row = opt(
            &tx,
            "SELECT b.label, b.active_deploy FROM branches b JOIN sites s ON s.id = b.site_id WHERE s.name = $1 AND b.name = $2",
            &[&site.as_str(), &branch.as_str()],
        )
        .await?;
        tx.commit().await?;
        row.map(|r| {
            Ok(BranchRecord {
                site: site.clone(),
                branch: branch.clone(),
                label: r.try_get(0)?,
                active_deploy: opt_col(&r, 1)?,
            })
        })
        .transpose()
    }

    async fn routing_table(&self, site: Option<&SiteName>) -> Result<Vec<RoutingRow>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = match site {
            Some(site) => {
                rows(
                    &tx,
                    "SELECT s.name, b.name, b.label, b.name = s.production_branch, d.id, d.manifest, d.finished_at
                     FROM sites s JOIN branches b ON b.site_id = s.id JOIN deploys d ON d.id = b.active_deploy
                     WHERE s.name = $1 AND d.manifest IS NOT NULL ORDER BY b.name",
                    &[&site.as_str()],
                )
                .await?
            }
            None => {
                rows(
                    &tx,
                    "SELECT s.name, b.name, b.label, b.name = s.production_branch, d.id, d.manifest, d.finished_at
                     FROM branches b JOIN sites s ON s.id = b.site_id JOIN deploys d ON d.id = b.active_deploy
                     WHERE d.manifest IS NOT NULL ORDER BY s.name, b.name",
                    &[],
                )
                .await?
            }
        };
        let out = found
            .iter()
            .map(|r| {
                Ok(RoutingRow {
                    site: col(r, 0)?,
                    branch: col(r, 1)?,
                    label: r.try_get(2)?,
                    production: r.try_get(3)?,
                    deploy: col(r, 4)?,
                    manifest: col(r, 5)?,
                    ready_at: r.try_get::<_, Option<i64>>(6)?.unwrap_or(0),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn permalinks(&self, site: Option<&SiteName>) -> Result<Vec<Permalink>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = match site {
            Some(site) => {
                rows(
                    &tx,
                    "SELECT s.name, d.id, d.manifest, d.finished_at, b.name, b.name = s.production_branch
                     FROM sites s JOIN deploys d ON d.site_id = s.id JOIN branches b ON b.id = d.branch_id
                     WHERE s.name = $1 AND d.state IN ('ready', 'active', 'superseded') AND d.manifest IS NOT NULL
                     ORDER BY d.seq",
                    &[&site.as_str()],
                )
                .await?
            }
            None => {
                rows(
                    &tx,
                    "SELECT s.name, d.id, d.manifest, d.finished_at, b.name, b.name = s.production_branch
                     FROM deploys d JOIN sites s ON s.id = d.site_id JOIN branches b ON b.id = d.branch_id
                     WHERE d.state IN ('ready', 'active', 'superseded') AND d.manifest IS NOT NULL ORDER BY d.seq",
                    &[],
                )
                .await?
            }
        };
        let out = found
            .iter()
            .map(|r| {
                Ok(Permalink {
                    site: col(r, 0)?,
                    deploy: col(r, 1)?,
                    manifest: col(r, 2)?,
                    ready_at: r.try_get::<_, Option<i64>>(3)?.unwrap_or(0),
                    branch: col(r, 4)?,
                    production: r.try_get(5)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn variants(&self, sources: &[ContentHash]) -> Result<Vec<VariantRecord>, StoreError> {
        let sources = hexes(sources);
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // In the order asked, as SQLite answers.
        let out = rows(
            &tx,
            "SELECT source, encoding, hash, size FROM variants WHERE source = ANY($1)
             ORDER BY array_position($1, source::text), encoding",
            &[&sources],
        )
        .await?
        .iter()
        .map(variant_row)
        .collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn put_variants(&self, variants: &[VariantRecord]) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        for (source, enc, v) in variants {
            exec(
                &tx,
                "INSERT INTO variants (source, encoding, hash, size) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (source, encoding) DO UPDATE SET hash = excluded.hash, size = excluded.size",
                &[
                    &source.to_hex(),
                    &enc.as_str(),
                    &v.as_ref().map(|v| v.hash.to_hex()),
                    &v.as_ref().map(|v| v.size as i64),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn forget_variants(&self, blobs: &[ContentHash]) -> Result<(), StoreError> {
        let blobs = hexes(blobs);
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "DELETE FROM variants WHERE source = ANY($1) OR hash = ANY($1)", &[&blobs]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn referenced_blobs(&self, excluding: &[DeployId]) -> Result<HashSet<ContentHash>, StoreError> {
        let excluding: Vec<&str> = excluding.iter().map(|d| d.as_str()).collect();
        let mut c = self.conn().await?;
        // One snapshot for all three reads: a deploy finishing in between
        // cannot leave a blob it references out.
        let tx = c.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
        let live = "SELECT id FROM deploys WHERE state NOT IN ('expired', 'failed') AND NOT (id = ANY($1))";
        let mut out = HashSet::new();
        for r in rows(&tx, &format!("SELECT files FROM deploy_file_lists WHERE deploy_id IN ({live})"), &[&excluding])
            .await?
        {
            out.extend(decode_files(&r.try_get::<_, String>(0)?)?.into_iter().map(|f| f.hash));
        }
        let manifests: Vec<ContentHash> = rows(
            &tx,
            &format!("SELECT manifest FROM deploys WHERE manifest IS NOT NULL AND id IN ({live})"),
            &[&excluding],
        )
        .await?
        .iter()
        .map(|r| col(r, 0))
        .collect::<Result<_, _>>()?;
        let mut variants = Vec::new();
        for r in rows(&tx, "SELECT source, hash FROM variants WHERE hash IS NOT NULL", &[]).await? {
            let (source, hash): (ContentHash, ContentHash) = (col(&r, 0)?, col(&r, 1)?);
            if out.contains(&source) {
                variants.push(hash);
            }
        }
        tx.commit().await?;
        out.extend(manifests);
        out.extend(variants);
        Ok(out)
    }

    async fn mark_deleting(&self, blobs: &[ContentHash], now: UnixMillis) -> Result<(), StoreError> {
        let hashes: Vec<String> = blobs.iter().map(|h| h.to_hex()).collect();
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(
            &tx,
            "INSERT INTO blob_deletions (hash, at) SELECT h, $2 FROM unnest($1::text[]) AS h
             ON CONFLICT (hash) DO UPDATE SET at = excluded.at",
            &[&hashes, &now],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clear_deleting(&self, blobs: &[ContentHash]) -> Result<(), StoreError> {
        let hashes: Vec<String> = blobs.iter().map(|h| h.to_hex()).collect();
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "DELETE FROM blob_deletions WHERE hash = ANY($1)", &[&hashes]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn blobs_being_deleted(&self) -> Result<HashSet<ContentHash>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = rows(&tx, "SELECT hash FROM blob_deletions", &[]).await?;
        tx.commit().await?;
        found.iter().map(|r| col(r, 0)).collect()
    }

    async fn set_keep_deploys(&self, site: &SiteName, keep: u32) -> Result<(), StoreError> {
        let keep = i32::try_from(keep).map_err(|_| StoreError::Db(format!("keep_deploys {keep} is out of range")))?;
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        if keep == 0 {
            exec(&tx, "DELETE FROM site_retention WHERE site_id = $1", &[&id]).await?;
        } else {
            exec(
                &tx,
                "INSERT INTO site_retention (site_id, keep_deploys) VALUES ($1, $2)
                 ON CONFLICT (site_id) DO UPDATE SET keep_deploys = excluded.keep_deploys",
                &[&id, &keep],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn all_keep_deploys(&self) -> Result<Vec<(SiteName, u32)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = rows(
            &tx,
            "SELECT s.name, r.keep_deploys FROM site_retention r JOIN sites s ON s.id = r.site_id ORDER BY s.name",
            &[],
        )
        .await?;
        tx.commit().await?;
        found.iter().map(|r| Ok((col(r, 0)?, r.try_get::<_, i32>(1)?.max(0) as u32))).collect()
    }

    async fn set_site_profile(&self, site: &SiteName, profile: Option<&str>) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        match profile {
            None => exec(&tx, "DELETE FROM site_profile WHERE site_id = $1", &[&id]).await?,
            Some(p) => {
                exec(
                    &tx,
                    "INSERT INTO site_profile (site_id, profile) VALUES ($1, $2)
                     ON CONFLICT (site_id) DO UPDATE SET profile = excluded.profile",
                    &[&id, &p],
                )
                .await?
            }
        };
        tx.commit().await?;
        Ok(())
    }

    async fn site_profile(&self, site: &SiteName) -> Result<Option<String>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let found = rows(&tx, "SELECT profile FROM site_profile WHERE site_id = $1", &[&id]).await?;
        tx.commit().await?;
        found.first().map(|r| col(r, 0)).transpose()
    }

    async fn platform_state(&self, site: Option<&SiteName>) -> Result<Vec<PlatformState>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = match site {
            Some(s) => Some(site_id(&tx, s).await?),
            None => None,
        };
        let found = rows(
            &tx,
            "SELECT s.name, p.key, p.value FROM platform_state p JOIN sites s ON s.id = p.site_id
             WHERE $1::BIGINT IS NULL OR p.site_id = $1 ORDER BY s.name, p.key",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        found.iter().map(|r| Ok(PlatformState { site: col(r, 0)?, key: col(r, 1)?, value: col(r, 2)? })).collect()
    }

    async fn set_platform_state(&self, site: &SiteName, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        match value {
            None => exec(&tx, "DELETE FROM platform_state WHERE site_id = $1 AND key = $2", &[&id, &key]).await?,
            Some(v) => {
                exec(
                    &tx,
                    "INSERT INTO platform_state (site_id, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT (site_id, key) DO UPDATE SET value = excluded.value",
                    &[&id, &key, &v],
                )
                .await?
            }
        };
        tx.commit().await?;
        Ok(())
    }

    async fn prune_deploys(&self, ids: &[DeployId]) -> Result<Vec<DeployId>, StoreError> {
        let ids: Vec<&str> = ids.iter().map(|d| d.as_str()).collect();
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        // Checked again here, in the transaction that deletes: a deploy
        // published or rolled back to meanwhile stays.
        let gone = rows(
            &tx,
            "DELETE FROM deploys d WHERE d.id = ANY($1) AND d.state NOT IN ('active', 'uploading')
               AND NOT EXISTS (SELECT 1 FROM branches b WHERE b.active_deploy = d.id)
             RETURNING d.id",
            &[&ids],
        )
        .await?;
        let pruned: Vec<String> = gone.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
        exec(&tx, "DELETE FROM activations WHERE deploy_id = ANY($1)", &[&pruned]).await?;
        tx.commit().await?;
        pruned.iter().map(|s| s.parse().map_err(|e| StoreError::Db(format!("stored value {s:?}: {e}")))).collect()
    }

    async fn token_count(&self) -> Result<u64, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let n: i64 = one(&tx, "SELECT count(*) FROM tokens", &[]).await?.try_get(0)?;
        tx.commit().await?;
        Ok(n as u64)
    }

    async fn set_access(&self, site: &SiteName, scope: &AccessScope, policy: &AccessPolicy) -> Result<(), StoreError> {
        let policy = serde_json::to_string(policy).map_err(|e| StoreError::Db(e.to_string()))?;
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        exec(
            &tx,
            "INSERT INTO access (site_id, scope, policy) VALUES ($1, $2, $3)
             ON CONFLICT (site_id, scope) DO UPDATE SET policy = excluded.policy",
            &[&id, &scope.to_string(), &policy],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn clear_access(&self, site: &SiteName, scope: &AccessScope) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        let n = exec(&tx, "DELETE FROM access WHERE site_id = $1 AND scope = $2", &[&id, &scope.to_string()]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn access(&self, site: &SiteName) -> Result<Vec<(AccessScope, AccessPolicy)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = rows(
            &tx,
            "SELECT a.scope, a.policy FROM sites s JOIN access a ON a.site_id = s.id WHERE s.name = $1 ORDER BY a.scope",
            &[&site.as_str()],
        )
        .await?
        .iter()
        .map(|r| Ok((col(r, 0)?, policy_col(r, 1)?)))
        .collect::<Result<_, StoreError>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn all_access(&self) -> Result<Vec<(SiteName, AccessScope, AccessPolicy)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let out = rows(
            &tx,
            "SELECT s.name, a.scope, a.policy FROM access a JOIN sites s ON s.id = a.site_id ORDER BY s.name, a.scope",
            &[],
        )
        .await?
        .iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?, policy_col(r, 2)?)))
        .collect::<Result<_, StoreError>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn set_proxy_origins(&self, site: &SiteName, origins: &[String]) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let id = site_id(&tx, site).await?;
        exec(&tx, "DELETE FROM site_proxy_origins WHERE site_id = $1", &[&id]).await?;
        for o in origins {
            exec(
                &tx,
                "INSERT INTO site_proxy_origins (site_id, origin) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id, o],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn proxy_origins(&self, site: Option<&SiteName>) -> Result<Vec<(SiteName, Vec<String>)>, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = match site {
            Some(site) => {
                rows(
                    &tx,
                    "SELECT s.name, p.origin FROM sites s JOIN site_proxy_origins p ON p.site_id = s.id
                     WHERE s.name = $1 ORDER BY p.origin",
                    &[&site.as_str()],
                )
                .await?
            }
            None => {
                rows(
                    &tx,
                    "SELECT s.name, p.origin FROM site_proxy_origins p JOIN sites s ON s.id = p.site_id ORDER BY s.name, p.origin",
                    &[],
                )
                .await?
            }
        };
        tx.commit().await?;
        let mut out: Vec<(SiteName, Vec<String>)> = Vec::new();
        for r in found {
            let (site, origin): (SiteName, String) = (col(&r, 0)?, r.try_get(1)?);
            match out.last_mut() {
                Some((s, list)) if *s == site => list.push(origin),
                _ => out.push((site, vec![origin])),
            }
        }
        Ok(out)
    }

    async fn add_token(&self, name: &str, hash: &ContentHash, now: UnixMillis) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        exec(&tx, "INSERT INTO tokens (name, hash, created_at) VALUES ($1, $2, $3)", &[&name, &hash.to_hex(), &now])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn token_exists(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let found = opt(&tx, "SELECT 1 FROM tokens WHERE hash = $1", &[&hash.to_hex()]).await?.is_some();
        tx.commit().await?;
        Ok(found)
    }

    async fn health(&self) -> crate::health::Check {
        self.probe().await
    }

    fn render_metrics(&self, out: &mut String) {
        self.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let text = "# comment\n\
                    other:5432:chanto:chanto:wrong-host\n\
                    db:5432:chanto:chanto:p\\:ss\\\\word\n\
                    *:*:*:chanto:fallback\n";
        assert_eq!(passfile_lookup(text, "db", 5432, "chanto", "chanto").as_deref(), Some("p:ss\\word"));
        assert_eq!(passfile_lookup(text, "db", 6543, "chanto", "chanto").as_deref(), Some("fallback"));
        assert_eq!(passfile_lookup(text, "db", 5432, "chanto", "someone"), None);
        assert_eq!(passfile_lookup("broken line\n", "db", 5432, "chanto", "chanto"), None);
    }

    #[test]
    fn passwords_never_show_in_a_redacted_url() {
        for (url, want) in [
            ("postgres://chanto:s3cret@db:5432/chanto", "postgres://chanto:***@db:5432/chanto"),
            ("postgres://chanto@db/chanto", "postgres://chanto@db/chanto"),
            ("postgresql://u:p%40ss@h/d?sslmode=disable", "postgresql://u:***@h/d?sslmode=disable"),
            ("postgres://u@h/d?password=x&sslmode=disable", "postgres://u@h/d?password=***&sslmode=disable"),
            ("host=db user=u password=secret dbname=d", "host=db user=u password=*** dbname=d"),
        ] {
            assert_eq!(redact_url(url), want);
        }
    }
}

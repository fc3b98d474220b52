//! The embedded metadata backend: SQLite in WAL mode in the data directory.
//! One connection behind a mutex, used from blocking threads, so the async
//! runtime never waits on disk.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chanto_core::{
    AccessPolicy, AccessScope, BranchName, ContentHash, DeployId, DeployState, Encoding, SiteName, Variant,
};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::meta::*;
use crate::sqlite_notify::{is_preview, record_event};
use crate::{StoreError, UnixMillis};

/// Schema migrations, applied in order; `PRAGMA user_version` counts the ones done.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE sites (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    production_branch TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE branches (
    id INTEGER PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    active_deploy TEXT,
    UNIQUE (site_id, name),
    UNIQUE (site_id, label)
);
CREATE TABLE deploys (
    id TEXT PRIMARY KEY,
    site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    branch_id INTEGER NOT NULL REFERENCES branches(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    manifest TEXT,
    file_count INTEGER NOT NULL,
    total_size INTEGER NOT NULL,
    message TEXT,
    draft INTEGER NOT NULL,
    source TEXT NOT NULL,
    error TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX deploys_by_site ON deploys (site_id, created_at);
CREATE INDEX deploys_by_state ON deploys (state, created_at);
CREATE TABLE deploy_files (
    deploy_id TEXT NOT NULL REFERENCES deploys(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (deploy_id, path)
) WITHOUT ROWID;
CREATE INDEX deploy_files_by_hash ON deploy_files (hash);
CREATE TABLE activations (
    id INTEGER PRIMARY KEY,
    branch_id INTEGER NOT NULL REFERENCES branches(id) ON DELETE CASCADE,
    deploy_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0,
    at INTEGER NOT NULL
);
CREATE INDEX activations_by_branch ON activations (branch_id, id);
CREATE TABLE variants (
    source TEXT NOT NULL,
    encoding TEXT NOT NULL,
    hash TEXT,
    size INTEGER,
    PRIMARY KEY (source, encoding)
) WITHOUT ROWID;
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
"#,
    // 2: no query looks deploy files up by hash; the index only slowed every
    // deploy's file rows down.
    "DROP INDEX deploy_files_by_hash;",
    // 3: access policies (passwords as argon2id hashes, networks), by scope.
    "CREATE TABLE access (
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        scope TEXT NOT NULL,
        policy TEXT NOT NULL,
        PRIMARY KEY (site_id, scope)
    );",
    // 4: git-driven builds.
    "CREATE TABLE git_connections (
        site_id INTEGER PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
        repository TEXT NOT NULL,
        credential BLOB,
        webhook_secret BLOB NOT NULL,
        settings TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE builds (
        id TEXT PRIMARY KEY,
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        branch TEXT NOT NULL,
        git_ref TEXT NOT NULL,
        commit_sha TEXT,
        pull_request INTEGER,
        state TEXT NOT NULL,
        trigger TEXT NOT NULL,
        title TEXT,
        author TEXT,
        message TEXT,
        deploy_id TEXT,
        error TEXT,
        phases TEXT NOT NULL DEFAULT '[]',
        retry_of TEXT,
        untrusted INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER
    );
    CREATE INDEX builds_by_state ON builds (state, created_at);
    CREATE INDEX builds_by_site ON builds (site_id, created_at);
    CREATE TABLE env_vars (
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        branch TEXT NOT NULL,
        name TEXT NOT NULL,
        value BLOB NOT NULL,
        secret INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (site_id, branch, name)
    );
    CREATE TABLE build_hooks (
        id TEXT PRIMARY KEY,
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        branch TEXT,
        secret_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY,
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        source TEXT NOT NULL,
        event TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        build_id TEXT,
        at INTEGER NOT NULL
    );
    CREATE INDEX webhook_deliveries_by_site ON webhook_deliveries (site_id, id);
    CREATE TABLE polled_heads (
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        branch TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        PRIMARY KEY (site_id, branch)
    );
    CREATE TABLE previews (
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        closed_at INTEGER,
        PRIMARY KEY (site_id, number)
    );",
    // 5: notifications: subscriptions, the outbox written by state changes, deliveries and their attempts.
    "CREATE TABLE notify_subscriptions (
        id TEXT PRIMARY KEY,
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        config BLOB NOT NULL,
        display TEXT NOT NULL,
        filter TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE notify_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        branch TEXT NOT NULL,
        build_id TEXT,
        deploy_id TEXT,
        detail TEXT,
        at INTEGER NOT NULL,
        fanned INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX notify_outbox_pending ON notify_outbox (fanned, seq);
    CREATE TABLE notify_deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        subscription_id TEXT NOT NULL REFERENCES notify_subscriptions(id) ON DELETE CASCADE,
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        action TEXT NOT NULL,
        coalesce_key TEXT,
        event_kind TEXT NOT NULL,
        event_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_at INTEGER NOT NULL,
        lease_until INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX notify_deliveries_pending ON notify_deliveries (state, subscription_id, id);
    CREATE INDEX notify_deliveries_by_site ON notify_deliveries (site_id, id);
    CREATE TABLE notify_attempts (
        delivery_id INTEGER NOT NULL REFERENCES notify_deliveries(id) ON DELETE CASCADE,
        n INTEGER NOT NULL,
        at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status INTEGER,
        outcome TEXT NOT NULL,
        response TEXT NOT NULL,
        PRIMARY KEY (delivery_id, n)
    );
    CREATE TABLE forge_comments (
        subscription_id TEXT NOT NULL REFERENCES notify_subscriptions(id) ON DELETE CASCADE,
        pull_request INTEGER NOT NULL,
        comment_id TEXT NOT NULL,
        PRIMARY KEY (subscription_id, pull_request)
    );",
    // A deploy that went live before all its precompressed variants were made.
    "ALTER TABLE deploys ADD COLUMN variants_pending INTEGER NOT NULL DEFAULT 0;",
    // 7: a deploy's file list is one JSON value, `[[path, hash, size], ...]`,
    // instead of a row per file: a redeploy of 10,000 files spent 35-85 ms
    // inserting rows that are only ever read back whole (bench/deploy).
    "CREATE TABLE deploy_file_lists (
        deploy_id TEXT PRIMARY KEY REFERENCES deploys(id) ON DELETE CASCADE,
        files TEXT NOT NULL
    );
    INSERT INTO deploy_file_lists (deploy_id, files)
        SELECT deploy_id, json_group_array(json_array(path, hash, size)) FROM deploy_files GROUP BY deploy_id;
    DROP TABLE deploy_files;",
    // 8: origins a site's proxy rules may reach (within the operator's
    // `--proxy-origin` list), so one site's rules cannot use another's.
    "CREATE TABLE site_proxy_origins (
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        origin TEXT NOT NULL,
        PRIMARY KEY (site_id, origin)
    );",
    // 9: retention (deploys kept per branch) and the blobs a garbage
    // collection is deleting, which new deploys must upload again.
    "CREATE TABLE site_retention (
        site_id INTEGER PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
        keep_deploys INTEGER NOT NULL
    );
    CREATE TABLE blob_deletions (
        hash TEXT PRIMARY KEY,
        at INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 10: claims name their owner (node and run, `builds::Owner`) and a
    // running build its runner's heartbeat, so several processes can share
    // one database (PostgreSQL migration 3 is the same). A build running now
    // was claimed by a process that has ended (this one holds the data
    // directory's lock): `runner_run = ''` marks it for recovery at start,
    // and its notification leases are freed.
    "ALTER TABLE builds ADD COLUMN runner_node TEXT;
    ALTER TABLE builds ADD COLUMN runner_run TEXT;
    ALTER TABLE builds ADD COLUMN heartbeat_at INTEGER;
    UPDATE builds SET runner_run = '', heartbeat_at = coalesce(started_at, 0) WHERE state = 'running';
    ALTER TABLE notify_deliveries ADD COLUMN lease_node TEXT;
    ALTER TABLE notify_deliveries ADD COLUMN lease_run TEXT;
    UPDATE notify_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL;",
    // 11: node tokens (keyed hashes, as API tokens, but apart from them) and
    // each node's last heartbeat (PostgreSQL migration 4 is the same).
    "CREATE TABLE node_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER,
        last_used_at INTEGER
    );
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        zone TEXT NOT NULL,
        role TEXT NOT NULL,
        routing_version INTEGER NOT NULL,
        snapshot_age_ms INTEGER,
        ready INTEGER NOT NULL,
        draining INTEGER NOT NULL,
        refused_version INTEGER,
        refused_error TEXT,
        software TEXT NOT NULL,
        edge_addr TEXT,
        last_heartbeat INTEGER NOT NULL,
        first_seen INTEGER NOT NULL
    );",
    // 12: custom domains (one site per name), each site's HTTPS settings,
    // and certificates with their keys sealed (PostgreSQL migration 5 is the same).
    "CREATE TABLE certificates (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        names TEXT NOT NULL,
        chain_pem TEXT NOT NULL,
        key_sealed BLOB NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        issuer TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE domains (
        name TEXT PRIMARY KEY,
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        branch TEXT,
        is_primary INTEGER NOT NULL,
        twin_of TEXT,
        state TEXT NOT NULL,
        reason TEXT,
        hint TEXT,
        verify_token TEXT NOT NULL,
        verified_at INTEGER,
        verified_by TEXT,
        cert_id TEXT REFERENCES certificates(id),
        created_at INTEGER NOT NULL
    );
    CREATE INDEX domains_by_site ON domains (site_id, name);
    CREATE TABLE site_tls (
        site_id INTEGER PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
        https_redirect INTEGER NOT NULL,
        hsts_max_age INTEGER NOT NULL,
        hsts_include_subdomains INTEGER NOT NULL,
        hsts_preload INTEGER NOT NULL
    );",
    // 13: ACME (issue 17): the HTTP-01 challenge and the order backoff of
    // each domain, accounts by directory (credentials sealed), and leases so
    // one node orders a name at a time (PostgreSQL migration 6 is the same).
    "ALTER TABLE domains ADD COLUMN challenge_token TEXT;
    ALTER TABLE domains ADD COLUMN challenge_body TEXT;
    ALTER TABLE domains ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE domains ADD COLUMN next_attempt_at INTEGER;
    CREATE TABLE acme_accounts (
        directory TEXT PRIMARY KEY,
        credentials_sealed BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until_at INTEGER NOT NULL
    );",
    // 14: TLS-ALPN-01 (issue 17): the challenge certificate and its
    // throwaway key (PEM) a domain answers `acme-tls/1` handshakes with while
    // an order is under way (PostgreSQL migration 7 is the same).
    "ALTER TABLE domains ADD COLUMN challenge_alpn TEXT;",
    // 15: the base domain's own certificates (issue 17): `*.BASE` (and
    // `*.PREVIEW`) serve every `<site>` and `<branch>--<site>` host over
    // HTTPS; uploaded, or ordered by DNS-01 with the order's backoff
    // (PostgreSQL migration 8 is the same).
    "CREATE TABLE base_certificates (
        pattern TEXT PRIMARY KEY,
        cert_id TEXT REFERENCES certificates(id),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        reason TEXT,
        updated_at INTEGER NOT NULL
    );",
    // 16: certificates on demand for base hosts (issue 17): a row per exact
    // host asked for, with the ACME challenge it answers while ordered
    // (PostgreSQL migration 9 is the same).
    "ALTER TABLE base_certificates ADD COLUMN challenge_token TEXT;
    ALTER TABLE base_certificates ADD COLUMN challenge_body TEXT;
    ALTER TABLE base_certificates ADD COLUMN challenge_alpn TEXT;",
    // 17: users, their personal API tokens, console sessions and the audit log (issue 18;
    // PostgreSQL migration 10 is the same).
    "CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        password_hash TEXT,
        created_at INTEGER NOT NULL,
        last_login_at INTEGER
    );
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        last_used_at INTEGER,
        revoked_at INTEGER
    );
    CREATE INDEX api_tokens_user ON api_tokens(user_id);
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
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
        created_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL
    );
    CREATE INDEX sessions_user ON sessions(user_id);
    CREATE TABLE invites (
        token_hash TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );",
    // 18: a user's single sign-on identity (issue 18, OIDC): the provider's
    // issuer and subject, one user each (PostgreSQL migration 11 is the same).
    "ALTER TABLE users ADD COLUMN sso_subject TEXT;
    CREATE UNIQUE INDEX users_sso_subject ON users(sso_subject);",
    // 19: each node's responses over the last minute, from its heartbeat
    // (JSON; the health page's request and error rates; PostgreSQL 12).
    "ALTER TABLE nodes ADD COLUMN traffic TEXT;",
    // 20: whose defaults a site's deploys follow, when the site says
    // (issue 19; PostgreSQL 13).
    "CREATE TABLE site_profile (
        site_id INTEGER PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
        profile TEXT NOT NULL
    );",
    // 21: what `chanto apply` remembers beside a site's settings: the
    // reference each secret came from, each subscription's name (PostgreSQL 14).
    "CREATE TABLE platform_state (
        site_id INTEGER NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (site_id, key)
    );",
];

/// How many migrations this build knows: the newest schema version.
pub(crate) const MIGRATION_COUNT: usize = MIGRATIONS.len();

/// A deploy's file list as stored: `[[path, hash, size], ...]`.
fn encode_files(files: &[DeployFile]) -> Result<String, StoreError> {
    let rows: Vec<(&str, &ContentHash, u64)> = files.iter().map(|f| (f.path.as_str(), &f.hash, f.size)).collect();
    let mut out = Vec::with_capacity(2 + files.iter().map(|f| f.path.len() + 90).sum::<usize>());
    serde_json::to_writer(&mut out, &rows).map_err(|e| StoreError::Db(format!("encoding a file list: {e}")))?;
    String::from_utf8(out).map_err(|e| StoreError::Db(format!("encoding a file list: {e}")))
}

/// Reads a file list written by [`encode_files`] (or by migration 7).
fn decode_files(stored: &str) -> rusqlite::Result<Vec<DeployFile>> {
    let rows: Vec<(String, ContentHash, u64)> = serde_json::from_str(stored).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("stored file list: {e}").into(),
        )
    })?;
    Ok(rows.into_iter().map(|(path, hash, size)| DeployFile { path, hash, size }).collect())
}

/// Metadata in a SQLite database file.
#[derive(Clone)]
pub struct SqliteMeta {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteMeta {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::Db(format!("opening {}: {e}", path.display())))?;
        let meta = Self::init(conn)?;
        meta.checkpoint_in_background(path)?;
        Ok(meta)
    }

    /// Moves the write-ahead log into the database from a thread of its own
    /// (with its own connection: a passive checkpoint never blocks writers),
    /// instead of in whichever write crosses the log's size limit. Left to
    /// the writes, a deploy paid for it about one time in three: 30-60 ms
    /// more to record a 10,000-file list (bench/deploy). The writes still
    /// checkpoint if the log reaches 40 MB, should this thread fall behind.
    fn checkpoint_in_background(&self, path: &Path) -> Result<(), StoreError> {
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).pragma_update(None, "wal_autocheckpoint", 10_000)?;
        let alive = Arc::downgrade(&self.conn);
        std::thread::Builder::new()
            .name("chanto-sqlite-checkpoint".into())
            .spawn(move || {
                while alive.strong_count() > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    if let Err(e) = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "checkpointing the metadata log failed; writes will do it");
                    }
                }
            })
            .map_err(|e| StoreError::Db(format!("starting the checkpoint thread: {e}")))?;
        Ok(())
    }

    /// Opens a database read-only for reading its records (a backup's
    /// snapshot): no migration, no checkpoints, nothing written. A schema
    /// newer than this chanto knows is refused; an older one is read as is
    /// (the queries used on a snapshot exist since migration 7).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StoreError::Db(format!("opening {}: {e}", path.display())))?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Db(format!(
                "{} has schema version {version}, newer than this chanto knows ({}); use a newer chanto",
                path.display(),
                MIGRATIONS.len()
            )));
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 64 MiB of page cache (the default is 2 MiB): a deploy's file rows
        // and the ones before it stay in memory.
        conn.pragma_update(None, "cache_size", -65536)?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Db(format!(
                "the database has schema version {version}, newer than this chanto knows ({}); run a newer chanto",
                MIGRATIONS.len()
            )));
        }
        let tx = conn.transaction()?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Db(format!("metadata task failed: {e}")))?
    }
}

/// A stored access policy (JSON) in column `idx`.
fn policy_col(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<AccessPolicy> {
    let policy: String = r.get(idx)?;
    serde_json::from_str(&policy)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into()))
}

pub(crate) fn parse<T: FromStr>(idx: usize, s: String) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("stored value {s:?}: {e}").into(),
        )
    })
}

const DEPLOY_COLUMNS: &str = "d.id, s.name, b.name, b.label, b.name = s.production_branch, d.state, d.manifest, d.file_count, d.total_size, d.message, d.draft, d.source, d.error, d.created_at, d.finished_at";
const DEPLOY_FROM: &str = "deploys d JOIN sites s ON s.id = d.site_id JOIN branches b ON b.id = d.branch_id";

fn deploy_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeployRecord> {
    Ok(DeployRecord {
        id: parse(0, r.get(0)?)?,
        site: parse(1, r.get(1)?)?,
        branch: parse(2, r.get(2)?)?,
        branch_label: r.get(3)?,
        production: r.get(4)?,
        state: parse(5, r.get(5)?)?,
        manifest: r.get::<_, Option<String>>(6)?.map(|m| parse(6, m)).transpose()?,
        file_count: r.get::<_, i64>(7)? as u64,
        total_size: r.get::<_, i64>(8)? as u64,
        message: r.get(9)?,
        draft: r.get(10)?,
        source: r.get(11)?,
        error: r.get(12)?,
        created_at: r.get(13)?,
        finished_at: r.get(14)?,
    })
}

fn get_deploy_tx(tx: &Connection, id: &str) -> Result<Option<DeployRecord>, StoreError> {
    Ok(tx
        .query_row(&format!("SELECT {DEPLOY_COLUMNS} FROM {DEPLOY_FROM} WHERE d.id = ?1"), [id], deploy_row)
        .optional()?)
}

pub(crate) fn site_id(tx: &Connection, name: &SiteName) -> Result<i64, StoreError> {
    tx.query_row("SELECT id FROM sites WHERE name = ?1", [name.as_str()], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("site {name}")))
}

fn site_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SiteRecord> {
    Ok(SiteRecord { name: parse(0, r.get(0)?)?, production_branch: parse(1, r.get(1)?)?, created_at: r.get(2)? })
}

/// Sets the active deploy of a branch and the states around it.
fn flip(tx: &Transaction<'_>, branch_id: i64, from: Option<&str>, to: &str) -> Result<(), StoreError> {
    if let Some(from) = from {
        tx.execute("UPDATE deploys SET state = 'superseded' WHERE id = ?1", [from])?;
    }
    tx.execute("UPDATE deploys SET state = 'active' WHERE id = ?1", [to])?;
    tx.execute("UPDATE branches SET active_deploy = ?1 WHERE id = ?2", params![to, branch_id])?;
    Ok(())
}

/// A branch's id and live deploy; `NotFound` names the branch and site.
fn branch_row(
    c: &Connection,
    site_id: i64,
    site: &SiteName,
    branch: &BranchName,
) -> Result<(i64, Option<String>), StoreError> {
    c.query_row(
        "SELECT id, active_deploy FROM branches WHERE site_id = ?1 AND name = ?2",
        params![site_id, branch.as_str()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("branch {branch} of site {site}")))
}

/// A branch's activation history, oldest first, for [`crate::rollback::rollback_walk`].
fn branch_history(c: &Connection, branch_id: i64) -> Result<Vec<crate::rollback::HistoryEntry>, StoreError> {
    let mut st = c.prepare(
        "SELECT a.deploy_id, a.kind = 'rollback', COALESCE(d.state IN ('ready', 'active', 'superseded'), 0)
         FROM activations a LEFT JOIN deploys d ON d.id = a.deploy_id
         WHERE a.branch_id = ?1 ORDER BY a.id",
    )?;
    let rows = st.query_map([branch_id], |r| {
        Ok(crate::rollback::HistoryEntry { deploy: r.get(0)?, rollback: r.get(1)?, complete: r.get(2)? })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn variant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VariantRecord> {
    let source: ContentHash = parse(0, r.get(0)?)?;
    let encoding = match r.get::<_, String>(1)?.as_str() {
        "br" => Encoding::Br,
        _ => Encoding::Gzip,
    };
    let variant = match r.get::<_, Option<String>>(2)? {
        Some(h) => Some(Variant { encoding, hash: parse(2, h)?, size: r.get::<_, i64>(3)? as u64 }),
        None => None,
    };
    Ok((source, encoding, variant))
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn create_site(
        &self,
        name: &SiteName,
        production_branch: &BranchName,
        now: UnixMillis,
    ) -> Result<SiteRecord, StoreError> {
        let (name, production_branch) = (name.clone(), production_branch.clone());
        self.call(move |c| {
            let n = c.execute(
                "INSERT INTO sites (name, production_branch, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![name.as_str(), production_branch.as_str(), now],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("site {name} already exists; pick another name or deploy to it")));
            }
            Ok(SiteRecord { name, production_branch, created_at: now })
        })
        .await
    }

    async fn list_sites(&self) -> Result<Vec<SiteRecord>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare("SELECT name, production_branch, created_at FROM sites ORDER BY name")?;
            let rows = st.query_map([], site_row)?.collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn get_site(&self, name: &SiteName) -> Result<Option<SiteRecord>, StoreError> {
        let name = name.clone();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT name, production_branch, created_at FROM sites WHERE name = ?1",
                [name.as_str()],
                site_row,
            )
            .optional()?)
        })
        .await
    }

    async fn delete_site(&self, name: &SiteName) -> Result<(), StoreError> {
        let name = name.clone();
        self.call(move |c| {
            let n = c.execute("DELETE FROM sites WHERE name = ?1", [name.as_str()])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("site {name}")));
            }
            Ok(())
        })
        .await
    }

    async fn create_deploy(&self, d: NewDeploy) -> Result<DeployRecord, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let site_id = site_id(&tx, &d.site)?;
            let existing: Option<i64> = tx
                .query_row("SELECT id FROM branches WHERE site_id = ?1 AND name = ?2", params![site_id, d.branch.as_str()], |r| r.get(0))
                .optional()?;
            let branch_id = match existing {
                Some(id) => id,
                None => {
                    let taken = |label: &str| -> Result<bool, StoreError> {
                        Ok(tx
                            .query_row("SELECT 1 FROM branches WHERE site_id = ?1 AND label = ?2", params![site_id, label], |_| Ok(()))
                            .optional()?
                            .is_some())
                    };
                    let mut label = d.branch.label();
                    if taken(&label)? {
                        label = d.branch.label_with_suffix();
                        if taken(&label)? {
                            return Err(StoreError::Conflict(format!("branch {} has no free hostname label", d.branch)));
                        }
                    }
                    tx.execute(
                        "INSERT INTO branches (site_id, name, label) VALUES (?1, ?2, ?3)",
                        params![site_id, d.branch.as_str(), label],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            let total: u64 = d.files.iter().map(|f| f.size).sum();
            let inserted = tx.execute(
                "INSERT INTO deploys (id, site_id, branch_id, state, file_count, total_size, message, draft, source, created_at)
                 VALUES (?1, ?2, ?3, 'uploading', ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
                params![d.id.as_str(), site_id, branch_id, d.files.len() as i64, total as i64, d.message, d.draft, d.source, d.created_at],
            )?;
            if inserted == 0 {
                return Err(StoreError::Conflict(format!("deploy {} already exists", d.id)));
            }
            tx.execute(
                "INSERT INTO deploy_file_lists (deploy_id, files) VALUES (?1, ?2)",
                params![d.id.as_str(), encode_files(&d.files)?],
            )?;
            let rec = get_deploy_tx(&tx, d.id.as_str())?.ok_or_else(|| StoreError::Db("deploy vanished".into()))?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn deploy_files(&self, id: &DeployId) -> Result<Vec<DeployFile>, StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let stored: Option<String> = c
                .query_row("SELECT files FROM deploy_file_lists WHERE deploy_id = ?1", [id.as_str()], |r| r.get(0))
                .optional()?;
            let mut files = match stored {
                Some(s) => decode_files(&s)?,
                None => Vec::new(),
            };
            files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
            Ok(files)
        })
        .await
    }

    async fn get_deploy(&self, id: &DeployId) -> Result<Option<DeployRecord>, StoreError> {
        let id = id.clone();
        self.call(move |c| get_deploy_tx(c, id.as_str())).await
    }

    async fn list_deploys(
        &self,
        site: &SiteName,
        branch: Option<&BranchName>,
    ) -> Result<Vec<DeployRecord>, StoreError> {
        let (site, branch) = (site.clone(), branch.cloned());
        self.call(move |c| {
            site_id(c, &site)?;
            let sql = format!(
                "SELECT {DEPLOY_COLUMNS} FROM {DEPLOY_FROM} WHERE s.name = ?1 AND (?2 IS NULL OR b.name = ?2) ORDER BY d.created_at DESC, d.rowid DESC"
            );
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(params![site.as_str(), branch.as_ref().map(|b| b.as_str())], deploy_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn mark_ready(
        &self,
        id: &DeployId,
        manifest: &ContentHash,
        now: UnixMillis,
    ) -> Result<DeployRecord, StoreError> {
        let (id, manifest) = (id.clone(), *manifest);
        self.call(move |c| {
            let tx = c.transaction()?;
            let cur = get_deploy_tx(&tx, id.as_str())?.ok_or_else(|| StoreError::NotFound(format!("deploy {id}")))?;
            if cur.state != DeployState::Uploading {
                return Err(StoreError::Conflict(format!(
                    "deploy {id} is {}, not uploading; start a new deploy",
                    cur.state
                )));
            }
            tx.execute(
                "UPDATE deploys SET state = 'ready', manifest = ?2, finished_at = ?3 WHERE id = ?1",
                params![id.as_str(), manifest.to_hex(), now],
            )?;
            let sid = site_id(&tx, &cur.site)?;
            record_event(&tx, sid, "deploy.ready", cur.branch.as_str(), None, Some(id.as_str()), None, now)?;
            let rec = get_deploy_tx(&tx, id.as_str())?.ok_or_else(|| StoreError::Db("deploy vanished".into()))?;
            tx.commit()?;
            Ok(rec)
        })
        .await
    }

    async fn set_variants_pending(&self, id: &DeployId) -> Result<(), StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let n = c.execute("UPDATE deploys SET variants_pending = 1 WHERE id = ?1", params![id.as_str()])?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("deploy {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn replace_manifest(
        &self,
        id: &DeployId,
        expected: &ContentHash,
        manifest: &ContentHash,
    ) -> Result<bool, StoreError> {
        let (id, expected, manifest) = (id.clone(), *expected, *manifest);
        self.call(move |c| {
            let n = c.execute(
                "UPDATE deploys SET manifest = ?3, variants_pending = 0
                 WHERE id = ?1 AND manifest = ?2 AND state IN ('ready', 'active', 'superseded')",
                params![id.as_str(), expected.to_hex(), manifest.to_hex()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn variants_pending(&self) -> Result<Vec<(DeployId, ContentHash)>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT id, manifest FROM deploys
                 WHERE variants_pending = 1 AND manifest IS NOT NULL AND state IN ('ready', 'active', 'superseded')
                 ORDER BY created_at",
            )?;
            let rows = st.query_map([], |r| Ok((parse(0, r.get(0)?)?, parse(1, r.get(1)?)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn mark_failed(&self, id: &DeployId, error: &str, now: UnixMillis) -> Result<(), StoreError> {
        let (id, error) = (id.clone(), error.to_owned());
        self.call(move |c| {
            let n = c.execute(
                "UPDATE deploys SET state = 'failed', error = ?2, finished_at = ?3 WHERE id = ?1 AND state = 'uploading'",
                params![id.as_str(), error, now],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("deploy {id} is not uploading")));
            }
            Ok(())
        })
        .await
    }

    async fn activate(
        &self,
        id: &DeployId,
        kind: ActivationKind,
        now: UnixMillis,
    ) -> Result<Option<DeployId>, StoreError> {
        let id = id.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            let d = get_deploy_tx(&tx, id.as_str())?.ok_or_else(|| StoreError::NotFound(format!("deploy {id}")))?;
            if !d.state.is_complete() {
                return Err(StoreError::Conflict(format!("deploy {id} is {}; only a ready deploy can be activated", d.state)));
            }
            let (branch_id, active): (i64, Option<String>) = tx.query_row(
                "SELECT branch_id, b.active_deploy FROM deploys d JOIN branches b ON b.id = d.branch_id WHERE d.id = ?1",
                [id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if active.as_deref() == Some(id.as_str()) {
                return Ok(Some(id));
            }
            flip(&tx, branch_id, active.as_deref(), id.as_str())?;
            tx.execute(
                "INSERT INTO activations (branch_id, deploy_id, kind, at) VALUES (?1, ?2, ?3, ?4)",
                params![branch_id, id.as_str(), kind.as_str(), now],
            )?;
            let sid = site_id(&tx, &d.site)?;
            let event = if is_preview(&tx, sid, d.branch.as_str())? { "preview.ready" } else { "deploy.activated" };
            record_event(&tx, sid, event, d.branch.as_str(), None, Some(id.as_str()), active.as_deref(), now)?;
            tx.commit()?;
            active.map(|a| parse(0, a)).transpose().map_err(Into::into)
        })
        .await
    }

    async fn rollback(
        &self,
        site: &SiteName,
        branch: &BranchName,
        to: Option<&DeployId>,
        now: UnixMillis,
    ) -> Result<(DeployId, DeployId), StoreError> {
        let (site, branch, to) = (site.clone(), branch.clone(), to.cloned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let site_id = site_id(&tx, &site)?;
            let (branch_id, active) = branch_row(&tx, site_id, &site, &branch)?;
            let active = active.ok_or_else(|| StoreError::Conflict(format!("branch {branch} of site {site} has no active deploy")))?;
            let target = match to {
                Some(to) => {
                    let d = get_deploy_tx(&tx, to.as_str())?
                        .filter(|d| d.site == site)
                        .ok_or_else(|| StoreError::NotFound(format!("deploy {to} of site {site}")))?;
                    crate::rollback::check_target(&d, &branch, &active)?;
                    to.to_string()
                }
                None => crate::rollback::rollback_walk(&branch_history(&tx, branch_id)?, &active).into_iter().next().ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "branch {branch} of site {site} has no earlier deploy to roll back to; pick one with `chanto rollback --site {site} --to DEPLOY` (ids from `chanto deploys list --site {site} --branch {branch}`), or activate a ready deploy with `chanto publish ID`"
                    ))
                })?,
            };
            flip(&tx, branch_id, Some(&active), &target)?;
            tx.execute(
                "INSERT INTO activations (branch_id, deploy_id, kind, at) VALUES (?1, ?2, ?3, ?4)",
                params![branch_id, target, ActivationKind::Rollback.as_str(), now],
            )?;
            record_event(&tx, site_id, "deploy.rolled_back", branch.as_str(), None, Some(&target), Some(&active), now)?;
            tx.commit()?;
            Ok((parse(0, active)?, parse(0, target)?))
        })
        .await
    }

    async fn rollback_walk(&self, site: &SiteName, branch: &BranchName) -> Result<Vec<DeployId>, StoreError> {
        let (site, branch) = (site.clone(), branch.clone());
        self.call(move |c| {
            let site_id = site_id(c, &site)?;
            let (branch_id, active) = branch_row(c, site_id, &site, &branch)?;
            let Some(active) = active else { return Ok(Vec::new()) };
            let walk = crate::rollback::rollback_walk(&branch_history(c, branch_id)?, &active);
            walk.into_iter().map(|d| parse(0, d).map_err(Into::into)).collect()
        })
        .await
    }

    async fn rolled_back(&self, site: &SiteName, branch: Option<&BranchName>) -> Result<Vec<DeployId>, StoreError> {
        let (site, branch) = (site.clone(), branch.cloned());
        self.call(move |c| {
            let site_id = site_id(c, &site)?;
            let branches: Vec<i64> = {
                let mut st = c.prepare("SELECT id FROM branches WHERE site_id = ?1 AND (?2 IS NULL OR name = ?2)")?;
                st.query_map(params![site_id, branch.as_ref().map(|b| b.as_str())], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            let mut out = Vec::new();
            for b in branches {
                for d in crate::rollback::rolled_back(&branch_history(c, b)?) {
                    out.push(parse(0, d)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn expire_uploads(&self, cutoff: UnixMillis) -> Result<Vec<DeployId>, StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let ids: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT id FROM deploys WHERE state = 'uploading' AND created_at < ?1 ORDER BY created_at",
                )?;
                st.query_map([cutoff], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            for id in &ids {
                tx.execute(
                    "UPDATE deploys SET state = 'expired', finished_at = ?2 WHERE id = ?1",
                    params![id, cutoff],
                )?;
                tx.execute("DELETE FROM deploy_file_lists WHERE deploy_id = ?1", [id])?;
            }
            tx.commit()?;
            ids.into_iter().map(|id| parse(0, id).map_err(Into::into)).collect()
        })
        .await
    }

    async fn branch(&self, site: &SiteName, branch: &BranchName) -> Result<Option<BranchRecord>, StoreError> {
        let (site, branch) = (site.clone(), branch.clone());
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT b.label, b.active_deploy FROM branches b JOIN sites s ON s.id = b.site_id WHERE s.name = ?1 AND b.name = ?2",
                params![site.as_str(), branch.as_str()],
                |r| {
                    Ok(BranchRecord {
                        site: site.clone(),
                        branch: branch.clone(),
                        label: r.get(0)?,
                        active_deploy: r.get::<_, Option<String>>(1)?.map(|d| parse(1, d)).transpose()?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn routing_table(&self, site: Option<&SiteName>) -> Result<Vec<RoutingRow>, StoreError> {
        let site = site.map(|s| s.to_string());
        self.call(move |c| {
            let mut st = c.prepare_cached(if site.is_some() {
                "SELECT s.name, b.name, b.label, b.name = s.production_branch, d.id, d.manifest, d.finished_at
                 FROM sites s JOIN branches b ON b.site_id = s.id JOIN deploys d ON d.id = b.active_deploy
                 WHERE s.name = ?1 AND d.manifest IS NOT NULL ORDER BY b.name"
            } else {
                "SELECT s.name, b.name, b.label, b.name = s.production_branch, d.id, d.manifest, d.finished_at
                 FROM branches b JOIN sites s ON s.id = b.site_id JOIN deploys d ON d.id = b.active_deploy
                 WHERE d.manifest IS NOT NULL ORDER BY s.name, b.name"
            })?;
            let rows = st
                .query_map(rusqlite::params_from_iter(site.iter()), |r| {
                    Ok(RoutingRow {
                        site: parse(0, r.get(0)?)?,
                        branch: parse(1, r.get(1)?)?,
                        label: r.get(2)?,
                        production: r.get(3)?,
                        deploy: parse(4, r.get(4)?)?,
                        manifest: parse(5, r.get(5)?)?,
                        ready_at: r.get::<_, Option<i64>>(6)?.unwrap_or(0),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn permalinks(&self, site: Option<&SiteName>) -> Result<Vec<Permalink>, StoreError> {
        let site = site.map(|s| s.to_string());
        self.call(move |c| {
            let mut st = c.prepare_cached(if site.is_some() {
                "SELECT s.name, d.id, d.manifest, d.finished_at, b.name, b.name = s.production_branch
                 FROM sites s JOIN deploys d ON d.site_id = s.id JOIN branches b ON b.id = d.branch_id
                 WHERE s.name = ?1 AND d.state IN ('ready', 'active', 'superseded') AND d.manifest IS NOT NULL"
            } else {
                "SELECT s.name, d.id, d.manifest, d.finished_at, b.name, b.name = s.production_branch
                 FROM deploys d JOIN sites s ON s.id = d.site_id JOIN branches b ON b.id = d.branch_id
                 WHERE d.state IN ('ready', 'active', 'superseded') AND d.manifest IS NOT NULL"
            })?;
            let rows = st
                .query_map(rusqlite::params_from_iter(site.iter()), |r| {
                    Ok(Permalink {
                        site: parse(0, r.get(0)?)?,
                        deploy: parse(1, r.get(1)?)?,
                        manifest: parse(2, r.get(2)?)?,
                        ready_at: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                        branch: parse(4, r.get(4)?)?,
                        production: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn variants(&self, sources: &[ContentHash]) -> Result<Vec<VariantRecord>, StoreError> {
        let sources: Vec<String> = sources.iter().map(|h| h.to_hex()).collect();
        self.call(move |c| {
            let mut st = c.prepare_cached("SELECT source, encoding, hash, size FROM variants WHERE source = ?1")?;
            let mut out = Vec::new();
            for s in &sources {
                for row in st.query_map([s], variant_row)? {
                    out.push(row?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_variants(&self, variants: &[VariantRecord]) -> Result<(), StoreError> {
        let variants = variants.to_vec();
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT OR REPLACE INTO variants (source, encoding, hash, size) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (source, enc, v) in &variants {
                    st.execute(params![
                        source.to_hex(),
                        enc.as_str(),
                        v.as_ref().map(|v| v.hash.to_hex()),
                        v.as_ref().map(|v| v.size as i64)
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn forget_variants(&self, blobs: &[ContentHash]) -> Result<(), StoreError> {
        let blobs: Vec<String> = blobs.iter().map(|h| h.to_hex()).collect();
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare("DELETE FROM variants WHERE source = ?1 OR hash = ?1")?;
                for b in &blobs {
                    st.execute([b])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn referenced_blobs(&self, excluding: &[DeployId]) -> Result<HashSet<ContentHash>, StoreError> {
        let excluding: HashSet<String> = excluding.iter().map(|d| d.as_str().to_owned()).collect();
        self.call(move |c| {
            let mut out = HashSet::new();
            let live = "SELECT id FROM deploys WHERE state NOT IN ('expired', 'failed')";
            let mut st =
                c.prepare(&format!("SELECT deploy_id, files FROM deploy_file_lists WHERE deploy_id IN ({live})"))?;
            for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
                let (id, files) = row?;
                if !excluding.contains(&id) {
                    out.extend(decode_files(&files)?.into_iter().map(|f| f.hash));
                }
            }
            let mut st =
                c.prepare(&format!("SELECT id, manifest FROM deploys WHERE manifest IS NOT NULL AND id IN ({live})"))?;
            let mut manifests = Vec::new();
            for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, parse::<ContentHash>(1, r.get(1)?)?)))? {
                let (id, manifest) = row?;
                if !excluding.contains(&id) {
                    manifests.push(manifest);
                }
            }
            // The variants of every referenced source blob.
            let mut st = c.prepare("SELECT source, hash FROM variants WHERE hash IS NOT NULL")?;
            let mut variants = Vec::new();
            for row in
                st.query_map([], |r| Ok((parse::<ContentHash>(0, r.get(0)?)?, parse::<ContentHash>(1, r.get(1)?)?)))?
            {
                let (source, hash) = row?;
                if out.contains(&source) {
                    variants.push(hash);
                }
            }
            out.extend(manifests);
            out.extend(variants);
            Ok(out)
        })
        .await
    }

    async fn mark_deleting(&self, blobs: &[ContentHash], now: UnixMillis) -> Result<(), StoreError> {
        let blobs: Vec<String> = blobs.iter().map(|h| h.to_hex()).collect();
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO blob_deletions (hash, at) VALUES (?1, ?2) ON CONFLICT (hash) DO UPDATE SET at = excluded.at",
                )?;
                for h in &blobs {
                    st.execute(params![h, now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn clear_deleting(&self, blobs: &[ContentHash]) -> Result<(), StoreError> {
        let blobs: Vec<String> = blobs.iter().map(|h| h.to_hex()).collect();
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare("DELETE FROM blob_deletions WHERE hash = ?1")?;
                for h in &blobs {
                    st.execute([h])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn blobs_being_deleted(&self) -> Result<HashSet<ContentHash>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare_cached("SELECT hash FROM blob_deletions")?;
            let out = st.query_map([], |r| parse::<ContentHash>(0, r.get(0)?))?.collect::<Result<_, _>>()?;
            Ok(out)
        })
        .await
    }

    async fn set_keep_deploys(&self, site: &SiteName, keep: u32) -> Result<(), StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            if keep == 0 {
                tx.execute("DELETE FROM site_retention WHERE site_id = ?1", [id])?;
            } else {
                tx.execute(
                    "INSERT INTO site_retention (site_id, keep_deploys) VALUES (?1, ?2)
                     ON CONFLICT (site_id) DO UPDATE SET keep_deploys = excluded.keep_deploys",
                    params![id, keep],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn all_keep_deploys(&self) -> Result<Vec<(SiteName, u32)>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT s.name, r.keep_deploys FROM site_retention r JOIN sites s ON s.id = r.site_id ORDER BY s.name",
            )?;
            let out = st.query_map([], |r| Ok((parse(0, r.get(0)?)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            Ok(out)
        })
        .await
    }

    async fn set_site_profile(&self, site: &SiteName, profile: Option<&str>) -> Result<(), StoreError> {
        let (site, profile) = (site.clone(), profile.map(str::to_owned));
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            match profile {
                None => tx.execute("DELETE FROM site_profile WHERE site_id = ?1", [id])?,
                Some(p) => tx.execute(
                    "INSERT INTO site_profile (site_id, profile) VALUES (?1, ?2)
                     ON CONFLICT (site_id) DO UPDATE SET profile = excluded.profile",
                    params![id, p],
                )?,
            };
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn site_profile(&self, site: &SiteName) -> Result<Option<String>, StoreError> {
        let site = site.clone();
        self.call(move |c| {
            let id = site_id(c, &site)?;
            Ok(c.query_row("SELECT profile FROM site_profile WHERE site_id = ?1", [id], |r| r.get(0)).optional()?)
        })
        .await
    }

    async fn platform_state(&self, site: Option<&SiteName>) -> Result<Vec<PlatformState>, StoreError> {
        let site = site.cloned();
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site.as_ref().map(|s| site_id(&tx, s)).transpose()?;
            let mut st = tx.prepare(
                "SELECT s.name, p.key, p.value FROM platform_state p JOIN sites s ON s.id = p.site_id
                 WHERE ?1 IS NULL OR p.site_id = ?1 ORDER BY s.name, p.key",
            )?;
            let out = st
                .query_map([id], |r| {
                    Ok(PlatformState { site: parse(0, r.get(0)?)?, key: r.get(1)?, value: r.get(2)? })
                })?
                .collect::<Result<_, _>>()?;
            Ok(out)
        })
        .await
    }

    async fn set_platform_state(&self, site: &SiteName, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let (site, key, value) = (site.clone(), key.to_owned(), value.map(str::to_owned));
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            match value {
                None => tx.execute("DELETE FROM platform_state WHERE site_id = ?1 AND key = ?2", params![id, key])?,
                Some(v) => tx.execute(
                    "INSERT INTO platform_state (site_id, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (site_id, key) DO UPDATE SET value = excluded.value",
                    params![id, key, v],
                )?,
            };
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn prune_deploys(&self, ids: &[DeployId]) -> Result<Vec<DeployId>, StoreError> {
        let ids = ids.to_vec();
        self.call(move |c| {
            let tx = c.transaction()?;
            let mut pruned = Vec::new();
            for id in ids {
                // Checked again here, in the transaction that deletes: a
                // deploy published or rolled back to meanwhile stays.
                let n = tx.execute(
                    "DELETE FROM deploys WHERE id = ?1 AND state NOT IN ('active', 'uploading')
                       AND NOT EXISTS (SELECT 1 FROM branches WHERE active_deploy = ?1)",
                    [id.as_str()],
                )?;
                if n > 0 {
                    tx.execute("DELETE FROM activations WHERE deploy_id = ?1", [id.as_str()])?;
                    pruned.push(id);
                }
            }
            tx.commit()?;
            Ok(pruned)
        })
        .await
    }

    async fn token_count(&self) -> Result<u64, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT count(*) FROM tokens", [], |r| r.get::<_, i64>(0))? as u64)).await
    }

    async fn set_access(&self, site: &SiteName, scope: &AccessScope, policy: &AccessPolicy) -> Result<(), StoreError> {
        let (site, scope) = (site.clone(), scope.to_string());
        let policy = serde_json::to_string(policy).map_err(|e| StoreError::Db(e.to_string()))?;
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            tx.execute(
                "INSERT INTO access (site_id, scope, policy) VALUES (?1, ?2, ?3)
                 ON CONFLICT (site_id, scope) DO UPDATE SET policy = excluded.policy",
                params![id, scope, policy],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn clear_access(&self, site: &SiteName, scope: &AccessScope) -> Result<bool, StoreError> {
        let (site, scope) = (site.clone(), scope.to_string());
        self.call(move |c| {
            let id = site_id(c, &site)?;
            Ok(c.execute("DELETE FROM access WHERE site_id = ?1 AND scope = ?2", params![id, scope])? > 0)
        })
        .await
    }

    async fn access(&self, site: &SiteName) -> Result<Vec<(AccessScope, AccessPolicy)>, StoreError> {
        let site = site.to_string();
        self.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT a.scope, a.policy FROM sites s JOIN access a ON a.site_id = s.id WHERE s.name = ?1 ORDER BY a.scope",
            )?;
            let rows = st
                .query_map([site], |r| Ok((parse(0, r.get(0)?)?, policy_col(r, 1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn all_access(&self) -> Result<Vec<(SiteName, AccessScope, AccessPolicy)>, StoreError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT s.name, a.scope, a.policy FROM access a JOIN sites s ON s.id = a.site_id ORDER BY s.name, a.scope",
            )?;
            let rows = st
                .query_map([], |r| Ok((parse(0, r.get(0)?)?, parse(1, r.get(1)?)?, policy_col(r, 2)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn set_proxy_origins(&self, site: &SiteName, origins: &[String]) -> Result<(), StoreError> {
        let (site, origins) = (site.clone(), origins.to_vec());
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = site_id(&tx, &site)?;
            tx.execute("DELETE FROM site_proxy_origins WHERE site_id = ?1", [id])?;
            for o in &origins {
                tx.execute(
                    "INSERT OR IGNORE INTO site_proxy_origins (site_id, origin) VALUES (?1, ?2)",
                    params![id, o],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn proxy_origins(&self, site: Option<&SiteName>) -> Result<Vec<(SiteName, Vec<String>)>, StoreError> {
        let site = site.map(|s| s.to_string());
        self.call(move |c| {
            let mut st = c.prepare_cached(if site.is_some() {
                "SELECT s.name, p.origin FROM sites s JOIN site_proxy_origins p ON p.site_id = s.id
                 WHERE s.name = ?1 ORDER BY p.origin"
            } else {
                "SELECT s.name, p.origin FROM site_proxy_origins p JOIN sites s ON s.id = p.site_id
                 ORDER BY s.name, p.origin"
            })?;
            let rows: Vec<(SiteName, String)> = st
                .query_map(rusqlite::params_from_iter(site.iter()), |r| Ok((parse(0, r.get(0)?)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut out: Vec<(SiteName, Vec<String>)> = Vec::new();
            for (site, origin) in rows {
                match out.last_mut() {
                    Some((s, list)) if *s == site => list.push(origin),
                    _ => out.push((site, vec![origin])),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn add_token(&self, name: &str, hash: &ContentHash, now: UnixMillis) -> Result<(), StoreError> {
        let (name, hash) = (name.to_owned(), hash.to_hex());
        self.call(move |c| {
            c.execute("INSERT INTO tokens (name, hash, created_at) VALUES (?1, ?2, ?3)", params![name, hash, now])?;
            Ok(())
        })
        .await
    }

    async fn token_exists(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        let hash = hash.to_hex();
        self.call(move |c| {
            Ok(c.query_row("SELECT 1 FROM tokens WHERE hash = ?1", [hash], |_| Ok(())).optional()?.is_some())
        })
        .await
    }

    /// One trivial query, within [`crate::health::PROBE_TIMEOUT`]: the file
    /// answers and no long call holds the connection.
    async fn health(&self) -> crate::health::Check {
        use crate::health::{Check, PROBE_TIMEOUT, State};
        let query = self.call(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?));
        match tokio::time::timeout(PROBE_TIMEOUT, query).await {
            Ok(Ok(())) => Check::new("metadata", "sqlite", State::Up, "answers"),
            Ok(Err(e)) => Check::new("metadata", "sqlite", State::Down, e.to_string()),
            Err(_) => Check::new(
                "metadata",
                "sqlite",
                State::Degraded,
                format!("busy: no answer within {} s", PROBE_TIMEOUT.as_secs()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by a chanto before migration 7 keeps its deploys'
    /// file lists (and what garbage collection must keep) after it.
    #[tokio::test]
    async fn file_rows_become_file_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let (a, b) = (ContentHash::of(b"a"), ContentHash::of(b"b"));
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO sites (id, name, production_branch, created_at) VALUES (1, 'docs', 'main', 1);
                 INSERT INTO branches (id, site_id, name, label) VALUES (1, 1, 'main', 'main');
                 INSERT INTO deploys (id, site_id, branch_id, state, file_count, total_size, draft, source, created_at)
                     VALUES ('0123456789abcdef', 1, 1, 'uploading', 3, 3, 0, 'cli', 1),
                            ('fedcba9876543210', 1, 1, 'uploading', 0, 0, 0, 'cli', 2);
                 INSERT INTO deploy_files (deploy_id, path, hash, size) VALUES
                     ('0123456789abcdef', 'z \"quoted\".html', '{a}', 1),
                     ('0123456789abcdef', 'a/index.html', '{b}', 1),
                     ('0123456789abcdef', 'b.css', '{a}', 1);"
            ))
            .unwrap();
        }
        let meta = SqliteMeta::open(&path).unwrap();
        let files = meta.deploy_files(&"0123456789abcdef".parse().unwrap()).await.unwrap();
        let listed: Vec<(&str, ContentHash, u64)> = files.iter().map(|f| (f.path.as_str(), f.hash, f.size)).collect();
        assert_eq!(listed, vec![("a/index.html", b, 1), ("b.css", a, 1), ("z \"quoted\".html", a, 1)]);
        assert!(meta.deploy_files(&"fedcba9876543210".parse().unwrap()).await.unwrap().is_empty());
        assert_eq!(meta.referenced_blobs(&[]).await.unwrap(), HashSet::from([a, b]));
    }

    /// A build running under a chanto before migration 10 (no owner) is
    /// recovered at the next start whatever node starts, and its leases are
    /// freed: on SQLite the process that claimed them has ended.
    #[tokio::test]
    async fn claims_from_before_owners_are_recovered_at_once() {
        use crate::{BuildStore, NotifyStore, Owner};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..9] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 9).unwrap();
            conn.execute_batch(
                "INSERT INTO sites (id, name, production_branch, created_at) VALUES (1, 'docs', 'main', 1);
                 INSERT INTO builds (id, site_id, branch, git_ref, state, trigger, created_at, started_at)
                     VALUES ('00000000000000b1', 1, 'main', 'main', 'running', 'manual', 1, 2),
                            ('00000000000000b2', 1, 'main', 'main', 'queued', 'manual', 3, NULL);
                 INSERT INTO notify_subscriptions (id, site_id, channel, config, display, filter, created_at)
                     VALUES ('sub', 1, 'webhook', x'01', 'x', '{}', 1);
                 INSERT INTO notify_deliveries (subscription_id, site_id, action, event_kind, event_id, payload, state,
                     attempts, next_at, lease_until, created_at, updated_at)
                     VALUES ('sub', 1, 'send', 'build.queued', 'e', '{}', 'pending', 0, 1, 9999999999999, 1, 1);",
            )
            .unwrap();
        }
        let meta = SqliteMeta::open(&path).unwrap();
        let me = Owner::new_run("host/new");
        let recovered = meta.recover_builds(&me, i64::MIN, 10).await.unwrap();
        assert_eq!(recovered.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["00000000000000b1"]);
        assert_eq!(recovered[0].error.as_deref(), Some("the server stopped while this build ran"));
        assert_eq!(meta.due_deliveries(10, 10).await.unwrap().len(), 1, "the old lease is gone");
    }

    #[test]
    fn a_damaged_file_list_is_an_error_not_a_panic() {
        for stored in ["", "{}", "[[1,2,3]]", "[[\"a\",\"not a hash\",1]]", "[[\"a\",\"00\",-1]]"] {
            assert!(decode_files(stored).is_err(), "{stored:?}");
        }
    }
}

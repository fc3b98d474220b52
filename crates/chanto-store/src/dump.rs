//! A table-level dump and load of chanto's metadata between backends
//! (`chanto migrate`): a fixed, parents-first list of every table with typed
//! columns, exported row by row from one consistent snapshot and imported
//! into the other engine in ONE transaction, so an interrupted load leaves
//! nothing behind. Rows stream through a bounded channel; no table is held
//! in memory whole.
//!
//! The two schemas differ only in representation (BOOLEAN vs INTEGER, BYTEA
//! vs BLOB, identity columns vs rowids) and in PostgreSQL's extra `seq`
//! columns, which stand in for SQLite's rowid order: rows are exported in
//! that order and inserted in it, so `seq` is filled in source order.
//! [`TABLES`] must name every table and column of both schemas; a test in
//! `tests/conformance.rs` compares it with both live schemas, so a new
//! migration that forgets this file fails there.

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::StoreError;

/// A column's type, as both engines store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A 64-bit integer (PostgreSQL BIGINT or INTEGER, SQLite INTEGER).
    Int,
    /// A boolean (PostgreSQL BOOLEAN, SQLite INTEGER 0/1).
    Bool,
    /// Text.
    Text,
    /// Bytes (PostgreSQL BYTEA, SQLite BLOB): sealed secrets, kept sealed.
    Bytes,
}

/// One column of a dumped table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its name in both schemas.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
}

/// One dumped table.
#[derive(Debug)]
pub struct Table {
    /// Its name in both schemas.
    pub name: &'static str,
    /// Its columns, without PostgreSQL's `seq` ordering columns.
    pub columns: &'static [Column],
    /// The column PostgreSQL generates as an identity and SQLite as a rowid
    /// (`id`, or the outbox's `seq`): copied as is, and its sequence moved
    /// past the largest value afterwards.
    pub identity: Option<&'static str>,
    /// Whether PostgreSQL has a generated `seq` column SQLite lacks (it
    /// orders rows created in the same millisecond, as SQLite's rowid does).
    pub pg_seq: bool,
    /// The order rows are exported in on SQLite (the rowid, or the key of a
    /// table without one).
    pub sqlite_order: &'static str,
    /// The order rows are exported in on PostgreSQL.
    pub pg_order: &'static str,
}

const fn c(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

use Kind::{Bool, Bytes, Int, Text};

/// Every metadata table, parents before children (so foreign keys hold while
/// rows are inserted in this order).
pub const TABLES: &[Table] = &[
    Table {
        name: "sites",
        columns: &[c("id", Int), c("name", Text), c("production_branch", Text), c("created_at", Int)],
        identity: Some("id"),
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "branches",
        columns: &[c("id", Int), c("site_id", Int), c("name", Text), c("label", Text), c("active_deploy", Text)],
        identity: Some("id"),
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "deploys",
        columns: &[
            c("id", Text),
            c("site_id", Int),
            c("branch_id", Int),
            c("state", Text),
            c("manifest", Text),
            c("file_count", Int),
            c("total_size", Int),
            c("message", Text),
            c("draft", Bool),
            c("source", Text),
            c("error", Text),
            c("created_at", Int),
            c("finished_at", Int),
            c("variants_pending", Bool),
        ],
        identity: None,
        pg_seq: true,
        sqlite_order: "rowid",
        pg_order: "seq",
    },
    Table {
        name: "deploy_file_lists",
        columns: &[c("deploy_id", Text), c("files", Text)],
        identity: None,
        pg_seq: false,
        sqlite_order: "rowid",
        pg_order: "deploy_id",
    },
    Table {
        name: "activations",
        columns: &[
            c("id", Int),
            c("branch_id", Int),
            c("deploy_id", Text),
            c("kind", Text),
            c("undone", Bool),
            c("at", Int),
        ],
        identity: Some("id"),
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "variants",
        columns: &[c("source", Text), c("encoding", Text), c("hash", Text), c("size", Int)],
        identity: None,
        pg_seq: false,
        sqlite_order: "source, encoding",
        pg_order: "source, encoding",
    },
    Table {
        name: "tokens",
        columns: &[c("id", Int), c("name", Text), c("hash", Text), c("created_at", Int)],
        identity: Some("id"),
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "access",
        columns: &[c("site_id", Int), c("scope", Text), c("policy", Text)],
        identity: None,
        pg_seq: false,
        sqlite_order: "rowid",
        pg_order: "site_id, scope",
    },
    Table {
        name: "site_proxy_origins",
        columns: &[c("site_id", Int), c("origin", Text)],
        identity: None,
        pg_seq: false,
        sqlite_order: "rowid",
        pg_order: "site_id, origin",
    },
    Table {
        name: "site_retention",
        columns: &[c("site_id", Int), c("keep_deploys", Int)],
        identity: None,
        pg_seq: false,
        sqlite_order: "site_id",
        pg_order: "site_id",
    },
    Table {
        name: "site_profile",
        columns: &[c("site_id", Int), c("profile", Text)],
        identity: None,
        pg_seq: false,
        sqlite_order: "site_id",
        pg_order: "site_id",
    },
    Table {
        name: "platform_state",
        columns: &[c("site_id", Int), c("key", Text), c("value", Text)],
        identity: None,
        pg_seq: false,
        sqlite_order: "site_id, key",
        pg_order: "site_id, key",
    },
    Table {
        name: "blob_deletions",
        columns: &[c("hash", Text), c("at", Int)],
        identity: None,
        pg_seq: false,
        sqlite_order: "hash",
        pg_order: "hash",
    },
    Table {
        name: "git_connections",
        columns: &[
            c("site_id", Int),
            c("repository", Text),
            c("credential", Bytes),
            c("webhook_secret", Bytes),
            c("settings", Text),
            c("created_at", Int),
            c("updated_at", Int),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "site_id",
        pg_order: "site_id",
    },
    Table {
        name: "builds",
        columns: &[
            c("id", Text),
            c("site_id", Int),
            c("branch", Text),
            c("git_ref", Text),
            c("commit_sha", Text),
            c("pull_request", Int),
            c("state", Text),
            c("trigger", Text),
            c("title", Text),
            c("author", Text),
            c("message", Text),
            c("deploy_id", Text),
            c("error", Text),
            c("phases", Text),
            c("retry_of", Text),
            c("untrusted", Bool),
            c("created_at", Int),
            c("started_at", Int),
            c("finished_at", Int),
            c("runner_node", Text),
            c("runner_run", Text),
            c("heartbeat_at", Int),
        ],
        identity: None,
        pg_seq: true,
        sqlite_order: "rowid",
        pg_order: "seq",
    },
    Table {
        name: "env_vars",
        columns: &[
            c("site_id", Int),
            c("branch", Text),
            c("name", Text),
            c("value", Bytes),
            c("secret", Bool),
            c("updated_at", Int),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "rowid",
        pg_order: "site_id, branch, name",
    },
    Table {
        name: "build_hooks",
        columns: &[
            c("id", Text),
            c("site_id", Int),
            c("name", Text),
            c("branch", Text),
            c("secret_hash", Text),
            c("created_at", Int),
        ],
        identity: None,
        pg_seq: true,
        sqlite_order: "rowid",
        pg_order: "seq",
    },
    Table {
        name: "webhook_deliveries",
        columns: &[
            c("id", Int),
            c("site_id", Int),
            c("source", Text),
            c("event", Text),
            c("outcome", Text),
            c("detail", Text),
            c("build_id", Text),
            c("at", Int),
        ],
        identity: Some("id"),
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "polled_heads",
        columns: &[c("site_id", Int), c("branch", Text), c("commit_sha", Text)],
        identity: None,
        pg_seq: false,
        sqlite_order: "rowid",
        pg_order: "site_id, branch",
    },
    Table {
        name: "previews",
        columns: &[c("site_id", Int), c("number", Int), c("closed_at", Int)],
        identity: None,
        pg_seq: false,
        sqlite_order: "rowid",
        pg_order: "site_id, number",
    },
    Table {
        name: "notify_subscriptions",
        columns: &[
            c("id", Text),
            c("site_id", Int),
            c("channel", Text),
            c("config", Bytes),
            c("display", Text),
            c("filter", Text),
            c("created_at", Int),
        ],
        identity: None,
        pg_seq: true,
        sqlite_order: "rowid",
        pg_order: "seq",
    },
    Table {
        name: "notify_outbox",
        columns: &[
            c("seq", Int),
            c("site_id", Int),
            c("kind", Text),
            c("branch", Text),
            c("build_id", Text),
            c("deploy_id", Text),
            c("detail", Text),
            c("at", Int),
            c("fanned", Bool),
        ],
        identity: Some("seq"),
        pg_seq: false,
        sqlite_order: "seq",
        pg_order: "seq",
    },
    Table {
        name: "notify_deliveries",
        columns: &[
            c("id", Int),
            c("subscription_id", Text),
            c("site_id", Int),
            c("action", Text),
            c("coalesce_key", Text),
            c("event_kind", Text),
            c("event_id", Text),
            c("payload", Text),
            c("state", Text),
            c("attempts", Int),
            c("next_at", Int),
            c("lease_until", Int),
            c("lease_node", Text),
            c("lease_run", Text),
            c("last_error", Text),
            c("created_at", Int),
            c("updated_at", Int),
        ],
        identity: Some("id"),
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "notify_attempts",
        columns: &[
            c("delivery_id", Int),
            c("n", Int),
            c("at", Int),
            c("duration_ms", Int),
            c("status", Int),
            c("outcome", Text),
            c("response", Text),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "rowid",
        pg_order: "delivery_id, n",
    },
    Table {
        name: "forge_comments",
        columns: &[c("subscription_id", Text), c("pull_request", Int), c("comment_id", Text)],
        identity: None,
        pg_seq: false,
        sqlite_order: "rowid",
        pg_order: "subscription_id, pull_request",
    },
    Table {
        name: "users",
        columns: &[
            c("id", Text),
            c("name", Text),
            c("role", Text),
            c("password_hash", Text),
            c("created_at", Int),
            c("last_login_at", Int),
            c("sso_subject", Text),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "api_tokens",
        columns: &[
            c("id", Text),
            c("user_id", Text),
            c("name", Text),
            c("scope", Text),
            c("hash", Text),
            c("created_at", Int),
            c("expires_at", Int),
            c("last_used_at", Int),
            c("revoked_at", Int),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "sessions",
        columns: &[
            c("id_hash", Text),
            c("user_id", Text),
            c("csrf", Text),
            c("created_at", Int),
            c("last_seen_at", Int),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "id_hash",
        pg_order: "id_hash",
    },
    Table {
        name: "invites",
        columns: &[c("token_hash", Text), c("user_id", Text), c("created_at", Int), c("expires_at", Int)],
        identity: None,
        pg_seq: false,
        sqlite_order: "token_hash",
        pg_order: "token_hash",
    },
    Table {
        name: "audit_log",
        columns: &[
            c("id", Int),
            c("at", Int),
            c("actor", Text),
            c("via", Text),
            c("source", Text),
            c("action", Text),
            c("target", Text),
            c("status", Int),
        ],
        identity: Some("id"),
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "node_tokens",
        columns: &[
            c("id", Text),
            c("name", Text),
            c("hash", Text),
            c("created_at", Int),
            c("revoked_at", Int),
            c("last_used_at", Int),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "nodes",
        columns: &[
            c("node_id", Text),
            c("name", Text),
            c("zone", Text),
            c("role", Text),
            c("routing_version", Int),
            c("snapshot_age_ms", Int),
            c("ready", Bool),
            c("draining", Bool),
            c("refused_version", Int),
            c("refused_error", Text),
            c("software", Text),
            c("edge_addr", Text),
            c("last_heartbeat", Int),
            c("first_seen", Int),
            c("traffic", Text),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "node_id",
        pg_order: "node_id",
    },
    Table {
        name: "certificates",
        columns: &[
            c("id", Text),
            c("source", Text),
            c("names", Text),
            c("chain_pem", Text),
            c("key_sealed", Bytes),
            c("not_before", Int),
            c("not_after", Int),
            c("issuer", Text),
            c("created_at", Int),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "id",
        pg_order: "id",
    },
    Table {
        name: "domains",
        columns: &[
            c("name", Text),
            c("site_id", Int),
            c("branch", Text),
            c("is_primary", Bool),
            c("twin_of", Text),
            c("state", Text),
            c("reason", Text),
            c("hint", Text),
            c("verify_token", Text),
            c("verified_at", Int),
            c("verified_by", Text),
            c("cert_id", Text),
            c("created_at", Int),
            c("challenge_token", Text),
            c("challenge_body", Text),
            c("attempts", Int),
            c("next_attempt_at", Int),
            c("challenge_alpn", Text),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "name",
        pg_order: "name",
    },
    Table {
        name: "base_certificates",
        columns: &[
            c("pattern", Text),
            c("cert_id", Text),
            c("attempts", Int),
            c("next_attempt_at", Int),
            c("reason", Text),
            c("updated_at", Int),
            c("challenge_token", Text),
            c("challenge_body", Text),
            c("challenge_alpn", Text),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "pattern",
        pg_order: "pattern",
    },
    Table {
        name: "site_tls",
        columns: &[
            c("site_id", Int),
            c("https_redirect", Bool),
            c("hsts_max_age", Int),
            c("hsts_include_subdomains", Bool),
            c("hsts_preload", Bool),
        ],
        identity: None,
        pg_seq: false,
        sqlite_order: "site_id",
        pg_order: "site_id",
    },
    Table {
        name: "acme_accounts",
        columns: &[c("directory", Text), c("credentials_sealed", Bytes), c("created_at", Int)],
        identity: None,
        pg_seq: false,
        sqlite_order: "directory",
        pg_order: "directory",
    },
    Table {
        name: "leases",
        columns: &[c("name", Text), c("owner", Text), c("until_at", Int)],
        identity: None,
        pg_seq: false,
        sqlite_order: "name",
        pg_order: "name",
    },
];

/// The table named `name`, if it is dumped.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// A typed column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// What flows from an export to an import, in order: each table's header,
/// then its rows; [`DumpItem::End`] last, after which (and only after which)
/// the import commits.
#[derive(Debug)]
pub enum DumpItem {
    /// The rows that follow belong to this table.
    Table(&'static Table),
    /// One row, its values in the table's column order.
    Row(Vec<Value>),
    /// The export finished: every table was sent whole.
    End,
}

/// Row counts per table, in [`TABLES`] order.
pub type Counts = Vec<(&'static str, u64)>;

/// What an import may do to a target that already holds rows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Empty chanto's tables first (in the same transaction) instead of
    /// refusing a target that holds rows.
    pub replace: bool,
}

/// How many items may wait between export and import: enough to keep both
/// busy, few enough that memory stays small whatever the table sizes.
pub const CHANNEL_DEPTH: usize = 1024;

/// A metadata backend that can be dumped and loaded table by table.
#[async_trait]
pub trait Dump: Send + Sync {
    /// Where the metadata lives, for messages (a password is never shown).
    fn describe(&self) -> String;

    /// Sends every table's rows to `out` from one consistent snapshot, then
    /// [`DumpItem::End`]; returns the row counts of that snapshot.
    async fn export(&self, out: mpsc::Sender<DumpItem>) -> Result<Counts, StoreError>;

    /// Loads what `input` sends in one transaction, committed only when
    /// [`DumpItem::End`] arrives. A target holding any row is refused unless
    /// [`ImportOptions::replace`]. Returns the rows inserted per table.
    async fn import(&self, input: mpsc::Receiver<DumpItem>, options: ImportOptions) -> Result<Counts, StoreError>;

    /// The row count of every table.
    async fn counts(&self) -> Result<Counts, StoreError>;
}

/// What [`copy`] did.
#[derive(Debug)]
pub struct CopyReport {
    /// Rows per table in the source's snapshot.
    pub source: Counts,
    /// Rows per table in the target after the commit.
    pub target: Counts,
}

impl CopyReport {
    /// The tables whose counts differ: (table, source, target).
    pub fn mismatches(&self) -> Vec<(&'static str, u64, u64)> {
        self.source
            .iter()
            .map(|(t, n)| (*t, *n, self.target.iter().find(|(u, _)| u == t).map_or(0, |(_, m)| *m)))
            .filter(|(_, a, b)| a != b)
            .collect()
    }
}

/// Copies all metadata from `from` into `to`: the export and the import run
/// side by side through a bounded channel; the target's counts are read back
/// after the commit. An export that fails leaves the target untouched.
pub async fn copy(from: &dyn Dump, to: &dyn Dump, options: ImportOptions) -> Result<CopyReport, StoreError> {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let (exported, imported) = tokio::join!(from.export(tx), to.import(rx, options));
    // The export's error explains an import that saw the stream end early.
    let source = exported?;
    let inserted = imported?;
    let target = to.counts().await?;
    // What the import inserted must be what the export counted: a table
    // missing rows would otherwise only show as a target-count difference.
    for ((t, sent), (_, got)) in source.iter().zip(&inserted) {
        if sent != got {
            return Err(StoreError::Db(format!(
                "table {t}: the source snapshot has {sent} rows but {got} were loaded; nothing should differ, report this"
            )));
        }
    }
    Ok(CopyReport { source, target })
}

/// The error an import gives when the export stopped before [`DumpItem::End`].
pub(crate) fn cut_short() -> StoreError {
    StoreError::Db("the metadata export stopped before the end; nothing was written to the target".into())
}

/// The error an import gives for a target that already holds rows.
pub(crate) fn not_empty(target: &str, tables: &[(&'static str, u64)]) -> StoreError {
    let list: Vec<String> = tables.iter().map(|(t, n)| format!("{t} ({n})")).collect();
    StoreError::Conflict(format!(
        "the target metadata store {target} is not empty: it holds rows in {}; migrate into an empty database, or pass --replace-target to delete chanto's tables there first",
        list.join(", ")
    ))
}

// ---------------------------------------------------------------------------
// SQLite

mod sqlite_side {
    use rusqlite::types::ValueRef;

    use super::*;
    use crate::SqliteMeta;

    fn read(t: &Table, r: &rusqlite::Row<'_>) -> Result<Vec<Value>, StoreError> {
        let mut out = Vec::with_capacity(t.columns.len());
        for (i, col) in t.columns.iter().enumerate() {
            let v = r.get_ref(i)?;
            let wrong = |what: &str| {
                StoreError::Db(format!("table {}, column {}: expected {:?}, found {what}", t.name, col.name, col.kind))
            };
            out.push(match (col.kind, v) {
                (_, ValueRef::Null) => Value::Null,
                (Kind::Int, ValueRef::Integer(n)) => Value::Int(n),
                (Kind::Bool, ValueRef::Integer(n)) => Value::Bool(n != 0),
                (Kind::Text, ValueRef::Text(s)) => {
                    Value::Text(String::from_utf8(s.to_vec()).map_err(|_| wrong("text that is not UTF-8"))?)
                }
                (Kind::Bytes, ValueRef::Blob(b)) => Value::Bytes(b.to_vec()),
                // A BLOB column written as text by an old version: the bytes are the same.
                (Kind::Bytes, ValueRef::Text(s)) => Value::Bytes(s.to_vec()),
                (_, ValueRef::Integer(_)) => return Err(wrong("an integer")),
                (_, ValueRef::Real(_)) => return Err(wrong("a real number")),
                (_, ValueRef::Text(_)) => return Err(wrong("text")),
                (_, ValueRef::Blob(_)) => return Err(wrong("bytes")),
            });
        }
        Ok(out)
    }

    fn to_sql(v: &Value) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match v {
            Value::Null => V::Null,
            Value::Int(n) => V::Integer(*n),
            Value::Bool(b) => V::Integer(*b as i64),
            Value::Text(s) => V::Text(s.clone()),
            Value::Bytes(b) => V::Blob(b.clone()),
        }
    }

    fn counts_in(c: &rusqlite::Connection) -> Result<Counts, StoreError> {
        let mut out = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            let n: i64 = c.query_row(&format!("SELECT count(*) FROM {}", t.name), [], |r| r.get(0))?;
            out.push((t.name, n as u64));
        }
        Ok(out)
    }

    fn gone() -> StoreError {
        StoreError::Db("the metadata import stopped; the export was abandoned".into())
    }

    #[async_trait]
    impl Dump for SqliteMeta {
        fn describe(&self) -> String {
            "SQLite".into()
        }

        async fn export(&self, out: mpsc::Sender<DumpItem>) -> Result<Counts, StoreError> {
            self.call(move |c| {
                // One read transaction: every table from the same snapshot.
                let tx = c.transaction()?;
                let counts = counts_in(&tx)?;
                for t in TABLES {
                    out.blocking_send(DumpItem::Table(t)).map_err(|_| gone())?;
                    let cols: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
                    let sql = format!("SELECT {} FROM {} ORDER BY {}", cols.join(", "), t.name, t.sqlite_order);
                    let mut st = tx.prepare(&sql)?;
                    let mut rows = st.query([])?;
                    while let Some(r) = rows.next()? {
                        out.blocking_send(DumpItem::Row(read(t, r)?)).map_err(|_| gone())?;
                    }
                }
                out.blocking_send(DumpItem::End).map_err(|_| gone())?;
                Ok(counts)
            })
            .await
        }

        async fn import(
            &self,
            mut input: mpsc::Receiver<DumpItem>,
            options: ImportOptions,
        ) -> Result<Counts, StoreError> {
            self.call(move |c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let held: Vec<(&'static str, u64)> = counts_in(&tx)?.into_iter().filter(|(_, n)| *n > 0).collect();
                if !held.is_empty() {
                    if !options.replace {
                        return Err(not_empty("(SQLite)", &held));
                    }
                    for t in TABLES.iter().rev() {
                        tx.execute(&format!("DELETE FROM {}", t.name), [])?;
                    }
                }
                let mut inserted: Counts = TABLES.iter().map(|t| (t.name, 0)).collect();
                let mut current: Option<(usize, &'static Table)> = None;
                let mut statement = String::new();
                loop {
                    match input.blocking_recv() {
                        None => return Err(cut_short()),
                        Some(DumpItem::Table(t)) => {
                            let i = TABLES.iter().position(|u| u.name == t.name).ok_or_else(cut_short)?;
                            let cols: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
                            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
                            statement =
                                format!("INSERT INTO {} ({}) VALUES ({})", t.name, cols.join(", "), marks.join(", "));
                            current = Some((i, t));
                        }
                        Some(DumpItem::Row(values)) => {
                            let (i, t) = current.ok_or_else(cut_short)?;
                            let mut st = tx.prepare_cached(&statement)?;
                            let values: Vec<rusqlite::types::Value> = values.iter().map(to_sql).collect();
                            st.execute(rusqlite::params_from_iter(values))
                                .map_err(|e| StoreError::Db(format!("loading table {}: {e}", t.name)))?;
                            inserted[i].1 += 1;
                        }
                        Some(DumpItem::End) => break,
                    }
                }
                tx.commit()?;
                Ok(inserted)
            })
            .await
        }

        async fn counts(&self) -> Result<Counts, StoreError> {
            self.call(|c| counts_in(c)).await
        }
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL

mod postgres_side {
    use bytes::BytesMut;
    use futures_util::TryStreamExt;
    use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

    use super::*;
    use crate::PostgresMeta;
    use crate::postgres::Tx;

    /// Serialises one import into a database at a time ("chanto migrate").
    const IMPORT_LOCK: i64 = 0x6d69_6772_6174;

    /// Rows sent before their answers are awaited: the driver pipelines
    /// them, so a load is not one round trip per row.
    const PIPELINE: usize = 256;

    impl ToSql for Value {
        fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
            match (self, ty) {
                (Value::Null, _) => Ok(IsNull::Yes),
                (Value::Int(n), t) if *t == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                (Value::Int(n), t) if *t == Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                (Value::Int(n), _) => n.to_sql(ty, out),
                (Value::Bool(b), _) => b.to_sql(ty, out),
                (Value::Text(s), _) => s.to_sql(ty, out),
                (Value::Bytes(b), _) => b.to_sql(ty, out),
            }
        }

        fn accepts(ty: &Type) -> bool {
            matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8 | Type::BOOL | Type::TEXT | Type::BYTEA)
        }

        to_sql_checked!();
    }

    fn read(t: &Table, r: &tokio_postgres::Row) -> Result<Vec<Value>, StoreError> {
        let mut out = Vec::with_capacity(t.columns.len());
        for (i, col) in t.columns.iter().enumerate() {
            let ty = r.columns()[i].type_().clone();
            out.push(match col.kind {
                Kind::Int if ty == Type::INT4 => {
                    r.try_get::<_, Option<i32>>(i)?.map_or(Value::Null, |n| Value::Int(n as i64))
                }
                Kind::Int if ty == Type::INT2 => {
                    r.try_get::<_, Option<i16>>(i)?.map_or(Value::Null, |n| Value::Int(n as i64))
                }
                Kind::Int => r.try_get::<_, Option<i64>>(i)?.map_or(Value::Null, Value::Int),
                Kind::Bool => r.try_get::<_, Option<bool>>(i)?.map_or(Value::Null, Value::Bool),
                Kind::Text => r.try_get::<_, Option<String>>(i)?.map_or(Value::Null, Value::Text),
                Kind::Bytes => r.try_get::<_, Option<Vec<u8>>>(i)?.map_or(Value::Null, Value::Bytes),
            });
        }
        Ok(out)
    }

    async fn counts_in(tx: &Tx<'_>) -> Result<Counts, StoreError> {
        let mut out = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {}", t.name), &[]).await?.try_get(0)?;
            out.push((t.name, n as u64));
        }
        Ok(out)
    }

    fn gone() -> StoreError {
        StoreError::Db("the metadata import stopped; the export was abandoned".into())
    }

    /// Sends the pipelined inserts and waits for all their answers.
    async fn flush(
        tx: &Tx<'_>,
        st: &tokio_postgres::Statement,
        t: &Table,
        rows: &mut Vec<Vec<Value>>,
    ) -> Result<(), StoreError> {
        let batch = std::mem::take(rows);
        let sent = batch.iter().map(|values| {
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            async move { tx.execute(st, &params).await }
        });
        for r in futures_util::future::join_all(sent).await {
            r.map_err(|e| match StoreError::from(e) {
                StoreError::Db(m) | StoreError::Conflict(m) => StoreError::Db(format!("loading table {}: {m}", t.name)),
                other => other,
            })?;
        }
        Ok(())
    }

    #[async_trait]
    impl Dump for PostgresMeta {
        fn describe(&self) -> String {
            format!("PostgreSQL at {}", self.url())
        }

        async fn export(&self, out: mpsc::Sender<DumpItem>) -> Result<Counts, StoreError> {
            let mut c = self.conn().await?;
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let counts = counts_in(&tx).await?;
            for t in TABLES {
                out.send(DumpItem::Table(t)).await.map_err(|_| gone())?;
                let cols: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
                let sql = format!("SELECT {} FROM {} ORDER BY {}", cols.join(", "), t.name, t.pg_order);
                let rows = tx.query_raw(&sql, std::iter::empty::<&(dyn ToSql + Sync)>()).await?;
                let mut rows = std::pin::pin!(rows);
                while let Some(r) = rows.try_next().await? {
                    out.send(DumpItem::Row(read(t, &r)?)).await.map_err(|_| gone())?;
                }
            }
            out.send(DumpItem::End).await.map_err(|_| gone())?;
            tx.commit().await?;
            Ok(counts)
        }

        async fn import(
            &self,
            mut input: mpsc::Receiver<DumpItem>,
            options: ImportOptions,
        ) -> Result<Counts, StoreError> {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&IMPORT_LOCK]).await?;
            let held: Vec<(&'static str, u64)> = counts_in(&tx).await?.into_iter().filter(|(_, n)| *n > 0).collect();
            if !held.is_empty() {
                if !options.replace {
                    return Err(not_empty(self.url(), &held));
                }
                // No RESTART IDENTITY: generated `seq` values keep growing,
                // and the routing version is never lowered (a node that
                // saw a higher one would ignore the next tables).
                let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
                tx.batch_execute(&format!("TRUNCATE {}", names.join(", "))).await?;
            }
            let mut inserted: Counts = TABLES.iter().map(|t| (t.name, 0)).collect();
            let mut current: Option<(usize, &'static Table, tokio_postgres::Statement)> = None;
            let mut pending: Vec<Vec<Value>> = Vec::with_capacity(PIPELINE);
            loop {
                let item = input.recv().await;
                if !matches!(item, Some(DumpItem::Row(_)))
                    && let Some((_, t, st)) = &current
                {
                    flush(&tx, st, t, &mut pending).await?;
                }
                match item {
                    None => return Err(cut_short()),
                    Some(DumpItem::Table(t)) => {
                        let i = TABLES.iter().position(|u| u.name == t.name).ok_or_else(cut_short)?;
                        let cols: Vec<&str> = t.columns.iter().map(|c| c.name).collect();
                        let marks: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
                        let overriding = if t.identity.is_some() { " OVERRIDING SYSTEM VALUE" } else { "" };
                        let sql = format!(
                            "INSERT INTO {} ({}){overriding} VALUES ({})",
                            t.name,
                            cols.join(", "),
                            marks.join(", ")
                        );
                        current = Some((i, t, tx.prepare(&sql).await?));
                    }
                    Some(DumpItem::Row(values)) => {
                        let Some((i, t, st)) = &current else { return Err(cut_short()) };
                        pending.push(values);
                        inserted[*i].1 += 1;
                        if pending.len() >= PIPELINE {
                            flush(&tx, st, t, &mut pending).await?;
                        }
                    }
                    Some(DumpItem::End) => break,
                }
            }
            // Identities continue past the largest copied value, so the next
            // site, activation or delivery gets a fresh id.
            for t in TABLES {
                if let Some(col) = t.identity {
                    let sql = format!(
                        "SELECT setval(pg_get_serial_sequence('{t}', '{col}'), m, true) FROM (SELECT max({col}) AS m FROM {t}) x WHERE m IS NOT NULL",
                        t = t.name
                    );
                    tx.query(&sql, &[]).await?;
                }
            }
            tx.commit().await?;
            Ok(inserted)
        }

        async fn counts(&self) -> Result<Counts, StoreError> {
            let mut c = self.conn().await?;
            let tx = c.transaction().await?;
            let counts = counts_in(&tx).await?;
            tx.commit().await?;
            Ok(counts)
        }
    }
}

//! Consistent copies of the SQLite metadata for `chanto backup`: a snapshot
//! taken while a server writes (`VACUUM INTO`, one read transaction, no lock
//! a server would wait on), and the read-only checks a backup is verified
//! with (integrity, schema version, row counts), none of which writes to the
//! file it checks.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

/// The SQLite schema version (migrations) this build of chanto knows.
pub const SQLITE_SCHEMA_VERSION: u32 = crate::sqlite::MIGRATION_COUNT as u32;

/// Writes a consistent copy of the live database `live` to `out` (which must
/// not exist) with `VACUUM INTO`: it reads under one read transaction, so
/// writers go on (WAL mode) and the copy is the database at one instant. The
/// copy is switched to rollback-journal mode, so reading it later leaves no
/// `-wal`/`-shm` files beside it.
pub fn sqlite_snapshot(live: &Path, out: &Path) -> Result<(), StoreError> {
    let db = |what: &str, e: rusqlite::Error| StoreError::Db(format!("{what}: {e}"));
    let conn = Connection::open_with_flags(live, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| db(&format!("opening {}", live.display()), e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| db("setting a busy timeout", e))?;
    let target = out.to_str().ok_or_else(|| StoreError::Db(format!("{} is not UTF-8", out.display())))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| db(&format!("snapshotting {} into {}", live.display(), out.display()), e))?;
    drop(conn);
    let copy = Connection::open(out).map_err(|e| db(&format!("opening {}", out.display()), e))?;
    copy.pragma_update(None, "journal_mode", "DELETE").map_err(|e| db(&format!("{}", out.display()), e))?;
    Ok(())
}

/// A snapshot opened for checks: read-only, so checking never changes it.
pub struct SnapshotFile {
    conn: Connection,
}

impl SnapshotFile {
    /// Opens `path` read-only. A file that is not a SQLite database fails
    /// here or at the first query, with the path named.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| StoreError::Db(format!("opening {}: {e}", path.display())))?;
        // A hostile file must not be able to make a check expensive or reach
        // out of SQLite: no extensions, defensive mode.
        let _ = conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true);
        let _ = conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false);
        Ok(Self { conn })
    }

    /// `PRAGMA integrity_check`: empty when the file is sound, else SQLite's
    /// findings (at most 20).
    pub fn integrity_problems(&self) -> Result<Vec<String>, StoreError> {
        let mut st = self.conn.prepare("PRAGMA integrity_check(20)")?;
        let rows: Vec<String> = st.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
        Ok(if rows == ["ok"] { Vec::new() } else { rows })
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        u32::try_from(v).map_err(|_| StoreError::Db(format!("schema version {v} is not a version")))
    }

    /// Rows per table (SQLite's own tables left out), by table name.
    pub fn table_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        let names: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut out = BTreeMap::new();
        for name in names {
            // The name comes from the file: quoted as an identifier, never spliced raw.
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let n: i64 = self.conn.query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| r.get(0))?;
            out.insert(name, n as u64);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetaStore;

    #[tokio::test]
    async fn a_snapshot_of_a_live_database_is_whole_and_checks_clean() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("meta.db");
        let meta = crate::SqliteMeta::open(&live).unwrap();
        meta.create_site(&"docs".parse().unwrap(), &"main".parse().unwrap(), 1).await.unwrap();
        let out = dir.path().join("snap.db");
        sqlite_snapshot(&live, &out).unwrap();
        let snap = SnapshotFile::open(&out).unwrap();
        assert!(snap.integrity_problems().unwrap().is_empty());
        assert_eq!(snap.schema_version().unwrap(), SQLITE_SCHEMA_VERSION);
        assert_eq!(snap.table_counts().unwrap()["sites"], 1);
        assert!(!dir.path().join("snap.db-wal").exists(), "the snapshot is not in WAL mode");
        // Refuses to overwrite.
        assert!(sqlite_snapshot(&live, &out).is_err());
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.db");
        std::fs::write(&p, vec![0x41u8; 10_000]).unwrap();
        let r = SnapshotFile::open(&p).and_then(|s| s.integrity_problems());
        assert!(r.is_err(), "{:?}", r.map(|_| ()));
    }
}

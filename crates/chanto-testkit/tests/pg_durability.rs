//! The throwaway PostgreSQL runs with the durability asked for: the tests'
//! fast settings, or (for bench/deploy's comparison with SQLite) fsync on.

use chanto_testkit::pg::{Durability, PgServer};

fn settings(server: &PgServer) -> String {
    server.psql(
        "postgres",
        "SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings \
         WHERE name IN ('fsync', 'full_page_writes', 'synchronous_commit')",
    )
}

#[test]
fn durable_server_fsyncs_like_sqlite_wal_and_test_server_does_not() {
    let durable = PgServer::start_with(Durability::LikeSqliteWal);
    assert_eq!(settings(&durable).trim(), "fsync=on full_page_writes=on synchronous_commit=off");
    drop(durable);
    let fast = PgServer::start();
    assert_eq!(settings(&fast).trim(), "fsync=off full_page_writes=off synchronous_commit=off");
}

//! `chanto-testservers`: the test servers of chanto-testkit outside `cargo
//! test`, for the benchmarks (bench/deploy, bench/serve) and for trying
//! `chanto serve --meta postgres://… --blobs s3://…` by hand. A dev tool: not
//! part of the .deb.
//!
//! ```text
//! chanto-testservers pg             # a throwaway PostgreSQL on a loopback port
//! chanto-testservers pg --durable   # the same, as durable as chanto's SQLite
//! chanto-testservers s3             # an s3s-fs server on a loopback port
//! ```
//!
//! Each prints shell-sourceable `NAME=value` lines, then a line `READY`, and
//! runs until its standard input closes or it gets SIGTERM/SIGINT; then it
//! stops the server and removes its files. PostgreSQL runs under pg.rs's
//! watchdog, so it stops even if this process is killed with SIGKILL.

use std::io::Write;

use chanto_testkit::{pg, s3};

const USAGE: &str = "usage: chanto-testservers pg [--durable] | s3

  pg   start a throwaway PostgreSQL (initdb in a temp dir, fsync=off, trust
       authentication, loopback only) with an empty database `chanto`; with
       --durable, fsync=on, full_page_writes=on and synchronous_commit=off:
       as durable as chanto's SQLite (WAL, synchronous=NORMAL), for benchmarks
       that compare the two; prints
       CHANTO_TEST_PG_URL (postgres://postgres@127.0.0.1:PORT/chanto),
       CHANTO_TEST_PG_ADMIN_URL (the `postgres` database, for CREATE DATABASE)
       and CHANTO_TEST_PG_BIN (the directory of psql/pg_dump)
  s3   start an s3s-fs server on a temp directory with an empty bucket `chanto`;
       prints CHANTO_TEST_S3_ENDPOINT, CHANTO_TEST_S3_BUCKET, AWS_ACCESS_KEY_ID,
       AWS_SECRET_ACCESS_KEY and AWS_REGION

Both print NAME=value lines (shell-quoted), then READY, and run until standard
input closes or SIGTERM/SIGINT arrives; then the server stops and its files go.
Typical use: coproc SERVERS { chanto-testservers pg; }";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let durable = matches!(args.as_slice(), [a, d] if a == "pg" && d == "--durable");
    let which = match args.as_slice() {
        [a] if a == "pg" || a == "s3" => a.clone(),
        [a, _] if durable => a.clone(),
        [a] if a == "-h" || a == "--help" => {
            println!("{USAGE}");
            return;
        }
        _ => {
            eprintln!("chanto-testservers: expected `pg`, `pg --durable` or `s3`, got {:?}\n\n{USAGE}", args.join(" "));
            std::process::exit(2);
        }
    };
    // Held until the end of main: dropping them stops the servers.
    let mut _pg = None;
    let mut _s3 = None;
    let lines: Vec<(&str, String)> = if which == "pg" {
        let server =
            pg::PgServer::start_with(if durable { pg::Durability::LikeSqliteWal } else { pg::Durability::Tests });
        server.psql("postgres", "CREATE DATABASE chanto");
        let lines = vec![
            ("CHANTO_TEST_PG_URL", server.url("chanto")),
            ("CHANTO_TEST_PG_ADMIN_URL", server.url("postgres")),
            ("CHANTO_TEST_PG_BIN", server.bin_dir().to_string_lossy().into_owned()),
        ];
        _pg = Some(server);
        lines
    } else {
        let server = s3::S3Server::start();
        std::fs::create_dir(server.root().join("chanto")).expect("creating the bucket directory");
        let lines = vec![
            ("CHANTO_TEST_S3_ENDPOINT", server.endpoint()),
            ("CHANTO_TEST_S3_BUCKET", "chanto".to_owned()),
            ("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ];
        _s3 = Some(server);
        lines
    };
    let mut out = std::io::stdout().lock();
    for (name, value) in lines {
        let _ = writeln!(out, "{name}={}", sh_quote(&value));
    }
    let _ = writeln!(out, "READY");
    let _ = out.flush();
    drop(out);
    wait_for_the_end();
    // _pg / _s3 drop here: PostgreSQL gets a fast shutdown, s3s-fs stops,
    // and both temp directories are removed.
}

/// Single-quotes `s` for `sh` (the values are safe today; quoting keeps
/// `source`/`eval` safe whatever a path contains).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Returns when standard input reaches its end (the caller went away) or a
/// SIGTERM/SIGINT arrives.
fn wait_for_the_end() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
        // A blocking thread reads stdin until EOF (tokio's stdin is one too).
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n) = std::io::Read::read(&mut stdin, &mut sink) {
                if n == 0 {
                    break;
                }
            }
        });
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = stdin_closed => {}
        }
    });
    // The stdin thread may still be blocked in read: do not wait for it.
    rt.shutdown_background();
}

//! `chanto migrate`: the real binary moves an embedded install (SQLite +
//! local blobs) onto a real PostgreSQL and an in-process s3s-fs; `chanto
//! serve` on the new backends with the same data directory then serves the
//! same bytes and listings. Refusals: a server still running, a missing or
//! foreign directory, a non-empty target, a bad URL; a password is never shown.

mod util;

use std::process::{Command, Stdio};

use chanto_testkit::pg;
use chanto_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use util::{BIN, Server, write_tree};

const ENV: [(&str, &str); 3] =
    [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("AWS_REGION", "us-east-1")];

fn migrate(args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("migrate").args(args).envs(ENV).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn migrate_moves_an_embedded_install_to_postgres_and_s3_and_serves_the_same() {
    let pg = pg::shared();
    let meta_url = pg.create_database("migrate");
    let s3 = S3Server::shared();
    let bucket = s3.create_bucket();
    let blobs_url = format!("s3://{bucket}/moved");
    let endpoint = s3.endpoint();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let site = tmp.path().join("site");

    let server = Server::start(&data, &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    server.cli(&["sites", "create", "blog"]).ok();
    write_tree(&site, &[("index.html", "<h1>v1</h1>"), ("css/app.css", "body{}")]);
    let d1 = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "first", "--json"]).ok().json();
    let id1 = d1["deploy"]["id"].as_str().unwrap().to_owned();
    write_tree(&site, &[("index.html", "<h1>v2</h1>")]);
    let d2 = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
    let id2 = d2["deploy"]["id"].as_str().unwrap().to_owned();
    server.cli(&["rollback", "--site", "docs"]).ok();
    write_tree(&site, &[("index.html", "<h1>blog</h1>")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "blog", "--branch", "next"]).ok();
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "blog"]).ok();
    server.cli(&["access", "set", "--site", "blog", "--user", "reader", "--password-stdin"]).stdin("pw-123456\n").ok();
    server.cli(&["env", "set", "--site", "docs", "GREETING", "hello"]).ok();
    server.cli(&["env", "set", "--site", "docs", "--secret", "API_TOKEN"]).stdin("s3cr3t-value\n").ok();

    let urls = [
        ("docs.localhost", "/"),
        ("docs.localhost", "/css/app.css"),
        (&*format!("{id1}--docs.localhost"), "/"),
        (&*format!("{id2}--docs.localhost"), "/"),
        ("next--blog.localhost", "/"),
        ("blog.localhost", "/"),
    ]
    .map(|(h, p)| (h.to_owned(), p.to_owned()));
    let before: Vec<(u16, Vec<u8>)> = urls
        .iter()
        .map(|(h, p)| {
            let r = server.get(h, p);
            (r.status, r.body)
        })
        .collect();
    assert_eq!(before[0].1, b"<h1>v1</h1>", "the rollback is live");
    assert_eq!(before[5].0, 401, "the blog is password-protected");
    // The listings, with the edge's port (which differs between the two
    // servers) written as PORT.
    let listings = |s: &Server| {
        [
            s.cli(&["sites", "list", "--json"]).ok().stdout(),
            s.cli(&["deploys", "list", "--site", "docs", "--json"]).ok().stdout(),
            s.cli(&["deploys", "list", "--site", "blog", "--json"]).ok().stdout(),
            s.cli(&["access", "list", "--site", "blog", "--json"]).ok().stdout(),
            s.cli(&["env", "list", "--site", "docs", "--json"]).ok().stdout(),
        ]
        .map(|text| without_ports(&text))
    };
    let lists_before = listings(&server);
    let token = server.token.clone();

    // Still being served: refused, nothing copied.
    let out = migrate(&[
        "--from",
        data.to_str().unwrap(),
        "--to-meta",
        &meta_url,
        "--to-blobs",
        &blobs_url,
        "--s3-endpoint",
        &endpoint,
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("stop `chanto serve` on"), "{}", text(&out.stderr));
    server.terminate();

    let out = migrate(&[
        "--from",
        data.to_str().unwrap(),
        "--to-meta",
        &meta_url,
        "--to-blobs",
        &blobs_url,
        "--s3-endpoint",
        &endpoint,
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("deploys") && stdout.contains("migrated"), "{stdout}");
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    assert!(stderr.contains("blobs:"), "{stderr}");

    // A second run into the now non-empty target is refused, naming it.
    let out = migrate(&[
        "--from",
        data.to_str().unwrap(),
        "--to-meta",
        &meta_url,
        "--to-blobs",
        &blobs_url,
        "--s3-endpoint",
        &endpoint,
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is not empty") && err.contains("--replace-target") && err.contains("sites"), "{err}");
    // --replace-target reloads it; every blob is already there.
    let out = migrate(&[
        "--from",
        data.to_str().unwrap(),
        "--to-meta",
        &meta_url,
        "--to-blobs",
        &blobs_url,
        "--s3-endpoint",
        &endpoint,
        "--replace-target",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(" 0 copied"), "{}", text(&out.stdout));

    // The embedded files move aside: the new server can only read the new backends.
    std::fs::rename(data.join("blobs"), tmp.path().join("old-blobs")).unwrap();
    for f in ["meta.db", "meta.db-wal", "meta.db-shm"] {
        let _ = std::fs::rename(data.join(f), tmp.path().join(f));
    }
    let moved = Server::start_cmd_env(
        "serve",
        &data,
        &["--meta", &meta_url, "--blobs", &blobs_url, "--s3-endpoint", &endpoint],
        &ENV,
    );
    assert!(!data.join("meta.db").exists());
    for ((h, p), (status, body)) in urls.iter().zip(&before) {
        let r = moved.get(h, p);
        assert_eq!((r.status, &r.body), (*status, body), "{h}{p}");
    }
    let lists_after = listings(&moved);
    assert_eq!(lists_before, lists_after);
    // The old admin token still works (the moved server made no new one).
    assert_eq!(moved.token, token);
    assert!(lists_after[4].contains("API_TOKEN"));
}

#[test]
fn migrate_refuses_bad_input_and_never_prints_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let out = migrate(&[
        "--from",
        missing.to_str().unwrap(),
        "--to-meta",
        "postgres://u@127.0.0.1:1/db",
        "--to-blobs",
        "s3://b/p",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no such directory") && text(&out.stderr).contains("nope"),
        "{}",
        text(&out.stderr)
    );
    assert!(!missing.exists(), "a missing --from is not created");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = migrate(&[
        "--from",
        empty.to_str().unwrap(),
        "--to-meta",
        "postgres://u@127.0.0.1:1/db",
        "--to-blobs",
        "s3://b/p",
    ]);
    assert!(text(&out.stderr).contains("not a chanto data directory"), "{}", text(&out.stderr));

    // A real (stopped) data dir, then bad target URLs.
    let data = tmp.path().join("data");
    Server::start(&data, &[]).terminate();
    let d = data.to_str().unwrap();
    let out = migrate(&["--from", d, "--to-meta", "mysql://root:topsecret@db/x", "--to-blobs", "s3://b/p"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("--to-meta") && !err.contains("topsecret"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = migrate(&[
        "--from",
        d,
        "--to-meta",
        &format!("postgres://u:hunter2secret@127.0.0.1:{port}/db"),
        "--to-blobs",
        "s3://b/p",
    ]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("postgres://u:***@127.0.0.1:{port}/db")), "{err}");
    assert!(!err.contains("hunter2secret") && !text(&out.stdout).contains("hunter2secret"), "{err}");

    // A wrong password against the real server: refused, not shown.
    let pg = pg::shared();
    let url = pg.create_database("wrongpw");
    let with_pw = url.replacen("://", "://nosuchuser:wrong-pass-xyz@", 1);
    let with_pw = match url.find('@') {
        Some(_) => url.replacen("@", ":wrong-pass-xyz@", 1),
        None => with_pw,
    };
    let out = migrate(&["--from", d, "--to-meta", &with_pw, "--to-blobs", "ftp://x"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("wrong-pass-xyz"), "{err}");
    let out = migrate(&["--from", d, "--to-meta", &url, "--to-blobs", "ftp://x"]);
    let err = text(&out.stderr);
    assert!(err.contains("--to-blobs") && err.contains("s3://BUCKET/PREFIX"), "{err}");
}

/// `text` with every `localhost:NNNN` written `localhost:PORT`.
fn without_ports(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("localhost:") {
        out.push_str(&rest[..i + "localhost:".len()]);
        rest = rest[i + "localhost:".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push_str("PORT");
    }
    out.push_str(rest);
    out
}

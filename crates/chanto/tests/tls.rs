//! The real `chanto serve` over TLS to its shared stores: PostgreSQL with
//! `ssl = on` (`chanto_testkit::pg::shared_tls`) and s3s-fs behind rustls,
//! each with a certificate of a throwaway CA. With the CA trusted
//! (`sslrootcert=`, or the system's roots through `SSL_CERT_FILE`) it
//! deploys and serves over encrypted, verified connections; with another CA
//! it refuses to start, saying which certificate and what to do.

mod util;

use std::process::{Command, Stdio};
use std::time::Duration;

use chanto_testkit::pg::{self, TLS_ONLY_USER};
use chanto_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use chanto_testkit::tls::TestCa;
use util::{BIN, Server, write_tree};

/// Runs `chanto serve` with `args` and `env` on a throwaway data dir,
/// expecting it to refuse to start (bounded: one that starts would run
/// forever); returns its stderr.
fn serve_refuses(args: &[&str], env: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(tmp.path().join("data"))
        .args(["--edge", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(args)
        .env_remove("CHANTO_META")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status =
        util::wait_for("chanto serve to refuse to start", Duration::from_secs(60), || child.try_wait().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}

/// chanto's connections to `db` as the server sees them: how many, whether
/// all are encrypted, and whether the routing listener is among them.
fn chanto_connections(db: &str) -> (u32, bool, bool) {
    let out = pg::shared_tls().server.psql(
        "postgres",
        &format!(
            "SELECT count(*), coalesce(bool_and(s.ssl), false), coalesce(bool_or(a.query LIKE '%is_called%'), false)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = '{db}' AND a.application_name = 'chanto'"
        ),
    );
    let f: Vec<&str> = out.trim().split('|').collect();
    (f[0].parse().unwrap(), f[1] == "t", f[2] == "t")
}

#[test]
fn serve_on_postgres_over_verify_full_tls_deploys_serves_and_refuses_an_unknown_ca() {
    let tls = pg::shared_tls();
    let db = tls.server.create_database("tls_e2e").rsplit('/').next().unwrap().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The TLS-only user: any connection that went out in plain text is refused.
    let url = tls.url(TLS_ONLY_USER, &db, &format!("sslmode=verify-full&sslrootcert={}", tls.ca.cert().display()));
    let server = Server::start(&data, &["--meta", &url]);
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>over TLS</h1>")]);
    server.cli(&["sites", "create", "docs"]).ok();
    let d = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
    assert_eq!(d["deploy"]["state"], "active", "{d}");
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>over TLS</h1>");
    // Every connection, the routing listener's included, is encrypted.
    let (n, all_tls, listener) = util::wait_for("the routing listener's connection", Duration::from_secs(20), || {
        let c = chanto_connections(&db);
        c.2.then_some(c)
    });
    assert!(n >= 2 && all_tls && listener, "{n} connections, all TLS: {all_tls}");
    server.terminate();

    // The same data on the system's roots: PGSSLMODE=verify-full and no
    // sslrootcert, the CA in SSL_CERT_FILE (only there: SSL_CERT_DIR empty).
    let plain_url = tls.url(TLS_ONLY_USER, &db, "");
    let ca = tls.ca.cert();
    let env = [("PGSSLMODE", "verify-full"), ("SSL_CERT_FILE", ca.to_str().unwrap()), ("SSL_CERT_DIR", "")];
    let server = Server::start_cmd_env("serve", &data, &["--meta", &plain_url], &env);
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>over TLS</h1>");
    write_tree(&site, &[("index.html", "<h1>again</h1>")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>again</h1>");
    let (_, all_tls, _) = chanto_connections(&db);
    assert!(all_tls);
    drop(server);

    // A CA that did not sign the server's certificate: refused at start,
    // naming the database (password redacted), what is wrong and the fix.
    let with_password =
        format!("postgres://{TLS_ONLY_USER}:pw-never-shown@127.0.0.1:{}/{db}?sslmode=verify-full", tls.server.port);
    let other = tls.other_ca.cert();
    let env = [("SSL_CERT_FILE", other.to_str().unwrap()), ("SSL_CERT_DIR", "")];
    let err = serve_refuses(&["--meta", &with_password], &env);
    assert!(err.contains(&format!("{TLS_ONLY_USER}:***@127.0.0.1:{}/{db}", tls.server.port)), "{err}");
    assert!(err.contains("presented a certificate not signed by a root this system trusts (SSL_CERT_FILE"), "{err}");
    assert!(!err.contains("pw-never-shown"), "{err}");
    // And with the file named in the URL.
    let err =
        serve_refuses(&["--meta", &format!("{plain_url}?sslmode=verify-full&sslrootcert={}", other.display())], &[]);
    assert!(err.contains(&format!("not signed by the CA in sslrootcert={}", other.display())), "{err}");
    // A bad sslmode is a start-up error naming it.
    let err = serve_refuses(&["--meta", &format!("{plain_url}?sslmode=verify")], &[]);
    assert!(
        err.contains("sslmode=\"verify\" is not an sslmode; use disable, prefer, require, verify-ca or verify-full"),
        "{err}"
    );
}

#[test]
fn serve_on_s3_over_https_verifies_the_store_against_the_system_roots() {
    let ca = TestCa::new("s3");
    let other = TestCa::new("other");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    let s3 = S3Server::start_tls(leaf.server_config());
    let endpoint = s3.endpoint();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    let bucket = s3.create_bucket();
    let url = format!("s3://{bucket}/prod");
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>blobs over https</h1>")]);

    let ca_file = ca.cert();
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        ("SSL_CERT_DIR", ""),
    ];
    let server =
        Server::start_cmd_env("serve", &tmp.path().join("data"), &["--blobs", &url, "--s3-endpoint", &endpoint], &env);
    server.cli(&["sites", "create", "docs"]).ok();
    let d = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
    assert_eq!(d["deploy"]["state"], "active", "{d}");
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>blobs over https</h1>");
    let hex = blake3::hash(b"<h1>blobs over https</h1>").to_hex().to_string();
    assert!(s3.object_file(&bucket, &format!("prod/blobs/{}/{}", &hex[..2], &hex[2..])).is_file());
    drop(server);

    // The store's CA is not among the trusted roots: refused at start.
    let other_file = other.cert();
    let mut env = env;
    env[3] = ("SSL_CERT_FILE", other_file.to_str().unwrap());
    let err = serve_refuses(&["--blobs", &url, "--s3-endpoint", &endpoint], &env);
    assert!(
        err.contains(&format!("the object store at {endpoint} presented a certificate not signed by a trusted root: ")),
        "{err}"
    );
    assert!(err.contains("add its CA to the system roots or SSL_CERT_FILE"), "{err}");
    assert!(!err.contains(SECRET_KEY), "{err}");
}

/// Both shared stores over verified TLS for the operator commands too: an
/// embedded install moved by `chanto migrate` onto verify-full PostgreSQL and
/// https s3s-fs, checked by `chanto backup verify`, then served from there.
#[test]
fn migrate_and_backup_verify_reach_both_stores_over_verified_tls() {
    let tls = pg::shared_tls();
    let db = tls.server.create_database("tls_migrate").rsplit('/').next().unwrap().to_owned();
    let meta_url = tls.url(TLS_ONLY_USER, &db, &format!("sslmode=verify-full&sslrootcert={}", tls.ca.cert().display()));
    let ca = TestCa::new("s3");
    let s3 = S3Server::start_tls(ca.issue(&["127.0.0.1"]).server_config());
    let endpoint = s3.endpoint();
    let blobs_url = format!("s3://{}/moved", s3.create_bucket());
    let ca_file = ca.cert();
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        ("SSL_CERT_DIR", ""),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>moved over TLS</h1>")]);
    let server = Server::start(&data, &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    server.terminate();

    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).envs(env).stdin(Stdio::null()).output().unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = run(&[
        "migrate",
        "--from",
        data.to_str().unwrap(),
        "--to-meta",
        &meta_url,
        "--to-blobs",
        &blobs_url,
        "--s3-endpoint",
        &endpoint,
    ]);
    assert!(ok && stdout.contains("migrated"), "{stdout}\n{stderr}");
    let (ok, stdout, stderr) =
        run(&["backup", "verify", "--meta", &meta_url, "--blobs", &blobs_url, "--s3-endpoint", &endpoint]);
    assert!(ok, "{stdout}\n{stderr}");
    // backup verify with a CA that did not sign the database's certificate.
    let wrong =
        tls.url(TLS_ONLY_USER, &db, &format!("sslmode=verify-full&sslrootcert={}", tls.other_ca.cert().display()));
    let (ok, _, stderr) =
        run(&["backup", "verify", "--meta", &wrong, "--blobs", &blobs_url, "--s3-endpoint", &endpoint]);
    assert!(!ok && stderr.contains("not signed by the CA in sslrootcert="), "{stderr}");

    std::fs::rename(data.join("blobs"), tmp.path().join("old-blobs")).unwrap();
    for f in ["meta.db", "meta.db-wal", "meta.db-shm"] {
        let _ = std::fs::rename(data.join(f), tmp.path().join(f));
    }
    let moved = Server::start_cmd_env(
        "serve",
        &data,
        &["--meta", &meta_url, "--blobs", &blobs_url, "--s3-endpoint", &endpoint],
        &env,
    );
    assert_eq!(moved.get("docs.localhost", "/").text(), "<h1>moved over TLS</h1>");
    let (n, all_tls, _) = chanto_connections(&db);
    assert!(n >= 1 && all_tls, "{n} connections, all TLS: {all_tls}");
}

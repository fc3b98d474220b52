//! `chanto serve --meta postgres://…`: the real binary with its metadata on a
//! real PostgreSQL server (crates/chanto-testkit), deploying, serving and
//! rolling back; the database down while it runs (503, then recovery); and
//! an unreachable database at start. No secret is stored in clear, in the
//! data directory or in the database.

mod util;

use std::process::{Command, Stdio};

use chanto_testkit::pg;
use util::{BIN, Server, assert_secret_nowhere, http_get_with, write_tree};

#[test]
fn serve_on_postgres_deploys_serves_rolls_back_and_survives_the_database_restarting() {
    // A server of this test's own: it is stopped and started again below.
    let pg = pg::PgServer::start();
    let url = pg.create_database("e2e");
    let db = url.rsplit('/').next().unwrap().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &["--meta", &url]);
    assert!(!data.join("meta.db").exists(), "metadata went to PostgreSQL, not SQLite");
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>v1</h1>"), ("css/app.css", "body{}")]);
    server.cli(&["sites", "create", "docs"]).ok();
    let d1 = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "first", "--json"]).ok().json();
    assert_eq!(d1["deploy"]["state"], "active");
    let id1 = d1["deploy"]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v1</h1>");
    write_tree(&site, &[("index.html", "<h1>v2</h1>")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "second"]).ok();
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v2</h1>");
    assert_eq!(server.get(&format!("{id1}--docs.localhost"), "/").text(), "<h1>v1</h1>");
    let rb = server.cli(&["rollback", "--site", "docs", "--json"]).ok().json();
    assert_eq!(rb["deploy"]["id"], id1.as_str());
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v1</h1>");
    // The rows are in PostgreSQL.
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM deploys").trim(), "2");

    // The database goes down: the API answers 503 with a JSON error naming
    // the metadata store; the edge keeps serving what it has.
    pg.stop();
    let auth = format!("Bearer {}", server.token);
    let sites = || http_get_with(&server.api_url_addr(), "127.0.0.1", "/api/v1/sites", &[("Authorization", &auth)]);
    let down = sites().unwrap();
    assert_eq!(down.status, 503, "{}", down.text());
    let body: serde_json::Value = serde_json::from_str(&down.text()).unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("metadata store"), "{body}");
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v1</h1>");
    // /readyz keeps the node in the load balancer (it serves) and names the
    // metadata store as down; the failures are counted.
    let ready = |want: &str| {
        util::wait_for(
            &format!("/readyz to report the metadata store {want}"),
            std::time::Duration::from_secs(30),
            || {
                let r = util::http_get(&server.admin, "admin", "/readyz?format=json").unwrap();
                let body: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
                let meta =
                    body["checks"].as_array().unwrap().iter().find(|c| c["name"] == "metadata").cloned().unwrap();
                (meta["state"] == want).then_some((r.status, body, meta))
            },
        )
    };
    let (code, body, meta) = ready("down");
    assert_eq!((code, body["status"].as_str()), (200, Some("degraded")), "{body}");
    assert!(meta["backend"].as_str().unwrap().starts_with("postgresql postgres://"), "{meta}");
    let metrics = util::http_get(&server.admin, "admin", "/metrics").unwrap().text();
    let unavailable = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chanto_metadata_errors_total{kind=\"unavailable\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(unavailable >= Some(1), "{metrics}");
    assert!(metrics.contains("\nchanto_metadata_pool_max_connections 16\n"), "{metrics}");
    // Back up: the same server works again, without a restart.
    pg.start_again();
    let (code, body, _) = ready("up");
    assert_eq!((code, body["status"].as_str()), (200, Some("ready")), "{body}");
    let up = sites().unwrap();
    assert_eq!(up.status, 200, "{}", up.text());
    write_tree(&site, &[("index.html", "<h1>v3</h1>")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v3</h1>");

    // No secret in clear: the admin token is in neither the data directory
    // (except its own 0600 file, which the operator reads it from) nor the database.
    let token = server.token.clone();
    std::fs::remove_file(data.join("admin.token")).unwrap();
    drop(server);
    assert!(assert_secret_nowhere(&data, token.as_bytes(), "the admin token") > 0);
    let dump = pg.dump(&db);
    assert!(dump.contains("CREATE TABLE public.deploys"), "the dump holds the schema");
    assert!(!dump.contains(&token), "the admin token is stored in clear in the database");
}

#[test]
fn serve_names_an_unreachable_database_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://chanto:hunter2secret@127.0.0.1:{port}/chanto");
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(tmp.path().join("data"))
        .args(["--edge", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("CHANTO_META", &url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("postgres://chanto:***@127.0.0.1:{port}/chanto")), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2secret"));
}

/// Runs `chanto serve` with `args` against a throwaway data dir, expecting it
/// to refuse to start; returns its stderr.
fn serve_fails(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data"])
        .arg(tmp.path().join("data"))
        .args(["--edge", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(args)
        .env_remove("CHANTO_META")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("chanto is serving"), "{stderr}");
    stderr
}

#[test]
fn serve_refuses_a_meta_that_is_neither_sqlite_nor_a_postgres_url() {
    let stderr = serve_fails(&["--meta", "mysql://root:topsecret@db/chanto"]);
    assert!(stderr.contains("neither `sqlite` nor a PostgreSQL URL"), "{stderr}");
    assert!(!stderr.contains("topsecret"), "{stderr}");
    let stderr = serve_fails(&["--meta-password-file", "/nonexistent"]);
    assert!(stderr.contains("--meta-password-file is for a PostgreSQL --meta URL"), "{stderr}");
}

/// The password from --meta-password-file is used, and shown nowhere.
#[test]
fn serve_keeps_the_password_file_secret_when_the_database_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pg.password");
    std::fs::write(&file, "from-the-file-secret\n").unwrap();
    let url = format!("postgres://chanto@127.0.0.1:{port}/chanto");
    let stderr = serve_fails(&["--meta", &url, "--meta-password-file", file.to_str().unwrap()]);
    assert!(stderr.contains(&url) && stderr.to_lowercase().contains("refused"), "{stderr}");
    assert!(!stderr.contains("from-the-file-secret"), "{stderr}");
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let stderr = serve_fails(&["--meta", &url, "--meta-password-file", empty.to_str().unwrap()]);
    assert!(stderr.contains("is empty; put the password on its first line"), "{stderr}");
}

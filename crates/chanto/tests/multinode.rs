//! Two `chanto serve` processes on one PostgreSQL and one S3 prefix (the
//! same install: `install-id` and `secret.key` copied to the second node): a
//! deploy made through one is served by the other's edge, also after the
//! database restarted in between (the listener reconnects and re-reads the
//! routing version, as notifications sent while it was away are lost).

mod util;

use std::time::Duration;

use chanto_testkit::pg;
use chanto_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use util::{Server, write_tree};

/// Waits (bounded) until `server`'s edge answers `want` for docs.localhost/.
fn serves(server: &Server, want: &str) {
    util::wait_for(&format!("node B to serve {want:?}"), Duration::from_secs(60), || {
        let r = util::http_get(&server.edge, "docs.localhost", "/").ok()?;
        (r.status == 200 && r.text() == want).then_some(())
    });
}

#[test]
fn a_deploy_through_one_node_is_served_by_the_other_also_after_a_database_restart() {
    let pg = pg::PgServer::start();
    let url = pg.create_database("multinode");
    let s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let blobs = format!("s3://{bucket}/prod");
    let endpoint = s3.endpoint();
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("AWS_REGION", "us-east-1")];
    let args = ["--meta", &url, "--blobs", &blobs, "--s3-endpoint", &endpoint];
    let tmp = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = Server::start_cmd_env("serve", &data_a, &args, &env);
    // Node B is the same install: without A's install id the bucket's marker
    // refuses it (tested in s3.rs), without its key it could not open A's secrets.
    std::fs::create_dir_all(&data_b).unwrap();
    for f in ["install-id", "secret.key", "admin.token"] {
        std::fs::copy(data_a.join(f), data_b.join(f)).unwrap();
    }
    let b = Server::start_cmd_env("serve", &data_b, &args, &env);

    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>v1</h1>")]);
    a.cli(&["sites", "create", "docs"]).ok();
    let d = a.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
    assert_eq!(d["deploy"]["state"], "active", "{d}");
    assert_eq!(a.get("docs.localhost", "/").text(), "<h1>v1</h1>");
    serves(&b, "<h1>v1</h1>");

    // The database restarts: B's listener loses its connection.
    pg.stop();
    pg.start_again();
    write_tree(&site, &[("index.html", "<h1>v2</h1>")]);
    // A's pool finds its connections dead and reconnects (bounded retries).
    let d2 = util::wait_for("a deploy through A after the restart", Duration::from_secs(60), || {
        let out = a.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).run();
        out.out.status.success().then(|| out.json())
    });
    assert_eq!(d2["deploy"]["state"], "active", "{d2}");
    serves(&b, "<h1>v2</h1>");

    // A rollback through B reaches A the same way; versions only grow, so
    // neither goes back to an older table.
    let r = b.cli(&["rollback", "--site", "docs", "--json"]).ok().json();
    assert_eq!(r["deploy"]["id"], d["deploy"]["id"], "{r}");
    util::wait_for("node A to serve the rollback", Duration::from_secs(60), || {
        let r = util::http_get(&a.edge, "docs.localhost", "/").ok()?;
        (r.text() == "<h1>v1</h1>").then_some(())
    });
    serves(&b, "<h1>v1</h1>");
}

//! End to end on an S3-compatible blob store: the real `chanto serve --blobs
//! s3://… --s3-endpoint …` against an s3s-fs server, which is then stopped:
//! what the edge read before is served from its disk cache (with sendfile),
//! what it never read gets a prompt 503.

mod util;

use chanto_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use util::{Server, write_tree};

/// The hex name of `bytes`' blob.
fn blob_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn metric(server: &Server, name: &str) -> u64 {
    let text = util::http_get(&server.admin, "admin", "/metrics").unwrap().text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// `/readyz?format=json`: the status code and each dependency's state by name.
fn readyz(server: &Server) -> (u16, std::collections::HashMap<String, String>, serde_json::Value) {
    let r = util::http_get(&server.admin, "admin", "/readyz?format=json").unwrap();
    let body: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    let states = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c["state"].as_str().unwrap().to_owned()))
        .collect();
    (r.status, states, body)
}

#[test]
fn serve_on_s3_keeps_serving_cached_files_when_the_store_goes_down() {
    let mut s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let site = tmp.path().join("site");
    // A large file (sent with sendfile), a page, and an image nobody asks
    // for before the outage (images are not precompressed, so nothing reads it).
    let large: String = (0..200_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let cold: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
    write_tree(&site, &[("index.html", "<h1>served from the node</h1>"), ("big.txt", &large)]);
    std::fs::write(site.join("cold.png"), &cold).unwrap();

    let url = format!("s3://{bucket}/prod");
    let endpoint = s3.endpoint();
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("AWS_REGION", "us-east-1")];
    let server = Server::start_cmd_env(
        "serve",
        &data,
        &["--blobs", &url, "--s3-endpoint", &endpoint, "--sendfile-min", "1024"],
        &env,
    );
    server.cli(&["sites", "create", "docs"]).ok();
    let d = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
    assert_eq!(d["deploy"]["state"], "active", "{d}");

    // The blobs and the marker are in the bucket, not in the data directory.
    assert!(s3.object_file(&bucket, "prod/chanto-store.json").is_file());
    let hex = blob_hex(large.as_bytes());
    assert!(s3.object_file(&bucket, &format!("prod/blobs/{}/{}", &hex[..2], &hex[2..])).is_file());
    assert!(!data.join("blobs").exists(), "no local blob directory with --blobs s3://");

    let page = server.get("docs.localhost", "/");
    assert_eq!((page.status, page.text()), (200, "<h1>served from the node</h1>".to_owned()));
    let big = server.get("docs.localhost", "/big.txt");
    assert_eq!(big.status, 200);
    assert!(big.body == large.as_bytes(), "big.txt came back whole");
    let sent_with_sendfile = metric(&server, "chanto_edge_sendfile_responses_total");
    assert!(sent_with_sendfile >= 1, "big.txt was sent from the disk cache with sendfile");
    assert!(data.join("blob-cache").join(&hex[..2]).join(&hex[2..]).is_file());
    let (code, states, body) = readyz(&server);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    for dep in ["routing", "draining", "metadata", "blobs", "blob-cache"] {
        assert_eq!(states.get(dep).map(String::as_str), Some("up"), "{dep}: {body}");
    }
    assert!(metric(&server, "chanto_blob_cache_misses_total") >= 1);
    assert!(metric(&server, "chanto_blob_store_request_duration_seconds_count{op=\"get\"}") >= 1);
    assert!(metric(&server, "chanto_blob_cache_bytes") >= large.len() as u64);
    let cold_hex = blob_hex(&cold);
    assert!(!data.join("blob-cache").join(&cold_hex[..2]).join(&cold_hex[2..]).exists(), "cold.png is not cached");

    // The object store goes down.
    s3.stop();
    let page = server.get("docs.localhost", "/");
    assert_eq!((page.status, page.text()), (200, "<h1>served from the node</h1>".to_owned()));
    let big = server.get("docs.localhost", "/big.txt");
    assert_eq!(big.status, 200);
    assert!(big.body == large.as_bytes(), "big.txt still came back whole");
    assert!(metric(&server, "chanto_edge_sendfile_responses_total") > sent_with_sendfile);
    // Never cached: an error page at once (the client's read timeout is 10 s;
    // the store's bounded retries answer well before), not a hang.
    let missing = server.get("docs.localhost", "/cold.png");
    assert_eq!(missing.status, 503, "{}", missing.text());
    assert!(server.stderr().contains("blob unavailable") || server.stdout().contains("blob unavailable"));
    // The node still serves, so it stays in the load balancer (200), and
    // says which dependency is down; the errors are counted. The probe's
    // answer is cached for a few seconds: wait for the fresh one.
    let (code, _, body) =
        util::wait_for("/readyz to report the blob store down", std::time::Duration::from_secs(30), || {
            let (code, states, body) = readyz(&server);
            (states.get("blobs").map(String::as_str) == Some("down")).then_some((code, states, body))
        });
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let blobs = body["checks"].as_array().unwrap().iter().find(|c| c["name"] == "blobs").unwrap();
    assert!(blobs["backend"].as_str().unwrap().contains(&url), "{body}");
    let text = util::http_get(&server.admin, "admin", "/readyz").unwrap().text();
    assert!(text.starts_with("degraded\n") && text.contains("\nblobs: down (s3 "), "{text}");
    assert!(metric(&server, "chanto_blob_store_errors_total{kind=\"unavailable\"}") >= 1);
    assert!(metric(&server, "chanto_blob_cache_hits_total") >= 1);
}

/// Bad configuration is refused at start, naming the flag and the fix.
#[test]
fn serve_refuses_a_bad_blobs_url_and_a_prefix_owned_by_another_install() {
    let s3 = S3Server::shared();
    let bucket = s3.create_bucket();
    let tmp = tempfile::tempdir().unwrap();
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    let run = |data: &str, extra: &[&str]| {
        std::process::Command::new(util::BIN)
            .arg("serve")
            .arg("--data")
            .arg(tmp.path().join(data))
            .args(["--edge", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(extra)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A server that starts although it should refuse would run forever: bounded.
    let refused = |mut child: std::process::Child| -> String {
        let status =
            util::wait_for("chanto serve to refuse", std::time::Duration::from_secs(60), || child.try_wait().unwrap());
        assert!(!status.success());
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        err
    };
    let err = refused(run("a", &["--blobs", "ftp://nowhere"]));
    assert!(err.contains("--blobs") && err.contains("s3://BUCKET/PREFIX"), "{err}");

    // Install A claims the prefix (and stops); install B is refused.
    let url = format!("s3://{bucket}/shared");
    let endpoint = s3.endpoint();
    let a = Server::start_cmd_env("serve", &tmp.path().join("a"), &["--blobs", &url, "--s3-endpoint", &endpoint], &env);
    a.terminate();
    let err = refused(run("b", &["--blobs", &url, "--s3-endpoint", &endpoint]));
    assert!(err.contains("another chanto install") && err.contains("--blobs-claim"), "{err}");
}

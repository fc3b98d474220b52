//! Edge nodes (`chanto serve --role edge`) as real processes: a real control
//! plane (`chanto serve` on SQLite and an s3s-fs object store) feeds them
//! routing; they serve what it deploys the moment its activation answers,
//! keep serving from their own disk with the control plane and the object
//! store down, refuse a snapshot they cannot load, and are never ready
//! before their first snapshot.

mod util;

use std::path::Path;
use std::time::Duration;

use chanto_testkit::s3::{Fault, FaultProxy, S3Server};
use util::edge::{AWS_ENV, EdgeProc, write_token};
use util::{Cli, Server, wait_for, write_tree};

/// A control plane (role all) on `bucket` of `s3`, with a node token in `dir/node.token`.
fn control(dir: &Path, s3: &S3Server, bucket: &str, extra: &[&str]) -> Server {
    let url = format!("s3://{bucket}/prod");
    let endpoint = s3.endpoint();
    let mut args = vec!["--blobs", &url, "--s3-endpoint", &endpoint, "--edge-wait", "3s", "--node-timeout", "5s"];
    args.extend_from_slice(extra);
    let server = Server::start_cmd_env("serve", &dir.join("control"), &args, &AWS_ENV);
    let token = dir.join("node.token");
    server.cli(&["nodes", "token", "create", "edges", "--output", token.to_str().unwrap()]).ok();
    server
}

fn deploy(server: &Server, site: &str, dir: &Path) -> serde_json::Value {
    server.cli(&["deploy", dir.to_str().unwrap(), "--site", site, "--json"]).ok().json()
}

/// The `edges` report of an activation answer: (live, total).
fn live(answer: &serde_json::Value) -> (u64, u64) {
    let edges = &answer["edges"];
    (
        edges["live"].as_u64().unwrap_or_else(|| panic!("no edges.live in {answer:#}")),
        edges["total"].as_u64().unwrap_or_else(|| panic!("no edges.total in {answer:#}")),
    )
}

#[test]
fn an_edge_node_serves_each_deploy_when_its_activation_answers_and_boots_from_disk_with_everything_down() {
    let mut s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let tmp = tempfile::tempdir().unwrap();
    let control = control(tmp.path(), &s3, &bucket, &[]);
    let url = format!("s3://{bucket}/prod");
    let node_data = tmp.path().join("edge-a");
    let token = tmp.path().join("node.token");
    let edge = EdgeProc::start(&node_data, "a", &control.api_url, &token, &url, &s3.endpoint(), &[]);
    wait_for("the edge node ready", Duration::from_secs(20), || (edge.ready_status() == 200).then_some(()));

    control.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    for (n, text) in ["first", "second"].iter().enumerate() {
        write_tree(&site, &[("index.html", &format!("<h1>{text}</h1>")), ("app.css", &format!("body{{n:{n}}}"))]);
        let answer = deploy(&control, "docs", &site);
        // Two edges: the control plane's own and the node in zone a.
        assert_eq!(live(&answer), (2, 2), "{answer:#}\nedge stderr:\n{}", edge.stderr());
        // Live everywhere when the activation answered: no waiting here.
        let r = edge.get("docs.localhost", "/");
        assert_eq!(r.status, 200, "{}", edge.stderr());
        assert!(r.text().contains(text), "{}", r.text());
    }
    let list = control.cli(&["deploys", "list", "--site", "docs", "--json"]).ok().json();
    let first = list[1]["id"].as_str().unwrap().to_owned();
    let answer = control.cli(&["publish", &first, "--json"]).ok().json();
    assert_eq!(live(&answer), (2, 2), "{answer:#}");
    assert!(edge.get("docs.localhost", "/").text().contains("first"));
    assert_eq!(edge.get("docs.localhost", "/app.css").text(), "body{n:0}");
    let version = edge.metric("chanto_edge_routing_version").unwrap();
    assert!(version >= 4.0, "{version}");
    // After a whole snapshot the node got deltas, journaled beside it: the
    // journal continues the whole snapshot version by version up to the one
    // served. (Which version the whole one is depends on timing: the
    // periodic pull may bring a whole snapshot between two deltas, which
    // rewrites it and starts the journal again.)
    let journal = std::fs::read_to_string(node_data.join("edge/routing.log")).unwrap_or_default();
    let whole: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node_data.join("edge/routing.json")).unwrap()).unwrap();
    let mut at = whole["version"].as_u64().unwrap();
    assert!((at as f64) < version, "the whole snapshot is older: {whole}");
    for line in journal.lines() {
        let delta: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(delta["base"].as_u64(), Some(at), "deltas journaled in order:\n{journal}");
        at = delta["version"].as_u64().unwrap();
    }
    assert_eq!(at as f64, version, "the journal reaches the version served:\n{journal}\n{}", edge.stderr());

    // Control plane, its database and the object store all gone; the edge
    // node restarts and serves every active site from its own disk (the
    // whole snapshot with the journal's deltas replayed).
    control.kill();
    s3.stop();
    edge.kill();
    let edge = EdgeProc::start(&node_data, "a", "http://127.0.0.1:9", &token, &url, "http://127.0.0.1:9", &[]);
    assert_eq!(edge.ready_status(), 200, "{}", edge.stderr());
    let r = edge.get("docs.localhost", "/");
    assert_eq!(r.status, 200, "{}", edge.stderr());
    assert!(r.text().contains("first"), "{}", r.text());
    assert_eq!(edge.get("docs.localhost", "/app.css").text(), "body{n:0}");
    assert_eq!(edge.get("nosuch.localhost", "/").status, 404);
    let age = edge.metric("chanto_edge_routing_age_seconds").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        edge.metric("chanto_edge_routing_age_seconds").unwrap() > age,
        "routing age must rise while the control plane is away"
    );
    assert_eq!(edge.metric("chanto_edge_routing_version"), Some(version), "the version kept on disk");
}

#[test]
fn a_snapshot_the_edge_cannot_load_is_refused_and_the_deploy_names_the_edge() {
    let s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let tmp = tempfile::tempdir().unwrap();
    let control = control(tmp.path(), &s3, &bucket, &[]);
    let url = format!("s3://{bucket}/prod");
    let token = tmp.path().join("node.token");
    // This edge reaches the object store through a proxy that can fail.
    let proxy = FaultProxy::start(s3.addr());
    let edge = EdgeProc::start(&tmp.path().join("edge-b"), "b", &control.api_url, &token, &url, &proxy.endpoint(), &[]);
    control.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>old</h1>")]);
    assert_eq!(live(&deploy(&control, "docs", &site)), (2, 2));

    // The object store is down for this edge only: it cannot check the new
    // deploy's files, so it keeps serving the old one and says so.
    proxy.set(Fault::Unavailable);
    write_tree(&site, &[("index.html", "<h1>new</h1>")]);
    let answer = deploy(&control, "docs", &site);
    assert_eq!(live(&answer), (1, 2), "{answer:#}");
    let refused = answer["edges"]["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{answer:#}");
    assert_eq!(refused[0]["zone"], "b");
    assert!(refused[0]["error"].as_str().unwrap().contains("could not be read"), "{answer:#}");
    let r = edge.get("docs.localhost", "/");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("old"), "no request fails, the old deploy is served: {}", r.text());
    assert!(edge.metric("chanto_edge_routing_refused_total").unwrap() >= 1.0);
    let nodes = control.cli(&["nodes", "list", "--json"]).ok().json();
    let b = nodes["nodes"].as_array().unwrap().iter().find(|n| n["zone"] == "b").unwrap_or_else(|| panic!("{nodes:#}"));
    assert!(b["refused"]["error"].as_str().is_some(), "{nodes:#}");

    // The store is back: the edge catches up by itself, without a restart.
    proxy.set(Fault::None);
    edge.wait_serving("docs.localhost", "/", "new", Duration::from_secs(40));

    // A blob deleted from the store behind chanto's back: the next snapshot
    // that needs it is refused by the edge, which keeps serving.
    let gone = "<h1>gone</h1>";
    write_tree(&site, &[("index.html", gone)]);
    let hex = blake3::hash(gone.as_bytes()).to_hex().to_string();
    edge.kill();
    assert_eq!(live(&deploy(&control, "docs", &site)).0, 1);
    std::fs::remove_file(s3.object_file(&bucket, &format!("prod/blobs/{}/{}", &hex[..2], &hex[2..]))).unwrap();
    let edge = EdgeProc::start(&tmp.path().join("edge-b"), "b", &control.api_url, &token, &url, &proxy.endpoint(), &[]);
    wait_for("the refusal", Duration::from_secs(20), || {
        (edge.metric("chanto_edge_routing_refused_total").unwrap_or(0.0) >= 1.0).then_some(())
    });
    let r = edge.get("docs.localhost", "/");
    assert!(r.text().contains("new"), "{}", r.text());
    let stderr = edge.stderr();
    assert!(stderr.contains("is missing from the object store"), "{stderr}");
}

#[test]
fn a_new_edge_node_is_not_ready_and_answers_503_until_it_has_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("node.token");
    write_token(&token, "chn_0123456789abcdef0123456789abcdef");
    // Nothing listens on port 9 of loopback: the control plane is unreachable.
    let edge = EdgeProc::start(
        &tmp.path().join("edge"),
        "a",
        "http://127.0.0.1:9",
        &token,
        "s3://bucket/prefix",
        "http://127.0.0.1:9",
        &[],
    );
    assert_eq!(edge.ready_status(), 503);
    for host in ["docs.localhost", "nosuch.localhost"] {
        let r = edge.get(host, "/");
        assert_eq!(r.status, 503, "{host}: never a 404 before the first snapshot");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    wait_for("a counted control error", Duration::from_secs(10), || {
        (edge.metric("chanto_edge_control_errors_total").unwrap_or(0.0) >= 1.0).then_some(())
    });
}

#[test]
fn edge_role_flags_are_checked_with_the_fix_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = tmp.path().join("node.token");
    write_token(&token, "chn_0123456789abcdef0123456789abcdef");
    let api_token = tmp.path().join("api.token");
    write_token(&api_token, "cht_0123456789abcdef0123456789abcdef");
    let t = token.to_str().unwrap();
    let d = data.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--blobs", "s3://b/p"], "needs --control URL"),
        (&["--control", "ftp://x", "--node-token", t, "--blobs", "s3://b/p"], "http:// or https://"),
        (&["--control", "not a url", "--node-token", t, "--blobs", "s3://b/p"], "is not a URL"),
        (&["--control", "http://u:p@127.0.0.1:1", "--node-token", t, "--blobs", "s3://b/p"], "no user"),
        (&["--control", "http://127.0.0.1:1", "--blobs", "s3://b/p"], "needs --node-token FILE"),
        (
            &["--control", "http://127.0.0.1:1", "--node-token", "/nonexistent/t", "--blobs", "s3://b/p"],
            "reading the node token file",
        ),
        (
            &["--control", "http://127.0.0.1:1", "--node-token", api_token.to_str().unwrap(), "--blobs", "s3://b/p"],
            "does not hold a node token",
        ),
        (&["--control", "http://127.0.0.1:1", "--node-token", t], "--blobs s3://"),
        (
            &["--control", "http://10.1.2.3:8787", "--node-token", t, "--blobs", "s3://b/p", "--https", "127.0.0.1:0"],
            "give an https:// control URL",
        ),
        (
            &["--control", "http://127.0.0.1:1", "--node-token", t, "--blobs", "s3://b/p", "--acme-email", "a@b.c"],
            "orders no certificates",
        ),
        (
            &[
                "--control",
                "http://127.0.0.1:1",
                "--node-token",
                t,
                "--blobs",
                "s3://b/p",
                "--acme-challenge",
                "tls-alpn-01",
            ],
            "orders no certificates",
        ),
        (
            &[
                "--control",
                "http://127.0.0.1:1",
                "--node-token",
                t,
                "--blobs",
                "s3://b/p",
                "--meta",
                "postgres://x@h/db",
            ],
            "never reads metadata",
        ),
        (
            &["--control", "http://127.0.0.1:1", "--node-token", t, "--blobs", "s3://b/p", "--zone", "a b"],
            "is not a zone name",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["serve", "--role", "edge", "--data", d, "--edge", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let run = Cli::new(&all).env_remove("CHANTO_META").fails();
        assert!(run.stderr().contains(expected), "{args:?}: expected {expected:?} in\n{}", run.stderr());
    }
    // A huge token file is refused, not read whole into a header.
    std::fs::write(&token, "chn_".to_owned() + &"a".repeat(10_000)).unwrap();
    let run = Cli::new(&[
        "serve",
        "--role",
        "edge",
        "--data",
        d,
        "--control",
        "http://127.0.0.1:1",
        "--node-token",
        t,
        "--blobs",
        "s3://b/p",
    ])
    .fails();
    assert!(run.stderr().contains("does not hold a node token"), "{}", run.stderr());
}

/// A control plane that answers the routing pull with what the test queues
/// (then, once the queue is empty, `304 Not Modified` after a short wait, as
/// an idle long-poll does) and every heartbeat with a plain ack. Counts the
/// routing pulls it answered.
struct FakeControl {
    url: String,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeControl {
    fn start(answers: Vec<Vec<u8>>) -> FakeControl {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let queue = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(answers)));
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (queue, counter) = (queue.clone(), counter.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0usize;
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            if h == "\r\n" {
                                break;
                            }
                            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let answer = if line.contains("/api/v1/nodes/routing") {
                            let next = queue.lock().unwrap().pop_front();
                            match next {
                                Some(a) => {
                                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    a
                                }
                                None => {
                                    std::thread::sleep(Duration::from_millis(200));
                                    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\n\r\n".to_vec()
                                }
                            }
                        } else {
                            json_answer(br#"{"routing_version":1}"#)
                        };
                        if conn.write_all(&answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeControl { url, served }
    }
}

/// A 200 answer with `body` as JSON.
fn json_answer(body: &[u8]) -> Vec<u8> {
    let mut a = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
        .into_bytes();
    a.extend_from_slice(body);
    a
}

/// A 200 answer with `body` as a routing delta.
fn delta_answer(body: &serde_json::Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nchanto-routing: delta\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A 200 answer marked as a delta whose body is `body` as it is.
fn json_answer_delta_raw(body: &[u8]) -> Vec<u8> {
    let mut a = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nchanto-routing: delta\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    a.extend_from_slice(body);
    a
}

/// The hash of no bytes, as manifests are named.
fn blake3_of_nothing() -> String {
    chanto_core::ContentHash::of(b"").to_string()
}

/// A snapshot as the control plane sends it, with no site in it.
fn empty_snapshot(format: u32, version: u64) -> Vec<u8> {
    serde_json::json!({
        "format": format,
        "version": version,
        "published_at": 1_700_000_000_000u64,
        "table": {"version": version, "branches": [], "permalinks": [], "access": [], "proxy_origins": []},
    })
    .to_string()
    .into_bytes()
}

/// The control plane is trusted, but what reaches the edge over the network
/// is checked all the same: a broken, hostile or oversized answer is refused
/// or counted as an error, the node keeps serving the snapshot it has and
/// stays ready, and never crashes.
#[test]
fn hostile_control_answers_are_refused_and_the_node_keeps_its_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("node.token");
    write_token(&token, "chn_0123456789abcdef0123456789abcdef");
    let deep = "[".repeat(100_000);
    let answers = vec![
        json_answer(&empty_snapshot(1, 5)),
        json_answer(b"this is not JSON"),
        json_answer(deep.as_bytes()),
        json_answer(&empty_snapshot(99, 6)),
        // A version that goes backwards: ignored.
        json_answer(&empty_snapshot(1, 3)),
        // The table says another version than the snapshot.
        json_answer(
            serde_json::json!({"format": 1, "version": 7, "published_at": 0,
                "table": {"version": 8, "branches": [], "permalinks": [], "access": [], "proxy_origins": []}})
            .to_string()
            .as_bytes(),
        ),
        // A row whose manifest is no hash.
        json_answer(
            serde_json::json!({"format": 1, "version": 9, "published_at": 0,
                "table": {"version": 9, "branches": [{"site": "docs", "branch": "main", "manifest": "../../etc/passwd"}],
                    "permalinks": [], "access": [], "proxy_origins": []}})
            .to_string()
            .as_bytes(),
        ),
        // Far larger than any snapshot may be, by its length.
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000000000\r\n\r\n{".to_vec(),
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops".to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec(),
        // Deltas: from a version the node does not serve (ignored, pulled
        // again); of an unknown format; whose part for one site has rows of
        // another; not JSON (these three are refusals); of another epoch
        // (ignored).
        delta_answer(&serde_json::json!({"format": 1, "version": 20, "base": 4, "published_at": 0, "epoch": "", "sites": []})),
        delta_answer(&serde_json::json!({"format": 98, "version": 20, "base": 5, "published_at": 0, "epoch": "", "sites": []})),
        delta_answer(&serde_json::json!({"format": 1, "version": 20, "base": 5, "published_at": 0, "epoch": "",
            "sites": [["docs", {"branches": [{"site": "blog", "branch": "main", "label": "main", "production": true,
                "deploy": "0123456789abcdef", "manifest": blake3_of_nothing(), "ready_at": 0}],
                "permalinks": [], "access": [], "proxy_origins": []}]]})),
        json_answer_delta_raw(b"{\"format\": 1, \"version\": 2"),
        // From another control process's lineage of versions: ignored.
        delta_answer(&serde_json::json!({"format": 1, "version": 20, "base": 5, "published_at": 0, "epoch": "other", "sites": []})),
        // A good delta at last: version 21, no site changed.
        delta_answer(&serde_json::json!({"format": 1, "version": 21, "base": 5, "published_at": 0, "epoch": "", "sites": []})),
    ];
    let n = answers.len();
    let control = FakeControl::start(answers);
    let edge = EdgeProc::start(
        &tmp.path().join("edge"),
        "a",
        &control.url,
        &token,
        "s3://bucket/prefix",
        "http://127.0.0.1:9",
        &[],
    );
    wait_for("the edge to pull every answer", Duration::from_secs(60), || {
        (control.served.load(std::sync::atomic::Ordering::SeqCst) >= n).then_some(())
    });
    // The last answers are still being handled (a loaded machine is slow):
    // wait, bounded, until the counters and the log say so, then check.
    let settled = || {
        let stderr = edge.stderr();
        (edge.metric("chanto_edge_routing_refused_total").unwrap_or(0.0) >= 7.0
            && edge.metric("chanto_edge_control_errors_total").unwrap_or(0.0) >= 2.0
            && edge.metric("chanto_edge_routing_version") == Some(21.0)
            && stderr.contains("format 99"))
        .then_some(())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while settled().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(edge.ready_status(), 200, "{}", edge.stderr());
    let snapshot: serde_json::Value =
        serde_json::from_slice(&std::fs::read(edge.data.join("edge/routing.json")).unwrap()).unwrap();
    assert_eq!(snapshot["version"], 5, "the node kept the only good snapshot");
    let journal = std::fs::read_to_string(edge.data.join("edge/routing.log")).unwrap();
    assert_eq!(journal.lines().count(), 1, "only the good delta is journaled: {journal}");
    assert!(journal.contains("\"version\":21"), "{journal}");
    assert_eq!(edge.metric("chanto_edge_routing_version"), Some(21.0), "{}", edge.stderr());
    let refused = edge.metric("chanto_edge_routing_refused_total").unwrap();
    assert!(refused >= 7.0, "refused {refused}\n{}", edge.stderr());
    let errors = edge.metric("chanto_edge_control_errors_total").unwrap();
    assert!(errors >= 2.0, "control errors {errors}\n{}", edge.stderr());
    let stderr = edge.stderr();
    // Refusals are each logged; control errors (the oversized answer, the
    // 500) are counted above and logged only first and then one in 20, so
    // their lines are not expected here (a run where another control error
    // came first logged no "larger than").
    for expected in ["format 99", "a delta of format 98", "rows of another site", "routing delta is not valid JSON"] {
        assert!(stderr.contains(expected), "{expected:?} not in\n{stderr}");
    }
    let r = edge.get("docs.localhost", "/");
    assert_eq!(r.status, 404, "a known snapshot with no such site: {}", r.text());
}

/// GET `https://{name}{path}` at `addr`, trusting only `ca`: the status and
/// body, or why the request failed (no handshake, say).
fn https_get(ca: &chanto_testkit::tls::TestCa, addr: &str, name: &str, path: &str) -> Result<(u16, String), String> {
    let root = reqwest::Certificate::from_pem(&std::fs::read(ca.cert()).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve(name, addr.parse().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = client.get(format!("https://{name}{path}")).send().await.map_err(|e| format!("{e:?}"))?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.map_err(|e| e.to_string())?))
    })
}

/// The node's HTTPS address from its addresses.json.
fn https_addr(data: &Path) -> String {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(data.join("addresses.json")).unwrap()).unwrap();
    v["https"].as_str().expect("the node serves HTTPS").to_owned()
}

#[test]
fn an_edge_node_serves_uploaded_certificates_over_https_and_keeps_them_through_a_restart_alone() {
    let mut s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let tmp = tempfile::tempdir().unwrap();
    let ca = chanto_testkit::tls::TestCa::in_dir(tmp.path(), "edge-node-https");
    let roots = ca.cert();
    let base = ["--base-domain", "sites.test"];
    let control =
        control(tmp.path(), &s3, &bucket, &[&base[..], &["--certificate-roots", roots.to_str().unwrap()]].concat());
    let url = format!("s3://{bucket}/prod");
    let node_data = tmp.path().join("edge-a");
    let token = tmp.path().join("node.token");
    let https = ["--https", "127.0.0.1:0", "--base-domain", "sites.test"];
    let edge = EdgeProc::start(&node_data, "a", &control.api_url, &token, &url, &s3.endpoint(), &https);
    wait_for("the edge node ready", Duration::from_secs(20), || (edge.ready_status() == 200).then_some(()));
    let addr = https_addr(&node_data);

    control.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>over tls</h1>")]);
    deploy(&control, "docs", &site);
    control.cli(&["domains", "add", "shop.example.org", "--site", "docs"]).ok();
    edge.wait_serving("shop.example.org", "/", "over tls", Duration::from_secs(10));
    assert!(https_get(&ca, &addr, "shop.example.org", "/").is_err(), "no certificate yet, no handshake");
    let leaf = ca.issue(&["shop.example.org"]);
    let up = control
        .cli(&[
            "certs",
            "upload",
            "--domain",
            "shop.example.org",
            "--site",
            "docs",
            "--cert",
            leaf.cert.to_str().unwrap(),
            "--key",
            leaf.key.to_str().unwrap(),
            "--json",
        ])
        .ok()
        .json();
    let id =
        up["domain"]["certificate"]["id"].as_str().unwrap_or_else(|| panic!("certificate id in {up:#}")).to_owned();
    let (status, body) = wait_for("HTTPS on the edge node", Duration::from_secs(20), || {
        https_get(&ca, &addr, "shop.example.org", "/").ok()
    });
    assert_eq!((status, body.as_str()), (200, "<h1>over tls</h1>"), "{}", edge.stderr());
    // Plain HTTP now goes to HTTPS on the node too.
    let r = edge.get("shop.example.org", "/x");
    assert_eq!((r.status, r.header("location")), (301, Some("https://shop.example.org/x")));
    // The certificate is kept on the node's disk, readable by its owner only.
    let kept = node_data.join("edge/certs").join(format!("{id}.json"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kept).unwrap_or_else(|e| panic!("{}: {e}", kept.display())).permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", kept.display());

    // The endpoint takes node tokens only, and checks the id.
    let node_token = std::fs::read_to_string(&token).unwrap().trim().to_owned();
    let ask = |auth: &str, id: &str| {
        let headers = [("Authorization", format!("Bearer {auth}"))];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let addr = control.api_url.trim_start_matches("http://");
        util::http_request(addr, "GET", "api", &format!("/api/v1/nodes/certificates/{id}"), &headers, b"").unwrap()
    };
    assert_eq!(ask(&control.token, &id).status, 403, "the admin token is not a node token");
    assert_eq!(ask("", &id).status, 401);
    assert_eq!(ask(&node_token, "../../etc/passwd").status, 404);
    assert_eq!(ask(&node_token, &"Z".repeat(64)).status, 400);
    assert_eq!(ask(&node_token, &"0".repeat(64)).status, 404);
    let got = ask(&node_token, &id);
    assert_eq!((got.status, got.header("cache-control")), (200, Some("no-store")));

    // The base domain's wildcard reaches the node in the routing delta, and
    // serves the site's own host.
    assert!(https_get(&ca, &addr, "docs.sites.test", "/").is_err(), "no wildcard yet");
    let wild = ca.issue(&["*.sites.test"]);
    control
        .cli(&["certs", "upload", "--base", "--cert", wild.cert.to_str().unwrap(), "--key", wild.key.to_str().unwrap()])
        .ok();
    let (status, body) = wait_for("the base wildcard on the edge node", Duration::from_secs(20), || {
        https_get(&ca, &addr, "docs.sites.test", "/").ok()
    });
    assert_eq!((status, body.as_str()), (200, "<h1>over tls</h1>"), "{}", edge.stderr());

    // Control plane and object store gone; the node restarts alone and
    // serves HTTPS from what it kept.
    control.kill();
    s3.stop();
    edge.kill();
    let edge = EdgeProc::start(&node_data, "a", "http://127.0.0.1:9", &token, &url, "http://127.0.0.1:9", &https);
    let addr = https_addr(&node_data);
    let (status, body) =
        https_get(&ca, &addr, "shop.example.org", "/").unwrap_or_else(|e| panic!("{e}\n{}", edge.stderr()));
    assert_eq!((status, body.as_str()), (200, "<h1>over tls</h1>"));
    let (status, _) =
        https_get(&ca, &addr, "docs.sites.test", "/").unwrap_or_else(|e| panic!("{e}\n{}", edge.stderr()));
    assert_eq!(status, 200, "the wildcard kept too");
    // A damaged kept file is not served (and the control plane is away to give it again).
    edge.kill();
    std::fs::write(&kept, b"{\"id\":\"x\"}").unwrap();
    let edge = EdgeProc::start(&node_data, "a", "http://127.0.0.1:9", &token, &url, "http://127.0.0.1:9", &https);
    let addr = https_addr(&node_data);
    assert!(https_get(&ca, &addr, "shop.example.org", "/").is_err(), "{}", edge.stderr());
    assert_eq!(edge.get("shop.example.org", "/").status, 200, "still served over plain HTTP, not redirected");
}

//! Nodes end to end: real `chanto serve` processes (`--role all` and
//! `--role control`) driven by the real CLI: node tokens created, listed and
//! revoked; `chanto nodes list`; deploy answers naming where they are live;
//! an edge that lags (simulated by the heartbeats an edge sends over HTTP)
//! making a deploy wait the bounded time and name it.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use util::{Server, http_request, write_tree};

/// Sends a heartbeat to the server's API with `token`; the HTTP status.
fn heartbeat(server: &Server, token: &str, node: &str, zone: &str, version: u64) -> u16 {
    let body = serde_json::json!({
        "node_id": node, "name": node, "zone": zone, "role": "edge", "routing_version": version,
        "snapshot_age_ms": 5, "ready": true, "draining": false, "refused": null,
        "software": "test", "edge_addr": null,
    });
    let auth = format!("Bearer {token}");
    let r = http_request(
        &server.api_url_addr(),
        "POST",
        "127.0.0.1",
        "/api/v1/nodes/heartbeat",
        &[("authorization", &auth), ("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap();
    r.status
}

fn routing(server: &Server, token: &str, query: &str) -> util::HttpResponse {
    let auth = format!("Bearer {token}");
    http_request(
        &server.api_url_addr(),
        "GET",
        "127.0.0.1",
        &format!("/api/v1/nodes/routing?{query}"),
        &[("authorization", &auth)],
        b"",
    )
    .unwrap()
}

#[test]
fn node_tokens_the_node_list_and_deploys_that_wait_for_edges() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--edge-wait", "2s", "--zone", "zone-a"]);

    // Tokens: written once to a private file, or shown once; listed without the token.
    let file = tmp.path().join("edge.token");
    let run = server.cli(&["nodes", "token", "create", "edge-b", "--output", file.to_str().unwrap()]).ok();
    assert!(run.stdout().contains("--node-token"), "{}", run.report());
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(token.starts_with("chn_"), "{token}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!run.stdout().contains(&token), "a token written to a file is not printed");
    let again = server.cli(&["nodes", "token", "create", "x", "--output", file.to_str().unwrap()]).fails();
    assert!(again.stderr().contains("--output") && again.stderr().contains("must not exist"), "{}", again.report());
    let shown = server.cli(&["nodes", "token", "create", "spare"]).ok();
    assert!(shown.stdout().contains("chn_"), "{}", shown.report());
    let bad = server.cli(&["nodes", "token", "create", "no spaces"]).fails();
    assert!(bad.stderr().contains("not a node token name"), "{}", bad.report());
    let list = server.cli(&["nodes", "token", "list", "--json"]).ok().json();
    let tokens = list.as_array().unwrap();
    assert!(tokens.len() >= 2, "{list}");
    assert!(!list.to_string().contains("chn_"), "{list}");
    let spare_id = tokens.iter().find(|t| t["name"] == "spare").unwrap()["id"].as_str().unwrap().to_owned();
    let table = server.cli(&["nodes", "token", "list"]).ok().stdout();
    assert!(table.contains("edge-b") && table.contains("active"), "{table}");

    // A node token opens nothing but the node endpoints.
    let refused =
        util::Cli::new(&["sites", "list"]).env("CHANTO_SERVER", &server.api_url).env("CHANTO_TOKEN", &token).fails();
    assert!(refused.stderr().contains("node token is accepted only by"), "{}", refused.report());
    assert_eq!(routing(&server, &server.token, "after=0&wait=0").status, 403, "the admin token is no node token");

    // Role all: the process's own edge is a node, and a deploy is live on it.
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>one</h1>")]);
    server.cli(&["sites", "create", "docs"]).ok();
    let deploy = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    assert!(deploy.stdout().contains("live on 1 of 1 edges"), "{}", deploy.report());
    let nodes = server.cli(&["nodes", "list", "--json"]).ok().json();
    let me = &nodes["nodes"][0];
    assert_eq!(
        (me["role"].as_str(), me["zone"].as_str(), me["lag"].as_u64()),
        (Some("all"), Some("zone-a"), Some(0)),
        "{nodes}"
    );
    assert_eq!(me["node_id"].as_str().unwrap(), std::fs::read_to_string(server.data.join("node-id")).unwrap().trim());
    let version = nodes["routing_version"].as_u64().unwrap();

    // An edge that reports an old version: the next deploy waits the bounded
    // time and names it by zone and name.
    assert_eq!(heartbeat(&server, &token, "lagger", "zone-b", version), 200);
    let table = server.cli(&["nodes", "list"]).ok().stdout();
    assert!(table.contains("zone-b") && table.contains("lagger") && table.contains("zone-a"), "{table}");
    assert!(table.contains("2 healthy edge(s)"), "{table}");
    write_tree(&site, &[("index.html", "<h1>two</h1>")]);
    let started = Instant::now();
    let deploy = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    let took = started.elapsed();
    assert!(deploy.stdout().contains("live on 1 of 2 edges"), "{}", deploy.report());
    assert!(deploy.stdout().contains("lagging:  zone-b/lagger still on version"), "{}", deploy.report());
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "{took:?}");
    assert!(server.stderr().contains("routing version not live on every edge"), "{}", server.stderr());
    // Once it reports the new version, rollbacks are live on both at once.
    let nodes = server.cli(&["nodes", "list", "--json"]).ok().json();
    let current = nodes["routing_version"].as_u64().unwrap();
    let lagger = nodes["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "lagger").unwrap().clone();
    assert_eq!(lagger["lag"].as_u64(), Some(current - version), "{nodes}");
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            // The edge catches up as soon as the rollback publishes.
            util::wait_for("the rollback's version", Duration::from_secs(5), || {
                let r = routing(&server, &token, &format!("after={current}&wait=5"));
                (r.status == 200)
                    .then(|| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["version"].as_u64().unwrap())
            });
            let latest = routing(&server, &token, "after=0&wait=0");
            let v = serde_json::from_slice::<serde_json::Value>(&latest.body).unwrap()["version"].as_u64().unwrap();
            assert_eq!(heartbeat(&server, &token, "lagger", "zone-b", v), 200);
        });
        std::thread::sleep(Duration::from_millis(200));
        let rb = server.cli(&["rollback", "--site", "docs", "--json"]).ok().json();
        assert_eq!((rb["edges"]["live"].as_u64(), rb["edges"]["total"].as_u64()), (Some(2), Some(2)), "{rb}");
    });
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());

    // Revoked: refused at once.
    let out = server.cli(&["nodes", "token", "revoke", &spare_id]).ok();
    assert!(out.stdout().contains("Revoked node token"), "{}", out.report());
    let list = server.cli(&["nodes", "token", "list"]).ok().stdout();
    assert!(list.contains("revoked"), "{list}");
    let id = server.cli(&["nodes", "token", "list", "--json"]).ok().json();
    let edge_b =
        id.as_array().unwrap().iter().find(|t| t["name"] == "edge-b").unwrap()["id"].as_str().unwrap().to_owned();
    server.cli(&["nodes", "token", "revoke", &edge_b]).ok();
    assert_eq!(heartbeat(&server, &token, "lagger", "zone-b", 1), 401);
    let missing = server.cli(&["nodes", "token", "revoke", "nt_nope"]).fails();
    assert!(missing.stderr().contains("chanto nodes token list"), "{}", missing.report());
}

#[test]
fn a_control_node_runs_no_edge_and_feeds_remote_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &["--role", "control", "--edge-wait", "1s"]);
    assert!(server.edge.is_empty(), "no edge listener");
    let addresses: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("addresses.json")).unwrap()).unwrap();
    assert!(addresses["edge"].is_null(), "{addresses}");
    assert!(server.stdout().contains("control plane"), "{}", server.stdout());
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = util::http_get(&server.admin, "127.0.0.1", path).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    assert!(util::http_get(&server.admin, "127.0.0.1", "/readyz").unwrap().text().contains("metadata: up"));

    // With no edge at all, a deploy is live on none, at once.
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>hi</h1>")]);
    server.cli(&["sites", "create", "docs"]).ok();
    let deploy = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    assert!(deploy.stdout().contains("live on 0 of 0 edges"), "{}", deploy.report());
    let empty = server.cli(&["nodes", "list"]).ok();
    assert!(empty.stdout().contains("No node has reported"), "{}", empty.report());

    // A remote edge pulls the snapshot and reports it; the node list shows it.
    let token =
        server.cli(&["nodes", "token", "create", "edges", "--json"]).ok().json()["token"].as_str().unwrap().to_owned();
    let snap = routing(&server, &token, "after=0&wait=0");
    assert_eq!(snap.status, 200);
    assert_eq!(snap.header("content-type"), Some("application/json"));
    let snap: serde_json::Value = serde_json::from_slice(&snap.body).unwrap();
    assert_eq!(snap["table"]["branches"][0]["site"], "docs", "{snap}");
    let version = snap["version"].as_u64().unwrap();
    assert_eq!(heartbeat(&server, &token, "edge-1", "zone-c", version), 200);
    let nodes = server.cli(&["nodes", "list", "--json"]).ok().json();
    assert_eq!(nodes["nodes"][0]["zone"], "zone-c", "{nodes}");
    assert_eq!(nodes["nodes"][0]["healthy"], true, "{nodes}");
    assert_eq!(routing(&server, &token, &format!("after={version}&wait=0")).status, 304);
    assert_eq!(routing(&server, &token, "wait=999").status, 400);
    // The base hosts a node asks certificates for are bounded in number and
    // length; names that are no host are dropped, not an error.
    let wanted = |names: Vec<String>| {
        let body = serde_json::json!({
            "node_id": "edge-1", "name": "edge-1", "zone": "zone-c", "role": "edge", "routing_version": version,
            "snapshot_age_ms": 5, "ready": true, "draining": false, "refused": null,
            "software": "test", "edge_addr": null, "wanted_certs": names,
        });
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        http_request(
            &server.api_url_addr(),
            "POST",
            "127.0.0.1",
            "/api/v1/nodes/heartbeat",
            &headers,
            body.to_string().as_bytes(),
        )
        .unwrap()
    };
    let many = wanted((0..257).map(|i| format!("h{i}.localhost")).collect());
    assert_eq!(many.status, 400);
    assert!(String::from_utf8_lossy(&many.body).contains("wanted_certs"));
    assert_eq!(wanted(vec!["x".repeat(254)]).status, 400);
    assert_eq!(wanted(vec!["not a host".into(), "..".into(), "docs.localhost".into()]).status, 200);

    // Stopping ends a waiting long-poll at once and exits cleanly.
    let (api, auth) = (server.api_url_addr(), format!("Bearer {token}"));
    let poll = std::thread::spawn(move || {
        let t = Instant::now();
        let r = http_request(
            &api,
            "GET",
            "127.0.0.1",
            &format!("/api/v1/nodes/routing?after={version}&wait=9"),
            &[("authorization", &auth)],
            b"",
        );
        (r.map(|r| r.status).ok(), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let (answer, waited) = poll.join().unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(5), "{:?}", stopping.elapsed());
    assert!(waited < Duration::from_secs(5), "the long-poll ended with the server: {answer:?} after {waited:?}");
}

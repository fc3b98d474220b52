//! Automatic certificates through the binary, against a real ACME CA
//! (Debian's pebble, with pebble-challtestsrv answering 127.0.0.1 for every
//! name): `chanto serve --https --acme-directory` orders a certificate for a
//! custom domain once it is verified, the CA validates HTTP-01 on the real
//! edge, and the edge serves the certificate by SNI. A name nobody added, or
//! one never verified, creates no order however often it is asked for.

mod util;

#[allow(dead_code)]
#[path = "../../chanto-control/tests/acme/pebble.rs"]
mod pebble;

use std::time::Duration;

use util::{Cli, Server, http_get, write_tree};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `https://{name}/` at `https`, trusting only `root` (PEM).
async fn https_get(root: &str, https: std::net::SocketAddr, name: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
        .resolve(name, https)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = client.get(format!("https://{name}/")).send().await.map_err(|e| format!("{e:?}"))?;
    r.text().await.map_err(|e| e.to_string())
}

/// [`https_get`] of a name whose certificate was just stored: the domain
/// reads `active` a moment before the routing that carries the certificate
/// reaches the edge, so this retries for up to 10 s.
async fn https_served(root: &str, https: std::net::SocketAddr, name: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match https_get(root, https, name).await {
            Ok(body) => return body,
            Err(e) if std::time::Instant::now() >= deadline => panic!("{name} not served over HTTPS within 10 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Pebble, and `chanto serve` ordering from it with site `shop` deployed.
struct Setup {
    ca: pebble::Pebble,
    server: Server,
    edge: String,
    https: std::net::SocketAddr,
    issuing_root: String,
    /// Renewal information in front of the CA, when the test asked for it.
    ari: Option<pebble::AriFront>,
    _tmp: tempfile::TempDir,
}

/// `extra`: more `chanto serve` flags.
async fn start(options: pebble::Options, extra: &[&str]) -> Setup {
    start_with(options, extra, None).await
}

/// [`start`], with chanto ordering through an ARI front serving `windows`
/// when given.
async fn start_with(options: pebble::Options, extra: &[&str], windows: Option<&[(&str, &str)]>) -> Setup {
    // The HTTPS port must be known before the server starts only when the CA
    // validates on it (TLS-ALPN-01); otherwise port 0, so no other test can
    // take it in between.
    let alpn = extra.contains(&"tls-alpn-01");
    let (edge_port, https_port) = (free_port(), if alpn { free_port() } else { 0 });
    let ca = pebble::Pebble::start_with(pebble::Options {
        http_port: Some(edge_port),
        tls_port: alpn.then_some(https_port),
        ..options
    })
    .await;
    let (issuing_root, _) = ca.ca_certificates().await;
    let ari = match windows {
        Some(windows) => {
            let front = ca.ari_front().await;
            front.windows.lock().unwrap().extend(windows.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())));
            Some(front)
        }
        None => None,
    };
    let directory = ari.as_ref().map_or(ca.directory_url.clone(), |f| f.directory_url.clone());
    let tmp = tempfile::tempdir().unwrap();
    let acme_root = tmp.path().join("pebble-https-root.pem");
    std::fs::write(&acme_root, &ca.https_root_pem).unwrap();
    let issued_roots = tmp.path().join("pebble-issuing-root.pem");
    std::fs::write(&issued_roots, &issuing_root).unwrap();
    let edge = format!("127.0.0.1:{edge_port}");
    let https = format!("127.0.0.1:{https_port}");
    let mut args = vec![
        "--edge",
        &edge,
        "--https",
        &https,
        "--domain-check-addr",
        &edge,
        "--acme-directory",
        &directory,
        "--acme-root",
        acme_root.to_str().unwrap(),
        "--acme-email",
        "ops@example.test",
        // Issued chains must lead to a trusted root, as uploads do.
        "--certificate-roots",
        issued_roots.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&tmp.path().join("data"), &args);
    let addresses: serde_json::Value =
        serde_json::from_slice(&std::fs::read(server.data.join("addresses.json")).unwrap()).unwrap();
    let https: std::net::SocketAddr = addresses["https"].as_str().unwrap().parse().unwrap();
    server.cli(&["sites", "create", "shop"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>shop</h1>")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "shop"]).ok();
    Setup { ca, server, edge, https, issuing_root, ari, _tmp: tmp }
}

impl Setup {
    /// The domain as `chanto domains list --json` shows it.
    fn domain(&self, name: &str) -> serde_json::Value {
        let list = self.server.cli(&["domains", "list", "--site", "shop", "--json"]).ok().json();
        list.as_array().unwrap().iter().find(|d| d["name"] == name).cloned().unwrap()
    }

    /// Waits (up to `limit`) until `check` holds of the domain `name`.
    async fn wait_domain(
        &self,
        name: &str,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let d = self.domain(name);
            if check(&d) {
                return d;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} after {limit:?}: {d:#}\nchanto:\n{}\n{}",
                self.server.stderr(),
                self.ca.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_domain_gets_a_certificate_from_the_acme_ca_and_unknown_names_get_none() {
    let Setup { ca, server, edge, https, issuing_root, _tmp, .. } = start(pebble::Options::default(), &[]).await;
    // Added but not verified: served over HTTP, never ordered.
    server.cli(&["domains", "add", "shop.example.test", "--site", "shop", "--no-www"]).ok();
    server.cli(&["domains", "add", "later.example.test", "--site", "shop", "--no-www"]).ok();
    assert_eq!(http_get(&edge, "shop.example.test", "/").unwrap().status, 200);
    // Names nobody added, asked for by SNI and Host, many times.
    for i in 0..20 {
        let name = format!("random{i}.example.test");
        assert!(https_get(&issuing_root, https, &name).await.is_err());
        assert_eq!(http_get(&edge, &name, "/").unwrap().status, 404);
    }

    // Verify: the order starts, the CA checks HTTP-01 on the edge, and the
    // edge serves the certificate by SNI.
    server.cli(&["domains", "verify", "shop.example.test", "--site", "shop"]).ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        match https_get(&issuing_root, https, "shop.example.test").await {
            Ok(body) => break body,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no certificate within 60 s: {e}\n{}\nchanto:\n{}\n{}",
                    server.cli(&["domains", "list", "--site", "shop"]).run().stdout(),
                    server.stderr(),
                    ca.logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(body, "<h1>shop</h1>");
    let list = server.cli(&["domains", "list", "--site", "shop", "--json"]).ok().json();
    let shop = list.as_array().unwrap().iter().find(|d| d["name"] == "shop.example.test").unwrap();
    assert_eq!(shop["state"], "active", "{shop:#}");
    assert_eq!(shop["certificate"]["source"], "acme", "{shop:#}");
    let later = list.as_array().unwrap().iter().find(|d| d["name"] == "later.example.test").unwrap();
    assert_eq!(later["state"], "pending_verification", "never verified, never ordered: {later:#}");
    // Plain HTTP now goes to HTTPS; the ACME path never does.
    let r = http_get(&edge, "shop.example.test", "/x").unwrap();
    assert_eq!((r.status, r.header("location")), (301, Some("https://shop.example.test/x")));
    assert_eq!(http_get(&edge, "shop.example.test", "/.well-known/acme-challenge/t").unwrap().header("location"), None);

    // Exactly one order reached the CA: the verified name's.
    let log = ca.logs();
    let orders = log.lines().filter(|l| l.contains("POST /order-plz")).count();
    assert_eq!(orders, 1, "orders at the CA:\n{log}");
    assert!(!log.contains("random0.example.test") && !log.contains("later.example.test"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_is_answered_by_the_edges_https_listener() {
    let s = start(pebble::Options::default(), &["--acme-challenge", "tls-alpn-01"]).await;
    s.server.cli(&["domains", "add", "alpn.example.test", "--site", "shop", "--no-www"]).ok();
    s.server.cli(&["domains", "verify", "alpn.example.test", "--site", "shop"]).ok();
    let d = s.wait_domain("alpn.example.test", Duration::from_secs(60), |d| d["state"] == "active").await;
    assert_eq!(d["certificate"]["source"], "acme", "{d:#}");
    assert_eq!(https_served(&s.issuing_root, s.https, "alpn.example.test").await, "<h1>shop</h1>");
    // The CA checked over TLS on the HTTPS listener (Pebble makes three
    // validation requests per challenge).
    let metrics = http_get(&s.server.admin, "admin", "/metrics").unwrap().text();
    let answered = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chanto_edge_tls_acme_challenges_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(answered.is_some_and(|n| n >= 1), "{metrics}");
}

/// A DNS-01 hook that publishes at pebble-challtestsrv (the DNS Pebble asks)
/// as it would at a provider's API, and logs each call; it learns where
/// that DNS is from the file `target` (waiting for it), written once Pebble
/// runs. Returns (hook, log, target).
fn dns_hook(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (hook, log, target) = (dir.join("dns-hook"), dir.join("calls.log"), dir.join("dns-management"));
    let script = format!(
        r#"#!/usr/bin/env python3
import json, os, sys, time, urllib.request
action, name, value = sys.argv[1:4]
for _ in range(100):
    if os.path.exists({target:?}):
        break
    time.sleep(0.1)
mgmt = open({target:?}).read().strip()
body = {{"host": name, "value": value}} if action == "present" else {{"host": name}}
path = "set-txt" if action == "present" else "clear-txt"
urllib.request.urlopen(urllib.request.Request("http://" + mgmt + "/" + path, data=json.dumps(body).encode(), method="POST"))
open({log:?}, "a").write(action + " " + name + " " + value + "\n")
"#
    );
    std::fs::write(&hook, script).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    (hook, log, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_domains_wildcard_is_ordered_by_dns_01_and_serves_every_site() {
    let hooks = tempfile::tempdir().unwrap();
    let (hook, log, target) = dns_hook(hooks.path());
    let s = start(
        pebble::Options::default(),
        &["--base-domain", "sites.test", "--acme-challenge", "dns-01", "--acme-dns-hook", hook.to_str().unwrap()],
    )
    .await;
    std::fs::write(&target, s.ca.dns_management.to_string()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let base = loop {
        let base = s.server.cli(&["certs", "base", "--json"]).ok().json();
        if base[0]["certificate"]["source"] == "acme" {
            break base;
        }
        assert!(std::time::Instant::now() < deadline, "{base:#}\n{}\n{}", s.server.stderr(), s.ca.logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(base[0]["pattern"], "*.sites.test", "{base:#}");
    assert_eq!(base[0]["certificate"]["names"], serde_json::json!(["*.sites.test"]), "{base:#}");
    // Every site host is served by it, with no domain added.
    assert_eq!(https_served(&s.issuing_root, s.https, "shop.sites.test").await, "<h1>shop</h1>");
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.lines().any(|l| l.starts_with("present _acme-challenge.sites.test. ")), "{calls}");
    assert!(calls.lines().any(|l| l.starts_with("cleanup _acme-challenge.sites.test. ")), "{calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_01_goes_through_the_operators_hook_and_cleans_up() {
    let hooks = tempfile::tempdir().unwrap();
    let (hook, log, target) = dns_hook(hooks.path());
    let s =
        start(pebble::Options::default(), &["--acme-challenge", "dns-01", "--acme-dns-hook", hook.to_str().unwrap()])
            .await;
    std::fs::write(&target, s.ca.dns_management.to_string()).unwrap();

    s.server.cli(&["domains", "add", "dns.example.test", "--site", "shop", "--no-www"]).ok();
    s.server.cli(&["domains", "verify", "dns.example.test", "--site", "shop"]).ok();
    let d = s.wait_domain("dns.example.test", Duration::from_secs(60), |d| d["state"] == "active").await;
    assert_eq!(d["certificate"]["source"], "acme", "{d:#}");
    assert_eq!(https_served(&s.issuing_root, s.https, "dns.example.test").await, "<h1>shop</h1>");
    // present, then cleanup of the same record.
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<Vec<&str>> = calls.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[0][0], calls[0][1]), ("present", "_acme-challenge.dns.example.test."));
    assert_eq!(calls[1][..2], ["cleanup", "_acme-challenge.dns.example.test."]);
    assert_eq!(calls[0][2], calls[1][2]);
    assert_eq!(calls[0][2].len(), 43, "a base64url SHA-256: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dns_hook_fails_the_order_with_what_it_printed() {
    use std::os::unix::fs::PermissionsExt;
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("dns-hook");
    std::fs::write(&hook, "#!/bin/sh\necho \"provider said: zone $2 not found\" >&2\nexit 7\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s =
        start(pebble::Options::default(), &["--acme-challenge", "dns-01", "--acme-dns-hook", hook.to_str().unwrap()])
            .await;
    s.server.cli(&["domains", "add", "nodns.example.test", "--site", "shop", "--no-www"]).ok();
    s.server.cli(&["domains", "verify", "nodns.example.test", "--site", "shop"]).ok();
    let d = s.wait_domain("nodns.example.test", Duration::from_secs(60), |d| d["state"] == "failed").await;
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("exit status: 7") && reason.contains("zone _acme-challenge.nodns.example.test. not found"),
        "{d:#}"
    );
    assert!(d["hint"].as_str().unwrap().contains("DNS hook"), "{d:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_hosts_asked_for_over_https_get_a_certificate_on_demand_and_unknown_ones_never() {
    let s = start(pebble::Options::default(), &["--base-domain", "sites.test"]).await;
    // Hosts that route to no site (or no branch of it), asked for by SNI
    // many times: no order, ever.
    for i in 0..10 {
        for host in [format!("nosuch{i}.sites.test"), format!("x{i}--shop.sites.test"), format!("a.b{i}.sites.test")] {
            assert!(https_get(&s.issuing_root, s.https, &host).await.is_err(), "{host}");
        }
    }
    // The site's own host: the first handshake fails (no certificate yet)
    // and asks for one; the CA checks HTTP-01 on the edge; then it serves.
    assert!(https_get(&s.issuing_root, s.https, "shop.sites.test").await.is_err());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        match https_get(&s.issuing_root, s.https, "shop.sites.test").await {
            Ok(body) => break body,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no certificate within 60 s: {e}\n{}\n{}",
                    s.server.stderr(),
                    s.ca.logs()
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    assert_eq!(body, "<h1>shop</h1>");
    let base = s.server.cli(&["certs", "base", "--json"]).ok().json();
    let shop = base.as_array().unwrap().iter().find(|b| b["pattern"] == "shop.sites.test").cloned();
    let shop = shop.unwrap_or_else(|| panic!("{base:#}"));
    assert_eq!(shop["certificate"]["source"], "acme", "{base:#}");
    assert_eq!(shop["certificate"]["names"], serde_json::json!(["shop.sites.test"]), "{base:#}");
    // Plain HTTP to it is as before (no redirect).
    assert_eq!(http_get(&s.edge, "shop.sites.test", "/").unwrap().status, 200);
    // Exactly one order reached the CA: the site's host.
    let log = s.ca.logs();
    assert_eq!(log.lines().filter(|l| l.contains("POST /order-plz")).count(), 1, "{log}");
    assert!(!log.contains("nosuch") && !log.contains("x0--shop"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_at_a_third_of_their_life_and_a_failing_ca_keeps_the_old_one() {
    // 30 s certificates: renewal falls due 20 s after each is issued.
    let mut s = start(pebble::Options { validity_secs: Some(30), ..Default::default() }, &[]).await;
    s.server.cli(&["domains", "add", "shop.example.test", "--site", "shop", "--no-www"]).ok();
    s.server.cli(&["domains", "verify", "shop.example.test", "--site", "shop"]).ok();
    let first = s.wait_domain("shop.example.test", Duration::from_secs(60), |d| d["state"] == "active").await;
    let first_id = first["certificate"]["id"].as_str().unwrap().to_owned();
    // Renewed: a new certificate replaces it, the name stays active throughout.
    let second = s
        .wait_domain("shop.example.test", Duration::from_secs(60), |d| {
            assert_eq!(d["state"], "active", "{d:#}");
            d["certificate"]["id"].as_str().is_some_and(|id| id != first_id)
        })
        .await;
    assert_eq!(second["certificate"]["source"], "acme");
    assert_eq!(https_get(&s.issuing_root, s.https, "shop.example.test").await.unwrap(), "<h1>shop</h1>");
    // The CA goes away: the next renewal fails, the old certificate is
    // still served, and the domain says why it is not renewed.
    s.ca.stop_ca();
    let failing = s
        .wait_domain("shop.example.test", Duration::from_secs(60), |d| {
            d["reason"].as_str().is_some_and(|r| r.contains("renewal failed"))
        })
        .await;
    assert_eq!(failing["state"], "active", "{failing:#}");
    assert_eq!(failing["certificate"]["id"], second["certificate"]["id"]);
    assert!(failing["hint"].as_str().unwrap().contains("tries again in"), "{failing:#}");
    assert_eq!(https_get(&s.issuing_root, s.https, "shop.example.test").await.unwrap(), "<h1>shop</h1>");
    // Once the old certificate has expired, a failed renewal fails the name
    // (`domains verify` tries at once instead of after the backoff).
    let left = failing["certificate"]["days_left"].as_i64().unwrap();
    assert_eq!(left, 0, "{failing:#}");
    let until = parse_time(failing["certificate"]["not_after"].as_str().unwrap());
    while std::time::SystemTime::now() < until + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.server.cli(&["domains", "verify", "shop.example.test", "--site", "shop"]).ok();
    let failed = s.wait_domain("shop.example.test", Duration::from_secs(30), |d| d["state"] == "failed").await;
    assert!(failed["reason"].as_str().unwrap().contains("expired"), "{failed:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_renewal_window_renews_early_and_later_windows_are_kept_to() {
    // Pebble's certificates here live about five years, so a third of the
    // lifetime is years away: a renewal within the test is the window's
    // doing. The first certificate's window has passed (as for one the CA
    // is about to revoke); the next one's is far off.
    let windows = [("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"), ("2099-01-01T00:00:00Z", "2099-01-02T00:00:00Z")];
    let s = start_with(pebble::Options::default(), &[], Some(&windows)).await;
    s.server.cli(&["domains", "add", "shop.example.test", "--site", "shop", "--no-www"]).ok();
    s.server.cli(&["domains", "verify", "shop.example.test", "--site", "shop"]).ok();
    let first = s.wait_domain("shop.example.test", Duration::from_secs(60), |d| d["state"] == "active").await;
    let first_id = first["certificate"]["id"].as_str().unwrap().to_owned();
    let second = s
        .wait_domain("shop.example.test", Duration::from_secs(30), |d| {
            assert_eq!(d["state"], "active", "{d:#}");
            d["certificate"]["id"].as_str().is_some_and(|id| id != first_id)
        })
        .await;
    assert_eq!(https_get(&s.issuing_root, s.https, "shop.example.test").await.unwrap(), "<h1>shop</h1>");
    // The new certificate's window is in 2099: it is asked about once and
    // kept (no renewal loop), over several passes.
    let ari = s.ari.as_ref().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ari.asked.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the new certificate was never asked about");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.domain("shop.example.test")["certificate"]["id"], second["certificate"]["id"]);
    let asked = ari.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "each certificate asked about once (the CA said: again in 6 hours): {asked:?}");
    assert_ne!(asked[0], asked[1]);
    let log = s.server.stderr();
    assert!(log.contains("renewal window (ARI)") && log.contains("2099-01-01"), "{log}");
}

/// An RFC 3339 UTC time as the API prints it (`2026-12-06T23:40:01Z`).
fn parse_time(t: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_store_order_each_name_once_and_both_serve_it() {
    use chanto_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
    let url = chanto_testkit::pg::shared().create_database("acme_two");
    let s3 = S3Server::start();
    let bucket = s3.create_bucket();
    let blobs = format!("s3://{bucket}/prod");
    let endpoint = s3.endpoint();
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY), ("AWS_REGION", "us-east-1")];
    let edge_port = free_port();
    let ca = pebble::Pebble::start_with(pebble::Options { http_port: Some(edge_port), ..Default::default() }).await;
    let (issuing_root, _) = ca.ca_certificates().await;
    let tmp = tempfile::tempdir().unwrap();
    let acme_root = tmp.path().join("acme-root.pem");
    std::fs::write(&acme_root, &ca.https_root_pem).unwrap();
    let issued_roots = tmp.path().join("issuing-root.pem");
    std::fs::write(&issued_roots, &issuing_root).unwrap();
    let edge_a = format!("127.0.0.1:{edge_port}");
    let common = [
        "--meta",
        &url,
        "--blobs",
        &blobs,
        "--s3-endpoint",
        &endpoint,
        "--https",
        "127.0.0.1:0",
        "--domain-check-addr",
        &edge_a,
        "--acme-directory",
        &ca.directory_url,
        "--acme-root",
        acme_root.to_str().unwrap(),
        "--certificate-roots",
        issued_roots.to_str().unwrap(),
    ];
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = Server::start_cmd_env("serve", &data_a, &[&common[..], &["--edge", &edge_a]].concat(), &env);
    // The same install: its id, its sealing key and its admin token.
    std::fs::create_dir_all(&data_b).unwrap();
    for f in ["install-id", "secret.key", "admin.token"] {
        std::fs::copy(data_a.join(f), data_b.join(f)).unwrap();
    }
    let b = Server::start_cmd_env("serve", &data_b, &common, &env);
    let https_of = |s: &Server| -> std::net::SocketAddr {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(s.data.join("addresses.json")).unwrap()).unwrap();
        v["https"].as_str().unwrap().parse().unwrap()
    };
    a.cli(&["sites", "create", "shop"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>shop</h1>")]);
    a.cli(&["deploy", site.to_str().unwrap(), "--site", "shop"]).ok();
    a.cli(&["domains", "add", "shop.example.test", "--site", "shop", "--no-www"]).ok();
    // Both nodes are woken for the name at about the same time.
    let (va, vb) = std::thread::scope(|sc| {
        let va = sc.spawn(|| a.cli(&["domains", "verify", "shop.example.test", "--site", "shop"]).run());
        let vb = sc.spawn(|| b.cli(&["domains", "verify", "shop.example.test", "--site", "shop"]).run());
        (va.join().unwrap(), vb.join().unwrap())
    });
    assert!(va.out.status.success() && vb.out.status.success(), "{}\n{}", va.report(), vb.report());
    // Both edges serve it by SNI.
    for (node, server) in [("A", &a), ("B", &b)] {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while https_get(&issuing_root, https_of(server), "shop.example.test").await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "node {node} serves no certificate\nA:\n{}\nB:\n{}\n{}",
                a.stderr(),
                b.stderr(),
                ca.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // One order, one certificate: the other node found the lease taken or the name done.
    let log = ca.logs();
    assert_eq!(log.lines().filter(|l| l.contains("POST /order-plz")).count(), 1, "{log}");
    let accounts = log.lines().filter(|l| l.contains("POST /sign-me-up")).count();
    assert!(accounts <= 2, "{log}");
}

#[test]
fn serve_refuses_acme_flags_it_cannot_use_and_says_what_to_give() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let d = d.to_str().unwrap();
    let key = tmp.path().join("eab.key");
    let (empty, spaced) = (tmp.path().join("empty.key"), tmp.path().join("spaced.key"));
    std::fs::write(&key, "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W\n").unwrap();
    std::fs::write(&empty, "\n").unwrap();
    std::fs::write(&spaced, "not a key at all").unwrap();
    let (key, empty, spaced) = (key.to_str().unwrap(), empty.to_str().unwrap(), spaced.to_str().unwrap());
    let dir = ["--acme-directory", "https://acme.example.test/dir"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--acme-directory", "http://acme.example.test/dir"], "is not an https:// URL"),
        (vec!["--acme-directory", "not a url"], "is not an https:// URL"),
        ([&dir[..], &["--acme-email", "nobody"]].concat(), "is not an email address"),
        ([&dir[..], &["--acme-challenge", "tls-alpn-01"]].concat(), "needs --https"),
        ([&dir[..], &["--acme-challenge", "dns-99"]].concat(), "invalid value 'dns-99'"),
        ([&dir[..], &["--acme-challenge", "dns-01"]].concat(), "needs --acme-dns-hook PATH"),
        (
            [&dir[..], &["--acme-challenge", "dns-01", "--acme-dns-hook", "/nonexistent/hook"]].concat(),
            "executable script",
        ),
        ([&dir[..], &["--acme-challenge", "dns-01", "--acme-dns-hook", key]].concat(), "chmod +x"),
        ([&dir[..], &["--acme-dns-hook", key]].concat(), "with --acme-challenge dns-01 only"),
        ([&dir[..], &["--acme-eab-kid", "kid-1"]].concat(), "--acme-eab-key-file"),
        (
            [&dir[..], &["--acme-eab-kid", "kid-1", "--acme-eab-key-file", "/nonexistent/eab"]].concat(),
            "cannot read it",
        ),
        ([&dir[..], &["--acme-eab-kid", "kid-1", "--acme-eab-key-file", empty]].concat(), "not a base64url HMAC key"),
        ([&dir[..], &["--acme-eab-kid", "kid-1", "--acme-eab-key-file", spaced]].concat(), "not a base64url HMAC key"),
        ([&dir[..], &["--acme-eab-kid", " ", "--acme-eab-key-file", key]].concat(), "is not a key id"),
        (vec!["--no-acme", "--acme-eab-kid", "k", "--acme-eab-key-file", key], "cannot be used with"),
    ];
    for (args, expected) in cases {
        let mut all =
            vec!["serve", "--data", d, "--edge", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
        all.extend_from_slice(&args);
        let run = Cli::new(&all).env_remove("CHANTO_META").fails();
        assert!(run.stderr().contains(expected), "{args:?}: expected {expected:?} in\n{}", run.stderr());
    }
}

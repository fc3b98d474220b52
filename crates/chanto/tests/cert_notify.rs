//! Certificate notifications through the real binary: `certificate.failed` when the ACME CA is down (a closed
//! port), told once for the first failure and not again on the next retry, and `certificate.expiring` for an
//! uploaded certificate 5 days from its end, told once per certificate even across a restart. Webhooks are real
//! HTTP receivers on loopback; signatures are checked as a receiver would.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chanto_testkit::tls::TestCa;
use util::receiver::{Answer, HeldPort, Receiver, Recorded};
use util::{Server, wait_for, write_tree};

const LIMIT: Duration = Duration::from_secs(30);

fn ok(_: &Recorded) -> Answer {
    (200, vec![], "ok".into())
}

/// A port that was free a moment ago (the edge must be known before the server starts: `--domain-check-addr`
/// points at it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Subscribes a webhook at `url` to `events` (empty: all) of `site`; returns its signing secret.
fn subscribe(server: &Server, site: &str, url: &str, events: &str) -> String {
    let mut args = vec!["notify", "add", "webhook", "--site", site, "--url", url, "--json"];
    if !events.is_empty() {
        args.extend(["--events", events]);
    }
    server.cli(&args).ok().json()["secret"].as_str().unwrap().to_owned()
}

/// Checks a delivery's signature as a receiver does, and returns its event.
fn verified_event(r: &Recorded, secret: &str) -> serde_json::Value {
    let header = |name: &str| r.header(name).map(str::to_owned);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    chanto_notify::verify(secret.as_bytes(), &header, &r.body, now, 300).expect("a correctly signed delivery");
    let event = r.json()["event"].clone();
    assert_eq!(r.header("x-chanto-event"), event["kind"].as_str(), "{event}");
    assert_eq!(r.header("x-chanto-delivery"), event["id"].as_str(), "{event}");
    event
}

fn deploy_site(server: &Server, dir: &Path, site: &str) {
    write_tree(dir, &[("index.html", "<h1>docs</h1>")]);
    server.cli(&["sites", "create", site]).ok();
    server.cli(&["deploy", dir.to_str().unwrap(), "--site", site]).ok();
}

#[test]
fn an_acme_ca_that_is_down_is_told_once_per_failure_streak() {
    let tmp = tempfile::tempdir().unwrap();
    // The CA is down: a port bound but not listening refuses every connection.
    let ca = HeldPort::new();
    let directory = format!("https://{}/dir", ca.addr());
    let edge = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        &tmp.path().join("data"),
        &["--edge", &edge, "--https", "127.0.0.1:0", "--domain-check-addr", &edge, "--acme-directory", &directory],
    );
    deploy_site(&server, &tmp.path().join("site"), "docs");
    let hook = Receiver::start(ok);
    let everything = Receiver::start(ok);
    let builds = Receiver::start(ok);
    let secret = subscribe(&server, "docs", &hook.url("/cert"), "certificate.failed");
    subscribe(&server, "docs", &everything.url("/all"), "");
    subscribe(&server, "docs", &builds.url("/builds"), "build.failed,deploy.activated");

    server.cli(&["domains", "add", "docs.example.com", "--site", "docs", "--no-www"]).ok();
    server.cli(&["domains", "verify", "docs.example.com", "--site", "docs"]).ok();

    // The first failure is told, with the domain, why and what to do.
    let got = hook.wait("certificate.failed", LIMIT, |r| !r.is_empty());
    let event = verified_event(&got[0], &secret);
    let report = format!("{event:#}\nchanto:\n{}", server.stderr());
    assert_eq!(event["kind"], "certificate.failed", "{report}");
    assert_eq!(event["site"], "docs", "{report}");
    assert_eq!(event["branch"], "main", "the production branch the domain serves: {report}");
    assert_eq!(event["domain"], "docs.example.com", "{report}");
    let domain = server.cli(&["domains", "list", "--site", "docs", "--json"]).ok().json()[0].clone();
    assert_eq!(domain["state"], "failed", "{domain}");
    assert_eq!(event["error"], domain["reason"], "the reason is the domain's: {report}");
    assert!(!event["error"].as_str().unwrap().is_empty(), "{report}");
    let hint = event["hint"].as_str().unwrap();
    assert!(hint.contains("attempt 1") && hint.contains("chanto domains verify docs.example.com"), "{report}");
    assert_eq!(event["commit"], serde_json::Value::Null, "{report}");
    // A subscription to every event hears of it too; one to other events does not.
    everything.wait("certificate.failed to an all-events subscription", LIMIT, |r| !r.is_empty());

    // Verifying again retries at once: the second failure of the streak is not told.
    server.cli(&["domains", "verify", "docs.example.com", "--site", "docs"]).ok();
    let line = wait_for("the second failure", LIMIT, || {
        let err = server.stderr();
        err.lines()
            .find(|l| l.contains("certificate") && l.contains("notified") && l.contains("attempts=2"))
            .map(str::to_owned)
    });
    assert!(line.contains("not notified"), "{line}");
    let domain = server.cli(&["domains", "list", "--site", "docs", "--json"]).ok().json()[0].clone();
    assert!(domain["hint"].as_str().unwrap().contains("attempt 2"), "{domain}");
    assert_eq!(hook.requests().len(), 1, "told once: {:?}", hook.requests());
    let all = everything.requests();
    assert_eq!(all.len(), 1, "{:?}", all.iter().map(|r| r.json()).collect::<Vec<_>>());
    assert_eq!(all[0].json()["event"]["kind"], "certificate.failed");
    assert!(builds.requests().is_empty(), "an explicit event list gets only what it lists");
    // It went through the outbox: the delivery log shows it, delivered, to
    // the two subscriptions that hear it (and no other).
    let log = server.cli(&["notify", "deliveries", "--site", "docs", "--json"]).ok().json();
    let sent: Vec<&serde_json::Value> =
        log.as_array().unwrap().iter().filter(|d| d["event"] == "certificate.failed").collect();
    assert_eq!(sent.len(), 2, "{log}");
    assert!(sent.iter().all(|d| d["state"] == "delivered" && d["action"] == "send"), "{log}");
    drop(ca);
}

/// Issues a leaf for `names` from the CA `name` in `dir` (as `TestCa::in_dir` made it), valid for `days` days.
fn leaf(dir: &Path, name: &str, names: &[&str], days: u32) -> (PathBuf, PathBuf) {
    let stem = format!("{name}-{}-{days}d", names[0]);
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    let cnf = format!(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = {}\n[leaf_ext]\nbasicConstraints = critical, \
         CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = {}\n\
         authorityKeyIdentifier = keyid\n",
        names[0],
        sans.join(", ")
    );
    std::fs::write(dir.join(format!("{stem}.cnf")), cnf).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (cnf, key, csr, pem) =
        (format!("{stem}.cnf"), format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.pem"));
    run(&[
        "req",
        "-config",
        &cnf,
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    let (ca_pem, ca_key, days) = (format!("{name}.pem"), format!("{name}.key"), days.to_string());
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        &days,
        "-extfile",
        &cnf,
        "-extensions",
        "leaf_ext",
        "-out",
        &pem,
    ]);
    (dir.join(pem), dir.join(key))
}

#[test]
fn an_uploaded_certificate_near_its_end_is_warned_of_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    let ca = TestCa::in_dir(&ca_dir, "expiring");
    let edge = format!("127.0.0.1:{}", free_port());
    let roots = ca.cert();
    let args = [
        "--edge",
        &edge,
        "--https",
        "127.0.0.1:0",
        "--domain-check-addr",
        &edge,
        "--certificate-roots",
        roots.to_str().unwrap(),
        // Uploaded certificates only: the warning must not depend on the ACME loop.
        "--no-acme",
    ];
    let data = tmp.path().join("data");
    let server = Server::start(&data, &args);
    deploy_site(&server, &tmp.path().join("site"), "docs");
    let hook = Receiver::start(ok);
    let secret = subscribe(&server, "docs", &hook.url("/cert"), "certificate.expiring");
    let others = Receiver::start(ok);
    subscribe(&server, "docs", &others.url("/failed"), "certificate.failed");

    // The apex and its www twin share one certificate: one warning, naming the apex.
    server.cli(&["domains", "add", "example.com", "--site", "docs"]).ok();
    let (cert, key) = leaf(&ca_dir, "expiring", &["example.com", "www.example.com"], 5);
    let upload = |domain: &str, cert: &Path, key: &Path| {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        server.cli(&["certs", "upload", "--domain", domain, "--site", "docs", "--cert", cert, "--key", key]).ok()
    };
    upload("example.com", &cert, &key);
    let got = hook.wait("certificate.expiring", LIMIT, |r| !r.is_empty());
    let event = verified_event(&got[0], &secret);
    let report = format!("{event:#}\nchanto:\n{}", server.stderr());
    assert_eq!(event["kind"], "certificate.expiring", "{report}");
    assert_eq!(event["domain"], "example.com", "{report}");
    assert_eq!(event["branch"], "main", "{report}");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let left = event["expires_at_ms"].as_i64().unwrap() - now_ms;
    assert!((4 * 86_400_000..=5 * 86_400_000 + 60_000).contains(&left), "about 5 days left: {report}");
    let error = event["error"].as_str().unwrap();
    assert!(error.contains("uploaded") && error.contains("example.com, www.example.com"), "{report}");
    let hint = event["hint"].as_str().unwrap();
    assert!(hint.contains("chanto certs upload --domain example.com --site docs"), "{report}");
    assert!(event["id"].as_str().unwrap().starts_with("evt_cert_expiring7_"), "the 7-day warning: {report}");

    // A restart looks again at once; a second certificate uploaded after it is warned of by a look that also
    // saw the first, which is not warned of again.
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let server = Server::start(&data, &args);
    server.cli(&["domains", "add", "blog.example.com", "--site", "docs", "--no-www"]).ok();
    let (cert2, key2) = leaf(&ca_dir, "expiring", &["blog.example.com"], 5);
    let (cert2, key2) = (cert2.to_str().unwrap().to_owned(), key2.to_str().unwrap().to_owned());
    server
        .cli(&["certs", "upload", "--domain", "blog.example.com", "--site", "docs", "--cert", &cert2, "--key", &key2])
        .ok();
    let got = hook.wait("the second certificate's warning", LIMIT, |r| r.len() >= 2);
    let domains: Vec<String> =
        got.iter().map(|r| verified_event(r, &secret)["domain"].as_str().unwrap().to_owned()).collect();
    assert_eq!(domains, ["example.com", "blog.example.com"], "one warning each:\n{}", server.stderr());
    assert!(others.requests().is_empty(), "a certificate.failed subscription hears of no expiry");
}

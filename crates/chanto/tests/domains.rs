//! Custom domains through the real binary: `chanto domains add`, the edge
//! answering the name over HTTP at once, `chanto domains verify` reaching the
//! ownership token through the edge, `chanto certs upload` of a certificate
//! from a private CA (`--certificate-roots`), and `chanto serve --https`
//! serving it by SNI to a real TLS client (chain, name and ALPN checked),
//! over HTTP/2 and HTTP/1.1, with HTTP → HTTPS, the primary redirect and
//! HSTS. Hostile input at the CLI gets errors that name the field and the fix.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use chanto_testkit::tls::TestCa;
use util::{Server, http_get, http_request, write_tree};

/// A port that was free a moment ago (the edge must be known before the
/// server starts: `--domain-check-addr` points at it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A TLS client that trusts only `ca`, sends every name to `https`, and
/// does not follow redirects.
fn tls_client(ca: &TestCa, https: SocketAddr, names: &[&str], http1: bool) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(ca.cert()).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    for name in names {
        b = b.resolve(name, https);
    }
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

struct Setup {
    server: Server,
    ca: TestCa,
    https: SocketAddr,
    _tmp: tempfile::TempDir,
}

fn start() -> Setup {
    start_with(&[])
}

/// `start` with more `chanto serve` flags.
fn start_with(extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::in_dir(tmp.path(), "domains-e2e");
    let port = free_port();
    let edge = format!("127.0.0.1:{port}");
    let roots = ca.cert();
    let server = Server::start(
        &tmp.path().join("data"),
        &[
            "--edge",
            &edge,
            "--https",
            "127.0.0.1:0",
            "--domain-check-addr",
            &edge,
            "--certificate-roots",
            roots.to_str().unwrap(),
            // Uploaded certificates only: no ACME CA here (tests/acme.rs has one).
            "--no-acme",
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
    );
    let addresses: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(server.data.join("addresses.json")).unwrap()).unwrap();
    let https = addresses["https"].as_str().expect("addresses.json names the HTTPS listener").parse().unwrap();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>docs</h1>"), ("a.txt", "file a")]);
    for name in ["docs", "blog"] {
        server.cli(&["sites", "create", name]).ok();
        server.cli(&["deploy", site.to_str().unwrap(), "--site", name]).ok();
    }
    Setup { server, ca, https, _tmp: tmp }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_is_added_verified_given_a_certificate_and_served_over_https() {
    let Setup { server, ca, https, _tmp } = start();
    let edge = server.edge.clone();

    // Add the apex: its www twin comes with it, both waiting for verification.
    let added = server.cli(&["domains", "add", "Example.COM", "--site", "docs", "--json"]).ok().json();
    let names: Vec<&str> = added.as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["example.com", "www.example.com"], "{added}");
    assert!(added.as_array().unwrap().iter().all(|d| d["state"] == "pending_verification"), "{added}");
    // The edge answers it over HTTP at once; the twin redirects to the primary.
    let home = http_get(&edge, "example.com", "/").unwrap();
    assert_eq!((home.status, home.text().as_str()), (200, "<h1>docs</h1>"));
    let www = http_get(&edge, "www.example.com", "/a.txt?x=1").unwrap();
    assert_eq!(www.status, 301);
    assert_eq!(www.header("location"), Some("http://example.com/a.txt?x=1"));
    // No certificate yet: the HTTPS listener gives the name no handshake.
    let client = tls_client(&ca, https, &["example.com", "www.example.com"], false);
    assert!(client.get("https://example.com/").send().await.is_err());

    // Verify: the server fetches the token through the edge (--domain-check-addr).
    let list = server.cli(&["domains", "list", "--site", "docs"]).ok().stdout();
    assert!(list.contains("pending_verification") && list.contains("chanto domains verify"), "{list}");
    let verified = server.cli(&["domains", "verify", "example.com", "--site", "docs", "--json"]).ok().json();
    assert!(verified["verified_at"].is_string(), "{verified}");

    // Upload a certificate from the private CA for both names.
    let leaf = ca.issue(&["example.com", "www.example.com"]);
    let up = server
        .cli(&[
            "certs",
            "upload",
            "--domain",
            "example.com",
            "--site",
            "docs",
            "--cert",
            leaf.cert.to_str().unwrap(),
            "--key",
            leaf.key.to_str().unwrap(),
        ])
        .ok()
        .stdout();
    assert!(up.contains("example.com") && up.contains("certificate:"), "{up}");
    // Plain HTTP now goes to HTTPS (301 for GET, 308 for a POST) — never the ACME path.
    let r = http_get(&edge, "example.com", "/a.txt?q=1").unwrap();
    assert_eq!((r.status, r.header("location")), (301, Some("https://example.com/a.txt?q=1")));
    let post = http_request(&edge, "POST", "example.com", "/form", &[], b"x=1").unwrap();
    assert_eq!((post.status, post.header("location")), (308, Some("https://example.com/form")));
    let acme = http_get(&edge, "example.com", "/.well-known/acme-challenge/abc").unwrap();
    assert_eq!(acme.header("location"), None);

    // HTTPS by SNI: HTTP/2 by ALPN, and HTTP/1.1; the chain and the name check out.
    for http1 in [false, true] {
        let client = tls_client(&ca, https, &["example.com", "www.example.com"], http1);
        let r = client.get("https://example.com/a.txt").send().await.unwrap();
        let want = if http1 { reqwest::Version::HTTP_11 } else { reqwest::Version::HTTP_2 };
        assert_eq!((r.status().as_u16(), r.version()), (200, want));
        assert!(r.headers().get("strict-transport-security").is_none(), "no HSTS until the site asks for it");
        assert_eq!(r.text().await.unwrap(), "file a");
        let r = client.get("https://www.example.com/p").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 301);
        assert_eq!(r.headers()["location"], "https://example.com/p");
    }
    // A name the certificate does not cover, served by nobody: no handshake.
    let other = tls_client(&ca, https, &["blog.example.com"], false);
    assert!(other.get("https://blog.example.com/").send().await.is_err());

    // HSTS per site, over TLS only (on the redirect too).
    let settings = server.cli(&["domains", "https", "--site", "docs", "--hsts-max-age", "31536000"]).ok().stdout();
    assert!(settings.contains("HSTS: max-age=31536000"), "{settings}");
    let r = client.get("https://example.com/").send().await.unwrap();
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    let r = client.get("https://www.example.com/").send().await.unwrap();
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(http_get(&edge, "example.com", "/").unwrap().header("strict-transport-security"), None);

    // The list shows the state and the certificate's days.
    let list = server.cli(&["domains", "list", "--site", "docs"]).ok().stdout();
    assert!(list.contains("active") && list.contains(" days"), "{list}");

    // Removing the domain takes its twin, its routes and its certificate.
    server.cli(&["domains", "remove", "example.com", "--site", "docs"]).ok();
    assert_eq!(http_get(&edge, "example.com", "/").unwrap().status, 404);
    // A new connection gets no handshake (open ones may finish their work).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let fresh = || tls_client(&ca, https, &["example.com"], false);
    while fresh().get("https://example.com/").send().await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the removed domain's certificate is still served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_wildcard_serves_every_site_host_over_https() {
    // (A wildcard needs two labels under it: `*.localhost`, the default, is
    // refused by TLS clients, so this server has a base domain of its own.)
    let Setup { server, ca, https, _tmp } = start_with(&["--base-domain", "sites.test"]);
    let hosts = ["docs.sites.test", "blog.sites.test"];
    let client = tls_client(&ca, https, &hosts, false);
    // Before: site hosts get no handshake, and nothing is listed.
    assert!(client.get("https://docs.sites.test/").send().await.is_err());
    let base = server.cli(&["certs", "base", "--json"]).ok().json();
    assert_eq!(
        (base[0]["pattern"].as_str(), &base[0]["certificate"]),
        (Some("*.sites.test"), &serde_json::Value::Null)
    );
    assert!(server.cli(&["certs", "base"]).ok().stdout().contains("no certificate"));

    // A certificate for other names is refused, naming the pattern wanted
    // and the file.
    let other = ca.issue(&["*.example.test"]);
    let refused = server
        .cli(&[
            "certs",
            "upload",
            "--base",
            "--cert",
            other.cert.to_str().unwrap(),
            "--key",
            other.key.to_str().unwrap(),
        ])
        .fails();
    assert!(
        refused.stderr().contains("--cert") && refused.stderr().contains("a wildcard for *.sites.test"),
        "{}",
        refused.stderr()
    );
    let refused = server.cli(&["certs", "upload", "--base", "--site", "docs", "--cert", "x", "--key", "y"]).fails();
    assert!(refused.stderr().contains("cannot be used with"), "{}", refused.stderr());

    // The wildcard: every site's host is served over HTTP/2 and HTTP/1.1.
    let leaf = ca.issue(&["*.sites.test"]);
    let up = server
        .cli(&["certs", "upload", "--base", "--cert", leaf.cert.to_str().unwrap(), "--key", leaf.key.to_str().unwrap()])
        .ok()
        .stdout();
    assert!(up.contains("*.sites.test: upload from"), "{up}");
    for (host, http1) in [("docs.sites.test", false), ("blog.sites.test", true)] {
        let client = tls_client(&ca, https, &hosts, http1);
        let r = client.get(format!("https://{host}/")).send().await.unwrap();
        let version = r.version();
        assert_eq!((r.status().as_u16(), r.text().await.unwrap().as_str()), (200, "<h1>docs</h1>"), "{host}");
        assert_eq!(version, if http1 { reqwest::Version::HTTP_11 } else { reqwest::Version::HTTP_2 });
    }
    // Plain HTTP to site hosts is as it was (no redirect).
    assert_eq!(http_get(&server.edge, "docs.sites.test", "/").unwrap().status, 200);
    let base = server.cli(&["certs", "base", "--json"]).ok().json();
    assert_eq!(base[0]["certificate"]["source"], "upload", "{base}");

    // Removed: the hosts get no handshake again; an unknown pattern is a 404.
    let gone = server.cli(&["certs", "remove-base", "*.example.test"]).fails();
    assert!(gone.stderr().contains("*.sites.test"), "{}", gone.stderr());
    server.cli(&["certs", "remove-base", "*.sites.test"]).ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tls_client(&ca, https, &hosts, false).get("https://docs.sites.test/").send().await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still served after removal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn hostile_domain_and_certificate_input_gets_a_clear_error_and_changes_nothing() {
    let Setup { server, ca, _tmp, .. } = start();
    let err = |args: &[&str]| server.cli(args).fails().stderr();

    // Names that are not hostnames, or not domains anyone can own.
    for (name, says) in [
        ("http://example.com/", "scheme"),
        ("example.com:8080", "port"),
        ("127.0.0.1", "IP"),
        ("com", "single label"),
        ("co.uk", "public suffix"),
        ("a..b.com", "empty"),
        ("x-.example.com", "ends with '-'"),
        (&"a".repeat(300), "long"),
    ] {
        let e = err(&["domains", "add", name, "--site", "docs"]);
        assert!(e.to_lowercase().contains(&says.to_lowercase()), "{name}: {e}");
    }
    // The base domain's own names are not custom domains.
    let e = err(&["domains", "add", "docs.localhost", "--site", "docs"]);
    assert!(e.contains("localhost"), "{e}");
    // One site per name; the error names the site that has it.
    server.cli(&["domains", "add", "shop.example.org", "--site", "docs"]).ok();
    let e = err(&["domains", "add", "shop.example.org", "--site", "blog"]);
    assert!(e.contains("docs"), "{e}");
    // No such site, no such domain.
    assert!(err(&["domains", "add", "x.example.org", "--site", "nosite"]).contains("nosite"));
    assert!(err(&["domains", "verify", "nothere.example.org", "--site", "docs"]).contains("nothere.example.org"));

    // Certificates: missing and oversized files, garbage, a key that does
    // not match, names that do not cover the domain, an unknown issuer.
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n").unwrap();
    let huge = dir.path().join("huge.pem");
    std::fs::write(&huge, vec![b'A'; 4 << 20]).unwrap();
    let good = ca.issue(&["shop.example.org"]);
    let other = ca.issue(&["shop.example.org"]);
    let wrong_name = ca.issue(&["else.example.org"]);
    let stranger = TestCa::in_dir(dir.path(), "stranger").issue(&["shop.example.org"]);
    let upload = |cert: &std::path::Path, key: &std::path::Path| {
        err(&[
            "certs",
            "upload",
            "--domain",
            "shop.example.org",
            "--site",
            "docs",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ])
    };
    let missing = dir.path().join("missing.pem");
    let e = upload(&missing, &good.key);
    assert!(e.contains("--cert") && e.contains("missing.pem"), "{e}");
    let e = upload(&huge, &good.key);
    assert!(e.contains("too big"), "{e}");
    let e = upload(&garbage, &good.key);
    assert!(e.contains("--cert") && e.contains("garbage.pem") && e.contains("base64"), "{e}");
    let e = upload(&good.cert, &garbage);
    assert!(e.contains("--key") && e.contains("garbage.pem"), "{e}");
    let e = upload(&good.cert, &other.key);
    assert!(e.contains("key"), "{e}");
    let e = upload(&wrong_name.cert, &wrong_name.key);
    assert!(e.contains("shop.example.org") && e.contains("else.example.org"), "{e}");
    let e = upload(&stranger.cert, &stranger.key);
    assert!(e.to_lowercase().contains("chain") || e.contains("--certificate-roots"), "{e}");
    // Nothing of it stuck: the domain has no certificate.
    let list = server.cli(&["domains", "list", "--site", "docs", "--json"]).ok().json();
    let shop = list.as_array().unwrap().iter().find(|d| d["name"] == "shop.example.org").unwrap();
    assert!(shop["certificate"].is_null(), "{shop}");
    // HSTS preload without what browsers require of it is refused.
    let e = err(&["domains", "https", "--site", "docs", "--hsts-preload", "true"]);
    assert!(e.contains("preload"), "{e}");
}

//! End to end, the edge's trust boundaries as an operator sets them up:
//! proxy origins per site within the operator's list, previews on their own
//! domain, the Public Suffix List warning, and an API listener that does not
//! let a slow client hold a connection.

mod util;

use std::io::{Read, Write};
use std::time::Duration;

use util::{Cli, Server, write_tree};

/// An origin that answers every request with its request line, and the
/// request lines it got.
fn upstream() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (seen, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            let first = head.lines().next().unwrap_or_default().to_owned();
            let _ = seen.send(first.clone());
            let _ =
                write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}", first.len());
        }
    });
    (origin, rx)
}

#[test]
fn proxy_origins_are_allowed_per_site_within_the_operators_list() {
    let (origin, seen) = upstream();
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--proxy-origin", &origin]);
    let rules = format!("/api/*  {origin}/v1/:splat  200\n");
    for site in ["docs", "fork"] {
        server.cli(&["sites", "create", site]).ok();
        let dir = tmp.path().join(site);
        write_tree(&dir, &[("index.html", site), ("_redirects", rules.as_str())]);
        server.cli(&["deploy", dir.to_str().unwrap(), "--site", site]).ok();
    }
    // The operator allows the origin, but no site has asked for it yet.
    assert_eq!(server.get("docs.localhost", "/api/users").status, 502);
    // Given with a trailing slash and an upper-case scheme: shown normalised.
    let given = format!("{}/", origin.replace("http://", "HTTP://"));
    let set = server.cli(&["sites", "proxy-origins", "docs", "--set", &given]).ok();
    let normal = origin.clone();
    assert!(set.stdout().contains(&normal), "{}", set.report());
    let r = server.get("docs.localhost", "/api/users");
    assert_eq!((r.status, r.text()), (200, "GET /v1/users HTTP/1.1".to_owned()));
    assert_eq!(seen.recv_timeout(Duration::from_secs(10)).unwrap(), "GET /v1/users HTTP/1.1");
    // Another site's rules cannot use the origin docs was allowed.
    assert_eq!(server.get("fork.localhost", "/api/users").status, 502);
    let shown = server.cli(&["sites", "proxy-origins", "docs", "--json"]).ok().json();
    assert_eq!(shown["origins"], serde_json::json!([normal]));
    // A site may list an origin the operator does not allow: it still answers 502.
    server.cli(&["sites", "proxy-origins", "fork", "--set", "http://198.51.100.7"]).ok();
    let fork_rules = "/api/*  http://198.51.100.7/:splat  200\n";
    let dir = tmp.path().join("fork2");
    write_tree(&dir, &[("index.html", "fork"), ("_redirects", fork_rules)]);
    server.cli(&["deploy", dir.to_str().unwrap(), "--site", "fork"]).ok();
    assert_eq!(server.get("fork.localhost", "/api/x").status, 502);
    // Bad input names the field and the form expected.
    let bad = server.cli(&["sites", "proxy-origins", "docs", "--set", "api.example.com/x"]).fails();
    assert!(bad.stderr().contains("origins[0]") && bad.stderr().contains("scheme://host"), "{}", bad.report());
    server.cli(&["sites", "proxy-origins", "docs", "--clear"]).ok();
    assert_eq!(server.get("docs.localhost", "/api/users").status, 502);
    assert!(seen.try_recv().is_err(), "no other request reached the origin");
}

#[test]
fn previews_live_on_their_own_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--preview-domain", "previews.test"]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "feature build")]);
    let out = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--branch", "feature"]).ok();
    assert!(out.stdout().contains("feature--docs.previews.test"), "{}", out.report());
    assert!(!out.stdout().contains("--docs.localhost"), "{}", out.report());
    assert_eq!(server.get("feature--docs.previews.test", "/").text(), "feature build");
    assert_eq!(server.get("feature--docs.localhost", "/").status, 404, "previews are not under the base domain");

    // A preview domain under the base domain would share its cookies.
    let bad = Cli::new(&[
        "serve",
        "--data",
        tmp.path().join("d2").to_str().unwrap(),
        "--preview-domain",
        "previews.localhost",
    ])
    .fails();
    assert!(bad.stderr().contains("--preview-domain"), "{}", bad.report());
}

#[test]
fn a_base_domain_not_known_to_be_a_public_suffix_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let warned = Server::start(&tmp.path().join("a"), &["--base-domain", "sites.example.com"]);
    assert!(warned.stderr().contains("Public Suffix List"), "{}", warned.stderr());
    drop(warned);
    let listed =
        Server::start(&tmp.path().join("b"), &["--base-domain", "sites.example.com", "--public-suffix-listed"]);
    assert!(!listed.stderr().contains("Public Suffix List"), "{}", listed.stderr());
    let local = Server::start(&tmp.path().join("c"), &[]);
    assert!(!local.stderr().contains("Public Suffix List"), "localhost needs no warning: {}", local.stderr());
}

/// A client that sends half its headers is disconnected by the API server
/// (10 s by default); the check is that the server closed the connection,
/// the client's own read timeout is only a safety net far beyond it.
#[test]
fn the_api_cuts_off_clients_that_never_finish_their_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let mut s = std::net::TcpStream::connect(server.api_url_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(b"GET /api/v1/sites HTTP/1.1\r\nHost: x").unwrap();
    let mut out = Vec::new();
    let closed = s.read_to_end(&mut out);
    assert!(closed.is_ok(), "the API kept a slow client's connection open: {closed:?}");
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
}

//! Operations with real processes on loopback: draining (`POST /drain` and
//! SIGTERM) under a constant load loses no request; `--auth-request` fails
//! open or closed as the operator chose, against a real little auth
//! service; HAProxy, with the README's own configuration, in front of three
//! servers while one is drained: zero failed requests.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::haproxy::HaProxy;
use util::{Cli, Server, http_get, http_get_with, http_request, wait_for, write_tree};

const BIG: usize = 6 << 20;

/// Creates `site` on `server` and deploys `files` to it.
fn deploy(server: &Server, dir: &Path, site: &str, files: &[(&str, &str)]) {
    write_tree(dir, files);
    server.cli(&["sites", "create", site]).ok();
    server.cli(&["deploy", dir.to_str().unwrap(), "--site", site]).ok();
}

fn admin(server: &Server, method: &str, path: &str) -> util::HttpResponse {
    http_request(&server.admin, method, "127.0.0.1", path, &[], b"").expect("admin request")
}

/// Waits for the server's process to exit; its status and when.
fn wait_exit(server: &mut Server, limit: Duration) -> (std::process::ExitStatus, Instant) {
    let status = wait_for("the server to exit", limit, || server.child.try_wait().unwrap());
    (status, Instant::now())
}

/// Drains `server` (by `POST /drain`, or SIGTERM) under a constant load
/// from clients that stop sending to it once its `/readyz` says 503, as a
/// load balancer does, while a slow download is in flight: every request
/// gets its full answer, and the node exits after the grace period.
fn drain_under_load(mut server: Server, by_signal: bool, grace: Duration) {
    let edge = server.edge.clone();
    let admin_addr = server.admin.clone();
    let pulled = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::<String>::new())));
    // The "load balancer's" health check: every 100 ms, one failure pulls the node.
    let checker = {
        let pulled = pulled.clone();
        std::thread::spawn(move || {
            while !pulled.load(Ordering::SeqCst) {
                match http_get(&admin_addr, "127.0.0.1", "/readyz") {
                    Ok(r) if r.status == 200 => {}
                    _ => pulled.store(true, Ordering::SeqCst),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (edge, pulled, ok, failed) = (edge.clone(), pulled.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !pulled.load(Ordering::SeqCst) {
                    match http_get(&edge, "d.localhost", "/") {
                        Ok(r) if r.status == 200 && r.text() == "drain me" => drop(ok.fetch_add(1, Ordering::Relaxed)),
                        Ok(r) => failed.lock().unwrap().push(format!("{} {}", r.status, r.text())),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    // A slow download, in flight across the end of the grace period.
    let mut slow = TcpStream::connect(&edge).unwrap();
    slow.write_all(b"GET /big.bin HTTP/1.1\r\nHost: d.localhost\r\nConnection: close\r\n\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let download = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match slow.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("the download in flight failed after {} bytes: {e}", got.len()),
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        (got, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    if by_signal {
        let status = std::process::Command::new("kill").arg("-TERM").arg(server.child.id().to_string()).status();
        assert!(status.unwrap().success());
    } else {
        let r = admin(&server, "POST", "/drain");
        assert_eq!(r.status, 202, "{}", r.text());
        assert!(r.text().starts_with("draining"), "{}", r.text());
    }
    // /readyz turns 503 at once (the checker's next probe).
    wait_for("/readyz to answer 503", Duration::from_secs(2), || pulled.load(Ordering::SeqCst).then_some(()));
    let noticed = started.elapsed();
    assert!(noticed < grace, "the drain took {noticed:?} to show on /readyz");
    // Still serving within the grace period (a load balancer that has not noticed yet).
    let r = http_get(&edge, "d.localhost", "/").expect("served during the grace period");
    assert_eq!(r.status, 200);
    let (status, exited) = wait_exit(&mut server, grace + Duration::from_secs(15));
    assert!(status.success(), "the drained server exited with {status}\n{}", server.stderr());
    let took = exited - started;
    assert!(
        took >= grace - Duration::from_millis(50),
        "exited {took:?} after the drain began, before the grace period"
    );
    for t in load {
        t.join().unwrap();
    }
    checker.join().unwrap();
    let (body, done) = download.join().unwrap();
    // It was in flight when the grace period ended and the listener closed.
    assert!(done - started > grace, "the download ended {:?} after the drain began", done - started);
    let split = body.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    assert!(body.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&body[..split]));
    assert_eq!(body.len() - split, BIG, "the download in flight was cut short");
    assert!(body[split..].iter().all(|&b| b == b'x'));
    let failed = failed.lock().unwrap();
    assert!(failed.is_empty(), "{} failed requests while draining: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    assert!(ok.load(Ordering::Relaxed) >= 10, "too little load: {}", ok.load(Ordering::Relaxed));
    eprintln!(
        "drained by {}: {} requests, none failed; /readyz 503 after {noticed:?}; exit after {took:?}",
        if by_signal { "SIGTERM" } else { "POST /drain" },
        ok.load(Ordering::Relaxed)
    );
}

#[test]
fn drain_by_post_and_by_sigterm_loses_no_request() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let grace = Duration::from_millis(1500);
    let flags = ["--drain-grace", "1500ms"];
    let server = Server::start(&data, &flags);
    let big = "x".repeat(BIG);
    deploy(&server, &tmp.path().join("site"), "d", &[("index.html", "drain me"), ("big.bin", &big)]);
    // Only a POST drains; anything else on /drain changes nothing.
    for method in ["GET", "PUT", "DELETE"] {
        assert_eq!(admin(&server, method, "/drain").status, 405, "{method} /drain");
    }
    assert_eq!(admin(&server, "GET", "/readyz").status, 200);
    drain_under_load(server, false, grace);
    let server = Server::start(&data, &flags);
    drain_under_load(server, true, grace);
}

/// A little auth service: answers by the `auth=` parameter of the original
/// URI, and keeps every request head it was sent.
struct AuthService {
    addr: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl AuthService {
    fn start() -> AuthService {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    log.lock().unwrap().push(head.clone());
                    let uri =
                        head.lines().find_map(|l| l.strip_prefix("x-original-uri: ")).unwrap_or_default().to_owned();
                    let verdict =
                        uri.split("auth=").nth(1).unwrap_or("ok").split('&').next().unwrap_or("ok").to_owned();
                    let answer: &[u8] = match verdict.as_str() {
                        "ok" => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        "deny" => b"HTTP/1.1 403 Forbidden\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope",
                        "login" => b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"staff\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        "broken" => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        "redirect" => b"HTTP/1.1 302 Found\r\nlocation: /login\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        "garbage" => b"\x00\x01 this is not HTTP\r\n\r\n",
                        "close" => b"",
                        _ => {
                            // "hang": never answers in time.
                            std::thread::sleep(Duration::from_secs(3));
                            b""
                        }
                    };
                    let _ = conn.write_all(answer);
                });
            }
        });
        AuthService { addr, seen }
    }
}

fn metrics(server: &Server) -> String {
    admin(server, "GET", "/metrics").text()
}

#[test]
fn auth_request_fails_open_or_closed_as_the_operator_chose() {
    let auth = AuthService::start();
    let url = format!("http://{}/check", auth.addr);
    let tmp = tempfile::tempdir().unwrap();
    // A bad URL, or no choice of what an error does, stops the server naming the flag.
    let bad = Cli::new(&["serve", "--data", tmp.path().join("bad").to_str().unwrap()])
        .cmd
        .args(["--edge", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--auth-request", "ftp://x/check", "--auth-request-on-error", "open"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--auth-request \"ftp://x/check\""), "{bad:?}");
    let unchosen = Cli::new(&["serve", "--auth-request", &url]).fails();
    assert!(unchosen.stderr().contains("--auth-request-on-error"), "{}", unchosen.report());

    let site = [("index.html", "members only"), ("sorry.html", "our auth is down")];
    let timeout = ["--auth-request-timeout", "300ms"];
    let closed = Server::start(
        &tmp.path().join("closed"),
        &[&["--auth-request", &url, "--auth-request-on-error", "closed"][..], &timeout].concat(),
    );
    deploy(&closed, &tmp.path().join("site"), "a", &site);
    let open = Server::start(
        &tmp.path().join("open"),
        &[&["--auth-request", &url, "--auth-request-on-error", "open"][..], &timeout].concat(),
    );
    deploy(&open, &tmp.path().join("site"), "a", &site);

    // Allowed: served, privately; the service saw the original request.
    let r = http_get_with(&closed.edge, "a.localhost", "/?auth=ok", &[("Cookie", "session=s3cret")]).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "members only"));
    assert!(r.header("cache-control").is_some_and(|c| c.contains("private")), "{:?}", r.headers);
    let head = auth.seen.lock().unwrap().last().cloned().unwrap();
    for want in [
        "GET /check HTTP/1.1",
        "x-original-method: GET",
        "x-original-host: a.localhost",
        "x-original-uri: /?auth=ok",
        "x-forwarded-for: 127.0.0.1",
        "cookie: session=s3cret",
    ] {
        assert!(head.contains(want), "the auth request lacks {want:?}:\n{head}");
    }
    for server in [&closed, &open] {
        // The service's refusals reach the visitor, whatever on_error says.
        let r = http_get(&server.edge, "a.localhost", "/?auth=deny").unwrap();
        assert_eq!(r.status, 403);
        assert!(!r.text().contains("members only"));
        let r = http_get(&server.edge, "a.localhost", "/?auth=login").unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"staff\""));
    }
    // Errors: a 500, a redirect, garbage, a closed connection, no answer in time.
    let errors = ["broken", "redirect", "garbage", "close", "hang"];
    for e in errors {
        let started = Instant::now();
        let r = http_get(&closed.edge, "a.localhost", &format!("/?auth={e}")).unwrap();
        assert_eq!(r.status, 503, "{e}: closed answers 503");
        assert_eq!(r.header("retry-after"), Some("5"), "{e}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{e}");
        assert_eq!(r.text(), "our auth is down", "{e}: the site's sorry page");
        assert!(started.elapsed() < Duration::from_secs(2), "{e}: took {:?}", started.elapsed());
        let r = http_get(&open.edge, "a.localhost", &format!("/?auth={e}")).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "members only"), "{e}: open lets it through");
    }
    let m = metrics(&closed);
    assert!(m.contains("chanto_edge_filter_errors_total{filter=\"auth_request\",on_error=\"closed\"} 5"), "{m}");
    assert!(m.contains("chanto_edge_refused_total{reason=\"filter_error\"} 5"), "{m}");
    let m = metrics(&open);
    assert!(m.contains("chanto_edge_filter_errors_total{filter=\"auth_request\",on_error=\"open\"} 5"), "{m}");
}

#[test]
#[ignore = "needs haproxy (scripts/test installs it; --run-ignored all runs this)"]
fn haproxy_with_the_readme_config_drains_an_edge_with_zero_failed_requests() {
    let tmp = tempfile::tempdir().unwrap();
    // Three servers, one per "zone", each serving the site (its own data).
    let mut servers: Vec<Server> =
        (0..3).map(|i| Server::start(&tmp.path().join(format!("zone{i}")), &["--drain-grace", "4s"])).collect();
    for (i, s) in servers.iter().enumerate() {
        let body = format!("zone {i}");
        deploy(s, &tmp.path().join(format!("site{i}")), "h", &[("index.html", &body)]);
    }
    let addrs: Vec<(&str, &str)> = servers.iter().map(|s| (s.edge.as_str(), s.admin.as_str())).collect();
    let mut haproxy = HaProxy::start_readme(&addrs);
    let front = haproxy.addr.clone();
    // Up once every edge answers through it.
    let mut seen = std::collections::BTreeSet::new();
    wait_for("HAProxy to reach all three edges", Duration::from_secs(15), || {
        haproxy.check_running();
        if let Ok(r) = http_get(&front, "h.localhost", "/")
            && r.status == 200
        {
            seen.insert(r.text());
        }
        (seen.len() == 3).then_some(())
    });
    // A bounded constant load: 4 clients, a request every 10 ms each.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let by_zone = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failed, by_zone, front) = (stop.clone(), failed.clone(), by_zone.clone(), front.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(30) {
                    match http_get(&front, "h.localhost", "/") {
                        Ok(r) if r.status == 200 => *by_zone.lock().unwrap().entry(r.text()).or_default() += 1,
                        Ok(r) => failed.lock().unwrap().push(format!("{} {}", r.status, r.text())),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Drain zone 0's edge through its admin listener; HAProxy's checks see it.
    let drained = servers.remove(0);
    let r = admin(&drained, "POST", "/drain");
    assert_eq!(r.status, 202);
    let mut drained = drained;
    let (status, _) = wait_exit(&mut drained, Duration::from_secs(20));
    assert!(status.success(), "{}", drained.stderr());
    let before: u64 = by_zone.lock().unwrap().get("zone 0").copied().unwrap_or(0);
    // Zone 1's edge the other way: out of HAProxy at once through its
    // runtime API (the README's admin socket), then SIGTERM.
    let answer = haproxy.command("set server edges/edge-b state drain");
    assert!(answer.trim().is_empty(), "HAProxy refused the drain command: {answer}");
    let state = haproxy.command("show servers state edges");
    assert!(state.contains("edge-b"), "{state}");
    let mut zone1 = servers.remove(0);
    let term = std::process::Command::new("kill").arg("-TERM").arg(zone1.child.id().to_string()).status();
    assert!(term.unwrap().success());
    let (status, _) = wait_exit(&mut zone1, Duration::from_secs(20));
    assert!(status.success(), "{}", zone1.stderr());
    let before1: u64 = by_zone.lock().unwrap().get("zone 1").copied().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    let failed = failed.lock().unwrap();
    let by_zone = by_zone.lock().unwrap();
    eprintln!("through HAProxy: {by_zone:?}, failed {}", failed.len());
    assert!(failed.is_empty(), "{} failed requests: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    assert!(before > 0, "zone 0 served nothing before its drain: {by_zone:?}");
    assert_eq!(by_zone.get("zone 0").copied().unwrap_or(0), before, "zone 0 served after it exited");
    assert_eq!(by_zone.get("zone 1").copied().unwrap_or(0), before1, "zone 1 served after it exited");
    assert!(before1 > 0 && by_zone.get("zone 2").is_some_and(|n| *n > 0), "{by_zone:?}");
}

//! The edge against people it must not trust (issue 14): visitors who craft
//! paths, headers and `X-Forwarded-For`, and deploys whose rule files try to
//! reach past a password, another site's proxy origin or another site's
//! cookies. Each test talks to a real server on port 0, raw HTTP/1.1 where
//! the request must be exactly what an attacker would send.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chanto_core::{AccessPolicy, AccessScope, DeployId, Manifest, ManifestEntry};
use chanto_edge::server::{ServerLimits, serve};
use chanto_edge::{Edge, EdgeConfig};
use chanto_store::{BlobStore, LocalBlobStore, RoutingRow, RoutingSink, RoutingTable};

/// One site (or branch) to publish.
#[derive(Default)]
struct SiteSpec {
    site: &'static str,
    /// `None`: the production branch `main`; `Some(label)`: a branch.
    branch: Option<&'static str>,
    files: Vec<(&'static str, Vec<u8>)>,
    /// Rule files (`_redirects`, `_headers`), compiled as at finalize with
    /// every `Basic-Auth` password hashed.
    rules: Vec<(&'static str, String)>,
    /// The site's access policy.
    access: Option<AccessPolicy>,
    /// Origins the site lets its proxy rules reach.
    proxy_origins: Vec<String>,
}

struct Running {
    addr: std::net::SocketAddr,
    edge: Arc<Edge>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// The password of every `Basic-Auth` user in these tests.
const PASSWORD: &str = "pw";

fn argon2_hash(password: &str) -> String {
    use argon2::PasswordHasher;
    let salt = argon2::password_hash::SaltString::encode_b64(&[7u8; 16]).unwrap();
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

async fn start(config: EdgeConfig, sites: Vec<SiteSpec>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(LocalBlobStore::open(dir.path().join("blobs")).unwrap());
    let edge = Edge::new(config, blobs.clone() as Arc<dyn BlobStore>);
    let (mut branches, mut access, mut proxy_origins) = (Vec::new(), Vec::new(), Vec::new());
    for (n, spec) in sites.into_iter().enumerate() {
        let mut m = Manifest { version: Manifest::VERSION, ..Default::default() };
        for (path, body) in &spec.files {
            let hash = blobs.put_bytes(Bytes::from(body.clone())).await.unwrap();
            let entry =
                ManifestEntry { hash, size: body.len() as u64, content_type: "text/html".into(), variants: vec![] };
            m.files.insert((*path).into(), entry);
        }
        if !spec.rules.is_empty() {
            let files: Vec<(&str, &[u8])> = spec.rules.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
            let mut rules = chanto_rules::compile(&files).unwrap();
            for rule in &mut rules.auth {
                for user in &mut rule.users {
                    user.hash = user.password.take().map(|p| argon2_hash(&p));
                }
            }
            m.rules = Some(rules);
        }
        let mh = blobs.put_bytes(Bytes::from(serde_json::to_vec(&m).unwrap())).await.unwrap();
        let branch: chanto_core::BranchName = spec.branch.unwrap_or("main").parse().unwrap();
        branches.push(RoutingRow {
            site: spec.site.parse().unwrap(),
            label: branch.label(),
            branch,
            production: spec.branch.is_none(),
            deploy: DeployId::from_random([n as u8 + 1; 8]),
            manifest: mh,
            ready_at: 1_700_000_000_000,
        });
        if let Some(policy) = spec.access {
            access.push((spec.site.parse().unwrap(), AccessScope::Site, policy));
        }
        if !spec.proxy_origins.is_empty() {
            proxy_origins.push((spec.site.parse().unwrap(), spec.proxy_origins));
        }
    }
    edge.publish(RoutingTable::from_rows(1, branches, Vec::new(), access, proxy_origins)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, chanto_edge::router(edge.clone()), ServerLimits::default(), async move {
        let _ = rx.await;
    }));
    Running { addr, edge, _stop: stop, _dir: dir }
}

/// A response as the client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `head` (request line and header lines, without the blank line)
/// with `Connection: close`, and reads the one answer.
async fn raw(addr: std::net::SocketAddr, head: &str) -> Answer {
    let head = format!("{head}\r\nConnection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        parse_answer(&out, &head)
    })
    .await
    .unwrap()
}

fn parse_answer(out: &[u8], sent: &str) -> Answer {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("no complete answer to {sent:?}: {:?}", String::from_utf8_lossy(out));
    });
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers, body: out[end + 4..].to_vec() }
}

fn get(host: &str, target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}")
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Finding 4: a slash redirect is built from the normalised path, so a
/// request that starts with `//host` cannot send the visitor to that host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_never_leave_the_site() {
    let spec = SiteSpec {
        site: "s",
        files: vec![("docs/index.html", b"docs".to_vec()), ("index.html", b"home".to_vec())],
        ..Default::default()
    };
    let rules = SiteSpec {
        site: "r",
        files: vec![("index.html", b"home".to_vec())],
        rules: vec![("_redirects", "/go/*  /:splat  302\n/abs  //cdn.example.com/x  301\n".into())],
        ..Default::default()
    };
    let r = start(EdgeConfig::new("localhost"), vec![spec, rules]).await;
    let cases = [
        ("s.localhost", "//evil.com/..%2fdocs", "/docs/"),
        ("s.localhost", "//evil.com/../docs", "/docs/"),
        ("s.localhost", "/%2f%2fevil.com/..%2fdocs", "/docs/"),
        ("s.localhost", "/%5c%5cevil.com/..%2fdocs", ""),
        ("s.localhost", "/docs", "/docs/"),
        ("s.localhost", "/docs?x=1", "/docs/?x=1"),
        ("r.localhost", "/go//evil.com", "/evil.com"),
        ("r.localhost", "/go/%2fevil.com", "/evil.com"),
        ("r.localhost", "/abs", "/cdn.example.com/x"),
    ];
    for (host, target, want) in cases {
        let a = raw(r.addr, &get(host, target)).await;
        if want.is_empty() {
            assert_eq!(a.status, 400, "{target}: backslashes are refused: {a:?}");
            continue;
        }
        assert!(matches!(a.status, 301 | 302), "{target}: {a:?}");
        let location = a.header("location").unwrap_or_default();
        assert_eq!(location, want, "{target}");
        assert!(!location.starts_with("//") && !location.starts_with("/\\"), "{target}: {location}");
    }
}

/// Finding 5: a rewrite cannot reach a file behind a path password, by a
/// double-encoded `..`, by rewriting straight into the protected path, by a
/// clean URL or by a directory's index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_passwords_guard_the_file_served() {
    let spec = SiteSpec {
        site: "s",
        files: vec![
            ("index.html", b"home".to_vec()),
            ("posts/a.html", b"post".to_vec()),
            ("admin/secret.html", b"SECRET".to_vec()),
            ("admin/index.html", b"SECRET INDEX".to_vec()),
        ],
        rules: vec![
            ("_redirects", "/blog/*  /posts/:splat  200\n/public/*  /admin/:splat  200\n".into()),
            (
                "_headers",
                "/admin/secret.html\n  Basic-Auth: alice:pw\n/admin/index.html\n  Basic-Auth: alice:pw\n".into(),
            ),
            ("chanto.toml", "clean_urls = true\n".into()),
        ],
        ..Default::default()
    };
    let r = start(EdgeConfig::new("localhost"), vec![spec]).await;
    assert_eq!(raw(r.addr, &get("s.localhost", "/blog/a.html")).await.text(), "post", "the rewrite works");
    // A `..` smuggled as `%252e%252e` does not climb out of the rewrite's
    // target: the splat is decoded once, and goes into the target encoded.
    let out = raw(r.addr, &get("s.localhost", "/blog/%252e%252e/index.html")).await;
    assert_eq!(out.status, 404, "{out:?}");
    // A `..` smuggled through the rewrite stays the literal text `%2e%2e`: no such file.
    for target in ["/blog/%252e%252e/admin/secret.html", "/blog/%252E%252E/admin/secret.html", "/blog/%2e%2e/admin/"] {
        let a = raw(r.addr, &get("s.localhost", target)).await;
        assert!(matches!(a.status, 400 | 401 | 404), "{target}: {a:?}");
        assert!(!a.text().contains("SECRET"), "{target}");
    }
    // What a rewrite, a clean URL or an index resolves to behind the password asks for it.
    for target in ["/admin/secret.html", "/public/secret.html", "/admin/secret", "/admin/", "/public/"] {
        let a = raw(r.addr, &get("s.localhost", target)).await;
        assert_eq!(a.status, 401, "{target}: {a:?}");
        assert!(!a.text().contains("SECRET"), "{target}");
    }
    // With the password: served, and kept out of shared caches.
    let a =
        raw(r.addr, &format!("{}\r\n{}", get("s.localhost", "/public/secret.html"), basic("alice", PASSWORD))).await;
    assert_eq!((a.status, a.text().as_str()), (200, "SECRET"), "{a:?}");
    let cc = a.header("cache-control").unwrap_or_default();
    assert!(cc.contains("private") && !cc.contains("public"), "{cc}");
}

/// A minimal origin server: answers every request with its request line
/// and headers as the body, and reports each request line it got.
async fn upstream() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (seen, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let _ = seen.send(head.lines().next().unwrap_or_default().to_owned());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Upstream: yes\r\nSet-Cookie: up=1; Domain=localhost; Secure\r\nConnection: close\r\n\r\n{head}",
                    head.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    (origin, rx)
}

/// Finding 6: a site proxies only to origins both the operator and the site
/// allow; the visitor's credentials stay behind; the upstream path stays
/// under the rule's target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_rules_are_confined() {
    let (origin, mut seen) = upstream().await;
    let rule = format!("/api/*  {origin}/v1/:splat  200\n");
    let allowed = SiteSpec {
        site: "a",
        files: vec![("index.html", b"a".to_vec())],
        rules: vec![("_redirects", rule.clone())],
        proxy_origins: vec![chanto_core::normalize_origin(&origin).unwrap()],
        ..Default::default()
    };
    // Another site (a fork's preview, say) with the same rule, and no
    // permission of its own.
    let other = SiteSpec {
        site: "b",
        files: vec![("index.html", b"b".to_vec())],
        rules: vec![("_redirects", rule)],
        ..Default::default()
    };
    let mut config = EdgeConfig::new("localhost");
    config.proxy_origins = vec![origin.clone()];
    let r = start(config, vec![allowed, other]).await;

    let creds = "Authorization: Basic YWxpY2U6cHc=\r\nCookie: session=s3cret\r\nAccept: text/plain";
    let a = raw(r.addr, &format!("{}\r\n{creds}", get("a.localhost", "/api/users?page=2"))).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("x-upstream"), Some("yes"));
    assert_eq!(a.header("set-cookie"), Some("up=1; Secure"), "the origin's cookie stays on the site's host");
    let upstream_saw = a.text().to_ascii_lowercase();
    assert!(upstream_saw.starts_with("get /v1/users?page=2 http/1.1"), "{upstream_saw}");
    assert!(upstream_saw.contains("accept: text/plain"), "other headers go along: {upstream_saw}");
    assert!(!upstream_saw.contains("authorization") && !upstream_saw.contains("s3cret"), "{upstream_saw}");
    assert_eq!(seen.recv().await.unwrap(), "GET /v1/users?page=2 HTTP/1.1");

    let b = raw(r.addr, &get("b.localhost", "/api/users")).await;
    assert_eq!(b.status, 502, "a site without the origin in its own list: {b:?}");

    for target in ["/api/%252e%252e/admin", "/api/%25252e%25252e/admin", "/api/%252fadmin"] {
        let a = raw(r.addr, &get("a.localhost", target)).await;
        assert_eq!(a.status, 400, "{target}: {a:?}");
    }
    // Only the first request ever reached the origin.
    let last = raw(r.addr, &get("a.localhost", "/api/last")).await;
    assert_eq!(last.status, 200);
    assert_eq!(seen.recv().await.unwrap(), "GET /v1/last HTTP/1.1", "nothing between the two reached the origin");
}

/// Finding 9: behind a trusted proxy that adds its own `X-Forwarded-For`
/// line, the client's forged first line does not pass a network list; the
/// country header counts only from a trusted proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_and_country_come_only_from_trusted_proxies() {
    let policy = AccessPolicy { allow: vec!["203.0.113.0/24".parse().unwrap()], ..Default::default() };
    let spec = SiteSpec {
        site: "s",
        files: vec![("index.html", b"office only".to_vec())],
        access: Some(policy),
        ..Default::default()
    };
    let mut config = EdgeConfig::new("localhost");
    config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let r = start(config, vec![spec]).await;
    let base = get("s.localhost", "/");
    let forged = raw(r.addr, &format!("{base}\r\nX-Forwarded-For: 203.0.113.5\r\nX-Forwarded-For: 198.51.100.9")).await;
    assert_eq!(forged.status, 403, "the proxy's line names the real client: {forged:?}");
    let real = raw(r.addr, &format!("{base}\r\nX-Forwarded-For: 198.51.100.9\r\nX-Forwarded-For: 203.0.113.5")).await;
    assert_eq!(real.status, 200, "{real:?}");
    // IP-only restriction: still not for shared caches.
    let cc = real.header("cache-control").unwrap_or_default();
    assert!(cc.contains("private") && !cc.contains("public"), "{cc}");

    // The country header, from a peer that is not a trusted proxy.
    let spec = SiteSpec {
        site: "c",
        files: vec![("index.html", b"world".to_vec()), ("fr/index.html", b"france".to_vec())],
        rules: vec![("_redirects", "/where  /fr/  302  Country=fr\n".into())],
        ..Default::default()
    };
    let mut config = EdgeConfig::new("localhost");
    config.country_header = Some(axum::http::HeaderName::from_static("x-country"));
    let untrusted = start(config.clone(), vec![spec]).await;
    let a = raw(untrusted.addr, &format!("{}\r\nX-Country: fr", get("c.localhost", "/where"))).await;
    assert_eq!(a.status, 404, "{a:?}");
    config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let spec = SiteSpec {
        site: "c",
        files: vec![("index.html", b"world".to_vec()), ("fr/index.html", b"france".to_vec())],
        rules: vec![("_redirects", "/where  /fr/  302  Country=fr\n".into())],
        ..Default::default()
    };
    let trusted = start(config, vec![spec]).await;
    let a = raw(trusted.addr, &format!("{}\r\nX-Country: fr", get("c.localhost", "/where"))).await;
    assert_eq!(a.status, 302, "{a:?}");
}

/// Finding 8: header rules cannot set cookies for other hosts, and with a
/// preview domain, previews are not served under the production domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_stay_on_their_host_and_previews_on_their_domain() {
    let headers = "/*\n  Set-Cookie: id=1; Domain=localhost; Path=/; HttpOnly\n";
    let prod = SiteSpec {
        site: "s",
        files: vec![("index.html", b"production".to_vec())],
        rules: vec![("_headers", headers.into())],
        ..Default::default()
    };
    let preview = SiteSpec {
        site: "s",
        branch: Some("pr-7"),
        files: vec![("index.html", b"preview".to_vec())],
        ..Default::default()
    };
    let mut config = EdgeConfig::new("localhost");
    config.preview_domain = Some("previews.test".into());
    let r = start(config, vec![prod, preview]).await;
    // Both paths: the fast path, and hyper's (a range request).
    for extra in ["", "\r\nRange: bytes=0-"] {
        let a = raw(r.addr, &format!("{}{extra}", get("s.localhost", "/"))).await;
        assert_eq!(a.text(), "production");
        assert_eq!(a.header("set-cookie"), Some("id=1; Path=/; HttpOnly"), "{a:?}");
    }
    assert_eq!(raw(r.addr, &get("pr-7--s.previews.test", "/")).await.text(), "preview");
    assert_eq!(raw(r.addr, &get("pr-7--s.localhost", "/")).await.status, 404, "no preview under production's domain");
    assert_eq!(raw(r.addr, &get("s.previews.test", "/")).await.status, 404, "no production under the previews'");
}

/// Finding 10: a blob shorter than its manifest says is a 500 and an error
/// in the log, on every path (memory, sendfile, stream), never a panic or a
/// body that contradicts its length; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_blob_is_an_error_not_a_panic() {
    let small = b"hello world".to_vec();
    let mid = vec![b'm'; chanto_edge::ZEROCOPY_MIN as usize + 100];
    let big = vec![b'b'; (2 << 20) + 5];
    let spec = SiteSpec {
        site: "s",
        files: vec![
            ("small.html", small.clone()),
            ("mid.html", mid.clone()),
            ("big.html", big.clone()),
            ("index.html", b"ok".to_vec()),
        ],
        ..Default::default()
    };
    let r = start(EdgeConfig::new("localhost"), vec![spec]).await;
    for body in [&small, &mid, &big] {
        truncate_blob(&r, body).await;
    }
    for target in ["/small.html", "/mid.html", "/big.html", "/small.html"] {
        let a = raw(r.addr, &get("s.localhost", target)).await;
        assert_eq!(a.status, 500, "{target}: {:?}", (a.status, &a.headers));
        let hyper = raw(r.addr, &format!("{}\r\nRange: bytes=0-", get("s.localhost", target))).await;
        assert!(hyper.status >= 500, "{target} with a range: {:?}", (hyper.status, &hyper.headers));
    }
    // h2c: no sendfile, the blob is read (or streamed) from the store.
    let h2 = reqwest::Client::builder().resolve("s.localhost", r.addr).http2_prior_knowledge().build().unwrap();
    for target in ["/small.html", "/mid.html", "/big.html"] {
        let resp = h2.get(format!("http://s.localhost:{}{target}", r.addr.port())).send().await.unwrap();
        assert_eq!(resp.status(), 500, "{target} over h2c");
    }
    assert_eq!(raw(r.addr, &get("s.localhost", "/")).await.text(), "ok");
    assert!(r.edge.is_ready());
}

/// Cuts the stored blob of `body` to half its length, where the store keeps it.
async fn truncate_blob(r: &Running, body: &[u8]) {
    let hash = chanto_core::ContentHash::of(body);
    let hex = hash.to_hex();
    let mut found = false;
    for entry in walk(r._dir.path()) {
        if entry.file_name().and_then(|n| n.to_str()) == Some(&hex[2..]) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o644)).unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(&entry).unwrap();
            f.set_len(body.len() as u64 / 2).unwrap();
            found = true;
        }
    }
    assert!(found, "blob {hex} not found under {}", r._dir.path().display());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

//! End to end: the real `chanto` binary serving on port 0, driven by the real
//! CLI, deploying real directories, checked on the wire.

mod util;

use std::os::unix::fs::PermissionsExt;

use util::{Cli, Server, http_get, write_tree};

#[test]
fn first_start_creates_the_admin_token_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    let token_file = data.join("admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token must be private");
    assert!(server.token.starts_with("chanto_") && server.token.len() > 40);
    assert!(server.stdout().contains(&server.token), "the token is printed once on first start");
    assert!(server.stderr().contains("chanto is serving"), "{}", server.stderr());
    // Only a hash of it is stored: its bytes are in no file of the data dir
    // but the token file itself (the database, its write-ahead log, blobs).
    let first_token = server.token.clone();
    let moved = tmp.path().join("admin.token.moved");
    std::fs::rename(&token_file, &moved).unwrap();
    let searched = util::assert_secret_nowhere(&data, first_token.as_bytes(), "the admin token");
    assert!(searched >= 2, "the search saw the database files ({searched} files)");
    std::fs::rename(&moved, &token_file).unwrap();

    // A second server on the same data dir is refused.
    let data_arg = data.to_str().unwrap();
    let ports = ["--edge", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    let second = Cli::new(&[&["serve", "--data", data_arg][..], &ports[..]].concat()).fails();
    assert!(second.stderr().contains("another chanto is already serving"), "{}", second.report());

    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    let again = Server::start(&data, &[]);
    assert!(!again.stdout().contains("chanto_"), "no new token on restart: {}", again.stdout());
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), first_token, "the token file is unchanged");
    // The first server's token still works against the second.
    let r = again.cli(&["sites", "list"]).env("CHANTO_TOKEN", &first_token).ok();
    assert!(r.out.status.success(), "{}", r.report());
}

#[test]
fn deploy_branches_permalinks_publish_and_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let port = server.edge.rsplit(':').next().unwrap().to_owned();
    let site = tmp.path().join("site");
    write_tree(
        &site,
        &[
            ("index.html", "<h1>v1</h1>"),
            ("about/index.html", "about"),
            ("css/app.css", "body{}"),
            ("404.html", "gone"),
        ],
    );

    let r = server.cli(&["sites", "create", "docs"]).ok();
    assert!(r.stdout().contains(&format!("http://docs.localhost:{port}/")), "{}", r.report());
    let r = server.cli(&["sites", "create", "docs"]).fails();
    assert!(r.stderr().contains("already exists"), "{}", r.report());
    let r = server.cli(&["sites", "create", "Bad_Name"]).fails();
    assert!(r.stderr().contains("is not a valid site name"), "{}", r.report());
    let r = server.cli(&["sites", "list"]).ok();
    assert!(r.stdout().contains("docs") && r.stdout().contains("main"), "{}", r.report());

    // First deploy: everything is uploaded, and it is live when the command returns.
    let d1 = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "first", "--json"]).ok().json();
    assert_eq!(d1["files"], 4);
    assert_eq!(d1["uploaded"], 4);
    assert_eq!(d1["deploy"]["state"], "active");
    let id1 = d1["deploy"]["id"].as_str().unwrap().to_owned();
    assert_eq!(d1["deploy"]["urls"]["production"], format!("http://docs.localhost:{port}/"));
    let home = server.get("docs.localhost", "/");
    assert_eq!((home.status, home.text().as_str()), (200, "<h1>v1</h1>"));
    assert_eq!(home.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(server.get("docs.localhost", "/css/app.css").header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(server.get("docs.localhost", "/about/").text(), "about");
    assert_eq!(server.get("docs.localhost", "/about").status, 301);
    let missing = server.get("docs.localhost", "/nope");
    assert_eq!((missing.status, missing.text().as_str()), (404, "gone"));
    assert_eq!(server.get("nosuchsite.localhost", "/").status, 404);

    // Redeploying the same tree uploads nothing.
    let same = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
    assert_eq!(same["uploaded"], 0);

    // A change uploads exactly the changed file; the plain output names the URLs.
    write_tree(&site, &[("index.html", "<h1>v2</h1>")]);
    let r = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "second"]).ok();
    assert!(r.stdout().contains("uploaded 1 blob ("), "{}", r.report());
    assert!(r.stdout().contains(&format!("URL:        http://docs.localhost:{port}/")), "{}", r.report());
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v2</h1>");
    // The first deploy stays reachable at its permalink.
    assert_eq!(server.get(&format!("{id1}--docs.localhost"), "/").text(), "<h1>v1</h1>");

    // Rollback: back to the deploy before, no upload.
    let rb = server.cli(&["rollback", "--site", "docs", "--json"]).ok().json();
    assert_eq!(rb["deploy"]["state"], "active");
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v1</h1>");
    let r = server.cli(&["rollback", "--site", "docs"]).ok();
    assert!(r.stdout().contains("Rolled back docs/main"), "{}", r.report());
    assert_eq!(
        server.get("docs.localhost", "/").text(),
        "<h1>v1</h1>",
        "the deploy before is v1 as well (same content)"
    );
    let r = server.cli(&["rollback", "--site", "docs"]).fails();
    assert!(r.stderr().contains("no earlier deploy"), "{}", r.report());

    // Publish any ready deploy: roll forward to the newest.
    let list = server.cli(&["deploys", "list", "--site", "docs", "--json"]).ok().json();
    let newest = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list.as_array().unwrap().len(), 3);
    server.cli(&["publish", &newest]).ok();
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v2</h1>");
    let show = server.cli(&["deploys", "show", &newest]).ok();
    assert!(
        show.stdout().contains("state:    live") && show.stdout().contains("message:  second"),
        "{}",
        show.report()
    );
    let text_list = server.cli(&["deploys", "list", "--site", "docs"]).ok();
    assert_eq!(text_list.stdout().lines().count(), 4, "a header and three deploys: {}", text_list.report());

    // A branch gets its own URL and leaves production alone.
    let dev = tmp.path().join("dev");
    write_tree(&dev, &[("index.html", "dev build")]);
    let d = server
        .cli(&["deploy", dev.to_str().unwrap(), "--site", "docs", "--branch", "feature/New", "--json"])
        .ok()
        .json();
    assert_eq!(d["deploy"]["urls"]["branch"], format!("http://feature-new--docs.localhost:{port}/"));
    assert_eq!(server.get("feature-new--docs.localhost", "/").text(), "dev build");
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v2</h1>");
    let only_dev = server.cli(&["deploys", "list", "--site", "docs", "--branch", "feature/New", "--json"]).ok().json();
    assert_eq!(only_dev.as_array().unwrap().len(), 1);

    // A draft is only at its permalink.
    write_tree(&dev, &[("index.html", "draft build")]);
    let draft = server
        .cli(&["deploy", dev.to_str().unwrap(), "--site", "docs", "--branch", "feature/New", "--draft", "--json"])
        .ok()
        .json();
    assert_eq!(draft["deploy"]["state"], "ready");
    let draft_id = draft["deploy"]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.get("feature-new--docs.localhost", "/").text(), "dev build");
    assert_eq!(server.get(&format!("{draft_id}--docs.localhost"), "/").text(), "draft build");

    // Unknown ids and sites are clear errors.
    let r = server.cli(&["deploys", "show", "0123456789abcdef"]).fails();
    assert!(r.stderr().contains("there is no deploy 0123456789abcdef"), "{}", r.report());
    let r = server.cli(&["publish", "nope"]).fails();
    assert!(r.stderr().contains("not a deploy id"), "{}", r.report());
    let r = server.cli(&["deploy", site.to_str().unwrap(), "--site", "ghost"]).fails();
    assert!(r.stderr().contains("site \"ghost\" does not exist"), "{}", r.report());

    // Deleting asks first; with --yes the site's URLs stop answering.
    let r = server.cli(&["sites", "delete", "docs"]).fails();
    assert!(r.stderr().contains("--yes"), "{}", r.report());
    assert_eq!(server.get("docs.localhost", "/").status, 200);
    server.cli(&["sites", "delete", "docs", "--yes"]).ok();
    assert_eq!(server.get("docs.localhost", "/").status, 404);
    assert_eq!(server.get(&format!("{id1}--docs.localhost"), "/").status, 404);
}

#[test]
fn bad_directories_are_refused_with_the_path_named() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &["--max-file-size", "1000"]);
    server.cli(&["sites", "create", "docs"]).ok();
    let deploy = |dir: &std::path::Path| server.cli(&["deploy", dir.to_str().unwrap(), "--site", "docs"]).fails();

    let outside = tmp.path().join("outside");
    write_tree(&outside, &[("secret.txt", "secret")]);
    let leaky = tmp.path().join("leaky");
    write_tree(&leaky, &[("index.html", "ok")]);
    std::os::unix::fs::symlink(outside.join("secret.txt"), leaky.join("leak.txt")).unwrap();
    let r = deploy(&leaky);
    assert!(r.stderr().contains("leak.txt") && r.stderr().contains("outside the deployed directory"), "{}", r.report());

    // Symlinks inside the tree are followed.
    let linked = tmp.path().join("linked");
    write_tree(&linked, &[("index.html", "real")]);
    std::os::unix::fs::symlink("index.html", linked.join("alias.html")).unwrap();
    server.cli(&["deploy", linked.to_str().unwrap(), "--site", "docs"]).ok();
    assert_eq!(server.get("docs.localhost", "/alias.html").text(), "real");

    let bad_name = tmp.path().join("badname");
    std::fs::create_dir_all(&bad_name).unwrap();
    use std::os::unix::ffi::OsStrExt;
    std::fs::write(bad_name.join(std::ffi::OsStr::from_bytes(b"caf\xe9.html")), "latin-1").unwrap();
    let r = deploy(&bad_name);
    assert!(r.stderr().contains("not valid UTF-8") && r.stderr().contains("caf"), "{}", r.report());

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    assert!(deploy(&empty).stderr().contains("contains no files"));
    assert!(deploy(&tmp.path().join("missing")).stderr().contains("cannot read"));
    assert!(deploy(&leaky.join("index.html")).stderr().contains("not a directory"));

    let big = tmp.path().join("big");
    write_tree(&big, &[("index.html", "ok"), ("huge.bin", &"x".repeat(1001))]);
    let r = deploy(&big);
    assert!(r.stderr().contains("huge.bin") && r.stderr().contains("1000 bytes"), "{}", r.report());

    // None of that changed what is live.
    assert_eq!(server.get("docs.localhost", "/").text(), "real");
    let list = server.cli(&["deploys", "list", "--site", "docs", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn tokens_come_from_flags_env_or_login() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let config = tmp.path().join("config.toml");

    let r = Cli::new(&["sites", "list"]).env("CHANTO_SERVER", &server.api_url).fails();
    assert!(r.stderr().starts_with("error: no API token:") && r.stderr().contains("chanto login"), "{}", r.report());
    let r = Cli::new(&["sites", "list", "--token", "chanto_wrong"]).env("CHANTO_SERVER", &server.api_url).fails();
    assert!(r.stderr().contains("unknown API token"), "{}", r.report());
    let r = Cli::new(&["sites", "list"]).env("CHANTO_SERVER", "http://127.0.0.1:1").env("CHANTO_TOKEN", "x").fails();
    assert!(r.stderr().contains("cannot reach the chanto API"), "{}", r.report());

    // A bad token at login is refused and nothing is saved.
    let r = Cli::new(&["login", "--server", &server.api_url, "--token-stdin"])
        .env("CHANTO_CONFIG", config.to_str().unwrap())
        .stdin("chanto_bad\n")
        .fails();
    assert!(r.stderr().contains("unknown API token"), "{}", r.report());
    assert!(!config.exists());

    let r = Cli::new(&["login", "--server", &server.api_url, "--token-stdin"])
        .env("CHANTO_CONFIG", config.to_str().unwrap())
        .stdin(&format!("{}\n", server.token))
        .ok();
    assert!(r.stdout().contains("Logged in"), "{}", r.report());
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    Cli::new(&["sites", "create", "from-login"]).env("CHANTO_CONFIG", config.to_str().unwrap()).ok();
    // A flag beats the file.
    let r =
        Cli::new(&["sites", "list", "--token", "chanto_wrong"]).env("CHANTO_CONFIG", config.to_str().unwrap()).fails();
    assert!(r.stderr().contains("unknown API token"), "{}", r.report());
    // The environment beats the file too.
    let r = Cli::new(&["sites", "list"])
        .env("CHANTO_CONFIG", config.to_str().unwrap())
        .env("CHANTO_TOKEN", "chanto_env")
        .fails();
    assert!(r.stderr().contains("unknown API token"), "{}", r.report());

    // A broken config file is named.
    std::fs::write(&config, "server = 1\nsurprise = true\n").unwrap();
    let r = Cli::new(&["sites", "list"]).env("CHANTO_CONFIG", config.to_str().unwrap()).fails();
    assert!(r.stderr().contains(config.to_str().unwrap()), "{}", r.report());
    let r = Cli::new(&["sites", "list", "--server", "ftp://x"]).fails();
    assert!(r.stderr().contains("must start with http"), "{}", r.report());
}

#[test]
fn an_interrupted_deploy_resumes_and_nothing_partial_is_live() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let site = tmp.path().join("site");
    let files: Vec<(String, String)> =
        (0..20).map(|i| (format!("page{i}.html"), format!("page {i} {}", "x".repeat(i * 100)))).collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(p, b)| (p.as_str(), b.as_str())).collect();
    write_tree(&site, &refs);

    let server = Server::start(&data, &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    // Start a deploy through the API and upload half of it, as a CLI would
    // have before the server died.
    let manifest: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|(p, b)| {
            (p.clone(), serde_json::json!({"hash": blake3::hash(b.as_bytes()).to_hex().to_string(), "size": b.len()}))
        })
        .collect();
    let created = curl(
        &server,
        "POST",
        "/api/v1/sites/docs/deploys",
        serde_json::json!({"files": manifest}).to_string().into_bytes(),
    );
    let id = created["deploy"]["id"].as_str().unwrap().to_owned();
    for (_, body) in files.iter().take(10) {
        let hash = blake3::hash(body.as_bytes()).to_hex().to_string();
        curl(&server, "PUT", &format!("/api/v1/deploys/{id}/blobs/{hash}"), body.clone().into_bytes());
    }
    server.kill();

    let server = Server::start(&data, &[]);
    assert_eq!(server.get("docs.localhost", "/page0.html").status, 404, "nothing partial is live");
    let d = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
    assert_eq!(d["required"], 10, "only what never arrived is sent again: {d}");
    assert_eq!(d["uploaded"], 10);
    assert_eq!(server.get("docs.localhost", "/page19.html").text(), files[19].1);
    // The abandoned deploy is still `uploading` until it expires; it was never live.
    let shown = server.cli(&["deploys", "show", &id, "--json"]).ok().json();
    assert_eq!(shown["state"], "uploading");
}

/// A raw API call with the admin token (for setting up states the CLI never leaves).
fn curl(server: &Server, method: &str, path: &str, body: Vec<u8>) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server.api_url_addr()).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.token,
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 2"), "{method} {path}: {raw}");
    serde_json::from_str(body).unwrap()
}

#[test]
#[ignore = "needs root to mount a tmpfs; scripts/test runs it (--run-ignored all)"]
fn a_full_disk_is_a_clear_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&data)
        .output()
        .expect("running mount");
    assert!(
        mount.status.success(),
        "this test needs root to mount a 3 MiB tmpfs: {}",
        String::from_utf8_lossy(&mount.stderr)
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    let server = Server::start(&data, &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let small = tmp.path().join("small");
    write_tree(&small, &[("index.html", "fits")]);
    server.cli(&["deploy", small.to_str().unwrap(), "--site", "docs"]).ok();

    // 4 MB of incompressible bytes cannot fit in 3 MB.
    let big = tmp.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    let noise: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(big.join("video.bin"), noise).unwrap();
    write_tree(&big, &[("index.html", "too big")]);
    let r = server.cli(&["deploy", big.to_str().unwrap(), "--site", "docs"]).fails();
    assert!(r.stderr().contains("no space left"), "{}", r.report());
    let half_written = std::fs::read_dir(data.join("blobs/.staged"))
        .unwrap()
        .flat_map(|shard| std::fs::read_dir(shard.unwrap().path()).unwrap())
        .filter(|f| f.as_ref().unwrap().file_name().to_string_lossy().starts_with(".tmp"))
        .count();
    assert_eq!(half_written, 0, "nothing half-written");
    assert_eq!(server.get("docs.localhost", "/").text(), "fits", "what is live did not change");
}

#[test]
fn demo_serves_the_example_site() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start_cmd("demo", &data, &[]);
    let out = util::wait_for("demo output", std::time::Duration::from_secs(30), || {
        let out = server.stdout();
        out.contains("Press Ctrl-C").then_some(out)
    });
    let port = server.edge.rsplit(':').next().unwrap().to_owned();
    assert!(out.contains(&format!("http://example.localhost:{port}/")), "{out}");
    let home = server.get("example.localhost", "/");
    assert_eq!(home.status, 200);
    assert!(home.text().contains("it works"), "{}", home.text());
    assert_eq!(
        server.get("example.localhost", "/app.js").header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(server.get("example.localhost", "/nope").status, 404);
    // The deploy went through the real API: it is listed like any other.
    let list = server.cli(&["deploys", "list", "--site", "example", "--json"]).ok().json();
    assert_eq!(list[0]["message"], "chanto demo: the bundled example site");
    assert!(server.terminate().success());
}

#[test]
fn health_metrics_and_the_access_log() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("access.log");
    let server = Server::start(&tmp.path().join("data"), &["--access-log", log.to_str().unwrap()]);
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "hello")]);
    server.cli(&["sites", "create", "docs"]).ok();
    let d = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
    let deploy = d["deploy"]["id"].as_str().unwrap().to_owned();

    assert_eq!(util::http_get(&server.admin, "admin", "/healthz").unwrap().status, 200);
    assert_eq!(util::http_get(&server.admin, "admin", "/readyz").unwrap().status, 200);
    // The server's own duration of a request cannot exceed what its client saw.
    let asked = std::time::Instant::now();
    assert_eq!(server.get("docs.localhost", "/").status, 200);
    let client_ms = asked.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(server.get("docs.localhost", "/").status, 200);
    assert_eq!(server.get("docs.localhost", "/missing").status, 404);
    assert_eq!(server.get("nobody.localhost", "/").status, 404);
    let metrics = util::http_get(&server.admin, "admin", "/metrics").unwrap().text();
    assert!(metrics.contains("chanto_edge_requests_total{class=\"2xx\"} 2"), "{metrics}");
    assert!(metrics.contains("chanto_edge_requests_total{class=\"4xx\"} 2"), "{metrics}");
    assert!(metrics.contains("chanto_edge_cache_hits_total 1"), "{metrics}");
    assert!(metrics.contains("chanto_edge_cache_misses_total 1"), "{metrics}");
    assert!(metrics.contains("chanto_edge_sent_bytes_total"), "{metrics}");

    let lines = util::wait_for("4 access-log lines", std::time::Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.lines().count() >= 4).then_some(text)
    });
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["host"], "docs.localhost");
    assert_eq!(first["path"], "/");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], 5);
    assert_eq!(first["site"], "docs");
    assert_eq!(first["branch"], "main");
    assert_eq!(first["deploy"], deploy.as_str());
    let duration_ms = first["duration_ms"].as_f64().expect("duration_ms is a number");
    assert!(
        duration_ms > 0.0 && duration_ms <= client_ms,
        "duration_ms {duration_ms} must be in milliseconds, within the {client_ms:.3} ms the client waited"
    );
    let unknown: serde_json::Value = serde_json::from_str(lines.lines().nth(3).unwrap()).unwrap();
    assert_eq!(unknown["status"], 404);
    assert!(unknown.get("site").is_none());
}

#[test]
fn rule_files_redirect_rewrite_and_add_headers_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    // The country header is believed only from a trusted proxy (here the test itself, on loopback).
    let server =
        Server::start(&tmp.path().join("data"), &["--country-header", "X-Country", "--trusted-proxy", "127.0.0.0/8"]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(
        &site,
        &[
            ("index.html", "home"),
            ("assets/app.js", "js"),
            ("410.html", "gone for good"),
            ("fr-home.html", "bonjour"),
            ("404.html", "custom 404"),
            (
                "_redirects",
                "# Netlify's format\n\
                 /old/*      /new/:splat       301\n\
                 /store id=:id  /items/:id     302\n\
                 /fr         /fr-home.html     200  Country=fr\n\
                 /gone       /410.html         410\n\
                 /api/*      https://api.example.com/:splat  200\n\
                 /index.html /elsewhere        301\n\
                 /spa/*      /index.html       200\n",
            ),
            (
                "_headers",
                "/*\n  X-Frame-Options: DENY\n/assets/*\n  Cache-Control: public, max-age=31536000, immutable\n\
                 /admin/*\n  Basic-Auth: ann:pw1 bob:pw2\n",
            ),
            ("admin/index.html", "admin area"),
            (
                "chanto.toml",
                "clean_urls = true\n[[redirects]]\nfrom = \"/docs/*\"\nto = \"/manual/:splat\"\nstatus = 308\n",
            ),
        ],
    );
    let r = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    assert!(r.stderr().contains("_redirects:6: warning: https://api.example.com/:splat proxies"), "{}", r.report());
    assert!(r.stderr().contains("unless the operator allows that origin"), "{}", r.report());

    let get = |path: &str| server.get("docs.localhost", path);
    let moved = get("/old/a/b?utm=1");
    assert_eq!((moved.status, moved.header("location")), (301, Some("/new/a/b?utm=1")));
    let store = get("/store?id=7");
    assert_eq!((store.status, store.header("location")), (302, Some("/items/7")));
    let docs = get("/docs/intro");
    assert_eq!((docs.status, docs.header("location")), (308, Some("/manual/intro")));
    let spa = get("/spa/deep/link");
    assert_eq!((spa.status, spa.text().as_str()), (200, "home"));
    let gone = get("/gone");
    assert_eq!((gone.status, gone.text().as_str()), (410, "gone for good"));
    assert_eq!(get("/api/users").status, 502, "no proxy origin is allowed");
    // A file shadows an unforced rule at its path (here, clean URLs then
    // send /index.html to /, not to /elsewhere).
    let index = get("/index.html");
    assert_eq!((index.status, index.header("location")), (301, Some("/")));
    // Clean URLs: /fr-home serves fr-home.html.
    assert_eq!(get("/fr-home").text(), "bonjour");
    assert_eq!(get("/fr-home.html?x=1").header("location"), Some("/fr-home?x=1"));
    // Country from the operator's trusted header only.
    let fr = server.get_with("docs.localhost", "/fr", &[("X-Country", "FR")]);
    assert_eq!((fr.status, fr.text().as_str()), (200, "bonjour"));
    let elsewhere = get("/fr");
    assert_eq!((elsewhere.status, elsewhere.text().as_str()), (404, "custom 404"));
    // Header rules add to every matching response, rules and files alike.
    let js = get("/assets/app.js");
    assert_eq!(js.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(js.header("x-frame-options"), Some("DENY"));
    assert_eq!(get("/store?id=7").header("x-frame-options"), Some("DENY"));
    // Netlify's per-path Basic-Auth.
    let admin = get("/admin/");
    assert_eq!(admin.status, 401, "{}", admin.text());
    assert!(!admin.text().contains("admin area"));
    let basic = |user: &str, pw: &str| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
    };
    let ok = server.get_with("docs.localhost", "/admin/", &[("Authorization", &basic("bob", "pw2"))]);
    assert_eq!((ok.status, ok.text().as_str()), (200, "admin area"));
    assert!(ok.header("cache-control").unwrap().starts_with("private"), "{:?}", ok.headers);
    assert_eq!(server.get_with("docs.localhost", "/admin/", &[("Authorization", &basic("bob", "pw1"))]).status, 401);
    // Rule files configure the site and are not served as part of it.
    for f in ["/_redirects", "/_headers", "/chanto.toml"] {
        assert_eq!(get(f).text(), "custom 404", "{f}");
    }

    // A malformed rule file fails the deploy with file, line and column;
    // nothing of it goes live.
    write_tree(&site, &[("index.html", "v2"), ("_redirects", "/ok /fine\n/bad /x 999\n")]);
    let r = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).fails();
    assert!(r.stderr().contains("_redirects:2:1: status 999"), "{}", r.report());
    assert_eq!(get("/").text(), "home", "the live deploy did not change");
    let list = server.cli(&["deploys", "list", "--site", "docs"]).ok();
    assert!(list.stdout().contains("failed"), "{}", list.report());
}

#[test]
fn passwords_and_networks_protect_previews_branches_and_sites() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "hello"), ("app.3f2a1b9c.js", "js")]);
    let dir = site.to_str().unwrap();
    server.cli(&["deploy", dir, "--site", "docs"]).ok();
    server.cli(&["deploy", dir, "--site", "docs", "--branch", "feature"]).ok();
    let preview = "feature--docs.localhost";
    let basic = |user: &str, pw: &str| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
    };

    // Every preview asks for a password; production stays public.
    let r = server
        .cli(&["access", "set", "--site", "docs", "--previews", "--user", "alice", "--password-stdin"])
        .stdin("s3cret pass\n")
        .ok();
    assert!(r.stdout().contains("previews") && r.stdout().contains("alice"), "{}", r.report());
    assert_eq!(server.get("docs.localhost", "/").status, 200);
    let denied = server.get(preview, "/");
    assert_eq!(denied.status, 401);
    assert_eq!(denied.header("www-authenticate"), Some("Basic realm=\"docs\", charset=\"UTF-8\""));
    assert!(!denied.text().contains("hello"));
    let ok = server.get_with(preview, "/", &[("Authorization", &basic("alice", "s3cret pass"))]);
    assert_eq!((ok.status, ok.text().as_str()), (200, "hello"));
    // Protected responses are never cached by shared caches.
    let asset = server.get_with(preview, "/app.3f2a1b9c.js", &[("Authorization", &basic("alice", "s3cret pass"))]);
    assert!(asset.header("cache-control").unwrap().starts_with("private"), "{:?}", asset.headers);
    assert_eq!(server.get_with(preview, "/", &[("Authorization", &basic("alice", "wrong"))]).status, 401);
    assert_eq!(server.get_with(preview, "/", &[("Authorization", &basic("bob", "s3cret pass"))]).status, 401);
    // Permalinks of preview deploys are covered too.
    let list = server.cli(&["deploys", "list", "--site", "docs", "--branch", "feature", "--json"]).ok().json();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.get(&format!("{id}--docs.localhost"), "/").status, 401);

    // Passwords never come back: not from the CLI, not from the API.
    let listed = server.cli(&["access", "list", "--site", "docs", "--json"]).ok();
    assert!(
        listed.stdout().contains("alice") && !listed.stdout().contains("argon2") && !listed.stdout().contains("s3cret"),
        "{}",
        listed.report()
    );
    assert!(!server.stderr().contains("s3cret"), "the password reached the server log");
    let r =
        server.cli(&["access", "set", "--site", "docs", "--user", "al:ice", "--password-stdin"]).stdin("x\n").fails();
    assert!(r.stderr().contains("without ':'"), "{}", r.report());
    let r = server.cli(&["access", "set", "--site", "docs", "--allow", "10.0.0.0/33"]).fails();
    assert!(r.stderr().contains("10.0.0.0/33"), "{}", r.report());

    // A branch's own policy wins over the previews default: here, a network list.
    server.cli(&["access", "set", "--site", "docs", "--branch", "feature", "--deny", "127.0.0.0/8"]).ok();
    assert_eq!(server.get(preview, "/").status, 403);
    server.cli(&["access", "clear", "--site", "docs", "--branch", "feature"]).ok();
    assert_eq!(server.get(preview, "/").status, 401);

    // Wrong passwords are throttled per client address.
    let mut last = 0;
    for _ in 0..12 {
        last = server.get_with(preview, "/", &[("Authorization", &basic("alice", "guess"))]).status;
    }
    assert_eq!(last, 429);

    // Clearing the policy makes previews public again.
    server.cli(&["access", "clear", "--site", "docs", "--previews"]).ok();
    assert_eq!(server.get(preview, "/").status, 200);
    let r = server.cli(&["access", "clear", "--site", "docs", "--previews"]).fails();
    assert!(
        r.stderr().contains("docs has no previews access policy to clear; `chanto access list --site docs`"),
        "{}",
        r.report()
    );
    assert!(r.stderr().contains("previews"), "the message names the scope: {}", r.report());
}

/// `chanto dev` serves a folder through the edge, reloads on change, and
/// keeps the last good version while a rule file has errors.
/// `chanto dev DIR --no-reload` on a free port (byte for byte what a
/// deploy sends; live reload: tests/dev_reload.rs), stopped when dropped.
struct Dev {
    child: std::process::Child,
    /// The address its first line names.
    addr: String,
    first_line: String,
}

impl Dev {
    fn start(dir: &std::path::Path) -> Dev {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chanto"))
            .args(["dev", dir.to_str().unwrap(), "--listen", "127.0.0.1:0", "--no-reload"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first_line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first_line).unwrap();
        let addr = first_line.split("http://").nth(1).and_then(|r| r.split('/').next()).map(str::to_owned);
        let addr = addr.unwrap_or_else(|| panic!("no address in {first_line:?}"));
        Dev { child, addr, first_line }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dev_serves_a_folder_with_its_rules_and_reloads() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "home"), ("404.html", "lost"), ("_redirects", "/old /new 301\n")]);
    let mut dev = Dev::start(&site);
    let stderr = dev.child.stderr.take().unwrap();
    let addr = dev.addr.clone();
    let get = |path: &str| http_get(&addr, "localhost", path).unwrap();
    assert_eq!(get("/").text(), "home");
    assert_eq!((get("/nope").status, get("/nope").text().as_str()), (404, "lost"));
    assert_eq!(get("/old").header("location"), Some("/new"));

    let wait_for_location = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            if get("/old").header("location") == Some(want) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "never served {want}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // A rule change is live within a moment.
    std::fs::write(site.join("_redirects"), "/old /newer 302\n").unwrap();
    wait_for_location("/newer");
    // A broken rule file is reported with its position; the last good rules stay.
    std::fs::write(site.join("_redirects"), "/old /newest 302\n/bad\n").unwrap();
    let mut err = BufReader::new(stderr);
    let mut report = String::new();
    while !report.contains("_redirects:2:1") {
        let mut l = String::new();
        assert!(err.read_line(&mut l).unwrap() > 0, "dev exited; stderr so far: {report}");
        report.push_str(&l);
    }
    assert_eq!(get("/old").header("location"), Some("/newer"));
    std::fs::write(site.join("_redirects"), "/old /fixed 301\n").unwrap();
    wait_for_location("/fixed");
    std::fs::write(site.join("index.html"), "home v2").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while get("/").text() != "home v2" {
        assert!(std::time::Instant::now() < deadline, "the edit never showed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A rule that rewrites to an absolute URL proxies to it, if the operator
/// allows that origin; the origin sees the path, query and client address.
#[test]
fn proxy_rules_reach_only_allowed_origins() {
    use std::io::{BufRead, BufReader, Write};
    // A real upstream on port 0 that echoes what it was asked.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", upstream.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in upstream.incoming().take(4) {
            let mut conn = conn.unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                request.push_str(&line);
            }
            let first = request.lines().next().unwrap_or_default().to_owned();
            let xff = request
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("x-forwarded-for:"))
                .unwrap_or_default()
                .to_owned();
            let body = format!("{first}|{xff}");
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Upstream: yes\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    // Another origin on this machine that the site did not allow: it must never be contacted.
    let forbidden = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    forbidden.set_nonblocking(true).unwrap();
    let forbidden_origin = format!("http://{}", forbidden.local_addr().unwrap());
    // The operator allows both origins; the site only the first.
    let server =
        Server::start(&tmp.path().join("data"), &["--proxy-origin", &origin, "--proxy-origin", &forbidden_origin]);
    server.cli(&["sites", "create", "docs"]).ok();
    server.cli(&["sites", "proxy-origins", "docs", "--set", &origin]).ok();
    let site = tmp.path().join("site");
    let rules = format!("/api/*  {origin}/v1/:splat  200\n/other/*  {forbidden_origin}/:splat  200\n");
    write_tree(&site, &[("index.html", "home"), ("_redirects", rules.as_str())]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    let r = server.get("docs.localhost", "/api/users?page=2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("yes"));
    let text = r.text();
    assert!(text.starts_with("GET /v1/users?page=2 HTTP/1.1|"), "{text}");
    assert!(text.to_ascii_lowercase().contains("x-forwarded-for: 127.0.0.1"), "{text}");
    // Not on the list: 502, and no request leaves (the edge would have had
    // to connect before it could answer, so the connection would be queued).
    assert_eq!(server.get("docs.localhost", "/other/x").status, 502);
    match forbidden.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the edge contacted an origin nobody allowed: {other:?}"),
    }
    // A malformed origin stops the server with the flag named.
    let bad =
        Cli::new(&["serve", "--data", tmp.path().join("d2").to_str().unwrap(), "--proxy-origin", "api.example.com"])
            .fails();
    assert!(bad.stderr().contains("--proxy-origin"), "{}", bad.report());
}

/// What a newcomer meets first: each message says what is wrong in words and
/// what to do, once, in one line.
#[test]
fn first_hour_messages_say_what_is_wrong_and_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "hi")]);
    let dir = site.to_str().unwrap();

    let r = server.cli(&["sites", "create", "Bad_Name!"]).fails();
    assert_eq!(
        r.stderr().trim(),
        "error: \"Bad_Name!\" is not a valid site name: uppercase letters, `_` and `!` are not allowed; \
         try \"bad-name\" (a site name is 1-40 lowercase letters, digits and single hyphens)",
        "{}",
        r.report()
    );

    // A deploy to a site that does not exist fails before hashing a file.
    let r = server.cli(&["deploy", dir, "--site", "nope"]).fails();
    assert_eq!(
        r.stderr().trim(),
        format!(
            "error: site \"nope\" does not exist on {}; create it with `chanto sites create nope` \
             (`chanto sites list` shows the sites there are)",
            server.api_url
        ),
        "{}",
        r.report()
    );
    server.cli(&["sites", "create", "docs"]).ok();
    let r = server.cli(&["deploy", dir, "--site", "docs", "--branch", "bad..branch"]).fails();
    assert!(r.stderr().starts_with("error: --branch: branch name \"bad..branch\""), "{}", r.report());
    assert!(!r.stderr().contains("hashed"), "nothing was hashed: {}", r.report());

    // No token: one line for a CLI user.
    let r = server.cli(&["sites", "list"]).env_remove("CHANTO_TOKEN").fails();
    assert_eq!(
        r.stderr().trim(),
        "error: no API token: pass --token, set CHANTO_TOKEN, or run `chanto login`",
        "{}",
        r.report()
    );

    // --server pointed at the edge.
    let r = server.cli(&["sites", "list"]).env("CHANTO_SERVER", &format!("http://{}", server.edge)).fails();
    let e = r.stderr();
    assert!(e.contains("this looks like the edge, not the API (default port 8787)"), "{}", r.report());
    assert!(!e.contains("<!doctype") && e.lines().count() == 1, "no HTML printed: {}", r.report());

    // A port in use names the flag to change, and a failed first start
    // leaves no half-made data directory.
    let fresh = tmp.path().join("fresh-data");
    let busy = Cli::new(&[
        "serve",
        "--data",
        fresh.to_str().unwrap(),
        "--edge",
        &server.edge,
        "--api",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ])
    .fails();
    assert!(
        busy.stderr().contains(&format!("the edge (sites) cannot listen on {}", server.edge))
            && busy.stderr().contains("pass another address with --edge"),
        "{}",
        busy.report()
    );
    assert!(!fresh.exists(), "a failed first start left {}", fresh.display());
}

/// Issue 19, project layouts: a project root deploys what its own config
/// names (Firebase's hosting.public with its ignore list, Netlify's
/// publish, Amplify's baseDirectory), with the root's rule files, and says
/// which setting chose the directory.
#[test]
fn a_project_root_deploys_what_its_platform_config_names() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    for site in ["fb", "nl", "am", "plain"] {
        server.cli(&["sites", "create", site]).ok();
    }
    // Firebase: public/, its default ignores, redirects from the root's firebase.json.
    let fb = tmp.path().join("fb");
    write_tree(
        &fb,
        &[
            (
                "firebase.json",
                r#"{"hosting": {"public": "public", "redirects": [{"source": "/old", "destination": "/new.html", "type": 301}]}}"#,
            ),
            ("public/index.html", "firebase home"),
            ("public/new.html", "new"),
            ("public/.env", "SECRET=1"),
            ("public/node_modules/x.js", "x"),
            ("src/app.js", "source"),
        ],
    );
    let run = server.cli(&["deploy", fb.to_str().unwrap(), "--site", "fb"]).ok();
    assert!(run.stderr().contains("public (hosting.public in firebase.json)"), "{}", run.report());
    assert_eq!(server.get("fb.localhost", "/").text(), "firebase home");
    let r = server.get("fb.localhost", "/old");
    assert_eq!((r.status, r.header("location")), (301, Some("/new.html")), "the root's rules apply");
    for hidden in ["/.env", "/node_modules/x.js", "/src/app.js", "/public/index.html", "/firebase.json"] {
        assert_eq!(server.get("fb.localhost", hidden).status, 404, "{hidden}");
    }
    // Netlify, with no DIR: the current directory's netlify.toml names dist/.
    let nl = tmp.path().join("nl");
    write_tree(
        &nl,
        &[
            (
                "netlify.toml",
                "[build]\npublish = \"dist\"\n\n[[redirects]]\nfrom = \"/a\"\nto = \"/b.html\"\nstatus = 302\n",
            ),
            ("dist/index.html", "netlify home"),
            ("dist/b.html", "b"),
            ("README.md", "not the site"),
        ],
    );
    let mut cli = server.cli(&["deploy", "--site", "nl"]);
    cli.cmd.current_dir(&nl);
    let run = cli.ok();
    assert!(run.stderr().contains("([build] publish in netlify.toml)"), "{}", run.report());
    assert_eq!(server.get("nl.localhost", "/").text(), "netlify home");
    assert_eq!(server.get("nl.localhost", "/a").status, 302);
    assert_eq!(server.get("nl.localhost", "/README.md").status, 404);
    // Amplify: baseDirectory, and customHttp.yml from the root.
    let am = tmp.path().join("am");
    write_tree(
        &am,
        &[
            (
                "amplify.yml",
                "version: 1\nfrontend:\n  phases:\n    build:\n      commands: []\n  artifacts:\n    baseDirectory: build\n    files:\n      - '**/*'\n",
            ),
            (
                "customHttp.yml",
                "customHeaders:\n  - pattern: '**/*'\n    headers:\n      - key: X-From-Root\n        value: amplify\n",
            ),
            ("build/index.html", "amplify home"),
        ],
    );
    let run = server.cli(&["deploy", am.to_str().unwrap(), "--site", "am"]).ok();
    assert!(run.stderr().contains("(artifacts.baseDirectory in amplify.yml)"), "{}", run.report());
    let r = server.get("am.localhost", "/");
    assert_eq!((r.text().as_str(), r.header("x-from-root")), ("amplify home", Some("amplify")));
    // No DIR where there is no project: refused, with what to do.
    let plain = tmp.path().join("plain");
    write_tree(&plain, &[("index.html", "plain")]);
    let mut cli = server.cli(&["deploy", "--site", "plain"]);
    cli.cmd.current_dir(&plain);
    let run = cli.fails();
    assert!(run.stderr().contains("give it: chanto deploy DIR --site plain"), "{}", run.report());
    // A config inside the published directory itself (how rule files were
    // always read): that directory is deployed, as before.
    write_tree(&plain, &[("firebase.json", r#"{"hosting": {"public": "public", "redirects": []}}"#)]);
    let run = server.cli(&["deploy", plain.to_str().unwrap(), "--site", "plain"]).ok();
    assert!(run.stderr().contains("which is not there; deploying"), "{}", run.report());
    assert_eq!(server.get("plain.localhost", "/").text(), "plain");
    // Hostile: a publish directory outside the project, a broken config.
    write_tree(&plain, &[("firebase.json", r#"{"hosting": {"public": ".."}}"#)]);
    let run = server.cli(&["deploy", plain.to_str().unwrap(), "--site", "plain"]).fails();
    assert!(
        run.stderr().contains("hosting.public: path \"..\" contains \"..\"; paths must stay inside"),
        "{}",
        run.report()
    );
    write_tree(&plain, &[("firebase.json", "{\"hosting\": {\"public\": 7}}")]);
    let run = server.cli(&["deploy", plain.to_str().unwrap(), "--site", "plain"]).fails();
    assert!(run.stderr().contains("firebase.json:1:1: hosting.public must be a directory name"), "{}", run.report());
}

/// Each platform's defaults, from its files or from `profile` in
/// chanto.toml: pretty URLs (`/about` serves about.html) for chanto and
/// Netlify, exact paths for Amplify and Firebase; Firebase's header rule
/// for `404.html` applies to the 404 answer.
#[test]
fn each_platforms_defaults_follow_its_files_or_the_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let deploy = |site: &str, rules: &[(&str, &str)]| {
        server.cli(&["sites", "create", site]).ok();
        let dir = tmp.path().join(site);
        write_tree(&dir, &[("index.html", "home"), ("about.html", "about"), ("404.html", "not here")]);
        write_tree(&dir, rules);
        server.cli(&["deploy", dir.to_str().unwrap(), "--site", site]).ok();
    };
    deploy("plain", &[]);
    deploy("nl", &[("_redirects", "/old /about 301\n")]);
    deploy("am", &[("customHttp.yml", "customHeaders: []\n")]);
    let firebase = r#"{"hosting": {"headers": [{"source": "404.html", "headers": [{"key": "Cache-Control", "value": "max-age=300"}]}]}}"#;
    deploy("fb", &[("firebase.json", firebase)]);
    deploy("chosen", &[("customHttp.yml", "customHeaders: []\n"), ("chanto.toml", "profile = \"netlify\"\n")]);

    let get = |site: &str, path: &str| server.get(&format!("{site}.localhost"), path);
    for site in ["plain", "nl", "chosen"] {
        let r = get(site, "/about");
        assert_eq!((r.status, r.text().as_str()), (200, "about"), "{site}: pretty URLs");
        assert_eq!(get(site, "/about.html").status, 200, "{site}: the file's own path still answers");
    }
    for site in ["am", "fb"] {
        let r = get(site, "/about");
        assert_eq!((r.status, r.text().as_str()), (404, "not here"), "{site}: paths name files exactly");
        assert_eq!(get(site, "/about.html").text(), "about");
    }
    let r = get("nl", "/old");
    assert_eq!((r.status, r.header("location")), (301, Some("/about")));
    assert_eq!(get("fb", "/missing").header("cache-control"), Some("max-age=300"), "Firebase's 404.html header rule");
    assert_eq!(get("am", "/missing").header("cache-control"), Some("no-store"), "elsewhere the 404 is not cached");

    // The site's setting: for its next deploys, below chanto.toml's own.
    let r = server.cli(&["sites", "profile", "nl", "--set", "amplify"]).ok();
    assert!(r.stdout().contains("follow amplify's defaults"), "{}", r.report());
    assert_eq!(get("nl", "/about").status, 200, "a deploy keeps the defaults it was made with");
    server.cli(&["deploy", tmp.path().join("nl").to_str().unwrap(), "--site", "nl"]).ok();
    assert_eq!(get("nl", "/about").status, 404, "the next deploy follows the site's setting");
    server.cli(&["sites", "profile", "chosen", "--set", "firebase"]).ok();
    server.cli(&["deploy", tmp.path().join("chosen").to_str().unwrap(), "--site", "chosen"]).ok();
    assert_eq!(get("chosen", "/about").status, 200, "chanto.toml's profile wins over the site's");
    let r = server.cli(&["sites", "profile", "nl", "--set", "vercel"]).fails();
    assert!(r.stderr().contains("vercel") && r.stderr().contains("netlify"), "{}", r.report());
    for body in [r#"{"profile": "vercel"}"#, r#"{"profile": 3}"#, r#"{"profile": "netlify", "extra": 1}"#, "{"] {
        let auth = format!("Bearer {}", server.token);
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
        let r = util::http_request(
            &server.api_url_addr(),
            "PUT",
            "api",
            "/api/v1/sites/nl/profile",
            &headers,
            body.as_bytes(),
        )
        .unwrap();
        assert!(matches!(r.status, 400 | 422), "{body}: {} {}", r.status, r.text());
    }
    assert_eq!(server.cli(&["sites", "profile", "nl", "--json"]).ok().json()["profile"], "amplify", "unchanged");
    server.cli(&["sites", "profile", "nl", "--clear"]).ok();
    assert!(server.cli(&["sites", "profile", "nl", "--json"]).ok().json()["profile"].is_null());

    // A profile that is not one is refused, with the line named.
    let bad = tmp.path().join("bad");
    write_tree(&bad, &[("index.html", "x"), ("chanto.toml", "profile = \"vercel\"\n")]);
    let r = server.cli(&["deploy", bad.to_str().unwrap(), "--site", "plain"]).fails();
    assert!(r.stderr().contains("chanto.toml:1:11: profile: unknown profile \"vercel\""), "{}", r.report());
    assert_eq!(get("plain", "/").text(), "home", "the refused deploy changed nothing");
}

/// `chanto dev` on a project root serves what its config publishes, with
/// the root's rule files, and follows changes to them.
#[test]
fn dev_serves_a_project_as_its_platform_lays_it_out() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("project");
    let firebase = |to: &str| {
        format!(r#"{{"hosting": {{"public": "public", "redirects": [{{"source": "/old", "destination": "{to}"}}]}}}}"#)
    };
    write_tree(
        &root,
        &[
            ("firebase.json", &firebase("/new")),
            ("public/index.html", "home"),
            ("public/.env", "SECRET=1"),
            ("src/x.js", "x"),
        ],
    );
    let dev = Dev::start(&root);
    assert!(dev.first_line.contains("public (hosting.public in firebase.json) at http://"), "{}", dev.first_line);
    let addr = dev.addr.clone();
    let get = |path: &str| http_get(&addr, "localhost", path).unwrap();
    assert_eq!(get("/").text(), "home");
    assert_eq!(get("/old").header("location"), Some("/new"), "the root's firebase.json");
    assert_eq!(get("/.env").status, 404, "Firebase's default ignores");
    assert_eq!(get("/src/x.js").status, 404, "only the published directory");
    std::fs::write(root.join("firebase.json"), firebase("/newer")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while get("/old").header("location") != Some("/newer") {
        assert!(std::time::Instant::now() < deadline, "a change to the root's rules was never served");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `chanto import amplify` turns what `aws amplify` prints into chanto's
/// files, says what did not carry over, keeps no secret, refuses to
/// overwrite and names bad input; the rule files it writes deploy as they
/// behaved on Amplify.
#[test]
fn import_amplify_writes_chantos_files_and_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let app = r#"{"app": {"appId": "d2abc", "name": "Docs", "repository": "https://github.com/ada/docs", "platform": "WEB",
      "environmentVariables": {"API_URL": "https://api.example.com"}, "enableBasicAuth": true,
      "basicAuthCredentials": "YW5uOnMzY3IzdA==", "productionBranch": {"branchName": "main"},
      "customRules": [{"source": "/old", "target": "/", "status": "301"},
                      {"source": "/<*>", "target": "/index.html", "status": "404-200"}],
      "customHeaders": "customHeaders:\n  - pattern: '**'\n    headers:\n      - key: X-Moved\n        value: from-amplify\n"}}"#;
    let branches = r#"{"branches": [{"branchName": "main", "stage": "PRODUCTION", "enableAutoBuild": true},
      {"branchName": "dev", "enableAutoBuild": true, "enableBasicAuth": true, "basicAuthCredentials": "Ym9iOnB3"}]}"#;
    write_tree(tmp.path(), &[("app.json", app), ("branches.json", branches), ("bad.json", "{\"app\": {\"name\": [}}")]);
    let out = tmp.path().join("migrated");
    let run = |args: &[&str]| {
        let mut c = Cli::new(args);
        c.cmd.current_dir(tmp.path());
        c
    };
    let r = run(&["import", "amplify", "app.json", "branches.json", "--out", out.to_str().unwrap()]).ok();
    let said = r.stdout();
    assert!(said.contains("Imported the amplify site as docs"), "{}", r.report());
    assert!(said.contains("app.basicAuthCredentials: the password is not carried over"), "{said}");
    assert!(said.contains("branches[dev].basicAuthCredentials"), "{said}");
    for f in ["chanto.platform.toml", "amplify-rules.json", "customHttp.yml"] {
        assert!(out.join(f).is_file(), "{f}: {said}");
    }
    let all: String = ["chanto.platform.toml", "amplify-rules.json", "customHttp.yml"]
        .iter()
        .map(|f| std::fs::read_to_string(out.join(f)).unwrap())
        .collect();
    assert!(!all.contains("s3cr3t") && !all.contains("api.example.com"), "no secret or value is written: {all}");
    // Again: refused, nothing replaced; --force replaces.
    let r = run(&["import", "amplify", "app.json", "--out", out.to_str().unwrap()]).fails();
    assert!(r.stderr().contains("already there; nothing written"), "{}", r.report());
    run(&["import", "amplify", "app.json", "--out", out.to_str().unwrap(), "--force", "--json"]).ok();
    // Bad input names the file, line and column.
    let r = run(&["import", "amplify", "bad.json", "--out", "x"]).fails();
    assert!(r.stderr().contains("bad.json:1:17: invalid type: sequence, expected a string"), "{}", r.report());
    let r = run(&["import", "netlify", "app.json", "branches.json"]).fails();
    assert!(r.stderr().contains("give one file"), "{}", r.report());
    let r = run(&["import", "amplify", "missing.json"]).fails();
    assert!(r.stderr().contains("missing.json"), "{}", r.report());

    // The rule files behave on chanto as on Amplify.
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "home")]);
    for f in ["amplify-rules.json", "customHttp.yml"] {
        std::fs::copy(out.join(f), site.join(f)).unwrap();
    }
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    let r = server.get("docs.localhost", "/old");
    assert_eq!((r.status, r.header("location")), (301, Some("/")));
    let r = server.get("docs.localhost", "/some/app/route");
    assert_eq!((r.status, r.text().as_str(), r.header("x-moved")), (200, "home", Some("from-amplify")));
}

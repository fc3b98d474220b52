//! `chanto dev` live reload (#20), through the real binary on real sockets:
//! the script tag in HTML only (Content-Length right, never cached), the
//! reserved paths a site cannot shadow, the event stream (versions, keep-alive
//! comments, a reload only once the new version is served, a burst of writes
//! served as one finished state), the bound on streams, `--no-reload` and
//! `serve` untouched byte for byte, and a real headless Chromium that reloads.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use util::*;

/// A running `chanto dev`, stopped on drop.
struct Dev {
    child: std::process::Child,
    addr: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dev(dir: &std::path::Path, extra: &[&str]) -> Dev {
    let mut child = std::process::Command::new(BIN)
        .args(["dev", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr =
        line.split("http://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_else(|| panic!("{line}")).to_owned();
    // Drain the rest (a closed pipe would drop the lines, not end `chanto dev`).
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Dev { child, addr }
}

impl Dev {
    fn get(&self, path: &str) -> HttpResponse {
        http_get(&self.addr, "localhost", path).unwrap()
    }
}

/// An open event stream, read line by line.
struct Events {
    reader: BufReader<TcpStream>,
    head: String,
}

fn events(addr: &str) -> Events {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET /__chanto/reload HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut l = String::new();
        assert!(reader.read_line(&mut l).unwrap() > 0, "stream closed in its head: {head}");
        if l == "\r\n" {
            break;
        }
        head.push_str(&l);
    }
    Events { reader, head }
}

impl Events {
    /// The next event or comment (chunked framing skipped): its lines.
    fn next(&mut self) -> String {
        let mut event = String::new();
        loop {
            let mut l = String::new();
            assert!(self.reader.read_line(&mut l).unwrap() > 0, "stream ended; so far: {event:?}");
            let l = l.trim_end_matches(['\r', '\n']);
            // Chunk sizes are hex digits alone on a line; event lines never are.
            if l.is_empty() {
                if !event.is_empty() {
                    return event;
                }
                continue;
            }
            if l.chars().all(|c| c.is_ascii_hexdigit()) && !l.contains(':') {
                continue;
            }
            event.push_str(l);
            event.push('\n');
        }
    }

    /// The data of the next `version` event (comments skipped).
    fn version(&mut self) -> String {
        loop {
            let e = self.next();
            if let Some(v) = e.lines().find_map(|l| l.strip_prefix("data: ")) {
                assert!(e.contains("event: version"), "{e}");
                return v.to_owned();
            }
        }
    }
}

/// The `data-version` of the tag in a page.
fn page_version(body: &str) -> String {
    let at = body.find("data-version=\"").unwrap_or_else(|| panic!("no tag in {body:?}")) + 14;
    body[at..at + body[at..].find('"').unwrap()].to_owned()
}

fn tag(version: &str) -> String {
    format!(r#"<script src="/__chanto/reload.js" data-version="{version}"></script>"#)
}

const PAGE: &str = "<!doctype html><html><body><h1>one</h1></body></html>\n";

#[test]
fn html_gets_the_script_and_nothing_else_does() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_tree(
        &site,
        &[
            ("index.html", PAGE),
            ("bare.html", "<p>no body element"),
            ("style.css", "h1 { color: red }"),
            ("404.html", "<body>lost</body>"),
            ("__chanto/reload.js", "the site's own file"),
            ("_headers", "/*\n  Cache-Control: public, max-age=600\n"),
        ],
    );
    let d = dev(&site, &[]);
    let r = d.get("/");
    assert_eq!(r.status, 200);
    let body = r.text();
    let v = page_version(&body);
    assert_eq!(body, PAGE.replace("</body>", &format!("{}</body>", tag(&v))));
    assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()), "length after injection");
    assert_eq!(r.header("cache-control"), Some("no-store"), "an injected page is never cached");
    assert_eq!(
        (r.header("etag"), r.header("last-modified")),
        (None, None),
        "the file's validators are not this body's"
    );
    // HEAD announces the same length.
    let h = http_request(&d.addr, "HEAD", "localhost", "/", &[], b"").unwrap();
    assert_eq!(h.header("content-length"), r.header("content-length"));
    // No </body>: at the end. A 404 page reloads too.
    let r = d.get("/bare.html");
    assert_eq!(r.text(), format!("<p>no body element{}", tag(&v)));
    let r = d.get("/missing");
    assert_eq!((r.status, r.text()), (404, format!("<body>lost{}</body>", tag(&v))));
    // Not HTML: byte for byte the file, with its validators.
    let r = d.get("/style.css");
    assert_eq!(r.body, b"h1 { color: red }");
    assert!(r.header("etag").is_some(), "{r:?}");
    assert!(r.header("cache-control").is_some_and(|c| c.contains("max-age=600")), "{r:?}");
    // The reserved paths are the dev server's; the site's file there is not served.
    let r = d.get("/__chanto/reload.js");
    assert!(r.text().contains("new EventSource(\"/__chanto/reload\")"), "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/javascript; charset=utf-8"));
    let r = d.get("/__chanto/other");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("keeps /__chanto/ for live reload"), "{}", r.text());
    let r = http_request(&d.addr, "POST", "localhost", "/__chanto/reload", &[], b"x").unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));

    // --no-reload: the edge alone, byte for byte.
    drop(d);
    let d = dev(&site, &["--no-reload"]);
    assert_eq!(d.get("/").text(), PAGE);
    assert!(d.get("/").header("etag").is_some());
    assert_eq!(d.get("/__chanto/reload.js").text(), "the site's own file");
}

#[test]
fn large_pages_get_the_script_appended_while_streaming() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    // Over the 8 MiB buffered for the </body> search, with a </body> far before the end.
    let big = format!("<body>{}</body>{}", "x".repeat(9 << 20), "y".repeat(100));
    write_tree(&site, &[("big.html", &big)]);
    let d = dev(&site, &[]);
    let r = d.get("/big.html");
    let v = page_version(&r.text()[big.len()..]);
    assert_eq!(r.text(), format!("{big}{}", tag(&v)));
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
}

#[test]
fn the_stream_reloads_only_once_the_change_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", PAGE)]);
    let d = dev(&site, &["--reload-keepalive", "200ms"]);
    let served = page_version(&d.get("/").text());
    let mut ev = events(&d.addr);
    let head = ev.head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream") && head.contains("cache-control: no-store"), "{head}");
    assert_eq!(ev.version(), served, "the stream names the version the page has");
    // An idle stream gets keep-alive comments.
    assert_eq!(ev.next(), ": keep-alive\n");

    // A change: the event comes once the new page is served, never before.
    std::fs::write(site.join("index.html"), PAGE.replace("one", "two")).unwrap();
    let next = ev.version();
    assert_ne!(next, served);
    let r = d.get("/");
    assert!(r.text().contains("<h1>two</h1>"), "the event came before the change was served: {}", r.text());
    assert_eq!(page_version(&r.text()), next);

    // A burst of writes, each well within the debounce of the one before and
    // longer in all than a poll: one reload, of the finished state.
    for i in 0..20 {
        write_tree(&site, &[(&format!("part{i}.html"), "p")]);
        std::fs::write(site.join("index.html"), PAGE.replace("one", &format!("burst {i}"))).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = ev.version();
    assert!(d.get("/").text().contains("burst 19"), "reloaded before the burst was over");
    assert_eq!(d.get("/part19.html").status, 200);
    assert_eq!(page_version(&d.get("/").text()), after);
    // Nothing more comes but keep-alives once the folder is quiet.
    for _ in 0..5 {
        assert_eq!(ev.next(), ": keep-alive\n", "a second reload for one burst");
    }

    // A broken rule file keeps the last good version: no reload.
    std::fs::write(site.join("_redirects"), "/bad\n").unwrap();
    for _ in 0..5 {
        assert_eq!(ev.next(), ": keep-alive\n", "reloaded to a version that is not served");
    }
    std::fs::remove_file(site.join("_redirects")).unwrap();
    assert_ne!(ev.version(), after);
}

#[test]
fn streams_are_bounded_and_the_site_keeps_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", PAGE)]);
    let d = dev(&site, &["--reload-keepalive", "100ms"]);
    // The default bound: 64 streams.
    let mut open: Vec<Events> = (0..64).map(|_| events(&d.addr)).collect();
    for e in &mut open {
        assert!(e.head.starts_with("HTTP/1.1 200"), "{}", e.head);
    }
    for _ in 0..10 {
        let r = d.get("/__chanto/reload");
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("64 live-reload connections"), "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("5"));
    }
    assert_eq!(d.get("/").status, 200, "pages are still served");
    // A closed stream gives its place back (noticed at the next keep-alive).
    drop(open.pop());
    let start = Instant::now();
    loop {
        let e = events(&d.addr);
        if e.head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the place never came back: {}", e.head);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(open);
}

/// `chanto serve` never adds anything: the same page, byte for byte, and no
/// reserved path.
#[test]
fn serve_sends_html_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", PAGE), ("__chanto/reload.js", "the site's own file")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    let r = server.get("docs.localhost", "/");
    assert_eq!(r.body, PAGE.as_bytes());
    assert_eq!(r.header("content-length"), Some(PAGE.len().to_string().as_str()));
    assert!(r.header("etag").is_some());
    let r = server.get_with("docs.localhost", "/", &[("accept-encoding", "identity")]);
    assert_eq!(r.body, PAGE.as_bytes());
    assert_eq!(server.get("docs.localhost", "/__chanto/reload").status, 404);
    assert_eq!(server.get("docs.localhost", "/__chanto/reload.js").text(), "the site's own file");
}

/// A real browser: a page open in headless Chromium reloads by itself when
/// the file changes. The page reports each load to a listener of the test's.
/// Skipped with a message where Chromium is missing, unless
/// `CHANTO_TEST_REQUIRE_BROWSER` is set (scripts/test sets it and installs
/// Chromium), where it fails.
#[test]
fn a_real_browser_reloads_on_change() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
    else {
        assert!(
            std::env::var_os("CHANTO_TEST_REQUIRE_BROWSER").is_none(),
            "CHANTO_TEST_REQUIRE_BROWSER is set but no Chromium is installed: apt-get install chromium"
        );
        eprintln!("SKIPPED a_real_browser_reloads_on_change: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let report = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut line = String::new();
            let _ = BufReader::new(conn.try_clone().unwrap()).read_line(&mut line);
            let _ = conn
                .write_all(b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n");
            if let Some(path) = line.split(' ').nth(1) {
                let _ = tx.send(path.to_owned());
            }
        }
    });
    let page = |word: &str| {
        format!(
            "<!doctype html><html><body><h1>{word}</h1><script>fetch(\"http://{report}/loaded?\" + \
             document.querySelector(\"h1\").textContent, {{mode: \"no-cors\"}})</script></body></html>"
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", &page("first")), ("style.css", "h1 {}")]);
    let d = dev(&site, &[]);
    let profile = tmp.path().join("profile");
    let mut cmd = std::process::Command::new(chromium);
    cmd.args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://{}/", d.addr))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    struct Browser(std::process::Child);
    impl Drop for Browser {
        fn drop(&mut self) {
            // The browser's own process group: its renderers go with it.
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).status();
            let _ = self.0.wait();
        }
    }
    let _browser = Browser(cmd.spawn().unwrap());
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("the browser never reported {what}"))
    };
    assert_eq!(next("the first load"), "/loaded?first");
    std::fs::write(site.join("index.html"), page("second")).unwrap();
    assert_eq!(next("a reload after the edit"), "/loaded?second");
    // A change to a file that is not HTML reloads the page too.
    std::fs::write(site.join("style.css"), "h1 { color: red }").unwrap();
    assert_eq!(next("a reload after a stylesheet change"), "/loaded?second");
}

#[test]
fn a_closed_stdout_stops_the_printing_not_the_server() {
    // `chanto dev site | head -1` to grab the address: the reader goes
    // away, and each later "Reloaded:" line meets a closed pipe. The server
    // keeps serving (and reloading) until Ctrl-C, as before the pipe closed.
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "one")]);
    let stderr = tmp.path().join("stderr");
    let mut child = std::process::Command::new(BIN)
        .args(["dev", site.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    {
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
    } // the read end closes here
    let addr = line.split("http://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_else(|| panic!("{line}"));
    let addr = addr.to_owned();
    let page = || http_get(&addr, "localhost", "/").ok().map(|r| r.text());
    assert!(page().is_some_and(|p| p.starts_with("one<script")), "{:?}", page());
    // Two changes: the second is served only after the first one's line was
    // written to the closed pipe.
    for text in ["two", "three"] {
        std::fs::write(site.join("index.html"), text).unwrap();
        wait_for(&format!("{text:?} served"), Duration::from_secs(20), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("chanto dev ended ({status}): {}", std::fs::read_to_string(&stderr).unwrap());
            }
            page().filter(|p| p.starts_with(&format!("{text}<script")))
        });
    }
    let err = std::fs::read_to_string(&stderr).unwrap();
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    // Ctrl-C still stops it cleanly.
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = wait_for("chanto dev to stop", Duration::from_secs(10), || child.try_wait().unwrap());
    assert!(status.success(), "{status}: {}", std::fs::read_to_string(&stderr).unwrap());
}

//! A real headless Chromium for tests, driven through WebDriver
//! ([`fantoccini`], re-exported), with [axe-core] for accessibility checks.
//!
//! One `chromedriver` is shared per test binary ([`Browser::shared`]),
//! started on first use on a free loopback port. Each test opens its own
//! WebDriver [`Session`]: its own Chromium with its own fresh profile, so
//! the tests of one binary run in parallel without seeing each other's
//! cookies or storage. [`session`] does both in one call:
//!
//! ```no_run
//! # async fn t() {
//! use chanto_testkit::browser;
//! let Some(s) = browser::session("my_test").await else { return }; // skipped
//! s.goto("http://127.0.0.1:8080/").await.unwrap();
//! browser::assert_accessible(&s, "the home page").await;
//! s.close().await;
//! # }
//! ```
//!
//! Where Chromium or chromedriver is missing, [`session`] prints a `SKIPPED`
//! line and returns `None`, unless `CHANTO_TEST_REQUIRE_BROWSER` is set
//! (scripts/test sets it), where it panics with the command that installs
//! them (`apt-get install chromium chromium-driver`). Likewise [`axe`] and
//! [`assert_accessible`] skip (or panic) where axe-core is not installed:
//! `npm install --prefix target/npm axe-core@VERSION` (scripts/test does).
//!
//! chromedriver and everything it starts (Chromium, its renderers) run in
//! their own process group. A small `sh` watchdog holds a pipe from the test
//! process: when the test process exits, for whatever reason, the pipe closes
//! and the watchdog kills that whole group and removes the profiles, so no
//! browser outlives its tests. A [`Session`] dropped without [`Session::close`]
//! (a failed test) still ends its Chromium, from its `Drop`.
//!
//! WebDriver's script commands (`execute`, `execute_async`) are not subject to
//! the page's Content-Security-Policy, so a page with `script-src 'self'`
//! and no inline script is checked like any other (the harness's own test
//! checks this).
//!
//! [axe-core]: https://github.com/dequelabs/axe-core

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use fantoccini;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

/// The environment variable that turns a skip (no browser, no axe-core) into
/// a failure. scripts/test sets it.
pub const REQUIRE_ENV: &str = "CHANTO_TEST_REQUIRE_BROWSER";
/// The environment variable naming axe-core's `axe.min.js`, when it is not at
/// [`default_axe_js`].
pub const AXE_JS_ENV: &str = "CHANTO_AXE_JS";
/// The axe-core tags [`axe`] checks: WCAG 2 level A and AA.
pub const AXE_TAGS: &[&str] = &["wcag2a", "wcag2aa"];

/// Chromium's command line for every session. Without the background
/// networking flags Chromium's own connections (component updates, sync…)
/// fail slowly where the machine has no way out; `--no-sandbox` lets it run
/// as root (CI).
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
];

/// How long a readiness wait ([`wait_for`], [`wait_until`]) lasts by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a missing browser or axe-core fails the test (`CHANTO_TEST_REQUIRE_BROWSER` is set).
pub fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some()
}

/// How to install what [`Browser::shared`] needs.
const BROWSER_HINT: &str = "apt-get install chromium chromium-driver";
/// How to install what [`axe`] needs (scripts/test pins the version).
const AXE_HINT: &str = "npm install --prefix target/npm --no-audit --no-fund axe-core@4.14.1";

/// The chromedriver shared by a test binary. Sessions come from [`Browser::session`].
pub struct Browser {
    addr: SocketAddr,
    chromium: PathBuf,
    /// Holds the profiles (one directory per session) and chromedriver's log;
    /// the watchdog removes it when the process exits.
    dir: PathBuf,
    next_profile: AtomicU32,
    /// Never written; closes when the test process exits, which stops everything.
    _watchdog: Mutex<ChildStdin>,
    _chromedriver: Mutex<Child>,
}

/// The first of `names` on PATH (or the file `env` names, where set).
fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
            std::fs::metadata(p)
                .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
        })
    })
}

impl Browser {
    /// The chromedriver shared by every test of this test binary, started on
    /// first use; `None` where Chromium or chromedriver is missing (the caller
    /// prints why it skips), unless [`required`], where it panics.
    /// Override the programs with `CHANTO_CHROMIUM` and `CHANTO_CHROMEDRIVER`.
    pub fn shared() -> Option<&'static Browser> {
        static SHARED: OnceLock<Option<Browser>> = OnceLock::new();
        let browser = SHARED.get_or_init(|| {
            let chromium = find_program("CHANTO_CHROMIUM", &["chromium", "chromium-browser"]);
            let chromedriver = find_program("CHANTO_CHROMEDRIVER", &["chromedriver"]);
            match (chromium, chromedriver) {
                (Some(chromium), Some(chromedriver)) => Some(Browser::start(chromium, &chromedriver)),
                _ => None,
            }
        });
        assert!(
            browser.is_some() || !required(),
            "{REQUIRE_ENV} is set but chromium or chromedriver is not installed: {BROWSER_HINT}"
        );
        browser.as_ref()
    }

    fn start(chromium: PathBuf, chromedriver: &Path) -> Browser {
        let dir = tempfile::Builder::new().prefix("chanto-browser-").tempdir().expect("a temp dir").keep();
        // The watchdog: reads the process groups to kill, one a line, until
        // the pipe closes (this process exited), then kills them and removes
        // the profiles.
        #[expect(
            clippy::zombie_processes,
            reason = "the watchdog outlives this process: it acts once this process is gone"
        )]
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "g=; while read p; do g=\"$g -$p\"; done; [ -n \"$g\" ] && kill -KILL $g 2>/dev/null; rm -rf '{}'",
                dir.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the browser watchdog (sh)");
        let mut watchdog = watchdog.stdin.take().expect("the watchdog's stdin");
        let log = dir.join("chromedriver.log");
        let mut last_log = String::new();
        // A free port may be taken between our probe and chromedriver's bind:
        // then chromedriver exits, and we try another port.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
            let mut cmd = Command::new(chromedriver);
            cmd.arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).expect("chromedriver's log"))
                .stderr(Stdio::null());
            // Its own process group, which its Chromiums join: one kill stops all.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
            writeln!(watchdog, "{}", child.id()).expect("telling the watchdog");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if http(addr, "GET", "/status").is_some_and(|(status, body)| status == 200 && body.contains("ready")) {
                    return Browser {
                        addr,
                        chromium,
                        dir,
                        next_profile: AtomicU32::new(0),
                        _watchdog: Mutex::new(watchdog),
                        _chromedriver: Mutex::new(child),
                    };
                }
                if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Not reaped (no `wait`) where it is still running: its pid stays
            // taken, so the watchdog's kill of its group at exit hits nothing else.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("chromedriver did not start (5 tries); its last log:\n{last_log}");
    }

    /// The WebDriver URL of this chromedriver (`http://127.0.0.1:PORT`).
    pub fn webdriver_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new WebDriver session: a fresh Chromium with an empty profile of
    /// its own. Panics where the session cannot start (a Chromium that does
    /// not match chromedriver's version, say).
    pub async fn session(&self) -> Session {
        let n = self.next_profile.fetch_add(1, Ordering::Relaxed);
        let profile = self.dir.join(format!("profile-{n}"));
        std::fs::create_dir_all(&profile).expect("a profile directory");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "script": 30_000, "pageLoad": 30_000, "implicit": 0 },
            "goog:chromeOptions": { "binary": self.chromium, "args": args },
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let client = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.webdriver_url())
            .await
            .unwrap_or_else(|e| {
                let log = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
                panic!("starting a WebDriver session on chromedriver {}: {e}\nchromedriver's log:\n{log}", self.addr)
            });
        let id = client.session_id().await.ok().flatten().expect("the WebDriver session's id");
        Session { client, id, webdriver: self.addr, profile, closed: false }
    }
}

/// The shared browser's new session ([`Browser::shared`], then
/// [`Browser::session`]); `None` after `SKIPPED test: …` where there is no
/// browser and [`required`] is not set.
pub async fn session(test: &str) -> Option<Session> {
    let Some(browser) = Browser::shared() else {
        eprintln!("SKIPPED {test}: chromium or chromedriver is not installed ({BROWSER_HINT})");
        return None;
    };
    Some(browser.session().await)
}

/// One WebDriver session: a Chromium of its own. Derefs to
/// [`fantoccini::Client`] (`goto`, `find`, `execute`, …). End it with
/// [`Session::close`]; a session dropped without it (a failed test) ends its
/// Chromium from `Drop`, blocking briefly.
pub struct Session {
    client: Client,
    id: String,
    webdriver: SocketAddr,
    profile: PathBuf,
    closed: bool,
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Session {
    /// The WebDriver client (also reachable through `Deref`).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ends the session: its Chromium quits and its profile is removed.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.closed = true;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.closed {
            // The runtime that ran the client may be gone (a panicking
            // test): ask chromedriver directly, over blocking HTTP.
            let _ = http(self.webdriver, "DELETE", &format!("/session/{}", self.id));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A minimal blocking HTTP/1.1 request to chromedriver (no body):
/// `(status, body)`, or `None` where it does not answer. chromedriver keeps
/// connections open whatever the request says: the body is read by its
/// Content-Length.
fn http(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = s.read(&mut buf).ok()?;
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
            });
            if n == 0 || length.is_some_and(|l| body.len() >= l) {
                let status = head.split(' ').nth(1)?.parse().ok()?;
                return Some((status, body.to_owned()));
            }
        } else if n == 0 {
            return None;
        }
    }
}

/// Waits (up to [`DEFAULT_TIMEOUT`]) for an element matching the CSS
/// `selector`; panics naming it where none appears.
pub async fn wait_for(client: &Client, selector: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(DEFAULT_TIMEOUT)
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no element matches {selector:?} after {DEFAULT_TIMEOUT:?}: {e}"))
}

/// Waits (up to [`DEFAULT_TIMEOUT`]) until the JavaScript expression `js`
/// is truthy in the page; panics with `what` where it never is.
pub async fn wait_until(client: &Client, js: &str, what: &str) {
    let deadline = Instant::now() + DEFAULT_TIMEOUT;
    loop {
        let v = client.execute(&format!("return !!({js});"), vec![]).await;
        if matches!(v, Ok(Value::Bool(true))) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: `{js}` still false after {DEFAULT_TIMEOUT:?} (last: {v:?})");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Presses and releases `key` on the keyboard, as a user would (WebDriver
/// actions: the key goes to whatever has focus).
pub async fn press(client: &Client, key: Key) {
    let value: char = key.into();
    let keys = KeyActions::new("keyboard".to_owned()).then(KeyAction::Down { value }).then(KeyAction::Up { value });
    client.perform_actions(keys).await.unwrap_or_else(|e| panic!("pressing {key:?}: {e}"));
}

/// Presses Tab: focus moves to the next focusable element.
pub async fn tab(client: &Client) {
    press(client, Key::Tab).await;
}

/// What has focus, as `tag#id` (`a#home`, `button#save`) or `tag` where it
/// has no id (`body` where nothing is focused).
pub async fn focused(client: &Client) -> String {
    let v = client
        .execute(
            "const e = document.activeElement; \
             return e ? e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') : '';",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("reading document.activeElement: {e}"));
    v.as_str().unwrap_or_default().to_owned()
}

/// Where [`axe`] looks for axe-core without `CHANTO_AXE_JS`: the workspace's
/// `target/npm/node_modules/axe-core/axe.min.js` (scripts/test installs it).
pub fn default_axe_js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/npm/node_modules/axe-core/axe.min.js")
}

/// axe-core's source, read once: from `CHANTO_AXE_JS` or [`default_axe_js`].
/// `None` where it is missing (the caller prints why it skips), unless
/// [`required`], where it panics with the npm command that installs it.
pub fn axe_source() -> Option<&'static str> {
    static SOURCE: OnceLock<Option<String>> = OnceLock::new();
    let path = std::env::var_os(AXE_JS_ENV).map(PathBuf::from).unwrap_or_else(default_axe_js);
    let source = SOURCE.get_or_init(|| std::fs::read_to_string(&path).ok());
    assert!(
        source.is_some() || !required(),
        "{REQUIRE_ENV} is set but axe-core is not at {} (set {AXE_JS_ENV}, or: {AXE_HINT})",
        path.display()
    );
    source.as_deref()
}

/// One failed axe-core rule on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule, e.g. `image-alt`, `label`, `html-has-lang`.
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: Option<String>,
    /// What the rule asks for, in a sentence.
    pub help: String,
    /// The rule's explanation at Deque.
    pub help_url: String,
    /// The elements that fail it.
    pub nodes: Vec<ViolationNode>,
}

/// An element that fails a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViolationNode {
    /// axe's CSS selector for it (JSON for one inside frames or shadow roots).
    pub target: String,
    /// Its opening HTML, as axe shows it.
    pub html: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let impact = self.impact.as_deref().unwrap_or("?");
        writeln!(f, "{} ({impact}): {} <{}>", self.id, self.help, self.help_url)?;
        for n in &self.nodes {
            writeln!(f, "    at {}  {}", n.target, n.html)?;
        }
        Ok(())
    }
}

/// The page's violations of WCAG 2 A and AA ([`AXE_TAGS`]), by axe-core
/// (injected into the current page); `None` where axe-core is not installed
/// and not [`required`] (the caller prints why it skips).
pub async fn axe(client: &Client) -> Option<Vec<Violation>> {
    axe_tags(client, AXE_TAGS).await
}

/// [`axe`] with other axe-core tags (e.g. `wcag21aa`, `best-practice`).
pub async fn axe_tags(client: &Client, tags: &[&str]) -> Option<Vec<Violation>> {
    let source = axe_source()?;
    let loaded = client.execute("return typeof window.axe === 'object';", vec![]).await;
    if !matches!(loaded, Ok(Value::Bool(true))) {
        client.execute(source, vec![]).await.unwrap_or_else(|e| panic!("injecting axe-core: {e}"));
    }
    let result = client
        .execute_async(
            "const [tags, done] = arguments;
             const target = (t) => t.length === 1 && typeof t[0] === 'string' ? t[0] : JSON.stringify(t);
             axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] })
               .then((r) => done({ violations: r.violations.map((v) => ({
                   id: v.id, impact: v.impact || null, help: v.help, helpUrl: v.helpUrl,
                   nodes: v.nodes.map((n) => ({ target: target(n.target), html: n.html })),
                 })) }))
               .catch((e) => done({ error: String((e && e.stack) || e) }));",
            vec![json!(tags)],
        )
        .await
        .unwrap_or_else(|e| panic!("running axe-core: {e}"));
    if let Some(e) = result.get("error") {
        panic!("axe-core failed: {}", e.as_str().unwrap_or_default());
    }
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let violations = result.get("violations").and_then(Value::as_array).expect("axe-core's violations");
    Some(
        violations
            .iter()
            .map(|v| Violation {
                id: str_of(v, "id"),
                impact: v.get("impact").and_then(Value::as_str).map(str::to_owned),
                help: str_of(v, "help"),
                help_url: str_of(v, "helpUrl"),
                nodes: v
                    .get("nodes")
                    .and_then(Value::as_array)
                    .map(|ns| {
                        ns.iter()
                            .map(|n| ViolationNode { target: str_of(n, "target"), html: str_of(n, "html") })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
    )
}

/// Panics listing every WCAG 2 A/AA violation ([`axe`]) of the current page,
/// which `page` names in the message. Skips (prints why) where axe-core is
/// not installed and not [`required`].
pub async fn assert_accessible(client: &Client, page: &str) {
    let Some(violations) = axe(client).await else {
        eprintln!("SKIPPED accessibility check of {page}: axe-core is not installed ({AXE_HINT})");
        return;
    };
    if !violations.is_empty() {
        let url = client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        let list: String = violations.iter().map(|v| format!("  - {v}")).collect();
        panic!("{page} ({url}) has {} WCAG 2 A/AA violation(s) (axe-core):\n{list}", violations.len());
    }
}

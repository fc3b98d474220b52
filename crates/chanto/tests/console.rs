//! The web console over HTTP (issue 18): sign-in and sessions, the pages a
//! developer uses to see and roll back a site, what a viewer cannot do,
//! CSRF and cross-origin refusals, the security headers every page carries,
//! and hostile input. (The same pages in a real browser, with axe-core:
//! tests/console_browser.rs.)

mod util;

use std::time::Duration;

use chanto_testkit::tls::TestCa;
use util::{Server, write_tree};

struct Console {
    server: Server,
    http: reqwest::Client,
    _tmp: tempfile::TempDir,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A server with site `docs` deployed twice (v1, then v2 live), and users
/// dev (developer) and val (viewer).
fn setup() -> Console {
    setup_with(&[])
}

/// [`setup`] with more `chanto serve` flags.
fn setup_with(extra: &[&str]) -> Console {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), extra);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>v1</h1>")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "first version"]).ok();
    write_tree(&site, &[("index.html", "<h1>v2</h1>")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "second version"]).ok();
    server.cli(&["users", "create", "dev", "--role", "developer", "--password-stdin"]).stdin("dev password 123").ok();
    server.cli(&["users", "create", "val", "--role", "viewer", "--password-stdin"]).stdin("val password 123").ok();
    Console { server, http: no_redirects(), _tmp: tmp }
}

impl Console {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.api_url)
    }

    /// Signs in; returns the session cookie (`name=value`).
    async fn sign_in(&self, user: &str, password: &str) -> String {
        let r = self
            .http
            .post(self.url("/login"))
            .form(&[("user", user), ("password", password), ("next", "/")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{:?}", r.text().await);
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"),
            "{cookie}"
        );
        cookie.split(';').next().unwrap().to_owned()
    }

    async fn get(&self, path: &str, cookie: &str) -> (u16, String) {
        let r = self.http.get(self.url(path)).header("cookie", cookie).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http.post(self.url(path)).header("cookie", cookie).form(form).send().await.unwrap()
    }

    fn edge_text(&self) -> String {
        self.server.get("docs.localhost", "/").text()
    }
}

/// The value of a hidden input named `name` in `page`.
fn hidden(page: &str, name: &str) -> String {
    let at = page.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name} in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The href of the first link whose text starts with `text`.
fn link(page: &str, text: &str) -> Option<String> {
    let at = page.find(&format!(">{text}"))?;
    let start = page[..at].rfind("href=\"")? + 6;
    Some(page[start..start + page[start..].find('"')?].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_developer_signs_in_sees_the_site_and_rolls_back_in_one_confirmed_click() {
    let c = setup();
    // Not signed in: every page sends to the sign-in page, and back after.
    let r = c.http.get(c.url("/sites/docs")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/sites/docs");
    let login = c.http.get(c.url("/login")).send().await.unwrap();
    let csp = login.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(login.headers()["x-content-type-options"], "nosniff");
    assert_eq!(login.headers()["cache-control"], "no-store");

    // A wrong password: the form again, saying so, with 401.
    let r = c.http.post(c.url("/login")).form(&[("user", "dev"), ("password", "nope nope nope")]).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let page = r.text().await.unwrap();
    assert!(page.contains("wrong user name or password") && page.contains("value=\"dev\""), "{page}");

    let cookie = c.sign_in("dev", "dev password 123").await;
    let (status, sites) = c.get("/", &cookie).await;
    assert_eq!(status, 200);
    assert!(sites.contains("href=\"/sites/docs\"") && sites.contains("http://docs.localhost:"), "{sites}");
    assert!(!sites.contains("Audit log"), "a developer has no audit link");

    // The site: both deploys, the older one offered as a rollback.
    let (_, page) = c.get("/sites/docs", &cookie).await;
    assert!(page.contains("first version") && page.contains("second version"), "{page}");
    let confirm = link(&page, "Roll back").unwrap_or_else(|| panic!("no rollback link: {page}"));
    assert_eq!(link(&page, "Publish"), None, "the live deploy is not offered again");
    // The confirmation names what will happen, and changes nothing yet.
    let (status, ask) = c.get(&confirm, &cookie).await;
    assert_eq!(status, 200);
    assert!(ask.contains("Roll back docs?") && ask.contains("first version") && ask.contains("No rebuild"), "{ask}");
    assert_eq!(c.edge_text(), "<h1>v2</h1>");
    let csrf = hidden(&ask, "csrf");

    // Without the form's token, or from another site: refused, nothing changes.
    let r = c.post(&confirm, &cookie, &[("csrf", "wrong")]).await;
    assert_eq!(r.status(), 403);
    let r = c
        .http
        .post(c.url(&confirm))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(c.edge_text(), "<h1>v2</h1>");

    // The click: live at once, and the page says so.
    let r = c.post(&confirm, &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/sites/docs?done=rollback");
    assert_eq!(c.edge_text(), "<h1>v1</h1>");
    let (_, page) = c.get("/sites/docs?done=rollback", &cookie).await;
    assert!(page.contains("Rolled back") && page.contains("rolled back"), "{page}");
    // The newer deploy is offered again, as a publish.
    assert!(link(&page, "Publish").is_some(), "{page}");
    // Filters: by branch and state.
    let (_, filtered) = c.get("/sites/docs?state=active", &cookie).await;
    assert!(filtered.contains("first version") && !filtered.contains("second version"), "{filtered}");
    let (_, none) = c.get("/sites/docs?branch=nosuch", &cookie).await;
    assert!(none.contains("No deploys match"), "{none}");

    // The audit log has it, by dev through the console.
    let log = c.server.cli(&["audit", "list", "--json"]).ok().json();
    let entry = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollback")
        .cloned()
        .unwrap_or_else(|| panic!("{log:#}"));
    assert_eq!(entry["actor"], "dev");
    assert!(entry["via"].as_str().unwrap().starts_with("session:"), "{entry}");
    assert_eq!(entry["source"], "127.0.0.1");

    // Sign out: the cookie no longer opens anything.
    let (_, page) = c.get("/", &cookie).await;
    let r = c.post("/logout", &cookie, &[("csrf", &hidden(&page, "csrf"))]).await;
    assert_eq!(r.status(), 303);
    let r = c.http.get(c.url("/")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 303, "signed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_but_cannot_roll_back_and_hostile_input_is_refused() {
    let c = setup();
    let cookie = c.sign_in("val", "val password 123").await;
    let (_, page) = c.get("/sites/docs", &cookie).await;
    assert!(page.contains("first version"));
    assert_eq!(link(&page, "Roll back"), None, "no action offered to a viewer");
    // Going there anyway: refused, with the reason, and nothing changes.
    let admin_cookie = c.sign_in("dev", "dev password 123").await;
    let (_, dev_page) = c.get("/sites/docs", &admin_cookie).await;
    let confirm = link(&dev_page, "Roll back").unwrap();
    let (status, refused) = c.get(&confirm, &cookie).await;
    assert_eq!(status, 403);
    assert!(refused.contains("needs the deploy scope") && refused.contains("role viewer"), "{refused}");
    let csrf = hidden(&page, "csrf");
    let r = c.post(&confirm, &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(c.edge_text(), "<h1>v2</h1>");
    let (status, _) = c.get("/audit", &cookie).await;
    assert_eq!(status, 403, "the audit log is for admins");

    // Hostile input.
    let (status, _) = c.get("/sites/NOT..valid", &cookie).await;
    assert_eq!(status, 400);
    let (status, page) = c.get("/sites/nosuch", &cookie).await;
    assert_eq!(status, 404);
    assert!(page.contains("nosuch"));
    let (status, page) = c.get("/sites/docs/deploys/zzzz/activate", &admin_cookie).await;
    assert!(status == 400 || status == 404, "{status}: {page}");
    // A page that escapes what it shows: a query value never becomes markup.
    let (_, page) = c.get("/sites/docs?branch=%3Cscript%3Ealert(1)%3C/script%3E", &cookie).await;
    assert!(!page.contains("<script>alert(1)"), "{page}");
    // next= never leaves the console.
    let r = c
        .http
        .post(c.url("/login"))
        .form(&[("user", "val"), ("password", "val password 123"), ("next", "//evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/");
    // A sign-in posted from another site is refused (login CSRF).
    let r = c
        .http
        .post(c.url("/login"))
        .header("origin", "http://evil.example")
        .form(&[("user", "val"), ("password", "val password 123")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Oversized and malformed forms.
    let big = "x".repeat(64 * 1024);
    let r =
        no_redirects().post(c.url("/login")).form(&[("user", big.as_str()), ("password", "p")]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let r = c
        .http
        .post(c.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("user=%ZZ&&&")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    // Forged and malformed cookies are nobody.
    for forged in [
        "chanto_session=0000000000000000000000000000000000000000000000000000000000000000",
        "chanto_session=../../etc",
        "chanto_session=",
    ] {
        let r = c.http.get(c.url("/")).header("cookie", forged).send().await.unwrap();
        assert_eq!(r.status(), 303, "{forged}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_logs_resume_after_a_reconnect_and_download_whole() {
    use util::git::{Repo, reachable_tempdir};
    let tmp = reachable_tempdir();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "app"]).ok();
    let repo = Repo::new(&tmp.path().join("repo"));
    server.cli(&["git", "connect", &repo.url(), "--site", "app"]).ok();
    let toml = "[build]\ncommand = \"for i in $(seq 1 10000); do echo line $i of a long build output; done; mkdir -p out; echo ok > out/index.html\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", toml)], "a long log");
    server.cli(&["users", "create", "dev", "--role", "developer", "--password-stdin"]).stdin("dev password 123").ok();
    let c = Console { server, http: no_redirects(), _tmp: tempfile::tempdir().unwrap() };
    let cookie = c.sign_in("dev", "dev password 123").await;
    let (_, page) = c.get("/sites/app", &cookie).await;
    let r = c.post("/sites/app/builds", &cookie, &[("csrf", &hidden(&page, "csrf"))]).await;
    assert_eq!(r.status(), 303);
    let build = r.headers()["location"].to_str().unwrap().to_owned();
    let id = build.trim_start_matches("/builds/").to_owned();
    util::wait_for("the build to end", Duration::from_secs(60), || {
        let b = c.server.cli(&["builds", "show", &id, "--json"]).ok().json();
        (b["state"] == "succeeded").then_some(())
    });
    // The page shows only the tail of a long log, numbered, and says where the rest is.
    let (status, page) = c.get(&build, &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("earlier lines are in the") && page.contains(&format!("/builds/{id}/log.txt")), "{page}");
    assert!(page.contains(">line 10000 of a long build output<"), "the end is shown");
    assert!(!page.contains(">line 1 of a long build output<"), "only the tail");
    assert!(page.len() < 200_000, "the page is not the whole log: {} bytes", page.len());
    // The raw log is whole.
    let (status, raw) = c.get(&format!("/builds/{id}/log.txt"), &cookie).await;
    assert_eq!(status, 200);
    assert!(raw.contains("line 1 of a long build output\n") && raw.contains("line 10000 of a long build output\n"));
    // The live view from the start, then resumed where the browser was
    // (Last-Event-ID): the next event starts at the next line.
    let events = |last: Option<&str>| {
        let mut rb = c.http.get(c.url(&format!("/builds/{id}/events"))).header("cookie", &cookie);
        if let Some(l) = last {
            rb = rb.header("last-event-id", l);
        }
        rb.send()
    };
    let first = events(None).await.unwrap();
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let text = first.text().await.unwrap();
    let ids: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert!(ids.len() >= 2, "a long log comes in several events: {}", &text[..500.min(text.len())]);
    assert!(text.contains("event: end") && text.contains("\"state\":\"succeeded\""));
    let resumed = events(Some(ids[0])).await.unwrap().text().await.unwrap();
    let next_line: u64 = ids[0].split('.').nth(1).unwrap().parse().unwrap();
    let data = resumed.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["lines"][0][0], next_line, "resumed at the next line");
    assert!(!resumed.contains("[1,\""), "nothing sent twice");
    // Hostile: a nonsense Last-Event-ID starts from the beginning; another site's build id is a 404 page.
    let again = events(Some("not-a-position")).await.unwrap().text().await.unwrap();
    assert!(again.contains("[1,\""));
    let (status, _) = c.get("/builds/zzzz", &cookie).await;
    assert!(status == 400 || status == 404);
    // Not signed in: no log.
    let r = c.http.get(c.url(&format!("/builds/{id}/events"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_are_pasted_as_a_dotenv_file_and_never_shown_again() {
    let c = setup();
    let cookie = c.sign_in("dev", "dev password 123").await;
    let (status, page) = c.get("/sites/docs/env", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("No variables yet"));
    let csrf = hidden(&page, "csrf");
    // A paste with bad lines: nothing saved, every bad line named, the text kept.
    let bad = "API_URL=https://api.example.com\nnot a line\n9LIVES=x\n";
    let r = c.post("/sites/docs/env", &cookie, &[("csrf", &csrf), ("dotenv", bad)]).await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(page.contains("line 2: no") && page.contains("line 3:") && page.contains("Nothing was saved"), "{page}");
    assert!(page.contains("not a line"), "the paste is kept to fix");
    assert!(c.server.cli(&["env", "list", "--site", "docs", "--json"]).ok().json().as_array().unwrap().is_empty());
    // A good paste: saved, listed by name only.
    let good = "# from .env.production\nAPI_URL=https://api.example.com\nexport TOKEN=\"tok-3141592653\"\n";
    let r = c.post("/sites/docs/env", &cookie, &[("csrf", &csrf), ("dotenv", good), ("secret", "on")]).await;
    assert_eq!(r.status(), 303);
    let (_, page) = c.get("/sites/docs/env?saved=2", &cookie).await;
    assert!(page.contains("Saved 2 variable(s)") && page.contains(">API_URL<") && page.contains(">TOKEN<"), "{page}");
    assert!(!page.contains("tok-3141592653") && !page.contains("api.example.com"), "values are write-only: {page}");
    let listed = c.server.cli(&["env", "list", "--site", "docs", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(listed.as_array().unwrap().iter().all(|v| v["secret"] == true && v["value"] == "***"), "{listed}");
    // One branch only; then a removal.
    let r = c.post("/sites/docs/env", &cookie, &[("csrf", &csrf), ("dotenv", "STAGE=1"), ("branch", "staging")]).await;
    assert_eq!(r.status(), 303);
    let r =
        c.post("/sites/docs/env/remove", &cookie, &[("csrf", &csrf), ("name", "STAGE"), ("branch", "staging")]).await;
    assert_eq!(r.status(), 303);
    let names: Vec<String> = c
        .server
        .cli(&["env", "list", "--site", "docs", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // The audit log has each name, never a value.
    let log = c.server.cli(&["audit", "list", "--actor", "dev", "--json"]).ok().json().to_string();
    assert!(log.contains("/api/v1/sites/docs/env/TOKEN") && log.contains("unset_env"), "{log}");
    assert!(!log.contains("tok-3141592653"), "{log}");
    // A viewer sees names, no forms, and cannot post.
    let viewer = c.sign_in("val", "val password 123").await;
    let (_, page) = c.get("/sites/docs/env", &viewer).await;
    assert!(page.contains(">TOKEN<") && !page.contains("Save variables") && !page.contains(">Remove<"));
    let r = c.post("/sites/docs/env", &viewer, &[("csrf", &hidden(&page, "csrf")), ("dotenv", "X=1")]).await;
    assert_eq!(r.status(), 403);
    // Oversized pastes are refused whole.
    let huge = "A=1\n".repeat(40_000);
    let r = c.post("/sites/docs/env", &cookie, &[("csrf", &csrf), ("dotenv", &huge)]).await;
    assert_eq!(r.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_sessions_and_users_are_managed_in_the_console() {
    let c = setup();
    let cookie = c.sign_in("dev", "dev password 123").await;
    let other_browser = c.sign_in("dev", "dev password 123").await;
    assert_ne!(cookie, other_browser, "a new session id at every sign-in");
    let (_, page) = c.get("/account", &cookie).await;
    let csrf = hidden(&page, "csrf");
    assert!(
        page.contains("<option value=\"write\">") && !page.contains("<option value=\"admin\">"),
        "a developer offers up to write"
    );
    // A token, shown once, that works, then revoked.
    let r = c
        .post(
            "/account/tokens",
            &cookie,
            &[("csrf", &csrf), ("name", "laptop"), ("scope", "deploy"), ("expires_in_days", "30")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let at = page.find("<code id=\"new-token\">").unwrap() + 21;
    let token = page[at..at + page[at..].find('<').unwrap()].to_owned();
    assert!(token.starts_with("chp_"), "{token}");
    let me = util::Cli::new(&["whoami", "--json"])
        .env("CHANTO_SERVER", &c.server.api_url)
        .env("CHANTO_TOKEN", &token)
        .ok()
        .json();
    assert_eq!((me["actor"].as_str(), me["scope"].as_str()), (Some("dev"), Some("deploy")));
    let (_, page) = c.get("/account", &cookie).await;
    assert!(!page.contains(&token), "never shown again");
    let id = page[page.find("<code>pt_").unwrap() + 6..].split('<').next().unwrap().to_owned();
    let r = c.post(&format!("/account/tokens/{id}/revoke"), &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 200);
    util::Cli::new(&["whoami"]).env("CHANTO_SERVER", &c.server.api_url).env("CHANTO_TOKEN", &token).fails();
    // A wider token than the role: refused.
    let r = c.post("/account/tokens", &cookie, &[("csrf", &csrf), ("name", "x"), ("scope", "admin")]).await;
    assert_eq!(r.status(), 403);
    // Sign out everywhere: the other browser's session ends too.
    let r = c.post("/account/sign-out-everywhere", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    for s in [&cookie, &other_browser] {
        let r = c.http.get(c.url("/")).header("cookie", s.as_str()).send().await.unwrap();
        assert_eq!(r.status(), 303, "signed out everywhere");
    }
    // Users: admins only.
    let cookie = c.sign_in("dev", "dev password 123").await;
    let (status, _) = c.get("/users", &cookie).await;
    assert_eq!(status, 403);
    c.server.cli(&["users", "create", "root", "--role", "admin", "--password-stdin"]).stdin("root password 1").ok();
    let admin = c.sign_in("root", "root password 1").await;
    let (status, page) = c.get("/users", &admin).await;
    assert_eq!(status, 200);
    let csrf = hidden(&page, "csrf");
    let r = c
        .post(
            "/users",
            &admin,
            &[("csrf", &csrf), ("name", "newbie"), ("role", "viewer"), ("password", "newbie password")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let r = c
        .post(
            "/users",
            &admin,
            &[("csrf", &csrf), ("name", "Bad Name"), ("role", "viewer"), ("password", "newbie password")],
        )
        .await;
    assert_eq!(r.status(), 422);
    let r = c.post("/users/newbie/role", &admin, &[("csrf", &csrf), ("role", "developer")]).await;
    assert_eq!(r.status(), 303);
    let users = c.server.cli(&["users", "list", "--json"]).ok().json();
    assert!(users.as_array().unwrap().iter().any(|u| u["name"] == "newbie" && u["role"] == "developer"), "{users}");
    // The only admin stays one, with the reason on the page.
    let r = c.post("/users/root/role", &admin, &[("csrf", &csrf), ("role", "viewer")]).await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("only admin"));
    let r = c.post("/users/root/remove", &admin, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 409);
    // Removing a user: a page says what follows; then their sessions end.
    let newbie = c.sign_in("newbie", "newbie password").await;
    let (status, ask) = c.get("/users/newbie/remove", &admin).await;
    assert_eq!(status, 200);
    assert!(ask.contains("Remove newbie?") && ask.contains("sessions stop working"), "{ask}");
    let r = c.post("/users/newbie/remove", &admin, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let r = c.http.get(c.url("/")).header("cookie", &newbie).send().await.unwrap();
    assert_eq!(r.status(), 303, "a removed user's session is gone");
    let (status, _) = c.get("/users/newbie/remove", &admin).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_are_created_and_deleted_only_with_the_name_typed() {
    let c = setup();
    let cookie = c.sign_in("dev", "dev password 123").await;
    let (_, page) = c.get("/", &cookie).await;
    let csrf = hidden(&page, "csrf");
    let r = c.post("/sites", &cookie, &[("csrf", &csrf), ("name", "blog"), ("production_branch", "main")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/sites/blog");
    let r = c.post("/sites", &cookie, &[("csrf", &csrf), ("name", "Not A Name"), ("production_branch", "main")]).await;
    assert!(r.status().is_client_error());
    assert!(r.text().await.unwrap().contains("lowercase"), "the reason is shown");
    let r = c.post("/sites", &cookie, &[("csrf", &csrf), ("name", "blog")]).await;
    assert_eq!(r.status(), 409, "taken");
    // Deleting: the page asks for the name; anything else deletes nothing.
    let (status, ask) = c.get("/sites/docs/delete", &cookie).await;
    assert_eq!(status, 200);
    assert!(ask.contains("Type <strong>docs</strong> to confirm"), "{ask}");
    let r = c.post("/sites/docs/delete", &cookie, &[("csrf", &csrf), ("confirm", "doc")]).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("nothing was deleted"));
    assert_eq!(c.edge_text(), "<h1>v2</h1>");
    let r = c.post("/sites/docs/delete", &cookie, &[("csrf", &csrf), ("confirm", "docs")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(c.server.get("docs.localhost", "/").status, 404, "gone at once");
    // A viewer gets neither form.
    let viewer = c.sign_in("val", "val password 123").await;
    let (_, page) = c.get("/", &viewer).await;
    assert!(!page.contains("Create site"));
    let (status, _) = c.get("/sites/blog/delete", &viewer).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_and_domains_pages_show_state_and_act() {
    let c = setup();
    // A webhook nobody answers: deliveries fail and can be sent again.
    c.server
        .cli(&["notify", "add", "webhook", "--site", "docs", "--url", "http://127.0.0.1:9/hook?token=s3cr3t-q"])
        .ok();
    c.server.cli(&["domains", "add", "shop.example.com", "--site", "docs", "--no-www"]).ok();
    let site = c._tmp.path().join("site");
    c.server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "third"]).ok();
    let cookie = c.sign_in("dev", "dev password 123").await;
    let delivery = util::wait_for("a delivery", Duration::from_secs(30), || {
        let list = c.server.cli(&["notify", "deliveries", "--site", "docs", "--json"]).ok().json();
        list.as_array().unwrap().first().map(|d| d["id"].as_i64().unwrap())
    });
    let (status, page) = c.get("/sites/docs/notifications", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("webhook") && !page.contains("s3cr3t-q"), "secrets stay masked: {page}");
    let csrf = hidden(&page, "csrf");
    let r = c
        .post(&format!("/sites/docs/notifications/deliveries/{delivery}/redeliver"), &cookie, &[("csrf", &csrf)])
        .await;
    // Redelivering one still pending is refused with a reason; an ended one is queued again.
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    assert!(status == 303 || (status == 409 && text.contains("pending")), "{status}: {text}");
    let r = c.post("/sites/docs/notifications/deliveries/999999/redeliver", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 404);
    let r = c.post("/sites/docs/notifications/deliveries/notanumber/redeliver", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 400);
    // Domains: the state, and the DNS record to make.
    let (status, page) = c.get("/sites/docs/domains", &cookie).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("shop.example.com") && page.contains("pending_verification") && page.contains("Create DNS"),
        "{page}"
    );
    // Checking it: the name does not resolve here, so it stays pending and
    // the page says why.
    let r = c.post("/sites/docs/domains/shop.example.com/verify", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let (_, page) = c.get(&location, &cookie).await;
    assert!(page.contains("Checked shop.example.com: it does not reach this installation yet"), "{page}");
    let domains = c.server.cli(&["domains", "list", "--site", "docs", "--json"]).ok().json();
    assert_eq!(domains[0]["state"], "pending_verification", "{domains}");
    // A name the site does not have: a 404 page, nothing changes.
    let r = c.post("/sites/docs/domains/other.example.com/verify", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 404);
    // A notice never echoes text from the URL.
    let (_, page) = c.get("/sites/docs/domains?done=%3Cb%3Ephish%3C/b%3E", &cookie).await;
    assert!(!page.contains("phish"), "{page}");
    // A viewer sees both pages without their buttons.
    let viewer = c.sign_in("val", "val password 123").await;
    let (_, page) = c.get("/sites/docs/notifications", &viewer).await;
    assert!(!page.contains(">Redeliver<"));
    let (_, page) = c.get("/sites/docs/domains", &viewer).await;
    assert!(!page.contains(">Check now<"));
}

/// The text of `<code id="{id}">…</code>` in `page`, if there.
fn code_by_id(page: &str, id: &str) -> Option<String> {
    let open = format!("<code id=\"{id}\">");
    let at = page.find(&open)? + open.len();
    Some(page[at..at + page[at..].find("</code>")?].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_is_connected_and_build_hooks_are_made_and_deleted_in_the_console() {
    let c = setup();
    let repo = util::git::Repo::new(&c._tmp.path().join("repo"));
    let cookie = c.sign_in("dev", "dev password 123").await;
    let (status, page) = c.get("/sites/docs/git", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("Not connected") && page.contains(">Connect<"), "{page}");
    let csrf = hidden(&page, "csrf");
    // Hostile input: refused with the field named, the form kept as typed (but its secrets), nothing saved.
    let bad = [
        ("csrf", csrf.as_str()),
        ("repository", "not a repository <script>alert(1)</script>"),
        ("command", "npm run build"),
        ("token", "tok-31415926535"),
    ];
    let r = c.post("/sites/docs/git", &cookie, &bad).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let page = r.text().await.unwrap();
    assert!(page.contains("Nothing was saved") && page.contains("repository"), "{page}");
    assert!(page.contains("value=\"npm run build\"") && !page.contains("tok-31415926535"), "{page}");
    assert!(!page.contains("<script>alert(1)") && page.contains("&#60;script&#62;"), "{page}");
    let url = repo.url();
    let r =
        c.post("/sites/docs/git", &cookie, &[("csrf", &csrf), ("repository", &url), ("timeout_secs", "soon")]).await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(page.contains("time limit (seconds): &#34;soon&#34; is not a whole number"), "{page}");
    c.server.cli(&["git", "show", "--site", "docs"]).fails();
    let huge = "x".repeat(20_000);
    let r = c.post("/sites/docs/git", &cookie, &[("csrf", &csrf), ("repository", &huge)]).await;
    assert_eq!(r.status(), 413);
    // Connected: the webhook secret is shown this once.
    let form = [
        ("csrf", csrf.as_str()),
        ("repository", url.as_str()),
        ("command", "make site"),
        ("publish", "out"),
        ("pull_request_previews", "on"),
        ("delete_branches", "on"),
        ("poll_interval_secs", "60"),
    ];
    let r = c.post("/sites/docs/git", &cookie, &form).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let secret = code_by_id(&page, "webhook-secret").expect("the webhook secret, once");
    assert!(secret.len() >= 32, "{secret}");
    let shown = c.server.cli(&["git", "show", "--site", "docs", "--json"]).ok().json();
    assert_eq!(shown["repository"], url.as_str());
    assert_eq!(shown["settings"]["build"]["command"], "make site");
    assert_eq!(shown["settings"]["fork_pull_requests"], false, "an unticked box is off");
    assert_eq!(shown["settings"]["poll_interval_secs"], 60);
    let (_, page) = c.get("/sites/docs/git", &cookie).await;
    assert!(page.contains(&url) && page.contains("make site") && page.contains("/api/v1/webhooks/github/docs"));
    assert!(!page.contains(&secret), "the secret is never shown again");
    assert!(page.contains("value=\"60\""), "the form holds the current settings");
    // A build hook: its URL once; a name is text, never markup.
    let r = c.post("/sites/docs/git/hooks", &cookie, &[("csrf", &csrf), ("name", "<script>alert(2)</script>")]).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let hook_url = code_by_id(&page, "hook-url").expect("the hook URL, once");
    assert!(hook_url.contains("/api/v1/build_hooks/"), "{hook_url}");
    assert!(!page.contains("<script>alert(2)") && page.contains("&#60;script&#62;alert(2)"), "{page}");
    let r = c.http.post(&hook_url).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let (_, page) = c.get("/sites/docs/git", &cookie).await;
    assert!(!page.contains(&hook_url), "the hook URL is never shown again");
    assert!(page.contains(">build_hook<") && page.contains(">accepted<"), "the call is in the table: {page}");
    let hooks = c.server.cli(&["build-hooks", "list", "--site", "docs", "--json"]).ok().json();
    let id = hooks[0]["id"].as_str().unwrap().to_owned();
    let r = c.post("/sites/docs/git/hooks", &cookie, &[("csrf", &csrf), ("name", "")]).await;
    assert_eq!(r.status(), 400, "a hook needs a name");
    let r = c.post(&format!("/sites/docs/git/hooks/{id}/delete"), &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    assert!(
        c.server.cli(&["build-hooks", "list", "--site", "docs", "--json"]).ok().json().as_array().unwrap().is_empty()
    );
    let r = c.post(&format!("/sites/docs/git/hooks/{id}/delete"), &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 404);
    // A viewer reads the page, gets no forms, and cannot post.
    let viewer = c.sign_in("val", "val password 123").await;
    let (status, page) = c.get("/sites/docs/git", &viewer).await;
    assert_eq!(status, 200);
    assert!(page.contains(&url) && !page.contains("Save the connection") && !page.contains("Make build hook"));
    let r = c.post("/sites/docs/git/disconnect", &viewer, &[("csrf", &hidden(&page, "csrf"))]).await;
    assert_eq!(r.status(), 403);
    let (status, _) = c.get("/sites/docs/git/disconnect", &viewer).await;
    assert_eq!(status, 403);
    // Disconnected after a confirmation naming the repository.
    let (status, page) = c.get("/sites/docs/git/disconnect", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains(&url) && page.contains(">Disconnect docs<"), "{page}");
    let r = c.post("/sites/docs/git/disconnect", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    c.server.cli(&["git", "show", "--site", "docs"]).fails();
    // Audited as the API's operations, never with a secret.
    let log = c.server.cli(&["audit", "list", "--actor", "dev", "--json"]).ok().json().to_string();
    for action in ["\"connect\"", "\"create_hook\"", "\"delete_hook\"", "\"disconnect\""] {
        assert!(log.contains(action), "{action} in {log}");
    }
    assert!(!log.contains(&secret) && !log.contains(&hook_url) && !log.contains("tok-31415926535"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_subscribed_tested_inspected_and_removed_in_the_console() {
    let c = setup();
    let hook = util::receiver::Receiver::start(|_| (200, vec![], "thanks".to_owned()));
    let cookie = c.sign_in("dev", "dev password 123").await;
    let (_, page) = c.get("/sites/docs/notifications", &cookie).await;
    let csrf = hidden(&page, "csrf");
    // Hostile input: refused with the field named, the form kept as typed (but its secrets), nothing added.
    let bad = [
        ("csrf", csrf.as_str()),
        ("channel", "webhook"),
        ("url", "javascript:alert(1)"),
        ("branches", "<script>alert(3)</script>"),
        ("secret", "short-secret-xyz-0"),
    ];
    let r = c.post("/sites/docs/notifications", &cookie, &bad).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("Nothing was added") && page.contains("url must be an http"), "{page}");
    assert!(!page.contains("<script>alert(3)") && page.contains("&#60;script&#62;alert(3)"), "{page}");
    assert!(!page.contains("short-secret-xyz-0"), "secrets are not filled back in");
    let r = c
        .post(
            "/sites/docs/notifications",
            &cookie,
            &[("csrf", &csrf), ("channel", "email"), ("url", "http://x.example/")],
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("url does not apply to email"));
    let r = c.post("/sites/docs/notifications", &cookie, &[("csrf", &csrf), ("channel", "pigeon")]).await;
    assert_eq!(r.status(), 422);
    assert!(c.server.cli(&["notify", "list", "--site", "docs", "--json"]).ok().json().as_array().unwrap().is_empty());
    // Subscribed: the signing secret chanto made is shown once; the URL's path never.
    let target = hook.url("/in?key=p4th-s3cret");
    let form = [
        ("csrf", csrf.as_str()),
        ("channel", "webhook"),
        ("url", &target),
        ("events", "deploy.ready, deploy.activated"),
    ];
    let r = c.post("/sites/docs/notifications", &cookie, &form).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let secret = code_by_id(&page, "signing-secret").expect("the signing secret, once");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let subs = c.server.cli(&["notify", "list", "--site", "docs", "--json"]).ok().json();
    assert_eq!(subs[0]["events"].as_array().unwrap().len(), 2, "{subs}");
    let id = subs[0]["id"].as_str().unwrap().to_owned();
    let (_, page) = c.get("/sites/docs/notifications", &cookie).await;
    assert!(!page.contains(&secret) && !page.contains("p4th-s3cret"), "{page}");
    // A test send, and what the receiver answered.
    let r = c.post(&format!("/sites/docs/notifications/{id}/test"), &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains(&format!("Test of {id}: delivered")) && page.contains("thanks"), "{page}");
    assert!(!hook.requests().is_empty());
    // A real delivery, and its attempts.
    let site = c._tmp.path().join("site");
    c.server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "third"]).ok();
    let delivery = util::wait_for("a delivered delivery", Duration::from_secs(30), || {
        let list = c.server.cli(&["notify", "deliveries", "--site", "docs", "--json"]).ok().json();
        list.as_array().unwrap().iter().find(|d| d["state"] == "delivered").map(|d| d["id"].as_i64().unwrap())
    });
    let (_, page) = c.get("/sites/docs/notifications", &cookie).await;
    assert!(page.contains(&format!("href=\"/sites/docs/notifications/deliveries/{delivery}\"")), "{page}");
    let (status, page) = c.get(&format!("/sites/docs/notifications/deliveries/{delivery}"), &cookie).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("delivered") && page.contains("deploy.") && page.contains(&id) && page.contains(">200<"),
        "{page}"
    );
    assert!(!page.contains(&secret) && !page.contains("p4th-s3cret"), "{page}");
    let (status, _) = c.get("/sites/docs/notifications/deliveries/999999", &cookie).await;
    assert_eq!(status, 404);
    let (status, _) = c.get("/sites/docs/notifications/deliveries/%3Cb%3E", &cookie).await;
    assert_eq!(status, 400);
    // A viewer reads, without forms, and cannot act.
    let viewer = c.sign_in("val", "val password 123").await;
    let (_, page) = c.get("/sites/docs/notifications", &viewer).await;
    assert!(page.contains(&id) && !page.contains(">Subscribe<") && !page.contains(">Send test<"), "{page}");
    let viewer_csrf = hidden(&page, "csrf");
    let r = c.post(&format!("/sites/docs/notifications/{id}/remove"), &viewer, &[("csrf", &viewer_csrf)]).await;
    assert_eq!(r.status(), 403);
    let r = c.post("/sites/docs/notifications", &viewer, &[("csrf", &viewer_csrf), ("channel", "webhook")]).await;
    assert_eq!(r.status(), 403);
    let (status, _) = c.get(&format!("/sites/docs/notifications/{id}/remove"), &viewer).await;
    assert_eq!(status, 403);
    // Removed after a confirmation naming it.
    let (status, page) = c.get(&format!("/sites/docs/notifications/{id}/remove"), &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!(">Remove {id}<")) && page.contains("webhook"), "{page}");
    let r = c.post(&format!("/sites/docs/notifications/{id}/remove"), &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    assert!(c.server.cli(&["notify", "list", "--site", "docs", "--json"]).ok().json().as_array().unwrap().is_empty());
    let log = c.server.cli(&["audit", "list", "--actor", "dev", "--json"]).ok().json().to_string();
    for action in ["\"subscribe\"", "\"test\"", "\"remove\""] {
        assert!(log.contains(action), "{action} in {log}");
    }
    assert!(!log.contains(&secret) && !log.contains("p4th-s3cret"), "{log}");
}

/// API operations the console answers, as (`METHOD /api/v1/…`, console method, console path to probe).
const IN_CONSOLE: &[(&str, &str, &str)] = &[
    ("GET /api/v1/sites", "GET", "/"),
    ("POST /api/v1/sites", "POST", "/sites"),
    ("GET /api/v1/sites/{site}", "GET", "/sites/docs"),
    ("DELETE /api/v1/sites/{site}", "POST", "/sites/docs/delete"),
    ("GET /api/v1/sites/{site}/deploys", "GET", "/sites/docs"),
    ("GET /api/v1/deploys/{id}", "GET", "/sites/docs/deploys/0000000000000000"),
    ("POST /api/v1/deploys/{id}/publish", "POST", "/sites/docs/deploys/0000000000000000/activate"),
    ("POST /api/v1/sites/{site}/rollback", "POST", "/sites/docs/deploys/0000000000000000/activate"),
    ("GET /api/v1/sites/{site}/builds", "GET", "/sites/docs"),
    ("POST /api/v1/sites/{site}/builds", "POST", "/sites/docs/builds"),
    ("GET /api/v1/builds/{id}", "GET", "/builds/0000000000000000"),
    ("POST /api/v1/builds/{id}/cancel", "POST", "/builds/0000000000000000/cancel"),
    ("GET /api/v1/builds/{id}/log", "GET", "/builds/0000000000000000/log.txt"),
    ("GET /api/v1/sites/{site}/access", "GET", "/sites/docs/access"),
    ("PUT /api/v1/sites/{site}/access", "POST", "/sites/docs/access"),
    ("DELETE /api/v1/sites/{site}/access", "POST", "/sites/docs/access/clear"),
    ("GET /api/v1/sites/{site}/env", "GET", "/sites/docs/env"),
    ("PUT /api/v1/sites/{site}/env/{name}", "POST", "/sites/docs/env"),
    ("DELETE /api/v1/sites/{site}/env/{name}", "POST", "/sites/docs/env/remove"),
    ("GET /api/v1/sites/{site}/domains", "GET", "/sites/docs/domains"),
    ("POST /api/v1/sites/{site}/domains/{name}/verify", "POST", "/sites/docs/domains/x.example.com/verify"),
    ("POST /api/v1/sites/{site}/domains", "POST", "/sites/docs/domains"),
    ("DELETE /api/v1/sites/{site}/domains/{name}", "POST", "/sites/docs/domains/x.example.com/remove"),
    ("PUT /api/v1/sites/{site}/domains/{name}/primary", "POST", "/sites/docs/domains/x.example.com/primary"),
    ("PUT /api/v1/sites/{site}/domains/{name}/certificate", "POST", "/sites/docs/domains/x.example.com/certificate"),
    ("GET /api/v1/sites/{site}/tls", "GET", "/sites/docs/domains"),
    ("PUT /api/v1/sites/{site}/tls", "POST", "/sites/docs/tls"),
    ("GET /api/v1/certificates/base", "GET", "/instance"),
    ("PUT /api/v1/certificates/base", "POST", "/instance/base-certificates"),
    ("DELETE /api/v1/certificates/base/{pattern}", "POST", "/instance/base-certificates/*.localhost/remove"),
    ("GET /api/v1/nodes/tokens", "GET", "/instance"),
    ("POST /api/v1/nodes/tokens", "POST", "/instance/node-tokens"),
    ("DELETE /api/v1/nodes/tokens/{id}", "POST", "/instance/node-tokens/nt_0/revoke"),
    ("GET /api/v1/sites/{site}/notifications", "GET", "/sites/docs/notifications"),
    ("GET /api/v1/sites/{site}/notifications/deliveries", "GET", "/sites/docs/notifications"),
    (
        "POST /api/v1/sites/{site}/notifications/deliveries/{id}/redeliver",
        "POST",
        "/sites/docs/notifications/deliveries/1/redeliver",
    ),
    ("GET /api/v1/sites/{site}/git", "GET", "/sites/docs/git"),
    ("PUT /api/v1/sites/{site}/git", "POST", "/sites/docs/git"),
    ("DELETE /api/v1/sites/{site}/git", "POST", "/sites/docs/git/disconnect"),
    ("GET /api/v1/sites/{site}/build_hooks", "GET", "/sites/docs/git"),
    ("POST /api/v1/sites/{site}/build_hooks", "POST", "/sites/docs/git/hooks"),
    ("DELETE /api/v1/sites/{site}/build_hooks/{id}", "POST", "/sites/docs/git/hooks/0/delete"),
    ("GET /api/v1/sites/{site}/webhook_deliveries", "GET", "/sites/docs/git"),
    ("POST /api/v1/sites/{site}/notifications", "POST", "/sites/docs/notifications"),
    ("DELETE /api/v1/sites/{site}/notifications/{id}", "POST", "/sites/docs/notifications/sub_0/remove"),
    ("POST /api/v1/sites/{site}/notifications/{id}/test", "POST", "/sites/docs/notifications/sub_0/test"),
    ("GET /api/v1/sites/{site}/notifications/deliveries/{id}", "GET", "/sites/docs/notifications/deliveries/1"),
    ("GET /api/v1/nodes", "GET", "/health"),
    ("GET /api/v1/users", "GET", "/users"),
    ("POST /api/v1/users", "POST", "/users"),
    ("PATCH /api/v1/users/{name}", "POST", "/users/dev/role"),
    ("GET /api/v1/users/{name}", "GET", "/users"),
    ("DELETE /api/v1/users/{name}", "POST", "/users/dev/remove"),
    ("GET /api/v1/tokens", "GET", "/account"),
    ("POST /api/v1/tokens", "POST", "/account/tokens"),
    ("DELETE /api/v1/tokens/{id}", "POST", "/account/tokens/pt_0/revoke"),
    ("GET /api/v1/me", "GET", "/account"),
    ("GET /api/v1/audit", "GET", "/audit"),
    ("GET /api/v1/sites/{site}/retention", "GET", "/sites/docs/settings"),
    ("PUT /api/v1/sites/{site}/retention", "POST", "/sites/docs/settings/retention"),
    ("GET /api/v1/sites/{site}/proxy_origins", "GET", "/sites/docs/settings"),
    ("PUT /api/v1/sites/{site}/proxy_origins", "POST", "/sites/docs/settings/proxy_origins"),
    ("GET /api/v1/sites/{site}/profile", "GET", "/sites/docs/settings"),
    ("PUT /api/v1/sites/{site}/profile", "POST", "/sites/docs/settings/profile"),
    ("POST /api/v1/gc", "POST", "/health/gc"),
    ("POST /api/v1/users/{name}/invite", "POST", "/users/dev/invite"),
];

/// Operations that make no sense in a browser, and why.
const NOT_IN_A_BROWSER: &[(&str, &str)] = &[
    ("POST /api/v1/sites/{site}/deploys", "a deploy uploads a directory: `chanto deploy` or a build does it"),
    ("PUT /api/v1/deploys/{id}/blobs/{hash}", "part of a deploy upload"),
    ("POST /api/v1/deploys/{id}/blobs", "part of a deploy upload"),
    ("POST /api/v1/deploys/{id}/finalize", "part of a deploy upload"),
    ("GET /api/v1/nodes/routing", "edge nodes' long poll (node tokens)"),
    ("POST /api/v1/nodes/heartbeat", "edge nodes' heartbeat (node tokens)"),
    ("GET /api/v1/nodes/certificates/{id}", "edge nodes fetch certificate keys (node tokens)"),
    ("POST /api/v1/webhooks/{forge}/{site}", "called by GitHub, GitLab or Gitea"),
    ("POST /api/v1/build_hooks/{secret}", "called by a CMS or a cron job"),
    ("GET /api/v1/notifications/schema.json", "a JSON Schema for tools"),
    ("GET /badge/{site}/{branch}.svg", "an image for READMEs"),
    ("POST /api/v1/auth/token", "the CLI's password sign-in; the console signs in at /login"),
    ("GET /api/v1/platform", "the configuration is a file for a repository: `chanto export` writes it"),
    (
        "POST /api/v1/platform/plan",
        "secrets resolve where the file is (`chanto plan`), or in a platform config site's builds",
    ),
    ("POST /api/v1/platform/apply", "applies a plan file `chanto plan --out` saved, with its secrets: `chanto apply`"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_operation_has_a_console_action_or_a_named_reason() {
    let c = setup();
    let doc: serde_json::Value = c.http.get(c.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(operations.len() > 60, "{operations:?}");
    let covered: Vec<&str> = IN_CONSOLE.iter().map(|(op, _, _)| *op).collect();
    let excused: Vec<&str> = NOT_IN_A_BROWSER.iter().map(|(op, _)| *op).collect();
    let unaccounted: Vec<&String> =
        operations.iter().filter(|op| !covered.contains(&op.as_str()) && !excused.contains(&op.as_str())).collect();
    assert!(unaccounted.is_empty(), "API operations with no console action and no reason why not: {unaccounted:?}");
    // The lists name only operations that exist, each once.
    for op in covered.iter().chain(&excused) {
        assert!(operations.iter().any(|o| o == op), "{op} is not an API operation (any more)");
    }
    let mut all: Vec<&str> = covered.iter().chain(&excused).copied().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "an operation is listed twice: {all:?}");
    // Every console action named is there: a page answers with a page, a
    // form refuses a POST without the session's token (not 404 or 405).
    let cookie = c.sign_in("dev", "dev password 123").await;
    let admin_cookie = {
        c.server.cli(&["users", "create", "root", "--role", "admin", "--password-stdin"]).stdin("root password 1").ok();
        c.sign_in("root", "root password 1").await
    };
    for (op, method, path) in IN_CONSOLE {
        let r = match *method {
            "GET" => c.http.get(c.url(path)).header("cookie", &admin_cookie).send().await.unwrap(),
            _ => c
                .http
                .post(c.url(path))
                .header("cookie", &cookie)
                .form(&[("csrf", "not-the-token")])
                .send()
                .await
                .unwrap(),
        };
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            body.starts_with("<!doctype html>"),
            "{op} → {method} {path}: {status} is not a console page: {body:.200}"
        );
        assert!(status != 405, "{op} → {method} {path}: 405");
        if *method == "POST" {
            assert_eq!(status, 403, "{op} → POST {path} without the form's token: {body:.300}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_page_shows_its_files_rules_and_plan_against_production() {
    let c = setup();
    // A third deploy on a branch, with a rule and one more file.
    let site = c._tmp.path().join("site");
    write_tree(
        &site,
        &[
            ("index.html", "<h1>v3</h1>"),
            ("about.html", "about"),
            ("_redirects", "/old /about 301\n/admin/* /admin/:splat 200 Role=admin"),
        ],
    );
    let out = c
        .server
        .cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--branch", "next", "-m", "with rules", "--json"])
        .ok()
        .json();
    let id = out["id"].as_str().or(out["deploy"]["id"].as_str()).unwrap_or_else(|| panic!("{out}")).to_owned();
    let cookie = c.sign_in("val", "val password 123").await;
    let (status, page) = c.get(&format!("/sites/docs/deploys/{id}"), &cookie).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("with rules") && page.contains("<code>about.html</code>"), "{page}");
    assert!(page.contains("redirect /old /about 301"), "the rules: {page}");
    assert!(page.contains("defaults of netlify (pretty URLs)"), "whose defaults it follows: {page}");
    assert!(
        page.contains("<h3>Warnings</h3>")
            && page.contains("_redirects:2: warning: Role= conditions are not supported by chanto"),
        "the finalize warnings, kept: {page}"
    );
    assert!(page.contains("1 added, 1 changed, 0 removed"), "against production (v2): {page}");
    assert!(page.contains("Added files") && page.contains("Rules added"), "{page}");
    assert!(!page.contains("Publish…"), "a viewer is offered no action");
    // Another site's deploy id under this site: 404.
    c.server.cli(&["sites", "create", "other"]).ok();
    let (status, _) = c.get(&format!("/sites/other/deploys/{id}"), &cookie).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_link_sets_a_password_once_and_signs_in() {
    let c = setup();
    let link = c.server.cli(&["users", "invite", "nia", "--role", "developer"]).ok().stdout().trim().to_owned();
    assert!(link.starts_with(&format!("{}/invite/chi_", c.server.api_url)), "{link}");
    let path = link.trim_start_matches(&c.server.api_url).to_owned();
    let users = c.server.cli(&["users", "list", "--json"]).ok().json();
    assert!(users.as_array().unwrap().iter().any(|u| u["name"] == "nia" && u["has_password"] == false), "{users}");
    // The page names the user; a weak or mistyped password is refused and keeps the link.
    let (status, page) = c.get(&path, "").await;
    assert_eq!(status, 200);
    assert!(page.contains("Welcome, nia"), "{page}");
    let r = c.http.post(c.url(&path)).form(&[("password", "short"), ("again", "short")]).send().await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("at least 10"));
    let r = c
        .http
        .post(c.url(&path))
        .form(&[("password", "nia password 1"), ("again", "nia password 2")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // The right one: signed in at once.
    let r = c
        .http
        .post(c.url(&path))
        .form(&[("password", "nia password 1"), ("again", "nia password 1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let (status, page) = c.get("/", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("nia (developer)"), "{page}");
    // Used once: the link is gone, the password works for sign-in.
    let (status, page) = c.get(&path, "").await;
    assert_eq!(status, 404);
    assert!(page.contains("used already"), "{page}");
    c.sign_in("nia", "nia password 1").await;
    // A new link for an existing user replaces the old one (a password reset); a bad token is a 404 page.
    let first = c.server.cli(&["users", "invite", "nia"]).ok().stdout().trim().to_owned();
    let second = c.server.cli(&["users", "invite", "nia"]).ok().stdout().trim().to_owned();
    assert_eq!(c.get(first.trim_start_matches(&c.server.api_url), "").await.0, 404);
    assert_eq!(c.get(second.trim_start_matches(&c.server.api_url), "").await.0, 200);
    assert_eq!(c.get("/invite/chi_nonsense", "").await.0, 404);
    // A new user needs a role.
    let refused = c.server.cli(&["users", "invite", "zed"]).fails();
    assert!(refused.stderr().contains("give the role"), "{}", refused.report());
    // Only admins invite.
    let dev =
        c.server.cli(&["tokens", "create", "t", "--user", "dev", "--scope", "write"]).ok().stdout().trim().to_owned();
    let refused = util::Cli::new(&["users", "invite", "zed", "--role", "viewer"])
        .env("CHANTO_SERVER", &c.server.api_url)
        .env("CHANTO_TOKEN", &dev)
        .fails();
    assert!(refused.stderr().contains("admin scope"), "{}", refused.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_networks_are_set_in_the_console_and_the_edge_applies_them() {
    let c = setup();
    let cookie = c.sign_in("dev", "dev password 123").await;
    let (status, page) = c.get("/sites/docs/access", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("Open to everyone"), "{page}");
    let csrf = hidden(&page, "csrf");
    // A password for the whole site: the edge asks for it at once.
    let r = c
        .post(
            "/sites/docs/access",
            &cookie,
            &[("csrf", &csrf), ("scope", "site"), ("user", "reviewer"), ("password", "let me in please")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(c.server.get("docs.localhost", "/").status, 401);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "reviewer:let me in please")
    );
    assert_eq!(c.server.get_with("docs.localhost", "/", &[("authorization", &basic)]).status, 200);
    let (_, page) = c.get("/sites/docs/access?saved=1", &cookie).await;
    assert!(page.contains("The whole site") && page.contains("reviewer") && !page.contains("let me in"), "{page}");
    // Networks: a bad one is named, nothing changes; good ones apply.
    let r = c
        .post(
            "/sites/docs/access",
            &cookie,
            &[("csrf", &csrf), ("scope", "site"), ("networks", "on"), ("allow", "10.0.0.0/8\nnot-a-net"), ("deny", "")],
        )
        .await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(page.contains("not-a-net") && page.contains("is not a network"), "{page}");
    let r = c
        .post(
            "/sites/docs/access",
            &cookie,
            &[("csrf", &csrf), ("scope", "site"), ("networks", "on"), ("allow", "10.0.0.0/8"), ("deny", "")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        c.server.get_with("docs.localhost", "/", &[("authorization", &basic)]).status,
        403,
        "127.0.0.1 is not in 10/8"
    );
    // Removing the policy opens the site again; a policy that is not there is a 404 page.
    let r = c.post("/sites/docs/access/clear", &cookie, &[("csrf", &csrf), ("scope", "site")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(c.server.get("docs.localhost", "/").status, 200);
    let r = c.post("/sites/docs/access/clear", &cookie, &[("csrf", &csrf), ("scope", "previews")]).await;
    assert_eq!(r.status(), 404);
    let r = c
        .post(
            "/sites/docs/access",
            &cookie,
            &[("csrf", &csrf), ("scope", "nonsense"), ("user", "x"), ("password", "y")],
        )
        .await;
    assert_eq!(r.status(), 422);
    // A viewer reads, changes nothing.
    let viewer = c.sign_in("val", "val password 123").await;
    let (_, page) = c.get("/sites/docs/access", &viewer).await;
    assert!(!page.contains("Save user"));
    let r = c
        .post(
            "/sites/docs/access",
            &viewer,
            &[("csrf", &hidden(&page, "csrf")), ("scope", "site"), ("user", "x"), ("password", "y")],
        )
        .await;
    assert_eq!(r.status(), 403);
}

/// A server whose uploads are checked against a test CA, with base domain
/// `sites.test` (a wildcard for `*.localhost` is refused by TLS clients).
fn setup_with_ca() -> (Console, TestCa) {
    let ca = TestCa::new("console");
    let roots = ca.cert();
    let c = setup_with(&["--certificate-roots", roots.to_str().unwrap(), "--no-acme", "--base-domain", "sites.test"]);
    (c, ca)
}

/// A GET of the API as the admin token.
async fn api(c: &Console, path: &str) -> serde_json::Value {
    let r = c.http.get(c.url(path)).bearer_auth(&c.server.token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// The audit log's actions by `actor`.
fn audited(c: &Console, actor: &str) -> Vec<String> {
    let log = c.server.cli(&["audit", "list", "--actor", actor, "--json"]).ok().json();
    log.as_array().unwrap().iter().map(|e| format!("{} {} {}", e["action"], e["target"], e["status"])).collect()
}

/// A certificate form's fields: the chain and key files of `leaf`.
fn pem_pair(leaf: &chanto_testkit::tls::Leaf) -> (String, String) {
    (std::fs::read_to_string(&leaf.cert).unwrap(), std::fs::read_to_string(&leaf.key).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_are_added_made_primary_given_certificates_and_removed_in_the_console() {
    let (c, ca) = setup_with_ca();
    let cookie = c.sign_in("dev", "dev password 123").await;
    let (_, page) = c.get("/sites/docs/domains", &cookie).await;
    let csrf = hidden(&page, "csrf");
    // Add two: each shows the DNS record to make.
    for name in ["Shop.Example.com", "blog.example.com"] {
        let r = c.post("/sites/docs/domains", &cookie, &[("csrf", &csrf), ("name", name), ("branch", "")]).await;
        assert_eq!(r.status(), 303, "{:?}", r.text().await);
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        let (_, page) = c.get(&location, &cookie).await;
        let lower = name.to_lowercase();
        assert!(page.contains(&format!("Added {lower}")) && page.contains("Create DNS CNAME"), "{page}");
    }
    let domains = c.server.cli(&["domains", "list", "--site", "docs", "--json"]).ok().json();
    assert_eq!(domains.as_array().unwrap().len(), 2, "no www twin without the box ticked: {domains}");
    // Hostile names are refused, naming the problem; nothing is echoed raw.
    let r = c.post("/sites/docs/domains", &cookie, &[("csrf", &csrf), ("name", "<script>x</script>")]).await;
    assert_eq!(r.status(), 400);
    assert!(!r.text().await.unwrap().contains("<script>"));
    // Make the second primary.
    let r = c.post("/sites/docs/domains/blog.example.com/primary", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let domains = c.server.cli(&["domains", "list", "--site", "docs", "--json"]).ok().json();
    let primary: Vec<&str> = domains
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["primary"] == true)
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(primary, ["blog.example.com"], "{domains}");

    // Certificates: refusals name the field at fault and keep the chain pasted.
    let at = "/sites/docs/domains/shop.example.com/certificate";
    let (status, page) = c.get(at, &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("Served now: none"), "{page}");
    let bad = "<script>alert(1)</script> not a PEM";
    let r = c.post(at, &cookie, &[("csrf", &csrf), ("chain_pem", bad), ("key_pem", "secret key text")]).await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(page.contains("Nothing was stored. Certificate chain:"), "{page}");
    assert!(page.contains("&#60;script&#62;alert(1)") && !page.contains("<script>alert"), "kept, escaped: {page}");
    assert!(!page.contains("secret key text"), "the key is never shown");
    let own = rcgen::generate_simple_self_signed(vec!["shop.example.com".to_owned()]).unwrap();
    let (chain, key) = (own.cert.pem(), own.signing_key.serialize_pem());
    let r = c.post(at, &cookie, &[("csrf", &csrf), ("chain_pem", &chain), ("key_pem", &key)]).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("self-signed"));
    let (good_chain, _) = pem_pair(&ca.issue(&["shop.example.com"]));
    let r = c.post(at, &cookie, &[("csrf", &csrf), ("chain_pem", &good_chain), ("key_pem", &key)]).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("Nothing was stored. Private key:"));
    let huge = "A".repeat(70 * 1024);
    let r = c.post(at, &cookie, &[("csrf", &csrf), ("chain_pem", &huge), ("key_pem", &key)]).await;
    assert_eq!(r.status(), 413);
    let page = r.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>") && page.contains("more than 64 KiB"), "{page}");
    // A good one: the page says whose and until when; the API serves it.
    let (chain, key) = pem_pair(&ca.issue(&["shop.example.com"]));
    let r = c.post(at, &cookie, &[("csrf", &csrf), ("chain_pem", &chain), ("key_pem", &key)]).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("shop.example.com serves the uploaded certificate now: upload from"), "{page}");
    assert!(page.contains("valid until") && page.contains("days left"), "{page}");
    let domains = api(&c, "/api/v1/sites/docs/domains").await;
    let shop = domains.as_array().unwrap().iter().find(|d| d["name"] == "shop.example.com").unwrap().clone();
    assert_eq!(shop["certificate"]["source"], "upload", "{shop}");

    // HTTPS settings: shown, changed, refusals name the field.
    let (_, page) = c.get("/sites/docs/domains", &cookie).await;
    assert!(page.contains("HSTS: <strong>off"), "{page}");
    let form = |age: &'static str, preload: bool| {
        let mut f =
            vec![("csrf", csrf.clone()), ("hsts_max_age", age.to_owned()), ("hsts_include_subdomains", "on".into())];
        if preload {
            f.push(("hsts_preload", "on".into()));
        }
        f
    };
    for (age, preload, why) in [("lots", false, "HSTS max-age: a whole number"), ("86400", true, "preload needs")] {
        let r = c
            .http
            .post(c.url("/sites/docs/tls"))
            .header("cookie", &cookie)
            .form(&form(age, preload))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains(why), "{why}");
    }
    let r = c
        .http
        .post(c.url("/sites/docs/tls"))
        .header("cookie", &cookie)
        .form(&form("31536000", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let tls = api(&c, "/api/v1/sites/docs/tls").await;
    assert_eq!(
        tls,
        serde_json::json!({"https_redirect": false, "hsts_max_age": 31536000, "hsts_include_subdomains": true, "hsts_preload": true})
    );
    let (_, page) = c.get("/sites/docs/domains?did=tls", &cookie).await;
    assert!(
        page.contains("HTTPS settings saved") && page.contains("max-age=31536000; includeSubDomains; preload"),
        "{page}"
    );

    // A viewer sees the page without forms and is refused the actions.
    let viewer = c.sign_in("val", "val password 123").await;
    let (_, page) = c.get("/sites/docs/domains", &viewer).await;
    assert!(
        page.contains("shop.example.com") && !page.contains("Add domain") && !page.contains("Save HTTPS"),
        "{page}"
    );
    let viewer_csrf = hidden(&page, "csrf");
    assert_eq!(c.get("/sites/docs/domains/shop.example.com/remove", &viewer).await.0, 403);
    assert_eq!(c.get(at, &viewer).await.0, 403);
    let r = c.post("/sites/docs/domains/shop.example.com/remove", &viewer, &[("csrf", &viewer_csrf)]).await;
    assert_eq!(r.status(), 403);

    // Removal: a page saying what stops, then gone.
    let (status, page) = c.get("/sites/docs/domains/shop.example.com/remove", &cookie).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Remove shop.example.com from docs?") && page.contains("Its certificate (upload from"),
        "{page}"
    );
    assert_eq!(c.get("/sites/docs/domains/nosuch.example.com/remove", &cookie).await.0, 404);
    let r = c.post("/sites/docs/domains/shop.example.com/remove", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let domains = c.server.cli(&["domains", "list", "--site", "docs", "--json"]).ok().json();
    assert_eq!(domains.as_array().unwrap().len(), 1, "{domains}");
    let log = audited(&c, "dev").join("\n");
    for line in [
        "\"add\" \"/api/v1/sites/docs/domains\" 201",
        "\"primary\" \"/api/v1/sites/docs/domains/blog.example.com/primary\" 200",
        "\"upload\" \"/api/v1/sites/docs/domains/shop.example.com/certificate\" 422",
        "\"upload\" \"/api/v1/sites/docs/domains/shop.example.com/certificate\" 200",
        "\"put_tls\" \"/api/v1/sites/docs/tls\" 200",
        "\"remove\" \"/api/v1/sites/docs/domains/shop.example.com\" 200",
    ] {
        assert!(log.contains(line), "{line} in {log}");
    }
    assert!(audited(&c, "val").join("\n").contains("\"remove\" \"/api/v1/sites/docs/domains/shop.example.com\" 403"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_base_certificates_and_node_tokens_on_the_instance_page() {
    let (c, ca) = setup_with_ca();
    c.server.cli(&["users", "create", "root", "--role", "admin", "--password-stdin"]).stdin("root password 1").ok();
    let root = c.sign_in("root", "root password 1").await;
    let (status, page) = c.get("/instance", &root).await;
    assert_eq!(status, 200);
    assert!(page.contains("href=\"/instance\" aria-current=\"page\"") && page.contains("*.sites.test"), "{page}");
    let csrf = hidden(&page, "csrf");
    // Developers and viewers: no link, no page, no action.
    for (user, password) in [("dev", "dev password 123"), ("val", "val password 123")] {
        let cookie = c.sign_in(user, password).await;
        let (_, home) = c.get("/", &cookie).await;
        assert!(!home.contains("href=\"/instance\""), "{user}");
        assert_eq!(c.get("/instance", &cookie).await.0, 403, "{user}");
        assert_eq!(c.get("/instance/node-tokens/nt_0/revoke", &cookie).await.0, 403, "{user}");
        let own_csrf = hidden(&home, "csrf");
        let r = c.post("/instance/node-tokens", &cookie, &[("csrf", &own_csrf), ("name", "sneaky")]).await;
        assert_eq!(r.status(), 403, "{user}");
    }
    assert_eq!(api(&c, "/api/v1/nodes/tokens").await, serde_json::json!([]));

    // A node token: shown once, then only its id and name.
    let r = c.post("/instance/node-tokens", &root, &[("csrf", &csrf), ("name", "edge-a")]).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let at = page.find("<code id=\"new-token\">").unwrap() + 21;
    let token = page[at..at + page[at..].find('<').unwrap()].to_owned();
    assert!(token.starts_with("chn_"), "{token}");
    let (_, page) = c.get("/instance", &root).await;
    assert!(!page.contains(&token) && page.contains("edge-a"), "never shown again: {page}");
    let listed = api(&c, "/api/v1/nodes/tokens").await;
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert!(page.contains(&format!("<code>{id}</code>")), "{page}");
    // A bad name is refused, named; nothing echoed raw.
    let r = c.post("/instance/node-tokens", &root, &[("csrf", &csrf), ("name", "<b>no spaces</b>")]).await;
    assert_eq!(r.status(), 422);
    let text = r.text().await.unwrap();
    assert!(text.contains("is not a node token name") && !text.contains("<b>no"), "{text}");
    // Revoked after a confirmation naming it.
    let (status, page) = c.get(&format!("/instance/node-tokens/{id}/revoke"), &root).await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("Revoke node token {id} (edge-a)?")), "{page}");
    let r = c.post(&format!("/instance/node-tokens/{id}/revoke"), &root, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let (_, page) = c.get(&location, &root).await;
    assert!(page.contains(&format!("Revoked {id} (edge-a)")), "{page}");
    assert!(api(&c, "/api/v1/nodes/tokens").await[0]["revoked_at"].is_string());

    // The base certificate: a wrong one refused naming the pattern, a good one served, then removed.
    let (chain, key) = pem_pair(&ca.issue(&["*.example.test"]));
    let r = c
        .post("/instance/base-certificates", &root, &[("csrf", &csrf), ("chain_pem", &chain), ("key_pem", &key)])
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("a wildcard for *.sites.test"));
    let (chain, key) = pem_pair(&ca.issue(&["*.sites.test"]));
    let r = c
        .post("/instance/base-certificates", &root, &[("csrf", &csrf), ("chain_pem", &chain), ("key_pem", &key)])
        .await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Uploaded") && page.contains("upload from") && page.contains("valid until"), "{page}");
    assert_eq!(api(&c, "/api/v1/certificates/base").await[0]["certificate"]["source"], "upload");
    let confirm = "/instance/base-certificates/%2A.sites.test/remove";
    let (status, page) = c.get(confirm, &root).await;
    assert_eq!(status, 200);
    assert!(page.contains("Remove the certificate of *.sites.test?"), "{page}");
    let r = c.post(confirm, &root, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 303);
    assert!(api(&c, "/api/v1/certificates/base").await[0]["certificate"].is_null());
    assert_eq!(c.get("/instance/base-certificates/nosuch/remove", &root).await.0, 404);
    let log = audited(&c, "root").join("\n");
    for line in [
        "\"create_token\" \"/api/v1/nodes/tokens\" 201",
        "\"create_token\" \"/api/v1/nodes/tokens\" 422",
        &format!("\"revoke_token\" \"/api/v1/nodes/tokens/{id}\" 200"),
        "\"upload\" \"/api/v1/certificates/base\" 422",
        "\"upload\" \"/api/v1/certificates/base\" 200",
        "\"remove\" \"/api/v1/certificates/base/%2A.sites.test\" 200",
    ] {
        assert!(log.contains(line), "{line} in {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_proxy_origins_are_set_and_garbage_collected_in_the_console() {
    let c = setup();
    let cookie = c.sign_in("dev", "dev password 123").await;
    let (_, site) = c.get("/sites/docs", &cookie).await;
    assert_eq!(link(&site, "Retention, proxy origins and platform defaults").as_deref(), Some("/sites/docs/settings"));
    let (status, page) = c.get("/sites/docs/settings", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("Every deploy is kept") && page.contains("proxy rules reach no other host"), "{page}");
    let csrf = hidden(&page, "csrf");
    // Retention: saved, read back through the CLI; negative, huge and non-numbers are named and change nothing.
    let r = c.post("/sites/docs/settings/retention", &cookie, &[("csrf", &csrf), ("keep_deploys", "5")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/sites/docs/settings?done=retention");
    let shown = c.server.cli(&["sites", "update", "docs", "--json"]).ok().json();
    assert_eq!(shown["keep_deploys"], 5, "{shown}");
    for bad in ["-1", "10001", "99999999999999999999", "five", ""] {
        let r = c.post("/sites/docs/settings/retention", &cookie, &[("csrf", &csrf), ("keep_deploys", bad)]).await;
        assert_eq!(r.status(), 422, "{bad}");
        assert!(r.text().await.unwrap().contains("Deploys kept per branch"), "{bad}");
    }
    let (_, page) = c.get("/sites/docs/settings?done=retention", &cookie).await;
    assert!(page.contains("Saved: 5 deploys per branch are kept."), "{page}");
    // Proxy origins: one per line, shown normalised; every bad line named, nothing changed.
    let origins = "https://api.example.com\n\n  http://backend.internal:8080  \n";
    let r = c.post("/sites/docs/settings/proxy_origins", &cookie, &[("csrf", &csrf), ("origins", origins)]).await;
    assert_eq!(r.status(), 303);
    let shown = c.server.cli(&["sites", "proxy-origins", "docs", "--json"]).ok().json();
    assert_eq!(shown["origins"], serde_json::json!(["http://backend.internal:8080", "https://api.example.com:443"]));
    let bad = "https://ok.example.com\nftp://nope.example.com\nhttps://x.example.com/path\n<script>";
    let r = c.post("/sites/docs/settings/proxy_origins", &cookie, &[("csrf", &csrf), ("origins", bad)]).await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(page.contains("line 2") && page.contains("line 3") && page.contains("line 4") && !page.contains("line 1 "));
    assert!(!page.contains("<script>"), "escaped");
    let many: String = (0..51).map(|i| format!("https://h{i}.example.com\n")).collect();
    let r = c.post("/sites/docs/settings/proxy_origins", &cookie, &[("csrf", &csrf), ("origins", &many)]).await;
    assert_eq!(r.status(), 422);
    let huge = "x".repeat(20_000);
    let r = c.post("/sites/docs/settings/proxy_origins", &cookie, &[("csrf", &csrf), ("origins", &huge)]).await;
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().starts_with("<!doctype html>"));
    assert_eq!(c.server.cli(&["sites", "proxy-origins", "docs", "--json"]).ok().json(), shown, "unchanged");
    // Platform defaults: a choice of the four, or none; anything else is named.
    let r = c.post("/sites/docs/settings/profile", &cookie, &[("csrf", &csrf), ("profile", "amplify")]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/sites/docs/settings?done=profile");
    let shown_profile = c.server.cli(&["sites", "profile", "docs", "--json"]).ok().json();
    assert_eq!(shown_profile["profile"], "amplify");
    let (_, page) = c.get("/sites/docs/settings?done=profile", &cookie).await;
    assert!(
        page.contains("Saved: the next deploys follow amplify") && page.contains("<option value=\"amplify\" selected>")
    );
    let r = c.post("/sites/docs/settings/profile", &cookie, &[("csrf", &csrf), ("profile", "<b>vercel</b>")]).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("unknown profile") && !page.contains("<b>vercel"), "named and escaped: {page}");
    let r = c.post("/sites/docs/settings/profile", &cookie, &[("csrf", &csrf), ("profile", "")]).await;
    assert_eq!(r.status(), 303);
    assert!(c.server.cli(&["sites", "profile", "docs", "--json"]).ok().json()["profile"].is_null());
    let log = c.server.cli(&["audit", "list", "--actor", "dev", "--json"]).ok().json().to_string();
    assert!(log.contains("put_retention") && log.contains("put_proxy_origins") && log.contains("put_profile"), "{log}");
    // A viewer sees the settings without forms and cannot change them.
    let viewer = c.sign_in("val", "val password 123").await;
    let (status, page) = c.get("/sites/docs/settings", &viewer).await;
    assert_eq!(status, 200);
    assert!(page.contains("api.example.com") && !page.contains("Save retention"), "{page}");
    let v_csrf = hidden(&page, "csrf");
    let r = c.post("/sites/docs/settings/retention", &viewer, &[("csrf", &v_csrf), ("keep_deploys", "1")]).await;
    assert_eq!(r.status(), 403);
    let r = c.post("/sites/docs/settings/proxy_origins", &viewer, &[("csrf", &v_csrf), ("origins", "")]).await;
    assert_eq!(r.status(), 403);
    let r = c.post("/sites/docs/settings/profile", &viewer, &[("csrf", &v_csrf), ("profile", "netlify")]).await;
    assert_eq!(r.status(), 403);
    // Garbage collection: admins only, from the health page; a dry run, then for real.
    let (_, health) = c.get("/health", &cookie).await;
    assert!(!health.contains("Collect garbage now"), "a developer has no button");
    let r = c.post("/health/gc", &cookie, &[("csrf", &csrf), ("dry_run", "false")]).await;
    assert_eq!(r.status(), 403);
    c.server.cli(&["users", "create", "root", "--role", "admin", "--password-stdin"]).stdin("root password 1").ok();
    let admin = c.sign_in("root", "root password 1").await;
    let (_, health) = c.get("/health", &admin).await;
    assert!(health.contains("Collect garbage now"), "{health}");
    let csrf = hidden(&health, "csrf");
    let r = c.post("/health/gc", &admin, &[("csrf", &csrf), ("dry_run", "maybe")]).await;
    assert_eq!(r.status(), 422);
    let r = c.post("/health/gc", &admin, &[("csrf", &csrf), ("dry_run", "true")]).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("What garbage collection would remove"));
    let r = c.post("/health/gc", &admin, &[("csrf", &csrf), ("dry_run", "false")]).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Garbage collected") && page.contains("Files in use by a deploy"), "{page}");
    let after = c.server.cli(&["gc", "--dry-run", "--json"]).ok().json();
    assert_eq!(after["deploys_pruned"], 0, "{after}");
    assert_eq!(c.edge_text(), "<h1>v2</h1>", "the live deploy stays");
    let log = c.server.cli(&["audit", "list", "--json"]).ok().json();
    let gc: Vec<_> =
        log.as_array().unwrap().iter().filter(|e| e["action"] == "run_gc").map(|e| e["status"].clone()).collect();
    assert!(gc.contains(&serde_json::json!(200)) && gc.contains(&serde_json::json!(403)), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_invite_from_the_users_page_and_the_link_is_shown_once() {
    let c = setup();
    c.server.cli(&["users", "create", "root", "--role", "admin", "--password-stdin"]).stdin("root password 1").ok();
    let admin = c.sign_in("root", "root password 1").await;
    let (_, page) = c.get("/users", &admin).await;
    let csrf = hidden(&page, "csrf");
    let link_of = |page: &str| {
        let at = page.find("<code id=\"invite-link\">").unwrap_or_else(|| panic!("{page}")) + 23;
        page[at..at + page[at..].find('<').unwrap()].to_owned()
    };
    // A new user without a password: created, the link shown with its expiry, and it works.
    let r =
        c.post("/users", &admin, &[("csrf", &csrf), ("name", "nia"), ("role", "developer"), ("password", "")]).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let url = link_of(&page);
    assert!(url.starts_with(&format!("{}/invite/chi_", c.server.api_url)), "{url}");
    assert!(page.contains("It works once, until 20"), "{page}");
    let users = c.server.cli(&["users", "list", "--json"]).ok().json();
    assert!(users.as_array().unwrap().iter().any(|u| u["name"] == "nia" && u["role"] == "developer"), "{users}");
    let path = url.trim_start_matches(&c.server.api_url).to_owned();
    assert_eq!(c.get(&path, "").await.0, 200);
    let (_, page) = c.get("/users", &admin).await;
    assert!(!page.contains(&path), "never shown again");
    // A new link for an existing user (a reset): the older one stops working.
    let r = c.post("/users/nia/invite", &admin, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 200);
    let second = link_of(&r.text().await.unwrap());
    assert_eq!(c.get(&path, "").await.0, 404);
    assert_eq!(c.get(second.trim_start_matches(&c.server.api_url), "").await.0, 200);
    let r = c.post("/users", &admin, &[("csrf", &csrf), ("name", "nia"), ("role", "admin"), ("password", "")]).await;
    assert_eq!(r.status(), 409, "the add form never resets an existing user");
    let r = c.post("/users/nobody/invite", &admin, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), 404);
    let r =
        c.post("/users", &admin, &[("csrf", &csrf), ("name", "Bad Name"), ("role", "viewer"), ("password", "")]).await;
    assert_eq!(r.status(), 422);
    let r = c.post("/users", &admin, &[("csrf", &csrf), ("name", "zed"), ("role", "emperor"), ("password", "")]).await;
    assert_eq!(r.status(), 422);
    let log = c.server.cli(&["audit", "list", "--actor", "root", "--json"]).ok().json().to_string();
    assert!(log.contains("/api/v1/users/nia/invite"), "{log}");
    // Developers and viewers: refused.
    for (user, password) in [("dev", "dev password 123"), ("val", "val password 123")] {
        let cookie = c.sign_in(user, password).await;
        let (_, page) = c.get("/", &cookie).await;
        let r = c.post("/users/nia/invite", &cookie, &[("csrf", &hidden(&page, "csrf"))]).await;
        assert_eq!(r.status(), 403, "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_page_shows_each_nodes_requests_and_errors() {
    let c = setup();
    let cookie = c.sign_in("val", "val password 123").await;
    for path in ["/", "/", "/", "/missing", "/missing"] {
        c.server.get("docs.localhost", path);
    }
    // The in-process edge reports its last minute with each heartbeat (every 5 s).
    let traffic = util::wait_for("traffic in a heartbeat", Duration::from_secs(30), || {
        let nodes = c.server.cli(&["nodes", "list", "--json"]).ok().json();
        let t = nodes["nodes"][0]["traffic"].clone();
        (t["requests"].as_u64().unwrap_or(0) >= 5 && t["client_errors"].as_u64().unwrap_or(0) >= 2).then_some(t)
    });
    assert_eq!(traffic["server_errors"], 0, "{traffic}");
    let (status, page) = c.get("/health", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("Requests and errors (last minute)") && page.contains("/min; 5xx 0.0 %, 4xx "), "{page}");
    // A node cannot report more errors than responses.
    let mut hb = serde_json::json!({
        "node_id": "n1", "name": "n1", "zone": "a", "role": "edge", "routing_version": 0, "snapshot_age_ms": null,
        "ready": true, "draining": false, "refused": null, "software": "x", "edge_addr": null,
        "traffic": {"window_ms": 1000, "requests": 1, "client_errors": 5, "server_errors": 0}
    });
    let file = c._tmp.path().join("node.token");
    c.server.cli(&["nodes", "token", "create", "n1", "--output", file.to_str().unwrap()]).ok();
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let post =
        |hb: serde_json::Value| c.http.post(c.url("/api/v1/nodes/heartbeat")).bearer_auth(&token).json(&hb).send();
    let r = post(hb.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("traffic"));
    hb["traffic"]["client_errors"] = 0.into();
    assert_eq!(post(hb).await.unwrap().status(), 200);
}

//! The web console over HTTP (issue 18): sign-in and sessions, the pages a
//! developer uses to see and roll back a site, what a viewer cannot do,
//! CSRF and cross-origin refusals, the security headers every page carries,
//! and hostile input. (The same pages in a real browser, with axe-core:
//! tests/console_browser.rs.)

mod util;

use std::time::Duration;

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
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
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
    ("GET /api/v1/sites/{site}/notifications", "GET", "/sites/docs/notifications"),
    ("GET /api/v1/sites/{site}/notifications/deliveries", "GET", "/sites/docs/notifications"),
    (
        "POST /api/v1/sites/{site}/notifications/deliveries/{id}/redeliver",
        "POST",
        "/sites/docs/notifications/deliveries/1/redeliver",
    ),
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
];

/// Operations the console does not have yet (the CLI does): this list only shrinks.
const NOT_YET: &[&str] = &[
    "GET /api/v1/sites/{site}/proxy_origins",
    "PUT /api/v1/sites/{site}/proxy_origins",
    "GET /api/v1/sites/{site}/retention",
    "PUT /api/v1/sites/{site}/retention",
    "POST /api/v1/gc",
    "GET /api/v1/sites/{site}/git",
    "PUT /api/v1/sites/{site}/git",
    "DELETE /api/v1/sites/{site}/git",
    "GET /api/v1/sites/{site}/build_hooks",
    "POST /api/v1/sites/{site}/build_hooks",
    "DELETE /api/v1/sites/{site}/build_hooks/{id}",
    "GET /api/v1/sites/{site}/webhook_deliveries",
    "POST /api/v1/sites/{site}/notifications",
    "DELETE /api/v1/sites/{site}/notifications/{id}",
    "POST /api/v1/sites/{site}/notifications/{id}/test",
    "GET /api/v1/sites/{site}/notifications/deliveries/{id}",
    "POST /api/v1/sites/{site}/domains",
    "DELETE /api/v1/sites/{site}/domains/{name}",
    "PUT /api/v1/sites/{site}/domains/{name}/primary",
    "PUT /api/v1/sites/{site}/domains/{name}/certificate",
    "GET /api/v1/sites/{site}/tls",
    "PUT /api/v1/sites/{site}/tls",
    "GET /api/v1/certificates/base",
    "PUT /api/v1/certificates/base",
    "DELETE /api/v1/certificates/base/{pattern}",
    "GET /api/v1/nodes/tokens",
    "POST /api/v1/nodes/tokens",
    "DELETE /api/v1/nodes/tokens/{id}",
    "POST /api/v1/users/{name}/invite",
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
    let unaccounted: Vec<&String> = operations
        .iter()
        .filter(|op| {
            !covered.contains(&op.as_str()) && !excused.contains(&op.as_str()) && !NOT_YET.contains(&op.as_str())
        })
        .collect();
    assert!(
        unaccounted.is_empty(),
        "API operations with no console action, no reason and not listed as pending: {unaccounted:?}"
    );
    // The lists name only operations that exist, each once.
    for op in covered.iter().chain(&excused).chain(NOT_YET) {
        assert!(operations.iter().any(|o| o == op), "{op} is not an API operation (any more)");
    }
    let mut all: Vec<&str> = covered.iter().chain(&excused).chain(NOT_YET).copied().collect();
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
    write_tree(&site, &[("index.html", "<h1>v3</h1>"), ("about.html", "about"), ("_redirects", "/old /about 301")]);
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

//! The console in a real browser (issue 18): headless Chromium through
//! chromedriver (chanto_testkit::browser) walks sign-in, the sites list, a
//! site, the rollback confirmation and the audit log by keyboard, and
//! axe-core finds no WCAG 2 A/AA violation on any page. Skipped with a
//! message where Chromium is missing, unless CHANTO_TEST_REQUIRE_BROWSER is
//! set (scripts/test sets it and installs everything).

mod util;

use chanto_testkit::browser::{
    self, assert_accessible, fantoccini::Locator, fantoccini::key::Key, focused, press, tab,
};
use util::{Server, write_tree};

/// Presses Tab until `target` (as `browser::focused` names it) has focus.
async fn tab_to(client: &browser::fantoccini::Client, target: &str) {
    let mut seen = Vec::new();
    for _ in 0..30 {
        tab(client).await;
        let now = focused(client).await;
        if now == target {
            return;
        }
        seen.push(now);
    }
    panic!("Tab never reached {target}; focus went through {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_by_keyboard_and_has_no_accessibility_violations() {
    let Some(session) = browser::session("every_page_works_by_keyboard_and_has_no_accessibility_violations").await
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>v1</h1>")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "first version"]).ok();
    write_tree(&site, &[("index.html", "<h1>v2</h1>")]);
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "second version"]).ok();
    server.cli(&["users", "create", "ada", "--role", "admin", "--password-stdin"]).stdin("ada's password 1").ok();
    let client = session.client();
    let url = |path: &str| format!("{}{path}", server.api_url);

    // Sign in: the page, by keyboard (type, Enter).
    client.goto(&url("/")).await.unwrap();
    assert!(client.current_url().await.unwrap().as_str().contains("/login?next=/"));
    assert_accessible(client, "sign-in").await;
    // A wrong password first: the error is announced, and accessible too.
    tab_to(client, "input#user").await;
    client.find(Locator::Css("#user")).await.unwrap().send_keys("ada").await.unwrap();
    tab_to(client, "input#password").await;
    client.find(Locator::Css("#password")).await.unwrap().send_keys("wrong password!").await.unwrap();
    press(client, Key::Enter).await;
    browser::wait_for(client, "p.error[role=alert]").await;
    assert_accessible(client, "sign-in with an error").await;
    assert_eq!(focused(client).await, "input#password", "the password field has focus again");
    client.find(Locator::Css("#password")).await.unwrap().send_keys("ada's password 1").await.unwrap();
    press(client, Key::Enter).await;

    // The sites list.
    browser::wait_until(client, "document.title.startsWith('Sites')", "the sites page").await;
    assert_accessible(client, "sites").await;
    tab_to(client, "a").await; // the skip link first
    assert_eq!(client.execute("return document.activeElement.textContent", vec![]).await.unwrap(), "Skip to content");
    client.find(Locator::LinkText("docs")).await.unwrap().click().await.unwrap();

    // The site: deploys, and the rollback offered on the older one.
    browser::wait_until(client, "document.title.startsWith('docs')", "the site page").await;
    assert_accessible(client, "site").await;
    // A deploy's own page: facts, plan against production, rules, files.
    let first = client.find(Locator::XPath("//tr[td[contains(., 'first version')]]//th/a")).await.unwrap();
    let deploy_href = first.attr("href").await.unwrap().unwrap();
    client.goto(&url(&deploy_href)).await.unwrap();
    assert_accessible(client, "deploy").await;
    client.back().await.unwrap();
    let rollback = client.find(Locator::XPath("//a[starts-with(normalize-space(.), 'Roll back')]")).await.unwrap();
    let href = rollback.attr("href").await.unwrap().unwrap();
    client.goto(&url(&href)).await.unwrap();

    // The confirmation, then the click — by keyboard.
    browser::wait_for(client, "button#confirm").await;
    assert_accessible(client, "rollback confirmation").await;
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v2</h1>");
    tab_to(client, "button#confirm").await;
    press(client, Key::Enter).await;
    browser::wait_for(client, "p.notice[role=status]").await;
    assert_eq!(server.get("docs.localhost", "/").text(), "<h1>v1</h1>", "live at once");
    assert_accessible(client, "site after a rollback").await;

    // Passwords and networks.
    client.goto(&url("/sites/docs/access")).await.unwrap();
    assert_accessible(client, "passwords and networks").await;

    // Build variables: a paste with a bad line shows the errors, accessibly.
    client.goto(&url("/sites/docs/env")).await.unwrap();
    assert_accessible(client, "build variables").await;
    client.find(Locator::Css("#dotenv")).await.unwrap().send_keys("GOOD=1\nbad line").await.unwrap();
    client.find(Locator::Css("form.stack button[type=submit]")).await.unwrap().click().await.unwrap();
    browser::wait_for(client, "div.error[role=alert]").await;
    assert_accessible(client, "build variables with errors").await;

    // The audit log (an admin's) shows the rollback, by ada.
    client.goto(&url("/audit")).await.unwrap();
    let text = client.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(text.contains("rollback") && text.contains("ada"), "{text}");
    assert_accessible(client, "audit log").await;

    // Domains and notifications of a site.
    server.cli(&["domains", "add", "shop.example.com", "--site", "docs", "--no-www"]).ok();
    client.goto(&url("/sites/docs/domains")).await.unwrap();
    assert_accessible(client, "domains").await;
    client.goto(&url("/sites/docs/domains/shop.example.com/certificate")).await.unwrap();
    assert_accessible(client, "upload a certificate").await;
    client.find(Locator::Css("#chain-pem")).await.unwrap().send_keys("not a certificate").await.unwrap();
    client.find(Locator::Css("#key-pem")).await.unwrap().send_keys("not a key").await.unwrap();
    client.find(Locator::Css("form.stack button[type=submit]")).await.unwrap().click().await.unwrap();
    browser::wait_for(client, "p.error[role=alert]").await;
    assert_accessible(client, "a refused certificate").await;
    client.goto(&url("/sites/docs/domains/shop.example.com/remove")).await.unwrap();
    assert_accessible(client, "remove a domain").await;
    client.goto(&url("/instance")).await.unwrap();
    assert_accessible(client, "instance").await;
    client.find(Locator::Css("#node-token-name")).await.unwrap().send_keys("edge-a").await.unwrap();
    press(client, Key::Enter).await;
    browser::wait_for(client, "code#new-token").await;
    assert_accessible(client, "instance with a new node token").await;
    let revoke = client.find(Locator::XPath("//a[starts-with(normalize-space(.), 'Revoke')]")).await.unwrap();
    let href = revoke.attr("href").await.unwrap().unwrap();
    client.goto(&url(&href)).await.unwrap();
    assert_accessible(client, "revoke a node token").await;
    client.goto(&url("/sites/docs/notifications")).await.unwrap();
    assert_accessible(client, "notifications").await;
    // Git and builds; a subscription, a delivery and the confirmations.
    let repo = util::git::Repo::new(&tmp.path().join("repo"));
    server.cli(&["git", "connect", &repo.url(), "--site", "docs"]).ok();
    server.cli(&["build-hooks", "create", "--site", "docs", "cms"]).ok();
    client.goto(&url("/sites/docs/git")).await.unwrap();
    assert_accessible(client, "git and builds").await;
    client.goto(&url("/sites/docs/git/disconnect")).await.unwrap();
    assert_accessible(client, "disconnect a repository").await;
    let add = ["notify", "add", "webhook", "--site", "docs", "--url", "http://127.0.0.1:9/hook", "--json"];
    let sub = server.cli(&add).ok().json()["id"].as_str().unwrap().to_owned();
    server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "third version"]).ok();
    let delivery = util::wait_for("a delivery", std::time::Duration::from_secs(30), || {
        let list = server.cli(&["notify", "deliveries", "--site", "docs", "--json"]).ok().json();
        list.as_array().unwrap().first().map(|d| d["id"].as_i64().unwrap())
    });
    client.goto(&url("/sites/docs/notifications")).await.unwrap();
    assert_accessible(client, "notifications with a subscription").await;
    client.goto(&url(&format!("/sites/docs/notifications/deliveries/{delivery}"))).await.unwrap();
    assert_accessible(client, "a notification delivery").await;
    client.goto(&url(&format!("/sites/docs/notifications/{sub}/remove"))).await.unwrap();
    assert_accessible(client, "remove a subscription").await;
    client.goto(&url("/sites/docs/settings")).await.unwrap();
    assert_accessible(client, "retention and proxy origins").await;

    // The typed confirmation before deleting a site.
    client.goto(&url("/sites/docs/delete")).await.unwrap();
    assert_accessible(client, "delete a site").await;

    // Health: this server's own edge, ready, at the newest routing version.
    client.goto(&url("/health")).await.unwrap();
    let text = client.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(text.contains("1 of 1 node(s) healthy") && text.contains("healthy"), "{text}");
    assert_accessible(client, "health").await;
    client.find(Locator::Css("button[name=dry_run][value=true]")).await.unwrap().click().await.unwrap();
    browser::wait_until(client, "document.title.startsWith('Garbage collection')", "the garbage collection report")
        .await;
    assert_accessible(client, "garbage collection").await;

    // An invitation's page.
    let link = server.cli(&["users", "invite", "newbie", "--role", "viewer"]).ok().stdout().trim().to_owned();
    client.goto(&link).await.unwrap();
    assert_accessible(client, "invitation").await;
    client.goto(&url("/")).await.unwrap();

    // Users and the account page (tokens), accessible too.
    client.goto(&url("/users")).await.unwrap();
    assert_accessible(client, "users").await;
    client.find(Locator::Css("form[action='/users/newbie/invite'] button")).await.unwrap().click().await.unwrap();
    browser::wait_for(client, "code#invite-link").await;
    assert_accessible(client, "a new sign-in link").await;
    client.goto(&url("/users/newbie/remove")).await.unwrap();
    assert_accessible(client, "remove a user").await;
    client.goto(&url("/account")).await.unwrap();
    assert_accessible(client, "account").await;
    client.find(Locator::Css("#token-name")).await.unwrap().send_keys("ci").await.unwrap();
    press(client, Key::Enter).await;
    browser::wait_for(client, "code#new-token").await;
    assert_accessible(client, "account with a new token").await;

    // An error page.
    client.goto(&url("/sites/nosuch")).await.unwrap();
    browser::wait_until(client, "document.title.startsWith('Not found')", "the not-found page").await;
    assert_accessible(client, "not found").await;

    // Sign out by keyboard: back to the sign-in page, and the site is closed again.
    tab_to(client, "button").await;
    press(client, Key::Enter).await;
    browser::wait_until(client, "location.pathname === '/login'", "the sign-in page after signing out").await;
    client.goto(&url("/sites/docs")).await.unwrap();
    assert!(client.current_url().await.unwrap().as_str().contains("/login?next=/sites/docs"));
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_started_in_the_console_shows_its_log_live_and_its_first_error() {
    use util::git::{Repo, reachable_tempdir};
    let Some(session) = browser::session("a_build_started_in_the_console_shows_its_log_live_and_its_first_error").await
    else {
        return;
    };
    let tmp = reachable_tempdir();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "app"]).ok();
    let repo = Repo::new(&tmp.path().join("repo"));
    server.cli(&["git", "connect", &repo.url(), "--site", "app"]).ok();
    let toml = "[build]\ncommand = \"for i in 1 2 3 4 5 6 7 8 9 10; do echo step $i; sleep 0.3; done; echo 'error: the build broke here'; echo after; exit 2\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", toml)], "a failing build");
    server.cli(&["users", "create", "dev", "--role", "developer", "--password-stdin"]).stdin("dev password 123").ok();
    let client = session.client();
    let url = |path: &str| format!("{}{path}", server.api_url);
    client.goto(&url("/login?next=/sites/app")).await.unwrap();
    client.find(Locator::Css("#user")).await.unwrap().send_keys("dev").await.unwrap();
    client.find(Locator::Css("#password")).await.unwrap().send_keys("dev password 123").await.unwrap();
    press(client, Key::Enter).await;
    browser::wait_until(client, "document.title.startsWith('app')", "the site page").await;

    // Start a build even though nothing pushed (auto-build or not): by keyboard.
    tab_to(client, "button").await; // Sign out comes first…
    tab_to(client, "button").await; // …then "Build main now".
    assert_eq!(client.execute("return document.activeElement.textContent", vec![]).await.unwrap(), "Build main now");
    press(client, Key::Enter).await;
    browser::wait_until(client, "location.pathname.startsWith('/builds/')", "the build page").await;
    assert_accessible(client, "a running build").await;
    // The log grows on screen while the build runs: step 10 is printed ~3 s
    // after step 1, and the page was loaded before it.
    browser::wait_for(client, "li#L3").await;
    let before = client.execute("return document.querySelectorAll('#log li').length", vec![]).await.unwrap();
    browser::wait_for(client, "#log li.error").await;
    let after = client.execute("return document.querySelectorAll('#log li').length", vec![]).await.unwrap();
    assert!(after.as_u64() > before.as_u64(), "lines arrived live: {before} then {after}");
    // The end: the state badge follows, the first error is marked and linked.
    browser::wait_until(client, "document.getElementById('build-state').textContent === 'failed'", "the failed state")
        .await;
    let error = client.find(Locator::Css("#log li.error code")).await.unwrap().text().await.unwrap();
    assert_eq!(error, "error: the build broke here");
    let link = client.find(Locator::Css("#first-error")).await.unwrap();
    let target = link.attr("href").await.unwrap().unwrap();
    let id = client.find(Locator::Css("#log li.error")).await.unwrap().attr("id").await.unwrap().unwrap();
    assert_eq!(target, format!("#{id}"));
    assert_accessible(client, "a failed build").await;
    // Reloaded after the end: the same, from the page alone (no live view).
    client.refresh().await.unwrap();
    let error = client.find(Locator::Css("#log li.error code")).await.unwrap().text().await.unwrap();
    assert_eq!(error, "error: the build broke here");
    assert!(client.find(Locator::Css("#log[data-events]")).await.is_err(), "a finished build does not stream");
    let lines: Vec<String> = serde_json::from_value(
        client
            .execute("return Array.from(document.querySelectorAll('#log li code'), c => c.textContent)", vec![])
            .await
            .unwrap(),
    )
    .unwrap();
    let steps: Vec<&String> = lines.iter().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(steps.len(), 10, "every line once, none twice: {lines:?}");
    session.close().await;
}

#[path = "util/oidc.rs"]
mod oidc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_works_in_a_browser_by_keyboard() {
    let Some(session) = browser::session("single_sign_on_works_in_a_browser_by_keyboard").await else {
        return;
    };
    let issuer = oidc::Issuer::start("chanto", "client secret 1").await;
    issuer.sign_in_as("sub-ada", "ada", &["ops"]);
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "client secret 1").unwrap();
    let args = ["--oidc-issuer", &issuer.url, "--oidc-client-id", "chanto", "--oidc-client-secret-file"];
    let mut args: Vec<&str> = args.to_vec();
    args.extend([secret.to_str().unwrap(), "--oidc-name", "Example ID", "--oidc-group-role", "ops=admin"]);
    let server = Server::start(&tmp.path().join("data"), &args);
    let client = session.client();
    client.goto(&format!("{}/audit", server.api_url)).await.unwrap();
    browser::wait_until(client, "location.pathname === '/login'", "the sign-in page").await;
    assert_accessible(client, "sign-in with single sign-on").await;
    // Tab to the provider's button and press Enter: to the provider, back
    // signed in (the browser carries the sign-in's cookie across), on the
    // page asked for.
    let mut reached = false;
    for _ in 0..10 {
        tab(client).await;
        let text = client.execute("return document.activeElement.textContent", vec![]).await.unwrap();
        if text == "Sign in with Example ID" {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches the single sign-on button");
    press(client, Key::Enter).await;
    browser::wait_until(client, "location.pathname === '/audit'", "the audit log, signed in").await;
    let user = client.execute("return document.querySelector('header').textContent", vec![]).await.unwrap();
    assert!(user.as_str().unwrap().contains("ada"), "{user}");
    assert_accessible(client, "signed in by single sign-on").await;
    session.close().await;
}

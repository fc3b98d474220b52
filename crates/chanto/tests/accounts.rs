//! Users, roles, personal tokens and the audit log through the binary
//! (issue 18): the first admin made with the instance's admin token, people
//! signing in with `chanto login --user`, every role and scope refused what
//! it may not do (with a message that says why), tokens narrowed at once
//! when their owner is demoted, revoked tokens refused, password guessing
//! throttled, hostile bodies refused, and every change in the audit log
//! with who, how and from where — never a secret value.

mod util;

use util::{Cli, Server};

/// A CLI command as whoever `token` belongs to.
fn as_token(server: &Server, token: &str, args: &[&str]) -> Cli {
    Cli::new(args).env("CHANTO_SERVER", &server.api_url).env("CHANTO_TOKEN", token)
}

/// Makes a token for `user` with the admin token; returns it.
fn token_for(server: &Server, user: &str, scope: &str) -> String {
    let out = server.cli(&["tokens", "create", "test", "--user", user, "--scope", scope]).ok();
    let token = out.stdout().trim().to_owned();
    assert!(token.starts_with("chp_"), "{}", out.report());
    token
}

fn api(server: &Server) -> String {
    format!("{}/api/v1", server.api_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_decide_and_every_change_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    // The first admin, with the break-glass admin token.
    server
        .cli(&["users", "create", "alice", "--role", "admin", "--password-stdin"])
        .stdin("alice's long password\n")
        .ok();
    server.cli(&["users", "create", "bob", "--role", "viewer", "--password-stdin"]).stdin("bob's long password\n").ok();
    server.cli(&["users", "create", "carol", "--role", "developer"]).ok();
    let users = server.cli(&["users", "list", "--json"]).ok().json();
    let roles: Vec<(String, String, bool)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap().into(), u["role"].as_str().unwrap().into(), u["has_password"] == true))
        .collect();
    assert_eq!(
        roles,
        [
            ("alice".into(), "admin".into(), true),
            ("bob".into(), "viewer".into(), true),
            ("carol".into(), "developer".into(), false)
        ]
    );
    assert!(!users.to_string().contains("argon2"), "no hashes in the API: {users}");

    // alice signs in with her password: a personal token is saved.
    let config = tmp.path().join("alice.toml");
    Cli::new(&["login", "--server", &server.api_url, "--user", "alice", "--password-stdin"])
        .env("CHANTO_CONFIG", config.to_str().unwrap())
        .stdin("alice's long password\n")
        .ok();
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(saved.contains("chp_"), "{saved}");
    let me = Cli::new(&["whoami", "--json"]).env("CHANTO_CONFIG", config.to_str().unwrap()).ok().json();
    assert_eq!(
        (me["actor"].as_str(), me["role"].as_str(), me["scope"].as_str()),
        (Some("alice"), Some("admin"), Some("admin"))
    );
    let alice = saved.lines().find_map(|l| l.strip_prefix("token = \"")).unwrap().trim_end_matches('"').to_owned();
    as_token(&server, &alice, &["sites", "create", "docs"]).ok();

    // bob (viewer) reads, and is refused changes with the reason.
    let bob = token_for(&server, "bob", "read");
    as_token(&server, &bob, &["sites", "list"]).ok();
    let refused = as_token(&server, &bob, &["sites", "create", "bobs"]).fails();
    assert!(refused.stderr().contains("needs the write scope"), "{}", refused.report());
    let refused = as_token(&server, &bob, &["users", "list"]).fails();
    assert!(refused.stderr().contains("admin scope"), "{}", refused.report());
    // A viewer cannot make a token wider than their role.
    let refused = as_token(&server, &bob, &["tokens", "create", "wide", "--scope", "write"]).fails();
    assert!(refused.stderr().contains("wider than read"), "{}", refused.report());
    // Nor can the admin token give one to them.
    let refused = server.cli(&["tokens", "create", "wide", "--user", "bob", "--scope", "admin"]).fails();
    assert!(refused.stderr().contains("role viewer"), "{}", refused.report());

    // carol (developer) with a deploy token: deploys, but changes nothing else.
    let carol = token_for(&server, "carol", "deploy");
    let site = tmp.path().join("site");
    util::write_tree(&site, &[("index.html", "<h1>docs</h1>")]);
    as_token(&server, &carol, &["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    let refused = as_token(&server, &carol, &["env", "set", "--site", "docs", "API_KEY", "s3cr3t-value"]).fails();
    assert!(refused.stderr().contains("needs the write scope"), "{}", refused.report());
    // Demoted to viewer: the same token can no longer deploy, at once.
    server.cli(&["users", "set-role", "carol", "viewer"]).ok();
    let refused = as_token(&server, &carol, &["deploy", site.to_str().unwrap(), "--site", "docs"]).fails();
    assert!(refused.stderr().contains("role viewer"), "{}", refused.report());

    // Revoked: refused, saying so.
    let listed = as_token(&server, &carol, &["tokens", "list", "--json"]).ok().json();
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    assert!(listed.to_string().find("chp_").is_none(), "tokens are never listed: {listed}");
    as_token(&server, &carol, &["tokens", "revoke", &id]).ok();
    let refused = as_token(&server, &carol, &["sites", "list"]).fails();
    assert!(refused.stderr().contains("was revoked"), "{}", refused.report());
    // Someone else's token: only an admin may revoke it.
    let bobs_id =
        as_token(&server, &bob, &["tokens", "list", "--json"]).ok().json()[0]["id"].as_str().unwrap().to_owned();
    let second_bob = token_for(&server, "bob", "read");
    let refused = as_token(&server, &second_bob, &["tokens", "revoke", "pt_nosuch"]).fails();
    assert!(refused.stderr().contains("not found") || refused.stderr().contains("no such"), "{}", refused.report());
    as_token(&server, &alice, &["tokens", "revoke", &bobs_id]).ok();

    // The last admin stays one.
    let refused = server.cli(&["users", "set-role", "alice", "developer"]).fails();
    assert!(refused.stderr().contains("only admin"), "{}", refused.report());
    let refused = server.cli(&["users", "remove", "alice"]).fails();
    assert!(refused.stderr().contains("only admin"), "{}", refused.report());

    // Removing a user takes their tokens with them.
    server.cli(&["users", "remove", "bob"]).ok();
    let refused = as_token(&server, &second_bob, &["sites", "list"]).fails();
    assert!(refused.stderr().contains("unknown API token"), "{}", refused.report());

    // The audit log: who, with what, from where, which operation, on what,
    // how it ended — refusals too — and never a secret value.
    as_token(&server, &alice, &["env", "set", "--site", "docs", "--secret", "API_KEY", "s3cr3t-value"]).ok();
    let log = as_token(&server, &alice, &["audit", "list", "--limit", "1000", "--json"]).ok().json();
    let entries = log.as_array().unwrap();
    let find = |actor: &str, action: &str, status: u64| {
        entries.iter().find(|e| e["actor"] == actor && e["action"] == action && e["status"] == status).cloned()
    };
    let created = find("alice", "create_site", 201).unwrap_or_else(|| panic!("{log:#}"));
    assert_eq!(created["source"], "127.0.0.1");
    assert!(created["via"].as_str().unwrap().starts_with("pt_"), "{created}");
    assert_eq!(created["target"], "/api/v1/sites");
    assert!(find("bob", "create_site", 403).is_some(), "refusals are audited: {log:#}");
    assert!(find("admin-token", "create_user", 201).is_some(), "{log:#}");
    assert!(find("admin-token", "update_user", 200).is_some(), "{log:#}");
    assert!(find("carol", "create_deploy", 201).is_some(), "{log:#}");
    assert!(find("alice", "login", 201).is_some(), "{log:#}");
    let env = find("alice", "set_env", 200).unwrap_or_else(|| panic!("{log:#}"));
    assert_eq!(env["target"], "/api/v1/sites/docs/env/API_KEY", "the variable's name, not its value");
    assert!(!log.to_string().contains("s3cr3t"), "no secret in the audit log: {log:#}");
    assert!(!log.to_string().contains("long password"), "{log:#}");
    assert!(!entries.iter().any(|e| e["action"] == "upload_blob"), "blob uploads are not audited one by one");
    // Newest first, filtered by actor, paged.
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let carols = server.cli(&["audit", "list", "--actor", "carol", "--json"]).ok().json();
    assert!(carols.as_array().unwrap().iter().all(|e| e["actor"] == "carol") && !carols.as_array().unwrap().is_empty());
    let page = server.cli(&["audit", "list", "--limit", "2", "--before", &ids[0].to_string(), "--json"]).ok().json();
    assert_eq!(page.as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect::<Vec<_>>(), ids[1..3]);
    // The audit log is for admins.
    let refused = as_token(&server, &token_for(&server, "carol", "read"), &["audit", "list"]).fails();
    assert!(refused.stderr().contains("admin scope"), "{}", refused.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_is_throttled_and_hostile_input_is_refused_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server
        .cli(&["users", "create", "dave", "--role", "developer", "--password-stdin"])
        .stdin("dave's long password")
        .ok();
    let http = reqwest::Client::new();
    let login = |body: serde_json::Value| http.post(format!("{}/auth/token", api(&server))).json(&body).send();

    // An unknown user and a wrong password get the same answer.
    let unknown = login(serde_json::json!({"user": "nobody", "password": "whatever it is"})).await.unwrap();
    assert_eq!(unknown.status(), 401);
    let unknown = unknown.text().await.unwrap();
    let wrong = login(serde_json::json!({"user": "dave", "password": "not his password"})).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.text().await.unwrap(), unknown);
    // The right one works and says what it made.
    let ok =
        login(serde_json::json!({"user": "dave", "password": "dave's long password", "scope": "read"})).await.unwrap();
    assert_eq!(ok.status(), 201);
    let made: serde_json::Value = ok.json().await.unwrap();
    assert_eq!((made["user"].as_str(), made["scope"].as_str()), (Some("dave"), Some("read")));
    assert!(made["expires_at"].is_string(), "sign-in tokens expire (90 days by default): {made}");
    // Wider than the role: refused.
    let wide =
        login(serde_json::json!({"user": "dave", "password": "dave's long password", "scope": "admin"})).await.unwrap();
    assert_eq!(wide.status(), 403);

    // Guessing: after five failures even the right password waits.
    for _ in 0..5 {
        let r = login(serde_json::json!({"user": "dave", "password": "guess guess guess"})).await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let held = login(serde_json::json!({"user": "dave", "password": "dave's long password"})).await.unwrap();
    assert_eq!(held.status(), 429);
    assert!(held.text().await.unwrap().contains("try again in"));
    let cli = Cli::new(&["login", "--server", &server.api_url, "--user", "dave", "--password-stdin"])
        .env("CHANTO_CONFIG", tmp.path().join("dave.toml").to_str().unwrap())
        .stdin("dave's long password\n")
        .fails();
    assert!(cli.stderr().contains("too many failed sign-ins"), "{}", cli.report());

    // Hostile bodies: malformed, unknown fields, oversized, wrong types.
    let raw = |body: Vec<u8>| {
        http.post(format!("{}/auth/token", api(&server))).header("content-type", "application/json").body(body).send()
    };
    let r = raw(b"{\"user\": \"dave\", \"password\": ".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = raw(serde_json::to_vec(&serde_json::json!({"user": "x", "password": "y", "admin": true})).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("admin"), "names the unknown field");
    // (On a client of its own: the server closes a connection whose body
    // it refused, and a pooled connection must not be reused after that.)
    let r = reqwest::Client::new()
        .post(format!("{}/auth/token", api(&server)))
        .header("content-type", "application/json")
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let huge = "p".repeat(10_000);
    let r = login(serde_json::json!({"user": "dave2", "password": huge})).await.unwrap();
    assert_eq!(r.status(), 401);

    // Users: names and passwords checked, with what to do.
    let admin = &server.token;
    let create =
        |body: serde_json::Value| http.post(format!("{}/users", api(&server))).bearer_auth(admin).json(&body).send();
    for (body, why) in [
        (serde_json::json!({"name": "Bad Name", "role": "viewer"}), "lowercase"),
        (serde_json::json!({"name": "ok", "role": "superuser"}), "roles are viewer, developer and admin"),
        (serde_json::json!({"name": "ok", "role": "viewer", "password": "short"}), "at least 10"),
        (serde_json::json!({"name": "admin-token", "role": "viewer"}), "admin token"),
        (serde_json::json!({"name": "e\u{0}vil", "role": "viewer"}), "lowercase"),
    ] {
        let r = create(body.clone()).await.unwrap();
        assert_eq!(r.status(), 422, "{body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(why), "{body}: {text}");
    }
    let r = create(serde_json::json!({"name": "dave", "role": "viewer"})).await.unwrap();
    assert_eq!(r.status(), 409);
    // Tokens: a node token or garbage is no API token; expiry bounds hold.
    for bad in ["chn_0000", "chp_", "chp_nonsense", &"x".repeat(300)] {
        let r = http.get(format!("{}/sites", api(&server))).bearer_auth(bad).send().await.unwrap();
        assert!(matches!(r.status().as_u16(), 401 | 403), "{bad}: {}", r.status());
    }
    let r = http
        .post(format!("{}/tokens", api(&server)))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": "t", "user": "dave", "expires_in_days": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = http
        .post(format!("{}/tokens", api(&server)))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "the admin token must name the user");
    assert!(r.text().await.unwrap().contains("--user"));
}

#[path = "util/oidc.rs"]
mod oidc;

/// One single sign-on through the console, by HTTP as a browser does it:
/// `/login/oidc` → the provider → the callback. `Ok(session cookie)`, or
/// the status and page of the refusal.
async fn sso(http: &reqwest::Client, server: &Server, next: &str) -> Result<String, (u16, String)> {
    let r = http.get(format!("{}/login/oidc?next={next}", server.api_url)).send().await.unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let pending = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(pending.starts_with("chanto_oidc=") && pending.contains("HttpOnly") && pending.contains("Max-Age=600"));
    let pending = pending.split(';').next().unwrap().to_owned();
    let to_provider = r.headers()["location"].to_str().unwrap().to_owned();
    let r = http.get(&to_provider).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(back.starts_with(&format!("{}/login/oidc/callback?", server.api_url)), "{back}");
    let r = http.get(&back).header("cookie", &pending).send().await.unwrap();
    let status = r.status().as_u16();
    let cookies: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert!(cookies.iter().any(|c| c.starts_with("chanto_oidc=;") && c.contains("Max-Age=0")), "used up: {cookies:?}");
    if status == 303 {
        let session = cookies.iter().find(|c| c.starts_with("chanto_session=")).expect("a session cookie");
        assert_eq!(r.headers()["location"], next.replace("%2F", "/").as_str());
        return Ok(session.split(';').next().unwrap().to_owned());
    }
    Err((status, r.text().await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_links_by_subject_maps_groups_and_refuses_every_spoiled_answer() {
    use oidc::{Issuer, Spoil};
    let issuer = Issuer::start("chanto-console", "s3cret-of-the-client").await;
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("client-secret");
    std::fs::write(&secret, "s3cret-of-the-client\n").unwrap();
    let server = Server::start(
        &tmp.path().join("data"),
        &[
            "--oidc-issuer",
            &issuer.url,
            "--oidc-client-id",
            "chanto-console",
            "--oidc-client-secret-file",
            secret.to_str().unwrap(),
            "--oidc-name",
            "Example ID",
            "--oidc-group-role",
            "ops=admin",
            "--oidc-group-role",
            "devs=developer",
            "--oidc-scope",
            "groups",
        ],
    );
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // The sign-in page offers it.
    let login = http.get(format!("{}/login?next=/audit", server.api_url)).send().await.unwrap().text().await.unwrap();
    assert!(
        login.contains(r#"href="/login/oidc?next=/audit""#) && login.contains("Sign in with Example ID"),
        "{login}"
    );

    // A member of ops signs in for the first time: a new admin, linked.
    issuer.sign_in_as("sub-ann", "Ann", &["ops", "other"]);
    let cookie = sso(&http, &server, "/audit").await.unwrap();
    let q = issuer.authorize_requests().pop().unwrap();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["redirect_uri"], format!("{}/login/oidc/callback", server.api_url));
    assert!(q["scope"].split(' ').any(|s| s == "openid") && q["scope"].contains("groups"), "{q:?}");
    assert!(q["nonce"].len() >= 16 && q["state"].len() >= 16 && q["code_challenge"].len() >= 43, "{q:?}");
    let page = http.get(format!("{}/audit", server.api_url)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 200, "an admin reads the audit log");
    assert!(page.text().await.unwrap().contains("/login/oidc"), "the sign-in is in the audit log");
    let page = http.get(format!("{}/users", server.api_url)).header("cookie", &cookie).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("single sign-on (sub-ann)"), "the users page shows the link");
    let users = server.cli(&["users", "list", "--json"]).ok().json();
    let ann = users.as_array().unwrap().iter().find(|u| u["name"] == "ann").expect("ann created, lowercased");
    assert_eq!(
        (ann["role"].as_str(), ann["sso_subject"].as_str(), ann["has_password"].as_bool()),
        (Some("admin"), Some("sub-ann"), Some(false))
    );
    // Demoted at the provider: demoted here at the next sign-in — unless
    // she is the last admin.
    issuer.sign_in_as("sub-ann", "ann", &["devs"]);
    sso(&http, &server, "/").await.unwrap();
    assert_eq!(server.cli(&["users", "list", "--json"]).ok().json()[0]["role"], "admin", "the last admin stays one");
    server.cli(&["users", "create", "root", "--role", "admin"]).ok();
    sso(&http, &server, "/").await.unwrap();
    assert_eq!(server.cli(&["users", "list", "--json"]).ok().json()[0]["role"], "developer");
    let log = server.cli(&["audit", "list", "--actor", "ann", "--json"]).ok().json();
    let by_sso: Vec<(String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["via"] == "sso")
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["target"].as_str().unwrap().to_owned()))
        .collect();
    assert!(by_sso.contains(&("create_user".into(), "/api/v1/users".into())), "{log}");
    assert!(by_sso.contains(&("update_user".into(), "/api/v1/users/ann".into())), "{log}");
    // In no mapped group, and no default role: refused, linked or not.
    issuer.sign_in_as("sub-ann", "ann", &[]);
    let (status, page) = sso(&http, &server, "/").await.unwrap_err();
    assert_eq!(status, 403);
    assert!(page.contains("give no role here"), "{page}");
    // A renamed account at the provider is still ann: linked by subject, never by name.
    issuer.sign_in_as("sub-ann", "someone-else", &["devs"]);
    sso(&http, &server, "/").await.unwrap();
    assert_eq!(server.cli(&["users", "list", "--json"]).ok().json().as_array().unwrap().len(), 2);

    // An existing password user is never taken over by a name claim...
    server.cli(&["users", "create", "bob", "--role", "viewer", "--password-stdin"]).stdin("bob's long password").ok();
    issuer.sign_in_as("sub-bob", "bob", &["ops"]);
    let (status, page) = sso(&http, &server, "/").await.unwrap_err();
    assert_eq!(status, 409);
    assert!(page.contains("chanto users set-sso bob sub-bob"), "{page}");
    assert_eq!(server.cli(&["users", "list", "--json"]).ok().json()[1]["role"], "viewer");
    // ...until an admin links him; then his groups decide.
    let out = server.cli(&["users", "set-sso", "bob", "sub-bob"]).ok();
    assert!(out.stdout().contains("bob signs in by single sign-on as subject sub-bob"), "{}", out.report());
    let fails = server.cli(&["users", "set-sso", "ann", "sub-bob"]).fails();
    assert!(fails.stderr().contains("user bob has that single sign-on identity"), "{}", fails.report());
    sso(&http, &server, "/").await.unwrap();
    assert_eq!(server.cli(&["users", "list", "--json"]).ok().json()[1]["role"], "admin");
    server.cli(&["users", "set-sso", "bob", "--none"]).ok();
    assert_eq!(sso(&http, &server, "/").await.unwrap_err().0, 409, "unlinked again");

    // Every spoiled ID token is refused, and no session starts.
    issuer.sign_in_as("sub-ann", "ann", &["devs"]);
    for (spoil, why) in [
        (Spoil::WrongNonce, "nonce"),
        (Spoil::BadSignature, "signature"),
        (Spoil::WrongAudience, "audience"),
        (Spoil::Expired, "expired"),
        (Spoil::WrongIssuer, "issuer"),
    ] {
        issuer.spoil(spoil);
        let (status, page) = sso(&http, &server, "/").await.unwrap_err();
        assert_eq!(status, 403, "{spoil:?}: {page}");
        assert!(page.to_lowercase().contains(why), "{spoil:?}: {page}");
    }
    // The provider's refusal, hostile text rendered inert.
    issuer.refuse("access_denied", "<script>alert(1)</script> not allowed");
    let (status, page) = sso(&http, &server, "/").await.unwrap_err();
    assert_eq!(status, 403);
    assert!(
        page.contains("Example ID did not sign you in: access_denied") && page.contains("&#60;script&#62;alert(1)"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    // A name claim that is no user name, with markup.
    issuer.sign_in_as("sub-eve", "<img src=x onerror=alert(1)>", &["ops"]);
    let (status, page) = sso(&http, &server, "/").await.unwrap_err();
    assert_eq!(status, 403);
    assert!(page.contains("cannot name a user here") && !page.contains("<img src=x"), "{page}");

    // The callback without this browser's cookie, with another sign-in's
    // state, or replayed: refused.
    issuer.sign_in_as("sub-ann", "ann", &["devs"]);
    let start = |next: &'static str| {
        let http = http.clone();
        let api = server.api_url.clone();
        async move {
            let r = http.get(format!("{api}/login/oidc?next={next}")).send().await.unwrap();
            let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
            let r = http.get(r.headers()["location"].to_str().unwrap()).send().await.unwrap();
            (cookie, r.headers()["location"].to_str().unwrap().to_owned())
        }
    };
    let (cookie_a, back_a) = start("/").await;
    let (_cookie_b, back_b) = start("/").await;
    let r = http.get(&back_a).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("started in another browser"));
    let r = http.get(&back_b).header("cookie", &cookie_a).send().await.unwrap();
    assert_eq!(r.status(), 403, "another sign-in's state");
    assert!(r.text().await.unwrap().contains("not for the sign-in this browser started"));
    let r = http.get(&back_a).header("cookie", &cookie_a).send().await.unwrap();
    assert_eq!(r.status(), 303, "the right pair works once");
    let r = http.get(&back_a).header("cookie", &cookie_a).send().await.unwrap();
    assert_eq!(r.status(), 502, "a code works once at the provider");
    assert!(r.text().await.unwrap().contains("refused the code"));
    // A forged cookie, an oversized query, a foreign `next`.
    let r = http.get(&back_a).header("cookie", "chanto_oidc=eyJub3QiOiJ1cyJ9").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{}/login/oidc/callback?code={}&state=x", server.api_url, "c".repeat(10_000)))
        .header("cookie", &cookie_a)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = http.get(format!("{}/login/oidc?next=//evil.example/", server.api_url)).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let r = http.get(r.headers()["location"].to_str().unwrap()).send().await.unwrap();
    let r = http.get(r.headers()["location"].to_str().unwrap()).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/", "never another origin");

    // An API token cannot link anyone when single sign-on is off, and serve
    // refuses a plain-HTTP provider off loopback.
    let plain = tempfile::tempdir().unwrap();
    let other = Server::start(&plain.path().join("data"), &[]);
    other.cli(&["users", "create", "carol", "--role", "viewer"]).ok();
    let fails = other.cli(&["users", "set-sso", "carol", "sub-carol"]).fails();
    assert!(fails.stderr().contains("single sign-on is not configured"), "{}", fails.report());
    let r = http.get(format!("{}/login/oidc", other.api_url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let fails = Cli::new(&[
        "serve",
        "--data",
        plain.path().join("d2").to_str().unwrap(),
        "--oidc-issuer",
        "http://id.example.com",
        "--oidc-client-id",
        "x",
        "--api",
        "127.0.0.1:0",
        "--edge",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ])
    .fails();
    assert!(fails.stderr().contains("plain http is allowed on loopback only"), "{}", fails.report());
}

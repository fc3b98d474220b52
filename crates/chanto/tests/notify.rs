//! End to end: notifications. A real `chanto serve`, real HTTP receivers on loopback standing in for a webhook
//! consumer, Slack and Discord, a real SMTP server (aiosmtpd) with authentication, and fake GitHub and GitLab APIs
//! that follow their documented endpoints and keep comments like the real ones do.

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use util::git::{Repo, reachable_tempdir};
use util::receiver::{Answer, HeldPort, Receiver, Recorded};
use util::{Server, http_request, wait_for, write_tree};

const LIMIT: Duration = Duration::from_secs(30);

fn ok(body: &str) -> Answer {
    (200, vec![], body.to_owned())
}

fn start(data: &Path) -> Server {
    Server::start(data, &["--notify-backoff", "200ms", "--notify-attempts", "20", "--notify-timeout", "3s"])
}

fn deploy(server: &Server, site: &str, dir: &Path, message: &str) -> serde_json::Value {
    server.cli(&["deploy", dir.to_str().unwrap(), "--site", site, "-m", message, "--json"]).ok().json()
}

/// The deliveries of a site, newest first.
fn deliveries(server: &Server, site: &str) -> Vec<serde_json::Value> {
    let v = server.cli(&["notify", "deliveries", "--site", site, "--limit", "200", "--json"]).ok().json();
    v.as_array().unwrap().clone()
}

/// A real SMTP server that requires authentication.
struct Smtp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    fn start(user: &str, password: &str) -> Smtp {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/util/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .args([user, password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/test installs it)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the SMTP sink did not start: {line:?}"));
        Smtp { child, port, dir }
    }

    /// The messages received: (envelope, raw message).
    fn messages(&self) -> Vec<(serde_json::Value, String)> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let env = std::fs::read_to_string(p.with_extension("json")).unwrap();
                (serde_json::from_str(&env).unwrap(), std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn webhooks_slack_discord_and_email_are_delivered_signed_and_formatted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(&tmp.path().join("data"));
    server.cli(&["sites", "create", "blog"]).ok();
    let hook = Receiver::start(|_| ok("thanks"));
    let slack = Receiver::start(|_| ok("ok"));
    let discord = Receiver::start(|_| (204, vec![], String::new()));
    let smtp = Smtp::start("mailer", "s3cret-pass");

    // Subscriptions: the webhook gets everything; Slack only rollbacks; Discord only one branch; email failures
    // and activations.
    let w =
        server.cli(&["notify", "add", "webhook", "--site", "blog", "--url", &hook.url("/in"), "--json"]).ok().json();
    let secret = w["secret"].as_str().expect("a made secret is shown once").to_owned();
    assert!(secret.starts_with("whsec_"), "{w}");
    let slack_url = slack.url("/services/T000/B000/XXXXSECRET");
    let s = server
        .cli(&["notify", "add", "slack", "--site", "blog", "--url-env", "SLACK_URL", "--events", "deploy.rolled_back"])
        .env("SLACK_URL", &slack_url)
        .ok()
        .stdout();
    assert!(s.contains("slack →") && !s.contains("XXXXSECRET"), "the Slack URL's secret path is never shown: {s}");
    server
        .cli(&[
            "notify",
            "add",
            "discord",
            "--site",
            "blog",
            "--url",
            &discord.url("/api/webhooks/1/tok"),
            "--branch",
            "feat/*",
        ])
        .ok();
    let port = smtp.port.to_string();
    server
        .cli(&[
            "notify",
            "add",
            "email",
            "--site",
            "blog",
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &port,
            "--smtp-security",
            "none",
            "--smtp-user",
            "mailer",
            "--smtp-password-env",
            "SMTP_PASS",
            "--from",
            "chanto@example.com",
            "--to",
            "team@example.com",
            "--to",
            "ops@example.com",
            "--events",
            "deploy.activated",
        ])
        .env("SMTP_PASS", "s3cret-pass")
        .ok();
    let list = server.cli(&["notify", "list", "--site", "blog", "--json"]).ok();
    let text = list.stdout();
    for secret_text in ["XXXXSECRET", "s3cret-pass", "/api/webhooks/1/tok", &secret] {
        assert!(!text.contains(secret_text), "{secret_text} leaked in: {text}");
    }
    assert_eq!(list.json().as_array().unwrap().len(), 4);

    // A deploy: ready and activated; then a second, and a rollback.
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "<h1>one</h1>")]);
    let d1 = deploy(&server, "blog", &site, "first <b>post</b>");
    write_tree(&site, &[("index.html", "<h1>two</h1>")]);
    deploy(&server, "blog", &site, "second");
    server.cli(&["rollback", "--site", "blog"]).ok();

    // The webhook: every event in order, each signed over timestamp and body.
    let got = hook.wait("5 webhook deliveries", LIMIT, |r| r.len() >= 5);
    let kinds: Vec<String> = got.iter().map(|r| r.json()["event"]["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["deploy.ready", "deploy.activated", "deploy.ready", "deploy.activated", "deploy.rolled_back"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for r in &got {
        let headers = |name: &str| r.header(name).map(str::to_owned);
        chanto_notify::verify(secret.as_bytes(), &headers, &r.body, now, 300)
            .unwrap_or_else(|e| panic!("signature of {}: {e}", r.json()));
        assert!(chanto_notify::verify(b"another-secret-entirely", &headers, &r.body, now, 300).is_err());
        assert!(chanto_notify::verify(secret.as_bytes(), &headers, &r.body, now + 3600, 300).is_err(), "a replay");
        assert_eq!(r.header("x-chanto-event"), r.json()["event"]["kind"].as_str());
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let first = got[1].json();
    assert_eq!(first["version"], 1);
    assert_eq!(first["event"]["site"], "blog");
    assert_eq!(first["event"]["deploy_id"], d1["deploy"]["id"]);
    assert_eq!(first["event"]["message"], "first <b>post</b>");
    assert!(first["event"]["urls"]["branch"].as_str().unwrap().starts_with("http://blog.localhost:"), "{first}");
    let ids: std::collections::HashSet<_> = got.iter().map(|r| r.json()["event"]["id"].clone()).collect();
    assert_eq!(ids.len(), 5, "each event has its own id");
    // The payload follows the published JSON Schema's required fields.
    let schema =
        http_request(&server.api_url_addr(), "GET", "127.0.0.1", "/api/v1/notifications/schema.json", &[], b"")
            .unwrap();
    assert_eq!(schema.status, 200);
    let schema: serde_json::Value = serde_json::from_slice(&schema.body).unwrap();
    for field in schema["required"].as_array().unwrap() {
        assert!(first.get(field.as_str().unwrap()).is_some(), "payload lacks {field}");
    }

    // Slack: only the rollback, formatted for Slack.
    let s = slack.wait("the rollback in Slack", LIMIT, |r| !r.is_empty());
    assert_eq!(s[0].path, "/services/T000/B000/XXXXSECRET");
    let body = s[0].json();
    assert!(body["text"].as_str().unwrap().contains("blog"), "{body}");
    // Slack's attachment layout: a colour bar, a fallback, and blocks whose
    // first section names the event, the site and the branch.
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["fallback"], body["text"], "{body}");
    assert!(attachment["color"].as_str().is_some_and(|c| !c.is_empty()), "{body}");
    assert_eq!(attachment["blocks"][0]["type"], "section", "{body}");
    let heading = attachment["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(heading.contains("Deploy rolled back") && heading.contains("blog / main"), "{body}");

    // Email: the two activations, authenticated, multipart with text and HTML.
    let mails = wait_for("two emails", LIMIT, || {
        let m = smtp.messages();
        (m.len() >= 2).then_some(m)
    });
    assert_eq!(mails.len(), 2);
    let (envelope, raw) = &mails[0];
    assert_eq!(envelope["from"], "chanto@example.com");
    assert_eq!(envelope["to"], serde_json::json!(["team@example.com", "ops@example.com"]));
    assert_eq!(envelope["authenticated"], true);
    assert!(raw.contains("Subject: [chanto]"), "{raw}");
    assert!(raw.contains("multipart/alternative") && raw.contains("text/html") && raw.contains("text/plain"), "{raw}");
    // Quoted-printable: join its soft line breaks.
    let html = raw[raw.find("text/html").unwrap()..].replace("=\r\n", "").replace("=\n", "");
    assert!(html.contains("&lt;b&gt;post&lt;/b&gt;") && !html.contains("<b>post"), "escaped in HTML: {raw}");

    // The delivery log: every delivery delivered on its first attempt.
    let log = wait_for("8 deliveries recorded", LIMIT, || {
        let log = deliveries(&server, "blog");
        (log.len() == 5 + 1 + 2 && log.iter().all(|d| d["state"] == "delivered")).then_some(log)
    });
    assert!(log.iter().all(|d| d["attempts"] == 1), "{log:#?}");
    // Every delivery is recorded as delivered, so the receivers' counts are final.
    assert_eq!(slack.requests().len(), 1, "Slack subscribed to rollbacks only");
    // Discord: its branch filter matched nothing.
    assert!(discord.requests().is_empty());
    let one = server.cli(&["notify", "deliveries", "--site", "blog", &log[0]["id"].to_string()]).ok().stdout();
    assert!(one.contains("#1") && one.contains("delivered"), "{one}");

    // `notify test` sends a sample and shows the receiver's answer.
    let id = w["id"].as_str().unwrap();
    let t = server.cli(&["notify", "test", "--site", "blog", id]).ok().stdout();
    assert!(t.contains("Delivered (200") && t.contains("thanks"), "{t}");
    let last = hook.requests().pop().unwrap();
    assert!(last.json()["event"]["id"].as_str().unwrap().starts_with("evt_test_"));
    // Removing a subscription stops its deliveries.
    server.cli(&["notify", "remove", "--site", "blog", id]).ok();
    server.cli(&["notify", "remove", "--site", "blog", id]).fails();
    let before = hook.requests().len();
    server.cli(&["rollback", "--site", "blog"]).fails(); // nothing further back
    deploy(&server, "blog", &site, "third");
    wait_for("the third deploy's email", LIMIT, || (smtp.messages().len() == 3).then_some(()));
    assert_eq!(hook.requests().len(), before);
}

#[test]
fn a_receiver_that_is_down_gets_retries_a_4xx_is_not_retried_and_a_restart_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&data);
    server.cli(&["sites", "create", "app"]).ok();
    // A port held but not listening: connections are refused until it comes up.
    let down = HeldPort::new();
    let down_addr = down.addr();
    let refusing = Receiver::start(|_| (410, vec![], "gone".into()));
    let slow_down = Arc::new(Mutex::new(2u32));
    let limited = {
        let left = slow_down.clone();
        Receiver::start(move |_| {
            let mut left = left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return (429, vec![("retry-after", "1".into())], "slow down".into());
            }
            ok("fine")
        })
    };
    let add = |url: String| {
        server.cli(&["notify", "add", "webhook", "--site", "app", "--url", &url, "--json"]).ok().json()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let down_sub = add(format!("http://{down_addr}/hook"));
    let refused_sub = add(refusing.url("/hook"));
    let limited_sub = add(limited.url("/hook"));
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "v1")]);
    deploy(&server, "app", &site, "v1");

    // 4xx: one attempt, dead, with the reason and the fix.
    let by_sub = |sub: &str| -> Vec<serde_json::Value> {
        deliveries(&server, "app").into_iter().filter(|d| d["subscription"] == sub).collect()
    };
    wait_for("the refused delivery to be dead", LIMIT, || {
        by_sub(&refused_sub).iter().all(|d| d["state"] == "dead").then_some(())
    });
    let refused = by_sub(&refused_sub);
    assert!(refused.iter().all(|d| d["attempts"] == 1), "{refused:#?}");
    assert!(refused[0]["last_error"].as_str().unwrap().contains("HTTP 410"), "{refused:#?}");
    assert_eq!(refusing.requests().len(), 2, "ready and activated, once each");
    // After fixing the receiver, a dead delivery can be sent again, as a new delivery of the same event.
    let dead_id = refused[0]["id"].to_string();
    let again = server.cli(&["notify", "redeliver", "--site", "app", &dead_id, "--json"]).ok().json();
    assert_ne!(again["id"].to_string(), dead_id);
    assert_eq!(again["event_id"], refused[0]["event_id"]);
    let r = refusing.wait("the redelivery", LIMIT, |r| r.len() == 3);
    assert_eq!(r[2].json()["event"]["id"], r[1].json()["event"]["id"], "the same event, so receivers can drop it");
    let e = server.cli(&["notify", "redeliver", "--site", "app", "424242"]).fails().stderr();
    assert!(e.contains("delivery 424242"), "{e}");
    // 429 with Retry-After: 1 s is honoured, then delivered.
    wait_for("the rate-limited deliveries", LIMIT, || {
        by_sub(&limited_sub).iter().all(|d| d["state"] == "delivered").then_some(())
    });
    let first = &by_sub(&limited_sub)[1];
    let detail = server.cli(&["notify", "deliveries", "--site", "app", "--json", &first["id"].to_string()]).ok().json();
    let attempts = detail["attempt_log"].as_array().unwrap();
    assert_eq!((attempts[0]["status"].as_u64(), attempts[1]["status"].as_u64()), (Some(429), Some(429)), "{detail:#}");
    assert!(attempts[0]["outcome"].as_str().unwrap().starts_with("retry in 1s"), "{detail:#}");
    // Retry-After: 1 was honoured: by the server's own record, the next
    // attempt started at least a second after the one that was told to wait.
    let gap = attempts[1]["at"].as_i64().unwrap() - attempts[0]["at"].as_i64().unwrap();
    assert!(gap >= 1000, "the second attempt came {gap} ms after the first: {detail:#}");
    assert_eq!(attempts.last().unwrap()["outcome"], "delivered");
    // Down: retried with backoff, still pending.
    wait_for("retries to the receiver that is down", LIMIT, || {
        by_sub(&down_sub).iter().any(|d| d["attempts"].as_u64() >= Some(2)).then_some(())
    });
    assert!(by_sub(&down_sub).iter().all(|d| d["state"] == "pending"));

    // The server stops with deliveries pending; the receiver comes up; the new server delivers each event once.
    server.terminate();
    let up = Receiver::start_held(down, |_| ok("back"));
    let again = start(&data);
    // Once the log records both as delivered, nothing more will be sent.
    let sub = wait_for("both pending deliveries delivered after the restart", LIMIT, || {
        let sub: Vec<_> = deliveries(&again, "app").into_iter().filter(|d| d["subscription"] == down_sub).collect();
        (sub.len() == 2 && sub.iter().all(|d| d["state"] == "delivered")).then_some(sub)
    });
    let got = up.requests();
    let kinds: Vec<String> = got.iter().map(|r| r.json()["event"]["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["deploy.ready", "deploy.activated"], "each event exactly once, in order: {sub:#?}");
    drop(again);
}

/// A fake forge API: commit statuses, and pull request comments kept like the real forge keeps them. It can be told
/// to lose the answer to the next comment creation (the comment is made, the reply is a 502), as a proxy dying
/// mid-request would.
#[derive(Default)]
struct Forge {
    statuses: Vec<(String, serde_json::Value)>,
    /// id → (pull request, body, author).
    comments: BTreeMap<u64, (u64, String, String)>,
    next_id: u64,
    creates: u32,
    edits: u32,
    lose_next_create: bool,
    fail_everything: bool,
}

/// The account the token belongs to.
const BOT: &str = "chanto-bot";

/// `forge`: "github" (API under /api/v3, as GitHub Enterprise), "gitlab" (/api/v4) or "gitea" (/api/v1).
fn forge_api(state: Arc<Mutex<Forge>>, forge: &'static str) -> impl Fn(&Recorded) -> Answer + Send + Sync + 'static {
    let gitlab = forge == "gitlab";
    move |r: &Recorded| {
        let mut f = state.lock().unwrap();
        let (auth_ok, base) = match forge {
            "gitlab" => (r.header("private-token") == Some("glpat-token"), "/api/v4"),
            "gitea" => (r.header("authorization") == Some("token gitea-token"), "/api/v1"),
            _ => (r.header("authorization") == Some("Bearer ghp-token"), "/api/v3"),
        };
        if !auth_ok {
            return (401, vec![], r#"{"message":"Bad credentials"}"#.into());
        }
        if f.fail_everything {
            return (503, vec![], "maintenance".into());
        }
        let path = r.path.split('?').next().unwrap();
        let path = path.strip_prefix(base).expect("the configured API base");
        let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // GitHub and Gitea name a comment's author `user.login`, GitLab `author.username`.
        let account = |name: &str| {
            if gitlab { serde_json::json!({ "username": name }) } else { serde_json::json!({ "login": name }) }
        };
        let who = if gitlab { "author" } else { "user" };
        let comment_json =
            |id: u64, body: &str, by: &str| serde_json::json!({ "id": id, "body": body, who: account(by) });
        match (r.method.as_str(), seg.as_slice()) {
            ("POST", ["repos", _, _, "statuses", sha]) | ("POST", ["projects", _, "statuses", sha]) => {
                f.statuses.push((sha.to_string(), r.json()));
                (201, vec![], "{}".into())
            }
            ("GET", ["repos", _, _, "issues", n, "comments"])
            | ("GET", ["projects", _, "merge_requests", n, "notes"]) => {
                let n: u64 = n.parse().unwrap();
                let list: Vec<_> = f
                    .comments
                    .iter()
                    .filter(|(_, (pr, _, _))| *pr == n)
                    .map(|(id, (_, b, by))| comment_json(*id, b, by))
                    .collect();
                (200, vec![], serde_json::Value::Array(list).to_string())
            }
            ("POST", ["repos", _, _, "issues", n, "comments"])
            | ("POST", ["projects", _, "merge_requests", n, "notes"]) => {
                f.next_id += 1;
                let id = 1000 + f.next_id;
                let body = r.json()["body"].as_str().unwrap().to_owned();
                f.comments.insert(id, (n.parse().unwrap(), body.clone(), BOT.into()));
                f.creates += 1;
                if std::mem::take(&mut f.lose_next_create) {
                    return (502, vec![], "bad gateway".into());
                }
                (201, vec![], comment_json(id, &body, BOT).to_string())
            }
            ("PATCH", ["repos", _, _, "issues", "comments", id])
            | ("PUT", ["projects", _, "merge_requests", _, "notes", id]) => {
                let id: u64 = id.parse().unwrap();
                let body = r.json()["body"].as_str().unwrap().to_owned();
                match f.comments.get_mut(&id) {
                    Some(c) if c.2 != BOT => (403, vec![], r#"{"message":"Forbidden"}"#.into()),
                    Some(c) => {
                        c.1 = body.clone();
                        f.edits += 1;
                        (200, vec![], comment_json(id, &body, BOT).to_string())
                    }
                    None => (404, vec![], r#"{"message":"Not Found"}"#.into()),
                }
            }
            ("GET", ["user"]) => (200, vec![], account(BOT).to_string()),
            ("GET", ["repos", _, _]) | ("GET", ["projects", _]) => {
                (200, vec![], r#"{"id": 1, "full_name": "ada/shop"}"#.into())
            }
            _ => (404, vec![], format!(r#"{{"message":"no route {} {}"}}"#, r.method, r.path)),
        }
    }
}

fn signed_github(
    server: &Server,
    site: &str,
    secret: &str,
    event: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let body = serde_json::to_vec(body).unwrap();
    let sig = format!("sha256={}", chanto_forge::sign_hmac_sha256_hex(secret.as_bytes(), &body));
    let r = http_request(
        &server.api_url_addr(),
        "POST",
        "127.0.0.1",
        &format!("/api/v1/webhooks/github/{site}"),
        &[("X-GitHub-Event", event), ("X-Hub-Signature-256", &sig), ("Content-Type", "application/json")],
        &body,
    )
    .unwrap();
    assert!(matches!(r.status, 200 | 202), "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn wait_build(server: &Server, id: &str) -> serde_json::Value {
    wait_for(&format!("build {id}"), Duration::from_secs(60), || {
        let b = server.cli(&["builds", "show", id, "--json"]).ok().json();
        (!matches!(b["state"].as_str(), Some("queued" | "running"))).then_some(b)
    })
}

fn pull_request(action: &str, number: u64, branch: &str, sha: &str) -> serde_json::Value {
    serde_json::json!({
        "action": action, "number": number,
        "pull_request": {
            "number": number, "title": "New checkout", "state": "open", "merged": false,
            "user": { "login": "ada" },
            "head": { "ref": branch, "sha": sha, "repo": { "full_name": "ada/shop", "fork": false } },
            "base": { "ref": "main", "sha": "0000000000000000000000000000000000000000", "repo": { "full_name": "ada/shop" } }
        },
        "repository": { "full_name": "ada/shop", "clone_url": "https://github.com/ada/shop.git" }
    })
}

#[test]
fn github_gets_commit_statuses_and_exactly_one_living_pull_request_comment() {
    let tmp = reachable_tempdir();
    let server = start(&tmp.path().join("data"));
    let state = Arc::new(Mutex::new(Forge::default()));
    let api = Receiver::start(forge_api(state.clone(), "github"));
    let repo = Repo::new(&tmp.path().join("repo"));
    server.cli(&["sites", "create", "shop"]).ok();
    let chanto_toml = "[build]\ncommand = \"mkdir -p out && cp *.html out/ && echo '/* X-Frame-Options: DENY' > out/_headers\"\npublish = \"out\"\n";
    let main =
        repo.commit("main", &[("chanto.toml", chanto_toml), ("index.html", "home"), ("about.html", "about")], "init");
    let url = repo.url();
    let v = server.cli(&["git", "connect", &url, "--site", "shop", "--json"]).ok().json();
    let secret = v["webhook_secret"].as_str().unwrap().to_owned();
    // A file:// repository names no owner/name: the subscription must say which.
    let e = server
        .cli(&["notify", "add", "github", "--site", "shop", "--token-env", "GH", "--api-url", &api.url("/api/v3")])
        .env("GH", "ghp-token")
        .fails()
        .stderr();
    assert!(e.contains("repository"), "{e}");
    let sub = server
        .cli(&[
            "notify",
            "add",
            "github",
            "--site",
            "shop",
            "--token-env",
            "GH",
            "--api-url",
            &api.url("/api/v3"),
            "--repository",
            "ada/shop",
            "--json",
        ])
        .env("GH", "ghp-token")
        .ok()
        .json();
    assert!(!sub.to_string().contains("ghp-token"));
    let t = server.cli(&["notify", "test", "--site", "shop", sub["id"].as_str().unwrap()]).ok().stdout();
    // Previews, for a webhook that wants only those.
    let previews = Receiver::start(|_| ok(""));
    server
        .cli(&[
            "notify",
            "add",
            "webhook",
            "--site",
            "shop",
            "--url",
            &previews.url("/p"),
            "--events",
            "preview.ready,preview.removed",
        ])
        .ok();
    assert!(t.contains("Delivered (200"), "the token reads the repository: {t}");

    // Production: a build of main, with its commit statuses.
    let b = server.cli(&["builds", "start", "--site", "shop", "--json"]).ok().json();
    assert_eq!(wait_build(&server, b["id"].as_str().unwrap())["state"], "succeeded");
    let statuses = |sha: &str| -> Vec<String> {
        state
            .lock()
            .unwrap()
            .statuses
            .iter()
            .filter(|(s, _)| s == sha)
            .map(|(_, v)| v["state"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_for("main's statuses", LIMIT, || {
        (statuses(&main).last().map(String::as_str) == Some("success")).then_some(())
    });
    // A manual build learns its commit when it starts: no status while queued, then pending, then success.
    assert_eq!(statuses(&main), ["pending", "success"]);
    let last = state.lock().unwrap().statuses.last().unwrap().1.clone();
    assert_eq!(last["context"], "chanto/shop");
    assert!(last["target_url"].as_str().unwrap().starts_with("http://"), "{last}");

    // A pull request: statuses on its head, and one comment with the preview and the plan. The forge loses the
    // answer to the comment's creation, so chanto retries: it must find its comment, not post a second one.
    {
        // Someone else posts a comment that starts with chanto's marker: chanto must neither edit it nor take it for
        // its own.
        let mut f = state.lock().unwrap();
        f.lose_next_create = true;
        let forged = format!("{}\n**Preview ready** at http://evil.example/", chanto_notify::comment_marker("shop"));
        f.comments.insert(1, (7, forged, "mallory".into()));
    }
    let c1 = repo.commit("checkout", &[("index.html", "home v2"), ("pay.html", "pay")], "Add checkout");
    util::git::git(&repo.bare, &["update-ref", "refs/pull/7/head", &c1]);
    let r = signed_github(&server, "shop", &secret, "pull_request", &pull_request("opened", 7, "checkout", &c1));
    let b1 = wait_build(&server, r["build"].as_str().unwrap());
    assert_eq!(b1["state"], "succeeded", "{b1}");
    wait_for("the PR comment", LIMIT, || {
        let done = statuses(&c1).last().map(String::as_str) == Some("success");
        let f = state.lock().unwrap();
        (done && f.comments.values().any(|(_, b, _)| b.contains("pr-7--shop") && b.contains("Deploy plan")))
            .then_some(())
    });
    {
        let f = state.lock().unwrap();
        let mine: Vec<_> = f.comments.values().filter(|c| c.2 == BOT).collect();
        assert_eq!(mine.len(), 1, "one comment of chanto's: {:?}", f.comments);
        assert!(f.comments[&1].1.contains("evil.example"), "the forged comment is untouched");
        let body = &mine[0].1;
        assert!(body.starts_with(&chanto_notify::comment_marker("shop")), "{body}");
        assert!(body.contains("Deploy plan"), "{body}");
        assert!(body.contains("pay.html") && body.contains("index.html"), "added and changed files: {body}");
        assert!(body.contains("1 added") && body.contains("1 changed"), "{body}");
    }
    // A new push to the pull request edits the same comment.
    let c2 = repo.commit("checkout", &[("pay.html", "pay v2")], "Fix pay");
    util::git::git(&repo.bare, &["update-ref", "refs/pull/7/head", &c2]);
    let r = signed_github(&server, "shop", &secret, "pull_request", &pull_request("synchronize", 7, "checkout", &c2));
    assert_eq!(wait_build(&server, r["build"].as_str().unwrap())["state"], "succeeded");
    wait_for("the comment to show the second push", LIMIT, || {
        let f = state.lock().unwrap();
        f.comments.values().any(|(_, b, by)| by == BOT && b.contains(&c2[..7])).then_some(())
    });
    wait_for("the second push's statuses", LIMIT, || {
        (statuses(&c2).last().map(String::as_str) == Some("success")).then_some(())
    });
    let f = state.lock().unwrap();
    assert_eq!(f.comments.len(), 2, "still one comment of chanto's, beside the forged one");
    assert_eq!(f.creates, 1, "created once");
    assert!(f.edits >= 2, "edited in place on every push (building, then ready): {}", f.edits);
    drop(f);
    let log = deliveries(&server, "shop");
    assert!(log.iter().all(|d| d["state"] != "dead"), "{log:#?}");

    // Closing the pull request removes its preview.
    let closed = signed_github(&server, "shop", &secret, "pull_request", &pull_request("closed", 7, "checkout", &c2));
    assert!(closed.get("build").is_none_or(|b| b.is_null()), "{closed}");
    let got =
        previews.wait("preview.removed", LIMIT, |r| r.iter().any(|r| r.json()["event"]["kind"] == "preview.removed"));
    let kinds: Vec<_> = got.iter().map(|r| r.json()["event"]["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["preview.ready", "preview.ready", "preview.removed"], "one ready per push");
    let removed = got[2].json();
    assert_eq!(
        (removed["event"]["branch"].as_str(), removed["event"]["pull_request"].as_u64()),
        (Some("pr-7"), Some(7))
    );
    assert_eq!(
        got[1].json()["event"]["commit"].as_str(),
        Some(c2.as_str()),
        "a preview event names its build's commit"
    );
}

#[test]
fn gitlab_statuses_and_note_survive_a_crash_with_deliveries_pending() {
    let tmp = reachable_tempdir();
    let data = tmp.path().join("data");
    let server = start(&data);
    let state = Arc::new(Mutex::new(Forge { fail_everything: true, ..Forge::default() }));
    let api = Receiver::start(forge_api(state.clone(), "gitlab"));
    let repo = Repo::new(&tmp.path().join("repo"));
    server.cli(&["sites", "create", "docs"]).ok();
    repo.commit(
        "main",
        &[
            ("chanto.toml", "[build]\ncommand = \"mkdir -p out && cp *.html out/\"\npublish = \"out\"\n"),
            ("index.html", "x"),
        ],
        "init",
    );
    let url = repo.url();
    server.cli(&["git", "connect", &url, "--site", "docs"]).ok();
    server
        .cli(&[
            "notify",
            "add",
            "gitlab",
            "--site",
            "docs",
            "--token-env",
            "GL",
            "--api-url",
            &api.url("/api/v4"),
            "--repository",
            "group/docs",
        ])
        .env("GL", "glpat-token")
        .ok();
    let c = repo.commit("feature", &[("index.html", "y")], "feature");
    util::git::git(&repo.bare, &["update-ref", "refs/merge-requests/3/head", &c]);
    let secret = server
        .cli(&["git", "connect", &url, "--site", "docs", "--rotate-webhook-secret", "--json"])
        .ok()
        .json()["webhook_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let mr = serde_json::to_vec(&serde_json::json!({
        "object_kind": "merge_request", "user": { "username": "ada" }, "project": { "id": 1 },
        "object_attributes": {
            "iid": 3, "action": "open", "state": "opened", "title": "Feature",
            "source_branch": "feature", "target_branch": "main", "source_project_id": 1, "target_project_id": 1,
            "last_commit": { "id": c, "message": "feature" }
        }
    }))
    .unwrap();
    let r = http_request(
        &server.api_url_addr(),
        "POST",
        "127.0.0.1",
        "/api/v1/webhooks/gitlab/docs",
        &[("X-Gitlab-Event", "Merge Request Hook"), ("X-Gitlab-Token", &secret)],
        &mr,
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["build"].as_str().unwrap().to_owned();
    assert_eq!(wait_build(&server, &id)["state"], "succeeded");
    // The forge is down: deliveries wait with retries. Then the server dies without a chance to clean up.
    wait_for("retries against the down forge", LIMIT, || {
        deliveries(&server, "docs").iter().any(|d| d["attempts"].as_u64() >= Some(1)).then_some(())
    });
    server.kill();
    state.lock().unwrap().fail_everything = false;
    let again = start(&data);
    wait_for("the note and the final status", LIMIT, || {
        let f = state.lock().unwrap();
        let done = f.statuses.last().is_some_and(|(_, s)| s["state"] == "success") && !f.comments.is_empty();
        let pending = deliveries(&again, "docs").iter().any(|d| d["state"] == "pending");
        (done && !pending).then_some(())
    });
    let f = state.lock().unwrap();
    let states: Vec<_> = f
        .statuses
        .iter()
        .map(|(sha, s)| (sha.as_str(), s["state"].as_str().unwrap(), s["name"].as_str().unwrap()))
        .collect();
    assert!(states.iter().all(|(sha, _, name)| *sha == c && *name == "chanto/docs (preview)"), "{states:?}");
    assert_eq!(states.last().unwrap().1, "success", "{states:?}");
    assert_eq!(f.comments.len(), 1, "one merge request note: {:?}", f.comments);
    assert_eq!(f.creates, 1);
    let (mr_iid, body, _) = f.comments.values().next().unwrap();
    assert_eq!(*mr_iid, 3);
    assert!(body.contains("pr-3--docs"), "{body}");
}

#[test]
fn gitea_gets_commit_statuses_with_its_own_token_scheme() {
    let tmp = reachable_tempdir();
    let server = start(&tmp.path().join("data"));
    let state = Arc::new(Mutex::new(Forge::default()));
    let api = Receiver::start(forge_api(state.clone(), "gitea"));
    let repo = Repo::new(&tmp.path().join("repo"));
    server.cli(&["sites", "create", "wiki"]).ok();
    let sha = repo.commit("main", &[("chanto.toml", "[build]\ncommand = \"exit 1\"\n")], "broken");
    server.cli(&["git", "connect", &repo.url(), "--site", "wiki"]).ok();
    // Gitea has no default API URL.
    let e = server
        .cli(&["notify", "add", "gitea", "--site", "wiki", "--token-env", "T", "--repository", "ada/wiki"])
        .env("T", "gitea-token")
        .fails();
    assert!(e.stderr().contains("api_url"), "{}", e.stderr());
    let args =
        ["notify", "add", "gitea", "--site", "wiki", "--token-env", "T", "--repository", "ada/wiki", "--api-url"];
    let url = api.url("/api/v1/");
    server.cli(&[&args[..], &[url.as_str(), "--context", "ci/chanto"]].concat()).env("T", "gitea-token").ok();
    let b = server.cli(&["builds", "start", "--site", "wiki", "--json"]).ok().json();
    assert_eq!(wait_build(&server, b["id"].as_str().unwrap())["state"], "failed");
    wait_for("the failure status", LIMIT, || {
        state.lock().unwrap().statuses.last().is_some_and(|(_, s)| s["state"] == "failure").then_some(())
    });
    let f = state.lock().unwrap();
    let got: Vec<_> =
        f.statuses.iter().map(|(c, s)| (c.as_str(), s["state"].as_str(), s["context"].as_str())).collect();
    assert_eq!(
        got,
        [(sha.as_str(), Some("pending"), Some("ci/chanto")), (sha.as_str(), Some("failure"), Some("ci/chanto"))]
    );
    let failure = &f.statuses[1].1;
    assert!(failure["target_url"].as_str().unwrap().contains("/log"), "a failure links to the log: {failure}");
}

#[test]
fn badges_show_a_branch_s_latest_build() {
    let tmp = reachable_tempdir();
    let server = start(&tmp.path().join("data"));
    let badge = |path: &str| http_request(&server.api_url_addr(), "GET", "127.0.0.1", path, &[], b"").unwrap();
    let unknown = badge("/badge/nope/main.svg");
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.header("content-type"), Some("image/svg+xml; charset=utf-8"));
    assert!(unknown.text().contains("unknown"));
    for hostile in
        ["/badge/%3Cscript%3E/main.svg", "/badge/a/..%2F..%2Fetc.svg", &format!("/badge/a/{}.svg", "b".repeat(5000))]
    {
        let r = badge(hostile);
        assert!(r.status == 200 || r.status == 404 || r.status == 414, "{hostile}: {}", r.status);
        assert!(!r.text().contains("<script"), "{hostile}");
    }
    assert_eq!(badge("/badge/nope/main.png").status, 404);

    server.cli(&["sites", "create", "web"]).ok();
    let repo = Repo::new(&tmp.path().join("repo"));
    repo.commit("main", &[("chanto.toml", "[build]\ncommand = \"exit 3\"\n")], "broken");
    server.cli(&["git", "connect", &repo.url(), "--site", "web"]).ok();
    let b = server.cli(&["builds", "start", "--site", "web", "--json"]).ok().json();
    assert_eq!(wait_build(&server, b["id"].as_str().unwrap())["state"], "failed");
    assert!(badge("/badge/web/main.svg").text().contains("failing"));
    repo.commit(
        "main",
        &[("chanto.toml", "[build]\ncommand = \"mkdir -p o && echo ok > o/index.html\"\npublish = \"o\"\n")],
        "fixed",
    );
    let b = server.cli(&["builds", "start", "--site", "web", "--json"]).ok().json();
    assert_eq!(wait_build(&server, b["id"].as_str().unwrap())["state"], "succeeded");
    let svg = badge("/badge/web/main.svg");
    assert!(svg.text().contains("passing"), "{}", svg.text());
    assert_eq!(svg.header("cache-control"), Some("no-cache, max-age=0"));
}

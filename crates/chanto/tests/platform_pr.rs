//! End to end: a *platform config* site (issue 19, "Pull requests that change platform config"). A real git
//! repository holds `chanto.platform.toml`; signed GitHub webhooks build its pull requests, whose plan chanto keeps
//! as one living comment on a fake GitHub API (with the commit statuses), and a push to the production branch (the
//! merge) applies it. Secrets resolve from the server's own environment, `CHANTO_PLATFORM_*` only.

mod util;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use util::git::{Repo, git, reachable_tempdir};
use util::receiver::{Answer, Receiver, Recorded};
use util::{Server, http_request, wait_for};

const LIMIT: Duration = Duration::from_secs(30);
const BOT: &str = "chanto-bot";
const GH_TOKEN: &str = "ghp-token";
const DOCS_KEY: &str = "docs-key-7f3a9c2e51";
const AWS_SECRET: &str = "aws-leak-0d8e4b6a93";

/// A fake GitHub API: commit statuses, and pull request comments kept like GitHub keeps them.
#[derive(Default)]
struct Forge {
    statuses: Vec<(String, serde_json::Value)>,
    /// id → (pull request, body, author).
    comments: BTreeMap<u64, (u64, String, String)>,
    next_id: u64,
    creates: u32,
}

fn forge_api(state: Arc<Mutex<Forge>>) -> impl Fn(&Recorded) -> Answer + Send + Sync + 'static {
    move |r: &Recorded| {
        let mut f = state.lock().unwrap();
        if r.header("authorization") != Some(format!("Bearer {GH_TOKEN}").as_str()) {
            return (401, vec![], r#"{"message":"Bad credentials"}"#.into());
        }
        let path = r.path.split('?').next().unwrap();
        let path = path.strip_prefix("/api/v3").expect("the configured API base");
        let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let comment_json = |id: u64, body: &str, by: &str| {
            serde_json::json!({ "id": id, "body": body, "user": { "login": by } }).to_string()
        };
        match (r.method.as_str(), seg.as_slice()) {
            ("POST", ["repos", _, _, "statuses", sha]) => {
                f.statuses.push((sha.to_string(), r.json()));
                (201, vec![], "{}".into())
            }
            ("GET", ["repos", _, _, "issues", n, "comments"]) => {
                let n: u64 = n.parse().unwrap();
                let list: Vec<serde_json::Value> = f
                    .comments
                    .iter()
                    .filter(|(_, (pr, _, _))| *pr == n)
                    .map(|(id, (_, b, by))| serde_json::from_str(&comment_json(*id, b, by)).unwrap())
                    .collect();
                (200, vec![], serde_json::Value::Array(list).to_string())
            }
            ("POST", ["repos", _, _, "issues", n, "comments"]) => {
                f.next_id += 1;
                let id = 1000 + f.next_id;
                let body = r.json()["body"].as_str().unwrap().to_owned();
                f.comments.insert(id, (n.parse().unwrap(), body.clone(), BOT.into()));
                f.creates += 1;
                (201, vec![], comment_json(id, &body, BOT))
            }
            ("PATCH", ["repos", _, _, "issues", "comments", id]) => {
                let id: u64 = id.parse().unwrap();
                let body = r.json()["body"].as_str().unwrap().to_owned();
                match f.comments.get_mut(&id) {
                    Some(c) => {
                        c.1 = body.clone();
                        (200, vec![], comment_json(id, &body, BOT))
                    }
                    None => (404, vec![], r#"{"message":"Not Found"}"#.into()),
                }
            }
            ("GET", ["user"]) => (200, vec![], serde_json::json!({ "login": BOT }).to_string()),
            ("GET", ["repos", _, _]) => (200, vec![], r#"{"id": 1, "full_name": "ada/infra"}"#.into()),
            _ => (404, vec![], format!(r#"{{"message":"no route {} {}"}}"#, r.method, r.path)),
        }
    }
}

fn signed_github(server: &Server, secret: &str, event: &str, body: &serde_json::Value) -> serde_json::Value {
    let body = serde_json::to_vec(body).unwrap();
    let sig = format!("sha256={}", chanto_forge::sign_hmac_sha256_hex(secret.as_bytes(), &body));
    let r = http_request(
        &server.api_url_addr(),
        "POST",
        "127.0.0.1",
        "/api/v1/webhooks/github/infra",
        &[("X-GitHub-Event", event), ("X-Hub-Signature-256", &sig), ("Content-Type", "application/json")],
        &body,
    )
    .unwrap();
    assert!(matches!(r.status, 200 | 202), "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn pull_request(action: &str, number: u64, branch: &str, sha: &str) -> serde_json::Value {
    serde_json::json!({
        "action": action, "number": number,
        "pull_request": {
            "number": number, "title": "Platform change", "state": "open", "merged": false,
            "user": { "login": "ada" },
            "head": { "ref": branch, "sha": sha, "repo": { "full_name": "ada/infra", "fork": false } },
            "base": { "ref": "main", "sha": "0000000000000000000000000000000000000000", "repo": { "full_name": "ada/infra" } }
        },
        "repository": { "full_name": "ada/infra", "clone_url": "https://github.com/ada/infra.git" }
    })
}

fn push(branch: &str, sha: &str) -> serde_json::Value {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000000",
        "after": sha,
        "deleted": false,
        "head_commit": { "id": sha, "message": "Merge pull request #7 from ada/docs", "author": { "name": "Ada Lovelace", "email": "ada@example.com" } },
        "pusher": { "name": "ada" },
        "repository": { "full_name": "ada/infra", "clone_url": "https://github.com/ada/infra.git" }
    })
}

fn wait_build(server: &Server, id: &str) -> serde_json::Value {
    wait_for(&format!("build {id}"), Duration::from_secs(60), || {
        let b = server.cli(&["builds", "show", id, "--json"]).ok().json();
        (!matches!(b["state"].as_str(), Some("queued" | "running"))).then_some(b)
    })
}

/// The infra site itself, as the repository declares it (the file is the whole truth).
fn infra(repository: &str, api_url: &str) -> String {
    format!(
        "[site.infra]\n\n[site.infra.git]\nrepository = \"{repository}\"\nplatform_config = \"chanto.platform.toml\"\n\n\
         [site.infra.notify.statuses]\nchannel = \"github\"\ntoken = \"env:CHANTO_PLATFORM_GH_TOKEN\"\n\
         repository = \"ada/infra\"\napi_url = \"{api_url}\"\n"
    )
}

/// Site `docs`, keeping `keep` deploys, with a secret variable from the server's environment and `extra` lines.
fn docs(keep: &str, extra: &str) -> String {
    format!(
        "\n[site.docs]\nkeep_deploys = {keep}\n\n[site.docs.env]\nDOCS_KEY = {{ secret = \"env:CHANTO_PLATFORM_DOCS_KEY\" }}\n{extra}"
    )
}

/// Chanto's one comment on pull request `pr`.
fn comment_on(state: &Mutex<Forge>, pr: u64) -> Option<String> {
    let f = state.lock().unwrap();
    let mine: Vec<&String> = f.comments.values().filter(|c| c.0 == pr && c.2 == BOT).map(|c| &c.1).collect();
    assert!(mine.len() <= 1, "one comment per pull request: {mine:?}");
    mine.first().map(|b| (*b).clone())
}

fn last_status(state: &Mutex<Forge>, sha: &str) -> Option<serde_json::Value> {
    state.lock().unwrap().statuses.iter().rev().find(|(s, _)| s == sha).map(|(_, v)| v.clone())
}

/// Whether `text` has a line naming `field` with the value `value` (the plan aligns its `=`).
fn shows(text: &str, field: &str, value: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l.starts_with(field) && l[field.len()..].trim_start().strip_prefix('=').is_some_and(|v| v.trim() == value)
    })
}

#[test]
fn a_platform_config_site_plans_pull_requests_in_one_living_comment_and_applies_the_merge() {
    let tmp = reachable_tempdir();
    let server = Server::start_cmd_env(
        "serve",
        &tmp.path().join("data"),
        &["--notify-backoff", "200ms", "--notify-attempts", "20", "--notify-timeout", "3s"],
        &[
            ("CHANTO_PLATFORM_GH_TOKEN", GH_TOKEN),
            ("CHANTO_PLATFORM_DOCS_KEY", DOCS_KEY),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ],
    );
    let state = Arc::new(Mutex::new(Forge::default()));
    let api = Receiver::start(forge_api(state.clone()));
    let api_url = api.url("/api/v3");
    let repo = Repo::new(&tmp.path().join("repo"));
    let url = repo.url();
    let base = infra(&url, &api_url);

    // The infra site declared from the CLI first (so the repository's file, which also declares it, plans no
    // change to it), then marked from the CLI as a platform config site.
    let boot = tmp.path().join("boot.toml");
    std::fs::write(&boot, &base).unwrap();
    let saved = tmp.path().join("boot.plan");
    server
        .cli(&["plan", "-f", boot.to_str().unwrap(), "--out", saved.to_str().unwrap()])
        .env("CHANTO_PLATFORM_GH_TOKEN", GH_TOKEN)
        .run();
    server.cli(&["apply", saved.to_str().unwrap()]).env("CHANTO_PLATFORM_GH_TOKEN", GH_TOKEN).ok();
    let v = server
        .cli(&[
            "git",
            "connect",
            &url,
            "--site",
            "infra",
            "--platform-config",
            "chanto.platform.toml",
            "--rotate-webhook-secret",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["settings"]["platform_config"], "chanto.platform.toml", "{v}");
    let secret = v["webhook_secret"].as_str().unwrap().to_owned();
    let shown = server.cli(&["git", "show", "--site", "infra"]).ok().stdout();
    assert!(shown.contains("platform config:   chanto.platform.toml"), "{shown}");
    // A path out of the repository is refused.
    let e = server.cli(&["git", "connect", &url, "--site", "infra", "--platform-config", "../x.toml"]).fails().stderr();
    assert!(e.contains("platform_config"), "{e}");
    // Only an admin may make a platform config site or change its
    // connection (its builds change every site): a developer may not point
    // it at a repository of theirs, nor mark another site.
    server.cli(&["users", "create", "dev", "--role", "developer"]).ok();
    let dev =
        server.cli(&["tokens", "create", "t", "--user", "dev", "--scope", "write"]).ok().stdout().trim().to_owned();
    let as_dev =
        |args: &[&str]| util::Cli::new(args).env("CHANTO_SERVER", &server.api_url).env("CHANTO_TOKEN", &dev).run();
    let mine = Repo::new(&tmp.path().join("mine"));
    let r = as_dev(&["git", "connect", &mine.url(), "--site", "infra"]);
    assert!(!r.out.status.success() && r.stderr().contains("admin"), "{}", r.report());
    server.cli(&["sites", "create", "other"]).ok();
    let r = as_dev(&["git", "connect", &mine.url(), "--site", "other", "--platform-config", "x.toml"]);
    assert!(!r.out.status.success() && r.stderr().contains("admin"), "{}", r.report());
    let r = as_dev(&["git", "connect", &mine.url(), "--site", "other"]);
    assert!(r.out.status.success(), "an ordinary connection is a developer's to make: {}", r.report());
    server.cli(&["sites", "delete", "other", "--yes"]).ok();
    let shown = server.cli(&["git", "show", "--site", "infra"]).ok().stdout();
    assert!(shown.contains(&url), "unchanged: {shown}");
    repo.commit("main", &[("chanto.platform.toml", &base)], "init");

    // (a) A pull request adding site docs: planned, commented, not applied.
    let c1 = repo.commit("docs", &[("chanto.platform.toml", &format!("{base}{}", docs("3", "")))], "Add docs");
    git(&repo.bare, &["update-ref", "refs/pull/7/head", &c1]);
    let r = signed_github(&server, &secret, "pull_request", &pull_request("opened", 7, "docs", &c1));
    let b1 = wait_build(&server, r["build"].as_str().unwrap());
    assert_eq!(b1["state"], "succeeded", "{b1}");
    assert!(b1["deploy"].is_null(), "a platform config build deploys nothing: {b1}");
    let body = wait_for("the plan's comment", LIMIT, || {
        let done = last_status(&state, &c1).is_some_and(|s| s["state"] == "success");
        comment_on(&state, 7).filter(|b| done && b.contains("### Configuration plan"))
    });
    assert!(body.starts_with(&chanto_notify::comment_marker("infra")), "{body}");
    assert!(body.contains("+ site.docs\n") && shows(&body, "keep_deploys", "3"), "{body}");
    assert!(body.contains("+ site.docs.env[\"DOCS_KEY\"]"), "{body}");
    assert!(!body.contains("site.infra"), "the infra site as the file declares it is what is live: {body}");
    assert!(!body.contains(DOCS_KEY), "{body}");
    let sites = server.cli(&["sites", "list"]).ok().stdout();
    assert!(!sites.contains("docs"), "a pull request never applies: {sites}");
    let log = server.cli(&["builds", "logs", r["build"].as_str().unwrap()]).ok().stdout();
    assert!(log.contains("+ site.docs") && log.contains("not applied"), "{log}");
    assert!(!log.contains(DOCS_KEY), "{log}");

    // (b) A second push to the pull request edits the same comment.
    // It also connects docs to a repository: at the merge, the new
    // connection's webhook secret (shown once) must not reach the log.
    let docs_git = format!("\n[site.docs.git]\nrepository = \"{url}\"\n");
    let pr_head = format!("{base}{}", docs("4", &docs_git));
    let c2 = repo.commit("docs", &[("chanto.platform.toml", &pr_head)], "Keep 4");
    git(&repo.bare, &["update-ref", "refs/pull/7/head", &c2]);
    let r = signed_github(&server, &secret, "pull_request", &pull_request("synchronize", 7, "docs", &c2));
    assert_eq!(wait_build(&server, r["build"].as_str().unwrap())["state"], "succeeded");
    let body = wait_for("the comment to show the second push", LIMIT, || {
        comment_on(&state, 7).filter(|b| b.contains(&c2[..7]) && b.contains("### Configuration plan"))
    });
    assert!(shows(&body, "keep_deploys", "4") && !shows(&body, "keep_deploys", "3"), "{body}");
    assert_eq!(state.lock().unwrap().creates, 1, "one comment, edited in place");

    // (c) A pull request whose file does not parse fails its commit status with file:line:column.
    let broken = format!("{base}{}", docs("\"x\"", ""));
    let line = broken.lines().position(|l| l == "keep_deploys = \"x\"").unwrap() + 1;
    let c3 = repo.commit("broken", &[("chanto.platform.toml", &broken)], "Break it");
    git(&repo.bare, &["update-ref", "refs/pull/8/head", &c3]);
    let r = signed_github(&server, &secret, "pull_request", &pull_request("opened", 8, "broken", &c3));
    let b3 = wait_build(&server, r["build"].as_str().unwrap());
    assert_eq!(b3["state"], "failed", "{b3}");
    let at = format!("chanto.platform.toml:{line}:16");
    assert!(b3["error"].as_str().unwrap().starts_with(&at), "{b3}");
    let status = wait_for("the failure status", LIMIT, || last_status(&state, &c3).filter(|s| s["state"] == "failure"));
    assert!(status["description"].as_str().unwrap().contains(&at), "{status}");
    let body = wait_for("the failure comment", LIMIT, || {
        comment_on(&state, 8).filter(|b| b.contains("Configuration plan failed"))
    });
    assert!(body.contains(&at), "{body}");

    // (e) Hostile: a reference to any other variable of the server, or to a file, fails and copies nothing.
    let hostile = format!(
        "{base}{}",
        docs("4", "AWS = { secret = \"env:AWS_SECRET_ACCESS_KEY\" }\nPW = { secret = \"file:/etc/passwd\" }\n")
    );
    let c4 = repo.commit("hostile", &[("chanto.platform.toml", &hostile)], "Take the keys");
    git(&repo.bare, &["update-ref", "refs/pull/9/head", &c4]);
    let r = signed_github(&server, &secret, "pull_request", &pull_request("opened", 9, "hostile", &c4));
    let id4 = r["build"].as_str().unwrap().to_owned();
    let b4 = wait_build(&server, &id4);
    assert_eq!(b4["state"], "failed", "{b4}");
    let error = b4["error"].as_str().unwrap();
    assert!(error.contains("env:AWS_SECRET_ACCESS_KEY: ") && error.contains("CHANTO_PLATFORM_"), "{error}");
    assert!(error.contains("file:/etc/passwd: file: references are resolved only by the CLI"), "{error}");
    let body = wait_for("the hostile comment", LIMIT, || {
        comment_on(&state, 9).filter(|b| b.contains("Configuration plan failed"))
    });
    let log = server.cli(&["builds", "logs", &id4]).ok().stdout();
    for text in [&body, &log, &error.to_owned()] {
        assert!(!text.contains(AWS_SECRET) && !text.contains("root:x:0"), "{text}");
    }
    // A file that is a symlink to one of the host's is refused, never read.
    git(&repo.work, &["checkout", "-q", "-b", "symlink", "main"]);
    std::fs::remove_file(repo.work.join("chanto.platform.toml")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", repo.work.join("chanto.platform.toml")).unwrap();
    git(&repo.work, &["add", "-A"]);
    git(&repo.work, &["commit", "-q", "-m", "Symlink"]);
    git(&repo.work, &["push", "-q", "origin", "symlink"]);
    let c5 = git(&repo.work, &["rev-parse", "HEAD"]);
    git(&repo.bare, &["update-ref", "refs/pull/10/head", &c5]);
    let r = signed_github(&server, &secret, "pull_request", &pull_request("opened", 10, "symlink", &c5));
    let b5 = wait_build(&server, r["build"].as_str().unwrap());
    assert_eq!(b5["state"], "failed", "{b5}");
    assert!(b5["error"].as_str().unwrap().contains("chanto.platform.toml is a symlink"), "{b5}");
    assert!(!b5.to_string().contains("root:x:0"));
    let sites = server.cli(&["sites", "list"]).ok().stdout();
    assert!(!sites.contains("docs"), "{sites}");

    // (d) The merge: a push to the production branch applies the plan.
    // The merge's files are the pull request's head's: its comment gets
    // the result.
    let merged = pr_head.clone();
    let comments_before = state.lock().unwrap().creates;
    let c6 = repo.commit("main", &[("chanto.platform.toml", &merged)], "Merge pull request #7 from ada/docs");
    let r = signed_github(&server, &secret, "push", &push("main", &c6));
    let id6 = r["build"].as_str().unwrap().to_owned();
    let b6 = wait_build(&server, &id6);
    assert_eq!(b6["state"], "succeeded", "{b6}");
    let status = wait_for("the merge's status", LIMIT, || last_status(&state, &c6).filter(|s| s["state"] == "success"));
    assert_eq!(status["context"], "chanto/infra");
    assert!(status["description"].as_str().unwrap().starts_with("Succeeded in "), "nothing was deployed: {status}");
    let log = server.cli(&["builds", "logs", &id6]).ok().stdout();
    assert!(log.contains("Apply complete: 3 applied") && log.contains("+ site.docs.git"), "{log}");
    assert!(log.contains("not written to build logs") && !log.contains("shown once"), "{log}");
    assert!(!log.contains(DOCS_KEY), "{log}");
    assert!(log.contains("this applies pull request #7"), "{log}");
    let body = wait_for("the result on the merged pull request", LIMIT, || {
        comment_on(&state, 7).filter(|b| b.contains("Configuration applied"))
    });
    assert!(body.contains("Apply complete: 3 applied") && body.contains(&c6[..7]), "{body}");
    assert!(!body.contains(DOCS_KEY) && !body.contains("shown once"), "{body}");
    assert_eq!(state.lock().unwrap().creates, comments_before, "pull request 7's one comment, edited in place");
    let export = server.cli(&["export", "--json"]).ok().json();
    let config = export["config"].as_str().unwrap();
    assert!(config.contains("[site.docs]") && shows(config, "keep_deploys", "4"), "{config}");
    let vars = server.cli(&["env", "list", "--site", "docs", "--json"]).ok().json();
    let vars = vars.as_array().unwrap();
    assert_eq!(vars.len(), 1, "{vars:?}");
    assert_eq!((vars[0]["name"].as_str(), vars[0]["secret"].as_bool()), (Some("DOCS_KEY"), Some(true)));
    // The value applied is the server's: the same file planned from the CLI with it changes nothing.
    let file = tmp.path().join("merged.toml");
    std::fs::write(&file, &merged).unwrap();
    let r = server
        .cli(&["plan", "-f", file.to_str().unwrap()])
        .env("CHANTO_PLATFORM_GH_TOKEN", GH_TOKEN)
        .env("CHANTO_PLATFORM_DOCS_KEY", DOCS_KEY)
        .ok()
        .stdout();
    assert!(r.contains("No changes"), "{r}");
    // Each change is audited as the build's.
    let audit = server.cli(&["audit", "list", "--limit", "1000", "--json"]).ok().json();
    let by_build: Vec<&serde_json::Value> =
        audit.as_array().unwrap().iter().filter(|e| e["actor"] == format!("build {id6}")).collect();
    assert_eq!(by_build.len(), 3, "{audit:#}");
    // A push that changes nothing applies nothing, and succeeds.
    let c7 = repo.commit("main", &[("README.md", "infra")], "Docs");
    let r = signed_github(&server, &secret, "push", &push("main", &c7));
    let id7 = r["build"].as_str().unwrap().to_owned();
    assert_eq!(wait_build(&server, &id7)["state"], "succeeded");
    let log = server.cli(&["builds", "logs", &id7]).ok().stdout();
    assert!(log.contains("No changes") && log.contains("Nothing to apply"), "{log}");
}

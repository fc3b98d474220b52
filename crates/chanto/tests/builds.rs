//! End to end: git-driven builds. Real bare repositories and clones made by
//! the test, real `chanto serve` with its build runner, webhooks signed the
//! way each forge signs them, and the deployed output checked on the edge.

mod util;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use util::git::{Repo, git, reachable_tempdir};
use util::{Server, http_request, wait_for, write_tree};

fn start(tmp: &Path) -> Server {
    Server::start(&tmp.join("data"), &["--public-api-url", "http://chanto.test"])
}

/// Connects `site` to `repo` and returns the webhook secret.
fn connect(server: &Server, site: &str, repo: &Repo, extra: &[&str]) -> String {
    server.cli(&["sites", "create", site]).ok();
    let url = repo.url();
    let args = [&["git", "connect", url.as_str(), "--site", site, "--json"][..], extra].concat();
    let v = server.cli(&args).ok().json();
    assert_eq!(v["webhooks"]["github"], format!("http://chanto.test/api/v1/webhooks/github/{site}"));
    assert!(v.get("credential").is_some_and(|c| c.is_null()), "{v}");
    v["webhook_secret"].as_str().expect("the first connect shows the webhook secret").to_owned()
}

/// POSTs a webhook to the API.
fn post(server: &Server, path: &str, headers: &[(&str, &str)], body: &[u8]) -> util::HttpResponse {
    http_request(&server.api_url_addr(), "POST", "127.0.0.1", path, headers, body).expect("API request")
}

fn github_push(branch: &str, commit: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000000",
        "after": commit,
        "deleted": false,
        "head_commit": { "id": commit, "message": message, "author": { "name": "Ada Lovelace", "email": "ada@example.com" } },
        "pusher": { "name": "ada" },
        "repository": { "full_name": "ada/site", "clone_url": "https://github.com/ada/site.git" }
    }))
    .unwrap()
}

fn send_github(server: &Server, site: &str, secret: &str, event: &str, body: &[u8]) -> util::HttpResponse {
    let sig = format!("sha256={}", chanto_forge::sign_hmac_sha256_hex(secret.as_bytes(), body));
    post(
        server,
        &format!("/api/v1/webhooks/github/{site}"),
        &[("X-GitHub-Event", event), ("X-Hub-Signature-256", &sig), ("Content-Type", "application/json")],
        body,
    )
}

/// Waits until build `id` has ended and returns it.
fn wait_build(server: &Server, id: &str) -> serde_json::Value {
    wait_for(&format!("build {id} to end"), Duration::from_secs(60), || {
        let b = server.cli(&["builds", "show", id, "--json"]).ok().json();
        let state = b["state"].as_str().unwrap().to_owned();
        (state != "queued" && state != "running").then_some(b)
    })
}

fn body_json(r: &util::HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn log_of(server: &Server, id: &str) -> String {
    server.cli(&["builds", "logs", id]).ok().stdout()
}

const BUILD_TOML: &str = r#"
[build]
command = "mkdir -p out && printf '%s|%s|%s|%s' \"$GREETING\" \"$CHANTO_BRANCH\" \"$AWS_BRANCH\" \"$CONTEXT\" > out/index.html && echo \"the token is $API_TOKEN\" && echo \"user: $(id -un)\" && if cat \"$DATA_DIR/meta.db\" || cat \"$DATA_DIR/secret.key\"; then echo DATA-READABLE; else echo data-hidden; fi"
publish = "out"
"#;

#[test]
fn a_signed_push_builds_and_deploys_and_bad_webhooks_change_nothing() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    let repo = Repo::new(&tmp.path().join("repo"));
    let secret = connect(&server, "app", &repo, &["--include", "main", "--include", "feature/*"]);
    server.cli(&["env", "set", "--site", "app", "GREETING", "hello"]).ok();
    server.cli(&["env", "set", "--site", "app", "DATA_DIR", server.data.to_str().unwrap()]).ok();
    server.cli(&["env", "set", "--site", "app", "--secret", "API_TOKEN"]).stdin("s3cr3t-value\n").ok();
    let listed = server.cli(&["env", "list", "--site", "app"]).ok().stdout();
    assert!(listed.contains("API_TOKEN=***") && listed.contains("GREETING=hello"), "{listed}");
    // The secret is in no file of the data directory in clear (the database, its write-ahead log, …).
    assert!(util::assert_secret_nowhere(&server.data, b"s3cr3t-value", "the secret variable") > 0);

    let c1 = repo.commit("main", &[("chanto.toml", BUILD_TOML), ("README.md", "hi")], "first");

    // A bad signature is refused and recorded; nothing builds.
    let body = github_push("main", &c1, "first");
    let r = send_github(&server, "app", "not-the-secret", "push", &body);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("X-Hub-Signature-256"), "{}", r.text());
    let r = post(&server, "/api/v1/webhooks/github/app", &[("X-GitHub-Event", "push")], &body);
    assert_eq!(r.status, 401, "a missing signature is refused: {}", r.text());
    let r = send_github(&server, "app", &secret, "push", b"{\"ref\": 7");
    assert_eq!(r.status, 400, "a truncated payload is refused: {}", r.text());
    assert_eq!(post(&server, "/api/v1/webhooks/bitbucket/app", &[], b"{}").status, 404);
    assert_eq!(post(&server, "/api/v1/webhooks/github/nosuchsite", &[], b"{}").status, 404);
    let builds = server.cli(&["builds", "list", "--site", "app", "--json"]).ok().json();
    assert_eq!(builds.as_array().unwrap().len(), 0, "no build from refused webhooks: {builds}");
    let deliveries = server.cli(&["git", "deliveries", "--site", "app", "--json"]).ok().json();
    assert_eq!(deliveries.as_array().unwrap().iter().filter(|d| d["outcome"] == "refused").count(), 3, "{deliveries}");

    // A GitHub ping is answered and does nothing.
    let r = send_github(&server, "app", &secret, "ping", br#"{"zen":"Keep it logically awesome.","hook_id":1}"#);
    assert_eq!(r.status, 200, "{}", r.text());

    // The signed push builds main and deploys it.
    let r = send_github(&server, "app", &secret, "push", &body);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = body_json(&r)["build"].as_str().unwrap().to_owned();
    let b = wait_build(&server, &id);
    assert_eq!(b["state"], "succeeded", "{b}\n{}", log_of(&server, &id));
    assert_eq!(b["commit"], c1.as_str());
    assert_eq!(b["author"], "Ada Lovelace");
    let phases: Vec<&str> = b["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(phases, ["fetch", "spec", "build", "deploy"], "{b}");
    assert_eq!(server.get("app.localhost", "/").text(), "hello|main|main|production");
    let log = log_of(&server, &id);
    assert!(log.contains("the token is ***"), "secrets are masked in the log:\n{log}");
    assert!(!log.contains("s3cr3t-value"), "{log}");
    assert!(log.contains("build spec from chanto.toml"), "{log}");
    // The build cannot read the server's data directory, and runs in the
    // sandbox (whose passwd names only its own user `build`).
    assert!(log.lines().any(|l| l == "data-hidden") && !log.lines().any(|l| l == "DATA-READABLE"), "{log}");
    assert!(log.lines().any(|l| l == "user: build"), "{log}");
    assert!(
        server.stderr().contains("bubblewrap sandbox") && server.stderr().contains("own network namespace"),
        "the server says how builds are isolated: {}",
        server.stderr()
    );
    assert!(util::assert_secret_nowhere(&server.data, b"s3cr3t-value", "the secret variable") > 0);
    let show = server.cli(&["builds", "show", &id]).ok().stdout();
    assert!(show.contains("succeeded") && show.contains("deploy:"), "{show}");

    // A branch outside the patterns is ignored; a feature branch builds at its own URL.
    let c2 = repo.commit("wip", &[], "wip");
    let r = send_github(&server, "app", &secret, "push", &github_push("wip", &c2, "wip"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(body_json(&r)["outcome"], "ignored");
    let c3 = repo.commit("feature/login", &[], "login page");
    let r = send_github(&server, "app", &secret, "push", &github_push("feature/login", &c3, "login page"));
    let b = wait_build(&server, body_json(&r)["build"].as_str().unwrap());
    assert_eq!(b["state"], "succeeded", "{b}");
    assert_eq!(
        server.get("feature-login--app.localhost", "/").text(),
        "hello|feature/login|feature/login|branch-deploy"
    );
    assert_eq!(server.get("app.localhost", "/").text(), "hello|main|main|production");

    // A replayed (or late) webhook of an older commit is signed all right,
    // but deploys nothing: the branch has moved on.
    let c3b = repo.commit("feature/login", &[("note.txt", "newer")], "newer");
    let r = send_github(&server, "app", &secret, "push", &github_push("feature/login", &c3, "login page"));
    let replay = wait_build(&server, body_json(&r)["build"].as_str().unwrap());
    assert_eq!(replay["state"], "superseded", "{replay}");
    assert!(replay["error"].as_str().unwrap().contains(&c3b), "{replay}");
    assert_eq!(
        server.get("feature-login--app.localhost", "/").text(),
        "hello|feature/login|feature/login|branch-deploy"
    );

    // [skip ci] records a skipped build and deploys nothing.
    let c4 = repo.commit("feature/login", &[], "typo [skip ci]");
    let r = send_github(&server, "app", &secret, "push", &github_push("feature/login", &c4, "typo [skip ci]"));
    assert_eq!(body_json(&r)["outcome"], "accepted");
    let skipped = server.cli(&["builds", "show", body_json(&r)["build"].as_str().unwrap(), "--json"]).ok().json();
    assert_eq!(skipped["state"], "skipped");

    // Deleting the branch removes its environment; production stays.
    let del = serde_json::json!({"ref": "feature/login", "ref_type": "branch", "pusher_type": "user"});
    let r = send_github(&server, "app", &secret, "delete", &serde_json::to_vec(&del).unwrap());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.get("feature-login--app.localhost", "/").status, 404);
    assert_eq!(server.get("app.localhost", "/").status, 200);

    // The connection shows no secret again.
    let shown = server.cli(&["git", "show", "--site", "app", "--json"]).ok().json();
    assert!(shown.get("webhook_secret").is_none(), "{shown}");
}

#[test]
fn failures_timeouts_and_cancels_never_change_what_is_live() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    let repo = Repo::new(&tmp.path().join("repo"));
    connect(&server, "app", &repo, &["--timeout", "2s"]);
    let good = "[build]\ncommand = \"mkdir -p out && echo v1 > out/index.html\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", good)], "v1");
    let start = |server: &Server| -> String {
        server.cli(&["builds", "start", "--site", "app", "--json"]).ok().json()["id"].as_str().unwrap().to_owned()
    };
    let b = wait_build(&server, &start(&server));
    assert_eq!(b["state"], "succeeded", "{b}");
    assert_eq!(server.get("app.localhost", "/").text(), "v1\n");

    // A failing command: the phase records its exit status; v1 stays live.
    let failing = "[build]\ncommand = \"mkdir -p out && echo v2 > out/index.html && exit 3\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", failing)], "v2 breaks");
    let id = start(&server);
    let b = wait_build(&server, &id);
    assert_eq!(b["state"], "failed", "{b}");
    let build = b["phases"].as_array().unwrap().iter().find(|p| p["name"] == "build").unwrap();
    assert_eq!((build["status"].as_str(), build["exit_code"].as_i64()), (Some("failed"), Some(3)), "{b}");
    assert!(b["error"].as_str().unwrap().contains("exited with status 3"), "{b}");
    assert_eq!(server.get("app.localhost", "/").text(), "v1\n");
    let r = server.cli(&["builds", "start", "--site", "app", "--follow"]).fails();
    assert!(r.stdout().contains("$ mkdir -p out") && r.stderr().contains("failed"), "{}", r.report());

    // A build past its time limit is killed with everything it started,
    // including what it sent to the background.
    let slow = "[build]\ncommand = \"sleep 7777 & sleep 7778\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", slow)], "slow");
    let sleeping = |arg: &str| {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|p| std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == format!("sleep\0{arg}\0").as_bytes()))
    };
    let id = start(&server);
    wait_for("the build to start sleeping", Duration::from_secs(20), || sleeping("7777").then_some(()));
    let b = wait_build(&server, &id);
    assert_eq!(b["state"], "timed_out", "{b}");
    assert!(b["error"].as_str().unwrap().contains("time limit of 2s"), "{b}");
    wait_for("the build's processes to be killed", Duration::from_secs(5), || {
        (!sleeping("7777") && !sleeping("7778")).then_some(())
    });
    assert_eq!(server.get("app.localhost", "/").text(), "v1\n");

    // A process that leaves the build's process group and session (setsid)
    // still dies with the build's sandbox when the command ends.
    let escaping = "[build]\ncommand = \"setsid sleep 7779 > /dev/null 2>&1 < /dev/null & mkdir -p out && echo v1 > out/index.html\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", escaping)], "escape");
    let b = wait_build(&server, &start(&server));
    assert_eq!(b["state"], "succeeded", "{b}");
    wait_for("the escaped process to be killed with the sandbox", Duration::from_secs(10), || {
        (!sleeping("7779")).then_some(())
    });
    repo.commit("main", &[("chanto.toml", slow)], "slow again");

    // Cancel a running build.
    server.cli(&["git", "connect", &repo.url(), "--site", "app", "--timeout", "5m"]).ok();
    let id = start(&server);
    wait_for("the build to run its command", Duration::from_secs(20), || {
        log_of(&server, &id).contains("$ sleep").then_some(())
    });
    let r = server.cli(&["builds", "cancel", &id]).ok();
    assert!(r.stdout().contains("cancelled"), "{}", r.report());
    let r = server.cli(&["builds", "cancel", &id]).fails();
    assert!(r.stderr().contains("already ended"), "{}", r.report());
    assert_eq!(server.get("app.localhost", "/").text(), "v1\n");

    // A malformed build spec fails with the file and line named.
    let bad =
        "version: 1\nfrontend:\n  phases:\n    build:\n      commands: 42\n  artifacts:\n    baseDirectory: out\n";
    repo.commit("main", &[("chanto.toml", ""), ("amplify.yml", bad)], "amplify");
    let b = wait_build(&server, &start(&server));
    assert_eq!(b["state"], "failed", "{b}");
    assert!(b["error"].as_str().unwrap().contains("amplify.yml:5:"), "{b}");
    assert_eq!(server.get("app.localhost", "/").text(), "v1\n");
}

#[test]
fn pull_requests_get_previews_and_build_hooks_and_caches_work() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    let repo = Repo::new(&tmp.path().join("repo"));
    let secret = connect(&server, "shop", &repo, &[]);
    // Amplify's build spec, with a cache.
    let amplify = r#"version: 1
frontend:
  phases:
    preBuild:
      commands:
        - if [ -f node_modules/.stamp ]; then echo CACHE HIT; else mkdir -p node_modules && touch node_modules/.stamp; fi
    build:
      commands:
        - mkdir -p dist && echo "$AWS_BRANCH $CHANTO_PULL_REQUEST $PULL_REQUEST" > dist/index.html
  artifacts:
    baseDirectory: dist
    files:
      - '**/*'
  cache:
    paths:
      - node_modules/**/*
"#;
    let c1 = repo.commit("main", &[("amplify.yml", amplify)], "amplify");

    // GitLab: a merge request opens a pr-<n> preview.
    let mr = |action: &str, commit: &str| {
        serde_json::to_vec(&serde_json::json!({
            "object_kind": "merge_request",
            "user": { "username": "ada" },
            "project": { "id": 1 },
            "object_attributes": {
                "iid": 7, "action": action, "state": "opened", "title": "New checkout",
                "source_branch": "checkout", "target_branch": "main",
                "source_project_id": 1, "target_project_id": 1,
                "last_commit": { "id": commit, "message": "checkout" }
            }
        }))
        .unwrap()
    };
    let c2 = repo.commit("checkout", &[("x.txt", "x")], "checkout");
    // GitHub-style refs don't exist in a plain bare repository: make the one GitLab serves.
    git(&repo.bare, &["update-ref", "refs/merge-requests/7/head", &c2]);
    let gitlab = |action: &str, token: &str| {
        post(
            &server,
            "/api/v1/webhooks/gitlab/shop",
            &[("X-Gitlab-Event", "Merge Request Hook"), ("X-Gitlab-Token", token)],
            &mr(action, &c2),
        )
    };
    assert_eq!(gitlab("open", "wrong").status, 401);
    let r = gitlab("open", &secret);
    assert_eq!(r.status, 202, "{}", r.text());
    let b = wait_build(&server, body_json(&r)["build"].as_str().unwrap());
    assert_eq!(
        (b["state"].as_str(), b["branch"].as_str(), b["pull_request"].as_u64()),
        (Some("succeeded"), Some("pr-7"), Some(7)),
        "{b}"
    );
    assert_eq!(server.get("pr-7--shop.localhost", "/").text(), "pr-7 7 true\n");

    // Closing the merge request removes the preview.
    let r = gitlab("close", &secret);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.get("pr-7--shop.localhost", "/").status, 404);

    // Gitea: a signed push to main builds production; the second build hits the cache.
    let push = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main", "before": c1, "after": c1,
        "head_commit": { "id": c1, "message": "amplify", "author": { "name": "Ada" } },
        "pusher": { "login": "ada", "username": "ada" },
        "repository": { "clone_url": "https://gitea.example/ada/shop.git" }
    }))
    .unwrap();
    let gitea = |body: &[u8]| {
        let sig = chanto_forge::sign_hmac_sha256_hex(secret.as_bytes(), body);
        post(&server, "/api/v1/webhooks/gitea/shop", &[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &sig)], body)
    };
    let first = wait_build(&server, body_json(&gitea(&push))["build"].as_str().unwrap());
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(server.get("shop.localhost", "/").text(), "main  false\n");

    // A build hook starts a build of the branch the request names.
    let hook = server.cli(&["build-hooks", "create", "--site", "shop", "cms", "--json"]).ok().json();
    let url = hook["url"].as_str().unwrap();
    let path = url.strip_prefix("http://chanto.test").unwrap();
    assert_eq!(post(&server, &format!("{}x", &path[..path.len() - 1]), &[], b"").status, 404, "a wrong secret is 404");
    let r = post(&server, path, &[("Content-Type", "application/json")], br#"{"title": "content changed"}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    let second = wait_build(&server, body_json(&r)["build"].as_str().unwrap());
    assert_eq!(second["state"], "succeeded", "{second}");
    assert_eq!(second["trigger"], "build hook cms");
    let log = log_of(&server, second["id"].as_str().unwrap());
    assert!(log.contains("CACHE HIT") && log.contains("restored cache"), "{log}");
    let listed = server.cli(&["build-hooks", "list", "--site", "shop"]).ok().stdout();
    assert!(listed.contains("cms") && !listed.contains(path), "{listed}");

    // A hook builds only its own branch (production by default) ...
    let builds_before =
        server.cli(&["builds", "list", "--site", "shop", "--json"]).ok().json().as_array().unwrap().len();
    let r = post(&server, path, &[("Content-Type", "application/json")], br#"{"branch": "checkout"}"#);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("builds only branch main") && r.text().contains("--any-branch"), "{}", r.text());
    let r = post(&server, &format!("{path}?branch=checkout"), &[], b"");
    assert_eq!(r.status, 403, "the query cannot name another branch either: {}", r.text());
    let builds_after =
        server.cli(&["builds", "list", "--site", "shop", "--json"]).ok().json().as_array().unwrap().len();
    assert_eq!(builds_before, builds_after, "a refused hook request queues nothing");
    // ... a hook for a branch builds that branch ...
    let own =
        server.cli(&["build-hooks", "create", "--site", "shop", "--branch", "checkout", "own", "--json"]).ok().json();
    assert_eq!(own["branch"], "checkout");
    let own_path = own["url"].as_str().unwrap().strip_prefix("http://chanto.test").unwrap().to_owned();
    let r = post(&server, &own_path, &[], b"");
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(wait_build(&server, body_json(&r)["build"].as_str().unwrap())["branch"], "checkout");
    assert_eq!(post(&server, &own_path, &[], br#"{"branch": "main"}"#).status, 403);
    // ... and one made with --any-branch lets the request choose.
    let any = server.cli(&["build-hooks", "create", "--site", "shop", "--any-branch", "any", "--json"]).ok().json();
    assert!(any["branch"].is_null(), "{any}");
    let any_path = any["url"].as_str().unwrap().strip_prefix("http://chanto.test").unwrap().to_owned();
    let r = post(&server, &any_path, &[], br#"{"branch": "checkout"}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(wait_build(&server, body_json(&r)["build"].as_str().unwrap())["branch"], "checkout");
}

#[test]
fn fork_pull_requests_build_without_secrets_behind_the_previews_password_or_not_at_all() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    let repo = Repo::new(&tmp.path().join("repo"));
    let secret = connect(&server, "shop", &repo, &[]);
    server.cli(&["env", "set", "--site", "shop", "--secret", "DEPLOY_KEY"]).stdin("fork-must-not-see-this\n").ok();
    server
        .cli(&["access", "set", "--site", "shop", "--previews", "--user", "reviewer", "--password-stdin"])
        .stdin("preview-pass\n")
        .ok();
    let toml = "[build]\ncommand = \"mkdir -p out && echo \\\"key=[$DEPLOY_KEY]\\\" | tee out/index.html\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", toml)], "site");
    let head = repo.commit("fork-branch", &[("x.txt", "from a fork")], "fork change");
    git(&repo.bare, &["update-ref", "refs/merge-requests/9/head", &head]);
    let mr = serde_json::to_vec(&serde_json::json!({
        "object_kind": "merge_request",
        "user": { "username": "mallory" },
        "project": { "id": 1 },
        "object_attributes": {
            "iid": 9, "action": "open", "state": "opened", "title": "Innocent change",
            "source_branch": "fork-branch", "target_branch": "main",
            "source_project_id": 2, "target_project_id": 1,
            "last_commit": { "id": head, "message": "fork change" }
        }
    }))
    .unwrap();
    let send = || {
        post(
            &server,
            "/api/v1/webhooks/gitlab/shop",
            &[("X-Gitlab-Event", "Merge Request Hook"), ("X-Gitlab-Token", &secret)],
            &mr,
        )
    };
    // By default a fork's merge request builds, without the secret.
    let r = send();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = body_json(&r)["build"].as_str().unwrap().to_owned();
    let b = wait_build(&server, &id);
    assert_eq!(b["state"], "succeeded", "{b}");
    let log = log_of(&server, &id);
    assert!(log.contains("key=[]") && log.contains("withheld from this pull request from a fork: DEPLOY_KEY"), "{log}");
    // Its preview asks for the previews password.
    assert_eq!(server.get("pr-9--shop.localhost", "/").status, 401);
    let auth = format!("Basic {}", base64_encode("reviewer:preview-pass"));
    assert_eq!(server.get_with("pr-9--shop.localhost", "/", &[("Authorization", &auth)]).text(), "key=[]\n");

    // With fork pull requests turned off, the same event builds nothing.
    server.cli(&["git", "connect", &repo.url(), "--site", "shop", "--no-fork-prs"]).ok();
    let shown = server.cli(&["git", "show", "--site", "shop", "--json"]).ok().json();
    assert_eq!(shown["settings"]["fork_pull_requests"], false, "{shown}");
    let r = send();
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = body_json(&r);
    assert_eq!(answer["outcome"], "ignored", "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("comes from a fork"), "{answer}");
    assert!(answer["build"].is_null(), "{answer}");
}

fn base64_encode(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_build_interrupted_by_a_crash_is_retried_once_after_restart() {
    let tmp = reachable_tempdir();
    let data = tmp.path().join("data");
    let server = start(tmp.path());
    let repo = Repo::new(&tmp.path().join("repo"));
    connect(&server, "app", &repo, &[]);
    let slow = "[build]\ncommand = \"sleep 3 && mkdir -p out && echo done > out/index.html\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", slow)], "slow");
    let id = server.cli(&["builds", "start", "--site", "app", "--json"]).ok().json()["id"].as_str().unwrap().to_owned();
    wait_for("the build to run", Duration::from_secs(20), || {
        (server.cli(&["builds", "show", &id, "--json"]).ok().json()["state"] == "running").then_some(())
    });
    server.kill();

    let server = Server::start(&data, &[]);
    let first = server.cli(&["builds", "show", &id, "--json"]).ok().json();
    assert_eq!(first["state"], "interrupted", "{first}");
    let all = server.cli(&["builds", "list", "--site", "app", "--json"]).ok().json();
    let retry =
        all.as_array().unwrap().iter().find(|b| b["retry_of"] == id.as_str()).expect("a retry was queued").clone();
    let done = wait_build(&server, retry["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(server.get("app.localhost", "/").text(), "done\n");
}

#[test]
fn polling_builds_remotes_without_webhooks() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    let repo = Repo::new(&tmp.path().join("repo"));
    repo.commit("main", &[("site/index.html", "polled")], "static site");
    server.cli(&["sites", "create", "blog"]).ok();
    server.cli(&["git", "connect", &repo.url(), "--site", "blog", "--publish", "site", "--poll", "10s"]).ok();
    let b = wait_for("a polled build", Duration::from_secs(30), || {
        let all = server.cli(&["builds", "list", "--site", "blog", "--json"]).ok().json();
        all.as_array().unwrap().first().cloned()
    });
    assert_eq!(b["trigger"], "poll");
    let done = wait_build(&server, b["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(server.get("blog.localhost", "/").text(), "polled");
}

#[test]
fn a_local_repository_must_be_a_repository_on_the_server() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    server.cli(&["sites", "create", "app"]).ok();
    let repo = Repo::new(&tmp.path().join("repo"));
    let missing = tmp.path().join("typo.git").display().to_string();
    let plain = tmp.path().join("plain");
    write_tree(&plain, &[("index.html", "not a repository")]);
    let file = plain.join("index.html").display().to_string();
    let plain = plain.display().to_string();
    for (repository, expect) in [
        (
            missing.clone(),
            format!(
                "{missing} does not exist on the server; give the path of a clone or bare repository there \
                 (`git init --bare {missing}` makes one) or the repository's clone URL (field: repository)"
            ),
        ),
        (format!("file://{missing}"), format!("{missing} does not exist on the server")),
        (
            plain.clone(),
            format!(
                "{plain} is not a git repository (no .git, and no HEAD, objects and refs); give the repository's \
                 own directory, or run `git init` there and commit the site (field: repository)"
            ),
        ),
        (file.clone(), format!("{file} is a file, not a git repository")),
        ("repo/origin.git".into(), "\"repo/origin.git\" is a relative path".into()),
        ("./repo".into(), "give the repository's absolute path on the server".into()),
    ] {
        let r = server.cli(&["git", "connect", &repository, "--site", "app"]).fails();
        assert!(r.stderr().contains(&expect), "{repository}: {}", r.report());
    }
    let r = server.cli(&["git", "show", "--site", "app"]).fails();
    assert!(r.stderr().contains("not connected"), "a refusal connects nothing: {}", r.report());
    // Repositories that are there: bare by path and by file:// URL, and a clone.
    let there = [repo.bare.display().to_string(), repo.url(), repo.work.display().to_string()];
    // Remotes are not contacted on connect: accepted as given.
    let remotes =
        ["https://git.invalid/a/b.git", "ssh://git@git.invalid/a/b.git", "git@git.invalid:a/b.git", "host:b.git"];
    for repository in there.iter().map(String::as_str).chain(remotes) {
        let v = server.cli(&["git", "connect", repository, "--site", "app", "--json"]).ok().json();
        assert_eq!(v["repository"], repository, "{v}");
    }
}

#[test]
fn connecting_refuses_bad_input() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    server.cli(&["sites", "create", "app"]).ok();
    for (args, expect) in [
        (vec!["git", "connect", "https://tok@github.com/a/b.git", "--site", "app"], "put the token in `token`"),
        (vec!["git", "connect", "--site", "app", "--", "-upload-pack=evil"], "cannot start with '-'"),
        (vec!["git", "connect", "ftp://example.com/r.git", "--site", "app"], "use an https://"),
        (
            vec!["git", "connect", "/r.git", "--site", "app", "--include", "has space"],
            "branch pattern \"has space\" contains whitespace or a control character, which no branch name has; remove it (field: include)",
        ),
        (vec!["git", "connect", "/r.git", "--site", "nosite"], "not found"),
        (vec!["git", "show", "--site", "app"], "not connected"),
        (vec!["builds", "start", "--site", "app"], "not connected"),
        (vec!["builds", "show", "zz"], "not a build id"),
        (
            vec!["env", "set", "--site", "app", "1BAD", "x"],
            "environment variable \"1BAD\": name starts with a digit; start it with a letter or _ (field: name)",
        ),
    ] {
        let r = server.cli(&args).fails();
        assert!(r.stderr().contains(expect), "{args:?}: {}", r.report());
    }
    let r = server.cli(&["git", "connect", "/r.git", "--site", "app", "--token-env", "CHANTO_TEST_UNSET"]).fails();
    assert!(r.stderr().contains("CHANTO_TEST_UNSET"), "{}", r.report());
    // A token is stored sealed and never shown back.
    let r = server
        .cli(&["git", "connect", "https://example.com/r.git", "--site", "app", "--token-env", "TOK", "--json"])
        .env("TOK", "glpat-very-secret")
        .ok();
    assert!(!r.stdout().contains("glpat-very-secret"), "{}", r.report());
    assert_eq!(r.json()["credential"], "token");
    assert!(util::assert_secret_nowhere(&server.data, b"glpat-very-secret", "the token") > 0);
    // What can be checked without the body is checked before it is read,
    // and a body over the bound is refused from its declared length: the
    // answer comes while the client has sent only the head and a few bytes
    // (20 MiB declared is within the bound, 26 MiB over it).
    let partial = |path: &str, headers: &str, length: usize| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.api_url_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {length}\r\n\r\n{{\"ref\"").unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("an answer before the body was sent");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let unsigned = partial("/api/v1/webhooks/github/app", "X-GitHub-Event: push\r\n", 20 << 20);
    assert!(unsigned.starts_with("HTTP/1.1 401") && unsigned.contains("X-Hub-Signature-256"), "{unsigned}");
    let signed = partial(
        "/api/v1/webhooks/github/app",
        &format!("X-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={}\r\n", "0".repeat(64)),
        26 << 20,
    );
    assert!(signed.starts_with("HTTP/1.1 413"), "{signed}");
    let gitlab =
        partial("/api/v1/webhooks/gitlab/app", "X-Gitlab-Event: Push Hook\r\nX-Gitlab-Token: wrong\r\n", 20 << 20);
    assert!(gitlab.starts_with("HTTP/1.1 401"), "a wrong GitLab token is refused before the body: {gitlab}");
    let hook = partial(&format!("/api/v1/build_hooks/{}", "ab".repeat(24)), "", 20 << 20);
    assert!(hook.starts_with("HTTP/1.1 404"), "an unknown build hook is refused before the body: {hook}");
}

#[test]
fn a_repository_cannot_make_the_server_run_its_code() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    let repo = Repo::new(&tmp.path().join("repo"));
    connect(&server, "app", &repo, &[]);
    let marker = tmp.path().join("pwned");
    // A .gitconfig in the checkout (where a careless HOME would point) that
    // makes `git log` run a program of the repository's when it meets a
    // signed commit.
    let script = format!("#!/bin/sh\ntouch {}\n", marker.display());
    let toml = "[build]\ncommand = \"mkdir -p out && echo ok > out/index.html\"\npublish = \"out\"\n";
    write_tree(
        &repo.work,
        &[
            ("chanto.toml", toml),
            (".gitconfig", "[log]\n\tshowSignature = true\n[gpg]\n\tprogram = ./x\n"),
            ("x", &script),
        ],
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(repo.work.join("x"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    git(&repo.work, &["add", "-A"]);
    // A commit object with a gpgsig header, written by hand.
    let tree = git(&repo.work, &["write-tree"]);
    let commit_text = format!(
        "tree {tree}\nauthor A <a@example.com> 1700000000 +0000\ncommitter A <a@example.com> 1700000000 +0000\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n -----END PGP SIGNATURE-----\n\nsigned\n"
    );
    let obj = tmp.path().join("commit.txt");
    std::fs::write(&obj, commit_text).unwrap();
    let commit = git(&repo.work, &["hash-object", "-t", "commit", "-w", obj.to_str().unwrap()]);
    git(&repo.work, &["update-ref", "refs/heads/main", &commit]);
    git(&repo.work, &["push", "-q", "origin", "main"]);
    let id = server.cli(&["builds", "start", "--site", "app", "--json"]).ok().json()["id"].as_str().unwrap().to_owned();
    let b = wait_build(&server, &id);
    assert_eq!(b["state"], "succeeded", "{b}");
    assert!(!marker.exists(), "the repository's program ran on the server");
}

/// What a build tries from inside its sandbox; each attempt prints one line.
const PROBE: &str = r#"
import os, socket, urllib.request
def direct(name, addr):
    host, port = addr.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, int(port)))
        print(f"DIRECT {name}: CONNECTED")
    except OSError as e:
        print(f"DIRECT {name}: failed ({e.__class__.__name__})")
    finally:
        s.close()
def proxy(name, request):
    host, port = os.environ["HTTP_PROXY"].removeprefix("http://").rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(request.encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    print(f"PROXY {name}: " + data.decode(errors="replace").replace("\r\n", " | "))
for name in ["API", "ADMIN", "EDGE"]:
    direct(name, os.environ[name])
    proxy(name, f"GET http://{os.environ[name]}/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
direct("METADATA", "169.254.169.254:80")
proxy("METADATA", "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n")
# The stand-in listens on loopback, which NO_PROXY keeps for the build's own servers.
os.environ.pop("NO_PROXY"); os.environ.pop("no_proxy")
print("ALLOWED: " + urllib.request.urlopen(f"http://{os.environ['ALLOWED']}/pkg", timeout=10).read().decode())
try:
    print("HOME FILE: " + open(os.environ["PLANTED"]).read())
except OSError as e:
    print(f"HOME FILE: unreadable ({e.__class__.__name__})")
print("VISIBLE: " + " ".join(sorted(p for p in ["/root", "/home", "/run", "/var/lib", "/etc/shadow"] if os.path.exists(p))))
found = []
for pid in os.listdir("/proc"):
    try:
        if b"other-build-secret" in open(f"/proc/{pid}/environ", "rb").read():
            found.append(pid)
    except OSError:
        pass
print(f"OTHER ENV: {found or 'not found'}; processes visible: {sum(p.isdigit() for p in os.listdir('/proc'))}")
print(f"UID: {os.getuid()}")
os.makedirs("out", exist_ok=True)
open("out/index.html", "w").write("probed")
"#;

/// A tiny HTTP server on loopback (port 0): the stand-in for a package registry.
fn registry() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            use std::io::{Read, Write};
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\nregistry answer");
        }
    });
    addr
}

#[test]
#[ignore = "needs root; scripts/test runs ignored tests"]
fn a_build_reaches_neither_the_host_nor_other_builds_but_reaches_allowed_destinations() {
    assert_eq!(rustix_uid(), 0, "this test needs root: builds get a user each only when the server is root");
    let tmp = reachable_tempdir();
    // The server user's home, with what `chanto login` leaves there.
    let home = tmp.path().join("home");
    let planted = home.join(".config/chanto/config.toml");
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::write(&planted, "token = \"planted-admin-token\"\n").unwrap();
    let allowed = registry();
    let server = Server::start_cmd_env(
        "serve",
        &tmp.path().join("data"),
        &["--public-api-url", "http://chanto.test", "--build-concurrency", "2", "--build-egress-allow", &allowed],
        &[("HOME", &home)],
    );
    let repo = Repo::new(&tmp.path().join("repo"));
    connect(&server, "probe", &repo, &[]);
    for (k, v) in [
        ("API", server.api_url_addr()),
        ("ADMIN", server.admin.clone()),
        ("EDGE", server.edge.clone()),
        ("ALLOWED", allowed.clone()),
        ("PLANTED", planted.display().to_string()),
    ] {
        server.cli(&["env", "set", "--site", "probe", k, &v]).ok();
    }
    let toml = "[build]\ncommand = \"python3 probe.py\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", toml), ("probe.py", PROBE)], "probe");

    // Another site's build holds a secret in its environment while the probe runs.
    let other = Repo::new(&tmp.path().join("other"));
    connect(&server, "other", &other, &[]);
    server.cli(&["env", "set", "--site", "other", "--secret", "OTHER"]).stdin("other-build-secret-1234\n").ok();
    other.commit(
        "main",
        &[("chanto.toml", "[build]\ncommand = \"echo holding && sleep 600\"\npublish = \"out\"\n")],
        "hold",
    );
    let holding =
        server.cli(&["builds", "start", "--site", "other", "--json"]).ok().json()["id"].as_str().unwrap().to_owned();
    wait_for("the other build to run", Duration::from_secs(30), || {
        log_of(&server, &holding).contains("holding").then_some(())
    });

    let id =
        server.cli(&["builds", "start", "--site", "probe", "--json"]).ok().json()["id"].as_str().unwrap().to_owned();
    let b = wait_build(&server, &id);
    let log = log_of(&server, &id);
    assert_eq!(b["state"], "succeeded", "{b}\n{log}");
    server.cli(&["builds", "cancel", &holding]).ok();
    let line = |prefix: &str| -> String {
        log.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line in\n{log}")).to_owned()
    };
    for name in ["API", "ADMIN", "EDGE"] {
        let direct = line(&format!("DIRECT {name}:"));
        assert!(direct.contains("failed (ConnectionRefusedError)"), "{direct}");
        let proxied = line(&format!("PROXY {name}:"));
        assert!(
            proxied.contains("HTTP/1.1 403 Forbidden") && proxied.contains("127.0.0.1 is a loopback address"),
            "{proxied}"
        );
    }
    let direct = line("DIRECT METADATA:");
    assert!(direct.contains("failed (OSError)"), "no route out of the sandbox: {direct}");
    let proxied = line("PROXY METADATA:");
    assert!(
        proxied.contains("HTTP/1.1 403 Forbidden") && proxied.contains("169.254.169.254 is a link-local address"),
        "{proxied}"
    );
    assert_eq!(line("ALLOWED:"), "ALLOWED: registry answer");
    assert_eq!(line("HOME FILE:"), "HOME FILE: unreadable (FileNotFoundError)");
    assert_eq!(line("VISIBLE:"), "VISIBLE: ", "only /usr, /lib*, /bin, /sbin, a minimal /etc, the tree and /tmp");
    let env = line("OTHER ENV:");
    assert!(env.starts_with("OTHER ENV: not found;"), "{env}");
    // Two builds ran at once, each with a user of its own.
    let uid: u32 = line("UID:").trim_start_matches("UID: ").parse().unwrap();
    assert!(uid >= 100_000, "{uid}");
    assert!(!log.contains("planted-admin-token"));
}

fn rustix_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap().stdout;
    String::from_utf8_lossy(&out).trim().parse().unwrap()
}

#[test]
fn without_a_working_sandbox_builds_are_refused_with_the_package_named() {
    let tmp = reachable_tempdir();
    let server = Server::start(
        &tmp.path().join("data"),
        &["--public-api-url", "http://chanto.test", "--bwrap", "/nonexistent/bwrap"],
    );
    assert!(server.stderr().contains("apt-get install bubblewrap"), "{}", server.stderr());
    let repo = Repo::new(&tmp.path().join("repo"));
    connect(&server, "app", &repo, &[]);
    let marker = tmp.path().join("ran");
    let toml = format!(
        "[build]\ncommand = \"touch {} && mkdir -p out && echo x > out/index.html\"\npublish = \"out\"\n",
        marker.display()
    );
    repo.commit("main", &[("chanto.toml", &toml)], "v1");
    let id = server.cli(&["builds", "start", "--site", "app", "--json"]).ok().json()["id"].as_str().unwrap().to_owned();
    let b = wait_build(&server, &id);
    assert_eq!(b["state"], "failed", "{b}");
    let error = b["error"].as_str().unwrap();
    assert!(error.contains("only inside its sandbox") && error.contains("apt-get install bubblewrap"), "{error}");
    assert!(!marker.exists(), "the repository's command ran outside a sandbox");
}

#[test]
fn a_build_is_held_to_its_limits() {
    let tmp = reachable_tempdir();
    let server = Server::start(
        &tmp.path().join("data"),
        &[
            "--public-api-url",
            "http://chanto.test",
            "--build-memory",
            "200M",
            "--build-disk",
            "64M",
            "--build-tmp",
            "16M",
        ],
    );
    let repo = Repo::new(&tmp.path().join("repo"));
    connect(&server, "app", &repo, &[]);
    let script = r#"
import os
try:
    bytearray(400 << 20)
    print("MEMORY: allocated")
except MemoryError:
    print("MEMORY: refused")
try:
    with open("big", "wb") as f:
        f.write(b"0" * (100 << 20))
    print("FILE: written")
except OSError as e:
    print(f"FILE: refused ({e.strerror})")
os.remove("big")
try:
    with open("/tmp/t", "wb") as f:
        f.write(b"0" * (20 << 20))
    print("TMP: written")
except OSError as e:
    print(f"TMP: refused ({e.strerror})")
os.makedirs("out", exist_ok=True)
open("out/index.html", "w").write("ok")
"#;
    let toml = "[build]\ncommand = \"python3 limits.py\"\npublish = \"out\"\n";
    repo.commit("main", &[("chanto.toml", toml), ("limits.py", script)], "limits");
    let id = server.cli(&["builds", "start", "--site", "app", "--json"]).ok().json()["id"].as_str().unwrap().to_owned();
    let b = wait_build(&server, &id);
    let log = log_of(&server, &id);
    assert_eq!(b["state"], "succeeded", "{b}\n{log}");
    assert!(log.lines().any(|l| l == "MEMORY: refused"), "--build-memory 200M: {log}");
    assert!(log.lines().any(|l| l == "FILE: refused (File too large)"), "--build-disk 64M: {log}");
    assert!(log.lines().any(|l| l == "TMP: refused (No space left on device)"), "--build-tmp 16M: {log}");
}

/// A build publishes a subdirectory: the platform reads its rule files from
/// the repository root (Netlify's `netlify.toml`, Firebase's `firebase.json`),
/// so they go into the deploy with it; Firebase's ignore list leaves files
/// out; a rule file the build swapped for a symlink is not followed.
#[test]
fn a_build_carries_the_root_rule_files_of_its_platform() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    let repo = Repo::new(&tmp.path().join("repo"));
    server.cli(&["sites", "create", "moved"]).ok();
    server.cli(&["git", "connect", &repo.url(), "--site", "moved"]).ok();
    let build = |server: &Server| {
        let id = server.cli(&["builds", "start", "--site", "moved", "--json"]).ok().json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let b = wait_build(server, &id);
        (b, log_of(server, &id))
    };

    // Netlify: netlify.toml at the root, publish = "dist"; its redirects and headers count.
    let netlify = "[build]\ncommand = \"mkdir -p dist && echo netlify > dist/index.html\"\npublish = \"dist\"\n\n\
                   [[redirects]]\nfrom = \"/old\"\nto = \"/\"\nstatus = 301\n\n\
                   [[headers]]\nfor = \"/*\"\n[headers.values]\nX-From-Root = \"netlify.toml\"\n";
    repo.commit("main", &[("netlify.toml", netlify)], "netlify project");
    let (b, log) = build(&server);
    assert_eq!(b["state"], "succeeded", "{b}\n{log}");
    assert_eq!(server.get("moved.localhost", "/").text(), "netlify\n");
    let r = server.get("moved.localhost", "/old");
    assert_eq!((r.status, r.header("location")), (301, Some("/")), "the root netlify.toml's redirect");
    assert_eq!(server.get("moved.localhost", "/").header("x-from-root"), Some("netlify.toml"));
    assert_eq!(server.get("moved.localhost", "/netlify.toml").status, 404, "rule files are not served");

    // Firebase: no build, hosting.public checked in; its default ignores leave dotfiles out.
    let firebase =
        r#"{"hosting": {"public": "public", "redirects": [{"source": "/legacy", "destination": "/", "type": 302}]}}"#;
    std::fs::remove_file(repo.work.join("netlify.toml")).unwrap();
    let c = repo.commit(
        "main",
        &[
            ("firebase.json", firebase),
            ("public/index.html", "firebase"),
            ("public/.env", "SECRET=1"),
            ("public/node_modules/x.js", "x"),
        ],
        "firebase project",
    );
    let (b, log) = build(&server);
    assert_eq!(b["state"], "succeeded", "{b}\n{log}");
    assert!(log.contains("build spec from firebase.json"), "{c}: {log}");
    assert_eq!(server.get("moved.localhost", "/").text(), "firebase");
    let r = server.get("moved.localhost", "/legacy");
    assert_eq!((r.status, r.header("location")), (302, Some("/")), "the root firebase.json's redirect");
    assert_eq!(server.get("moved.localhost", "/.env").status, 404, "hosting.ignore's defaults");
    assert_eq!(server.get("moved.localhost", "/node_modules/x.js").status, 404);

    // Hostile: the build swaps the root rule file for a symlink to a host file.
    let swap = "[build]\ncommand = \"mkdir -p dist && echo swapped > dist/index.html && rm netlify.toml && ln -s /etc/passwd netlify.toml\"\npublish = \"dist\"\n";
    std::fs::remove_file(repo.work.join("firebase.json")).unwrap();
    repo.commit("main", &[("netlify.toml", swap)], "swap");
    let (b, log) = build(&server);
    assert_eq!(b["state"], "succeeded", "{b}\n{log}");
    assert_eq!(server.get("moved.localhost", "/").text(), "swapped\n");
    // Had the symlink been followed, /etc/passwd would have failed the deploy as a netlify.toml.
    assert_eq!(server.get("moved.localhost", "/old").status, 404, "no rule file came with this deploy");
}

/// The site's settings name a base directory (Netlify's base directory set
/// in its UI) holding a netlify.toml: the build reads
/// `<base>/netlify.toml`, runs its command in the base, publishes its
/// `publish` relative to the base, and its redirects and headers count. The
/// repository is untrusted: a base directory or netlify.toml that is a
/// symlink out of the checkout is never followed, and the build says so.
#[test]
fn a_build_reads_netlify_toml_from_the_base_directory_of_its_settings() {
    let tmp = reachable_tempdir();
    let server = start(tmp.path());
    let repo = Repo::new(&tmp.path().join("repo"));
    connect(&server, "mono", &repo, &["--base", "site"]);
    let build = |server: &Server| {
        let id =
            server.cli(&["builds", "start", "--site", "mono", "--json"]).ok().json()["id"].as_str().unwrap().to_owned();
        let b = wait_build(server, &id);
        (b, log_of(server, &id))
    };

    let netlify = "[build]\ncommand = \"mkdir -p out && echo \\\"from $(basename \\\"$PWD\\\")\\\" > out/index.html\"\n\
                   publish = \"out\"\n\n\
                   [[redirects]]\nfrom = \"/old\"\nto = \"/\"\nstatus = 301\n\n\
                   [[headers]]\nfor = \"/*\"\n[headers.values]\nX-From = \"site/netlify.toml\"\n";
    repo.commit("main", &[("site/netlify.toml", netlify), ("index.html", "the repository root")], "monorepo");
    let (b, log) = build(&server);
    assert_eq!(b["state"], "succeeded", "{b}\n{log}");
    assert!(log.contains("build spec from site/netlify.toml: 1 phase(s), publish \"site/out\""), "{log}");
    assert_eq!(
        server.get("mono.localhost", "/").text(),
        "from site\n",
        "the command ran in the base, site/out deployed"
    );
    let r = server.get("mono.localhost", "/old");
    assert_eq!((r.status, r.header("location")), (301, Some("/")), "the base's netlify.toml's redirect");
    assert_eq!(server.get("mono.localhost", "/").header("x-from"), Some("site/netlify.toml"));
    assert_eq!(server.get("mono.localhost", "/netlify.toml").status, 404, "rule files are not served");

    // Hostile: the base directory is a symlink to a directory of the host
    // holding a netlify.toml that would build and publish the host's files.
    let host = tmp.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let host_toml = "[build]\ncommand = \"echo HOST-CONFIG-READ\"\npublish = \"/\"\n";
    std::fs::write(host.join("netlify.toml"), host_toml).unwrap();
    std::fs::remove_dir_all(repo.work.join("site")).unwrap();
    std::os::unix::fs::symlink(&host, repo.work.join("site")).unwrap();
    repo.commit("main", &[], "base directory is a symlink");
    let (b, log) = build(&server);
    assert_eq!(b["state"], "failed", "{b}\n{log}");
    let error = b["error"].as_str().unwrap();
    assert!(error.contains("site/netlify.toml is not read: site is not a directory of the repository"), "{b}");
    assert!(!log.contains("HOST-CONFIG-READ") && !error.contains("HOST-CONFIG-READ"), "{log}");

    // Hostile: the base directory is real, its netlify.toml a symlink to a host file.
    std::fs::remove_file(repo.work.join("site")).unwrap();
    std::fs::create_dir_all(repo.work.join("site")).unwrap();
    std::os::unix::fs::symlink(host.join("netlify.toml"), repo.work.join("site/netlify.toml")).unwrap();
    repo.commit("main", &[("site/index.html", "site")], "netlify.toml is a symlink");
    let (b, log) = build(&server);
    assert_eq!(b["state"], "failed", "{b}\n{log}");
    let error = b["error"].as_str().unwrap();
    assert!(error.contains("site/netlify.toml is not read: it is a symlink"), "{b}");
    assert!(!log.contains("HOST-CONFIG-READ"), "{log}");
    // The last good deploy stays live.
    assert_eq!(server.get("mono.localhost", "/").text(), "from site\n");
}

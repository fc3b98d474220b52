//! Configuration as code against a real server (issue 19): `chanto export`
//! writes what is live, `chanto plan` compares a file with it, `chanto
//! apply` carries a saved plan out — round trips, concurrent changes,
//! destroys, a failure half way and its re-run, secrets that never leave
//! their references, and who may.

mod util;

use std::path::Path;

use util::{Cli, Run, Server};

const API_KEY: &str = "ak-4f9c2e7d1b-secret-value";
const HOOK_URL: &str = "http://127.0.0.1:9/hooks/s3cr3t-path";
const HOOK_SECRET: &str = "whsec_0123456789abcdef";
const PASSWORD: &str = "correct horse battery staple";
const GIT_TOKEN: &str = "ghp_gittoken0123456789";
const GH_TOKEN: &str = "ghp_statustoken987654321";

/// `chanto ARGS` against `server` with the secrets' variables set as the
/// made-up names of an export of site `docs` ask for.
fn with_secrets(server: &Server, args: &[&str]) -> Cli {
    server
        .cli(args)
        .env("DOCS_API_KEY", API_KEY)
        .env("DOCS_HOOKS_URL", HOOK_URL)
        .env("DOCS_HOOKS_SECRET", HOOK_SECRET)
        .env("DOCS_REVIEWER_PASSWORD", PASSWORD)
}

fn code(r: &Run) -> i32 {
    r.out.status.code().unwrap_or(-1)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// A site set up by hand, the way a team has it before config as code.
fn imperative_setup(server: &Server) {
    server.cli(&["sites", "create", "docs"]).ok();
    server.cli(&["sites", "create", "blog", "--production-branch", "trunk"]).ok();
    server.cli(&["env", "set", "--site", "docs", "NODE_VERSION", "20"]).ok();
    server.cli(&["env", "set", "--site", "docs", "--secret", "API_KEY", API_KEY]).ok();
    server
        .cli(&["access", "set", "--site", "docs", "--previews", "--user", "reviewer", "--password-stdin"])
        .stdin(&format!("{PASSWORD}\n"))
        .ok();
    server.cli(&["domains", "add", "docs.example.test", "--site", "docs", "--no-www"]).ok();
    let sub = server
        .cli(&[
            "notify",
            "add",
            "webhook",
            "--site",
            "docs",
            "--url",
            HOOK_URL,
            "--secret-env",
            "HOOK_SECRET_VAR",
            "--json",
        ])
        .env("HOOK_SECRET_VAR", HOOK_SECRET)
        .ok()
        .json();
    assert!(sub["id"].as_str().unwrap().starts_with("sub_"));
    server
        .cli(&["git", "connect", "https://git.example.test/acme/docs.git", "--site", "docs", "--token-env", "GIT_T"])
        .env("GIT_T", GIT_TOKEN)
        .ok();
    server.cli(&["notify", "add", "github", "--site", "docs", "--token-env", "GH_T"]).env("GH_T", GH_TOKEN).ok();
}

/// The value behind each reference an export made up, by what it stands for.
fn export_values(server: &Server) -> Vec<(String, String)> {
    let export = server.cli(&["export", "--json"]).ok().json();
    let mut out = Vec::new();
    for s in export["secrets"].as_array().unwrap() {
        let var = s["reference"].as_str().unwrap().strip_prefix("env:").unwrap().to_owned();
        let used = s["used_by"][0].as_str().unwrap();
        let value = if used.ends_with(".url") {
            HOOK_URL
        } else if used.ends_with(".secret") {
            HOOK_SECRET
        } else if used.ends_with("git.credential") {
            GIT_TOKEN
        } else if used.ends_with(".token") {
            GH_TOKEN
        } else if used.contains("API_KEY") {
            API_KEY
        } else {
            panic!("unexpected secret {s}")
        };
        out.push((var, value.to_owned()));
    }
    out
}

#[test]
fn export_plan_apply_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    imperative_setup(&server);
    let file = tmp.path().join("chanto.platform.toml");

    // Export: every site, secrets as references whose names it made up.
    let r = server.cli(&["export", "--out", file.to_str().unwrap()]).ok();
    let exported = read(&file);
    for want in [
        "[site.docs]",
        "[site.blog]",
        "production_branch = \"trunk\"",
        "NODE_VERSION = \"20\"",
        "API_KEY = { secret = \"env:DOCS_API_KEY\" }",
        "[site.docs.domains.\"docs.example.test\"]",
        "channel = \"webhook\"",
        "channel = \"github\"",
        "repository = \"acme/docs\"",
        "repository = \"https://git.example.test/acme/docs.git\"",
        "token = \"env:DOCS_GIT_TOKEN\"",
    ] {
        assert!(exported.contains(want), "{want} in\n{exported}");
    }
    for secret in [API_KEY, HOOK_URL, HOOK_SECRET, PASSWORD, GIT_TOKEN, GH_TOKEN] {
        assert!(!exported.contains(secret), "the export holds no secret value\n{exported}");
    }
    assert!(exported.contains("$argon2id$"), "a password stays a hash:\n{exported}");
    assert!(r.stderr().contains("env:DOCS_API_KEY"), "it lists the references to set:\n{}", r.report());
    server.cli(&["export", "--out", file.to_str().unwrap()]).fails();

    // Export → plan: nothing to change (exit 0), once the references resolve.
    let values = export_values(&server);
    assert_eq!(values.len(), 5, "API key, webhook URL and secret, git token, status token: {values:?}");
    let hooks = |mut c: Cli| {
        for (k, v) in &values {
            c = c.env(k, v);
        }
        c
    };
    let r = hooks(with_secrets(&server, &["plan", "-f", file.to_str().unwrap()])).run();
    assert_eq!(code(&r), 0, "{}", r.report());
    assert!(r.stdout().contains("No changes"), "{}", r.report());

    // A reference that does not resolve: file:line:column, exit 1.
    let r = server.cli(&["plan", "-f", file.to_str().unwrap()]).run();
    assert_eq!(code(&r), 1, "{}", r.report());
    let line = exported.lines().position(|l| l.contains("env:DOCS_API_KEY")).unwrap() + 1;
    assert!(r.stderr().contains(&format!("chanto.platform.toml:{line}:")), "{}", r.report());

    // One field changed: exactly that change (exit 2).
    let docs_at = exported.find("[site.docs]\n").unwrap();
    let (head, tail) = exported.split_at(docs_at);
    let edited = format!("{head}{}", tail.replacen("keep_deploys = 0", "keep_deploys = 5", 1));
    assert_ne!(edited, exported, "{exported}");
    std::fs::write(&file, &edited).unwrap();
    let plan = tmp.path().join("plan.json");
    let r =
        hooks(with_secrets(&server, &["plan", "-f", file.to_str().unwrap(), "--out", plan.to_str().unwrap()])).run();
    assert_eq!(code(&r), 2, "{}", r.report());
    assert!(r.stdout().contains("~ site.docs"), "{}", r.report());
    assert!(r.stdout().contains("Plan: 0 to add, 1 to change, 0 to destroy."), "{}", r.report());
    let json = hooks(with_secrets(&server, &["plan", "-f", file.to_str().unwrap(), "--json"])).run();
    let json: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    assert_eq!(json["changes"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json["changes"][0]["fields"][0]["field"], "keep_deploys");
    assert_eq!(json["changes"][0]["fields"][0]["after"], "5");
    let saved = read(&plan);
    for secret in [API_KEY, HOOK_URL, HOOK_SECRET, PASSWORD, GIT_TOKEN, GH_TOKEN] {
        assert!(!saved.contains(secret), "the saved plan holds no secret value");
    }

    // Apply → export equals the edited file.
    let r = hooks(with_secrets(&server, &["apply", plan.to_str().unwrap()])).ok();
    assert!(r.stdout().contains("~ site.docs"), "{}", r.report());
    let again = tmp.path().join("again.toml");
    server.cli(&["export", "--out", again.to_str().unwrap()]).ok();
    assert_eq!(read(&again), edited);
    // Applying the same plan again changes nothing: all of it is in place.
    let r = hooks(with_secrets(&server, &["apply", plan.to_str().unwrap()])).ok();
    assert!(r.stdout().contains("Already in place"), "{}", r.report());

    // A concurrent change between plan and apply: apply refuses.
    std::fs::write(&file, edited.replacen("keep_deploys = 5", "keep_deploys = 7", 1)).unwrap();
    hooks(with_secrets(&server, &["plan", "-f", file.to_str().unwrap(), "--out", plan.to_str().unwrap()])).run();
    server.cli(&["sites", "update", "docs", "--keep-deploys", "9"]).ok();
    let r = hooks(with_secrets(&server, &["apply", plan.to_str().unwrap()])).fails();
    assert!(r.stderr().contains("site.docs"), "{}", r.report());
    assert!(r.stderr().contains("make the plan again"), "{}", r.report());

    // A secret's value changed behind the same reference: a sensitive change.
    let r = hooks(with_secrets(&server, &["plan", "-f", file.to_str().unwrap()]))
        .env("DOCS_API_KEY", "another-value-1")
        .run();
    assert_eq!(code(&r), 2, "{}", r.report());
    assert!(r.stdout().contains("value behind env:DOCS_API_KEY changed"), "{}", r.report());
    assert!(!r.stdout().contains("another-value-1"));

    // Destroys need --allow-destroy.
    let without_blog: String = {
        let mut out = String::new();
        let mut skip = false;
        for l in read(&file).lines() {
            if l.starts_with('[') {
                skip = l.starts_with("[site.blog");
            }
            if !skip {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    };
    std::fs::write(&file, &without_blog).unwrap();
    let r =
        hooks(with_secrets(&server, &["plan", "-f", file.to_str().unwrap(), "--out", plan.to_str().unwrap()])).run();
    assert!(r.stdout().contains("- site.blog"), "{}", r.report());
    let r = hooks(with_secrets(&server, &["apply", plan.to_str().unwrap()])).fails();
    assert!(r.stderr().contains("--allow-destroy"), "{}", r.report());
    server.cli(&["sites", "show", "blog"]).ok();
    hooks(with_secrets(&server, &["apply", plan.to_str().unwrap(), "--allow-destroy"])).ok();
    server.cli(&["sites", "show", "blog"]).fails();

    // The audit log has one entry per change.
    let audit = server.cli(&["audit", "list", "--json", "--limit", "500"]).ok().json();
    let entries: Vec<&serde_json::Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("platform_apply"))
        .collect();
    assert!(entries.iter().any(|e| e["target"] == "site.blog" && e["action"] == "platform_apply_destroy"), "{audit}");
    assert!(entries.iter().any(|e| e["target"] == "site.docs" && e["action"] == "platform_apply_update"), "{audit}");
}

#[test]
fn a_file_creates_sites_and_an_apply_that_stops_half_way_runs_again() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let dir = tmp.path().join("platform");
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/hook-key"), format!("{HOOK_SECRET}\n")).unwrap();
    let repo = tmp.path().join("repos/shop.git");
    let shop = r#"[site.shop]
production_branch = "live"
keep_deploys = 10
profile = "netlify"

[site.shop.git]
repository = "REPO"

[site.shop.env]
API_KEY = { secret = "env:SHOP_KEY" }
MODE = "production"

[site.shop.access.previews]
users = { ann = "env:SHOP_ANN" }

[site.shop.domains."shop.example.test"]
primary = true

[site.shop.notify.hooks]
channel = "webhook"
url = "env:SHOP_HOOK"
secret = "file:secrets/hook-key"
"#;
    let shop = shop.replace("REPO", repo.to_str().unwrap());
    std::fs::write(dir.join("shop.toml"), &shop).unwrap();
    std::fs::write(dir.join("other.toml"), "[site.other]\n").unwrap();
    let cli =
        |args: &[&str]| server.cli(args).env("SHOP_KEY", API_KEY).env("SHOP_ANN", PASSWORD).env("SHOP_HOOK", HOOK_URL);
    let plan = tmp.path().join("plan.json");
    // Only the sites the files declare: others (the squatter below) are left alone.
    let only = ["--site", "shop", "--site", "other"];
    let r = cli(&[&["plan", "-f", dir.to_str().unwrap(), "--out", plan.to_str().unwrap()][..], &only].concat()).run();
    assert_eq!(code(&r), 2, "{}", r.report());
    assert!(r.stdout().contains("+ site.shop.domain[\"shop.example.test\"]"), "{}", r.report());

    // Someone else takes the domain between plan and apply: a plan made
    // now says so, and the apply refuses before changing anything.
    server.cli(&["sites", "create", "squatter"]).ok();
    server.cli(&["domains", "add", "shop.example.test", "--site", "squatter", "--no-www"]).ok();
    let r = cli(&[&["plan", "-f", dir.to_str().unwrap()][..], &only].concat()).run();
    assert_eq!(code(&r), 1, "a plan made now sees the claim: {}", r.report());
    assert!(r.stderr().contains("shop.example.test belongs to site squatter"), "{}", r.report());
    let r = cli(&["apply", plan.to_str().unwrap()]).fails();
    assert!(r.stderr().contains("belongs to site squatter"), "{}", r.report());
    server.cli(&["sites", "show", "shop"]).fails();
    server.cli(&["domains", "remove", "shop.example.test", "--site", "squatter"]).ok();

    // The repository is not on the server yet: the apply stops at the git
    // connection, keeping what it made before it.
    let r = cli(&["apply", plan.to_str().unwrap()]).run();
    assert_eq!(code(&r), 1, "{}", r.report());
    assert!(r.stdout().contains("+ site.shop\n"), "{}", r.report());
    assert!(r.stdout().contains("Failed: site.shop.git"), "{}", r.report());
    assert!(
        r.stdout().contains("Not applied") && r.stdout().contains("site.shop.domain[\"shop.example.test\"]"),
        "{}",
        r.report()
    );
    assert!(r.stderr().contains("does not exist on the server"), "{}", r.report());
    server.cli(&["sites", "show", "shop"]).ok();

    // Fixed: the same plan applies the rest.
    util::git::git(tmp.path(), &["init", "-q", "--bare", repo.to_str().unwrap()]);
    let r = cli(&["apply", plan.to_str().unwrap()]).ok();
    assert!(r.stdout().contains("Already in place") && r.stdout().contains("  site.shop\n"), "{}", r.report());
    assert!(r.stdout().contains("+ site.shop.git"), "{}", r.report());

    // What is live is what the files say: a plan of them changes nothing,
    // and the secrets took their values.
    let r = cli(&[&["plan", "-f", dir.to_str().unwrap()][..], &only].concat()).run();
    assert_eq!(code(&r), 0, "{}", r.report());
    let r = cli(&["plan", "-f", dir.to_str().unwrap()]).run();
    assert!(r.stdout().contains("- site.squatter"), "without --site the files are the whole truth\n{}", r.report());
    let env = server.cli(&["env", "list", "--site", "shop", "--json"]).ok().json();
    assert!(env.to_string().contains("MODE"), "{env}");
    server.cli(&["deploy", write_site(tmp.path()).to_str().unwrap(), "--site", "shop", "--branch", "preview-1"]).ok();
    let host = "preview-1--shop.localhost";
    assert_eq!(server.get(host, "/").status, 401, "the previews' password applies");
    let auth = format!("Basic {}", base64_encode(&format!("ann:{PASSWORD}")));
    assert_eq!(server.get_with(host, "/", &[("authorization", &auth)]).status, 200);

    // The export writes the files' references back, not made-up names.
    let out = tmp.path().join("export.toml");
    server.cli(&["export", "--out", out.to_str().unwrap()]).ok();
    let exported = read(&out);
    for want in ["env:SHOP_KEY", "env:SHOP_ANN", "env:SHOP_HOOK", "file:secrets/hook-key", "[site.shop.notify.hooks]"] {
        assert!(exported.contains(want), "{want} in\n{exported}");
    }

    // A new password behind the same reference: the live hash no longer
    // verifies it, so the plan shows it (masked) and the apply re-hashes.
    let new_password = "a different passphrase entirely";
    let cli2 = |args: &[&str]| cli(args).env("SHOP_ANN", new_password);
    let r = cli2(&[&["plan", "-f", dir.to_str().unwrap(), "--out", plan.to_str().unwrap()][..], &only].concat()).run();
    assert_eq!(code(&r), 2, "{}", r.report());
    assert!(
        r.stdout().contains("users[\"ann\"]") && r.stdout().contains("value behind env:SHOP_ANN changed"),
        "{}",
        r.report()
    );
    assert!(!r.stdout().contains(new_password) && !read(&plan).contains(new_password));
    cli2(&["apply", plan.to_str().unwrap()]).ok();
    assert_eq!(server.get_with(host, "/", &[("authorization", &auth)]).status, 401, "the old password is refused");
    let auth = format!("Basic {}", base64_encode(&format!("ann:{new_password}")));
    assert_eq!(server.get_with(host, "/", &[("authorization", &auth)]).status, 200);
    let r = cli2(&[&["plan", "-f", dir.to_str().unwrap()][..], &only].concat()).run();
    assert_eq!(code(&r), 0, "the new hash verifies the new password: {}", r.report());

    // A saved plan whose configuration was edited after planning: the
    // server plans that configuration again, finds a change the plan did
    // not show, and refuses.
    cli2(&[&["plan", "-f", dir.to_str().unwrap(), "--out", plan.to_str().unwrap()][..], &only].concat()).run();
    let mut saved: serde_json::Value = serde_json::from_str(&read(&plan)).unwrap();
    let config = saved["config"].as_str().unwrap().replace("keep_deploys = 10", "keep_deploys = 11");
    saved["config"] = config.into();
    std::fs::write(&plan, saved.to_string()).unwrap();
    let r = cli2(&["apply", plan.to_str().unwrap()]).fails();
    assert!(r.stderr().contains("site.shop changed since the plan was made"), "{}", r.report());
    let r = server.cli(&["sites", "update", "shop"]).ok();
    assert!(r.stdout().contains("10"), "nothing applied: {}", r.report());

    // Changes chanto has no operation for are refused at plan time, named.
    for (edit, want) in [
        ("primary = true\n", "primary = true\nbranch = \"staging\"\n", "cannot change in place"),
        ("primary = true\n", "primary = false\n", "keeps a primary domain"),
    ]
    .map(|(from, to, want)| (shop.replace(from, to), want))
    {
        std::fs::write(dir.join("shop.toml"), &edit).unwrap();
        let r = cli2(&[&["plan", "-f", dir.to_str().unwrap()][..], &only].concat()).run();
        assert_eq!(code(&r), 1, "{}", r.report());
        assert!(
            r.stderr().contains("site.shop.domain[\"shop.example.test\"]") && r.stderr().contains(want),
            "{}",
            r.report()
        );
    }
}

#[test]
fn bad_files_plans_and_callers_are_refused_with_the_place_named() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let file = tmp.path().join("chanto.platform.toml");
    for (text, want) in [
        ("[site.docs]\nkeep_deploys = \"many\"\n", "chanto.platform.toml:2:"),
        ("[site.docs]\nunknown_key = 1\n", "chanto.platform.toml:2:"),
        ("[site.docs.env]\nKEY = { secret = \"plain-value\" }\n", "chanto.platform.toml:2:"),
        ("[site.docs\n", "chanto.platform.toml:1:"),
    ] {
        std::fs::write(&file, text).unwrap();
        let r = server.cli(&["plan", "-f", file.to_str().unwrap()]).run();
        assert_eq!(code(&r), 1, "{text}\n{}", r.report());
        assert!(r.stderr().contains(want), "{text}: {want}\n{}", r.report());
    }
    std::fs::write(&file, "#".repeat(2 << 20)).unwrap();
    let r = server.cli(&["plan", "-f", file.to_str().unwrap()]).run();
    assert_eq!(code(&r), 1, "{}", r.report());

    // A saved plan that is not one.
    let plan = tmp.path().join("plan.json");
    std::fs::write(&plan, "{\"format_version\": 99}").unwrap();
    let r = server.cli(&["apply", plan.to_str().unwrap()]).fails();
    assert!(r.stderr().contains("plan.json"), "{}", r.report());

    // Only an admin may: a developer's token is refused, and so is no token.
    server.cli(&["users", "create", "dev", "--role", "developer"]).ok();
    let token =
        server.cli(&["tokens", "create", "t", "--user", "dev", "--scope", "write"]).ok().stdout().trim().to_owned();
    std::fs::write(&file, "[site.docs]\n").unwrap();
    let r = Cli::new(&["plan", "-f", file.to_str().unwrap()])
        .env("CHANTO_SERVER", &server.api_url)
        .env("CHANTO_TOKEN", &token)
        .run();
    assert_eq!(code(&r), 1, "{}", r.report());
    assert!(r.stderr().contains("admin"), "{}", r.report());
    let r = Cli::new(&["export"]).env("CHANTO_SERVER", &server.api_url).env("CHANTO_TOKEN", &token).run();
    assert!(r.stderr().contains("admin"), "{}", r.report());

    // `chanto apply -f`: plans now, shows it, and asks; with no terminal to
    // ask on, only --auto-approve applies.
    std::fs::write(&file, "[site.quick]\nkeep_deploys = 2\n").unwrap();
    let r = server.cli(&["apply", "-f", file.to_str().unwrap(), "--site", "quick"]).fails();
    assert!(r.stdout().contains("+ site.quick") && r.stderr().contains("--auto-approve"), "{}", r.report());
    server.cli(&["sites", "show", "quick"]).fails();
    let r = server.cli(&["apply", "-f", file.to_str().unwrap(), "--site", "quick", "--auto-approve"]).ok();
    assert!(r.stdout().contains("+ site.quick") && r.stdout().contains("Apply complete"), "{}", r.report());
    server.cli(&["sites", "show", "quick"]).ok();
    let r = server.cli(&["apply", "-f", file.to_str().unwrap(), "--site", "quick"]).ok();
    assert!(r.stdout().contains("No changes"), "{}", r.report());
    let r = server.cli(&["apply", "plan.json", "-f", file.to_str().unwrap()]).fails();
    assert!(r.stderr().contains("cannot be used with"), "{}", r.report());

    // Hostile requests straight to the API: unknown fields, wrong types, no files.
    let api = server.api_url.trim_start_matches("http://").to_owned();
    for body in [
        r#"{"files": [], "secrets": {}}"#.to_owned(),
        r#"{"files": [{"name": "a", "text": 5}]}"#.to_owned(),
        r#"{"files": [{"name": "a", "text": ""}], "extra": 1}"#.to_owned(),
        "{\"files\": [".to_owned(),
    ] {
        let r = util::http_request(
            &api,
            "POST",
            "127.0.0.1",
            "/api/v1/platform/plan",
            &[("authorization", &format!("Bearer {}", server.token)), ("content-type", "application/json")],
            body.as_bytes(),
        )
        .unwrap();
        assert!((400..500).contains(&r.status), "{body}: {}", r.status);
    }
}

fn write_site(root: &Path) -> std::path::PathBuf {
    let dir = root.join("site");
    util::write_tree(&dir, &[("index.html", "hello")]);
    dir
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

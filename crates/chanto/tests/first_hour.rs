//! What a newcomer meets (#20), through the real binary: rollbacks that walk
//! back the way users expect, previews that cover drafts and old permalinks,
//! and CLI wording.

mod util;

use util::*;

/// The id of a `deploy --json` outcome.
fn deploy(server: &Server, dir: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec!["deploy", dir.to_str().unwrap(), "--site", "docs", "--json"];
    args.extend_from_slice(extra);
    server.cli(&args).ok().json()["deploy"]["id"].as_str().unwrap().to_owned()
}

#[test]
fn rollback_walks_back_after_a_publish_and_jumps_with_to() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    let live = || server.get("docs.localhost", "/").text();

    write_tree(&site, &[("index.html", "A")]);
    let a = deploy(&server, &site, &[]);
    write_tree(&site, &[("index.html", "B")]);
    let b = deploy(&server, &site, &[]);
    let r = server.cli(&["rollback", "--site", "docs"]).ok();
    assert!(r.stdout().contains(&format!("{b} → {a}")), "{}", r.report());
    assert_eq!(live(), "A");
    // A fix goes out, and is broken too: rollbacks walk back through what
    // was live before it, one deploy each time (this stopped after one).
    write_tree(&site, &[("index.html", "C")]);
    let c = deploy(&server, &site, &[]);
    server.cli(&["rollback", "--site", "docs"]).ok();
    assert_eq!(live(), "A", "back to what was live just before C");
    server.cli(&["rollback", "--site", "docs"]).ok();
    assert_eq!(live(), "B", "then to what was live before A");
    let r = server.cli(&["rollback", "--site", "docs"]).fails();
    assert!(
        r.stderr().contains(
            "branch main of site docs has no earlier deploy to roll back to; pick one with \
             `chanto rollback --site docs --to DEPLOY` (ids from `chanto deploys list --site docs --branch main`), \
             or activate a ready deploy with `chanto publish ID`"
        ),
        "{}",
        r.report()
    );
    assert_eq!(live(), "B", "a refused rollback changes nothing");
    // States: C and A were rolled away from and not live since; B is live.
    let state = |id: &str| {
        let r = server.cli(&["deploys", "list", "--site", "docs"]).ok();
        let row = r.stdout().lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{}", r.report())).to_owned();
        row.split("  ").filter(|c| !c.trim().is_empty()).nth(2).unwrap().trim().to_owned()
    };
    assert_eq!((state(&a), state(&b), state(&c)), ("rolled back".into(), "live".into(), "rolled back".into()));
    let r = server.cli(&["deploys", "show", &c]).ok();
    assert!(r.stdout().contains("state:    rolled back"), "{}", r.report());
    let r = server.cli(&["deploys", "show", &c, "--json"]).ok();
    assert_eq!(r.json()["rolled_back"], true, "{}", r.report());
    assert_eq!(r.json()["state"], "superseded", "the API's state stays as it was: {}", r.report());

    // --to jumps to any complete deploy of the branch.
    let r = server.cli(&["rollback", "--site", "docs", "--to", &c]).ok();
    assert!(r.stdout().contains(&format!("{b} → {c}")), "{}", r.report());
    assert_eq!(live(), "C");
    // Live again: no longer "rolled back"; B, rolled away from, is.
    assert_eq!((state(&c), state(&b), state(&a)), ("live".into(), "rolled back".into(), "rolled back".into()));
    let r = server.cli(&["rollback", "--site", "docs", "--to", &c]).fails();
    assert!(r.stderr().contains("already live"), "{}", r.report());
    let r = server.cli(&["rollback", "--site", "docs", "--to", "not-a-deploy"]).fails();
    assert!(r.stderr().contains("--to"), "the flag is named: {}", r.report());
    let r = server.cli(&["rollback", "--site", "docs", "--to", "0123456789abcdef"]).fails();
    assert!(r.stderr().contains("0123456789abcdef"), "{}", r.report());
    // A deploy of another branch: named, with the flag that fits.
    let f = deploy(&server, &site, &["--branch", "feature"]);
    let r = server.cli(&["rollback", "--site", "docs", "--branch", "main", "--to", &f]).fails();
    assert!(r.stderr().contains("branch feature") && r.stderr().contains("--branch feature"), "{}", r.report());
    assert_eq!(live(), "C");
    // Without --branch, --to rolls back the deploy's own branch.
    let r = server.cli(&["rollback", "--site", "docs", "--to", &f]).fails();
    assert!(r.stderr().contains("already live on feature"), "{}", r.report());
}

#[test]
fn drafts_and_old_permalinks_are_previews_production_stays_public() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "old")]);
    let old = deploy(&server, &site, &[]);
    write_tree(&site, &[("index.html", "draft")]);
    let draft = deploy(&server, &site, &["--draft"]);
    write_tree(&site, &[("index.html", "current")]);
    let current = deploy(&server, &site, &[]);
    let permalink = |id: &str| server.get(&format!("{id}--docs.localhost"), "/").status;
    // Before any policy, everything is public.
    assert_eq!((permalink(&old), permalink(&draft)), (200, 200));

    server
        .cli(&["access", "set", "--site", "docs", "--previews", "--user", "alice", "--password-stdin"])
        .stdin("pw\n")
        .ok();
    assert_eq!(server.get("docs.localhost", "/").status, 200, "production stays public");
    assert_eq!(permalink(&current), 200, "production's current deploy is production");
    assert_eq!(permalink(&draft), 401, "a draft is a preview");
    assert_eq!(permalink(&old), 401, "an old production deploy is a preview");

    // After a rollback, the deploy rolled back to is production; the other is a preview.
    server.cli(&["rollback", "--site", "docs", "--to", &old]).ok();
    assert_eq!(permalink(&old), 200);
    assert_eq!(permalink(&current), 401);

    let r = server.cli(&["access", "clear", "--site", "docs", "--previews"]).ok();
    assert!(r.stdout().contains("Cleared the previews access policy of docs"), "{}", r.report());
    assert_eq!(permalink(&draft), 200);
    let r = server.cli(&["access", "clear", "--site", "docs", "--previews"]).fails();
    assert!(
        r.stderr().contains(
            "docs has no previews access policy to clear; `chanto access list --site docs` shows its policies"
        ),
        "{}",
        r.report()
    );
}

#[test]
fn counts_are_plural_only_when_more_than_one() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "one")]);
    let r = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    assert!(r.stdout().contains(": 1 file (") && r.stdout().contains("uploaded 1 blob ("), "{}", r.report());
    // The progress lines on stderr too.
    let e = r.stderr();
    assert!(
        e.starts_with("1 file (") && e.contains(": 1 of 1 blob to upload (") && e.contains("\nuploaded 1 blob ("),
        "{e}"
    );
    assert!(r.stdout().contains(" is live on docs/main"), "{}", r.report());
    write_tree(&site, &[("a.html", "a"), ("b.html", "b")]);
    let r = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs"]).ok();
    assert!(r.stdout().contains(": 3 files (") && r.stdout().contains("uploaded 2 blobs ("), "{}", r.report());
    let e = r.stderr();
    assert!(
        e.starts_with("3 files (") && e.contains(": 2 of 3 blobs to upload (") && e.contains("\nuploaded 2 blobs ("),
        "{e}"
    );
}

/// What Netlify's and Vercel's users type: `--dir` and `--prod` work (hidden).
#[test]
fn deploy_takes_the_flags_other_clis_taught() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "netlify habits")]);
    let r = server.cli(&["deploy", "--dir", site.to_str().unwrap(), "--site", "docs", "--prod"]).ok();
    assert!(r.stdout().contains(" is live on docs/main"), "{}", r.report());
    assert_eq!(server.get("docs.localhost", "/").text(), "netlify habits");
    let r = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--prod", "--draft"]).fails();
    assert!(r.stderr().contains("cannot be used with"), "{}", r.report());
    // No DIR, and the current directory is no project: what to type.
    let mut cli = server.cli(&["deploy", "--site", "docs"]);
    cli.cmd.current_dir(tmp.path());
    let r = cli.fails();
    assert!(r.stderr().contains("give it: chanto deploy DIR --site docs"), "{}", r.report());
    let h = help(&["deploy"]);
    assert!(h.contains("Usage: chanto deploy [OPTIONS] --site <SITE> [DIR]") && !h.contains("--prod"), "{h}");
}

#[test]
fn lists_are_aligned_tables_with_states_in_user_words() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "one")]);
    deploy(&server, &site, &[]);
    write_tree(&site, &[("index.html", "two")]);
    let live = deploy(&server, &site, &["-m", "second\nwith a body"]);
    let draft = deploy(&server, &site, &["--draft"]);
    let check = |out: &str| {
        assert!(!out.contains('\x1b'), "no colour off a terminal: {out:?}");
        assert!(out.lines().all(|l| l == l.trim_end()), "trailing whitespace: {out:?}");
    };
    let r = server.cli(&["sites", "list"]).ok();
    check(&r.stdout());
    let stdout = r.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("PRODUCTION BRANCH"), "{}", r.report());
    assert_eq!(lines[0].find("URL"), lines[1].find("http://"), "columns align: {}", r.report());

    let r = server.cli(&["deploys", "list", "--site", "docs"]).ok();
    check(&r.stdout());
    let out = r.stdout();
    let row = |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap().to_owned();
    assert!(out.starts_with("DEPLOY"), "{}", r.report());
    assert!(row(&live).contains(" live "), "{}", r.report());
    assert!(row(&live).ends_with("second"), "first line of the message only: {}", r.report());
    assert!(row(&draft).contains(" draft "), "{}", r.report());
    assert!(out.contains(" previous "), "{}", r.report());

    server
        .cli(&["access", "set", "--site", "docs", "--previews", "--user", "alice", "--password-stdin"])
        .stdin("pw\n")
        .ok();
    let r = server.cli(&["access", "list", "--site", "docs"]).ok();
    check(&r.stdout());
    assert!(r.stdout().starts_with("SCOPE") && r.stdout().contains("previews  alice"), "{}", r.report());
}

fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn local_commands_hide_the_client_flags() {
    // Commands that never talk to a server do not list --server/--token.
    for cmd in ["serve", "demo", "dev", "migrate", "completions", "man"] {
        let h = help(&[cmd]);
        assert!(!h.contains("--token") && !h.contains("--server") && !h.contains("Client options"), "{cmd}: {h}");
    }
    assert!(help(&["serve"]).contains("--edge <ADDR>"));
    assert!(!help(&["serve"]).contains("--json"), "serve prints no JSON");
    assert!(help(&["demo"]).contains("--json"), "demo prints its summary as JSON with --json");
    assert!(!help(&["backup", "create"]).contains("--token"));
    // Client commands keep them, under their own heading.
    for cmd in [&["sites"][..], &["deploy"], &["deploys", "list"], &["status"]] {
        let h = help(cmd);
        assert!(h.contains("Client options") && h.contains("--token <TOKEN>") && h.contains("--server <URL>"), "{h}");
    }
    // Hidden is still accepted (a CHANTO_* environment or an alias does not break them).
    let out = std::process::Command::new(BIN)
        .args(["completions", "bash", "--server", "http://x", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn help_shows_examples_and_names_values() {
    for (cmd, example) in [
        (&["deploy"][..], "chanto deploy ./public --site docs --branch feature/login"),
        (&["rollback"], "chanto rollback --site docs --to 30fe4b3b2051d6ac"),
        (&["publish"], "chanto publish 30fe4b3b2051d6ac"),
        (&["access", "set"], "chanto access set --site docs --branch qa --allow 10.0.0.0/8"),
        (&["dev"], "chanto dev ./public --no-reload"),
        (&["login"], "chanto login --server http://127.0.0.1:8787 --token-stdin < chanto-data/admin.token"),
        (&["sites", "create"], "chanto sites create blog --production-branch master"),
        (&["nodes"], "chanto nodes token create edge-zone-a --output edge.token"),
    ] {
        let h = help(cmd);
        assert!(h.contains("Examples:\n  ") && h.contains(example), "{cmd:?}: {h}");
    }
    assert!(help(&["deploy"]).contains("--parallel <N>"));
    assert!(help(&["sites", "create"]).contains("--production-branch <BRANCH>"));
    let h = help(&["env", "set"]);
    assert!(h.contains("The variable's name, e.g. API_URL") && !h.contains("<NAME>   NAME"), "{h}");
}

#[test]
fn status_sites_show_and_open() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let port = server.edge.rsplit(':').next().unwrap().to_owned();
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.html", "hi")]);
    let live = deploy(&server, &site, &[]);
    deploy(&server, &site, &["--branch", "feature"]);

    let r = server.cli(&["status"]).ok();
    assert!(r.stdout().contains("Health: ok") && r.stdout().contains("Token:  works (1 site)"), "{}", r.report());
    let r = server.cli(&["status", "--token", "chanto_wrong"]).fails();
    assert!(r.stdout().contains("Health: ok") && r.stderr().contains("not usable"), "{}", r.report());
    assert!(!r.stdout().contains("works"), "{}", r.report());

    server
        .cli(&["access", "set", "--site", "docs", "--previews", "--user", "alice", "--password-stdin"])
        .stdin("pw\n")
        .ok();
    let r = server.cli(&["sites", "show", "docs"]).ok();
    let out = r.stdout();
    assert!(out.contains(&format!("http://docs.localhost:{port}/")), "{}", r.report());
    assert!(out.contains(&format!("production deploy: {live}")), "{}", r.report());
    assert!(out.contains("branch feature: ") && out.contains("feature--docs.localhost"), "{}", r.report());
    assert!(out.contains("git:               not connected"), "{}", r.report());
    assert!(out.contains("access:            previews (alice)"), "{}", r.report());
    // `--site` works here too, as in every other command.
    let r = server.cli(&["sites", "show", "--site", "docs"]).ok();
    assert!(r.stdout().contains(&format!("production deploy: {live}")), "{}", r.report());
    let r = server.cli(&["sites", "update", "--site", "docs"]).ok();
    assert!(r.stdout().contains("Site docs keeps every deploy"), "{}", r.report());
    let r = server.cli(&["sites", "show", "docs", "--site", "blog"]).fails();
    assert!(r.stderr().contains("cannot be used with"), "{}", r.report());
    assert!(help(&["sites", "show"]).contains("Usage: chanto sites show [OPTIONS] <NAME>"));
    let r = server.cli(&["sites", "show", "nope"]).fails();
    assert!(r.stderr().contains("nope"), "{}", r.report());
    let r = server.cli(&["sites", "show", "Bad_Name"]).fails();
    assert!(r.stderr().contains("not allowed"), "{}", r.report());

    // Not a terminal: prints the URL and opens nothing.
    let r = server.cli(&["open"]).ok();
    assert_eq!(r.stdout().trim(), format!("http://docs.localhost:{port}/"), "{}", r.report());
    let r = server.cli(&["open", "--site", "docs", "--branch", "feature"]).ok();
    assert_eq!(r.stdout().trim(), format!("http://feature--docs.localhost:{port}/"), "{}", r.report());
    let r = server.cli(&["open", "--site", "docs", "--branch", "nothing-here"]).fails();
    assert!(r.stderr().contains("chanto deploy DIR --site docs --branch nothing-here"), "{}", r.report());
    server.cli(&["sites", "create", "blog"]).ok();
    let r = server.cli(&["open"]).fails();
    assert!(r.stderr().contains("pass --site") && r.stderr().contains("blog"), "{}", r.report());
}

#[test]
fn a_closed_pipe_ends_a_list_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    for i in 0..3 {
        server.cli(&["sites", "create", &format!("site{i}")]).ok();
    }
    // stdout is a pipe whose reader is gone before the command writes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(BIN)
        .args(["sites", "list", "--server", &server.api_url, "--token", &server.token])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[test]
fn messages_a_newcomer_meets_on_the_tour() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    // An id that is not there: where to find the right one.
    for cmd in [&["publish", "0123456789abcdef"][..], &["deploys", "show", "0123456789abcdef"]] {
        let r = server.cli(cmd).fails();
        assert!(
            r.stderr().contains(
                "there is no deploy 0123456789abcdef; `chanto deploys list --site SITE` lists a site's deploys"
            ),
            "{}",
            r.report()
        );
    }
    let r = server.cli(&["sites", "proxy-origins", "docs"]).ok();
    assert_eq!(
        r.stdout().trim(),
        "The proxy rules of docs may reach no origin; allow one with `chanto sites proxy-origins docs --set https://HOST`.",
        "{}",
        r.report()
    );
    // Durations as people write them (the flag's own format), not seconds.
    let r = server.cli(&["gc", "--dry-run"]).ok();
    assert!(r.stdout().contains("grace period (1h)"), "{}", r.report());
    // `status` pointed at the edge says so.
    let r = server.cli(&["status", "--server", &format!("http://{}", server.edge)]).fails();
    assert!(r.stdout().contains("this looks like the edge, not the API (default port 8787)"), "{}", r.report());
    // Empty lists say what to do; full ones are tables like the others.
    let r = server.cli(&["build-hooks", "list", "--site", "docs"]).ok();
    assert_eq!(r.stdout().trim(), "No build hooks for docs yet. Make one: chanto build-hooks create --site docs NAME");
    server.cli(&["build-hooks", "create", "--site", "docs", "cms"]).ok();
    server.cli(&["build-hooks", "create", "--site", "docs", "--any-branch", "anything"]).ok();
    let out = server.cli(&["build-hooks", "list", "--site", "docs"]).ok().stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].ends_with("NAME      BRANCH"), "{out}");
    assert!(out.contains(" cms       main\n") && out.contains(" anything  any (each request names it)\n"), "{out}");
    let r = server.cli(&["notify", "deliveries", "--site", "docs"]).ok();
    assert!(r.stdout().starts_with("No deliveries for docs yet"), "{}", r.report());
    let r = server.cli(&["env", "list", "--site", "docs"]).ok();
    assert_eq!(r.stdout().trim(), "No build variables for docs yet. Set one: chanto env set --site docs NAME VALUE");
    let r = server.cli(&["git", "deliveries", "--site", "docs"]).ok();
    assert!(r.stdout().starts_with("No webhook deliveries for docs yet"), "{}", r.report());
    let r = server.cli(&["env", "unset", "--site", "docs", "NOPE"]).fails();
    assert!(
        r.stderr().contains("docs has no variable NOPE (site-wide); `chanto env list --site docs` lists its variables"),
        "{}",
        r.report()
    );
    let r = server.cli(&["notify", "remove", "--site", "docs", "sub_nope"]).fails();
    assert!(
        r.stderr()
            .contains("docs has no subscription sub_nope; `chanto notify list --site docs` lists its subscriptions"),
        "{}",
        r.report()
    );
    for cmd in ["show", "logs", "cancel"] {
        let r = server.cli(&["builds", cmd, "0123456789abcdef"]).fails();
        assert!(
            r.stderr()
                .contains("there is no build 0123456789abcdef; `chanto builds list --site SITE` lists a site's builds"),
            "{cmd}: {}",
            r.report()
        );
    }
}

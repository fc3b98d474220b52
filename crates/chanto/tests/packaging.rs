//! Getting chanto: shell completions and man pages generated from the clap
//! definitions, the Dockerfile's operator-facing rules (checked by parsing it:
//! no container runtime runs here), and the README's install and tour
//! commands against what `chanto demo` really starts. The .deb is built and
//! checked by scripts/test-package.

mod util;

use std::path::{Path, PathBuf};

use util::{Cli, Server};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

// ---------------------------------------------------------------- completions

#[test]
fn bash_completion_completes_real_subcommands_and_flags() {
    let script = Cli::new(&["completions", "bash"]).ok().stdout();
    for word in ["sites", "deploy", "rollback", "build-hooks", "--production-branch", "--site", "--token"] {
        assert!(script.contains(word), "bash completion lacks {word}");
    }
    // What a user gets when pressing Tab: bash runs the script's function.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chanto.bash");
    std::fs::write(&path, &script).unwrap();
    let complete = |words: &str| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
                 COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
                 _chanto chanto \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                path.display()
            ))
            .output()
            .expect("bash runs");
        assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let sub = complete("chanto sites cr");
    assert_eq!(sub.lines().collect::<Vec<_>>(), ["create"], "chanto sites cr<Tab>");
    let flag = complete("chanto sites create docs --prod");
    assert_eq!(flag.lines().collect::<Vec<_>>(), ["--production-branch"], "chanto sites create docs --prod<Tab>");
}

#[test]
fn zsh_and_fish_completions_name_real_subcommands_and_flags() {
    let zsh = Cli::new(&["completions", "zsh"]).ok().stdout();
    assert!(zsh.starts_with("#compdef chanto"), "zsh: {}", &zsh[..zsh.len().min(200)]);
    for word in ["'sites:Manage sites'", "--production-branch", "rollback", "build-hooks"] {
        assert!(zsh.contains(word), "zsh completion lacks {word}");
    }
    let fish = Cli::new(&["completions", "fish"]).ok().stdout();
    for word in ["complete -c chanto", "-a \"sites\"", "-l production-branch", "-a \"rollback\""] {
        assert!(fish.contains(word), "fish completion lacks {word}:\n{fish}");
    }
}

#[test]
fn completions_for_an_unknown_shell_list_the_supported_ones() {
    let run = Cli::new(&["completions", "tcsh"]).fails();
    let err = run.stderr();
    for shell in ["bash", "zsh", "fish"] {
        assert!(err.contains(shell), "{}", run.report());
    }
}

// ------------------------------------------------------------------ man pages

#[test]
fn man_prints_the_top_page_as_roff() {
    let page = Cli::new(&["man"]).ok().stdout();
    assert!(page.starts_with(".ie") || page.contains(".TH chanto 1"), "{}", &page[..page.len().min(300)]);
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS", ".SH OPTIONS"] {
        assert!(page.contains(section), "chanto(1) lacks {section}");
    }
    for sub in ["chanto\\-sites(1)", "chanto\\-deploy(1)", "chanto\\-completions(1)", "chanto\\-man(1)"] {
        assert!(page.contains(sub), "chanto(1) does not list {sub}");
    }
}

#[test]
fn man_out_writes_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let run = Cli::new(&["man", "--out", out.to_str().unwrap()]).ok();
    assert!(run.stderr().contains("man pages"), "{}", run.report());
    for page in ["chanto.1", "chanto-serve.1", "chanto-sites.1", "chanto-sites-create.1", "chanto-access-set.1"] {
        let text = std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".SH NAME") && text.contains(".SH SYNOPSIS"), "{page}:\n{text}");
    }
    let create = std::fs::read_to_string(out.join("chanto-sites-create.1")).unwrap();
    assert!(create.contains("production\\-branch"), "{create}");
    let serve = std::fs::read_to_string(out.join("chanto-serve.1")).unwrap();
    assert!(serve.contains("readyz"), "chanto-serve(1) lacks the --admin text");

    // Where man(1) and groff are installed, the page renders without warnings.
    if std::process::Command::new("groff").arg("-v").output().is_ok_and(|o| o.status.success()) {
        let r = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(out.join("chanto-sites-create.1"))
            .output()
            .unwrap();
        assert!(r.status.success() && r.stderr.is_empty(), "groff: {}", String::from_utf8_lossy(&r.stderr));
    }
}

// ----------------------------------------------------------------- Dockerfile

/// One instruction of a Dockerfile: keyword (upper case) and its arguments,
/// continuation lines joined, comments dropped, with its first line number.
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

fn parse_dockerfile(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_none()) {
            continue;
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (line, false),
        };
        acc.push_str(body.trim());
        acc.push(' ');
        if continues {
            current = Some((start, acc));
        } else if let Some((kw, args)) = acc.trim().split_once(char::is_whitespace) {
            out.push(Instruction { line: start, keyword: kw.to_ascii_uppercase(), args: args.trim().to_owned() });
        }
    }
    out
}

/// What operators (and hadolint) expect of the image; each problem names its line.
fn dockerfile_problems(text: &str) -> Vec<String> {
    let all = parse_dockerfile(text);
    let mut problems = Vec::new();
    let froms: Vec<usize> = all.iter().enumerate().filter(|(_, i)| i.keyword == "FROM").map(|(n, _)| n).collect();
    if froms.len() < 2 {
        problems.push("not multi-stage: one FROM for the Rust build, one for the runtime".to_owned());
    }
    for i in all.iter().filter(|i| i.keyword == "FROM") {
        let image = i.args.split_whitespace().next().unwrap_or("");
        let tag = image.rsplit_once(':').map(|(_, t)| t);
        if !matches!(tag, Some(t) if t != "latest" && !t.contains('/')) && !image.contains('@') {
            problems.push(format!("line {}: image {image} has no fixed tag (not `latest`)", i.line));
        }
    }
    let runtime = &all[froms.last().copied().unwrap_or(0)..];
    if let Some(from) = runtime.first()
        && !from.args.contains("slim")
    {
        problems.push(format!("line {}: the runtime image should be a slim one", from.line));
    }
    for i in all.iter().filter(|i| i.keyword == "RUN" && i.args.contains("apt-get install")) {
        if !i.args.contains("--no-install-recommends") {
            problems.push(format!("line {}: apt-get install without --no-install-recommends", i.line));
        }
        if !i.args.contains("rm -rf /var/lib/apt/lists/*") {
            problems.push(format!("line {}: apt lists are not removed (rm -rf /var/lib/apt/lists/*)", i.line));
        }
        if !i.args.contains("apt-get update") {
            problems.push(format!("line {}: apt-get install in a RUN without apt-get update", i.line));
        }
    }
    if !runtime.iter().any(|i| i.keyword == "RUN" && i.args.contains("bubblewrap")) {
        problems.push("the runtime does not install bubblewrap: builds would be refused".to_owned());
    }
    match runtime.iter().rev().find(|i| i.keyword == "USER") {
        None => problems.push("the runtime has no USER: it would run as root".to_owned()),
        Some(u) => {
            let user = u.args.split(':').next().unwrap_or("");
            if user == "root" || user == "0" {
                problems.push(format!("line {}: USER {} is root", u.line, u.args));
            }
        }
    }
    if !runtime.iter().any(|i| i.keyword == "VOLUME" && i.args.contains("/var/lib/chanto")) {
        problems.push("no VOLUME for /var/lib/chanto".to_owned());
    }
    let exposed: Vec<&str> =
        runtime.iter().filter(|i| i.keyword == "EXPOSE").flat_map(|i| i.args.split_whitespace()).collect();
    let cmd = runtime.iter().rev().find(|i| i.keyword == "CMD").map(|i| i.args.as_str()).unwrap_or("");
    let admin_port = cmd.split("\"--admin\", \"").nth(1).and_then(|r| r.split('"').next()?.rsplit(':').next());
    match runtime.iter().find(|i| i.keyword == "HEALTHCHECK") {
        None => problems.push("no HEALTHCHECK".to_owned()),
        Some(h) => match admin_port {
            Some(port) if h.args.contains(&format!(":{port}/readyz")) => {}
            _ => problems.push(format!(
                "line {}: the HEALTHCHECK must ask /readyz on CMD's --admin port ({admin_port:?})",
                h.line
            )),
        },
    }
    for port in ["8080", "8787", "8790"] {
        if !exposed.contains(&port) {
            problems.push(format!("port {port} is not EXPOSEd"));
        }
    }
    problems
}

#[test]
fn dockerfile_meets_the_operator_checklist() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    assert_eq!(dockerfile_problems(&text), Vec::<String>::new());
}

#[test]
fn dockerfile_checklist_catches_each_mistake() {
    let bad = "FROM rust:latest AS builder\nRUN cargo build --release\nFROM debian\n\
               RUN apt-get update && \\\n  apt-get install -y git\nUSER root\nCMD [\"serve\"]\n";
    let problems = dockerfile_problems(bad).join("\n");
    for expected in [
        "line 1: image rust:latest has no fixed tag",
        "line 3: image debian has no fixed tag",
        "line 4: apt-get install without --no-install-recommends",
        "line 4: apt lists are not removed",
        "does not install bubblewrap",
        "line 6: USER root is root",
        "no VOLUME",
        "no HEALTHCHECK",
        "port 8790 is not EXPOSEd",
    ] {
        assert!(problems.contains(expected), "missing {expected:?} in:\n{problems}");
    }
}

#[test]
fn dockerfile_cmd_uses_real_serve_flags() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let cmd = parse_dockerfile(&text).into_iter().rev().find(|i| i.keyword == "CMD").expect("a CMD");
    let words: Vec<String> = serde_json::from_str(&cmd.args).expect("CMD in exec form (a JSON array)");
    assert_eq!(words[0], "serve");
    // clap rejects an unknown flag before anything starts: --help after the
    // CMD's own arguments only parses them.
    let args: Vec<&str> = words.iter().map(String::as_str).chain(["--help"]).collect();
    let run = Cli::new(&args).ok();
    assert!(run.stdout().contains("--admin"), "{}", run.report());
}

// ------------------------------------------------------------ README and demo

/// The README's tour, run against `chanto demo`: log in with the token file
/// the demo wrote, create a site, deploy the example folder, see it served.
#[test]
fn readme_tour_works_against_the_demo() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("chanto-data");
    let demo = Server::start_cmd("demo", &data, &[]);
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    assert!(
        readme.contains("chanto login --server http://127.0.0.1:8787 --token-stdin < chanto-data/admin.token"),
        "the README tour should log in with the demo's token file"
    );
    let config = tmp.path().join("config.toml");
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let cli = |args: &[&str]| Cli::new(args).env("CHANTO_CONFIG", config.to_str().unwrap());
    let login = cli(&["login", "--server", &demo.api_url, "--token-stdin"]).stdin(&token).ok();
    assert!(login.stdout().contains("Logged in"), "{}", login.report());
    cli(&["sites", "create", "docs"]).ok();
    let site = repo_root().join("examples/site");
    cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "-m", "first"]).ok();
    assert_eq!(demo.get("docs.localhost", "/").status, 200);
    // The demo's own site is there too, on the same edge (its deploy runs
    // after the server is up).
    util::wait_for("the demo's example site", std::time::Duration::from_secs(30), || {
        (demo.get("example.localhost", "/").status == 200).then_some(())
    });
}

/// Every `chanto ...` line of the README's code blocks names a real command:
/// `chanto <words> --help` parses.
#[test]
fn readme_commands_exist() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut in_block = false;
    let mut checked = 0;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        // The command part: after a pipe into chanto, before a comment or redirection.
        let Some(rest) = line.split("chanto ").nth(1).filter(|_| {
            line.trim_start().starts_with("chanto ") || line.contains("| chanto ") || line.contains("sudo chanto ")
        }) else {
            continue;
        };
        let words: Vec<&str> = rest
            .split_whitespace()
            .take_while(|w| !w.starts_with(['-', '#', '<', '>', '|', ';']))
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
        // Stop at the first positional (a site name, a path): subcommands come first.
        let mut cmd = Vec::new();
        for w in words {
            cmd.push(w);
            let mut probe: Vec<&str> = cmd.clone();
            probe.push("--help");
            let run = Cli::new(&probe).run();
            if !run.out.status.success() {
                assert!(
                    !run.stderr().contains("unrecognized subcommand"),
                    "README line names a command that does not exist: {line}\n{}",
                    run.report()
                );
                cmd.pop();
                break;
            }
        }
        assert!(!cmd.is_empty(), "README line names no chanto command: {line}");
        checked += 1;
    }
    assert!(checked > 20, "found only {checked} chanto commands in README code blocks");
}

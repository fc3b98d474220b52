//! `chanto git`, `chanto builds`, `chanto env` and `chanto build-hooks`: the
//! CLI side of git-driven builds.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, bail};
use chanto_control::builds::api::{DeliveryView, EnvRequest, HookRequest, StartRequest};
use chanto_control::builds::{BuildView, ConnectRequest, EnvView, GitSettings, GitView, HookView};
use chanto_core::{BuildId, BuildState, SiteName};
use futures_util::StreamExt;

use crate::cli::{BuildsCommand, ConnectArgs, EnvCommand, GitCommand, HooksCommand};
use crate::client::{Client, seg};
use crate::commands::{parse, print_json};

fn site_path(site: &str) -> anyhow::Result<String> {
    parse::<SiteName>("--site", site)?;
    Ok(format!("/sites/{}", seg(site)))
}

fn read_secret_file(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the {what} from {}", path.display()))?;
    Ok(text)
}

fn connect_request(a: ConnectArgs) -> anyhow::Result<ConnectRequest> {
    let token = match (&a.token_env, &a.token_file) {
        (Some(var), _) => Some(
            std::env::var(var)
                .with_context(|| format!("--token-env {var}: the environment variable is not set (or not UTF-8)"))?
                .trim()
                .to_owned(),
        ),
        (None, Some(f)) => Some(read_secret_file(f, "token")?.trim().to_owned()),
        (None, None) => None,
    };
    let ssh_key = a.ssh_key.as_deref().map(|f| read_secret_file(f, "SSH key")).transpose()?;
    let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs().max(1));
    Ok(ConnectRequest {
        repository: a.repository,
        token,
        ssh_key,
        clear_credential: a.clear_credential,
        rotate_webhook_secret: a.rotate_webhook_secret,
        production_branch: a.production_branch,
        settings: GitSettings {
            include: a.include,
            exclude: a.exclude,
            delete_branches: !a.keep_deleted_branches,
            pull_request_previews: !a.no_pr_previews,
            fork_pull_requests: !a.no_fork_prs,
            preview_retention_days: a.preview_retention_days,
            poll_interval_secs: secs(a.poll),
            timeout_secs: secs(a.timeout),
            build: chanto_build::SiteBuildSettings {
                command: a.command,
                publish: a.publish,
                base: a.base,
                app_root: a.app_root,
            },
            credential_kind: None,
            username: a.username,
            platform_config: a.platform_config,
        },
    })
}

fn show_git(v: &GitView) {
    println!("Site {} builds from {}", v.site, v.repository);
    println!("  production branch: {}", v.production_branch);
    let s = &v.settings;
    let list = |l: &[String]| if l.is_empty() { "-".to_string() } else { l.join(", ") };
    let include = if s.include.is_empty() { "all".into() } else { list(&s.include) };
    if s.exclude.is_empty() {
        println!("  build branches:    {include}");
    } else {
        println!("  build branches:    {include} (except {})", list(&s.exclude));
    }
    if let Some(p) = &s.platform_config {
        println!(
            "  platform config:   {p} (planned on every pull request and branch, applied from the production branch)"
        );
    }
    if s.platform_config.is_some() && s.pull_request_previews {
        println!("  pull requests:     the configuration's plan, as a comment");
    } else if s.pull_request_previews {
        println!("  pull requests:     previews at {}", v.preview_url);
    } else {
        println!("  pull requests:     not built");
    }
    println!("  deleted branches:  {}", if s.delete_branches { "environment removed" } else { "environment kept" });
    if let Some(p) = s.poll_interval_secs {
        println!("  polling:           every {p}s");
    }
    println!("  credential:        {}", v.credential.map_or("none".into(), |k| format!("{k:?} (stored encrypted)")));
    println!("  webhooks:          GitHub {}", v.webhooks.github);
    println!("                     GitLab {}", v.webhooks.gitlab);
    println!("                     Gitea/Forgejo {}", v.webhooks.gitea);
    if let Some(secret) = &v.webhook_secret {
        println!("  webhook secret:    {secret}");
        println!(
            "    (shown once: set it as the webhook's secret on the forge; `--rotate-webhook-secret` makes a new one)"
        );
    }
}

pub async fn git(client: &Client, cmd: GitCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        GitCommand::Connect(args) => {
            let path = format!("{}/git", site_path(&args.site)?);
            let v: GitView = client.put(&path, &connect_request(*args)?).await?;
            if json {
                return print_json(&v);
            }
            show_git(&v);
        }
        GitCommand::Show { site } => {
            let v: GitView = client.get(&format!("{}/git", site_path(&site)?)).await?;
            if json {
                return print_json(&v);
            }
            show_git(&v);
        }
        GitCommand::Disconnect { site } => {
            client.delete(&format!("{}/git", site_path(&site)?)).await?;
            if !json {
                println!("Site {site} is no longer connected to a repository (its deploys stay)");
            }
        }
        GitCommand::Deliveries { site } => {
            let rows: Vec<DeliveryView> = client.get(&format!("{}/webhook_deliveries", site_path(&site)?)).await?;
            if json {
                return print_json(&rows);
            }
            if rows.is_empty() {
                println!(
                    "No webhook deliveries for {site} yet (`chanto git show --site {site}` shows the webhook URLs)."
                );
            }
            for d in rows {
                println!(
                    "{}  {:<10} {:<20} {:<9} {}{}",
                    crate::commands::when(d.at),
                    d.source,
                    d.event,
                    d.outcome,
                    d.detail,
                    d.build.map(|b| format!(" (build {b})")).unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn show_build(b: &BuildView) {
    println!("Build {} of {}/{}: {}", b.id, b.site, b.branch, b.state);
    if let Some(c) = &b.commit {
        println!(
            "  commit:   {c}{}",
            b.message.as_deref().and_then(|m| m.lines().next()).map(|m| format!("  {m}")).unwrap_or_default()
        );
    }
    if let Some(a) = &b.author {
        println!("  author:   {a}");
    }
    println!("  trigger:  {}", b.trigger);
    if let Some(r) = &b.runner {
        println!("  runner:   {r}");
    }
    for p in &b.phases {
        let code = p.exit_code.map(|c| format!(" (exit {c})")).unwrap_or_default();
        println!("  {:<10} {:<10} {:>8.1}s{code}", p.name, p.status, p.duration_ms as f64 / 1000.0);
    }
    if let Some(e) = &b.error {
        println!("  error:    {e}");
    }
    if let Some(d) = &b.deploy {
        println!("  deploy:   {d}");
        println!("  URL:      {}", b.url);
    }
}

/// Prints a build's log, following it while the build runs.
async fn follow_log(client: &Client, id: &BuildId, follow: bool) -> anyhow::Result<()> {
    let resp = client.get_stream(&format!("/builds/{id}/log?follow={follow}")).await?;
    let mut body = resp.bytes_stream();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("reading the build log")?;
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

pub async fn builds(client: &Client, cmd: BuildsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        BuildsCommand::List { site, branch, limit } => {
            let mut path = format!("{}/builds?limit={limit}", site_path(&site)?);
            if let Some(b) = &branch {
                path.push_str(&format!("&branch={}", seg(b)));
            }
            let rows: Vec<BuildView> = client.get(&path).await?;
            if json {
                return print_json(&rows);
            }
            if rows.is_empty() {
                println!("No builds of {site} yet");
            }
            let table: Vec<Vec<String>> = rows
                .into_iter()
                .map(|b| {
                    vec![
                        b.id.to_string(),
                        b.branch.to_string(),
                        b.state.to_string(),
                        b.commit.as_deref().map(|c| &c[..c.len().min(8)]).unwrap_or("-").to_owned(),
                        crate::commands::when(b.created_at),
                        b.title.or(b.message.and_then(|m| m.lines().next().map(str::to_owned))).unwrap_or_default(),
                    ]
                })
                .collect();
            if !table.is_empty() {
                crate::table::print(&["BUILD", "BRANCH", "STATE", "COMMIT", "CREATED", "TITLE"], &table);
            }
        }
        BuildsCommand::Show { id } => {
            let id: BuildId = parse("build id", &id)?;
            let b: BuildView = client.get(&format!("/builds/{id}")).await.map_err(|e| unknown_build(e.into(), &id))?;
            if json {
                return print_json(&b);
            }
            show_build(&b);
        }
        BuildsCommand::Logs { id, follow } => {
            let id: BuildId = parse("build id", &id)?;
            follow_log(client, &id, follow).await.map_err(|e| unknown_build(e, &id))?;
        }
        BuildsCommand::Start { site, branch, commit, follow } => {
            let req = StartRequest { branch, commit, title: None };
            let b: BuildView = client.post(&format!("{}/builds", site_path(&site)?), &req).await?;
            if !follow {
                if json {
                    return print_json(&b);
                }
                println!("Queued build {} of {}/{}", b.id, b.site, b.branch);
                println!("  follow it: chanto builds logs {} --follow", b.id);
                return Ok(());
            }
            let id: BuildId = parse("build id", &b.id)?;
            if json {
                // Wait for the end without printing the log: stdout is the JSON.
                let mut log = client.get_stream(&format!("/builds/{id}/log?follow=true")).await?.bytes_stream();
                while let Some(chunk) = log.next().await {
                    chunk.context("reading the build log")?;
                }
            } else {
                eprintln!("Queued build {} of {}/{}; following its log", b.id, b.site, b.branch);
                follow_log(client, &id, true).await?;
            }
            let done: BuildView = client.get(&format!("/builds/{id}")).await?;
            if json {
                print_json(&done)?;
            } else {
                println!();
                show_build(&done);
            }
            if done.state != BuildState::Succeeded {
                bail!("build {} {}", done.id, done.state);
            }
        }
        BuildsCommand::Cancel { id } => {
            let id: BuildId = parse("build id", &id)?;
            let b: BuildView = client
                .post(&format!("/builds/{id}/cancel"), &serde_json::json!({}))
                .await
                .map_err(|e| unknown_build(e.into(), &id))?;
            if json {
                return print_json(&b);
            }
            println!("Build {} is {}", b.id, b.state);
        }
    }
    Ok(())
}

/// A 404 for a build id, with where to find the right one.
fn unknown_build(e: anyhow::Error, id: &BuildId) -> anyhow::Error {
    match e.downcast_ref::<crate::client::CallError>() {
        Some(c) if c.status == Some(404) => {
            anyhow::anyhow!("there is no build {id}; `chanto builds list --site SITE` lists a site's builds")
        }
        _ => e,
    }
}

pub async fn env(client: &Client, cmd: EnvCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        EnvCommand::Set { site, branch, secret, name, value } => {
            let value = match value {
                Some(v) => v,
                None => {
                    if std::io::stdin().is_terminal() {
                        eprint!("Value of {name}: ");
                        std::io::stderr().flush().ok();
                    }
                    let mut v = String::new();
                    std::io::stdin().read_to_string(&mut v).context("reading the value from standard input")?;
                    v.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s).to_owned()).unwrap_or(v)
                }
            };
            let path = format!("{}/env/{}", site_path(&site)?, seg(&name));
            let v: EnvView = client.put(&path, &EnvRequest { value, secret, branch }).await?;
            if json {
                return print_json(&v);
            }
            println!("{}={}{}", v.name, v.value, v.branch.map(|b| format!(" (branch {b})")).unwrap_or_default());
        }
        EnvCommand::List { site } => {
            let vars: Vec<EnvView> = client.get(&format!("{}/env", site_path(&site)?)).await?;
            if json {
                return print_json(&vars);
            }
            if vars.is_empty() {
                println!("No build variables for {site} yet. Set one: chanto env set --site {site} NAME VALUE");
            }
            for v in vars {
                println!("{}={}{}", v.name, v.value, v.branch.map(|b| format!("   (branch {b})")).unwrap_or_default());
            }
        }
        EnvCommand::Unset { site, branch, name } => {
            let mut path = format!("{}/env/{}", site_path(&site)?, seg(&name));
            if let Some(b) = &branch {
                path.push_str(&format!("?branch={}", seg(b)));
            }
            client.delete(&path).await?;
            if !json {
                println!("Removed {name}");
            }
        }
    }
    Ok(())
}

pub async fn hooks(client: &Client, cmd: HooksCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        HooksCommand::Create { site, branch, any_branch, name } => {
            let h: HookView = client
                .post(&format!("{}/build_hooks", site_path(&site)?), &HookRequest { name, branch, any_branch })
                .await?;
            if json {
                return print_json(&h);
            }
            println!("Build hook {} ({}) created. POST to this URL to start a build (shown once):", h.id, h.name);
            println!("  {}", h.url.unwrap_or_default());
        }
        HooksCommand::List { site } => {
            let rows: Vec<HookView> = client.get(&format!("{}/build_hooks", site_path(&site)?)).await?;
            if json {
                return print_json(&rows);
            }
            if rows.is_empty() {
                println!("No build hooks for {site} yet. Make one: chanto build-hooks create --site {site} NAME");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|h| {
                    let branch = h.branch.unwrap_or_else(|| "any (each request names it)".to_owned());
                    vec![h.id, h.name, branch]
                })
                .collect();
            crate::table::print(&["ID", "NAME", "BRANCH"], &rows);
        }
        HooksCommand::Delete { site, id } => {
            client.delete(&format!("{}/build_hooks/{}", site_path(&site)?, seg(&id))).await?;
            if !json {
                println!("Deleted build hook {id}");
            }
        }
    }
    Ok(())
}

//! Runs a parsed command: the glue between arguments, the API client and the
//! terminal.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, anyhow, bail};
use chanto_control::api::{
    CreateSiteRequest, DeployView, PublishResponse, RollbackRequest, RollbackResponse, SiteView,
};

use crate::cli::{AccessCommand, Cli, Command, DeploysCommand, LogFormat, SitesCommand};
use crate::client::{self, Client, seg};
use crate::deploy::{self, DeployPlan, human_bytes};

fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHANTO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Ends a command with this exit code and nothing more printed: what it
/// had to say is said. For results that are not failures but need a code of
/// their own (`chanto plan` exits 2 when there are changes, as `terraform
/// plan -detailed-exitcode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// A command's exit code, and the error to print: 0 for success, an
/// [`Exit`]'s own code (nothing printed), 1 with the message for any other
/// error.
pub fn outcome(result: anyhow::Result<()>) -> (u8, Option<String>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(code)) => (*code, None),
            None => (1, Some(format!("{e:#}"))),
        },
    }
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn parse<T: std::str::FromStr<Err = chanto_core::ValidationError>>(
    flag: &str,
    raw: &str,
) -> anyhow::Result<T> {
    raw.parse().map_err(|e: chanto_core::ValidationError| {
        // A message that already names what it is about is not prefixed
        // again ("site name: \"X\" is not a valid site name").
        if e.message.to_ascii_lowercase().contains(flag) {
            anyhow!("{}", e.message)
        } else {
            anyhow!("{flag}: {}", e.message)
        }
    })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => {
            init_logging("info", args.log_format);
            if args.role == crate::cli::Role::Edge {
                let node = crate::edge_node::start(args).await?;
                println!(
                    "chanto edge node is serving. Sites: http://<site>.{}:{}/   Health and metrics: http://{}/metrics",
                    args.base_domain,
                    node.edge_addr.port(),
                    node.admin_addr
                );
                if let Some(https) = node.https_addr {
                    println!(
                        "HTTPS on {https} for custom domains with a certificate (fetched from the control plane, kept on disk)"
                    );
                }
                return node.run_until_signal().await;
            }
            let running = crate::serve::start(args).await?;
            crate::serve::announce_token(&running);
            match running.edge_addr {
                Some(edge) => println!(
                    "chanto is serving. Sites: http://<site>.{}:{}/   API: {}   Health and metrics: http://{}/metrics",
                    args.base_domain,
                    edge.port(),
                    running.api_url(),
                    running.admin_addr
                ),
                None => println!(
                    "chanto is serving as the control plane (no edge; edges pull routing from the API). API: {}   Health and metrics: http://{}/metrics",
                    running.api_url(),
                    running.admin_addr
                ),
            }
            if let Some(https) = running.https_addr {
                println!(
                    "HTTPS on {https} for custom domains with a certificate (chanto domains add, chanto certs upload)"
                );
            }
            return running.run_until_signal().await;
        }
        Command::Demo(args) => {
            init_logging("info", args.log_format);
            return crate::demo::run(args, cli.json).await;
        }
        Command::Dev(args) => {
            init_logging("warn", LogFormat::Text);
            return crate::dev::run(crate::dev::DevOptions {
                dir: args.dir.clone(),
                listen: args.listen,
                country_header: args.country_header.clone(),
                reload: !args.no_reload,
                reload_clients: args.reload_clients.max(1),
                reload_keepalive: args.reload_keepalive.max(std::time::Duration::from_millis(10)),
            })
            .await;
        }
        // Generated from the clap definitions: no server, no logging.
        Command::Completions(args) => return crate::completions::completions(args),
        Command::Man(args) => return crate::completions::man(args),
        Command::Migrate(args) => {
            init_logging("warn", LogFormat::Text);
            return crate::migrate::run(args.clone()).await;
        }
        _ => init_logging("warn", LogFormat::Text),
    }
    let json = cli.json;
    match cli.command {
        Command::Serve(_)
        | Command::Demo(_)
        | Command::Dev(_)
        | Command::Completions(_)
        | Command::Man(_)
        | Command::Migrate(_) => {
            unreachable!("handled above")
        }
        Command::Import(cmd) => crate::import::run(cmd, json),
        Command::Export(args) => crate::platform::export(&Client::new(&cli.conn)?, args, json).await,
        Command::Plan(args) => crate::platform::plan(&Client::new(&cli.conn)?, args, json).await,
        Command::Apply(args) => crate::platform::apply(&Client::new(&cli.conn)?, args, json).await,
        Command::Backup(cmd) => crate::backup::run(cmd, json).await,
        Command::Login(args) => match &args.user {
            Some(_) => crate::accounts::login_with_password(&cli.conn, &args).await,
            None => login(&cli.conn, args.token_stdin).await,
        },
        Command::Users(cmd) => crate::accounts::users(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Tokens(cmd) => crate::accounts::tokens(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Audit(cmd) => crate::accounts::audit(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Whoami => crate::accounts::whoami(&Client::new(&cli.conn)?, json).await,
        Command::Status => crate::glance::status(&Client::new(&cli.conn)?, json).await,
        Command::Open { site, branch } => crate::glance::open(&Client::new(&cli.conn)?, site, branch).await,
        Command::Sites(cmd) => sites(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Deploys(cmd) => deploys(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Access(cmd) => access(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Git(cmd) => crate::builds::git(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Builds(cmd) => crate::builds::builds(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Env(cmd) => crate::builds::env(&Client::new(&cli.conn)?, cmd, json).await,
        Command::BuildHooks(cmd) => crate::builds::hooks(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Notify(cmd) => crate::notify::notify(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Domains(cmd) => crate::domains::domains(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Certs(cmd) => crate::domains::certs(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Nodes(cmd) => crate::nodes::nodes(&Client::new(&cli.conn)?, cmd, json).await,
        Command::Deploy(args) => {
            let client = Client::new(&cli.conn)?;
            parse::<chanto_core::SiteName>("--site", &args.site)?;
            if let Some(branch) = &args.branch {
                parse::<chanto_core::BranchName>("--branch", branch)?;
            }
            // Before hashing anything: a deploy to a site that does not exist
            // fails at once, with what to do.
            match client.get::<serde_json::Value>(&format!("/sites/{}", seg(&args.site))).await {
                Err(e) if e.status == Some(404) => bail!(
                    "site {:?} does not exist on {}; create it with `chanto sites create {}` (`chanto sites list` shows the sites there are)",
                    args.site,
                    client.server(),
                    args.site
                ),
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            // A project root deploys what its config names (firebase.json's
            // hosting.public, netlify.toml's publish, amplify.yml's
            // baseDirectory), with the root's rule files; without DIR, the
            // current directory must be such a project.
            let given = args.dir.clone().or_else(|| args.dir_flag.clone());
            let root = given.clone().unwrap_or_else(|| std::path::PathBuf::from("."));
            let layout = deploy::project_layout(&root)?;
            let dir = match &layout {
                Some(l) => {
                    if !json {
                        eprintln!("Deploying {} ({})", root.join(&l.publish).display(), l.chosen_by);
                    }
                    root.join(&l.publish)
                }
                None if given.is_none() => bail!(
                    "no directory given, and this directory has no firebase.json, netlify.toml, amplify.yml or chanto.toml naming what to publish; give it: chanto deploy DIR --site {}",
                    args.site
                ),
                None => root.clone(),
            };
            let outcome = deploy::run(
                &client,
                DeployPlan {
                    dir: &dir,
                    site: &args.site,
                    branch: args.branch.as_deref(),
                    message: args.message.as_deref(),
                    draft: args.draft,
                    parallel: args.parallel as usize,
                    progress: !json,
                    hash_cache: !args.rehash,
                    project: layout.as_ref().map(|l| (root.as_path(), l)),
                },
            )
            .await?;
            if json {
                return print_json(&outcome);
            }
            let d = &outcome.deploy;
            for w in &d.warnings {
                eprintln!("{w}");
            }
            println!(
                "Deploy {} is {} on {}/{}: {} ({}), uploaded {} ({}) in {:.2}s",
                d.id,
                crate::table::deploy_state(d),
                d.site,
                d.branch,
                count(outcome.files as u64, "file"),
                human_bytes(d.total_size),
                count(outcome.uploaded as u64, "blob"),
                human_bytes(outcome.uploaded_bytes),
                outcome.elapsed_ms as f64 / 1000.0
            );
            print_urls(d);
            crate::nodes::print_rollout(d.edges.as_ref());
            Ok(())
        }
        Command::Publish { id } => {
            let client = Client::new(&cli.conn)?;
            let id: chanto_core::DeployId = parse("deploy id", &id)?;
            let r: PublishResponse = client
                .post(&format!("/deploys/{id}/publish"), &serde_json::json!({}))
                .await
                .map_err(|e| unknown_deploy(e, &id))?;
            if json {
                return print_json(&r);
            }
            match &r.previous {
                Some(p) => {
                    println!("Deploy {} is live on {}/{} (was {p})", r.deploy.id, r.deploy.site, r.deploy.branch)
                }
                None => println!("Deploy {} is live on {}/{}", r.deploy.id, r.deploy.site, r.deploy.branch),
            }
            print_urls(&r.deploy);
            crate::nodes::print_rollout(r.edges.as_ref());
            Ok(())
        }
        Command::Gc { dry_run } => crate::gc::gc(&Client::new(&cli.conn)?, dry_run, json).await,
        Command::Rollback { site, branch, to } => {
            let client = Client::new(&cli.conn)?;
            parse::<chanto_core::SiteName>("--site", &site)?;
            let branch = branch.map(|b| parse("--branch", &b)).transpose()?;
            let to = to.map(|d| parse("--to", &d)).transpose()?;
            let r: RollbackResponse =
                client.post(&format!("/sites/{}/rollback", seg(&site)), &RollbackRequest { branch, to }).await?;
            if json {
                return print_json(&r);
            }
            println!("Rolled back {}/{}: {} → {}", r.deploy.site, r.deploy.branch, r.from, r.deploy.id);
            print_urls(&r.deploy);
            crate::nodes::print_rollout(r.edges.as_ref());
            Ok(())
        }
    }
}

fn print_urls(d: &DeployView) {
    if let Some(p) = &d.urls.production
        && d.state == chanto_core::DeployState::Active
    {
        println!("  URL:        {p}");
    }
    if d.state == chanto_core::DeployState::Active {
        println!("  Branch URL: {}", d.urls.branch);
    }
    println!("  Permalink:  {}", d.urls.permalink);
}

async fn login(conn: &crate::cli::Connection, token_stdin: bool) -> anyhow::Result<()> {
    let (server, token) = client::resolve(conn)?;
    let token = if token_stdin || token.is_none() {
        if std::io::stdin().is_terminal() {
            eprint!("API token for {server}: ");
            std::io::stderr().flush().ok();
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("reading the token from standard input")?;
        line.trim().to_owned()
    } else {
        token.unwrap_or_default()
    };
    if token.is_empty() {
        bail!(
            "no token given; pass --token, --token-stdin, or type it when asked (the admin token is in DATA/admin.token)"
        );
    }
    let client = Client::with(server.clone(), Some(token.clone()))?;
    let sites: Vec<SiteView> = client.get("/sites").await?;
    let path = save_login(&server, &token)?;
    println!("Logged in to {server} ({} sites); saved to {}", sites.len(), path.display());
    Ok(())
}

/// Saves the server and token for later commands (mode 0600); returns where.
pub(crate) fn save_login(server: &str, token: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = client::config_path()
        .ok_or_else(|| anyhow!("cannot tell where to save the login: set HOME or CHANTO_CONFIG"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(&client::UserConfig { server: Some(server.to_owned()), token: Some(token.to_owned()) })?;
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(text.as_bytes())?;
    }
    Ok(path)
}

async fn access(client: &Client, cmd: AccessCommand, json: bool) -> anyhow::Result<()> {
    use chanto_control::access::{AccessRequest, AccessView};
    let list = |l: &[String], none: &str| if l.is_empty() { none.to_owned() } else { l.join(", ") };
    let preflight = |v: &AccessView| if v.allow_preflight { "open" } else { "password" };
    match cmd {
        AccessCommand::Set {
            site,
            scope,
            user,
            password_stdin,
            remove_user,
            allow,
            deny,
            clear_networks,
            allow_preflight,
        } => {
            parse::<chanto_core::SiteName>("--site", &site)?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                let pw = line.trim_end_matches(['\n', '\r']).to_owned();
                if pw.is_empty() {
                    bail!(
                        "--password-stdin read an empty password; pipe it in, e.g. `printf %s \"$PW\" | chanto access set …`"
                    );
                }
                Some(pw)
            } else {
                None
            };
            let networks = |l: Vec<ipnet::IpNet>| (clear_networks || !l.is_empty()).then_some(l);
            let req = AccessRequest {
                branch: scope.branch,
                previews: scope.previews,
                user,
                password,
                remove_user,
                allow: networks(allow),
                deny: networks(deny),
                allow_preflight,
            };
            let view: AccessView = client.put(&format!("/sites/{}/access", seg(&site)), &req).await?;
            if json {
                return print_json(&view);
            }
            println!("Set the {} access policy of {site}:", view.scope);
            println!("  users:     {}", list(&view.users, "none (no password asked)"));
            println!("  allow:     {}", list(&view.allow, "any network"));
            println!("  deny:      {}", list(&view.deny, "no network"));
            println!("  preflight: {}", if view.allow_preflight { "let through" } else { "needs a password" });
        }
        AccessCommand::Clear { site, scope } => {
            parse::<chanto_core::SiteName>("--site", &site)?;
            let query = match (&scope.branch, scope.previews) {
                (Some(b), _) => format!("?branch={}", seg(b)),
                (None, true) => "?previews=true".to_owned(),
                (None, false) => String::new(),
            };
            client.delete(&format!("/sites/{}/access{query}", seg(&site))).await?;
            if json {
                return print_json(&serde_json::json!({ "cleared": true }));
            }
            let scope = match (&scope.branch, scope.previews) {
                (Some(b), _) => format!("branch {b}"),
                (None, true) => "previews".to_owned(),
                (None, false) => "whole-site".to_owned(),
            };
            println!(
                "Cleared the {scope} access policy of {site}; what it covered is public again unless a wider policy applies."
            );
        }
        AccessCommand::List { site } => {
            parse::<chanto_core::SiteName>("--site", &site)?;
            let views: Vec<AccessView> = client.get(&format!("/sites/{}/access", seg(&site))).await?;
            if json {
                return print_json(&views);
            }
            if views.is_empty() {
                println!("{site} is public: no access policies.");
            }
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    vec![
                        v.scope.clone(),
                        list(&v.users, "-"),
                        list(&v.allow, "any"),
                        list(&v.deny, "-"),
                        preflight(v).to_owned(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                crate::table::print(&["SCOPE", "USERS", "ALLOW", "DENY", "PREFLIGHT"], &rows);
            }
        }
    }
    Ok(())
}

async fn sites(client: &Client, cmd: SitesCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        SitesCommand::Create { name, production_branch } => {
            let req = CreateSiteRequest {
                name: parse("site name", &name)?,
                production_branch: Some(parse("--production-branch", &production_branch)?),
            };
            let site: SiteView = client.post("/sites", &req).await?;
            if json {
                return print_json(&site);
            }
            println!("Created site {} (production branch {}): {}", site.name, site.production_branch, site.url);
        }
        SitesCommand::Show { name } => return crate::glance::show_site(client, &name.get(), json).await,
        SitesCommand::List => {
            let sites: Vec<SiteView> = client.get("/sites").await?;
            if json {
                return print_json(&sites);
            }
            if sites.is_empty() {
                println!("No sites yet. Create one: chanto sites create NAME");
            }
            let rows: Vec<Vec<String>> = sites
                .iter()
                .map(|s| vec![s.name.to_string(), s.production_branch.to_string(), s.url.clone()])
                .collect();
            if !rows.is_empty() {
                crate::table::print(&["NAME", "PRODUCTION BRANCH", "URL"], &rows);
            }
        }
        SitesCommand::Delete { name, yes } => {
            let name = name.get();
            parse::<chanto_core::SiteName>("site name", &name)?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    bail!("refusing to delete site {name} without confirmation; pass --yes");
                }
                eprint!("Delete site {name} with all its deploys? Type its name to confirm: ");
                std::io::stderr().flush().ok();
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                if line.trim() != name {
                    bail!("not confirmed; nothing deleted");
                }
            }
            client.delete(&format!("/sites/{}", seg(&name))).await?;
            if json {
                return print_json(&serde_json::json!({ "deleted": name }));
            }
            println!("Deleted site {name}");
        }
        SitesCommand::Update { name, keep_deploys } => {
            crate::gc::update_site(client, &name.get(), keep_deploys, json).await?
        }
        SitesCommand::ProxyOrigins { name, set, clear } => {
            let name = name.get();
            parse::<chanto_core::SiteName>("site name", &name)?;
            let path = format!("/sites/{}/proxy_origins", seg(&name));
            let view: chanto_control::site_settings::ProxyOrigins = if clear || !set.is_empty() {
                client.put(&path, &chanto_control::site_settings::ProxyOrigins { origins: set }).await?
            } else {
                client.get(&path).await?
            };
            if json {
                return print_json(&view);
            }
            if view.origins.is_empty() {
                println!(
                    "The proxy rules of {name} may reach no origin; allow one with `chanto sites proxy-origins {name} --set https://HOST`."
                );
            }
            for o in view.origins {
                println!("{o}");
            }
        }
        SitesCommand::Profile { name, set, clear } => {
            let name = name.get();
            parse::<chanto_core::SiteName>("site name", &name)?;
            let path = format!("/sites/{}/profile", seg(&name));
            let view: chanto_control::site_settings::SiteProfile = if clear || set.is_some() {
                client.put(&path, &chanto_control::site_settings::SiteProfile { profile: set }).await?
            } else {
                client.get(&path).await?
            };
            if json {
                return print_json(&view);
            }
            match view.profile {
                Some(p) => println!(
                    "The next deploys of {name} follow {p}'s defaults (unless their chanto.toml names a profile)."
                ),
                None => println!(
                    "Each deploy of {name} follows the platform its rule files come from; choose one with `chanto sites profile {name} --set netlify`."
                ),
            }
        }
    }
    Ok(())
}

async fn deploys(client: &Client, cmd: DeploysCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        DeploysCommand::List { site, branch } => {
            parse::<chanto_core::SiteName>("--site", &site)?;
            let mut path = format!("/sites/{}/deploys", seg(&site));
            if let Some(b) = &branch {
                parse::<chanto_core::BranchName>("--branch", b)?;
                path.push_str(&format!("?branch={}", seg(b)));
            }
            let list: Vec<DeployView> = client.get(&path).await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("No deploys yet. Deploy a directory: chanto deploy DIR --site {site}");
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        d.branch.to_string(),
                        crate::table::deploy_state(d).to_owned(),
                        d.file_count.to_string(),
                        human_bytes(d.total_size),
                        d.created_at.to_string(),
                        d.message.as_deref().unwrap_or("").lines().next().unwrap_or("").to_owned(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                crate::table::print(&["DEPLOY", "BRANCH", "STATE", "FILES", "SIZE", "CREATED", "MESSAGE"], &rows);
            }
        }
        DeploysCommand::Show { id } => {
            let id: chanto_core::DeployId = parse("deploy id", &id)?;
            let d: DeployView = client.get(&format!("/deploys/{id}")).await.map_err(|e| unknown_deploy(e, &id))?;
            if json {
                return print_json(&d);
            }
            println!("Deploy {}", d.id);
            println!("  site:     {}", d.site);
            println!("  branch:   {}", d.branch);
            println!("  state:    {}", crate::table::deploy_state(&d));
            println!("  files:    {} ({})", d.file_count, human_bytes(d.total_size));
            println!("  created:  {}", d.created_at);
            if let Some(f) = &d.finished_at {
                println!("  finished: {f}");
            }
            if let Some(m) = &d.message {
                println!("  message:  {m}");
            }
            if let Some(e) = &d.error {
                println!("  error:    {e}");
            }
            print_urls(&d);
        }
    }
    Ok(())
}

/// A 404 for a deploy id, with where to find the right one.
fn unknown_deploy(e: client::CallError, id: &chanto_core::DeployId) -> anyhow::Error {
    if e.status == Some(404) {
        anyhow!("there is no deploy {id}; `chanto deploys list --site SITE` lists a site's deploys")
    } else {
        e.into()
    }
}

/// `1 file`, `2 files`: a count with its noun.
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// A time from the API (ms since the epoch) as RFC 3339, to the second.
pub(crate) fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

//! Small commands users reach for first: `chanto status`, `chanto sites show`
//! and `chanto open`. Read-only: each only GETs from the API.

use std::io::IsTerminal;

use anyhow::{anyhow, bail};
use chanto_control::api::{DeployView, SiteView};

use crate::client::{Client, seg};
use crate::commands::{parse, print_json};

/// `chanto status`: which server, whether it is healthy, whether the token works.
pub async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let server = client.server().to_owned();
    let health = match reqwest::get(format!("{server}/healthz")).await {
        Ok(r) if r.status().is_success() => Ok(()),
        // The edge answers every path with a page: the usual wrong --server.
        Ok(r)
            if r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("text/html")) =>
        {
            Err(format!(
                "answered with a web page (HTTP {}): this looks like the edge, not the API (default port 8787); check --server or CHANTO_SERVER",
                r.status()
            ))
        }
        Ok(r) => Err(format!("answered HTTP {}", r.status())),
        Err(e) => Err(format!("unreachable ({e})")),
    };
    let token = match (&health, client.get::<Vec<SiteView>>("/sites").await) {
        (Err(_), _) => Err("not checked".to_owned()),
        (_, Ok(sites)) => Ok(sites.len()),
        (_, Err(e)) => Err(e.to_string()),
    };
    if json {
        print_json(&serde_json::json!({
            "server": server,
            "healthy": health.is_ok(),
            "token_works": token.is_ok(),
            "sites": token.as_ref().ok(),
        }))?;
    } else {
        println!("Server: {server}");
        match &health {
            Ok(()) => println!("Health: ok"),
            Err(e) => println!("Health: {e}"),
        }
        match &token {
            Ok(n) => println!("Token:  works ({})", crate::commands::count(*n as u64, "site")),
            Err(e) => println!("Token:  {e}"),
        }
    }
    if health.is_err() || token.is_err() {
        bail!("{server} is not usable: see above");
    }
    Ok(())
}

/// `chanto sites show NAME`: a site at a glance.
pub async fn show_site(client: &Client, name: &str, json: bool) -> anyhow::Result<()> {
    parse::<chanto_core::SiteName>("site name", name)?;
    let base = format!("/sites/{}", seg(name));
    let site: SiteView = client.get(&base).await?;
    let deploys: Vec<DeployView> = client.get(&format!("{base}/deploys")).await?;
    let live: Vec<&DeployView> = deploys.iter().filter(|d| d.state == chanto_core::DeployState::Active).collect();
    // Optional parts: a server without builds or notifications answers an error.
    let git: Option<chanto_control::builds::GitView> = client.get(&format!("{base}/git")).await.ok();
    let access: Vec<chanto_control::access::AccessView> = client.get(&format!("{base}/access")).await?;
    let subs: Option<Vec<serde_json::Value>> = client.get(&format!("{base}/notifications")).await.ok();
    if json {
        return print_json(&serde_json::json!({
            "site": site, "live": live, "git": git, "access": access, "notifications": subs,
        }));
    }
    println!("Site {}", site.name);
    println!("  URL:               {}", site.url);
    println!("  production branch: {}", site.production_branch);
    match live.iter().find(|d| d.branch == site.production_branch) {
        Some(d) => println!("  production deploy: {} ({})", d.id, d.created_at),
        None => println!("  production deploy: none yet (chanto deploy DIR --site {})", site.name),
    }
    for d in live.iter().filter(|d| d.branch != site.production_branch) {
        println!("  branch {}: {} at {}", d.branch, d.id, d.urls.branch);
    }
    match &git {
        Some(g) => println!("  git:               {}", g.repository),
        None => println!("  git:               not connected"),
    }
    if access.is_empty() {
        println!("  access:            public");
    }
    for a in &access {
        let users = if a.users.is_empty() { "no users".to_owned() } else { a.users.join(", ") };
        println!("  access:            {} ({users})", a.scope);
    }
    match subs.as_ref().map(Vec::len) {
        Some(n) => println!("  notifications:     {}", crate::commands::count(n as u64, "subscription")),
        None => println!("  notifications:     unavailable on this server"),
    }
    Ok(())
}

/// `chanto open`: prints a site's (or branch's) URL, and opens it in a
/// browser when standard output is a terminal and a browser can be found.
pub async fn open(client: &Client, site: Option<String>, branch: Option<String>) -> anyhow::Result<()> {
    let site = match site {
        Some(s) => s,
        None => {
            let sites: Vec<SiteView> = client.get("/sites").await?;
            match sites.as_slice() {
                [one] => one.name.to_string(),
                [] => bail!("there are no sites yet; create one with `chanto sites create NAME`"),
                _ => bail!(
                    "which site? pass --site ({})",
                    sites.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
    };
    parse::<chanto_core::SiteName>("--site", &site)?;
    let base = format!("/sites/{}", seg(&site));
    let s: SiteView = client.get(&base).await?;
    let url = match branch {
        None => s.url,
        Some(b) => {
            let b: chanto_core::BranchName = parse("--branch", &b)?;
            let list: Vec<DeployView> = client.get(&format!("{base}/deploys?branch={}", seg(b.as_str()))).await?;
            let live = list.into_iter().find(|d| d.state == chanto_core::DeployState::Active).ok_or_else(|| {
                anyhow!("branch {b} of {site} has nothing live; deploy it with `chanto deploy DIR --site {site} --branch {b}`")
            })?;
            live.urls.production.unwrap_or(live.urls.branch)
        }
    };
    println!("{url}");
    if std::io::stdout().is_terminal()
        && let Some(browser) = browser()
    {
        let _ = std::process::Command::new(browser)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    Ok(())
}

/// `$BROWSER`, else `xdg-open` or `open` when on PATH.
fn browser() -> Option<std::path::PathBuf> {
    if let Some(b) = std::env::var_os("BROWSER").filter(|b| !b.is_empty()) {
        return Some(b.into());
    }
    let path = std::env::var_os("PATH")?;
    ["xdg-open", "open"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

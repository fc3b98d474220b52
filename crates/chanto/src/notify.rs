//! `chanto notify`: the CLI side of notifications.

use anyhow::{Context, bail};
use chanto_control::notify::{
    DeliveryView, SmtpSecurity, SmtpSettings, SubscribeRequest, SubscriptionView, TestResult,
};
use chanto_core::SiteName;

use crate::cli::{NotifyAddArgs, NotifyChannel, NotifyCommand};
use crate::client::{Client, seg};
use crate::commands::{parse, print_json};

fn site_path(site: &str) -> anyhow::Result<String> {
    parse::<SiteName>("--site", site)?;
    Ok(format!("/sites/{}/notifications", seg(site)))
}

fn from_env(flag: &str, var: &str) -> anyhow::Result<String> {
    std::env::var(var).with_context(|| format!("{flag} {var}: the environment variable is not set (or not UTF-8)"))
}

fn request(a: NotifyAddArgs) -> anyhow::Result<SubscribeRequest> {
    use chanto_control::notify::Channel;
    let channel = match a.channel {
        NotifyChannel::Webhook => Channel::Webhook,
        NotifyChannel::Slack => Channel::Slack,
        NotifyChannel::Discord => Channel::Discord,
        NotifyChannel::Email => Channel::Email,
        NotifyChannel::Github => Channel::Github,
        NotifyChannel::Gitlab => Channel::Gitlab,
        NotifyChannel::Gitea => Channel::Gitea,
    };
    let url = match (&a.url, &a.url_env) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(var)) => Some(from_env("--url-env", var)?),
        (None, None) => None,
    };
    let secret = a.secret_env.as_deref().map(|v| from_env("--secret-env", v)).transpose()?;
    let smtp = match &a.smtp_host {
        Some(host) => Some(SmtpSettings {
            host: host.clone(),
            port: a.smtp_port,
            security: match a.smtp_security.as_str() {
                "starttls" => SmtpSecurity::Starttls,
                "tls" => SmtpSecurity::Tls,
                "none" => SmtpSecurity::None,
                other => bail!("--smtp-security {other:?}: use starttls, tls or none"),
            },
            username: a.smtp_user.clone(),
            password: a.smtp_password_env.as_deref().map(|v| from_env("--smtp-password-env", v)).transpose()?,
        }),
        None => {
            if a.smtp_port.is_some() || a.smtp_user.is_some() || a.smtp_password_env.is_some() {
                bail!("--smtp-port, --smtp-user and --smtp-password-env need --smtp-host");
            }
            None
        }
    };
    let token = match (&a.token_env, &a.token_file) {
        (Some(var), _) => Some(from_env("--token-env", var)?),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--token-file: reading {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    Ok(SubscribeRequest {
        channel: Some(channel),
        events: a.events,
        branches: a.branches,
        url,
        secret,
        smtp,
        from: a.from,
        to: a.to,
        token,
        repository: a.repository,
        api_url: a.api_url,
        context: a.context,
        comments: a.no_comments.then_some(false),
    })
}

fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Runs a `chanto notify` subcommand.
pub async fn notify(client: &Client, cmd: NotifyCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        NotifyCommand::Add(args) => {
            let path = site_path(&args.site)?;
            let v: SubscriptionView = client.post(&path, &request(*args)?).await?;
            if json {
                return print_json(&v);
            }
            println!("Subscription {} added: {} → {}", v.id, v.channel, v.target);
            if let Some(secret) = &v.secret {
                println!("Signing secret (shown once; receivers verify X-Chanto-Signature with it):");
                println!("  {secret}");
            }
            println!("Send a test: chanto notify test --site {} {}", v.site, v.id);
        }
        NotifyCommand::List { site } => {
            let subs: Vec<SubscriptionView> = client.get(&site_path(&site)?).await?;
            if json {
                return print_json(&subs);
            }
            if subs.is_empty() {
                println!("No subscriptions. Add one with `chanto notify add`.");
            }
            let rows: Vec<Vec<String>> = subs
                .into_iter()
                .map(|s| {
                    let events = if s.events.is_empty() { "all".to_owned() } else { s.events.join(",") };
                    let branches = if s.branches.is_empty() { "all".to_owned() } else { s.branches.join(",") };
                    vec![s.id.to_string(), s.channel.to_string(), s.target, events, branches]
                })
                .collect();
            if !rows.is_empty() {
                crate::table::print(&["ID", "CHANNEL", "TARGET", "EVENTS", "BRANCHES"], &rows);
            }
        }
        NotifyCommand::Remove { site, id } => {
            client.delete(&format!("{}/{}", site_path(&site)?, seg(&id))).await?;
            if !json {
                println!("Removed subscription {id}");
            }
        }
        NotifyCommand::Test { site, id } => {
            let r: TestResult =
                client.post(&format!("{}/{}/test", site_path(&site)?, seg(&id)), &serde_json::json!({})).await?;
            if json {
                return print_json(&r);
            }
            let status = r.status.map(|s| s.to_string()).unwrap_or_else(|| "no answer".into());
            println!(
                "{} ({status}, {} ms): {}",
                if r.delivered { "Delivered" } else { "Not delivered" },
                r.duration_ms,
                r.outcome
            );
            if !r.response.is_empty() {
                println!("The receiver answered: {}", r.response);
            }
            if !r.delivered {
                bail!("the test notification was not delivered");
            }
        }
        NotifyCommand::Redeliver { site, id } => {
            let d: DeliveryView = client
                .post(&format!("{}/deliveries/{id}/redeliver", site_path(&site)?), &serde_json::json!({}))
                .await?;
            if json {
                return print_json(&d);
            }
            println!("Delivery {id} queued again as delivery {} ({} to {})", d.id, d.event, d.subscription);
        }
        NotifyCommand::Deliveries { site, subscription, limit, id } => {
            let base = format!("{}/deliveries", site_path(&site)?);
            if let Some(id) = id {
                let d: DeliveryView = client.get(&format!("{base}/{id}")).await?;
                if json {
                    return print_json(&d);
                }
                println!(
                    "Delivery {} of {} to {} ({}): {}, {}",
                    d.id,
                    d.event,
                    d.subscription,
                    d.action,
                    d.state,
                    crate::commands::count(d.attempts as u64, "attempt")
                );
                for a in d.attempt_log.unwrap_or_default() {
                    let status = a.status.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
                    println!("  #{} {}  {status:>3}  {:>5} ms  {}", a.n, when(a.at), a.duration_ms, a.outcome);
                    if !a.response.is_empty() {
                        println!("      {}", a.response.replace('\n', " "));
                    }
                }
                return Ok(());
            }
            let mut path = format!("{base}?limit={limit}");
            if let Some(s) = &subscription {
                path.push_str(&format!("&subscription={}", seg(s)));
            }
            let list: Vec<DeliveryView> = client.get(&path).await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("No deliveries for {site} yet; `chanto notify test --site {site} ID` sends a sample event.");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .into_iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        when(d.created_at),
                        d.event.to_string(),
                        d.action.to_string(),
                        d.state.to_string(),
                        d.attempts.to_string(),
                        d.last_error.unwrap_or_default(),
                    ]
                })
                .collect();
            crate::table::print(&["ID", "CREATED", "EVENT", "ACTION", "STATE", "ATTEMPTS", "LAST ERROR"], &rows);
        }
    }
    Ok(())
}

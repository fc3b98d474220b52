//! Writes a [`PlatformConfig`] as `chanto.platform.toml` text (what
//! `chanto export` prints): sites by name, sections and keys in one fixed
//! order, no comments, so the same configuration always gives the same
//! bytes and reading them back gives the same configuration.

use std::fmt::Write;

use super::model::*;

/// The configuration as TOML.
pub fn render(config: &PlatformConfig) -> String {
    let mut out = String::new();
    for (name, site) in &config.sites {
        render_site(&mut out, &key(name.as_str()), site);
    }
    out
}

/// A key as TOML writes it: bare when it can be, else a quoted string.
pub fn key(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        k.to_owned()
    } else {
        string(k)
    }
}

/// A TOML basic string.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list<T: AsRef<str>>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(|s| string(s.as_ref())).collect();
    format!("[{}]", parts.join(", "))
}

fn section(out: &mut String, header: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "[{header}]");
}

fn line(out: &mut String, k: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{} = {value}", key(k));
}

fn render_site(out: &mut String, name: &str, site: &SiteConfig) {
    let here = format!("site.{name}");
    section(out, &here);
    line(out, "production_branch", string(site.production_branch.as_str()));
    line(out, "keep_deploys", site.keep_deploys);
    if let Some(p) = site.profile {
        line(out, "profile", string(p.as_str()));
    }
    if !site.proxy_origins.is_empty() {
        line(out, "proxy_origins", list(&site.proxy_origins));
    }
    section(out, &format!("{here}.https"));
    line(out, "redirect", site.https.redirect);
    line(out, "hsts_max_age", site.https.hsts_max_age);
    line(out, "hsts_include_subdomains", site.https.hsts_include_subdomains);
    line(out, "hsts_preload", site.https.hsts_preload);
    if let Some(g) = &site.git {
        section(out, &format!("{here}.git"));
        line(out, "repository", string(&g.repository));
        match &g.credential {
            Some(GitCredential::Token(r)) => line(out, "token", string(&r.to_string())),
            Some(GitCredential::SshKey(r)) => line(out, "ssh_key", string(&r.to_string())),
            None => {}
        }
        if let Some(u) = &g.username {
            line(out, "username", string(u));
        }
        if !g.include.is_empty() {
            line(out, "include", list(&g.include));
        }
        if !g.exclude.is_empty() {
            line(out, "exclude", list(&g.exclude));
        }
        line(out, "delete_branches", g.delete_branches);
        line(out, "pull_request_previews", g.pull_request_previews);
        line(out, "fork_pull_requests", g.fork_pull_requests);
        line(out, "preview_retention_days", g.preview_retention_days);
        if let Some(n) = g.poll_interval_secs {
            line(out, "poll_interval_secs", n);
        }
        if let Some(n) = g.timeout_secs {
            line(out, "timeout_secs", n);
        }
        if let Some(p) = &g.platform_config {
            line(out, "platform_config", string(p));
        }
    }
    let b = &site.build;
    if [&b.command, &b.base, &b.publish, &b.app_root].iter().any(|v| v.is_some()) {
        section(out, &format!("{here}.build"));
        for (k, v) in [("command", &b.command), ("base", &b.base), ("publish", &b.publish), ("app_root", &b.app_root)] {
            if let Some(v) = v {
                line(out, k, string(v));
            }
        }
    }
    render_env(out, &format!("{here}.env"), &site.env);
    if let Some(a) = &site.access.site {
        render_access(out, &format!("{here}.access.site"), a);
    }
    if let Some(a) = &site.access.previews {
        render_access(out, &format!("{here}.access.previews"), a);
    }
    for (branch, c) in &site.branches {
        let at = format!("{here}.branches.{}", key(branch.as_str()));
        section(out, &at);
        render_env(out, &format!("{at}.env"), &c.env);
        if let Some(a) = &c.access {
            render_access(out, &format!("{at}.access"), a);
        }
    }
    for (domain, d) in &site.domains {
        section(out, &format!("{here}.domains.{}", key(domain.as_str())));
        line(out, "primary", d.primary);
        if let Some(b) = &d.branch {
            line(out, "branch", string(b.as_str()));
        }
    }
    for (sub_name, sub) in &site.notify {
        section(out, &format!("{here}.notify.{}", key(sub_name)));
        line(out, "channel", string(sub.channel.name()));
        if !sub.events.is_empty() {
            let events: Vec<&str> = sub.events.iter().map(|e| e.as_str()).collect();
            line(out, "events", list(&events));
        }
        if !sub.branches.is_empty() {
            line(out, "branches", list(&sub.branches));
        }
        let secret = |r: &SecretRef| string(&r.to_string());
        match &sub.channel {
            Channel::Webhook { url, secret: s } => {
                line(out, "url", secret(url));
                line(out, "secret", secret(s));
            }
            Channel::Slack { url } | Channel::Discord { url } => line(out, "url", secret(url)),
            Channel::Email { smtp, from, to } => {
                let mut parts = vec![
                    format!("host = {}", string(&smtp.host)),
                    format!("port = {}", smtp.port),
                    format!("security = {}", string(smtp.security.as_str())),
                ];
                if let Some(u) = &smtp.username {
                    parts.push(format!("username = {}", string(u)));
                }
                if let Some(p) = &smtp.password {
                    parts.push(format!("password = {}", secret(p)));
                }
                line(out, "smtp", format!("{{ {} }}", parts.join(", ")));
                line(out, "from", string(from));
                line(out, "to", list(to));
            }
            Channel::Forge { token, repository, api_url, context, comments, .. } => {
                line(out, "token", secret(token));
                if let Some(r) = repository {
                    line(out, "repository", string(r));
                }
                line(out, "api_url", string(api_url));
                line(out, "context", string(context));
                line(out, "comments", comments);
            }
        }
    }
}

fn render_env(out: &mut String, header: &str, env: &std::collections::BTreeMap<String, EnvValue>) {
    if env.is_empty() {
        return;
    }
    section(out, header);
    for (name, v) in env {
        match v {
            EnvValue::Plain(s) => line(out, name, string(s)),
            EnvValue::Secret(r) => line(out, name, format!("{{ secret = {} }}", string(&r.to_string()))),
        }
    }
}

fn render_access(out: &mut String, header: &str, a: &AccessConfig) {
    section(out, header);
    if !a.users.is_empty() {
        let users: Vec<String> = a
            .users
            .iter()
            .map(|(u, p)| {
                let v = match p {
                    Password::Hash(h) => string(h),
                    Password::Secret(r) => string(&r.to_string()),
                };
                format!("{} = {v}", key(u))
            })
            .collect();
        line(out, "users", format!("{{ {} }}", users.join(", ")));
    }
    let nets = |n: &[ipnet::IpNet]| list(&n.iter().map(ToString::to_string).collect::<Vec<_>>());
    if !a.allow.is_empty() {
        line(out, "allow", nets(&a.allow));
    }
    if !a.deny.is_empty() {
        line(out, "deny", nets(&a.deny));
    }
    line(out, "allow_preflight", a.allow_preflight);
}

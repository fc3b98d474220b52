//! `chanto domains` and `chanto certs`: the CLI side of custom domains
//! (issue 17).

use anyhow::{Context, bail};
use chanto_control::base_certs::{BaseCertificateView, UploadedBaseCertificate};
use chanto_control::domains::{
    AddDomain, DomainView, RemovedDomains, TlsSettings, UploadCertificate, UploadedCertificate,
};
use chanto_core::SiteName;

use crate::cli::{CertsCommand, DomainsCommand};
use crate::client::{Client, seg};
use crate::commands::{parse, print_json};

fn site_path(site: &str) -> anyhow::Result<String> {
    parse::<SiteName>("--site", site)?;
    Ok(format!("/sites/{}", seg(site)))
}

fn domain_path(site: &str, name: &str) -> anyhow::Result<String> {
    Ok(format!("{}/domains/{}", site_path(site)?, seg(name)))
}

/// What to do next for a domain, in a line.
fn next_step(d: &DomainView) -> String {
    match d.state.as_str() {
        "pending_verification" => format!(
            "create DNS {} {} → {}, then `chanto domains verify {} --site {}`",
            d.dns.kind, d.dns.name, d.dns.value, d.name, d.site
        ),
        _ => d.hint.clone().unwrap_or_default(),
    }
}

fn print_domain(d: &DomainView) {
    let branch = d.branch.as_deref().map(|b| format!(" (branch {b})")).unwrap_or_default();
    let primary = if d.primary { ", primary" } else { "" };
    println!("{}{branch}: {}{primary} — {}", d.name, d.state, d.url);
    if let Some(reason) = &d.reason {
        println!("  why:  {reason}");
    }
    let next = next_step(d);
    if !next.is_empty() {
        println!("  next: {next}");
    }
    if let Some(c) = &d.certificate {
        println!("  certificate: {} from {}, until {} ({} days)", c.source, c.issuer, c.not_after, c.days_left);
    }
}

/// Runs a `chanto domains` subcommand.
pub async fn domains(client: &Client, cmd: DomainsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        DomainsCommand::Add { name, site, branch, no_www } => {
            let body = AddDomain { name, branch, www: no_www.then_some(false) };
            let added: Vec<DomainView> = client.post(&format!("{}/domains", site_path(&site)?), &body).await?;
            if json {
                return print_json(&added);
            }
            for d in &added {
                print_domain(d);
            }
            if let Some(d) = added.first() {
                println!();
                println!("Until DNS points at this installation, test with:");
                println!("  curl -H 'Host: {}' {}", d.name, d.url.replacen(&d.name, "EDGE-ADDRESS", 1));
            }
        }
        DomainsCommand::List { site } => {
            let list: Vec<DomainView> = client.get(&format!("{}/domains", site_path(&site)?)).await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("No domains. Add one: chanto domains add www.example.com --site {site}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.branch.clone().unwrap_or_else(|| "(production)".into()),
                        if d.primary { "yes".into() } else { String::new() },
                        d.state.clone(),
                        d.certificate.as_ref().map(|c| format!("{} days", c.days_left)).unwrap_or_default(),
                        d.reason.clone().unwrap_or_else(|| next_step(d)),
                    ]
                })
                .collect();
            crate::table::print(&["DOMAIN", "BRANCH", "PRIMARY", "STATE", "CERTIFICATE", "NEXT"], &rows);
        }
        DomainsCommand::Remove { name, site } => {
            let r: RemovedDomains = client.delete_json(&domain_path(&site, &name)?).await?;
            if json {
                return print_json(&r);
            }
            println!("Removed {}", r.removed.join(", "));
        }
        DomainsCommand::Verify { name, site } => {
            let d: DomainView =
                client.post(&format!("{}/verify", domain_path(&site, &name)?), &serde_json::json!({})).await?;
            if json {
                return print_json(&d);
            }
            print_domain(&d);
            if d.verified_at.is_none() {
                bail!("{} does not reach this installation yet", d.name);
            }
        }
        DomainsCommand::Primary { name, site } => {
            let d: DomainView =
                client.put(&format!("{}/primary", domain_path(&site, &name)?), &serde_json::json!({})).await?;
            if json {
                return print_json(&d);
            }
            println!("{} is now the primary domain of {}: the others redirect to it", d.name, d.site);
        }
        DomainsCommand::Https { site, redirect, hsts_max_age, hsts_include_subdomains, hsts_preload } => {
            let path = format!("{}/tls", site_path(&site)?);
            let change = TlsSettings { https_redirect: redirect, hsts_max_age, hsts_include_subdomains, hsts_preload };
            let now: TlsSettings = if change.https_redirect.is_none()
                && change.hsts_max_age.is_none()
                && change.hsts_include_subdomains.is_none()
                && change.hsts_preload.is_none()
            {
                client.get(&path).await?
            } else {
                client.put(&path, &change).await?
            };
            if json {
                return print_json(&now);
            }
            let on = |b: Option<bool>| if b.unwrap_or(false) { "on" } else { "off" };
            println!("HTTP → HTTPS redirect: {}", on(now.https_redirect));
            match now.hsts_max_age.unwrap_or(0) {
                0 => println!("HSTS: off"),
                age => println!(
                    "HSTS: max-age={age}, includeSubDomains {}, preload {}",
                    on(now.hsts_include_subdomains),
                    on(now.hsts_preload)
                ),
            }
        }
    }
    Ok(())
}

fn read_pem(flag: &str, path: &std::path::Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("{flag} {}", path.display()))?;
    if meta.len() > chanto_control::domains::MAX_CERTIFICATE_BODY as u64 {
        bail!(
            "{flag} {}: {} bytes is too big for a PEM file (at most {} KiB)",
            path.display(),
            meta.len(),
            chanto_control::domains::MAX_CERTIFICATE_BODY >> 10
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}: reading it (a PEM file is text)", path.display()))
}

/// Runs a `chanto certs` subcommand.
pub async fn certs(client: &Client, cmd: CertsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Upload { domain, site, base, cert, key } => {
            let body = UploadCertificate { chain_pem: read_pem("--cert", &cert)?, key_pem: read_pem("--key", &key)? };
            // Name the file the server found wrong.
            let named = |e: crate::client::CallError| {
                let file = match e.code.as_deref() {
                    Some("key_pem_invalid" | "key_unsupported") => Some(("--key", &key)),
                    Some(c) if c.starts_with("cert_") || c.starts_with("chain_") || c == "names_do_not_cover" => {
                        Some(("--cert", &cert))
                    }
                    _ => None,
                };
                match file {
                    Some((flag, path)) => anyhow::anyhow!("{flag} {}: {e}", path.display()),
                    None => anyhow::Error::new(e),
                }
            };
            let (Some(domain), Some(site), false) = (domain, site, base) else {
                let r: UploadedBaseCertificate = client.put("/certificates/base", &body).await.map_err(named)?;
                if json {
                    return print_json(&r);
                }
                r.base.iter().for_each(print_base);
                for w in &r.warnings {
                    println!("warning: {w}");
                }
                return Ok(());
            };
            let r: UploadedCertificate =
                client.put(&format!("{}/certificate", domain_path(&site, &domain)?), &body).await.map_err(named)?;
            if json {
                return print_json(&r);
            }
            print_domain(&r.domain);
            for w in &r.warnings {
                println!("warning: {w}");
            }
        }
        CertsCommand::Base => {
            let base: Vec<BaseCertificateView> = client.get("/certificates/base").await?;
            if json {
                return print_json(&base);
            }
            base.iter().for_each(print_base);
        }
        CertsCommand::RemoveBase { pattern } => {
            let base: Vec<BaseCertificateView> =
                client.delete_json(&format!("/certificates/base/{}", seg(&pattern))).await?;
            if json {
                return print_json(&base);
            }
            base.iter().for_each(print_base);
        }
    }
    Ok(())
}

fn print_base(b: &BaseCertificateView) {
    match &b.certificate {
        Some(c) => println!(
            "{}: {} from {}, until {} ({} days) — every <site> and <branch>--<site> host over HTTPS",
            b.pattern, c.source, c.issuer, c.not_after, c.days_left
        ),
        None => println!(
            "{}: no certificate — upload one with `chanto certs upload --base`, or order one by DNS-01 (--acme-challenge dns-01)",
            b.pattern
        ),
    }
    if let Some(reason) = &b.reason {
        let when = b.next_attempt.as_deref().map(|t| format!(" (tries again at {t})")).unwrap_or_default();
        println!("  why:  {reason}{when}");
    }
}

//! The live side: every site's settings as `chanto.platform.toml` would
//! declare them, with fingerprints of the secrets it holds.

use std::collections::BTreeMap;

use chanto_core::{AccessPolicy, AccessScope, BranchName, DomainName, SiteName};
use chanto_store::DomainRecord;

use crate::builds::GitSettings;
use crate::builds::sealed::Sealer;
use crate::notify::ChannelConfig;
use crate::platform::{
    AccessConfig, Channel, DomainConfig, EnvValue, Forge, GitConfig, GitCredential, HttpsConfig, Password,
    PlatformConfig, SecretRef, SiteConfig, Smtp, SmtpSecurity, Subscription, address,
};
use crate::{ApiError, Control};

/// The key under which `chanto apply` remembers the reference a secret was
/// applied from.
pub(crate) fn ref_key(secret_key: &str) -> String {
    format!("ref:{secret_key}")
}

/// The key under which `chanto apply` remembers a subscription's name.
pub(crate) fn notify_key(name: &str) -> String {
    format!("notify:{name}")
}

/// What is live, as the file would declare it.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Every site.
    pub config: PlatformConfig,
    /// Fingerprints of the live secrets' values (passwords aside), by secret key.
    pub fingerprints: BTreeMap<String, String>,
    /// The hash of each password exported as a reference, by secret key.
    pub password_hashes: BTreeMap<String, String>,
    /// Each secret's reference, by secret key, and whether an apply wrote it
    /// (else the export made its name up).
    pub references: BTreeMap<String, (SecretRef, bool)>,
    /// Each subscription's id, by site and name.
    pub subscription_ids: BTreeMap<(SiteName, String), String>,
}

/// Reads one site's secrets into references and fingerprints.
struct Secrets<'a> {
    site: &'a SiteName,
    remembered: &'a BTreeMap<String, String>,
    sealer: &'a Sealer,
    live: &'a mut Live,
}

impl Secrets<'_> {
    /// The reference of the secret `key` holding `value`: the one an apply
    /// remembered, else a name made from `name_parts`.
    fn reference(&mut self, key: String, name_parts: &[&str], value: Option<&[u8]>) -> SecretRef {
        let remembered = self.remembered.get(&ref_key(&key)).and_then(|r| SecretRef::parse(r).ok());
        let (reference, was) = match remembered {
            Some(r) => (r, true),
            None => (made_up(self.site, name_parts), false),
        };
        if let Some(v) = value {
            self.live.fingerprints.insert(key.clone(), self.sealer.fingerprint(&key, v));
        }
        self.live.references.insert(key, (reference.clone(), was));
        reference
    }

    /// A sealed secret: opened only to fingerprint it.
    fn sealed(&mut self, key: String, name_parts: &[&str], sealed: &[u8]) -> SecretRef {
        // A secret that no longer opens (the key changed) gets no
        // fingerprint: the plan then compares it by reference only.
        let value = self.sealer.open(sealed).ok();
        self.reference(key, name_parts, value.as_deref())
    }
}

/// `env:` + the site and the parts in capitals, `_` for anything else:
/// `env:DOCS_API_KEY`.
fn made_up(site: &SiteName, parts: &[&str]) -> SecretRef {
    let mut name: String = std::iter::once(site.as_str())
        .chain(parts.iter().copied())
        .collect::<Vec<_>>()
        .join("_")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert_str(0, "SITE_");
    }
    name.truncate(256);
    SecretRef::Env(name)
}

impl Control {
    /// Every site's settings as the file would declare them.
    pub(crate) async fn live_platform(&self) -> Result<Live, ApiError> {
        let sealer = self.sealer()?;
        let meta = &self.meta;
        let mut state: BTreeMap<SiteName, BTreeMap<String, String>> = BTreeMap::new();
        for row in meta.platform_state(None).await? {
            state.entry(row.site).or_default().insert(row.key, row.value);
        }
        let keep: BTreeMap<SiteName, u32> = meta.all_keep_deploys().await?.into_iter().collect();
        let origins: BTreeMap<SiteName, Vec<String>> = meta.proxy_origins(None).await?.into_iter().collect();
        let tls: BTreeMap<_, _> = meta.all_site_tls().await?.into_iter().collect();
        let mut git: BTreeMap<SiteName, _> = meta.list_git().await?.into_iter().map(|g| (g.site.clone(), g)).collect();
        let mut access: BTreeMap<SiteName, Vec<(AccessScope, AccessPolicy)>> = BTreeMap::new();
        for (site, scope, policy) in meta.all_access().await? {
            access.entry(site).or_default().push((scope, policy));
        }
        let mut domains: BTreeMap<SiteName, Vec<DomainRecord>> = BTreeMap::new();
        for d in meta.domains(None).await? {
            domains.entry(d.site.clone()).or_default().push(d);
        }
        let empty = BTreeMap::new();
        let mut live = Live::default();
        for rec in meta.list_sites().await? {
            let name = rec.name.clone();
            let remembered = state.get(&name).unwrap_or(&empty);
            let mut site = SiteConfig::new(rec.production_branch.clone());
            site.keep_deploys = keep.get(&name).copied().unwrap_or(0);
            site.profile = meta.site_profile(&name).await?.and_then(|p| p.parse().ok());
            site.proxy_origins = origins.get(&name).cloned().unwrap_or_default();
            if let Some(t) = tls.get(&name) {
                site.https = HttpsConfig {
                    redirect: t.https_redirect,
                    hsts_max_age: t.hsts_max_age,
                    hsts_include_subdomains: t.hsts_include_subdomains,
                    hsts_preload: t.hsts_preload,
                };
            }
            let env = meta.list_env(&name).await?;
            let subscriptions = meta.list_subscriptions(&name).await?;
            let mut secrets = Secrets { site: &name, remembered, sealer: &sealer, live: &mut live };

            if let Some(g) = git.remove(&name) {
                let settings: GitSettings = serde_json::from_str(&g.settings).map_err(|e| {
                    ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        format!("stored git settings of {name}: {e}"),
                    )
                })?;
                let mut config = GitConfig::new(g.repository.clone());
                let key = format!("{}.credential", address::git(&name));
                config.credential = match (&g.credential, settings.credential_kind) {
                    (Some(sealed), Some(crate::builds::CredentialKind::SshKey)) => {
                        Some(GitCredential::SshKey(secrets.sealed(key, &["GIT_SSH_KEY"], sealed)))
                    }
                    (Some(sealed), _) => Some(GitCredential::Token(secrets.sealed(key, &["GIT_TOKEN"], sealed))),
                    (None, _) => None,
                };
                config.username = settings.username.clone();
                config.include = settings.include.clone();
                config.exclude = settings.exclude.clone();
                config.delete_branches = settings.delete_branches;
                config.pull_request_previews = settings.pull_request_previews;
                config.fork_pull_requests = settings.fork_pull_requests;
                config.preview_retention_days = settings.preview_retention_days;
                config.poll_interval_secs = settings.poll_interval_secs;
                config.timeout_secs = settings.timeout_secs;
                config.platform_config = settings.platform_config.clone();
                site.build = settings.build.clone();
                site.git = Some(config);
            }

            for var in env {
                let key = format!("{}.value", address::env(&name, var.branch.as_ref(), &var.name));
                let value = if var.secret {
                    let parts: Vec<&str> =
                        var.branch.iter().map(BranchName::as_str).chain([var.name.as_str()]).collect();
                    EnvValue::Secret(secrets.sealed(key, &parts, &var.value))
                } else {
                    EnvValue::Plain(String::from_utf8_lossy(&var.value).into_owned())
                };
                match &var.branch {
                    None => site.env.insert(var.name, value),
                    Some(b) => site.branches.entry(b.clone()).or_default().env.insert(var.name, value),
                };
            }

            for (scope, policy) in access.remove(&name).unwrap_or_default() {
                let at = address::access(&name, &scope);
                let mut users = BTreeMap::new();
                for u in policy.users {
                    let key = format!("{at}.users{}", address::key(&u.user));
                    let password = match remembered.get(&ref_key(&key)).and_then(|r| SecretRef::parse(r).ok()) {
                        Some(r) => {
                            secrets.live.references.insert(key.clone(), (r.clone(), true));
                            secrets.live.password_hashes.insert(key, u.hash);
                            Password::Secret(r)
                        }
                        None => Password::Hash(u.hash),
                    };
                    users.insert(u.user, password);
                }
                let config = AccessConfig {
                    users,
                    allow: policy.allow,
                    deny: policy.deny,
                    allow_preflight: policy.allow_preflight,
                };
                match scope {
                    AccessScope::Site => site.access.site = Some(config),
                    AccessScope::Previews => site.access.previews = Some(config),
                    AccessScope::Branch(b) => {
                        site.branches.entry(b).or_default().access = Some(config);
                    }
                }
            }

            for d in domains.remove(&name).unwrap_or_default() {
                if let Ok(domain) = d.name.parse::<DomainName>() {
                    site.domains.insert(domain, DomainConfig { primary: d.primary, branch: d.branch });
                }
            }

            let names: BTreeMap<&str, &str> =
                remembered.iter().filter_map(|(k, id)| k.strip_prefix("notify:").map(|n| (id.as_str(), n))).collect();
            for sub in subscriptions {
                let sub_name = names.get(sub.id.as_str()).map_or_else(|| sub.id.clone(), |n| (*n).to_owned());
                let Ok(plain) = sealer.open(&sub.config) else { continue };
                let Ok(config) = serde_json::from_slice::<ChannelConfig>(&plain) else { continue };
                let filter: chanto_notify::Filter = serde_json::from_str(&sub.filter).unwrap_or_default();
                let at = address::notify(&name, &sub_name);
                let upper = sub_name.as_str();
                let channel = match config {
                    ChannelConfig::Webhook { url, secret } => Channel::Webhook {
                        url: secrets.reference(format!("{at}.url"), &[upper, "URL"], Some(url.as_bytes())),
                        secret: secrets.reference(format!("{at}.secret"), &[upper, "SECRET"], Some(secret.as_bytes())),
                    },
                    ChannelConfig::Slack { url } => Channel::Slack {
                        url: secrets.reference(format!("{at}.url"), &[upper, "URL"], Some(url.as_bytes())),
                    },
                    ChannelConfig::Discord { url } => Channel::Discord {
                        url: secrets.reference(format!("{at}.url"), &[upper, "URL"], Some(url.as_bytes())),
                    },
                    ChannelConfig::Email { smtp, from, to } => {
                        let security = match smtp.security {
                            crate::notify::SmtpSecurity::Starttls => SmtpSecurity::Starttls,
                            crate::notify::SmtpSecurity::Tls => SmtpSecurity::Tls,
                            crate::notify::SmtpSecurity::None => SmtpSecurity::None,
                        };
                        let password = smtp.password.as_ref().map(|p| {
                            secrets.reference(
                                format!("{at}.smtp.password"),
                                &[upper, "SMTP_PASSWORD"],
                                Some(p.as_bytes()),
                            )
                        });
                        Channel::Email {
                            smtp: Smtp {
                                host: smtp.host,
                                port: smtp.port.unwrap_or(security.default_port()),
                                security,
                                username: smtp.username,
                                password,
                            },
                            from,
                            to,
                        }
                    }
                    ChannelConfig::Forge { forge, api_url, repository, token, context, comments } => Channel::Forge {
                        forge: match forge {
                            crate::notify::Channel::Gitlab => Forge::Gitlab,
                            crate::notify::Channel::Gitea => Forge::Gitea,
                            _ => Forge::Github,
                        },
                        token: secrets.reference(format!("{at}.token"), &[upper, "TOKEN"], Some(token.as_bytes())),
                        repository: Some(repository),
                        api_url,
                        context,
                        comments,
                    },
                };
                secrets.live.subscription_ids.insert((name.clone(), sub_name.clone()), sub.id.clone());
                site.notify.insert(
                    sub_name,
                    Subscription { events: filter.events().to_vec(), branches: filter.branches().to_vec(), channel },
                );
            }
            live.config.sites.insert(name, site);
        }
        live.config.normalize();
        Ok(live)
    }
}

/// The export's list of references: each with the secrets it stands for.
pub(crate) fn exported_secrets(live: &Live) -> Vec<super::ExportedSecret> {
    let mut by_ref: BTreeMap<String, super::ExportedSecret> = BTreeMap::new();
    for (key, (reference, remembered)) in &live.references {
        let e = by_ref.entry(reference.to_string()).or_insert_with(|| super::ExportedSecret {
            reference: reference.to_string(),
            used_by: Vec::new(),
            remembered: true,
        });
        e.used_by.push(key.clone());
        e.remembered &= *remembered;
    }
    by_ref.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_names_are_environment_variables() {
        let site: SiteName = "docs-2".parse().unwrap();
        assert_eq!(made_up(&site, &["API_KEY"]).to_string(), "env:DOCS_2_API_KEY");
        assert_eq!(made_up(&site, &["feature/login", "X"]).to_string(), "env:DOCS_2_FEATURE_LOGIN_X");
        let digit: SiteName = "2024".parse().unwrap();
        let r = made_up(&digit, &["slack-main", "URL"]);
        assert_eq!(r.to_string(), "env:SITE_2024_SLACK_MAIN_URL");
        assert!(SecretRef::parse(&r.to_string()).is_ok());
    }
}

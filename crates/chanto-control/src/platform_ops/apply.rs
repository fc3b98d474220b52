//! Planning against the live platform and carrying a saved plan out, one
//! change at a time through the same operations the API's own endpoints
//! use (so every check they make still applies).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use chanto_core::{AccessPolicy, AccessScope, AccessUser, BranchName, DomainName, SiteName};

use super::live::{Live, notify_key, ref_key};
use crate::access::hash_password;
use crate::builds::{ConnectRequest, GitSettings};
use crate::domains::{AddDomain, TlsSettings};
use crate::notify::{SmtpSettings, SubscribeRequest};
use crate::platform::{
    self, Action, Change, Channel, EnvValue, Forge, GitCredential, Password, Plan, PlanInputs, PlatformConfig,
    SecretKind, SiteConfig, SmtpSecurity, address,
};
use crate::{ApiError, Control};

/// A desired configuration planned against what is live.
pub(crate) struct Planned {
    /// The configuration wanted.
    pub desired: PlatformConfig,
    /// What is live.
    pub live: Live,
    /// Versions and fingerprints the plan used.
    pub inputs: PlanInputs,
    /// The desired secrets' values, by secret key.
    pub values: BTreeMap<String, String>,
    /// The plan.
    pub plan: Plan,
    /// Every resource of both sides, by address.
    resources: BTreeMap<String, (SiteName, Resource)>,
}

/// One resource a plan addresses.
#[derive(Debug, Clone)]
enum Resource {
    Site,
    Git,
    Env(Option<BranchName>, String),
    Access(AccessScope),
    Domain(DomainName),
    Notify(String),
}

/// Every resource of `config` by address.
fn resources(config: &PlatformConfig, out: &mut BTreeMap<String, (SiteName, Resource)>) {
    for (name, site) in &config.sites {
        let mut put = |a: String, r: Resource| {
            out.insert(a, (name.clone(), r));
        };
        put(address::site(name), Resource::Site);
        put(address::git(name), Resource::Git);
        for var in site.env.keys() {
            put(address::env(name, None, var), Resource::Env(None, var.clone()));
        }
        for (b, c) in &site.branches {
            for var in c.env.keys() {
                put(address::env(name, Some(b), var), Resource::Env(Some(b.clone()), var.clone()));
            }
        }
        for (scope, _) in platform::access_policies(site) {
            put(address::access(name, &scope), Resource::Access(scope));
        }
        for d in site.domains.keys() {
            put(address::domain(name, d), Resource::Domain(d.clone()));
        }
        for n in site.notify.keys() {
            put(address::notify(name, n), Resource::Notify(n.clone()));
        }
    }
}

fn unprocessable(code: &'static str, lines: Vec<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, lines.join("\n")).details(serde_json::json!(lines))
}

/// Fills what the file may leave to the wiring: a forge subscription's
/// repository, from the site's git connection.
fn fill_defaults(desired: &mut PlatformConfig) {
    for site in desired.sites.values_mut() {
        let repo = site.git.as_ref().and_then(|g| chanto_notify::parse_repo_path(&g.repository));
        for sub in site.notify.values_mut() {
            if let Channel::Forge { repository: r @ None, .. } = &mut sub.channel {
                r.clone_from(&repo);
            }
        }
    }
}

impl Control {
    /// Plans `desired` (its secrets' values given by reference) against
    /// what is live now, refusing what apply could not carry out.
    pub(crate) async fn plan_platform(
        &self,
        mut desired: PlatformConfig,
        secrets: &BTreeMap<String, String>,
        only: &[String],
    ) -> Result<Planned, ApiError> {
        let only: Vec<SiteName> = only
            .iter()
            .map(|s| s.parse::<SiteName>().map_err(|e| ApiError::from(e).field("sites")))
            .collect::<Result<_, _>>()?;
        if !only.is_empty() {
            desired.sites.retain(|n, _| only.contains(n));
        }
        fill_defaults(&mut desired);
        let sealer = self.sealer()?;
        let mut values = BTreeMap::new();
        let mut problems = Vec::new();
        for u in desired.secrets() {
            match secrets.get(&u.reference.to_string()) {
                Some(v) => {
                    values.insert(u.key, v.clone());
                }
                None => problems.push(format!("{}: no value was sent for {}", u.key, u.reference)),
            }
        }
        if !problems.is_empty() {
            return Err(unprocessable("missing_secrets", problems));
        }
        check_values(&desired, &values)?;
        let desired_fps: BTreeMap<String, String> =
            values.iter().map(|(k, v)| (k.clone(), sealer.fingerprint(k, v.as_bytes()))).collect();
        let mut live = self.live_platform().await?;
        if !only.is_empty() {
            live.config.sites.retain(|n, _| only.contains(n));
        }
        let mut live_fps = live.fingerprints.clone();
        for (key, hash) in &live.password_hashes {
            let same = match values.get(key) {
                Some(v) => crate::accounts::verify_password(hash.clone(), v.clone()).await,
                None => false,
            };
            let fp = match desired_fps.get(key) {
                Some(fp) if same => fp.clone(),
                _ => format!("hash:{}", sealer.fingerprint(key, hash.as_bytes())),
            };
            live_fps.insert(key.clone(), fp);
        }
        let inputs = PlanInputs {
            versions: platform::content_versions(&live.config, &live_fps),
            live_fingerprints: live_fps,
            desired_fingerprints: desired_fps,
        };
        let plan = platform::plan(&live.config, &desired, &inputs);
        let mut map = BTreeMap::new();
        resources(&live.config, &mut map);
        resources(&desired, &mut map);
        let planned = Planned { desired, live, inputs, values, plan, resources: map };
        self.check_applicable(&planned).await?;
        Ok(planned)
    }

    /// Refuses a plan with changes this server cannot make, naming each.
    async fn check_applicable(&self, p: &Planned) -> Result<(), ApiError> {
        let mut problems = Vec::new();
        for (i, c) in p.plan.changes.iter().enumerate() {
            let Some((site, resource)) = p.resources.get(&c.address) else { continue };
            let making = c.action != Action::Destroy;
            match resource {
                Resource::Git | Resource::Env(..) if making && self.builds().is_err() => problems.push(format!(
                    "{}: this server runs no builds (--build-concurrency 0), so it keeps no git connections or build variables",
                    c.address
                )),
                Resource::Notify(_) if making && self.notifier().is_err() => problems.push(format!(
                    "{}: this server sends no notifications (--no-notifications), so it keeps no subscriptions",
                    c.address
                )),
                Resource::Domain(d) if c.action == Action::Create => {
                    if let Err(e) = self.check_claimable(d) {
                        problems.push(format!("{}: {}", c.address, e.message));
                    } else if let Some(other) = self.meta.domain(d.as_str()).await?
                        && other.site != *site
                    {
                        // Fine only if this plan frees it first: it removes
                        // the domain (or its site) earlier in its order.
                        let frees = [address::domain(&other.site, d), address::site(&other.site)];
                        let freed_before = p.plan.changes[..i]
                            .iter()
                            .any(|e| e.action == Action::Destroy && frees.contains(&e.address));
                        if !freed_before {
                            problems.push(format!(
                                "{}: {d} belongs to site {}; remove it there first (one domain, one site)",
                                c.address, other.site
                            ));
                        }
                    }
                }
                Resource::Domain(_) if c.fields.iter().any(|f| f.field == "branch") => problems.push(format!(
                    "{}: the branch a domain serves cannot change in place; remove the domain in one apply and add it again in the next (it is verified again)",
                    c.address
                )),
                Resource::Domain(d) if c.fields.iter().any(|f| f.field == "primary" && f.after.as_deref() == Some("false")) => {
                    let site_cfg = p.desired.sites.get(site);
                    if !site_cfg.is_some_and(|s| s.domains.iter().any(|(n, c)| c.primary && n != d)) {
                        problems.push(format!(
                            "{}: a site keeps a primary domain once it has one; make another of its domains primary instead",
                            c.address
                        ));
                    }
                }
                _ => {}
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(unprocessable("plan_not_applicable", problems)) }
    }

    /// Makes one change of a plan.
    pub(crate) async fn apply_change(&self, change: &Change, p: &Planned) -> Result<Option<String>, ApiError> {
        let (name, resource) = p.resources.get(&change.address).cloned().ok_or_else(|| {
            ApiError::new(StatusCode::CONFLICT, "plan_stale", format!("{} is in no configuration", change.address))
        })?;
        let desired = p.desired.sites.get(&name);
        let live = p.live.config.sites.get(&name);
        let remember = |key: String, value: Option<String>| {
            let name = name.clone();
            async move { self.meta.set_platform_state(&name, &ref_key(&key), value.as_deref()).await }
        };
        match (resource, change.action) {
            (Resource::Site, Action::Destroy) => self.delete_site(&name).await?,
            (Resource::Site, action) => {
                let d = desired.expect("a site to create or update is desired");
                if action == Action::Create {
                    self.create_site(&name, &d.production_branch).await?;
                }
                self.set_site_fields(&name, d, live).await?;
            }
            (Resource::Git, Action::Destroy) => {
                self.disconnect_git(&name).await?;
                remember(format!("{}.credential", address::git(&name)), None).await?;
            }
            (Resource::Git, _) => {
                let d = desired.expect("desired site");
                let g = d.git.as_ref().expect("a git connection to make is desired");
                let key = format!("{}.credential", address::git(&name));
                let secret = || p.values.get(&key).cloned();
                let (token, ssh_key) = match &g.credential {
                    Some(GitCredential::Token(_)) => (secret(), None),
                    Some(GitCredential::SshKey(_)) => (None, secret()),
                    None => (None, None),
                };
                let settings = GitSettings {
                    include: g.include.clone(),
                    exclude: g.exclude.clone(),
                    delete_branches: g.delete_branches,
                    pull_request_previews: g.pull_request_previews,
                    fork_pull_requests: g.fork_pull_requests,
                    preview_retention_days: g.preview_retention_days,
                    poll_interval_secs: g.poll_interval_secs,
                    timeout_secs: g.timeout_secs,
                    build: d.build.clone(),
                    credential_kind: None,
                    username: g.username.clone(),
                    platform_config: g.platform_config.clone(),
                };
                let view = self
                    .connect_git(
                        &name,
                        ConnectRequest {
                            repository: g.repository.clone(),
                            token,
                            ssh_key,
                            clear_credential: g.credential.is_none(),
                            rotate_webhook_secret: false,
                            production_branch: None,
                            settings,
                        },
                    )
                    .await?;
                let reference = g.credential.as_ref().map(|c| match c {
                    GitCredential::Token(r) | GitCredential::SshKey(r) => r.to_string(),
                });
                remember(key, reference).await?;
                if let Some(s) = view.webhook_secret {
                    return Ok(Some(format!(
                        "webhook secret, shown once: {s} (give it to the forge's push webhook: {}, {} or {})",
                        view.webhooks.github, view.webhooks.gitlab, view.webhooks.gitea
                    )));
                }
            }
            (Resource::Env(branch, var), action) => {
                let key = format!("{}.value", address::env(&name, branch.as_ref(), &var));
                if action == Action::Destroy {
                    self.unset_env(&name, branch, &var).await?;
                    remember(key, None).await?;
                } else {
                    let d = desired.expect("desired site");
                    let env = match &branch {
                        None => &d.env,
                        Some(b) => &d.branches[b].env,
                    };
                    let (value, secret, reference) = match &env[&var] {
                        EnvValue::Plain(v) => (v.clone(), false, None),
                        EnvValue::Secret(r) => (p.values[&key].clone(), true, Some(r.to_string())),
                    };
                    self.set_env(&name, branch, var, value, secret).await?;
                    remember(key, reference).await?;
                }
            }
            (Resource::Access(scope), Action::Destroy) => {
                self.clear_access(&name, &scope).await?;
                if let Some(l) = live {
                    for (s, policy) in platform::access_policies(l) {
                        if s == scope {
                            for user in policy.users.keys() {
                                let key = format!("{}.users{}", address::access(&name, &scope), address::key(user));
                                remember(key, None).await?;
                            }
                        }
                    }
                }
            }
            (Resource::Access(scope), _) => {
                let d = desired.expect("desired site");
                let at = address::access(&name, &scope);
                let policy = platform::access_policies(d)
                    .into_iter()
                    .find(|(s, _)| *s == scope)
                    .map(|(_, p)| p.clone())
                    .expect("a policy to set is desired");
                let live_hashes: BTreeMap<String, String> = self
                    .meta
                    .access(&name)
                    .await?
                    .into_iter()
                    .find(|(s, _)| *s == scope)
                    .map(|(_, p)| p.users.into_iter().map(|u| (u.user, u.hash)).collect())
                    .unwrap_or_default();
                let mut users = Vec::new();
                let mut refs = Vec::new();
                for (user, pw) in &policy.users {
                    let key = format!("{at}.users{}", address::key(user));
                    let hash = match pw {
                        Password::Hash(h) => {
                            refs.push((key, None));
                            h.clone()
                        }
                        Password::Secret(r) => {
                            let clear = p.values[&key].clone();
                            refs.push((key, Some(r.to_string())));
                            match live_hashes.get(user) {
                                Some(h) if crate::accounts::verify_password(h.clone(), clear.clone()).await => {
                                    h.clone()
                                }
                                _ => hash_password(clear).await?,
                            }
                        }
                    };
                    users.push(AccessUser { user: user.clone(), hash });
                }
                let new = AccessPolicy {
                    users,
                    allow: policy.allow.clone(),
                    deny: policy.deny.clone(),
                    allow_preflight: policy.allow_preflight,
                };
                self.put_access_policy(&name, &scope, new).await?;
                for (key, r) in refs {
                    remember(key, r).await?;
                }
            }
            (Resource::Domain(domain), Action::Destroy) => {
                let removed = self.remove_domain(&name, domain.as_str()).await?;
                // Removing an apex takes its `www` twin; one the file keeps comes back.
                for other in removed.iter().filter(|n| *n != domain.as_str()) {
                    if let Some(d) = desired
                        && let Ok(n) = other.parse::<DomainName>()
                        && let Some(cfg) = d.domains.get(&n)
                    {
                        self.add_domain(
                            &name,
                            &AddDomain {
                                name: other.clone(),
                                branch: cfg.branch.as_ref().map(ToString::to_string),
                                www: Some(false),
                            },
                        )
                        .await?;
                    }
                }
            }
            (Resource::Domain(domain), action) => {
                let d = desired.expect("desired site");
                let cfg = &d.domains[&domain];
                if action == Action::Create {
                    let req = AddDomain {
                        name: domain.to_string(),
                        branch: cfg.branch.as_ref().map(ToString::to_string),
                        www: Some(false),
                    };
                    self.add_domain(&name, &req).await?;
                }
                if cfg.primary {
                    self.set_primary_domain(&name, domain.as_str()).await?;
                } else if action == Action::Update
                    && let Some((other, _)) = d.domains.iter().find(|(n, c)| c.primary && **n != domain)
                {
                    // It was primary; the one that takes over may not exist yet.
                    if self.meta.domain(other.as_str()).await?.is_some_and(|o| o.site == name) {
                        self.set_primary_domain(&name, other.as_str()).await?;
                    }
                }
            }
            (Resource::Notify(sub), action) => {
                if action != Action::Create
                    && let Some(id) = p.live.subscription_ids.get(&(name.clone(), sub.clone()))
                {
                    match self.unsubscribe(&name, id).await {
                        Ok(()) => {}
                        Err(e) if e.status == StatusCode::NOT_FOUND => {}
                        Err(e) => return Err(e),
                    }
                }
                let at = address::notify(&name, &sub);
                let keys = ["url", "secret", "smtp.password", "token"].map(|f| format!("{at}.{f}"));
                if action == Action::Destroy {
                    self.meta.set_platform_state(&name, &notify_key(&sub), None).await?;
                    for k in keys {
                        remember(k, None).await?;
                    }
                } else {
                    let d = desired.expect("desired site");
                    let want = &d.notify[&sub];
                    let req = subscribe_request(want, &at, &p.values);
                    let view = self.subscribe(&name, req).await?;
                    self.meta.set_platform_state(&name, &notify_key(&sub), Some(&view.id)).await?;
                    let used: BTreeMap<String, String> = p
                        .desired
                        .secrets()
                        .into_iter()
                        .filter(|u| u.key.starts_with(&format!("{at}.")))
                        .map(|u| (u.key, u.reference.to_string()))
                        .collect();
                    for k in keys {
                        let r = used.get(&k).cloned();
                        remember(k, r).await?;
                    }
                }
            }
        }
        Ok(None)
    }

    /// Sets every site-level field of `d` (those equal to `live` too: each
    /// is one cheap, idempotent write).
    async fn set_site_fields(
        &self,
        name: &SiteName,
        d: &SiteConfig,
        live: Option<&SiteConfig>,
    ) -> Result<(), ApiError> {
        if live.is_some_and(|l| l.production_branch != d.production_branch) {
            self.meta.set_production_branch(name, &d.production_branch).await?;
            self.publish_routing(chanto_store::RoutingChange::site(name)).await?;
        }
        self.set_retention(name, d.keep_deploys).await?;
        self.set_site_profile(name, d.profile.map(|p| p.as_str())).await?;
        self.set_proxy_origins(name, &d.proxy_origins).await?;
        let tls = TlsSettings {
            https_redirect: Some(d.https.redirect),
            hsts_max_age: Some(d.https.hsts_max_age),
            hsts_include_subdomains: Some(d.https.hsts_include_subdomains),
            hsts_preload: Some(d.https.hsts_preload),
        };
        self.set_tls_settings(name, &tls).await?;
        Ok(())
    }
}

/// The API request that makes subscription `want`, its secrets filled in.
fn subscribe_request(want: &platform::Subscription, at: &str, values: &BTreeMap<String, String>) -> SubscribeRequest {
    use crate::notify::Channel as N;
    let value = |field: &str| values.get(&format!("{at}.{field}")).cloned();
    let mut req = SubscribeRequest {
        events: want.events.iter().map(|e| e.as_str().to_owned()).collect(),
        branches: want.branches.clone(),
        ..SubscribeRequest::default()
    };
    match &want.channel {
        Channel::Webhook { .. } => {
            req.channel = Some(N::Webhook);
            req.url = value("url");
            req.secret = value("secret");
        }
        Channel::Slack { .. } => {
            req.channel = Some(N::Slack);
            req.url = value("url");
        }
        Channel::Discord { .. } => {
            req.channel = Some(N::Discord);
            req.url = value("url");
        }
        Channel::Email { smtp, from, to } => {
            req.channel = Some(N::Email);
            req.smtp = Some(SmtpSettings {
                host: smtp.host.clone(),
                port: Some(smtp.port),
                security: match smtp.security {
                    SmtpSecurity::Starttls => crate::notify::SmtpSecurity::Starttls,
                    SmtpSecurity::Tls => crate::notify::SmtpSecurity::Tls,
                    SmtpSecurity::None => crate::notify::SmtpSecurity::None,
                },
                username: smtp.username.clone(),
                password: value("smtp.password"),
            });
            req.from = Some(from.clone());
            req.to = to.clone();
        }
        Channel::Forge { forge, repository, api_url, context, comments, .. } => {
            req.channel = Some(match forge {
                Forge::Github => N::Github,
                Forge::Gitlab => N::Gitlab,
                Forge::Gitea => N::Gitea,
            });
            req.token = value("token");
            req.repository = repository.clone();
            req.api_url = Some(api_url.clone());
            req.context = Some(context.clone());
            req.comments = Some(*comments);
        }
    }
    req
}

/// Checks the resolved secrets as the API would when they are set, so a
/// plan fails before anything is applied.
fn check_values(desired: &PlatformConfig, values: &BTreeMap<String, String>) -> Result<(), ApiError> {
    let mut problems = Vec::new();
    for u in desired.secrets() {
        let Some(v) = values.get(&u.key) else { continue };
        let bad = match &u.kind {
            SecretKind::Password => chanto_core::access::check_password(v).err().map(|e| e.to_string()),
            SecretKind::Variable(var) => chanto_build::validate_var_value(var, v).err().map(|e| e.to_string()),
            SecretKind::SigningSecret if v.len() < 16 => {
                Some("a webhook signing secret is at least 16 characters".into())
            }
            _ if v.is_empty() => Some("the value is empty".into()),
            _ => None,
        };
        if let Some(why) = bad {
            problems.push(format!("{} ({}): {why}", u.key, u.reference));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(unprocessable("invalid_secret", problems)) }
}

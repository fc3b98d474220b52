//! The typed model of `chanto.platform.toml`: what a site is, declared. Every
//! value in it has passed the same checks the API makes, so the wiring can
//! apply it without validating again (it still resolves secret references).

use std::collections::BTreeMap;
use std::fmt;

use chanto_build::SiteBuildSettings;
use chanto_core::{BranchName, DomainName, SiteName};
use chanto_notify::EventKind;
use ipnet::IpNet;

/// Most sites one configuration (all its files together) may declare.
pub const MAX_SITES: usize = 1_000;
/// Most entries of one kind (variables, domains, subscriptions, branches,
/// users, list items) one site may declare.
pub const MAX_ENTRIES: usize = 1_000;
/// Largest file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// Most files in one directory of configuration.
pub const MAX_FILES: usize = 256;

/// A whole configuration: every site it declares. Sites it does not name
/// are, to a plan, sites to destroy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformConfig {
    /// The sites, by name.
    pub sites: BTreeMap<SiteName, SiteConfig>,
}

/// One site and everything set on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The branch served at the production URL (default `main`).
    pub production_branch: BranchName,
    /// Deploys kept per branch (0: all; the default).
    pub keep_deploys: u32,
    /// Whose defaults its next deploys follow (`chanto sites profile`);
    /// `None`: each deploy's rule files decide.
    pub profile: Option<chanto_rules::Profile>,
    /// Origins its proxy rules may reach, normalised (`https://api.example.com:443`), sorted.
    pub proxy_origins: Vec<String>,
    /// HTTPS redirect and HSTS.
    pub https: HttpsConfig,
    /// The repository it builds from, if any.
    pub git: Option<GitConfig>,
    /// The build settings used when the repository has no build spec
    /// (stored with the git connection, so they need one).
    pub build: SiteBuildSettings,
    /// Site-wide build variables.
    pub env: BTreeMap<String, EnvValue>,
    /// The policy of every branch (`[access.site]`) and the default of
    /// previews (`[access.previews]`).
    pub access: SiteAccess,
    /// Per-branch variables and access policies.
    pub branches: BTreeMap<BranchName, BranchConfig>,
    /// Custom domains.
    pub domains: BTreeMap<DomainName, DomainConfig>,
    /// Notification subscriptions, by a name of the file's choosing.
    pub notify: BTreeMap<String, Subscription>,
}

impl SiteConfig {
    /// A site with every setting at its default.
    pub fn new(production_branch: BranchName) -> Self {
        Self {
            production_branch,
            keep_deploys: 0,
            profile: None,
            proxy_origins: Vec::new(),
            https: HttpsConfig::default(),
            git: None,
            build: SiteBuildSettings::default(),
            env: BTreeMap::new(),
            access: SiteAccess::default(),
            branches: BTreeMap::new(),
            domains: BTreeMap::new(),
            notify: BTreeMap::new(),
        }
    }
}

/// A site's HTTPS settings (`chanto_store::SiteTls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsConfig {
    /// Redirect plain HTTP to HTTPS on names with a certificate (default true).
    pub redirect: bool,
    /// HSTS max-age in seconds; 0: no header (default).
    pub hsts_max_age: u64,
    /// HSTS `includeSubDomains`.
    pub hsts_include_subdomains: bool,
    /// HSTS `preload`.
    pub hsts_preload: bool,
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self { redirect: true, hsts_max_age: 0, hsts_include_subdomains: false, hsts_preload: false }
    }
}

/// A site's repository connection (`builds::ConnectRequest` and `GitSettings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitConfig {
    /// Clone URL or path on the server; never carries a credential.
    pub repository: String,
    /// The credential, by reference.
    pub credential: Option<GitCredential>,
    /// User name sent with a token over https.
    pub username: Option<String>,
    /// Branch globs built on push (empty: all).
    pub include: Vec<String>,
    /// Branch globs never built automatically.
    pub exclude: Vec<String>,
    /// Remove a branch's environment when the branch is deleted (default true).
    pub delete_branches: bool,
    /// Build pull requests into `pr-<n>` previews (default true).
    pub pull_request_previews: bool,
    /// Also build pull requests from forks (default true).
    pub fork_pull_requests: bool,
    /// Days a closed pull request's preview is kept.
    pub preview_retention_days: u32,
    /// Poll the remote every this many seconds.
    pub poll_interval_secs: Option<u64>,
    /// A build's time limit in seconds.
    pub timeout_secs: Option<u64>,
    /// A platform config site: the path in the repository of the
    /// configuration its builds plan and, on the production branch, apply.
    pub platform_config: Option<String>,
}

impl GitConfig {
    /// A connection to `repository` with every setting at its default.
    pub fn new(repository: impl Into<String>) -> Self {
        Self {
            repository: repository.into(),
            credential: None,
            username: None,
            include: Vec::new(),
            exclude: Vec::new(),
            delete_branches: true,
            pull_request_previews: true,
            fork_pull_requests: true,
            preview_retention_days: 0,
            poll_interval_secs: None,
            timeout_secs: None,
            platform_config: None,
        }
    }
}

/// A repository credential, by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitCredential {
    /// An access token for https (`token = "env:…"`).
    Token(SecretRef),
    /// An SSH deploy key (`ssh_key = "file:…"`).
    SshKey(SecretRef),
}

/// A build variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// Written in the file (not secret).
    Plain(String),
    /// A secret, by reference: stored sealed, masked in logs.
    Secret(SecretRef),
}

/// A site's site-wide and previews policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteAccess {
    /// Every branch, production included.
    pub site: Option<AccessConfig>,
    /// Every branch but production, unless it has its own.
    pub previews: Option<AccessConfig>,
}

/// One branch's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BranchConfig {
    /// Variables for this branch only (over the site-wide ones).
    pub env: BTreeMap<String, EnvValue>,
    /// This branch's own policy.
    pub access: Option<AccessConfig>,
}

/// Who may see what a scope covers (`chanto_core::AccessPolicy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// Basic-auth users and their passwords.
    pub users: BTreeMap<String, Password>,
    /// Only these networks (empty: all), sorted.
    pub allow: Vec<IpNet>,
    /// Never these networks, sorted.
    pub deny: Vec<IpNet>,
    /// Let CORS preflight through without a password.
    pub allow_preflight: bool,
}

/// A basic-auth password: never clear text in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// An argon2id hash with chanto's parameters, stored as it is.
    Hash(String),
    /// The clear password, by reference; the wiring hashes it.
    Secret(SecretRef),
}

/// A custom domain of a site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainConfig {
    /// The site's primary domain (the others redirect to it); at most one.
    pub primary: bool,
    /// The branch it serves (default: production).
    pub branch: Option<BranchName>,
}

/// A notification subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Events sent, sorted (empty: all).
    pub events: Vec<EventKind>,
    /// Branch globs (empty: all).
    pub branches: Vec<String>,
    /// Where they go.
    pub channel: Channel,
}

/// Where a subscription sends, with its secrets by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// A signed generic webhook.
    Webhook {
        /// The URL (sealed in the store, so a secret here too).
        url: SecretRef,
        /// The signing secret (at least 16 characters once resolved).
        secret: SecretRef,
    },
    /// A Slack incoming webhook.
    Slack {
        /// Its URL, which carries its token.
        url: SecretRef,
    },
    /// A Discord webhook.
    Discord {
        /// Its URL, which carries its token.
        url: SecretRef,
    },
    /// Email over SMTP.
    Email {
        /// The server.
        smtp: Smtp,
        /// The sender address.
        from: String,
        /// The recipients.
        to: Vec<String>,
    },
    /// Commit statuses and a pull request comment on a forge.
    Forge {
        /// Which forge.
        forge: Forge,
        /// A token allowed to write statuses and comments.
        token: SecretRef,
        /// `owner/name` (default: from the site's git connection, filled by the wiring).
        repository: Option<String>,
        /// The API base URL (defaults filled at parse for github and gitlab).
        api_url: String,
        /// The status context (default `chanto/<site>`, filled at parse).
        context: String,
        /// Keep one comment on each pull request.
        comments: bool,
    },
}

impl Channel {
    /// Its name in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Slack { .. } => "slack",
            Self::Discord { .. } => "discord",
            Self::Email { .. } => "email",
            Self::Forge { forge, .. } => forge.as_str(),
        }
    }
}

/// A forge that takes statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// GitHub.
    Github,
    /// GitLab.
    Gitlab,
    /// Gitea or Forgejo.
    Gitea,
}

impl Forge {
    /// Its channel name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Gitea => "gitea",
        }
    }
}

/// An SMTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    /// Host name.
    pub host: String,
    /// Port (default filled at parse: 587, 465 or 25 by `security`).
    pub port: u16,
    /// `starttls` (default), `tls` or `none`.
    pub security: SmtpSecurity,
    /// User name, if it authenticates.
    pub username: Option<String>,
    /// Password, by reference (needs `username`).
    pub password: Option<SecretRef>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpSecurity {
    /// STARTTLS (587).
    #[default]
    Starttls,
    /// TLS from the first byte (465).
    Tls,
    /// None (a local relay).
    None,
}

impl SmtpSecurity {
    /// Its name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starttls => "starttls",
            Self::Tls => "tls",
            Self::None => "none",
        }
    }

    /// The port used when none is given.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }
}

/// Where a secret's value is: the file names it, the caller reads it. The
/// core never resolves one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretRef {
    /// `env:VAR`: an environment variable of the process that resolves it.
    Env(String),
    /// `file:PATH`: a file's contents, less one trailing newline. Absolute,
    /// or relative to the configuration file's directory without `..`.
    File(String),
}

impl SecretRef {
    /// Reads `env:VAR` or `file:PATH`, saying what is wrong and how to write it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(var) = s.strip_prefix("env:") {
            check_env_name(var)?;
            Ok(Self::Env(var.to_owned()))
        } else if let Some(path) = s.strip_prefix("file:") {
            check_secret_path(path)?;
            Ok(Self::File(path.to_owned()))
        } else {
            Err("a secret is a reference, never the value: write \"env:VARIABLE\" or \"file:/path/to/secret\"".into())
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(v) => write!(f, "env:{v}"),
            Self::File(p) => write!(f, "file:{p}"),
        }
    }
}

fn check_env_name(var: &str) -> Result<(), String> {
    let ok = !var.is_empty()
        && var.len() <= 256
        && !var.as_bytes()[0].is_ascii_digit()
        && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "env:{var:?} does not name an environment variable: use ASCII letters, digits and _, not starting with a digit (env:DOCS_API_KEY)"
        ))
    }
}

fn check_secret_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > 4096 {
        return Err("file: needs a path of 1-4096 bytes (file:/run/secrets/docs-token)".into());
    }
    if path.chars().any(char::is_control) {
        return Err("the file: path contains a control character".into());
    }
    if !path.starts_with('/') && path.split(['/', '\\']).any(|part| part == "..") {
        return Err(format!(
            "file:{path} climbs out of the configuration's directory with `..`; give an absolute path or one below the directory"
        ));
    }
    Ok(())
}

/// Where a secret is used: its resource address, the field, and the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    /// The secret's key in fingerprint maps: the resource address and field,
    /// `site.docs.env["API_KEY"].value`, `site.docs.access["site"].users["ann"]`.
    pub key: String,
    /// Where its value is.
    pub reference: SecretRef,
    /// What the value is, for the checks it must pass once resolved.
    pub kind: SecretKind,
}

/// What a secret is (its value's checks depend on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretKind {
    /// A build variable of this name.
    Variable(String),
    /// A basic-auth user's password.
    Password,
    /// A webhook's signing secret.
    SigningSecret,
    /// Anything else: a repository credential, a URL with its token, an SMTP password, a forge token.
    Other,
}

/// Resource addresses, one function each so plans, fingerprints and the
/// wiring spell them the same way.
pub mod address {
    use chanto_core::{AccessScope, BranchName, DomainName, SiteName};

    /// A string key as the address shows it: `["…"]`, JSON-escaped.
    pub fn key(k: &str) -> String {
        format!("[{}]", serde_json::to_string(k).expect("a string serialises"))
    }
    /// `site.NAME`.
    pub fn site(s: &SiteName) -> String {
        format!("site.{s}")
    }
    /// `site.NAME.git`.
    pub fn git(s: &SiteName) -> String {
        format!("site.{s}.git")
    }
    /// `site.NAME.env["VAR"]` or `site.NAME.branch["B"].env["VAR"]`.
    pub fn env(s: &SiteName, branch: Option<&BranchName>, var: &str) -> String {
        match branch {
            None => format!("site.{s}.env{}", key(var)),
            Some(b) => format!("site.{s}.branch{}.env{}", key(b.as_str()), key(var)),
        }
    }
    /// `site.NAME.access["site"]`, `["previews"]` or `["branch:B"]`.
    pub fn access(s: &SiteName, scope: &AccessScope) -> String {
        format!("site.{s}.access{}", key(&scope.to_string()))
    }
    /// `site.NAME.domain["HOST"]`.
    pub fn domain(s: &SiteName, d: &DomainName) -> String {
        format!("site.{s}.domain{}", key(d.as_str()))
    }
    /// `site.NAME.notify["SUB"]`.
    pub fn notify(s: &SiteName, name: &str) -> String {
        format!("site.{s}.notify{}", key(name))
    }
}

impl PlatformConfig {
    /// Sorts and deduplicates every list whose order means nothing
    /// (networks, origins, globs, events, recipients), so two configurations
    /// that mean the same compare equal. Parsing does it; the wiring must do
    /// it to the live model it builds before planning.
    pub fn normalize(&mut self) {
        fn sort<T: Ord>(v: &mut Vec<T>) {
            v.sort();
            v.dedup();
        }
        let access = |a: &mut AccessConfig| {
            sort(&mut a.allow);
            sort(&mut a.deny);
        };
        for site in self.sites.values_mut() {
            sort(&mut site.proxy_origins);
            if let Some(g) = &mut site.git {
                sort(&mut g.include);
                sort(&mut g.exclude);
            }
            site.access.site.iter_mut().chain(site.access.previews.iter_mut()).for_each(access);
            site.branches.values_mut().filter_map(|b| b.access.as_mut()).for_each(access);
            for sub in site.notify.values_mut() {
                sort(&mut sub.events);
                sort(&mut sub.branches);
                if let Channel::Email { to, .. } = &mut sub.channel {
                    sort(to);
                }
            }
        }
    }

    /// Every secret the configuration uses, keyed as plans key their
    /// fingerprints, in a stable order. The caller resolves each reference
    /// (once per distinct reference) and fingerprints the value.
    pub fn secrets(&self) -> Vec<SecretUse> {
        let mut out = Vec::new();
        let mut push_kind =
            |key: String, r: &SecretRef, kind: SecretKind| out.push(SecretUse { key, reference: r.clone(), kind });
        for (name, site) in &self.sites {
            if let Some(GitCredential::Token(r) | GitCredential::SshKey(r)) =
                site.git.as_ref().and_then(|g| g.credential.as_ref())
            {
                push_kind(format!("{}.credential", address::git(name)), r, SecretKind::Other);
            }
            let envs = std::iter::once((None, &site.env)).chain(site.branches.iter().map(|(b, c)| (Some(b), &c.env)));
            for (branch, env) in envs {
                for (var, v) in env {
                    if let EnvValue::Secret(r) = v {
                        let key = format!("{}.value", address::env(name, branch, var));
                        push_kind(key, r, SecretKind::Variable(var.clone()));
                    }
                }
            }
            for (scope, policy) in access_policies(site) {
                for (user, pw) in &policy.users {
                    if let Password::Secret(r) = pw {
                        let key = format!("{}.users{}", address::access(name, &scope), address::key(user));
                        push_kind(key, r, SecretKind::Password);
                    }
                }
            }
            for (sub_name, sub) in &site.notify {
                let at = address::notify(name, sub_name);
                match &sub.channel {
                    Channel::Webhook { url, secret } => {
                        push_kind(format!("{at}.url"), url, SecretKind::Other);
                        push_kind(format!("{at}.secret"), secret, SecretKind::SigningSecret);
                    }
                    Channel::Slack { url } | Channel::Discord { url } => {
                        push_kind(format!("{at}.url"), url, SecretKind::Other)
                    }
                    Channel::Email { smtp, .. } => {
                        if let Some(r) = &smtp.password {
                            push_kind(format!("{at}.smtp.password"), r, SecretKind::Other);
                        }
                    }
                    Channel::Forge { token, .. } => push_kind(format!("{at}.token"), token, SecretKind::Other),
                }
            }
        }
        out
    }

    /// The distinct references the configuration uses, sorted: what the
    /// caller must be able to resolve before a plan or an apply.
    pub fn references(&self) -> Vec<SecretRef> {
        let mut refs: Vec<SecretRef> = self.secrets().into_iter().map(|u| u.reference).collect();
        refs.sort();
        refs.dedup();
        refs
    }
}

/// A site's policies with their scopes, in scope order.
pub fn access_policies(site: &SiteConfig) -> Vec<(chanto_core::AccessScope, &AccessConfig)> {
    use chanto_core::AccessScope;
    let mut out = Vec::new();
    if let Some(p) = &site.access.site {
        out.push((AccessScope::Site, p));
    }
    if let Some(p) = &site.access.previews {
        out.push((AccessScope::Previews, p));
    }
    for (b, c) in &site.branches {
        if let Some(p) = &c.access {
            out.push((AccessScope::Branch(b.clone()), p));
        }
    }
    out
}

//! Configuration as code: `chanto.platform.toml` declares sites and every
//! setting chanto keeps for them; [`parse`] reads it, [`render`] writes it
//! (`chanto export`), [`plan`] compares the live configuration with the
//! desired one (`chanto plan`, `chanto apply PLAN`). Pure: no files, no
//! network, no environment. Secrets are never in the file, only references
//! to them; the caller resolves them ([`PlatformConfig::references`]) and
//! passes fingerprints of their values ([`PlanInputs`]).
//!
//! # The file
//!
//! One file, or a directory of them (each site declared in one file only).
//! Unknown keys, wrong types, invalid names and bad references are errors
//! naming `file:line:column`, all of them in one run. A file is at most
//! 1 MiB; a configuration has at most 1,000 sites, and a site at most
//! 1,000 entries of a kind (fewer where the API allows fewer: 100 domains,
//! 100 subscriptions, 100 users or networks per policy, 50 proxy origins).
//!
//! The file is the whole truth: a live site it does not declare is
//! destroyed by `apply` (only with `--allow-destroy`), and within a
//! declared site every setting left out takes its default (no git
//! connection, no variables, no policies, no domains, no subscriptions).
//!
//! ```toml
//! [site.docs]
//! production_branch = "main"        # default "main"
//! keep_deploys = 20                 # deploys kept per branch; 0 (default) keeps all
//! profile = "netlify"               # whose defaults deploys follow; default: their rule files decide
//! proxy_origins = ["https://api.example.com"]
//!
//! [site.docs.https]                 # every key optional; these are the defaults but hsts
//! redirect = true
//! hsts_max_age = 31536000
//! hsts_include_subdomains = true
//! hsts_preload = false
//!
//! [site.docs.git]
//! repository = "https://github.com/acme/docs.git"
//! token = "env:DOCS_GIT_TOKEN"      # or ssh_key = "file:/run/secrets/docs-deploy-key"
//! username = "x-access-token"       # optional
//! include = ["feature/**"]          # branches built on push (default: all)
//! exclude = ["wip/*"]
//! delete_branches = true            # default true
//! pull_request_previews = true      # default true
//! fork_pull_requests = false        # default true
//! preview_retention_days = 7        # default 0
//! poll_interval_secs = 300          # optional, at least 10
//! timeout_secs = 1800               # optional, 1 to 86400
//! # platform_config = "chanto.platform.toml"  # a platform config site: its builds plan this
//! #                                 # file (or directory) of the repository on every pull request and
//! #                                 # branch, and apply it from the production branch; no build, no deploy
//!
//! [site.docs.build]                 # used when the repository has no build spec; needs [git]
//! command = "npm run build"
//! base = "site"
//! publish = "dist"
//! app_root = "apps/docs"            # an Amplify monorepo's application
//!
//! [site.docs.env]                   # site-wide build variables
//! NODE_VERSION = "20"
//! API_KEY = { secret = "env:DOCS_API_KEY" }
//!
//! [site.docs.access.previews]       # also [site.docs.access.site]
//! users = { reviewer = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE", ann = "env:DOCS_ANN_PASSWORD" }
//! allow = ["10.0.0.0/8", "2001:db8::/32"]
//! deny = []
//! allow_preflight = true
//!
//! [site.docs.branches."feature/login".env]
//! API_URL = "https://staging.example.com"
//!
//! [site.docs.branches.qa.access]    # one branch's own policy
//! allow = ["192.0.2.0/24"]
//!
//! [site.docs.domains."docs.example.com"]
//! primary = true                    # at most one per site
//!
//! [site.docs.domains."www.docs.example.com"]
//!
//! [site.docs.domains."staging.example.com"]
//! branch = "staging"                # default: production
//!
//! [site.docs.notify.slack-main]     # a name of your choosing
//! channel = "slack"                 # slack, discord, webhook, email, github, gitlab, gitea
//! url = "env:DOCS_SLACK_URL"
//! events = ["deploy.activated", "build.failed"]   # default: all
//! branches = ["main"]                              # default: all
//!
//! [site.docs.notify.hooks]
//! channel = "webhook"
//! url = "env:DOCS_HOOK_URL"
//! secret = "file:secrets/hook-signing-key"
//!
//! [site.docs.notify.mail]
//! channel = "email"
//! smtp = { host = "smtp.example.com", port = 587, security = "starttls", username = "ci", password = "env:SMTP_PASSWORD" }
//! from = "ci@example.com"
//! to = ["team@example.com"]
//!
//! [site.docs.notify.statuses]
//! channel = "github"
//! token = "env:DOCS_GITHUB_TOKEN"
//! repository = "acme/docs"          # default: from [git]
//! api_url = "https://api.github.com" # default for github and gitlab; required for gitea
//! context = "chanto/docs"           # default chanto/<site>
//! comments = true                   # default true
//! ```
//!
//! Secrets are references: `env:VAR` (an environment variable of the
//! process that resolves it) or `file:PATH` (a file's contents; absolute,
//! or relative to the configuration's directory without `..`). A password
//! is an argon2id hash with chanto's parameters or a reference to the clear
//! password, which the caller hashes; a clear password in the file is an error.
//!
//! # Resources and plans
//!
//! A plan addresses resources as `site.docs`, `site.docs.git`,
//! `site.docs.env["API_KEY"]`, `site.docs.branch["qa"].env["X"]`,
//! `site.docs.access["site" | "previews" | "branch:qa"]`,
//! `site.docs.domain["docs.example.com"]`, `site.docs.notify["slack-main"]`;
//! see [`Plan`] for its JSON and [`plan()`] for how secrets compare.

mod model;
mod parse;
mod plan;
mod render;

#[cfg(test)]
mod tests;

pub use model::{
    AccessConfig, BranchConfig, Channel, DomainConfig, EnvValue, Forge, GitConfig, GitCredential, HttpsConfig,
    MAX_ENTRIES, MAX_FILE_BYTES, MAX_FILES, MAX_SITES, Password, PlatformConfig, SecretKind, SecretRef, SecretUse,
    SiteAccess, SiteConfig, Smtp, SmtpSecurity, Subscription, access_policies, address,
};
pub use parse::{Diagnostic, MAX_ERRORS, ParseErrors, parse, parse_files};
pub use plan::{
    Action, Change, FORMAT_VERSION, FieldChange, Plan, PlanInputs, SENSITIVE, SavedPlan, Summary, content_versions,
    plan,
};
pub use render::render;

/// Whether a directory entry is one of a configuration directory's files:
/// `*.toml`, not hidden (as the shell's `*.toml`). Subdirectories are not read.
pub fn is_config_file_name(name: &str) -> bool {
    name.ends_with(".toml") && !name.starts_with('.')
}

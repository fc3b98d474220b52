//! Redirect, rewrite and header rules.
//!
//! Every source (native `chanto.toml`, Netlify's `_redirects`, `_headers` and
//! `netlify.toml`) is parsed into one typed model, [`RuleSet`], which travels
//! inside a deploy's manifest, so rules change atomically with the files. The
//! edge evaluates it through [`Matcher`], whose cost per request depends on the
//! path's depth, not on the number of rules.
//!
//! Pure: no IO. Callers hand in file contents and get rules or errors that
//! name the file, line and column.

mod amplify;
mod firebase;
mod glob;
mod matcher;
mod native;
mod netlify;
mod password;
mod pattern;
mod sources;
mod words;

pub use matcher::{Action, LOOKUP_BUDGET, Matcher, RegexBudget, RuleRequest, compile_regex};
pub use password::{CHANTO_ARGON2, PasswordHashParams, check_hash as check_password_hash};
pub use pattern::{PathPattern, Segment};
pub use sources::{
    MAX_LOOKAROUND_RULES, MAX_PASSWORD_USERS, MAX_RULES, MAX_USERS_PER_RULE, RULE_FILES, compile, compile_for,
    is_rule_file,
};

use serde::{Deserialize, Serialize};

/// Where a rule came from, for errors, warnings and conflicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The rule file, as a path in the deploy (`_redirects`).
    pub file: String,
    /// 1-based line.
    pub line: u32,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A rule file that cannot be used: the deploy is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleError {
    /// The rule file.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
    /// What is wrong, and how to fix it.
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

impl RuleError {
    pub(crate) fn new(file: &str, line: u32, column: u32, message: impl Into<String>) -> Self {
        Self { file: file.to_owned(), line, column, message: message.into() }
    }
}

/// Something in a rule file chanto accepts but does not act on as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// Where.
    pub origin: Origin,
    /// What, and what chanto does instead.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: warning: {}", self.origin, self.message)
    }
}

/// Conditions a request must meet for a rule to apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions {
    /// ISO 3166 country codes, lower case; any of them (from the header the
    /// operator names as trusted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub country: Vec<String>,
    /// Language tags, lower case; any of them, against `Accept-Language`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub language: Vec<String>,
}

impl Conditions {
    /// No conditions at all.
    pub fn is_empty(&self) -> bool {
        self.country.is_empty() && self.language.is_empty()
    }
}

/// What request paths a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Segments, placeholders and a final splat (`/blog/:year/*`).
    Path(PathPattern),
    /// A regular expression over the whole path (Amplify `</…/>`, Firebase
    /// `regex` and globs); named groups bind placeholders. Look-around is
    /// allowed, with a bounded backtracking budget.
    Regex(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => p.fmt(f),
            Self::Regex(r) => write!(f, "regex {r:?}"),
        }
    }
}

/// A redirect, rewrite or status rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// Only for requests to this host (from `https://host/path` sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The request paths it matches.
    pub from: Source,
    /// Query parameters that must be present: name → placeholder it binds
    /// (`None`: present, value not used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, Option<String>)>,
    /// Query parameters that must have exactly this value (Amplify's
    /// `/docs?id=7`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_values: Vec<(String, String)>,
    /// Where to: a path or an absolute URL, with `:name` and `:splat`.
    pub to: String,
    /// 301, 302, 303, 307, 308 (redirect), 200 (rewrite), 404 or 410.
    pub status: u16,
    /// Applies even when a file exists at the request path.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Country and language conditions.
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub conditions: Conditions,
    /// Where it was written.
    pub origin: Origin,
}

/// Headers added to every response whose path matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRule {
    /// The paths it covers.
    pub path: Source,
    /// Name → value, in order.
    pub headers: Vec<(String, String)>,
    /// Where it was written.
    pub origin: Origin,
}

/// A user of a path's basic auth. Parsed with the password in clear; the
/// control plane replaces it with an argon2id hash before anything is
/// stored (`password` is never serialized).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthUser {
    /// The user name.
    pub user: String,
    /// The password as the rule file wrote it: only between parse and hash.
    #[serde(skip)]
    pub password: Option<String>,
    /// `$argon2id$…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// Paths that need a password (Netlify's `Basic-Auth` in `_headers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRule {
    /// The paths it covers.
    pub path: Source,
    /// Who may see them.
    pub users: Vec<AuthUser>,
    /// Where it was written.
    pub origin: Origin,
}

/// How the edge serves a deploy under load: `[serve]` in `chanto.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeSettings {
    /// Most requests of the site one edge node answers at once; above it,
    /// the sorry page with `503` and `Retry-After`, at once (never queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// The file (a URL path of the deploy, e.g. `/busy.html`) served as the
    /// sorry page; default `/sorry.html` when the deploy has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry_page: Option<String>,
}

impl ServeSettings {
    /// Nothing set.
    pub fn is_default(&self) -> bool {
        self.max_concurrency.is_none() && self.sorry_page.is_none()
    }
}

/// Whose documented defaults a deploy follows where the platforms differ
/// (the README's table): chosen by `profile` in `chanto.toml`, else the
/// site's setting, else the platform whose rule files the deploy has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// chanto's own: pretty URLs, files before unforced rules.
    Chanto,
    /// Netlify: pretty URLs (`/about` serves `about.html`).
    Netlify,
    /// AWS Amplify Hosting: paths name files exactly.
    Amplify,
    /// Firebase Hosting: paths name files exactly unless `cleanUrls`.
    Firebase,
}

impl Profile {
    /// Every profile, as written in `chanto.toml`.
    pub const ALL: [Profile; 4] = [Profile::Chanto, Profile::Netlify, Profile::Amplify, Profile::Firebase];

    /// Its name, as written in `chanto.toml` and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Chanto => "chanto",
            Profile::Netlify => "netlify",
            Profile::Amplify => "amplify",
            Profile::Firebase => "firebase",
        }
    }

    /// Whether `/about` serves `about.html` when nothing else answers it.
    pub fn pretty_urls(self) -> bool {
        matches!(self, Profile::Chanto | Profile::Netlify)
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Profile::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            format!("unknown profile {s:?}; use one of: {}", Profile::ALL.map(Profile::as_str).join(", "))
        })
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every rule of a deploy, in evaluation order (first matching redirect wins).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleSet {
    /// Redirects, rewrites and status rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<Redirect>,
    /// Header rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderRule>,
    /// Paths behind a password.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth: Vec<AuthRule>,
    /// `/about` serves `about.html`; `/about.html` redirects to `/about`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clean_urls: bool,
    /// `Some(false)`: directories without the trailing slash; `Some(true)`
    /// or absent: with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trailing_slash: Option<bool>,
    /// Whose defaults the deploy follows (absent: chanto's, from before profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// `/about` does not serve `about.html` (Amplify's and Firebase's
    /// default; see [`RuleSet::pretty_urls`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_pretty_urls: bool,
    /// What the deploy was told about its rules that it should know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// How the edge serves the deploy under load (`[serve]` in `chanto.toml`).
    #[serde(default, skip_serializing_if = "ServeSettings::is_default")]
    pub serve: ServeSettings,
    /// Where the URL settings came from (for conflicts), never stored.
    #[serde(skip)]
    clean_urls_from: Option<(bool, Origin)>,
    #[serde(skip)]
    trailing_slash_from: Option<(bool, Origin)>,
    /// Compiled on first use (the edge), never stored.
    #[serde(skip)]
    matcher: std::sync::OnceLock<std::sync::Arc<Matcher>>,
}

impl PartialEq for RuleSet {
    fn eq(&self, other: &Self) -> bool {
        self.redirects == other.redirects
            && self.headers == other.headers
            && self.auth == other.auth
            && self.clean_urls == other.clean_urls
            && self.trailing_slash == other.trailing_slash
            && self.profile == other.profile
            && self.no_pretty_urls == other.no_pretty_urls
            && self.warnings == other.warnings
            && self.serve == other.serve
    }
}

impl Eq for RuleSet {}

impl RuleSet {
    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.redirects.is_empty()
            && self.headers.is_empty()
            && self.auth.is_empty()
            && !self.clean_urls
            && self.trailing_slash.is_none()
            && !self.no_pretty_urls
            && matches!(self.profile, None | Some(Profile::Chanto))
            && self.serve.is_default()
    }

    /// Pretty URLs: `/about` serves `about.html` when no file, directory or
    /// rule answers it (chanto's and Netlify's default).
    pub fn pretty_urls(&self) -> bool {
        !self.no_pretty_urls
    }

    /// The compiled matcher, built on first use.
    pub fn matcher(&self) -> &Matcher {
        self.matcher.get_or_init(|| std::sync::Arc::new(Matcher::new(&self.redirects, &self.headers, &self.auth)))
    }
}

/// Statuses a redirect rule may carry.
pub const STATUSES: [u16; 8] = [200, 301, 302, 303, 307, 308, 404, 410];

//! `chanto import amplify|netlify`: what a site on AWS Amplify Hosting or
//! Netlify is, read from the JSON their own tools print, as chanto's terms
//! (issue 19: move in unchanged). Pure: the caller reads the files and
//! writes what this returns.
//!
//! - Amplify: the objects `aws amplify get-app` (`{"app": …}`),
//!   `aws amplify list-branches` (`{"branches": […]}`) and
//!   `aws amplify list-domain-associations` (`{"domainAssociations": […]}`)
//!   print, in any order.
//! - Netlify: the site object `GET /api/v1/sites/{site_id}` returns
//!   (`netlify api getSite`).
//!
//! Nothing secret is carried over: variables keep their names and take
//! their values from a reference (`env:NAME`) when the configuration is
//! planned, and a password becomes a reference too. What cannot be carried
//! over is in the report, each with the reason.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Largest input file.
pub const MAX_IMPORT_BYTES: usize = 8 << 20;

/// A site as the platform had it, in chanto's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportedSite {
    /// The site's name (the app's or site's, made a valid site name).
    pub name: String,
    /// Which platform's defaults its deploys follow.
    pub profile: &'static str,
    /// The repository's clone URL, if the site was connected to one.
    pub repository: Option<String>,
    /// The production branch.
    pub production_branch: Option<String>,
    /// Branches built on push (globs); empty: only those listed in `branches`.
    pub build_branches: Vec<String>,
    /// Whether pull requests get previews.
    pub pull_request_previews: bool,
    /// The build command, publish directory and base directory.
    pub command: Option<String>,
    /// The directory deployed, relative to `base`.
    pub publish: Option<String>,
    /// The directory the command runs in.
    pub base: Option<String>,
    /// Site-wide build variables: name → where its value comes from
    /// (`env:NAME`).
    pub env: BTreeMap<String, String>,
    /// Per-branch variables: branch → name → reference.
    pub branch_env: BTreeMap<String, BTreeMap<String, String>>,
    /// A password for the whole site: (user, password reference).
    pub password: Option<(String, String)>,
    /// Passwords of single branches: branch → (user, password reference).
    pub branch_passwords: BTreeMap<String, (String, String)>,
    /// Custom domain names, and the branch each serves when not
    /// production; the first is the primary.
    pub domains: Vec<(String, Option<String>)>,
    /// Files to put at the root of the deploy (or the repository): rule
    /// files and build specs, in the platform's own format, which chanto
    /// reads as they are.
    pub files: Vec<(String, String)>,
}

/// A thing the import did not carry over, or carried over differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The input's field (`app.enableBranchAutoDeletion`).
    pub field: String,
    /// What happened to it, and why.
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What an import found: the site, and the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// The site.
    pub site: ImportedSite,
    /// What was not carried over as it was, with why.
    pub report: Vec<Note>,
}

/// An input that cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ImportError {
    /// The input file, as the caller named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, and what to give instead.
    pub message: String,
}

impl ImportError {
    fn whole(file: &str, message: impl Into<String>) -> Self {
        Self { file: file.to_owned(), line: 1, column: 1, message: message.into() }
    }

    fn json(file: &str, e: &serde_json::Error, what: &str) -> Self {
        let msg = e.to_string();
        let shown = msg.split(" at line ").next().unwrap_or(&msg);
        Self {
            file: file.to_owned(),
            line: e.line().max(1),
            column: e.column().max(1),
            message: format!("{shown} (expected {what})"),
        }
    }
}

/// The checks before parsing: the size, and a JSON object at the top.
fn check_size(file: &str, text: &str, what: &str) -> Result<(), ImportError> {
    if text.len() > MAX_IMPORT_BYTES {
        return Err(ImportError::whole(
            file,
            format!("the file is {} bytes; the limit is {MAX_IMPORT_BYTES}", text.len()),
        ));
    }
    if !text.trim_start_matches('\u{feff}').trim_start().starts_with('{') {
        return Err(ImportError::whole(file, format!("not a JSON object; give {what}")));
    }
    Ok(())
}

/// A site name from a platform's name: lower case, runs of anything else
/// than letters and digits made one `-`, at most 63 characters.
fn site_name(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out: String = out.trim_end_matches('-').chars().take(63).collect();
    let out = out.trim_end_matches('-').to_owned();
    if out.is_empty() { "imported".to_owned() } else { out }
}

/// A variable's reference: its value is read from the environment of
/// whoever plans the configuration, never written into the file.
fn env_ref(name: &str) -> String {
    format!("env:{name}")
}

/// A variable name chanto accepts; others are reported.
fn valid_var(name: &str) -> bool {
    chanto_build::validate_var_name(name).is_ok()
}

// ---------------------------------------------------------------- Amplify

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmplifyApp {
    name: String,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default)]
    environment_variables: BTreeMap<String, String>,
    #[serde(default)]
    enable_branch_auto_build: Option<bool>,
    #[serde(default)]
    enable_branch_auto_deletion: Option<bool>,
    #[serde(default)]
    enable_basic_auth: Option<bool>,
    #[serde(default)]
    basic_auth_credentials: Option<String>,
    #[serde(default)]
    custom_rules: Vec<serde_json::Value>,
    #[serde(default)]
    production_branch: Option<AmplifyProductionBranch>,
    #[serde(default)]
    build_spec: Option<String>,
    #[serde(default)]
    custom_headers: Option<String>,
    #[serde(default)]
    enable_auto_branch_creation: Option<bool>,
    #[serde(default)]
    auto_branch_creation_patterns: Vec<String>,
    #[serde(default)]
    auto_branch_creation_config: Option<AmplifyAutoBranch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmplifyProductionBranch {
    #[serde(default)]
    branch_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmplifyAutoBranch {
    #[serde(default)]
    enable_pull_request_preview: Option<bool>,
    #[serde(default)]
    environment_variables: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmplifyBranch {
    branch_name: String,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    environment_variables: BTreeMap<String, String>,
    #[serde(default)]
    enable_auto_build: Option<bool>,
    #[serde(default)]
    enable_basic_auth: Option<bool>,
    #[serde(default)]
    basic_auth_credentials: Option<String>,
    #[serde(default)]
    enable_pull_request_preview: Option<bool>,
    #[serde(default)]
    build_spec: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmplifyDomain {
    domain_name: String,
    #[serde(default)]
    sub_domains: Vec<AmplifySubDomain>,
    #[serde(default)]
    enable_auto_sub_domain: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmplifySubDomain {
    sub_domain_setting: AmplifySubDomainSetting,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmplifySubDomainSetting {
    #[serde(default)]
    prefix: String,
    branch_name: String,
}

/// One input file of an Amplify import, by its top-level key.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmplifyFile {
    #[serde(default)]
    app: Option<AmplifyApp>,
    #[serde(default)]
    branches: Option<Vec<AmplifyBranch>>,
    #[serde(default)]
    domain_associations: Option<Vec<AmplifyDomain>>,
    #[serde(default)]
    domain_association: Option<AmplifyDomain>,
}

/// The user of Amplify's `basicAuthCredentials` (base64 of `user:password`);
/// the password itself is never kept.
fn basic_auth_user(credentials: Option<&str>) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(credentials?.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, _) = text.split_once(':')?;
    Some(user.to_owned()).filter(|u| !u.is_empty())
}

/// Imports an Amplify app from the JSON files `aws amplify` prints
/// (`(name, text)` each; one must hold the app).
pub fn amplify(files: &[(&str, &str)]) -> Result<Imported, ImportError> {
    let mut app = None;
    let mut branches = Vec::new();
    let mut domains = Vec::new();
    for (file, text) in files {
        let what = "the JSON `aws amplify get-app`, `list-branches` or `list-domain-associations` prints";
        check_size(file, text, what)?;
        let parsed: AmplifyFile = serde_json::from_str(text).map_err(|e| ImportError::json(file, &e, what))?;
        let known = parsed.app.is_some()
            || parsed.branches.is_some()
            || parsed.domain_associations.is_some()
            || parsed.domain_association.is_some();
        if !known {
            return Err(ImportError::whole(
                file,
                format!("has no \"app\", \"branches\" or \"domainAssociations\"; give {what}"),
            ));
        }
        if let Some(a) = parsed.app {
            if app.is_some() {
                return Err(ImportError::whole(file, "a second app; import one app at a time"));
            }
            app = Some(a);
        }
        branches.extend(parsed.branches.unwrap_or_default());
        domains.extend(parsed.domain_associations.unwrap_or_default());
        domains.extend(parsed.domain_association);
    }
    let Some(app) = app else {
        let first = files.first().map_or("(no file)", |(f, _)| f);
        return Err(ImportError::whole(first, "no app: give the JSON `aws amplify get-app --app-id ID` prints"));
    };
    let mut report = Vec::new();
    let mut note = |field: &str, message: String| report.push(Note { field: field.to_owned(), message });
    let mut site = ImportedSite {
        name: site_name(&app.name),
        profile: "amplify",
        repository: app.repository.filter(|r| !r.is_empty()),
        ..Default::default()
    };
    if site.name != app.name {
        note(
            "app.name",
            format!("{:?} is the site {:?} (site names are lower-case letters, digits and '-')", app.name, site.name),
        );
    }
    if let Some(p) = app.platform.as_deref().filter(|p| *p != "WEB") {
        note(
            "app.platform",
            format!("{p}: chanto serves static output only; server-side rendering and compute do not carry over"),
        );
    }
    site.production_branch = app
        .production_branch
        .and_then(|p| p.branch_name)
        .or_else(|| branches.iter().find(|b| b.stage.as_deref() == Some("PRODUCTION")).map(|b| b.branch_name.clone()));
    // Variables: names only, their values from the planner's environment.
    for name in app.environment_variables.keys() {
        if valid_var(name) {
            site.env.insert(name.clone(), env_ref(name));
        } else {
            note(&format!("app.environmentVariables.{name}"), "not a variable name chanto accepts; left out".into());
        }
    }
    if app.enable_basic_auth == Some(true) {
        let user = basic_auth_user(app.basic_auth_credentials.as_deref()).unwrap_or_else(|| "admin".to_owned());
        site.password = Some((user, env_ref("SITE_PASSWORD")));
        note("app.basicAuthCredentials", "the password is not carried over; set SITE_PASSWORD when planning".into());
    }
    // Branches.
    let mut previews = app.auto_branch_creation_config.as_ref().and_then(|c| c.enable_pull_request_preview);
    if app.enable_auto_branch_creation == Some(true) {
        site.build_branches.extend(app.auto_branch_creation_patterns.iter().cloned());
        if let Some(c) = &app.auto_branch_creation_config
            && !c.environment_variables.is_empty()
        {
            note(
                "app.autoBranchCreationConfig.environmentVariables",
                "variables of automatically created branches are not carried over; set them per branch".into(),
            );
        }
    }
    for b in &branches {
        let field = format!("branches[{}]", b.branch_name);
        if b.enable_auto_build.unwrap_or(app.enable_branch_auto_build.unwrap_or(true)) {
            if !site.build_branches.contains(&b.branch_name) {
                site.build_branches.push(b.branch_name.clone());
            }
        } else {
            note(&format!("{field}.enableAutoBuild"), "off: the branch is not built on push".into());
        }
        previews = previews.or(Some(false)).map(|p| p || b.enable_pull_request_preview == Some(true));
        let vars: BTreeMap<String, String> =
            b.environment_variables.keys().filter(|n| valid_var(n)).map(|n| (n.clone(), env_ref(n))).collect();
        if !vars.is_empty() {
            site.branch_env.insert(b.branch_name.clone(), vars);
        }
        if b.enable_basic_auth == Some(true) {
            let user = basic_auth_user(b.basic_auth_credentials.as_deref()).unwrap_or_else(|| "admin".to_owned());
            let var = format!(
                "{}_PASSWORD",
                b.branch_name.to_ascii_uppercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            );
            note(
                &format!("{field}.basicAuthCredentials"),
                format!("the password is not carried over; set {var} when planning"),
            );
            site.branch_passwords.insert(b.branch_name.clone(), (user, env_ref(&var)));
        }
        if b.build_spec.is_some() {
            note(
                &format!("{field}.buildSpec"),
                "a branch's own build spec is not carried over; the app's amplify.yml builds every branch".into(),
            );
        }
    }
    site.pull_request_previews = previews.unwrap_or(false);
    if app.enable_branch_auto_deletion == Some(false) {
        note("app.enableBranchAutoDeletion", "off on Amplify; chanto removes a deleted branch's environment (turn it off with the git connection's delete_branches)".into());
    }
    // The build spec and rules, in Amplify's own formats.
    if let Some(spec) = app.build_spec.filter(|s| !s.trim().is_empty()) {
        site.files.push(("amplify.yml".to_owned(), spec));
        note(
            "app.buildSpec",
            "written to amplify.yml: commit it at the repository's root, where chanto reads it".into(),
        );
    }
    if !app.custom_rules.is_empty() {
        let rules = serde_json::to_string_pretty(&app.custom_rules).expect("JSON values serialize");
        site.files.push(("amplify-rules.json".to_owned(), format!("{rules}\n")));
    }
    if let Some(headers) = app.custom_headers.filter(|s| !s.trim().is_empty()) {
        site.files.push(("customHttp.yml".to_owned(), headers));
    }
    // Domains: the apex, and each sub-domain's name, with the branch it
    // serves when that is not production.
    for d in &domains {
        for sub in &d.sub_domains {
            let s = &sub.sub_domain_setting;
            let name =
                if s.prefix.is_empty() { d.domain_name.clone() } else { format!("{}.{}", s.prefix, d.domain_name) };
            let branch =
                (site.production_branch.as_deref() != Some(s.branch_name.as_str())).then(|| s.branch_name.clone());
            if !site.domains.iter().any(|(n, _)| *n == name) {
                site.domains.push((name, branch));
            }
        }
        if d.enable_auto_sub_domain == Some(true) {
            note(
                &format!("domainAssociations[{}].enableAutoSubDomain", d.domain_name),
                "branch sub-domains are not carried over; every branch has its own URL under the base domain".into(),
            );
        }
    }
    Ok(Imported { site, report })
}

// ------------------------------------------------- chanto.platform.toml

/// The site as a `chanto.platform.toml` (what `chanto plan` reads), and
/// what of it the file cannot say.
pub fn to_platform_toml(site: &ImportedSite) -> (String, Vec<Note>) {
    use crate::platform::{
        AccessConfig, DomainConfig, EnvValue, GitConfig, Password, PlatformConfig, SecretRef, SiteConfig,
    };
    let mut notes = Vec::new();
    let mut skip = |field: String, message: String| notes.push(Note { field, message });
    let production =
        site.production_branch.as_deref().and_then(|b| b.parse().ok()).unwrap_or_else(|| "main".parse().expect("main"));
    let mut s = SiteConfig::new(production);
    s.profile = site.profile.parse().ok();
    if let Some(repo) = &site.repository {
        let mut g = GitConfig::new(repo.clone());
        g.include = site.build_branches.clone();
        g.pull_request_previews = site.pull_request_previews;
        s.git = Some(g);
        s.build.command = site.command.clone();
        s.build.publish = site.publish.clone();
        s.build.base = site.base.clone();
    } else if site.command.is_some() || site.publish.is_some() {
        skip("build".into(), "build settings need a repository to build from; connect one (chanto git connect)".into());
    }
    let secret = |reference: &str| SecretRef::parse(reference).ok();
    for (name, reference) in &site.env {
        if let Some(r) = secret(reference) {
            s.env.insert(name.clone(), EnvValue::Secret(r));
        }
    }
    let policy = |(user, reference): &(String, String)| {
        secret(reference).map(|r| AccessConfig {
            users: [(user.clone(), Password::Secret(r))].into_iter().collect(),
            ..AccessConfig::default()
        })
    };
    s.access.site = site.password.as_ref().and_then(policy);
    for (branch, vars) in &site.branch_env {
        let Ok(b) = branch.parse() else {
            skip(format!("branches[{branch}]"), "not a branch name chanto accepts; its variables are left out".into());
            continue;
        };
        let entry = s.branches.entry(b).or_default();
        for (name, reference) in vars {
            if let Some(r) = secret(reference) {
                entry.env.insert(name.clone(), EnvValue::Secret(r));
            }
        }
    }
    for (branch, pair) in &site.branch_passwords {
        let Ok(b) = branch.parse() else {
            skip(format!("branches[{branch}]"), "not a branch name chanto accepts; its password is left out".into());
            continue;
        };
        s.branches.entry(b).or_default().access = policy(pair);
    }
    for (i, (name, branch)) in site.domains.iter().enumerate() {
        let Ok(d) = name.parse() else {
            skip(format!("domains[{name}]"), "not a domain name chanto accepts; left out".into());
            continue;
        };
        let branch = branch.as_deref().and_then(|b| b.parse().ok());
        s.domains.insert(d, DomainConfig { primary: i == 0, branch });
    }
    let mut config = PlatformConfig::default();
    match site.name.parse() {
        Ok(name) => drop(config.sites.insert(name, s)),
        Err(_) => skip("name".into(), format!("{:?} is not a site name; the file declares no site", site.name)),
    }
    config.normalize();
    (crate::platform::render(&config), notes)
}

// ---------------------------------------------------------------- Netlify

#[derive(Deserialize)]
struct NetlifySite {
    name: String,
    #[serde(default)]
    custom_domain: Option<String>,
    #[serde(default)]
    domain_aliases: Vec<String>,
    #[serde(default)]
    build_settings: Option<NetlifyBuild>,
    #[serde(default)]
    processing_settings: Option<serde_json::Value>,
    #[serde(default)]
    force_ssl: Option<bool>,
    #[serde(default)]
    has_password: Option<bool>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct NetlifyBuild {
    #[serde(default)]
    repo_url: Option<String>,
    #[serde(default)]
    repo_branch: Option<String>,
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    functions_dir: Option<String>,
    #[serde(default)]
    allowed_branches: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    stop_builds: Option<bool>,
}

/// Imports a Netlify site from the site object its API returns.
pub fn netlify(file: &str, text: &str) -> Result<Imported, ImportError> {
    let what = "the site object `GET /api/v1/sites/{site_id}` returns (`netlify api getSite`)";
    check_size(file, text, what)?;
    let s: NetlifySite = serde_json::from_str(text).map_err(|e| ImportError::json(file, &e, what))?;
    let mut report = Vec::new();
    let mut note = |field: &str, message: String| report.push(Note { field: field.to_owned(), message });
    let mut site = ImportedSite {
        name: site_name(&s.name),
        profile: "netlify",
        pull_request_previews: true,
        ..Default::default()
    };
    if site.name != s.name {
        note("name", format!("{:?} is the site {:?}", s.name, site.name));
    }
    if let Some(b) = s.build_settings {
        site.repository = b.repo_url.filter(|r| !r.is_empty());
        site.production_branch = b.repo_branch.filter(|r| !r.is_empty());
        site.command = b.cmd.filter(|c| !c.trim().is_empty());
        site.publish = b.dir.filter(|d| !d.is_empty());
        site.base = b.base.filter(|d| !d.is_empty());
        site.build_branches = b.allowed_branches;
        for name in b.env.keys() {
            if valid_var(name) {
                site.env.insert(name.clone(), env_ref(name));
            } else {
                note(&format!("build_settings.env.{name}"), "not a variable name chanto accepts; left out".into());
            }
        }
        if b.functions_dir.is_some_and(|d| !d.is_empty()) {
            note(
                "build_settings.functions_dir",
                "Netlify Functions do not carry over: chanto serves static output".into(),
            );
        }
        if b.stop_builds == Some(true) {
            note(
                "build_settings.stop_builds",
                "builds were stopped on Netlify; chanto builds on every push once connected".into(),
            );
        }
    }
    if let Some(primary) = s.custom_domain.filter(|d| !d.is_empty()) {
        site.domains.push((primary, None));
    }
    for alias in s.domain_aliases {
        if !site.domains.iter().any(|(n, _)| *n == alias) {
            site.domains.push((alias, None));
        }
    }
    if s.has_password == Some(true) || s.password.as_deref().is_some_and(|p| !p.is_empty()) {
        site.password = Some(("visitor".to_owned(), env_ref("SITE_PASSWORD")));
        note("password", "the password is not carried over; set SITE_PASSWORD when planning (chanto asks for a user name too: visitor)".into());
    }
    if s.force_ssl == Some(false) {
        note("force_ssl", "off on Netlify; chanto's HTTPS redirect is a domain setting (chanto domains https)".into());
    }
    let pretty = s.processing_settings.as_ref().and_then(|p| p.pointer("/html/pretty_urls")).and_then(|v| v.as_bool());
    if pretty == Some(false) {
        site.profile = "amplify";
        note(
            "processing_settings.html.pretty_urls",
            "off: /about does not serve about.html (the profile of exact paths)".into(),
        );
    }
    Ok(Imported { site, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped as `aws amplify get-app` prints (AWS's API reference, App).
    const APP: &str = r#"{"app": {
  "appId": "d2abc", "appArn": "arn:aws:amplify:eu-west-1:1:apps/d2abc", "name": "My Docs",
  "repository": "https://github.com/ada/docs", "platform": "WEB",
  "environmentVariables": {"API_URL": "https://api.example.com", "bad-name": "x"},
  "defaultDomain": "d2abc.amplifyapp.com", "enableBranchAutoBuild": true, "enableBranchAutoDeletion": false,
  "enableBasicAuth": true, "basicAuthCredentials": "YW5uOnMzY3IzdA==",
  "customRules": [{"source": "/<*>", "target": "/index.html", "status": "404-200"}],
  "productionBranch": {"branchName": "main", "status": "SUCCEED"},
  "buildSpec": "version: 1\nfrontend:\n  phases:\n    build:\n      commands: [npm run build]\n  artifacts:\n    baseDirectory: dist\n    files: ['**/*']\n",
  "customHeaders": "customHeaders:\n  - pattern: '**'\n    headers:\n      - key: X-Frame-Options\n        value: DENY\n",
  "enableAutoBranchCreation": true, "autoBranchCreationPatterns": ["feature/*"],
  "autoBranchCreationConfig": {"enablePullRequestPreview": true}
}}"#;

    const BRANCHES: &str = r#"{"branches": [
  {"branchName": "main", "stage": "PRODUCTION", "enableAutoBuild": true, "environmentVariables": {}},
  {"branchName": "staging", "stage": "BETA", "enableAutoBuild": true, "environmentVariables": {"API_URL": "https://staging"},
   "enableBasicAuth": true, "basicAuthCredentials": "Ym9iOnB3", "enablePullRequestPreview": false},
  {"branchName": "old", "enableAutoBuild": false}
]}"#;

    const DOMAINS: &str = r#"{"domainAssociations": [{"domainName": "example.com", "enableAutoSubDomain": false,
  "subDomains": [{"subDomainSetting": {"prefix": "", "branchName": "main"}, "verified": true},
                 {"subDomainSetting": {"prefix": "www", "branchName": "main"}, "verified": true},
                 {"subDomainSetting": {"prefix": "staging", "branchName": "staging"}, "verified": true}]}]}"#;

    #[test]
    fn an_amplify_app_with_its_branches_and_domains() {
        let i = amplify(&[("branches.json", BRANCHES), ("app.json", APP), ("domains.json", DOMAINS)]).unwrap();
        let s = &i.site;
        assert_eq!((s.name.as_str(), s.profile), ("my-docs", "amplify"));
        assert_eq!(s.repository.as_deref(), Some("https://github.com/ada/docs"));
        assert_eq!(s.production_branch.as_deref(), Some("main"));
        assert_eq!(s.build_branches, ["feature/*", "main", "staging"]);
        assert!(s.pull_request_previews);
        assert_eq!(s.env.get("API_URL").map(String::as_str), Some("env:API_URL"));
        assert_eq!(s.branch_env["staging"]["API_URL"], "env:API_URL");
        assert_eq!(s.password, Some(("ann".to_owned(), "env:SITE_PASSWORD".to_owned())));
        assert_eq!(s.branch_passwords["staging"], ("bob".to_owned(), "env:STAGING_PASSWORD".to_owned()));
        let domain = |n: &str, b: Option<&str>| (n.to_owned(), b.map(str::to_owned));
        assert_eq!(
            s.domains,
            [
                domain("example.com", None),
                domain("www.example.com", None),
                domain("staging.example.com", Some("staging"))
            ]
        );
        let names: Vec<&str> = s.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["amplify.yml", "amplify-rules.json", "customHttp.yml"]);
        // The rules it writes are rules chanto reads.
        let refs: Vec<(&str, &[u8])> =
            s.files.iter().filter(|(n, _)| n != "amplify.yml").map(|(n, t)| (n.as_str(), t.as_bytes())).collect();
        chanto_rules::compile(&refs).unwrap();
        let report: Vec<String> = i.report.iter().map(|n| n.to_string()).collect();
        let has = |field: &str| report.iter().any(|r| r.starts_with(field));
        assert!(
            has("app.name") && has("app.basicAuthCredentials") && has("app.environmentVariables.bad-name"),
            "{report:#?}"
        );
        assert!(has("branches[old].enableAutoBuild"), "{report:#?}");
        // The configuration it makes is one `chanto plan` reads, with the
        // branch's domain and the passwords by reference.
        let (toml, notes) = to_platform_toml(s);
        assert!(notes.is_empty(), "{notes:?}");
        let config = crate::platform::parse("chanto.platform.toml", &toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let site = &config.sites[&"my-docs".parse().unwrap()];
        assert_eq!(site.production_branch.as_str(), "main");
        assert_eq!(site.profile, Some(chanto_rules::Profile::Amplify));
        assert_eq!(site.domains.len(), 3, "{toml}");
        assert!(toml.contains("env:SITE_PASSWORD") && toml.contains("env:STAGING_PASSWORD"), "{toml}");
        // No secret is in anything it returns.
        let all = format!("{i:?}{toml}");
        assert!(
            !all.contains("s3cr3t") && !all.contains("YW5uOnMzY3IzdA") && !all.contains("https://staging"),
            "{all}"
        );
    }

    #[test]
    fn a_netlify_site() {
        let site = r#"{"id": "3d2b", "site_id": "3d2b", "name": "ada-blog", "custom_domain": "blog.example.com",
          "domain_aliases": ["www.blog.example.com"], "url": "https://blog.example.com", "force_ssl": true,
          "has_password": true,
          "build_settings": {"repo_url": "https://github.com/ada/blog", "repo_branch": "main", "cmd": "hugo",
            "dir": "public", "base": "", "functions_dir": "netlify/functions", "allowed_branches": ["main", "next"],
            "env": {"HUGO_VERSION": "0.120.0"}},
          "processing_settings": {"html": {"pretty_urls": true}}}"#;
        let i = netlify("site.json", site).unwrap();
        let s = &i.site;
        assert_eq!((s.name.as_str(), s.profile), ("ada-blog", "netlify"));
        assert_eq!(
            (s.command.as_deref(), s.publish.as_deref(), s.base.as_deref()),
            (Some("hugo"), Some("public"), None)
        );
        assert_eq!(s.domains, [("blog.example.com".to_owned(), None), ("www.blog.example.com".to_owned(), None)]);
        assert_eq!(s.build_branches, ["main", "next"]);
        assert_eq!(s.env["HUGO_VERSION"], "env:HUGO_VERSION");
        assert!(s.password.is_some());
        assert!(i.report.iter().any(|n| n.field == "build_settings.functions_dir"), "{:?}", i.report);
        assert!(!format!("{i:?}").contains("0.120.0"), "values are not carried over");
    }

    #[test]
    fn bad_inputs_are_named() {
        for (text, want) in [
            ("{\"app\": {\"name\": 7}}", "app.json:1:18: invalid type: integer `7`, expected a string"),
            ("[1, 2]", "app.json:1:1: not a JSON object; give the JSON `aws amplify get-app`"),
            ("{\"something\": 1}", "app.json:1:1: has no \"app\""),
            ("{\"app\": ", "app.json:1:8: EOF while parsing"),
        ] {
            let e = amplify(&[("app.json", text)]).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
        }
        let e = amplify(&[("b.json", BRANCHES)]).unwrap_err().to_string();
        assert!(e.contains("no app"), "{e}");
        let e = amplify(&[("a.json", APP), ("b.json", APP)]).unwrap_err().to_string();
        assert!(e.starts_with("b.json:1:1: a second app"), "{e}");
        let huge = " ".repeat(MAX_IMPORT_BYTES + 1);
        assert!(amplify(&[("x.json", &huge)]).unwrap_err().to_string().contains("the limit is"));
        let e = netlify("site.json", "{\"name\": null}").unwrap_err().to_string();
        assert!(e.starts_with("site.json:1:13: invalid type: null"), "{e}");
        assert_eq!(site_name("---"), "imported");
        assert_eq!(site_name("Über App!! 2"), "ber-app-2");
    }
}

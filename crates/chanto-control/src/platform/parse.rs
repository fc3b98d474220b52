//! Reads `chanto.platform.toml` (one file, or a directory's files merged)
//! into a [`PlatformConfig`], checking every value as the API would. It goes
//! on past an error, so one run names every problem: file, line, column,
//! what is wrong and how to fix it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chanto_build::SiteBuildSettings;
use chanto_core::{BranchName, DomainName, SiteName};
use chanto_notify::EventKind;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::model::*;

/// One problem in a configuration file, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as the caller named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ParseErrors(pub Vec<Diagnostic>);

/// Most errors reported at once (then how many more there are).
pub const MAX_ERRORS: usize = 100;

/// Reads one file.
pub fn parse(file: &str, text: &str) -> Result<PlatformConfig, ParseErrors> {
    parse_files(&[(file, text)])
}

/// Reads a directory's files (names and texts, in the order to report
/// them) into one configuration. A site may be declared in one file only.
pub fn parse_files(files: &[(&str, &str)]) -> Result<PlatformConfig, ParseErrors> {
    let mut errors = Vec::new();
    let mut config = PlatformConfig::default();
    // Where each site and domain was declared, to name both places of a duplicate.
    let mut site_at: BTreeMap<SiteName, (String, usize, usize)> = BTreeMap::new();
    let mut domain_at: BTreeMap<DomainName, (SiteName, String, usize, usize)> = BTreeMap::new();
    if files.len() > MAX_FILES {
        errors.push(Diagnostic {
            file: files[MAX_FILES].0.to_owned(),
            line: 1,
            column: 1,
            message: format!("{} files; a configuration has at most {MAX_FILES}: merge some", files.len()),
        });
    }
    for (file, text) in files.iter().take(MAX_FILES) {
        let mut cx = Cx { file, text, errors: &mut errors };
        if text.len() > MAX_FILE_BYTES {
            cx.error(
                0,
                format!(
                    "the file is {} bytes; a configuration file holds at most {MAX_FILE_BYTES} (1 MiB): split it into a directory of files",
                    text.len()
                ),
            );
            continue;
        }
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let at = e.span().map_or(0, |s| s.start);
                cx.error(at, format!("{}; fix the TOML syntax here", e.message().trim_end()));
                continue;
            }
        };
        for (key, value) in entries(doc.get_ref()) {
            match key_str(key) {
                "site" => {
                    let Some(sites) = cx.table("site", value) else { continue };
                    for (name_key, site_value) in entries(sites) {
                        let Some(name) = cx.parse_key::<SiteName>("site", name_key) else { continue };
                        let at = cx.pos(name_key.span().start);
                        if let Some((f, l, c)) = site_at.get(&name) {
                            cx.error(
                                name_key.span().start,
                                format!(
                                    "site {name} is already declared at {f}:{l}:{c}; declare each site in one file only"
                                ),
                            );
                            continue;
                        }
                        if site_at.len() >= MAX_SITES {
                            cx.error(
                                name_key.span().start,
                                format!("more than {MAX_SITES} sites; a configuration declares at most {MAX_SITES}"),
                            );
                            break;
                        }
                        site_at.insert(name.clone(), (file.to_string(), at.0, at.1));
                        let before = cx.errors.len();
                        match cx.site(&name, site_value, &mut domain_at) {
                            Some(site) => {
                                config.sites.insert(name, site);
                            }
                            // A site left out of the result would plan its destruction: never silently.
                            None if cx.errors.len() == before => cx.error(
                                name_key.span().start,
                                format!("site {name} could not be read; this is a bug in chanto, please report it"),
                            ),
                            None => {}
                        }
                    }
                }
                other => cx.unknown(key, other, "the top level", &["site"]),
            }
        }
    }
    errors.sort_by_key(|a| (files_index(files, &a.file), a.line, a.column));
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        let last = errors[MAX_ERRORS - 1].clone();
        errors.push(Diagnostic { message: format!("{more} more errors after this one are not shown"), ..last });
    }
    if errors.is_empty() {
        config.normalize();
        Ok(config)
    } else {
        Err(ParseErrors(errors))
    }
}

fn files_index(files: &[(&str, &str)], file: &str) -> usize {
    files.iter().position(|(f, _)| *f == file).unwrap_or(usize::MAX)
}

/// A key's text.
fn key_str<'a>(key: &'a Spanned<Cow<'_, str>>) -> &'a str {
    key.get_ref()
}

type Entry<'t, 'i> = (&'t Spanned<Cow<'i, str>>, &'t Spanned<DeValue<'i>>);

/// A table's entries in file order.
fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut out: Vec<Entry<'t, 'i>> = table.iter().collect();
    out.sort_by_key(|(k, _)| k.span().start);
    out
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

struct Cx<'a> {
    file: &'a str,
    text: &'a str,
    errors: &'a mut Vec<Diagnostic>,
}

type Value<'t, 'i> = &'t Spanned<DeValue<'i>>;

impl Cx<'_> {
    fn pos(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
    }

    fn error(&mut self, offset: usize, message: impl Into<String>) {
        let (line, column) = self.pos(offset);
        self.errors.push(Diagnostic { file: self.file.to_owned(), line, column, message: message.into() });
    }

    fn unknown(&mut self, key: &Spanned<Cow<'_, str>>, name: &str, within: &str, known: &[&str]) {
        self.error(
            key.span().start,
            format!("unknown key `{name}` in {within}; the keys here are: {}", known.join(", ")),
        );
    }

    fn type_error(&mut self, path: &str, v: Value<'_, '_>, want: &str, example: &str) {
        self.error(v.span().start, format!("{path} must be {want}, not {}; write {example}", kind(v.get_ref())));
    }

    fn table<'t, 'i>(&mut self, path: &str, v: Value<'t, 'i>) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.type_error(path, v, "a table", &format!("it as a [{path}] section"));
                None
            }
        }
    }

    fn string(&mut self, path: &str, v: Value<'_, '_>) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.type_error(path, v, "a string", "the value in quotes");
                None
            }
        }
    }

    /// A string of at most 2048 bytes without control characters.
    fn text(&mut self, path: &str, v: Value<'_, '_>) -> Option<String> {
        let s = self.string(path, v)?;
        if s.len() > 2048 || s.chars().any(char::is_control) {
            self.error(v.span().start, format!("{path} must be at most 2048 bytes, without control characters"));
            return None;
        }
        Some(s)
    }

    fn bool(&mut self, path: &str, v: Value<'_, '_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(path, v, "true or false", &format!("{path} = true"));
                None
            }
        }
    }

    fn int(&mut self, path: &str, v: Value<'_, '_>, min: u64, max: u64) -> Option<u64> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => {
                self.type_error(path, v, "a number", &format!("{path} = {min} (no quotes)"));
                return None;
            }
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(v.span().start, format!("{path} must be a whole number from {min} to {max}"));
                None
            }
        }
    }

    fn strings(&mut self, path: &str, v: Value<'_, '_>, example: &str) -> Option<Vec<(String, usize)>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.type_error(path, v, "an array of strings", &format!("{path} = [{example}]"));
            return None;
        };
        if items.len() > MAX_ENTRIES {
            self.error(v.span().start, format!("{path} has {} items; at most {MAX_ENTRIES}", items.len()));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.text(&format!("{path}[{i}]"), item) {
                Some(s) => out.push((s, item.span().start)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn parse_key<T: std::str::FromStr<Err = chanto_core::ValidationError>>(
        &mut self,
        within: &str,
        key: &Spanned<Cow<'_, str>>,
    ) -> Option<T> {
        match key.get_ref().parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(key.span().start, format!("{within}.{:?}: {}", key.get_ref().as_ref(), e.message));
                None
            }
        }
    }

    fn secret(&mut self, path: &str, v: Value<'_, '_>) -> Option<SecretRef> {
        let s = self.string(path, v)?;
        SecretRef::parse(&s).map_err(|e| self.error(v.span().start, format!("{path}: {e}"))).ok()
    }

    fn site(
        &mut self,
        name: &SiteName,
        v: Value<'_, '_>,
        domain_at: &mut BTreeMap<DomainName, (SiteName, String, usize, usize)>,
    ) -> Option<SiteConfig> {
        let here = format!("site.{name}");
        let t = self.table(&here, v)?;
        let mut site = SiteConfig::new("main".parse().expect("main is a branch name"));
        let mut ok = true;
        let mut build_at = None;
        const KEYS: &[&str] = &[
            "production_branch",
            "keep_deploys",
            "profile",
            "proxy_origins",
            "https",
            "git",
            "build",
            "env",
            "access",
            "branches",
            "domains",
            "notify",
        ];
        for (key, value) in entries(t) {
            let path = format!("{here}.{}", key.get_ref());
            let done = match key_str(key) {
                "production_branch" => self
                    .string(&path, value)
                    .and_then(|s| self.checked(&path, value, s.parse::<BranchName>()))
                    .map(|b| site.production_branch = b),
                "keep_deploys" => self
                    .int(&path, value, 0, u64::from(crate::gc::MAX_KEEP_DEPLOYS))
                    .map(|n| site.keep_deploys = n as u32),
                "profile" => self
                    .string(&path, value)
                    .and_then(|s| {
                        s.parse::<chanto_rules::Profile>()
                            .map_err(|e| self.error(value.span().start, format!("{path}: {e}")))
                            .ok()
                    })
                    .map(|p| site.profile = Some(p)),
                "proxy_origins" => self.proxy_origins(&path, value).map(|o| site.proxy_origins = o),
                "https" => self.https(&path, value).map(|h| site.https = h),
                "git" => self.git(&path, value).map(|g| site.git = Some(g)),
                "build" => {
                    build_at = Some(key.span().start);
                    self.build(&path, value).map(|b| site.build = b)
                }
                "env" => self.env(&path, value).map(|e| site.env = e),
                "access" => self.site_access(&path, value).map(|a| site.access = a),
                "branches" => self.branches(&path, value).map(|b| site.branches = b),
                "domains" => self.domains(name, &path, value, domain_at).map(|d| site.domains = d),
                "notify" => self.notify(name, &path, value).map(|n| site.notify = n),
                other => {
                    self.unknown(key, other, &format!("[{here}]"), KEYS);
                    None
                }
            };
            ok &= done.is_some();
        }
        if let Some(at) = build_at
            && site.git.is_none()
            && site.build != SiteBuildSettings::default()
        {
            self.error(
                at,
                format!("[{here}.build] is used by git builds: add a [{here}.git] section with the repository"),
            );
            ok = false;
        }
        ok.then_some(site)
    }

    fn checked<T>(&mut self, path: &str, v: Value<'_, '_>, r: Result<T, chanto_core::ValidationError>) -> Option<T> {
        r.map_err(|e| self.error(v.span().start, format!("{path}: {}", e.message))).ok()
    }

    fn proxy_origins(&mut self, path: &str, v: Value<'_, '_>) -> Option<Vec<String>> {
        let items = self.strings(path, v, "\"https://api.example.com\"")?;
        let max = crate::site_settings::MAX_PROXY_ORIGINS;
        if items.len() > max {
            self.error(v.span().start, format!("{path} has {} origins; a site lists at most {max}", items.len()));
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, (s, at)) in items.into_iter().enumerate() {
            match chanto_core::normalize_origin(&s) {
                Ok(n) => out.push(n),
                Err(e) => {
                    self.error(at, format!("{path}[{i}]: {}", e.message));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn https(&mut self, path: &str, v: Value<'_, '_>) -> Option<HttpsConfig> {
        let t = self.table(path, v)?;
        let mut h = HttpsConfig::default();
        let mut ok = true;
        for (key, value) in entries(t) {
            let p = format!("{path}.{}", key.get_ref());
            let done = match key_str(key) {
                "redirect" => self.bool(&p, value).map(|b| h.redirect = b),
                "hsts_max_age" => self.int(&p, value, 0, crate::domains::MAX_HSTS_MAX_AGE).map(|n| h.hsts_max_age = n),
                "hsts_include_subdomains" => self.bool(&p, value).map(|b| h.hsts_include_subdomains = b),
                "hsts_preload" => self.bool(&p, value).map(|b| h.hsts_preload = b),
                other => {
                    self.unknown(
                        key,
                        other,
                        &format!("[{path}]"),
                        &["redirect", "hsts_max_age", "hsts_include_subdomains", "hsts_preload"],
                    );
                    None
                }
            };
            ok &= done.is_some();
        }
        if ok && h.hsts_preload && (h.hsts_max_age < 31_536_000 || !h.hsts_include_subdomains) {
            self.error(
                v.span().start,
                format!("{path}.hsts_preload needs hsts_max_age of at least 31536000 (a year) and hsts_include_subdomains = true, as browsers' preload lists require"),
            );
            return None;
        }
        ok.then_some(h)
    }

    fn git(&mut self, path: &str, v: Value<'_, '_>) -> Option<GitConfig> {
        const KEYS: &[&str] = &[
            "repository",
            "token",
            "ssh_key",
            "username",
            "include",
            "exclude",
            "delete_branches",
            "pull_request_previews",
            "fork_pull_requests",
            "preview_retention_days",
            "poll_interval_secs",
            "timeout_secs",
            "platform_config",
        ];
        let t = self.table(path, v)?;
        let mut g = GitConfig::new("");
        let mut repository = None;
        let given = t.iter().any(|(k, _)| key_str(k) == "repository");
        let mut ok = true;
        let mut include_at = None;
        for (key, value) in entries(t) {
            let p = format!("{path}.{}", key.get_ref());
            let done = match key_str(key) {
                "repository" => self
                    .string(&p, value)
                    .and_then(|s| {
                        check_repository(&s)
                            .map(|()| s)
                            .map_err(|e| self.error(value.span().start, format!("{p}: {e}")))
                            .ok()
                    })
                    .map(|s| repository = Some(s)),
                "token" | "ssh_key" => {
                    let token = key_str(key) == "token";
                    self.secret(&p, value).and_then(|r| {
                        if g.credential.is_some() {
                            self.error(key.span().start, format!("{path}: give token or ssh_key, not both"));
                            return None;
                        }
                        g.credential = Some(if token { GitCredential::Token(r) } else { GitCredential::SshKey(r) });
                        Some(())
                    })
                }
                "username" => self.text(&p, value).and_then(|u| {
                    if u.is_empty() || u.len() > 128 || u.contains([':', '@']) {
                        self.error(
                            value.span().start,
                            format!("{p}: a user name of 1-128 characters without ':' or '@'"),
                        );
                        return None;
                    }
                    g.username = Some(u);
                    Some(())
                }),
                "include" | "exclude" => {
                    include_at.get_or_insert(value.span().start);
                    self.strings(&p, value, "\"feature/*\"").map(|l| {
                        let l = l.into_iter().map(|(s, _)| s).collect();
                        if key_str(key) == "include" { g.include = l } else { g.exclude = l }
                    })
                }
                "delete_branches" => self.bool(&p, value).map(|b| g.delete_branches = b),
                "pull_request_previews" => self.bool(&p, value).map(|b| g.pull_request_previews = b),
                "fork_pull_requests" => self.bool(&p, value).map(|b| g.fork_pull_requests = b),
                "preview_retention_days" => {
                    self.int(&p, value, 0, u64::from(u32::MAX)).map(|n| g.preview_retention_days = n as u32)
                }
                "poll_interval_secs" => self
                    .int(&p, value, crate::builds::MIN_POLL_SECS, i64::MAX as u64)
                    .map(|n| g.poll_interval_secs = Some(n)),
                "timeout_secs" => {
                    self.int(&p, value, 1, crate::builds::MAX_TIMEOUT_SECS).map(|n| g.timeout_secs = Some(n))
                }
                "platform_config" => self.text(&p, value).and_then(|s| {
                    if let Some(why) = crate::builds::platform_config_problem(&s) {
                        self.error(value.span().start, format!("{p} must be {why}"));
                        return None;
                    }
                    g.platform_config = Some(s);
                    Some(())
                }),
                other => {
                    self.unknown(key, other, &format!("[{path}]"), KEYS);
                    None
                }
            };
            ok &= done.is_some();
        }
        if let Some(at) = include_at
            && ok
            && let Err(e) = chanto_build::BranchFilter::new(g.include.clone(), g.exclude.clone())
        {
            self.error(at, format!("{path}: {e}"));
            ok = false;
        }
        match repository {
            Some(r) => g.repository = r,
            None => {
                if !given {
                    self.error(v.span().start, format!("[{path}] needs repository = \"https://…\" (the clone URL)"));
                }
                ok = false;
            }
        }
        ok.then_some(g)
    }

    fn build(&mut self, path: &str, v: Value<'_, '_>) -> Option<SiteBuildSettings> {
        let t = self.table(path, v)?;
        let mut b = SiteBuildSettings::default();
        let mut ok = true;
        for (key, value) in entries(t) {
            let p = format!("{path}.{}", key.get_ref());
            let name = key_str(key);
            let slot = match name {
                "command" => &mut b.command,
                "base" => &mut b.base,
                "publish" => &mut b.publish,
                "app_root" => &mut b.app_root,
                other => {
                    self.unknown(key, other, &format!("[{path}]"), &["command", "base", "publish", "app_root"]);
                    ok = false;
                    continue;
                }
            };
            let done = self.text(&p, value).and_then(|s| {
                let bad_path =
                    name != "command" && (s.starts_with('/') || s.split(['/', '\\']).any(|part| part == ".."));
                if s.trim().is_empty() || bad_path {
                    let why =
                        if name == "command" { "a command" } else { "a path relative to the repository, without .." };
                    self.error(value.span().start, format!("{p} must be {why}"));
                    return None;
                }
                *slot = Some(s);
                Some(())
            });
            ok &= done.is_some();
        }
        ok.then_some(b)
    }

    fn env(&mut self, path: &str, v: Value<'_, '_>) -> Option<BTreeMap<String, EnvValue>> {
        let t = self.table(path, v)?;
        if t.len() > MAX_ENTRIES {
            self.error(v.span().start, format!("{path} has {} variables; at most {MAX_ENTRIES}", t.len()));
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries(t) {
            let name = key.get_ref().to_string();
            let p = format!("{path}.{name}");
            if let Err(e) = chanto_build::validate_var_name(&name) {
                self.error(key.span().start, format!("{path}: {e}"));
                ok = false;
                continue;
            }
            let parsed = match value.get_ref() {
                DeValue::String(s) => Some(EnvValue::Plain(s.to_string())),
                DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                    Some(EnvValue::Plain(self.text[value.span()].to_owned()))
                }
                DeValue::Table(t) => {
                    let mut secret = None;
                    for (k, sv) in entries(t) {
                        if key_str(k) == "secret" {
                            secret = self.secret(&format!("{p}.secret"), sv);
                        } else {
                            self.unknown(k, k.get_ref(), &p, &["secret"]);
                        }
                    }
                    if secret.is_none() && !t.iter().any(|(k, _)| key_str(k) == "secret") {
                        self.error(value.span().start, format!("{p} needs secret = \"env:VAR\" or a plain value"));
                    }
                    secret.map(EnvValue::Secret)
                }
                _ => {
                    self.type_error(&p, value, "a string or { secret = \"env:VAR\" }", &format!("{name} = \"value\""));
                    None
                }
            };
            if let Some(EnvValue::Plain(s)) = &parsed
                && let Err(e) = chanto_build::validate_var_value(&name, s)
            {
                self.error(value.span().start, format!("{path}: {e}"));
                ok = false;
                continue;
            }
            match parsed {
                Some(val) => {
                    out.insert(name, val);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn site_access(&mut self, path: &str, v: Value<'_, '_>) -> Option<SiteAccess> {
        let t = self.table(path, v)?;
        let mut a = SiteAccess::default();
        let mut ok = true;
        for (key, value) in entries(t) {
            let p = format!("{path}.{}", key.get_ref());
            let done = match key_str(key) {
                "site" => self.access(&p, value).map(|x| a.site = Some(x)),
                "previews" => self.access(&p, value).map(|x| a.previews = Some(x)),
                other => {
                    self.error(
                        key.span().start,
                        format!("unknown key `{other}` in [{path}]; the scopes here are site and previews (a branch's policy goes in [{}.branches.\"NAME\".access])", path.trim_end_matches(".access")),
                    );
                    None
                }
            };
            ok &= done.is_some();
        }
        ok.then_some(a)
    }

    fn access(&mut self, path: &str, v: Value<'_, '_>) -> Option<AccessConfig> {
        let t = self.table(path, v)?;
        let mut a = AccessConfig::default();
        let mut ok = true;
        let max = chanto_core::access::MAX_ENTRIES;
        for (key, value) in entries(t) {
            let p = format!("{path}.{}", key.get_ref());
            let done = match key_str(key) {
                "users" => self.users(&p, value).map(|u| a.users = u),
                "allow" | "deny" => self.strings(&p, value, "\"10.0.0.0/8\"").and_then(|items| {
                    if items.len() > max {
                        self.error(value.span().start, format!("{p} has {} networks; a policy holds at most {max}", items.len()));
                        return None;
                    }
                    let mut nets = Vec::new();
                    for (i, (s, at)) in items.iter().enumerate() {
                        match s.parse::<ipnet::IpNet>() {
                            Ok(n) => nets.push(n),
                            Err(_) => self.error(*at, format!("{p}[{i}]: {s:?} is not a network; write it in CIDR form, \"10.0.0.0/8\" or \"2001:db8::/32\"")),
                        }
                    }
                    (nets.len() == items.len()).then(|| {
                        if key_str(key) == "allow" { a.allow = nets } else { a.deny = nets }
                    })
                }),
                "allow_preflight" => self.bool(&p, value).map(|b| a.allow_preflight = b),
                other => {
                    self.unknown(key, other, &format!("[{path}]"), &["users", "allow", "deny", "allow_preflight"]);
                    None
                }
            };
            ok &= done.is_some();
        }
        ok.then_some(a)
    }

    fn users(&mut self, path: &str, v: Value<'_, '_>) -> Option<BTreeMap<String, Password>> {
        let t = self.table(path, v)?;
        let max = chanto_core::access::MAX_ENTRIES;
        if t.len() > max {
            self.error(v.span().start, format!("{path} has {} users; a policy holds at most {max}", t.len()));
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries(t) {
            let user = key.get_ref().to_string();
            if let Err(e) = chanto_core::access::check_user(&user) {
                self.error(key.span().start, format!("{path}: {}", e.message));
                ok = false;
                continue;
            }
            let p = format!("{path}.{user}");
            let Some(s) = self.string(&p, value) else {
                ok = false;
                continue;
            };
            let pw = if s.starts_with("$argon2") {
                match chanto_rules::check_password_hash(&s) {
                    Ok(()) => Some(Password::Hash(s)),
                    Err(e) => {
                        self.error(value.span().start, format!("{p}: {e}"));
                        None
                    }
                }
            } else {
                match SecretRef::parse(&s) {
                    Ok(r) => Some(Password::Secret(r)),
                    Err(_) => {
                        self.error(
                            value.span().start,
                            format!("{p}: a password is an argon2id hash (\"$argon2id$…\", `chanto access hash` makes one) or a reference \"env:VAR\" / \"file:PATH\"; clear-text passwords are refused"),
                        );
                        None
                    }
                }
            };
            match pw {
                Some(pw) => {
                    out.insert(user, pw);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn branches(&mut self, path: &str, v: Value<'_, '_>) -> Option<BTreeMap<BranchName, BranchConfig>> {
        let t = self.table(path, v)?;
        if t.len() > MAX_ENTRIES {
            self.error(v.span().start, format!("{path} has {} branches; at most {MAX_ENTRIES}", t.len()));
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries(t) {
            let Some(branch) = self.parse_key::<BranchName>(path, key) else {
                ok = false;
                continue;
            };
            let here = format!("{path}.{}", key_text(key.get_ref()));
            let Some(bt) = self.table(&here, value) else {
                ok = false;
                continue;
            };
            let mut b = BranchConfig::default();
            for (k, bv) in entries(bt) {
                let p = format!("{here}.{}", k.get_ref());
                let done = match key_str(k) {
                    "env" => self.env(&p, bv).map(|e| b.env = e),
                    "access" => self.access(&p, bv).map(|a| b.access = Some(a)),
                    other => {
                        self.unknown(k, other, &format!("[{here}]"), &["env", "access"]);
                        None
                    }
                };
                ok &= done.is_some();
            }
            out.insert(branch, b);
        }
        ok.then_some(out)
    }

    fn domains(
        &mut self,
        site: &SiteName,
        path: &str,
        v: Value<'_, '_>,
        domain_at: &mut BTreeMap<DomainName, (SiteName, String, usize, usize)>,
    ) -> Option<BTreeMap<DomainName, DomainConfig>> {
        let t = self.table(path, v)?;
        let max = crate::domains::MAX_DOMAINS_PER_SITE;
        if t.len() > max {
            self.error(v.span().start, format!("{path} has {} domains; a site has at most {max}", t.len()));
            return None;
        }
        let mut out: BTreeMap<DomainName, DomainConfig> = BTreeMap::new();
        let mut ok = true;
        let mut primary: Option<DomainName> = None;
        for (key, value) in entries(t) {
            let name = match DomainName::parse(key.get_ref()) {
                Ok(n) if n.is_public_suffix() => {
                    self.error(
                        key.span().start,
                        format!("{path}: {n} is a public suffix (like com or co.uk): no one site can own it"),
                    );
                    ok = false;
                    continue;
                }
                Ok(n) => n,
                Err(e) => {
                    self.error(key.span().start, format!("{path}: {}", e.message));
                    ok = false;
                    continue;
                }
            };
            let (line, column) = self.pos(key.span().start);
            if let Some((other, f, l, c)) = domain_at.get(&name) {
                let whose = if other == site { "this site".to_owned() } else { format!("site {other}") };
                self.error(key.span().start, format!("{path}: {name} is already declared for {whose} at {f}:{l}:{c}; a domain belongs to one site, once"));
                ok = false;
                continue;
            }
            domain_at.insert(name.clone(), (site.clone(), self.file.to_owned(), line, column));
            let here = format!("{path}.{}", key_text(key.get_ref()));
            let Some(dt) = self.table(&here, value) else {
                ok = false;
                continue;
            };
            let mut d = DomainConfig::default();
            for (k, dv) in entries(dt) {
                let p = format!("{here}.{}", k.get_ref());
                let done = match key_str(k) {
                    "primary" => self.bool(&p, dv).map(|b| d.primary = b),
                    "branch" => self
                        .string(&p, dv)
                        .and_then(|s| self.checked(&p, dv, s.parse::<BranchName>()))
                        .map(|b| d.branch = Some(b)),
                    other => {
                        self.unknown(k, other, &format!("[{here}]"), &["primary", "branch"]);
                        None
                    }
                };
                ok &= done.is_some();
            }
            if d.primary {
                if let Some(first) = &primary {
                    self.error(
                        key.span().start,
                        format!("{path}: {first} is already the primary domain; a site has one"),
                    );
                    ok = false;
                }
                primary = Some(name.clone());
            }
            out.insert(name, d);
        }
        ok.then_some(out)
    }

    fn notify(&mut self, site: &SiteName, path: &str, v: Value<'_, '_>) -> Option<BTreeMap<String, Subscription>> {
        let t = self.table(path, v)?;
        let max = crate::notify::MAX_SUBSCRIPTIONS;
        if t.len() > max {
            self.error(v.span().start, format!("{path} has {} subscriptions; a site has at most {max}", t.len()));
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries(t) {
            let name = key.get_ref().to_string();
            let good = !name.is_empty()
                && name.len() <= 63
                && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !good {
                self.error(key.span().start, format!("{path}: {name:?} is not a subscription name: 1-63 lowercase letters, digits, - and _ (\"slack-main\")"));
                ok = false;
                continue;
            }
            match self.subscription(site, &format!("{path}.{name}"), value) {
                Some(s) => {
                    out.insert(name, s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn subscription(&mut self, site: &SiteName, path: &str, v: Value<'_, '_>) -> Option<Subscription> {
        const KEYS: &[&str] = &[
            "channel",
            "events",
            "branches",
            "url",
            "secret",
            "smtp",
            "from",
            "to",
            "token",
            "repository",
            "api_url",
            "context",
            "comments",
        ];
        let t = self.table(path, v)?;
        let mut fields: BTreeMap<&str, Value<'_, '_>> = BTreeMap::new();
        let mut key_at: BTreeMap<&str, usize> = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries(t) {
            match KEYS.iter().find(|k| **k == key_str(key)) {
                Some(k) => {
                    fields.insert(k, value);
                    key_at.insert(k, key.span().start);
                }
                None => {
                    self.unknown(key, key.get_ref(), &format!("[{path}]"), KEYS);
                    ok = false;
                }
            }
        }
        let Some(channel_value) = fields.get("channel").copied() else {
            self.error(
                v.span().start,
                format!("[{path}] needs channel = \"slack\" (or webhook, discord, email, github, gitlab, gitea)"),
            );
            return None;
        };
        let channel = self.string(&format!("{path}.channel"), channel_value)?;
        let allowed: &[&str] = match channel.as_str() {
            "webhook" => &["url", "secret"],
            "slack" | "discord" => &["url"],
            "email" => &["smtp", "from", "to"],
            "github" | "gitlab" | "gitea" => &["token", "repository", "api_url", "context", "comments"],
            other => {
                self.error(channel_value.span().start, format!("{path}.channel: {other:?} is not a channel; use webhook, slack, discord, email, github, gitlab or gitea"));
                return None;
            }
        };
        for (k, at) in &key_at {
            if !matches!(*k, "channel" | "events" | "branches") && !allowed.contains(k) {
                self.error(
                    *at,
                    format!(
                        "{path}: {k} does not apply to {channel} subscriptions; the keys for {channel} are {}",
                        allowed.join(", ")
                    ),
                );
                ok = false;
            }
        }
        let mut events = Vec::new();
        if let Some(ev) = fields.get("events") {
            for (i, (s, at)) in self
                .strings(&format!("{path}.events"), ev, "\"deploy.activated\"")
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                match s.parse::<EventKind>() {
                    Ok(e) => events.push(e),
                    Err(e) => {
                        self.error(at, format!("{path}.events[{i}]: {e}"));
                        ok = false;
                    }
                }
            }
        }
        let mut branches = Vec::new();
        if let Some(bv) = fields.get("branches") {
            match self.strings(&format!("{path}.branches"), bv, "\"main\"") {
                Some(list) => branches = list.into_iter().map(|(s, _)| s).collect(),
                None => ok = false,
            }
        }
        if ok && let Err(e) = chanto_notify::Filter::new(events.clone(), branches.clone()) {
            self.error(
                fields.get("branches").map_or(v.span().start, |b| b.span().start),
                format!("{path}.branches: {e}"),
            );
            ok = false;
        }
        let secret_field = |cx: &mut Self, field: &str| -> Option<SecretRef> {
            match fields.get(field) {
                Some(fv) => cx.secret(&format!("{path}.{field}"), fv),
                None => {
                    cx.error(v.span().start, format!("[{path}] needs {field} = \"env:VAR\" for {channel}"));
                    None
                }
            }
        };
        let ch = match channel.as_str() {
            "webhook" => {
                let url = secret_field(self, "url");
                let secret = secret_field(self, "secret");
                url.zip(secret).map(|(url, secret)| Channel::Webhook { url, secret })
            }
            "slack" => secret_field(self, "url").map(|url| Channel::Slack { url }),
            "discord" => secret_field(self, "url").map(|url| Channel::Discord { url }),
            "email" => self.email(path, v, &fields),
            forge => {
                let forge = match forge {
                    "github" => Forge::Github,
                    "gitlab" => Forge::Gitlab,
                    _ => Forge::Gitea,
                };
                let token = secret_field(self, "token");
                let api_url = match fields.get("api_url") {
                    Some(u) => self.api_url(&format!("{path}.api_url"), u),
                    None => match forge {
                        Forge::Github => Some("https://api.github.com".to_owned()),
                        Forge::Gitlab => Some("https://gitlab.com/api/v4".to_owned()),
                        Forge::Gitea => {
                            self.error(
                                v.span().start,
                                format!("[{path}] needs api_url = \"https://gitea.example.com/api/v1\" for gitea"),
                            );
                            None
                        }
                    },
                };
                let repository = match fields.get("repository") {
                    Some(r) => self.text(&format!("{path}.repository"), r).map(Some),
                    None => Some(None),
                };
                let context = match fields.get("context") {
                    Some(c) => self.text(&format!("{path}.context"), c),
                    None => Some(format!("chanto/{site}")),
                };
                let comments = match fields.get("comments") {
                    Some(c) => self.bool(&format!("{path}.comments"), c),
                    None => Some(true),
                };
                match (token, api_url, repository, context, comments) {
                    (Some(token), Some(api_url), Some(repository), Some(context), Some(comments)) => {
                        Some(Channel::Forge { forge, token, repository, api_url, context, comments })
                    }
                    _ => None,
                }
            }
        };
        let ch = ch?;
        ok.then_some(Subscription { events, branches, channel: ch })
    }

    fn api_url(&mut self, path: &str, v: Value<'_, '_>) -> Option<String> {
        let s = self.text(path, v)?;
        let bad = |why: &str| format!("{path}: {why}");
        match url::Url::parse(&s) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) => {
                self.error(v.span().start, bad("must be an http:// or https:// URL with a host"));
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                self.error(v.span().start, bad("must not carry a user or password; give token"));
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                self.error(v.span().start, bad("must be a base URL without ? or #"));
                None
            }
            Ok(_) => Some(s.trim_end_matches('/').to_owned()),
            Err(e) => {
                self.error(v.span().start, bad(&format!("{s:?} is not a URL: {e}")));
                None
            }
        }
    }

    fn address(&mut self, path: &str, s: &str, at: usize) -> bool {
        let ok = s.len() <= 2048 && s.parse::<lettre::Address>().is_ok();
        if !ok {
            self.error(at, format!("{path}: {s:?} is not an email address; write it as name@example.com"));
        }
        ok
    }

    fn email(&mut self, path: &str, v: Value<'_, '_>, fields: &BTreeMap<&str, Value<'_, '_>>) -> Option<Channel> {
        let mut ok = true;
        let smtp = match fields.get("smtp") {
            None => {
                self.error(
                    v.span().start,
                    format!("[{path}] needs smtp = {{ host = \"smtp.example.com\" }} for email"),
                );
                None
            }
            Some(sv) => self.smtp(&format!("{path}.smtp"), sv),
        };
        let from = match fields.get("from") {
            None => {
                self.error(v.span().start, format!("[{path}] needs from = \"ci@example.com\" for email"));
                None
            }
            Some(fv) => self
                .string(&format!("{path}.from"), fv)
                .filter(|s| self.address(&format!("{path}.from"), s, fv.span().start)),
        };
        let mut to = Vec::new();
        match fields.get("to") {
            None => {
                self.error(v.span().start, format!("[{path}] needs to = [\"team@example.com\"] for email"));
                ok = false;
            }
            Some(tv) => match self.strings(&format!("{path}.to"), tv, "\"team@example.com\"") {
                Some(list) if list.is_empty() || list.len() > 50 => {
                    self.error(
                        tv.span().start,
                        format!("{path}.to: give 1 to 50 recipients; use a mailing list for more"),
                    );
                    ok = false;
                }
                Some(list) => {
                    for (i, (s, at)) in list.into_iter().enumerate() {
                        ok &= self.address(&format!("{path}.to[{i}]"), &s, at);
                        to.push(s);
                    }
                }
                None => ok = false,
            },
        }
        match (smtp, from, ok) {
            (Some(smtp), Some(from), true) => Some(Channel::Email { smtp, from, to }),
            _ => None,
        }
    }

    fn smtp(&mut self, path: &str, v: Value<'_, '_>) -> Option<Smtp> {
        let t = self.table(path, v)?;
        let (mut host, mut port, mut security, mut username, mut password) =
            (None, None, SmtpSecurity::default(), None, None);
        let mut ok = true;
        let mut password_at = 0;
        for (key, value) in entries(t) {
            let p = format!("{path}.{}", key.get_ref());
            let done = match key_str(key) {
                "host" => self.text(&p, value).and_then(|h| {
                    if h.is_empty() || h.contains(['/', ' ', '@']) {
                        self.error(value.span().start, format!("{p}: {h:?} is not a host name"));
                        return None;
                    }
                    host = Some(h);
                    Some(())
                }),
                "port" => self.int(&p, value, 1, 65_535).map(|n| port = Some(n as u16)),
                "security" => self.string(&p, value).and_then(|s| {
                    security = match s.as_str() {
                        "starttls" => SmtpSecurity::Starttls,
                        "tls" => SmtpSecurity::Tls,
                        "none" => SmtpSecurity::None,
                        _ => {
                            self.error(value.span().start, format!("{p}: {s:?} is not starttls, tls or none"));
                            return None;
                        }
                    };
                    Some(())
                }),
                "username" => self.text(&p, value).map(|u| username = Some(u)),
                "password" => {
                    password_at = key.span().start;
                    self.secret(&p, value).map(|r| password = Some(r))
                }
                other => {
                    self.unknown(
                        key,
                        other,
                        &format!("[{path}]"),
                        &["host", "port", "security", "username", "password"],
                    );
                    None
                }
            };
            ok &= done.is_some();
        }
        if password.is_some() && username.is_none() {
            self.error(password_at, format!("{path}.password needs {path}.username"));
            ok = false;
        }
        let Some(host) = host else {
            self.error(v.span().start, format!("{path} needs host = \"smtp.example.com\""));
            return None;
        };
        ok.then(|| Smtp { host, port: port.unwrap_or(security.default_port()), security, username, password })
    }
}

/// A key as it would be written back: bare when it can be, else quoted.
fn key_text(k: &str) -> String {
    super::render::key(k)
}

/// The API's repository checks (`builds::repository_problem`), naming this
/// file's key for a credential.
fn check_repository(url: &str) -> Result<(), String> {
    use crate::builds::RepositoryProblem;
    crate::builds::repository_problem(url).map_err(|p| match p {
        RepositoryProblem::Credential => "put the credential in token = \"env:VAR\", not in the URL".to_owned(),
        RepositoryProblem::Other(why) => why.to_owned(),
    })
}

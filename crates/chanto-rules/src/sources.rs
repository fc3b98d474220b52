//! From rule files to one [`RuleSet`]: which files count, in what order, and
//! the checks every source shares.

use crate::pattern::PathPattern;
use crate::{Conditions, HeaderRule, Origin, Redirect, RuleError, RuleSet, STATUSES, Source, Warning};

/// The rule files chanto reads at the root of a deploy, in precedence order:
/// for redirects the first matching rule wins, so `chanto.toml` rules come
/// first, then `_redirects`, then `netlify.toml` (Netlify's own order for its
/// two files), then Amplify's and Firebase's. Header rules from all of them
/// apply together, later ones overriding a header an earlier one set.
pub const RULE_FILES: [&str; 7] =
    ["chanto.toml", "_redirects", "netlify.toml", "amplify-rules.json", "firebase.json", "_headers", "customHttp.yml"];

/// Largest rule file, in bytes.
pub const MAX_RULE_FILE_BYTES: usize = 8 << 20;
/// Most rules (redirects plus header rules) in one deploy.
pub const MAX_RULES: usize = 250_000;

/// Parses every rule file present (`(path, contents)`; files not in
/// [`RULE_FILES`] are ignored) into one rule set, or every error found.
pub fn compile(files: &[(&str, &[u8])]) -> Result<RuleSet, Vec<RuleError>> {
    let mut set = RuleSet::default();
    let mut errors = Vec::new();
    for name in RULE_FILES {
        let Some((_, bytes)) = files.iter().find(|(n, _)| *n == name) else { continue };
        if bytes.len() > MAX_RULE_FILE_BYTES {
            errors.push(RuleError::new(
                name,
                1,
                1,
                format!("the file is {} bytes; the limit is {MAX_RULE_FILE_BYTES} (split rules with placeholders and splats)", bytes.len()),
            ));
            continue;
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t.strip_prefix('\u{feff}').unwrap_or(t),
            Err(e) => {
                let before = &bytes[..e.valid_up_to()];
                let line = before.iter().filter(|b| **b == b'\n').count() as u32 + 1;
                errors.push(RuleError::new(name, line, 1, "the file is not valid UTF-8; save it as UTF-8"));
                continue;
            }
        };
        let mut out = Parsed::default();
        match name {
            "chanto.toml" => crate::native::parse(name, text, &mut out),
            "_redirects" => crate::netlify::parse_redirects(name, text, &mut out),
            "netlify.toml" => crate::netlify::parse_toml(name, text, &mut out),
            "_headers" => crate::netlify::parse_headers(name, text, &mut out),
            "amplify-rules.json" => crate::amplify::parse_rules(name, text, &mut out),
            "customHttp.yml" => crate::amplify::parse_custom_http(name, text, &mut out),
            "firebase.json" => crate::firebase::parse(name, text, &mut out),
            _ => unreachable!("every rule file has a parser"),
        }
        errors.extend(out.errors);
        set.warnings.extend(out.warnings);
        if let Some((value, origin)) = out.clean_urls {
            setting(&mut set.clean_urls_from, &mut set.warnings, "clean_urls", value, origin);
        }
        if let Some((value, origin)) = out.trailing_slash {
            setting(&mut set.trailing_slash_from, &mut set.warnings, "trailing_slash", value, origin);
        }
        set.redirects.extend(out.redirects);
        set.headers.extend(out.headers);
        set.auth.extend(out.auth);
    }
    let count = set.redirects.len() + set.headers.len();
    if count > MAX_RULES {
        errors.push(RuleError::new(
            RULE_FILES[0],
            1,
            1,
            format!("the deploy has {count} rules; the limit is {MAX_RULES}"),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    report_conflicts(&mut set);
    set.clean_urls = set.clean_urls_from.as_ref().is_some_and(|(v, _)| *v);
    set.trailing_slash = set.trailing_slash_from.as_ref().map(|(v, _)| *v);
    Ok(set)
}

/// The first source to set a URL setting wins; a later different value is a conflict.
fn setting(slot: &mut Option<(bool, Origin)>, warnings: &mut Vec<Warning>, name: &str, value: bool, origin: Origin) {
    match slot {
        None => *slot = Some((value, origin)),
        Some((first, at)) if *first != value => warnings.push(Warning {
            message: format!("conflict: {at} already sets {name} = {first}; that setting wins"),
            origin,
        }),
        Some(_) => {}
    }
}

/// Two sources defining the same match: the later one never applies.
fn report_conflicts(set: &mut RuleSet) {
    let mut seen: std::collections::HashMap<String, &Origin> = std::collections::HashMap::new();
    let mut warnings = Vec::new();
    for r in &set.redirects {
        let key = format!("{:?}|{}|{:?}|{:?}", r.host, r.from, r.query, r.conditions);
        match seen.get(&key) {
            Some(first) if first.file != r.origin.file => warnings.push(Warning {
                origin: r.origin.clone(),
                message: format!(
                    "conflict: {first} already matches {} the same way; that rule wins (precedence: chanto.toml, _redirects, netlify.toml, amplify-rules.json, firebase.json)",
                    r.from
                ),
            }),
            Some(_) => {}
            None => {
                seen.insert(key, &r.origin);
            }
        }
    }
    set.warnings.extend(warnings);
}

/// What one file yielded.
#[derive(Default)]
pub(crate) struct Parsed {
    pub clean_urls: Option<(bool, Origin)>,
    pub trailing_slash: Option<(bool, Origin)>,
    pub redirects: Vec<Redirect>,
    pub headers: Vec<HeaderRule>,
    pub auth: Vec<crate::AuthRule>,
    pub errors: Vec<RuleError>,
    pub warnings: Vec<Warning>,
}

/// A redirect as a source wrote it, before checks.
pub(crate) struct RawRedirect<'a> {
    /// A path pattern, or `https://host/pattern`.
    pub from: &'a str,
    /// Matches by this expression instead of `from`'s path (its host still counts).
    pub regex: Option<String>,
    pub to: &'a str,
    pub status: Option<u16>,
    pub force: bool,
    pub query: Vec<(String, String)>,
    pub country: Vec<String>,
    pub language: Vec<String>,
}

impl Parsed {
    pub fn error(&mut self, file: &str, line: u32, column: u32, message: impl Into<String>) {
        self.errors.push(RuleError::new(file, line, column, message));
    }

    pub fn warn(&mut self, file: &str, line: u32, message: impl Into<String>) {
        self.warnings.push(Warning { origin: Origin { file: file.to_owned(), line }, message: message.into() });
    }

    /// Checks and adds a redirect; errors name `file:line:column`.
    pub fn redirect(&mut self, file: &str, line: u32, column: u32, raw: RawRedirect<'_>) {
        let (host, path) = match split_host(raw.from) {
            Ok(v) => v,
            Err(e) => return self.error(file, line, column, e),
        };
        let from = match raw.regex {
            Some(re) => match crate::compile_regex(&re) {
                Ok(_) => Source::Regex(re),
                Err(e) => return self.error(file, line, column, format!("from: {e}")),
            },
            None => match PathPattern::parse(path) {
                Ok(p) => Source::Path(p),
                Err(e) => return self.error(file, line, column, format!("from: {e}")),
            },
        };
        let status = raw.status.unwrap_or(301);
        if !STATUSES.contains(&status) {
            return self.error(
                file,
                line,
                column,
                format!("status {status} is not one chanto serves; use 200, 301, 302, 303, 307, 308, 404 or 410"),
            );
        }
        if raw.to.is_empty() || raw.to.len() > 4096 || raw.to.chars().any(|c| c.is_control()) {
            return self.error(
                file,
                line,
                column,
                "to: give a path starting with '/' or an absolute URL (at most 4096 bytes)",
            );
        }
        let absolute = raw.to.starts_with("http://") || raw.to.starts_with("https://");
        if !absolute && !raw.to.starts_with('/') {
            return self.error(
                file,
                line,
                column,
                format!("to: {:?} is neither a path starting with '/' nor an http(s) URL", raw.to),
            );
        }
        if absolute && matches!(status, 404 | 410) {
            return self.error(
                file,
                line,
                column,
                format!("to: a {status} rule serves a page of this site; give its path"),
            );
        }
        if absolute && status == 200 {
            self.warn(
                file,
                line,
                format!(
                    "{} proxies to another origin; this chanto's operator allows no proxy origins, so it answers 502",
                    raw.to
                ),
            );
        }
        let mut query = Vec::new();
        for (k, v) in raw.query {
            let bind = match v.strip_prefix(':') {
                Some(name) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    Some(name.to_owned())
                }
                _ if v.is_empty() => None,
                _ => {
                    return self.error(
                        file,
                        line,
                        column,
                        format!("query {k}={v}: the value must be a placeholder like :{k}; matching fixed values is not supported"),
                    );
                }
            };
            query.push((k, bind));
        }
        self.redirects.push(Redirect {
            host,
            from,
            query,
            to: raw.to.to_owned(),
            status,
            force: raw.force,
            conditions: Conditions {
                country: raw.country.iter().map(|c| c.trim().to_ascii_lowercase()).collect(),
                language: raw.language.iter().map(|c| c.trim().to_ascii_lowercase()).collect(),
            },
            origin: Origin { file: file.to_owned(), line },
        });
    }

    /// Checks and adds a header rule.
    pub fn header_rule(&mut self, file: &str, line: u32, path: &str, headers: Vec<(String, String)>) {
        match PathPattern::parse(path) {
            Ok(p) => self.header_rule_for(file, line, Source::Path(p), headers),
            Err(e) => self.error(file, line, 1, e),
        }
    }

    /// Checks and adds a path's basic-auth users.
    pub fn auth_rule(&mut self, file: &str, line: u32, path: &str, users: Vec<(String, String)>) {
        let pattern = match PathPattern::parse(path) {
            Ok(p) => p,
            Err(e) => return self.error(file, line, 1, e),
        };
        if users.len() > 100 || users.iter().any(|(u, p)| u.len() > 128 || p.len() > 1024) {
            return self.error(
                file,
                line,
                1,
                "Basic-Auth: at most 100 users, names up to 128 bytes, passwords up to 1024",
            );
        }
        self.auth.push(crate::AuthRule {
            path: Source::Path(pattern),
            users: users
                .into_iter()
                .map(|(user, password)| crate::AuthUser { user, password: Some(password), hash: None })
                .collect(),
            origin: Origin { file: file.to_owned(), line },
        });
    }

    /// Checks and adds a header rule whose source is already parsed.
    pub fn header_rule_for(&mut self, file: &str, line: u32, pattern: Source, headers: Vec<(String, String)>) {
        if let Source::Regex(re) = &pattern
            && let Err(e) = crate::compile_regex(re)
        {
            return self.error(file, line, 1, e);
        }
        for (name, value) in &headers {
            if let Err(e) = check_header(name, value) {
                return self.error(file, line, 1, e);
            }
        }
        self.headers.push(HeaderRule { path: pattern, headers, origin: Origin { file: file.to_owned(), line } });
    }
}

/// `https://host/path` → (Some(host), "/path"); `/path` → (None, "/path").
fn split_host(from: &str) -> Result<(Option<String>, &str), String> {
    let Some(rest) = from.strip_prefix("https://").or_else(|| from.strip_prefix("http://")) else {
        return Ok((None, from));
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = host.split(':').next().unwrap_or_default().to_ascii_lowercase();
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return Err(format!("from: {from:?} has no valid host name"));
    }
    Ok((Some(host), if path.is_empty() { "/" } else { path }))
}

/// Headers a rule may not set: they describe the body or the connection,
/// which chanto owns.
const RESERVED: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "content-encoding",
    "content-range",
    "trailer",
];

fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("{name} is set by chanto for each response; a rule may not set it"));
    }
    if value.len() > 8192 || value.chars().any(|c| (c.is_control() && c != '\t') || !c.is_ascii()) {
        return Err(format!("the value of {name} must be printable ASCII, at most 8192 bytes"));
    }
    Ok(())
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u32 + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) as u32 + 1;
    (line, col)
}

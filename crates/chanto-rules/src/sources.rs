//! From rule files to one [`RuleSet`]: which files count, in what order, and
//! the checks every source shares.

use crate::pattern::PathPattern;
use crate::{Conditions, HeaderRule, Origin, Profile, Redirect, RuleError, RuleSet, STATUSES, Source, Warning};

/// The rule files chanto reads at the root of a deploy, in precedence order:
/// for redirects the first matching rule wins, so `chanto.toml` rules come
/// first, then `_redirects`, then `netlify.toml` (Netlify's own order for its
/// two files), then Amplify's and Firebase's. Header rules from all of them
/// apply together, later ones overriding a header an earlier one set, except
/// that `netlify.toml`'s come after `_headers`' (on Netlify the configuration
/// file wins; its password rules, first match wins, come before them too).
pub const RULE_FILES: [&str; 7] =
    ["chanto.toml", "_redirects", "netlify.toml", "amplify-rules.json", "firebase.json", "_headers", "customHttp.yml"];

/// Whether a deploy path is one of the rule files (they configure the site
/// and are not served as part of it).
pub fn is_rule_file(path: &str) -> bool {
    RULE_FILES.contains(&path)
}

/// Largest rule file, in bytes.
pub const MAX_RULE_FILE_BYTES: usize = 8 << 20;
/// Most rules (redirects, header rules and password rules) in one deploy.
pub const MAX_RULES: usize = 250_000;
/// Most rules in one deploy whose expression needs look-around or
/// backreferences (tried one by one on every request, within one budget:
/// [`crate::LOOKUP_BUDGET`]).
pub const MAX_LOOKAROUND_RULES: usize = 100;
/// Most password users (`Basic-Auth` pairs, `[[access]]` users) in one
/// deploy: each password in clear is hashed with argon2 at deploy.
pub const MAX_PASSWORD_USERS: usize = 100;
/// Most users of one password rule.
pub const MAX_USERS_PER_RULE: usize = 100;

/// Parses every rule file present (`(path, contents)`; files not in
/// [`RULE_FILES`] are ignored) into one rule set, or every error found.
pub fn compile(files: &[(&str, &[u8])]) -> Result<RuleSet, Vec<RuleError>> {
    compile_for(files, None)
}

/// Which platform's files a rule file is (`None`: chanto's own).
fn platform_of(file: &str) -> Option<Profile> {
    match file {
        "_redirects" | "_headers" | "netlify.toml" => Some(Profile::Netlify),
        "amplify-rules.json" | "customHttp.yml" => Some(Profile::Amplify),
        "firebase.json" => Some(Profile::Firebase),
        _ => None,
    }
}

/// [`compile`], for a site whose setting names a profile: `profile` in
/// `chanto.toml` wins over it, and it wins over the platform the deploy's
/// rule files come from.
pub fn compile_for(files: &[(&str, &[u8])], site_profile: Option<Profile>) -> Result<RuleSet, Vec<RuleError>> {
    let mut set = RuleSet::default();
    let mut declared: Option<(Profile, Origin)> = None;
    let mut errors = Vec::new();
    let mut headers: Vec<(&str, Vec<HeaderRule>)> = Vec::new();
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
        headers.push((name, out.headers));
        set.auth.extend(out.auth);
        if let Some(serve) = out.serve {
            set.serve = serve;
        }
        if out.profile.is_some() {
            declared = out.profile;
        }
    }
    // Header rules apply in file order, a later one overriding a header an
    // earlier one set, except that `netlify.toml` overrides `_headers`, as
    // on Netlify (its headers parser puts the configuration file's last).
    if let Some(toml) = headers.iter().position(|(name, _)| *name == "netlify.toml")
        && let Some(file) = headers.iter().position(|(name, _)| *name == "_headers")
    {
        let rules = headers.remove(toml);
        headers.insert(file, rules);
    }
    set.headers.extend(headers.into_iter().flat_map(|(_, rules)| rules));
    let count = set.redirects.len() + set.headers.len() + set.auth.len();
    if count > MAX_RULES {
        errors.push(RuleError::new(
            RULE_FILES[0],
            1,
            1,
            format!(
                "the deploy has {count} rules (redirects, header and password rules together); the limit is {MAX_RULES}"
            ),
        ));
    }
    check_caps(&set, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    report_conflicts(&mut set);
    set.clean_urls = set.clean_urls_from.as_ref().is_some_and(|(v, _)| *v);
    set.trailing_slash = set.trailing_slash_from.as_ref().map(|(v, _)| *v);
    let profile = match (declared, site_profile) {
        (Some((p, _)), _) => p,
        (None, Some(p)) => p,
        (None, None) => inferred_profile(files, &mut set.warnings),
    };
    set.profile = Some(profile);
    set.no_pretty_urls = !profile.pretty_urls();
    Ok(set)
}

/// The platform whose rule files the deploy has; with files of several, the
/// first in [`RULE_FILES`] order, and a warning saying how to choose.
fn inferred_profile(files: &[(&str, &[u8])], warnings: &mut Vec<Warning>) -> Profile {
    let present: Vec<(&str, Profile)> = RULE_FILES
        .iter()
        .filter(|f| files.iter().any(|(n, _)| n == *f))
        .filter_map(|f| Some((*f, platform_of(f)?)))
        .collect();
    let Some(&(first_file, first)) = present.first() else { return Profile::Chanto };
    if let Some(&(other_file, other)) = present.iter().find(|(_, p)| *p != first) {
        warnings.push(Warning {
            origin: Origin { file: other_file.to_owned(), line: 1 },
            message: format!(
                "the deploy has {first}'s {first_file} and {other}'s {other_file}; it follows {first}'s defaults \
                 (set profile = \"{other}\" in chanto.toml to choose)"
            ),
        });
    }
    first
}

/// The per-deploy caps on what costs work on every request (look-around
/// expressions) or at deploy (passwords to hash): the first rule past a cap
/// is named.
fn check_caps(set: &RuleSet, errors: &mut Vec<RuleError>) {
    let regexes = set
        .redirects
        .iter()
        .map(|r| (&r.from, &r.origin))
        .chain(set.headers.iter().map(|h| (&h.path, &h.origin)))
        .chain(set.auth.iter().map(|a| (&a.path, &a.origin)));
    let mut lookaround = 0;
    for (source, origin) in regexes {
        if let Source::Regex(re) = source
            && crate::matcher::needs_backtracking(re)
        {
            lookaround += 1;
            if lookaround == MAX_LOOKAROUND_RULES + 1 {
                errors.push(RuleError::new(
                    &origin.file,
                    origin.line,
                    1,
                    format!(
                        "this is look-around expression number {lookaround}; a deploy may have at most {MAX_LOOKAROUND_RULES} \
                         (each is tried on every request): write the others without look-ahead, look-behind or backreferences"
                    ),
                ));
            }
        }
    }
    let mut users = 0;
    for rule in &set.auth {
        users += rule.users.len();
        if users > MAX_PASSWORD_USERS {
            errors.push(RuleError::new(
                &rule.origin.file,
                rule.origin.line,
                1,
                format!(
                    "the deploy's password rules list {users} users so far; the limit is {MAX_PASSWORD_USERS}: \
                     share users between paths with one rule on a common prefix, or use `chanto access` for whole sites"
                ),
            ));
            break;
        }
    }
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
        let key = format!("{:?}|{}|{:?}|{:?}|{:?}", r.host, r.from, r.query, r.query_values, r.conditions);
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
    pub profile: Option<(Profile, Origin)>,
    pub clean_urls: Option<(bool, Origin)>,
    pub trailing_slash: Option<(bool, Origin)>,
    pub redirects: Vec<Redirect>,
    pub headers: Vec<HeaderRule>,
    pub auth: Vec<crate::AuthRule>,
    pub serve: Option<crate::ServeSettings>,
    pub errors: Vec<RuleError>,
    pub warnings: Vec<Warning>,
}

/// A password user as a source wrote it, with where its secret starts.
pub(crate) struct RawUser {
    pub user: String,
    /// A password in clear, or an argon2 PHC hash.
    pub secret: String,
    pub line: u32,
    pub column: u32,
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

    /// A JSON syntax or shape error, at its position, without serde's own
    /// "at line …" suffix; `hint` (may be empty) says what was expected.
    pub fn json_error(&mut self, file: &str, e: &serde_json::Error, hint: &str) {
        let msg = e.to_string();
        let shown = crate::words::plain(msg.split(" at line ").next().unwrap_or(&msg), None);
        let sep = if hint.is_empty() { "" } else { " " };
        self.error(file, e.line().max(1) as u32, e.column().max(1) as u32, format!("{shown}{sep}{hint}"));
    }

    /// The value, or (recording `what: error` at `line`) nothing.
    pub fn take<T>(&mut self, file: &str, line: u32, what: &str, r: Result<T, impl std::fmt::Display>) -> Option<T> {
        r.map_err(|e| self.error(file, line, 1, format!("{what}: {e}"))).ok()
    }

    /// A rule read from a JSON value, or (recording `what: error` at `line`,
    /// in the file's own terms, naming the key) nothing.
    pub fn take_json<T: serde::de::DeserializeOwned>(
        &mut self,
        file: &str,
        line: u32,
        what: &str,
        v: serde_json::Value,
    ) -> Option<T> {
        serde_path_to_error::deserialize(v)
            .map_err(|e| {
                let path = e.path().to_string();
                let key = path.rsplit('.').next().filter(|k| *k != "?" && !k.is_empty());
                let message = crate::words::plain(&e.inner().to_string(), key);
                self.error(file, line, 1, format!("{what}: {message}"))
            })
            .ok()
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
                    "{} proxies to another origin; it answers 502 unless the operator allows that origin (chanto serve --proxy-origin)",
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
            query_values: Vec::new(),
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

    /// Checks and adds a path's basic-auth users. A secret that is an argon2
    /// hash must carry chanto's own parameters ([`crate::CHANTO_ARGON2`]):
    /// the hash's writer would otherwise choose what each sign-in costs.
    pub fn auth_rule(&mut self, file: &str, line: u32, path: &str, users: Vec<RawUser>) {
        let pattern = match PathPattern::parse(path) {
            Ok(p) => p,
            Err(e) => return self.error(file, line, 1, e),
        };
        if users.len() > MAX_USERS_PER_RULE || users.iter().any(|u| u.user.len() > 128 || u.secret.len() > 1024) {
            return self.error(
                file,
                line,
                1,
                format!("Basic-Auth: at most {MAX_USERS_PER_RULE} users, names up to 128 bytes, passwords up to 1024"),
            );
        }
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            if crate::password::looks_like_hash(&u.secret) {
                if let Err(why) = crate::password::check_hash(&u.secret) {
                    self.error(
                        file,
                        u.line,
                        u.column,
                        format!(
                            "the password hash of {}: {why}. Give the password in clear (chanto hashes it at deploy), \
                             or hash it with chanto's parameters: {}",
                            u.user,
                            crate::CHANTO_ARGON2
                        ),
                    );
                    continue;
                }
                // Already a hash: stored as is, never hashed twice.
                out.push(crate::AuthUser { user: u.user, password: None, hash: Some(u.secret) });
            } else {
                out.push(crate::AuthUser { user: u.user, password: Some(u.secret), hash: None });
            }
        }
        self.auth.push(crate::AuthRule {
            path: Source::Path(pattern),
            users: out,
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

/// Byte offsets of the objects directly inside the first JSON array that
/// starts at or after `from` (for the line numbers of rules in JSON files).
pub(crate) fn array_object_offsets(text: &str, from: usize) -> Vec<usize> {
    let Some(open) = text.get(from..).and_then(|t| t.find('[')).map(|o| from + o) else { return Vec::new() };
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    let mut out = Vec::new();
    for (i, c) in text[open..].char_indices() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => {
                if c == '{' && depth == 1 {
                    out.push(open + i);
                }
                depth += 1;
            }
            ']' | '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    out
}

/// 1-based line and column of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u32 + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) as u32 + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_inputs_for_every_format() {
        // Deep nesting in each structured format: an error, not a stack overflow.
        let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for name in ["firebase.json", "amplify-rules.json"] {
            assert!(compile(&[(name, deep_json.as_bytes())]).is_err(), "{name}");
        }
        let deep_yaml = format!("customHeaders: {}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(compile(&[("customHttp.yml", deep_yaml.as_bytes())]).is_err());
        let deep_toml = format!("x = {}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(compile(&[("netlify.toml", deep_toml.as_bytes())]).is_err());
        // YAML aliases that would expand exponentially ("billion laughs").
        let mut laughs = String::from("a: &a [\"lol\"]\n");
        for i in 1..30 {
            laughs.push_str(&format!(
                "a{i}: &a{i} [*a{}, *a{}]\n",
                if i == 1 { String::new() } else { (i - 1).to_string() },
                if i == 1 { String::new() } else { (i - 1).to_string() }
            ));
        }
        let errs = compile(&[("customHttp.yml", laughs.as_bytes())]).unwrap_err();
        assert_eq!((errs.len(), errs[0].file.as_str()), (1, "customHttp.yml"), "{errs:?}");
        assert!(errs[0].message.contains("repetition limit exceeded"), "{}", errs[0]);
        // The same trick in a file of the right shape: one 8 KiB header,
        // repeated by 5,000 five-byte aliases, would be 40 MB of rules.
        let mut fanout = format!(
            "customHeaders:\n  - &b\n    pattern: \"/*\"\n    headers:\n      - key: X-Big\n        value: \"{}\"\n",
            "x".repeat(8000)
        );
        fanout.push_str(&"  - *b\n".repeat(5000));
        assert!(fanout.len() < 100_000);
        let errs = compile(&[("customHttp.yml", fanout.as_bytes())]).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].to_string().starts_with("customHttp.yml:")
                && errs[0].message.contains("the file expands to more than 16777216 bytes (YAML aliases"),
            "{}",
            errs[0]
        );
        // Sharing a header list between a few patterns is fine.
        let shared = "customHeaders:\n  - pattern: \"/a\"\n    headers: &h\n      - key: X-A\n        value: \"1\"\n  - pattern: \"/b\"\n    headers: *h\n";
        let set = compile(&[("customHttp.yml", shared.as_bytes())]).unwrap();
        assert_eq!(set.headers.len(), 2);
        // Oversized: one rule past the limit.
        let many = "/a /b\n".repeat(MAX_RULES + 1);
        let errs = compile(&[("_redirects", many.as_bytes())]).unwrap_err();
        assert!(errs.iter().any(|e| e.message.contains("the limit is 250000")), "{errs:?}");
    }

    #[test]
    fn catastrophic_regexes_are_bounded() {
        // A quantified group holding a look-ahead forces the backtracking
        // engine to try every split of the `a`s: it runs out of each try's
        // limit and the expression does not match, having cost the lookup
        // exactly the sum of its tries' limits. (`(a+)+(?=b)` is no test:
        // fancy-regex hands `(a+)+` to the linear engine.)
        let rules = r#"[{"source": "</^/(?:(?=a)a+)+b$/>", "target": "/x", "status": "301"}]"#;
        let set = compile(&[("amplify-rules.json", rules.as_bytes())]).unwrap();
        let path = format!("/{}", "a".repeat(40));
        let mut budget = crate::RegexBudget::default();
        let got = set.matcher().evaluate_within(
            &crate::RuleRequest { path: &path, ..Default::default() },
            |_| false,
            &mut budget,
        );
        assert!(got.is_none());
        assert_eq!(budget.tries(), 3, "tried with each limit in turn");
        assert_eq!(budget.remaining(), crate::LOOKUP_BUDGET - 111_000);
        assert!(!budget.exhausted());
        // A cheap look-around expression costs one small try.
        let rules = r#"[{"source": "</^/(?!private)(?<page>[a-z]+)$/>", "target": "/p/<page>", "status": "301"}]"#;
        let set = compile(&[("amplify-rules.json", rules.as_bytes())]).unwrap();
        let mut budget = crate::RegexBudget::default();
        let got = set.matcher().evaluate_within(
            &crate::RuleRequest { path: "/docs", ..Default::default() },
            |_| false,
            &mut budget,
        );
        assert!(got.is_some());
        assert_eq!(crate::LOOKUP_BUDGET - budget.remaining(), 2_000, "one try to match, one to capture");
        // Expressions too long, or whose automaton would be too big, are errors.
        let long = format!(r#"[{{"source": "</{}/>", "target": "/x"}}]"#, "(a|b)".repeat(900));
        let errs = compile(&[("amplify-rules.json", long.as_bytes())]).unwrap_err();
        assert!(errs[0].message.contains("the limit is 4096"), "{}", errs[0]);
        let huge = r#"[{"source": "</(?:[a-z]{500}){500}/>", "target": "/x"}]"#;
        let errs = compile(&[("amplify-rules.json", huge.as_bytes())]).unwrap_err();
        assert!(errs[0].message.contains("invalid regular expression"), "{}", errs[0]);
    }

    /// `n` Amplify rules whose look-ahead makes the engine backtrack
    /// exponentially on a path of `a`s, then a catch-all rewrite.
    fn adversarial(n: usize) -> String {
        let mut rules: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"source": "</^/(?:(?=a)a+)+b{i}$/>", "target": "/trap{i}", "status": "301"}}"#))
            .collect();
        rules.push(r#"{"source": "/<*>", "target": "/index.html", "status": "200"}"#.into());
        format!("[\n{}\n]", rules.join(",\n"))
    }

    #[test]
    fn many_adversarial_lookaround_rules_share_one_budget() {
        let set = compile(&[("amplify-rules.json", adversarial(MAX_LOOKAROUND_RULES).as_bytes())]).unwrap();
        let path = format!("/{}", "a".repeat(40));
        let req = crate::RuleRequest { path: &path, ..Default::default() };
        let mut budget = crate::RegexBudget::default();
        let got = set.matcher().evaluate_within(&req, |_| false, &mut budget).map(|(a, _)| a);
        // The budget ran out long before the hundredth expression: nine
        // cost their full 111,000 steps each, the tenth got its first
        // 1,000-step try and no more, the rest were never run and count as
        // not matching, so the catch-all answers.
        assert!(budget.exhausted());
        assert_eq!((budget.tries(), budget.remaining()), (9 * 3 + 1, 0), "{budget:?}");
        assert_eq!(got, Some(crate::Action::Rewrite { path: "/index.html".into(), status: 200 }));
    }

    #[test]
    fn deploys_over_a_cap_are_refused_naming_the_rule_and_the_limit() {
        // Look-around rules: the first one past the cap is named.
        let errs = compile(&[("amplify-rules.json", adversarial(MAX_LOOKAROUND_RULES + 1).as_bytes())]).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].to_string(),
            format!(
                "amplify-rules.json:{}:1: this is look-around expression number 101; a deploy may have at most 100 (each is tried on every request): write the others without look-ahead, look-behind or backreferences",
                MAX_LOOKAROUND_RULES + 2
            )
        );
        // Password rules count among the rules.
        let redirects = "/a /b\n".repeat(MAX_RULES - 1);
        let headers = "/p\n  Basic-Auth: ann:pw\n/q\n  Basic-Auth: bob:pw\n";
        let errs = compile(&[("_redirects", redirects.as_bytes()), ("_headers", headers.as_bytes())]).unwrap_err();
        assert!(
            errs.iter().any(|e| e.message
                == "the deploy has 250001 rules (redirects, header and password rules together); the limit is 250000"),
            "{errs:?}"
        );
        // Password users: the rule that goes past the cap is named.
        let users = |prefix: &str| (0..60).map(|i| format!(" {prefix}{i}:pw")).collect::<String>();
        let text = format!("/a/*\n  Basic-Auth:{}\n/b/*\n  Basic-Auth:{}\n", users("u"), users("v"));
        let errs = compile(&[("_headers", text.as_bytes())]).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0]
                .to_string()
                .starts_with("_headers:3:1: the deploy's password rules list 120 users so far; the limit is 100"),
            "{}",
            errs[0]
        );
        // And one rule may list at most MAX_USERS_PER_RULE.
        let text = format!("/a/*\n  Basic-Auth:{}{}\n", users("u"), users("v"));
        let errs = compile(&[("_headers", text.as_bytes())]).unwrap_err();
        assert!(errs[0].to_string().starts_with("_headers:1:1: Basic-Auth: at most 100 users"), "{}", errs[0]);
    }

    proptest! {
        /// Whatever the bytes, every parser answers rules or errors (never
        /// panics), and whatever it accepts compiles into a matcher.
        #[test]
        fn every_parser_takes_any_input(pick in 0usize..RULE_FILES.len(), text in ".{0,300}") {
            let name = RULE_FILES[pick];
            if let Ok(set) = compile(&[(name, text.as_bytes())]) {
                let m = set.matcher();
                let _ = m.evaluate(&crate::RuleRequest { path: "/a/b", ..Default::default() }, |_| false);
                let _ = m.headers_for("/a/b");
            }
        }

        /// Lines shaped like rules: valid ones compile, and each error names
        /// a line of the file.
        #[test]
        fn redirect_lines_errors_point_into_the_file(
            lines in proptest::collection::vec("(/[a-z:*]{0,6}){1,3} (/[a-z:]{0,6}|https://x\\.io/[a-z]{0,3}) ?(200|301|302|404|999|abc)?!?", 1..20)
        ) {
            let text = lines.join("\n");
            if let Err(errs) = compile(&[("_redirects", text.as_bytes())]) {
                for e in errs {
                    prop_assert!(e.line >= 1 && e.line as usize <= lines.len(), "{e}");
                }
            }
        }
    }
}

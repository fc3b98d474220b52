//! Netlify's rule files, as Netlify documents them: `_redirects` (one rule
//! per line), `_headers` (a path line, then indented `Name: value` lines), and
//! the `[[redirects]]` / `[[headers]]` tables of `netlify.toml` — read as
//! Netlify's own parsers (`@netlify/redirect-parser`, `@netlify/headers-parser`)
//! read them, which `tests/netlify_differential.rs` checks rule for rule;
//! where chanto differs on purpose, that test's allow-list says why.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Source;
use crate::pattern::{MAX_PATTERN_BYTES, MAX_SEGMENTS, PathPattern};
use crate::sources::{Parsed, RawRedirect, line_col};

/// Most whitespace-separated fields on a `_redirects` line.
const MAX_FIELDS: usize = 64;

/// `_redirects`: `from [query=:x ...] [to] [status[!]] [Country=a,b] [Language=x]`,
/// read the way Netlify's own parser (`@netlify/redirect-parser`) reads it.
pub(crate) fn parse_redirects(file: &str, text: &str, out: &mut Parsed) {
    for (i, raw_line) in text.lines().enumerate() {
        let line = i as u32 + 1;
        let mut fields: Vec<(usize, &str)> = fields_with_columns(raw_line);
        // As on Netlify: a field that starts with '#' starts a comment.
        if let Some(comment) = fields.iter().position(|(_, f)| f.starts_with('#')) {
            fields.truncate(comment);
        }
        if fields.is_empty() {
            continue;
        }
        if fields.len() > MAX_FIELDS {
            out.error(file, line, 1, format!("the line has {} fields; a rule has at most {MAX_FIELDS}", fields.len()));
            continue;
        }
        let col = |c: usize| raw_line[..c].chars().count() as u32 + 1;
        let (from_col, from) = fields[0];
        let mut query: Vec<(String, String)> = Vec::new();
        let mut at = 1;
        let mut bad = false;
        // A status right after `from` (`/app/* 200`): a forward rule, whose
        // target is `from` itself (below). Otherwise query matches come
        // between from and to; to is the first field that is a path or a URL.
        let forward = fields.get(1).is_some_and(|(_, f)| f.starts_with(|c: char| c.is_ascii_digit()));
        let mut to = None;
        if !forward {
            while at < fields.len() && !is_target(fields[at].1) {
                match fields[at].1.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        // A repeated name: the last one counts, as on Netlify.
                        query.retain(|(name, _)| name != k);
                        query.push((k.to_owned(), v.to_owned()));
                    }
                    _ => {
                        out.error(
                            file,
                            line,
                            col(fields[at].0),
                            format!("expected a query match like id=:id or the target path, found {:?}", fields[at].1),
                        );
                        bad = true;
                        break;
                    }
                }
                at += 1;
            }
            if bad {
                continue;
            }
            let Some(&(_, target)) = fields.get(at) else {
                out.error(
                    file,
                    line,
                    col(from_col),
                    format!("the rule for {from} has no target; write `{from} /new-path 301`"),
                );
                continue;
            };
            to = Some(target.to_owned());
            at += 1;
        }
        let (mut status, mut force) = (None, false);
        if let Some(&(c, field)) = fields.get(at)
            && field.starts_with(|ch: char| ch.is_ascii_digit())
        {
            let (digits, bang) = match field.strip_suffix('!') {
                Some(d) => (d, true),
                None => (field, false),
            };
            match digits.parse::<u16>() {
                Ok(s) => {
                    status = Some(s);
                    force = bang;
                }
                Err(_) => {
                    out.error(file, line, col(c), format!("{field:?} is not a status; write e.g. 301 or 200!"));
                    continue;
                }
            }
            at += 1;
        }
        let to = match to {
            Some(to) => to,
            None => match forward_target(from, status) {
                Some(to) => to,
                None => {
                    out.error(
                        file,
                        line,
                        col(from_col),
                        format!(
                            "the rule for {from} has no target; only a rewrite of a path ending in /* may leave it out (`/app/* 200`)"
                        ),
                    );
                    continue;
                }
            },
        };
        let mut conditions = NetlifyConditions::default();
        for &(c, field) in &fields[at..] {
            let split = field.split_once('=');
            let message = match (status, split) {
                // Netlify reads the field after the target as the status.
                (None, Some(_)) => format!("conditions come after a status: write `{from} {to} 302 {field}`"),
                (None, None) => format!("{field:?} is not a status; write e.g. 301 or 200!"),
                (Some(_), None) => format!("unexpected {field:?} after the status; conditions look like Country=us,ca"),
                (Some(_), Some(_)) => String::new(),
            };
            let Some((key, values)) = split.filter(|_| message.is_empty()) else {
                out.error(file, line, col(c), message);
                bad = true;
                break;
            };
            if let Err(e) = conditions.add(key, values.split(',').map(str::to_owned).collect()) {
                out.error(file, line, col(c), e);
                bad = true;
                break;
            }
        }
        if bad || !conditions.usable(file, line, out) {
            continue;
        }
        if from_path(from).starts_with("/.netlify") {
            out.error(file, line, col(from_col), NETLIFY_PATHS);
            continue;
        }
        out.redirect(
            file,
            line,
            col(from_col),
            RawRedirect {
                from,
                regex: None,
                to: &to,
                status,
                force,
                query,
                country: conditions.country.unwrap_or_default(),
                language: conditions.language.unwrap_or_default(),
            },
        );
    }
}

const NETLIFY_PATHS: &str = "from: paths under /.netlify are Netlify's own, and Netlify refuses rules for them";

/// The path of a `from` that may be a URL (`https://host/path`).
fn from_path(from: &str) -> &str {
    match from.strip_prefix("https://").or_else(|| from.strip_prefix("http://")) {
        Some(rest) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => from,
    }
}

/// The target of a forward rule (`/app/* 200`: `/app/:splat`), which only a
/// 2xx rule whose `from` ends in `/*` may have, as on Netlify.
fn forward_target(from: &str, status: Option<u16>) -> Option<String> {
    let base = from.strip_suffix("/*")?;
    status.filter(|s| (200..300).contains(s))?;
    Some(format!("{base}/:splat"))
}

/// A rule's conditions, as Netlify's parser normalises them: `Country` and
/// `Language` (or their lower-case spellings; the last one written counts),
/// `Sign`/`signed` (signed proxy requests), anything else kept to refuse.
#[derive(Default)]
struct NetlifyConditions {
    country: Option<Vec<String>>,
    language: Option<Vec<String>>,
    signed: bool,
    /// A condition chanto cannot check (`Role`, `Cookie`, …).
    inert: Option<String>,
}

impl NetlifyConditions {
    fn add(&mut self, key: &str, values: Vec<String>) -> Result<(), String> {
        let list = || -> Result<Vec<String>, String> {
            let list: Vec<String> = values.iter().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
            if list.is_empty() {
                // Dropping it would apply the rule to everyone.
                return Err(format!("{key}= lists nothing; write e.g. {key}=us,ca or remove it"));
            }
            Ok(list)
        };
        match key {
            "Country" | "country" => self.country = Some(list()?),
            "Language" | "language" => self.language = Some(list()?),
            "Sign" | "signed" => self.signed = true,
            _ => self.inert = Some(key.to_owned()),
        }
        Ok(())
    }

    /// Whether the rule can apply; warns where chanto does less than the file asks.
    fn usable(&self, file: &str, line: u32, out: &mut Parsed) -> bool {
        if let Some(key) = &self.inert {
            // Such rules usually grant access; applying them to everyone would open it.
            let known = if matches!(key.as_str(), "Role" | "role" | "Cookie" | "cookie") {
                ""
            } else {
                " (chanto knows Country and Language)"
            };
            out.warn(
                file,
                line,
                format!("{key}= conditions are not supported by chanto{known}; this rule never applies"),
            );
            return false;
        }
        if self.signed {
            out.warn(file, line, "signed proxy requests are not made by chanto: the origin gets no signature header");
        }
        true
    }
}

fn is_target(field: &str) -> bool {
    field.starts_with('/') || field.starts_with("http://") || field.starts_with("https://")
}

/// The whitespace-separated fields of a line, with their byte columns.
fn fields_with_columns(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &line[s..]));
    }
    out
}

/// A `_headers` block: its line, path, headers and Basic-Auth users.
type Block = (u32, String, Vec<(String, String)>, Vec<crate::sources::RawUser>);

/// `_headers`: a path (a line starting with `/`), then its headers, as
/// `Name: value` lines (indented by convention; Netlify's parser does not
/// require it). A name given twice in a block gets both values, joined.
pub(crate) fn parse_headers(file: &str, text: &str, out: &mut Parsed) {
    let mut current: Option<Block> = None;
    let flush = |cur: &mut Option<Block>, out: &mut Parsed| {
        if let Some((line, path, headers, users)) = cur.take() {
            if headers.is_empty() && users.is_empty() {
                out.warn(file, line, format!("{path} lists no headers; it does nothing"));
            }
            if !headers.is_empty() {
                let headers = headers.into_iter().map(|(n, v)| (n, comma_list(&v))).collect();
                match header_source(&path) {
                    Ok(source) => out.header_rule_for(file, line, source, headers),
                    Err(e) => out.error(file, line, 1, e),
                }
            }
            if !users.is_empty() {
                if needs_regex(&path) {
                    out.error(file, line, 1, AUTH_PATHS);
                } else {
                    out.auth_rule(file, line, &path, users);
                }
            }
        }
    };
    for (i, raw_line) in text.lines().enumerate() {
        let line = i as u32 + 1;
        let trimmed = raw_line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = raw_line.len() - raw_line.trim_start().len();
        let col = raw_line[..indent].chars().count() as u32 + 1;
        if trimmed.starts_with('/') {
            flush(&mut current, out);
            current = Some((line, trimmed.to_owned(), Vec::new(), Vec::new()));
            continue;
        }
        let Some((name, value)) = trimmed.split_once(':') else {
            // Netlify's parser skips such a line, so the headers after it
            // land on the path before it: chanto refuses it instead.
            out.error(
                file,
                line,
                col,
                format!("expected a path starting with '/' or a header `Name: value`, found {trimmed:?}"),
            );
            continue;
        };
        let Some((_, _, headers, users)) = current.as_mut() else {
            out.error(file, line, col, "a header before any path; start with a path line such as /*");
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            out.error(file, line, col, format!("{trimmed:?} has no header name before ':'"));
            continue;
        }
        if value.is_empty() {
            let at = raw_line.find(':').map_or(col, |c| raw_line[..c].chars().count() as u32 + 2);
            out.error(file, line, at, format!("{name} has no value; write `{name}: value` or remove the line"));
            continue;
        }
        if name.eq_ignore_ascii_case("basic-auth") {
            // `user:password` pairs separated by spaces; the passwords are
            // hashed before the deploy's manifest is written.
            for pair in value.split_whitespace() {
                // Where the pair starts on the line, for errors about its secret.
                let at = pair.as_ptr() as usize - raw_line.as_ptr() as usize;
                let column = raw_line[..at].chars().count() as u32 + 1;
                match pair.split_once(':') {
                    Some((u, p)) if !u.is_empty() && !p.is_empty() => users.push(crate::sources::RawUser {
                        user: u.to_owned(),
                        secret: p.to_owned(),
                        line,
                        column: column + u.chars().count() as u32 + 1,
                    }),
                    _ => out.error(file, line, column, "Basic-Auth takes `user:password` pairs separated by spaces"),
                }
            }
            continue;
        }
        // Netlify joins repeated names into one comma-separated value.
        match headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(value);
            }
            None => headers.push((name.to_owned(), value.to_owned())),
        }
    }
    flush(&mut current, out);
}

const AUTH_PATHS: &str = "Basic-Auth on a path with '*' before its end is not supported (a password rule must be a \
                          plain path pattern); protect a prefix such as /private/* instead";

/// A header value as Netlify normalises a text value: the space around each
/// comma made one space after it (`a ,b` → `a, b`), which also joins the
/// lines of a multi-line TOML string written one value per line.
fn comma_list(value: &str) -> String {
    let parts: Vec<&str> = value.split(',').collect();
    let last = parts.len() - 1;
    let mut out = String::with_capacity(value.len());
    for (i, part) in parts.iter().enumerate() {
        let part = if i > 0 { part.trim_start() } else { part };
        let part = if i < last { part.trim_end() } else { part };
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(part);
    }
    out
}

/// Whether a headers path has a `*` that is not its whole last segment
/// (`/templates/*/index.html`, `/*.css`), which a path pattern cannot say.
fn needs_regex(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    segments.iter().enumerate().any(|(i, s)| s.contains('*') && (*s != "*" || i + 1 != segments.len()))
}

/// What a headers path matches. As in Netlify's headers parser, a `*`
/// segment matches any number of segments (also none) and a `*` inside a
/// segment any text, `/` included (`/*.css` covers `/a/b.css`); `:name`
/// is one segment. Unlike its expression, a `*` segment never runs into the
/// segment before it (`/a/*` does not cover `/ab`), and paths are
/// case-sensitive, as every other chanto path.
fn header_source(path: &str) -> Result<Source, String> {
    if !needs_regex(path) {
        return PathPattern::parse(path).map(Source::Path);
    }
    if path.len() > MAX_PATTERN_BYTES {
        return Err(format!("the path is {} bytes; the limit is {MAX_PATTERN_BYTES}", path.len()));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!("{path:?} holds a control character or backslash"));
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() > MAX_SEGMENTS {
        return Err(format!("the path has {} segments; the limit is {MAX_SEGMENTS}", segments.len()));
    }
    let mut re = String::from("^");
    for seg in segments {
        if seg == "*" {
            re.push_str("(?:/.*)?");
        } else if seg.starts_with(':') {
            re.push_str("/[^/]+");
        } else if seg == "." || seg == ".." {
            return Err(format!("in {path:?}, '.' and '..' segments are not allowed"));
        } else {
            re.push('/');
            let parts: Vec<String> = seg.split('*').map(regex::escape).collect();
            re.push_str(&parts.join(".*"));
        }
    }
    re.push_str("/?$");
    Ok(Source::Regex(re))
}

#[derive(Deserialize)]
struct NetlifyToml {
    #[serde(default)]
    redirects: Vec<toml::Spanned<TomlRedirect>>,
    #[serde(default)]
    headers: Vec<toml::Spanned<TomlHeaders>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlRedirect {
    from: String,
    /// Left out: a forward rule (`from = "/app/*"`, `status = 200`).
    to: Option<String>,
    status: Option<u16>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    conditions: BTreeMap<String, OneOrMany>,
    /// Headers sent to a proxied origin.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Signed proxy requests.
    signed: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlHeaders {
    #[serde(rename = "for")]
    path: String,
    /// Left out or empty: the table does nothing (as on Netlify).
    #[serde(default)]
    values: BTreeMap<String, toml::Spanned<OneOrMany>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `netlify.toml`: its `[[redirects]]` and `[[headers]]`; other tables (build
/// settings, plugins) are not rules and are ignored.
pub(crate) fn parse_toml(file: &str, text: &str, out: &mut Parsed) {
    let doc: NetlifyToml = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => return toml_error(file, text, &e, out),
    };
    for r in doc.redirects {
        let (line, col) = line_col(text, r.span().start);
        let r = r.into_inner();
        if !r.headers.is_empty() {
            out.warn(file, line, "headers apply to proxied requests; chanto does not send them to the origin");
        }
        let mut conditions = NetlifyConditions { signed: r.signed.is_some(), ..NetlifyConditions::default() };
        let mut bad = false;
        for (key, values) in r.conditions {
            let values = match values {
                OneOrMany::One(s) => s.split(',').map(str::to_owned).collect(),
                OneOrMany::Many(list) => list,
            };
            if let Err(e) = conditions.add(&key, values) {
                out.error(file, line, col, format!("conditions: {e}"));
                bad = true;
            }
        }
        if bad || !conditions.usable(file, line, out) {
            continue;
        }
        if from_path(&r.from).starts_with("/.netlify") {
            out.error(file, line, col, NETLIFY_PATHS);
            continue;
        }
        let Some(to) = r.to.or_else(|| forward_target(&r.from, r.status)) else {
            out.error(
                file,
                line,
                col,
                "to: missing; only a rewrite (status 200) of a path ending in /* may leave it out",
            );
            continue;
        };
        let raw = RawRedirect {
            from: &r.from,
            regex: None,
            to: &to,
            status: r.status,
            force: r.force,
            query: r.query.into_iter().collect(),
            country: conditions.country.unwrap_or_default(),
            language: conditions.language.unwrap_or_default(),
        };
        out.redirect(file, line, col, raw);
    }
    for h in doc.headers {
        let (line, _) = line_col(text, h.span().start);
        let h = h.into_inner();
        let path = h.path.trim();
        let mut headers = Vec::new();
        let mut users = Vec::new();
        for (name, value) in h.values {
            let (value_line, value_col) = line_col(text, value.span().start);
            let name = name.trim().to_owned();
            // As Netlify: a text is one comma-separated list; the items of
            // an array are joined as they are.
            let value = match value.into_inner() {
                OneOrMany::One(s) => comma_list(s.trim()),
                OneOrMany::Many(list) => list.iter().map(|v| v.trim()).collect::<Vec<_>>().join(", "),
            };
            if name.eq_ignore_ascii_case("basic-auth") {
                for pair in value.split_whitespace() {
                    match pair.split_once(':') {
                        Some((u, p)) if !u.is_empty() && !p.is_empty() => users.push(crate::sources::RawUser {
                            user: u.to_owned(),
                            secret: p.to_owned(),
                            line: value_line,
                            column: value_col,
                        }),
                        _ => out.error(
                            file,
                            value_line,
                            value_col,
                            "Basic-Auth takes `user:password` pairs separated by spaces",
                        ),
                    }
                }
                continue;
            }
            headers.push((name, value));
        }
        if !headers.is_empty() {
            match header_source(path) {
                Ok(source) => out.header_rule_for(file, line, source, headers),
                Err(e) => out.error(file, line, 1, e),
            }
        }
        if !users.is_empty() {
            if needs_regex(path) {
                out.error(file, line, 1, AUTH_PATHS);
            } else {
                out.auth_rule(file, line, path, users);
            }
        }
    }
}

pub(crate) fn toml_error(file: &str, text: &str, e: &toml::de::Error, out: &mut Parsed) {
    let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
    let key = e.span().and_then(|s| crate::words::toml_key_at(text, s.start));
    out.error(file, line, col, crate::words::plain(e.message(), key));
}

#[cfg(test)]
mod tests {
    use crate::{Action, RuleRequest, compile};

    fn eval(files: &[(&str, &str)], path: &str, query: Option<&str>) -> Option<Action> {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
        let set = compile(&files).unwrap();
        set.matcher()
            .evaluate(&RuleRequest { host: "example.com", path, query, ..Default::default() }, |_| false)
            .map(|(a, _)| a)
    }

    fn redirect(status: u16, location: &str) -> Option<Action> {
        Some(Action::Redirect { status, location: location.into() })
    }

    /// Examples from Netlify's "Redirects and rewrites" documentation.
    #[test]
    fn documented_redirects_examples() {
        let file = "\
# Redirects from what the browser requests to what we serve
/home              /
/blog/my-post.php  /blog/my-post
/news              /blog
/cuties            https://www.petsofnetlify.com
/store id=:id  /blog/:id  301
/articles id=:id tag=:tag /posts/:tag/:id 301
/news/:month/:date/:year/:slug  /blog/:year/:month/:date/:slug
/old/*  /new/:splat  302!
/*    /index.html   200
";
        let f = [("_redirects", file)];
        assert_eq!(eval(&f, "/home", None), redirect(301, "/"));
        assert_eq!(eval(&f, "/cuties", None), redirect(301, "https://www.petsofnetlify.com"));
        assert_eq!(eval(&f, "/store", Some("id=42")), redirect(301, "/blog/42"));
        assert_eq!(eval(&f, "/articles", Some("tag=rust&id=9")), redirect(301, "/posts/rust/9"));
        assert_eq!(eval(&f, "/news/02/12/2004/slug", None), redirect(301, "/blog/2004/02/12/slug"));
        assert_eq!(eval(&f, "/old/a/b", None), redirect(302, "/new/a/b"));
        assert_eq!(eval(&f, "/app/route", None), Some(Action::Rewrite { path: "/index.html".into(), status: 200 }));
    }

    #[test]
    fn redirect_errors_name_line_and_column() {
        let files: [(&str, &[u8]); 1] =
            [("_redirects", b"/ok /fine\n\n  /a /b 999\n/c\n/d /e 301 Planet=mars\n/f nonsense /g\n")];
        let errs = compile(&files).unwrap_err();
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(shown[0].starts_with("_redirects:3:3: status 999"), "{shown:?}");
        assert!(shown[1].starts_with("_redirects:4:1: the rule for /c has no target"), "{shown:?}");
        assert!(shown[2].starts_with("_redirects:6:4: expected a query match"), "{shown:?}");
        assert_eq!(errs.len(), 3);
        // A condition chanto cannot check is a warning, and its rule never applies.
        let f = [("_redirects", "/d /e 301 Planet=mars\n/d /f 302\n")];
        assert_eq!(eval(&f, "/d", None), redirect(302, "/f"));
        let set = compile(&[("_redirects", f[0].1.as_bytes())]).unwrap();
        assert_eq!(
            set.warnings[0].to_string(),
            "_redirects:1: warning: Planet= conditions are not supported by chanto (chanto knows Country and Language); this rule never applies"
        );
    }

    #[test]
    fn role_rules_warn_and_never_apply() {
        let f = [("_redirects", "/admin/*  /admin/:splat  200!  Role=admin\n/admin/*  /login  302!\n")];
        assert_eq!(eval(&f, "/admin/x", None), redirect(302, "/login"));
        let files: Vec<(&str, &[u8])> = f.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
        let set = compile(&files).unwrap();
        assert_eq!(set.warnings.len(), 1);
        assert!(set.warnings[0].to_string().starts_with("_redirects:1: warning: Role= conditions"));
    }

    #[test]
    fn headers_file() {
        let text = "\
# security headers
/*
  X-Frame-Options: DENY
  X-XSS-Protection: 1; mode=block
  Link: </a.css>; rel=preload
  Link: </b.js>; rel=preload
/templates/*
  Cache-Control: no-cache
";
        let set = compile(&[("_headers", text.as_bytes())]).unwrap();
        let m = set.matcher();
        assert_eq!(
            m.headers_for("/templates/x.html"),
            vec![
                ("X-Frame-Options", "DENY"),
                ("X-XSS-Protection", "1; mode=block"),
                ("Link", "</a.css>; rel=preload, </b.js>; rel=preload"),
                ("Cache-Control", "no-cache"),
            ]
        );
        for (bad, want) in [
            ("  X-A: 1\n", "_headers:1:3: a header before any path"),
            ("/*\n  nonsense\n", "_headers:2:3: expected a path starting with '/' or a header `Name: value`"),
            ("/*\n  Basic-Auth: nopassword\n", "_headers:2:15: Basic-Auth takes `user:password` pairs"),
            ("/*\n  Content-Length: 5\n", "_headers:1:1: Content-Length is set by chanto"),
            ("/*\n  Bad Name: 5\n", "_headers:1:1: \"Bad Name\" is not a valid header name"),
            ("nopath\n  X: 1\n", "_headers:1:1: expected a path starting with '/' or a header"),
            ("/*\n  X-Empty:\n", "_headers:2:11: X-Empty has no value"),
            ("/*\n  : v\n", "_headers:2:3: \": v\" has no header name"),
        ] {
            let errs = compile(&[("_headers", bad.as_bytes())]).unwrap_err();
            assert!(errs[0].to_string().starts_with(want), "{bad:?}: {}", errs[0]);
        }
    }

    #[test]
    fn netlify_toml() {
        let text = r#"
[build]
  command = "make"

[[redirects]]
  from = "/old"
  to = "/new"

[[redirects]]
  from = "/search"
  to = "/find/:q"
  status = 302
  force = true
  query = {q = ":q"}
  conditions = {Country = ["US", "ca"], Language = ["en"]}

[[headers]]
  for = "/*"
  [headers.values]
    X-Frame-Options = "DENY"
    Cache-Control = ["public", "max-age=60"]
"#;
        let f = [("netlify.toml", text)];
        assert_eq!(eval(&f, "/old", None), redirect(301, "/new"));
        let files: Vec<(&str, &[u8])> = f.iter().map(|(n, t)| (*n, t.as_bytes())).collect();
        let set = compile(&files).unwrap();
        assert_eq!(set.redirects[1].origin.line, 9);
        assert_eq!(set.redirects[1].conditions.country, vec!["us", "ca"]);
        assert_eq!(
            set.matcher().headers_for("/x"),
            vec![("Cache-Control", "public, max-age=60"), ("X-Frame-Options", "DENY")]
        );

        let errs =
            compile(&[("netlify.toml", b"[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nstatuss = 301\n")]).unwrap_err();
        assert_eq!((errs[0].line, errs[0].column), (4, 1), "{}", errs[0]);
        assert!(errs[0].message.contains("statuss"), "{}", errs[0]);
        let errs = compile(&[("netlify.toml", b"[[redirects]\n")]).unwrap_err();
        assert_eq!(errs[0].line, 1, "{}", errs[0]);
    }

    #[test]
    fn a_headers_hash_with_a_hostile_memory_cost_is_refused_at_its_line() {
        // 4 GiB per sign-in attempt, chosen by whoever wrote the file.
        let text = "/admin/*\n  X-Robots-Tag: noindex\n  Basic-Auth: ann:pw eve:$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q\n";
        let errs = compile(&[("_headers", text.as_bytes())]).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let shown = errs[0].to_string();
        assert!(
            shown.starts_with("_headers:3:26: the password hash of eve: its parameters are m=4194304,t=2,p=1"),
            "{shown}"
        );
        assert!(shown.contains("$argon2id$v=19$m=19456,t=2,p=1$<salt>$<32-byte hash>"), "{shown}");
        // Other argon2 flavours are hashes too, never taken as a password in clear.
        let text = "/a\n  Basic-Auth: eve:$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q\n";
        let errs = compile(&[("_headers", text.as_bytes())]).unwrap_err();
        assert!(errs[0].to_string().contains("its algorithm is argon2i"), "{}", errs[0]);
        // chanto's own parameters pass, stored as written.
        let good = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q";
        let set = compile(&[("_headers", format!("/a\n  Basic-Auth: ann:{good}\n").as_bytes())]).unwrap();
        assert_eq!(set.auth[0].users[0].hash.as_deref(), Some(good));
    }

    fn errors(name: &str, text: &str) -> Vec<String> {
        compile(&[(name, text.as_bytes())]).unwrap_err().iter().map(ToString::to_string).collect()
    }

    fn warnings(name: &str, text: &str) -> Vec<String> {
        compile(&[(name, text.as_bytes())]).unwrap().warnings.iter().map(ToString::to_string).collect()
    }

    /// `/app/* 200`: a rule with no target rewrites to its own path, as
    /// Netlify's parser reads it (`/app/:splat`); only 2xx rules on a splat may.
    #[test]
    fn forward_rules_target_their_own_path() {
        let rewrite = |path: &str| Some(Action::Rewrite { path: path.into(), status: 200 });
        let f = [("_redirects", "/app/*  200!\n")];
        assert_eq!(eval(&f, "/app/a/b", None), rewrite("/app/a/b"));
        let f = [("netlify.toml", "[[redirects]]\nfrom = \"/app/*\"\nstatus = 200\n")];
        assert_eq!(eval(&f, "/app/x", None), rewrite("/app/x"));
        assert!(errors("_redirects", "/a 200\n")[0].starts_with("_redirects:1:1: the rule for /a has no target"));
        assert!(errors("_redirects", "/a/* 301\n")[0].starts_with("_redirects:1:1: the rule for /a/* has no target"));
        let toml = errors("netlify.toml", "[[redirects]]\nfrom = \"/a\"\nstatus = 301\n");
        assert!(toml[0].starts_with("netlify.toml:1:1: to: missing"), "{toml:?}");
    }

    /// As on Netlify: a field starting with `#` starts a comment, whatever
    /// space comes before it; a `#` inside a field is part of it.
    #[test]
    fn comments_start_at_a_field() {
        let f = [("_redirects", "/a /b 302\t#tab comment\n/c#d /e # note\n")];
        assert_eq!(eval(&f, "/a", None), redirect(302, "/b"));
        assert_eq!(eval(&f, "/c#d", None), redirect(301, "/e"));
    }

    /// Netlify reads the field after the target as the status, so
    /// conditions without one are an error there, and here.
    #[test]
    fn conditions_need_a_status() {
        let shown = errors("_redirects", "/a /b Country=us\n/c /d nope\n");
        assert_eq!(shown[0], "_redirects:1:7: conditions come after a status: write `/a /b 302 Country=us`");
        assert!(shown[1].starts_with("_redirects:2:7: \"nope\" is not a status"), "{shown:?}");
    }

    /// Conditions as Netlify normalises them: either spelling, the last one
    /// written counts, an empty code is dropped but an empty list is an
    /// error (dropping the condition would apply the rule to everyone), and
    /// conditions chanto cannot check are a warning and the rule never applies.
    #[test]
    fn conditions_as_netlify_reads_them() {
        let set = compile(&[("_redirects", b"/a /b 302 country=US Language=fr Country=ca,,nz\n")]).unwrap();
        assert_eq!(set.redirects[0].conditions.country, vec!["ca", "nz"]);
        assert_eq!(set.redirects[0].conditions.language, vec!["fr"]);
        let shown = errors("_redirects", "/a /b 302 Country=\n");
        assert_eq!(shown[0], "_redirects:1:11: Country= lists nothing; write e.g. Country=us,ca or remove it");
        let shown = errors("netlify.toml", "[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nconditions = {Language = []}\n");
        assert!(shown[0].starts_with("netlify.toml:1:1: conditions: Language= lists nothing"), "{shown:?}");
        // TOML conditions may be one comma-separated text, as on Netlify.
        let toml = "[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nconditions = {Country = \"us, ca\"}\n";
        let set = compile(&[("netlify.toml", toml.as_bytes())]).unwrap();
        assert_eq!(set.redirects[0].conditions.country, vec!["us", "ca"]);
        // Cookie (and any other) conditions: a warning naming the line, and no rule.
        let shown = warnings("_redirects", "/a /b 302 Cookie=ab_test\n/c /d 302 COUNTRY=us\n");
        assert_eq!(
            shown[0],
            "_redirects:1: warning: Cookie= conditions are not supported by chanto; this rule never applies"
        );
        assert!(shown[1].starts_with("_redirects:2: warning: COUNTRY= conditions are not supported"), "{shown:?}");
        let set = compile(&[("_redirects", b"/a /b 302 Cookie=ab_test\n")]).unwrap();
        assert!(set.redirects.is_empty());
    }

    /// `Sign=` (or `signed` in netlify.toml): the rule applies, with a
    /// warning that the origin gets no signature.
    #[test]
    fn signed_proxies_warn() {
        let f = [("_redirects", "/api/* https://api.example.com/:splat 200 Sign=API_SIGNATURE_TOKEN\n")];
        assert_eq!(eval(&f, "/api/x", None), Some(Action::Proxy { url: "https://api.example.com/x".into() }));
        let shown = warnings("_redirects", f[0].1);
        assert!(shown.iter().any(|w| w.starts_with("_redirects:1: warning: signed proxy requests")), "{shown:?}");
        let toml = "[[redirects]]\nfrom = \"/s\"\nto = \"https://a.example\"\nstatus = 200\nsigned = \"T\"\n";
        assert!(warnings("netlify.toml", toml).iter().any(|w| w.contains("signed proxy requests")));
    }

    /// A query name given twice: the last one counts, as on Netlify.
    #[test]
    fn repeated_query_names_keep_the_last() {
        let set = compile(&[("_redirects", b"/a id=:x id=:y /b/:y\n")]).unwrap();
        assert_eq!(set.redirects[0].query, vec![("id".to_owned(), Some("y".to_owned()))]);
    }

    /// Netlify refuses rules for its own `/.netlify` paths.
    #[test]
    fn netlify_paths_are_refused() {
        let shown = errors("_redirects", "/.netlify/functions/* /api/:splat 200\nhttps://x.example/.netlify/y /z\n");
        assert!(shown[0].starts_with("_redirects:1:1: from: paths under /.netlify"), "{shown:?}");
        assert!(shown[1].starts_with("_redirects:2:1: from: paths under /.netlify"), "{shown:?}");
        let toml = errors("netlify.toml", "[[redirects]]\nfrom = \"/.netlify/x\"\nto = \"/y\"\n");
        assert!(toml[0].starts_with("netlify.toml:1:1: from: paths under /.netlify"), "{toml:?}");
    }

    /// A `_headers` line is a path when it starts with `/`, a header when it
    /// holds `:`, indented or not, as Netlify's parser reads it.
    #[test]
    fn headers_lines_by_content_not_indentation() {
        let set = compile(&[("_headers", b"/a\nX-A: 1\n  /b\n  X-B: 2\n")]).unwrap();
        let m = set.matcher();
        assert_eq!(m.headers_for("/a"), vec![("X-A", "1")]);
        assert_eq!(m.headers_for("/b"), vec![("X-B", "2")]);
    }

    /// Header values as Netlify normalises them: `a ,b` → `a, b`, and a
    /// multi-line TOML string (Netlify's documented multi-value form) one
    /// line; an array's items are joined as written.
    #[test]
    fn header_values_are_comma_lists() {
        let set = compile(&[("_headers", b"/*\n  Cache-Control: public,max-age=60 , immutable\n")]).unwrap();
        assert_eq!(set.headers[0].headers[0].1, "public, max-age=60, immutable");
        let toml = "[[headers]]\nfor = \" /* \"\n[headers.values]\n\" cache-control \" = '''\n  max-age=0,\n  no-cache,\n  must-revalidate'''\nX-List = [\" a \", \"b,c\"]\n";
        let set = compile(&[("netlify.toml", toml.as_bytes())]).unwrap();
        assert_eq!(
            set.matcher().headers_for("/x"),
            vec![("cache-control", "max-age=0, no-cache, must-revalidate"), ("X-List", "a, b,c")]
        );
        // A table with no values does nothing, as on Netlify.
        let set = compile(&[("netlify.toml", b"[[headers]]\nfor = \"/a\"\n")]).unwrap();
        assert!(set.headers.is_empty());
    }

    /// Basic-Auth in netlify.toml, as Netlify documents it: a password rule.
    #[test]
    fn basic_auth_in_netlify_toml() {
        let toml = "[[headers]]\nfor = \"/private/*\"\n[headers.values]\nBasic-Auth = \"ann:pw1 bob:pw2\"\nX-Robots-Tag = \"noindex\"\n";
        let set = compile(&[("netlify.toml", toml.as_bytes())]).unwrap();
        let m = set.matcher();
        let users: Vec<&str> = m.auth_for("/private/x").unwrap().iter().map(|u| u.user.as_str()).collect();
        assert_eq!(users, ["ann", "bob"]);
        assert!(m.auth_for("/public").is_none());
        assert_eq!(m.headers_for("/private/x"), vec![("X-Robots-Tag", "noindex")]);
        let shown =
            errors("netlify.toml", "[[headers]]\nfor = \"/p\"\n[headers.values]\nBasic-Auth = \"nopassword\"\n");
        assert_eq!(shown[0], "netlify.toml:4:14: Basic-Auth takes `user:password` pairs separated by spaces");
    }

    /// Netlify's headers parser has `netlify.toml` override `_headers`.
    #[test]
    fn netlify_toml_headers_override_headers_file() {
        let files: [(&str, &[u8]); 2] = [
            ("netlify.toml", b"[[headers]]\nfor = \"/*\"\n[headers.values]\nCache-Control = \"public\"\n"),
            ("_headers", b"/*\n  Cache-Control: no-cache\n  X-A: 1\n"),
        ];
        let set = compile(&files).unwrap();
        // The edge sets each in turn: the last one of a name wins.
        assert_eq!(
            set.matcher().headers_for("/x"),
            vec![("Cache-Control", "no-cache"), ("X-A", "1"), ("Cache-Control", "public")]
        );
    }

    /// `*` anywhere in a headers path, as Netlify matches it: a `*` segment
    /// is any number of segments (also none), a `*` inside a segment any
    /// text (`/` included), `:name` one segment; a `*` segment does not run
    /// into the segment before it, and paths are case-sensitive.
    #[test]
    fn headers_paths_with_inner_wildcards() {
        let text = "/templates/*/index.html\n  X-T: 1\n/*/images/*\n  X-I: 1\n/*.svg\n  X-S: 1\n/docs/:v/*.js\n  X-J: 1\n/blog*\n  X-B: 1\n";
        let set = compile(&[("_headers", text.as_bytes())]).unwrap();
        let m = set.matcher();
        let covers = |path: &str| m.headers_for(path).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        for (path, want) in [
            ("/templates/index.html", vec!["X-T"]),
            ("/templates/a/index.html", vec!["X-T"]),
            ("/templates/a/b/index.html/", vec!["X-T"]),
            ("/templates/a/other.html", vec![]),
            ("/templatesx/index.html", vec![]),
            ("/Templates/a/index.html", vec![]),
            ("/images", vec!["X-I"]),
            ("/images/a.png", vec!["X-I"]),
            ("/a/b/images/c/d.png", vec!["X-I"]),
            ("/aimages/x", vec![]),
            ("/logo.svg", vec!["X-S"]),
            ("/a/images/logo.svg", vec!["X-I", "X-S"]),
            ("/logo.svgz", vec![]),
            ("/docs/v2/app.js", vec!["X-J"]),
            ("/docs/v2/lib/app.js", vec!["X-J"]),
            ("/docs/app.js", vec![]),
            ("/blog", vec!["X-B"]),
            ("/blog-post/2024", vec!["X-B"]),
            ("/blo", vec![]),
        ] {
            assert_eq!(covers(path), want, "{path}");
        }
        // The expression is anchored and escapes what it does not mean.
        assert_eq!(set.headers[2].path, crate::Source::Regex(r"^/.*\.svg/?$".into()));
        // Such a path cannot carry a password (password rules are never expressions).
        let shown = errors("_headers", "/private/*/secret\n  Basic-Auth: ann:pw\n");
        assert!(shown[0].starts_with("_headers:1:1: Basic-Auth on a path with '*' before its end"), "{shown:?}");
    }

    /// Hostile header paths and lines still name file:line:column.
    #[test]
    fn hostile_headers_paths_fail_cleanly() {
        let long = format!("/*/{}\n  X-A: 1\n", "a*".repeat(2000));
        let shown = errors("_headers", &long);
        assert!(shown[0].starts_with("_headers:1:1: the path is 4003 bytes; the limit is 2048"), "{shown:?}");
        let deep = format!("/*{}\n  X-A: 1\n", "/a".repeat(100));
        assert!(errors("_headers", &deep)[0].starts_with("_headers:1:1: the path has 101 segments"));
        let dots = errors("_headers", "/*/../x\n  X-A: 1\n");
        assert!(dots[0].starts_with("_headers:1:1: in \"/*/../x\", '.' and '..' segments"), "{dots:?}");
        // Many wildcards in one segment: linear-time matching.
        let stars = format!("/{}\n  X-A: 1\n", "*a".repeat(600));
        let set = compile(&[("_headers", stars.as_bytes())]).unwrap();
        assert!(set.matcher().headers_for(&format!("/{}", "ab".repeat(2000))).is_empty());
        let value = errors("_headers", "/x\n  X-A: \u{1}bad\n");
        assert!(value[0].starts_with("_headers:1:1: the value of X-A must be printable ASCII"), "{value:?}");
        // A line of many fields is one error at its line.
        let wide = format!("/a{}\n", " x=:x".repeat(200_000));
        assert_eq!(errors("_redirects", &wide), ["_redirects:1:1: the line has 200001 fields; a rule has at most 64"]);
    }

    proptest::proptest! {
        /// Any headers path made of static segments, `*` segments, `*`
        /// inside segments and placeholders compiles, and covers every path
        /// made from it by filling each wildcard (with nothing, a word or
        /// several segments) and each placeholder (with a word).
        #[test]
        fn headers_paths_cover_their_own_fillings(
            segs in proptest::collection::vec(proptest::sample::select(vec!["*", "a", ":p", "b*", "*.c", "d*e"]), 0..6),
            fill in proptest::sample::select(vec!["", "x", "x/y"]),
        ) {
            let pattern = format!("/{}", segs.join("/"));
            let text = format!("{pattern}\n  X-A: 1\n");
            let set = compile(&[("_headers", text.as_bytes())]).unwrap();
            let mut path = String::new();
            for seg in &segs {
                let piece = if seg.starts_with(':') { "w".to_owned() } else { seg.replace('*', fill) };
                if !piece.is_empty() {
                    path.push('/');
                    path.push_str(&piece);
                }
            }
            let path = if path.is_empty() { "/".to_owned() } else { path };
            proptest::prop_assert_eq!(set.matcher().headers_for(&path), vec![("X-A", "1")], "{} on {}", pattern, path);
        }
    }
}

//! Netlify's rule files, as Netlify documents them: `_redirects` (one rule
//! per line), `_headers` (a path line, then indented `Name: value` lines), and
//! the `[[redirects]]` / `[[headers]]` tables of `netlify.toml`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::sources::{Parsed, RawRedirect, line_col};

/// Most whitespace-separated fields on a `_redirects` line.
const MAX_FIELDS: usize = 64;

/// `_redirects`: `from [query=:x ...] to [status[!]] [Country=a,b] [Language=x]`.
pub(crate) fn parse_redirects(file: &str, text: &str, out: &mut Parsed) {
    for (i, raw_line) in text.lines().enumerate() {
        let line = i as u32 + 1;
        let content = raw_line.split(" #").next().unwrap_or_default();
        let trimmed = content.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<(usize, &str)> = fields_with_columns(content);
        if fields.len() > MAX_FIELDS {
            out.error(file, line, 1, format!("the line has {} fields; a rule has at most {MAX_FIELDS}", fields.len()));
            continue;
        }
        let (from_col, from) = fields[0];
        let col = |c: usize| c as u32 + 1;
        // Query matches come between from and to; to is the first field
        // that is a path or a URL.
        let mut query = Vec::new();
        let mut at = 1;
        let mut bad = false;
        while at < fields.len() && !is_target(fields[at].1) {
            match fields[at].1.split_once('=') {
                Some((k, v)) if !k.is_empty() => query.push((k.to_owned(), v.to_owned())),
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
        let Some(&(_, to)) = fields.get(at) else {
            out.error(
                file,
                line,
                col(from_col),
                format!("the rule for {from} has no target; write `{from} /new-path 301`"),
            );
            continue;
        };
        at += 1;
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
        let (mut country, mut language) = (Vec::new(), Vec::new());
        let mut inert = None;
        for &(c, field) in &fields[at..] {
            let Some((key, values)) = field.split_once('=') else {
                out.error(
                    file,
                    line,
                    col(c),
                    format!("unexpected {field:?} after the status; conditions look like Country=us,ca"),
                );
                bad = true;
                break;
            };
            let values: Vec<String> = values.split(',').filter(|v| !v.is_empty()).map(str::to_owned).collect();
            match key.to_ascii_lowercase().as_str() {
                "country" => country.extend(values),
                "language" => language.extend(values),
                "role" | "cookie" => inert = Some(key.to_owned()),
                _ => {
                    out.error(
                        file,
                        line,
                        col(c),
                        format!("unknown condition {key:?}; chanto knows Country and Language"),
                    );
                    bad = true;
                    break;
                }
            }
        }
        if bad {
            continue;
        }
        if let Some(key) = inert {
            // Such rules usually grant access; applying them to everyone would open it.
            out.warn(file, line, format!("{key}= conditions are not supported by chanto; this rule never applies"));
            continue;
        }
        out.redirect(
            file,
            line,
            col(from_col),
            RawRedirect { from, regex: None, to, status, force, query, country, language },
        );
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

/// `_headers`: a path on a line of its own, then its headers, indented.
pub(crate) fn parse_headers(file: &str, text: &str, out: &mut Parsed) {
    let mut current: Option<Block> = None;
    let flush = |cur: &mut Option<Block>, out: &mut Parsed| {
        if let Some((line, path, headers, users)) = cur.take() {
            if headers.is_empty() && users.is_empty() {
                out.warn(file, line, format!("{path} lists no headers; it does nothing"));
            }
            if !headers.is_empty() {
                out.header_rule(file, line, &path, headers);
            }
            if !users.is_empty() {
                out.auth_rule(file, line, &path, users);
            }
        }
    };
    for (i, raw_line) in text.lines().enumerate() {
        let line = i as u32 + 1;
        let trimmed = raw_line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !raw_line.starts_with(char::is_whitespace) {
            flush(&mut current, out);
            current = Some((line, trimmed.to_owned(), Vec::new(), Vec::new()));
            continue;
        }
        let Some((_, _, headers, users)) = current.as_mut() else {
            out.error(file, line, 1, "a header before any path; start with a path line such as /*");
            continue;
        };
        let Some((name, value)) = trimmed.split_once(':') else {
            let col = raw_line.len() - raw_line.trim_start().len() + 1;
            out.error(file, line, col as u32, format!("expected `Name: value`, found {trimmed:?}"));
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
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
    to: String,
    status: Option<u16>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    conditions: BTreeMap<String, Vec<String>>,
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
    values: BTreeMap<String, OneOrMany>,
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
        if !r.headers.is_empty() || r.signed.is_some() {
            out.warn(file, line, "headers and signed apply to proxied requests, which this chanto does not make");
        }
        let (mut country, mut language) = (Vec::new(), Vec::new());
        let mut inert = None;
        for (key, values) in r.conditions {
            match key.to_ascii_lowercase().as_str() {
                "country" => country.extend(values),
                "language" => language.extend(values),
                _ => inert = Some(key),
            }
        }
        if let Some(key) = inert {
            out.warn(file, line, format!("{key} conditions are not supported by chanto; this rule never applies"));
            continue;
        }
        let raw = RawRedirect {
            from: &r.from,
            regex: None,
            to: &r.to,
            status: r.status,
            force: r.force,
            query: r.query.into_iter().collect(),
            country,
            language,
        };
        out.redirect(file, line, col, raw);
    }
    for h in doc.headers {
        let (line, _) = line_col(text, h.span().start);
        let h = h.into_inner();
        if h.values.keys().any(|k| k.eq_ignore_ascii_case("basic-auth")) {
            out.error(
                file,
                line,
                1,
                "Basic-Auth headers are not supported yet; protect the site with `chanto access` instead",
            );
            continue;
        }
        let headers = h
            .values
            .into_iter()
            .map(|(k, v)| match v {
                OneOrMany::One(s) => (k, s),
                OneOrMany::Many(list) => (k, list.join(", ")),
            })
            .collect();
        out.header_rule(file, line, &h.path, headers);
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
        assert!(shown[2].starts_with("_redirects:5:11: unknown condition"), "{shown:?}");
        assert!(shown[3].starts_with("_redirects:6:4: expected a query match"), "{shown:?}");
        assert_eq!(errs.len(), 4);
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
            ("  X-A: 1\n", "_headers:1:1: a header before any path"),
            ("/*\n  nonsense\n", "_headers:2:3: expected `Name: value`"),
            ("/*\n  Basic-Auth: nopassword\n", "_headers:2:15: Basic-Auth takes `user:password` pairs"),
            ("/*\n  Content-Length: 5\n", "_headers:1:1: Content-Length is set by chanto"),
            ("/*\n  Bad Name: 5\n", "_headers:1:1: \"Bad Name\" is not a valid header name"),
            ("nopath\n  X: 1\n", "_headers:1:1: \"nopath\" does not start with '/'"),
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
}

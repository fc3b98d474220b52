//! `chanto.toml`: chanto's own rule file.
//!
//! ```toml
//! profile = "netlify"          # whose defaults to follow: chanto, netlify, amplify, firebase
//! clean_urls = true            # /about serves about.html; /about.html redirects to /about
//! trailing_slash = false       # /docs/ redirects to /docs, which serves docs/index.html
//!
//! [[redirects]]
//! from = "/blog/:year/*"      # or "https://old.example.com/*" for one host
//! to = "/news/:year/:splat"
//! status = 301                # 301 (default), 302, 303, 307, 308, 200, 404, 410
//! force = false               # true: apply even where a file exists
//! query = { id = ":id" }      # required query parameters, bound to placeholders
//! conditions = { country = ["us", "ca"], language = ["en"] }
//!
//! [[access]]                  # basic auth for some paths (whole sites: `chanto access`)
//! for = "/admin/*"
//! users = { ann = "$argon2id$v=19$…" }   # a hash, or a password (hashed at deploy)
//!
//! [[headers]]
//! for = "/assets/*"
//! values = { Cache-Control = "public, max-age=31536000, immutable" }
//!
//! [serve]                     # how each edge node serves the site under load
//! max_concurrency = 200       # requests at once per node; above: 503 + the sorry page
//! sorry_page = "/busy.html"   # default: /sorry.html if the deploy has it
//! ```
//!
//! Unknown keys are errors, so a typo never silently disables a rule.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::sources::{Parsed, RawRedirect, line_col};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChantoToml {
    /// The build's settings (read by chanto-build): a project's one
    /// chanto.toml holds both, and the deploy carries it from the root.
    #[serde(default, rename = "build")]
    _build: Option<toml::Value>,
    profile: Option<toml::Spanned<String>>,
    clean_urls: Option<toml::Spanned<bool>>,
    trailing_slash: Option<toml::Spanned<bool>>,
    #[serde(default)]
    redirects: Vec<toml::Spanned<Redirect>>,
    #[serde(default)]
    headers: Vec<toml::Spanned<Headers>>,
    #[serde(default)]
    access: Vec<toml::Spanned<Access>>,
    serve: Option<toml::Spanned<Serve>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Serve {
    max_concurrency: Option<i64>,
    sorry_page: Option<String>,
}

/// The most a site may set `max_concurrency` to.
const MAX_CONCURRENCY: i64 = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Access {
    #[serde(rename = "for")]
    path: String,
    /// user → password, or an argon2id PHC hash (`$argon2id$…`, e.g. from the
    /// `argon2` command), so no clear password need sit in the repository.
    users: BTreeMap<String, toml::Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Redirect {
    from: String,
    to: String,
    status: Option<u16>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    conditions: Conditions,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Conditions {
    #[serde(default)]
    country: Vec<String>,
    #[serde(default)]
    language: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Headers {
    #[serde(rename = "for")]
    path: String,
    values: BTreeMap<String, String>,
}

pub(crate) fn parse(file: &str, text: &str, out: &mut Parsed) {
    let doc: ChantoToml = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => return crate::netlify::toml_error(file, text, &e, out),
    };
    let origin = |at: usize| crate::Origin { file: file.to_owned(), line: line_col(text, at).0 };
    if let Some(p) = doc.profile {
        let (line, col) = line_col(text, p.span().start);
        match p.get_ref().parse::<crate::Profile>() {
            Ok(profile) => out.profile = Some((profile, origin(p.span().start))),
            Err(e) => out.error(file, line, col, format!("profile: {e}")),
        }
    }
    out.clean_urls = doc.clean_urls.map(|v| (*v.get_ref(), origin(v.span().start)));
    out.trailing_slash = doc.trailing_slash.map(|v| (*v.get_ref(), origin(v.span().start)));
    for r in doc.redirects {
        let (line, col) = line_col(text, r.span().start);
        let r = r.into_inner();
        let raw = RawRedirect {
            from: &r.from,
            regex: None,
            to: &r.to,
            status: r.status,
            force: r.force,
            query: r.query.into_iter().collect(),
            country: r.conditions.country,
            language: r.conditions.language,
        };
        out.redirect(file, line, col, raw);
    }
    for h in doc.headers {
        let (line, _) = line_col(text, h.span().start);
        let h = h.into_inner();
        out.header_rule(file, line, &h.path, h.values.into_iter().collect());
    }
    if let Some(serve) = doc.serve {
        let (line, col) = line_col(text, serve.span().start);
        let serve = serve.into_inner();
        let mut settings = crate::ServeSettings::default();
        match serve.max_concurrency {
            Some(n) if !(1..=MAX_CONCURRENCY).contains(&n) => out.error(
                file,
                line,
                col,
                format!("serve.max_concurrency {n} is out of range; give 1 to {MAX_CONCURRENCY} requests at once per edge node, or leave it out for no cap"),
            ),
            Some(n) => settings.max_concurrency = Some(n as u32),
            None => {}
        }
        if let Some(page) = serve.sorry_page {
            let ok = page.starts_with('/')
                && page.len() <= 1024
                && !page.ends_with('/')
                && !page.contains(['?', '#', '%', '\\'])
                && !page.chars().any(char::is_control)
                && !page[1..].split('/').any(|s| s.is_empty() || s == ".." || s == ".");
            if ok {
                settings.sorry_page = Some(page);
            } else {
                out.error(
                    file,
                    line,
                    col,
                    format!("serve.sorry_page {page:?} is not a file of the deploy; give its path from the site's root, e.g. \"/busy.html\""),
                );
            }
        }
        out.serve = Some(settings);
    }
    for a in doc.access {
        let (line, _) = line_col(text, a.span().start);
        let a = a.into_inner();
        if a.users.is_empty() {
            out.error(file, line, 1, "access: list at least one user, like users = { ann = \"…\" }");
            continue;
        }
        let users = a
            .users
            .into_iter()
            .map(|(user, secret)| {
                // The span covers the quoted string: the secret starts after its quote.
                let (line, column) = line_col(text, secret.span().start + 1);
                crate::sources::RawUser { user, secret: secret.into_inner(), line, column }
            })
            .collect();
        out.auth_rule(file, line, &a.path, users);
    }
}

#[cfg(test)]
mod tests {
    use crate::{Action, RuleRequest, compile};

    #[test]
    fn serve_settings_and_their_errors() {
        let set = compile(&[("chanto.toml", b"[serve]\nmax_concurrency = 50\nsorry_page = \"/busy.html\"\n")]).unwrap();
        assert_eq!(set.serve.max_concurrency, Some(50));
        assert_eq!(set.serve.sorry_page.as_deref(), Some("/busy.html"));
        assert!(!set.is_empty(), "serve settings alone are kept with the deploy");
        let json = serde_json::to_string(&set).unwrap();
        let back: crate::RuleSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.serve, set.serve);
        for (text, want) in [
            ("[serve]\nmax_concurrency = 0\n", "chanto.toml:1:1: serve.max_concurrency 0 is out of range"),
            ("[serve]\nmax_concurrency = -5\n", "chanto.toml:1:1: serve.max_concurrency -5 is out of range"),
            ("[serve]\nmax_concurrency = 99999999999\n", "chanto.toml:1:1: serve.max_concurrency 99999999999"),
            ("[serve]\nmax_concurrency = \"10\"\n", "chanto.toml:2:"),
            ("[serve]\nsorry_page = \"busy.html\"\n", "chanto.toml:1:1: serve.sorry_page \"busy.html\" is not a file"),
            ("[serve]\nsorry_page = \"/../x.html\"\n", "chanto.toml:1:1: serve.sorry_page"),
            ("[serve]\nsorry_page = \"/a//b\"\n", "chanto.toml:1:1: serve.sorry_page"),
            ("[serve]\nsorry_page = \"/dir/\"\n", "chanto.toml:1:1: serve.sorry_page"),
            ("[serve]\nsorry_page = \"/a\\u0000\"\n", "chanto.toml:1:1: serve.sorry_page"),
            ("[serve]\nmax_conncurrency = 5\n", "chanto.toml:2:1: unknown"),
        ] {
            let errs = compile(&[("chanto.toml", text.as_bytes())]).unwrap_err();
            assert!(errs[0].to_string().starts_with(want), "{text:?}: {}", errs[0]);
        }
    }

    #[test]
    fn native_rules_and_precedence() {
        let native = r#"
[[redirects]]
from = "/docs/*"
to = "/manual/:splat"
status = 308

[[headers]]
for = "/assets/*"
values = { Cache-Control = "public, max-age=31536000, immutable" }
"#;
        let netlify = "/docs/*  /elsewhere  301\n/x /y\n";
        let set = compile(&[("_redirects", netlify.as_bytes()), ("chanto.toml", native.as_bytes())]).unwrap();
        let m = set.matcher();
        let req = RuleRequest { path: "/docs/a", ..Default::default() };
        assert_eq!(
            m.evaluate(&req, |_| false).unwrap().0,
            Action::Redirect { status: 308, location: "/manual/a".into() }
        );
        // The same match in two files: reported, and the chanto.toml rule wins.
        assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
        assert!(set.warnings[0].to_string().starts_with("_redirects:1: warning: conflict: chanto.toml:2"));
        assert_eq!(m.headers_for("/assets/app.js"), vec![("Cache-Control", "public, max-age=31536000, immutable")]);
    }

    #[test]
    fn access_tables() {
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q";
        let text = format!("[[access]]\nfor = \"/admin/*\"\nusers = {{ ann = \"pw\", bob = \"{hash}\" }}\n");
        let set = compile(&[("chanto.toml", text.as_bytes())]).unwrap();
        let users = set.matcher().auth_for("/admin/x").unwrap();
        assert_eq!(users[0].password.as_deref(), Some("pw"));
        assert_eq!(users[1].hash.as_deref(), Some(hash));
        assert!(users[1].password.is_none());
        let errs = compile(&[("chanto.toml", b"[[access]]\nfor = \"/a\"\nusers = {}\n")]).unwrap_err();
        assert!(errs[0].to_string().starts_with("chanto.toml:1:1: access: list at least one user"), "{}", errs[0]);
    }

    #[test]
    fn a_hash_with_its_own_cost_is_refused_where_it_is_written() {
        // A deploy must not choose what each sign-in costs the edge.
        let hostile =
            "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vv2L9X3Kq2m0uJ8PZV1yKqg8x7hYgR8Gm1C0bSx1m1Q";
        let text = format!("[[access]]\nfor = \"/admin/*\"\nusers = {{ ann = \"pw\",\n  eve = \"{hostile}\" }}\n");
        let errs = compile(&[("chanto.toml", text.as_bytes())]).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let shown = errs[0].to_string();
        assert!(shown.starts_with("chanto.toml:4:10: the password hash of eve:"), "{shown}");
        assert!(shown.contains("m=4194304,t=2,p=1; chanto verifies m=19456,t=2,p=1 only"), "{shown}");
        assert!(shown.contains("Give the password in clear"), "{shown}");
    }

    #[test]
    fn url_settings_and_their_conflicts() {
        let native = "clean_urls = true\ntrailing_slash = false\n";
        let firebase = "{\"hosting\": {\n  \"cleanUrls\": false\n}}";
        let set = compile(&[("chanto.toml", native.as_bytes()), ("firebase.json", firebase.as_bytes())]).unwrap();
        assert!(set.clean_urls);
        assert_eq!(set.trailing_slash, Some(false));
        assert!(!set.is_empty());
        assert_eq!(set.warnings.len(), 1);
        assert_eq!(
            set.warnings[0].to_string(),
            "firebase.json:2: warning: conflict: chanto.toml:1 already sets clean_urls = true; that setting wins"
        );
        let set = compile(&[("firebase.json", b"{\"hosting\": {\"cleanUrls\": true}}")]).unwrap();
        assert!(set.clean_urls && set.trailing_slash.is_none());
    }

    #[test]
    fn profiles_come_from_chanto_toml_then_the_site_then_the_files() {
        use crate::{Profile, compile_for};
        let netlify = ("_redirects", &b"/a /b 301\n"[..]);
        let amplify = ("customHttp.yml", &b"customHeaders: []\n"[..]);
        let firebase = ("firebase.json", &b"{\"hosting\": {}}"[..]);
        // Inferred from the platform's files.
        let set = compile(&[netlify]).unwrap();
        assert_eq!((set.profile, set.pretty_urls()), (Some(Profile::Netlify), true));
        let set = compile(&[amplify]).unwrap();
        assert_eq!((set.profile, set.pretty_urls()), (Some(Profile::Amplify), false));
        assert!(!set.is_empty(), "exact paths must reach the edge");
        let set = compile(&[firebase]).unwrap();
        assert_eq!((set.profile, set.pretty_urls()), (Some(Profile::Firebase), false));
        let set = compile(&[("chanto.toml", b"clean_urls = false\n")]).unwrap();
        assert_eq!((set.profile, set.pretty_urls()), (Some(Profile::Chanto), true));
        // Two platforms: the first file's, with a warning saying how to choose.
        let set = compile(&[netlify, firebase]).unwrap();
        assert_eq!(set.profile, Some(Profile::Netlify));
        assert_eq!(
            set.warnings[0].to_string(),
            "firebase.json:1: warning: the deploy has netlify's _redirects and firebase's firebase.json; it follows \
             netlify's defaults (set profile = \"firebase\" in chanto.toml to choose)"
        );
        // The site's setting beats the files; chanto.toml beats the site.
        assert_eq!(compile_for(&[netlify], Some(Profile::Amplify)).unwrap().profile, Some(Profile::Amplify));
        let declared = ("chanto.toml", &b"profile = \"firebase\"\n[build]\npublish = \"out\"\n"[..]);
        let set = compile_for(&[declared, netlify], Some(Profile::Amplify)).unwrap();
        assert_eq!((set.profile, set.pretty_urls()), (Some(Profile::Firebase), false));
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        let errs = compile(&[("chanto.toml", b"\nprofile = \"vercel\"\n")]).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "chanto.toml:2:11: profile: unknown profile \"vercel\"; use one of: chanto, netlify, amplify, firebase"
        );
    }

    #[test]
    fn typos_and_bad_values_are_errors_with_positions() {
        for (text, want) in [
            (
                "[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nforce = \"yes\"\n",
                "chanto.toml:4:9: `force` must be true or false, not the text \"yes\"",
            ),
            (
                "[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nstatus = \"301\"\n",
                "chanto.toml:4:10: `status` must be a number such as 301, not the text \"301\"",
            ),
            ("[[redirect]]\nfrom = \"/a\"\n", "chanto.toml:1:3: unknown key `redirect` (a typo?); the keys here are"),
            ("[[redirects]]\nfrom = \"a\"\nto = \"/b\"\n", "chanto.toml:1:1: from: \"a\" does not start with '/'"),
            ("[[redirects]]\nfrom = \"/a\"\nto = \"b\"\n", "chanto.toml:1:1: to: \"b\" is neither"),
            ("[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nstatus = 418\n", "chanto.toml:1:1: status 418"),
            ("[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nquery = { id = \"7\" }\n", "chanto.toml:1:1: query id=7"),
            ("[[redirects]]\nfrom = \"/a\"\nto = \"https://x/\"\nstatus = 404\n", "chanto.toml:1:1: to: a 404 rule"),
        ] {
            let errs = compile(&[("chanto.toml", text.as_bytes())]).unwrap_err();
            assert!(errs[0].to_string().starts_with(want), "{text:?}: {}", errs[0]);
        }
    }

    #[test]
    fn hostile_inputs_fail_cleanly() {
        // Deep nesting, huge files, binary junk: errors, never panics or hangs.
        let deep = format!("a = {}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(compile(&[("chanto.toml", deep.as_bytes())]).is_err());
        let huge = vec![b'#'; (8 << 20) + 1];
        let errs = compile(&[("_redirects", &huge)]).unwrap_err();
        assert!(errs[0].message.contains("the limit is"), "{}", errs[0]);
        let errs = compile(&[("_headers", b"/*\n  X: \xff\xfe\n")]).unwrap_err();
        assert!(errs[0].message.contains("UTF-8"));
        let long = format!("/{} /b\n", "a".repeat(5000));
        assert!(compile(&[("_redirects", long.as_bytes())]).is_err());
    }
}

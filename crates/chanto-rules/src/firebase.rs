//! Firebase Hosting: the `hosting` block of `firebase.json` (`redirects`,
//! `rewrites` to a path, `headers`).
//!
//! Firebase's order: redirects first (even where a file exists), then the
//! files, then rewrites. So redirects are forced and rewrites are not.
//! Sources are globs (`source` / `glob`) or RE2 expressions (`regex`, whose
//! named groups feed `:name` in the destination).

use serde::Deserialize;

use crate::Source;
use crate::sources::{Parsed, RawRedirect, line_col};

#[derive(Deserialize)]
struct FirebaseJson {
    hosting: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Hosting {
    #[serde(default)]
    redirects: Vec<serde_json::Value>,
    #[serde(default)]
    rewrites: Vec<serde_json::Value>,
    #[serde(default)]
    headers: Vec<serde_json::Value>,
    clean_urls: Option<bool>,
    trailing_slash: Option<bool>,
    i18n: Option<serde_json::Value>,
    app_association: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Redirect {
    source: Option<String>,
    glob: Option<String>,
    regex: Option<String>,
    destination: String,
    #[serde(rename = "type")]
    status: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rewrite {
    source: Option<String>,
    glob: Option<String>,
    regex: Option<String>,
    destination: Option<String>,
    function: Option<serde_json::Value>,
    run: Option<serde_json::Value>,
    dynamic_links: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Headers {
    source: Option<String>,
    glob: Option<String>,
    regex: Option<String>,
    headers: Vec<KeyValue>,
}

/// Header entries are written `{key, value}`, as in Amplify's `customHttp.yml`.
use crate::amplify::KeyValue;

/// The rule's source: `Ok(None)` when it names none.
fn source_of(source: &Option<String>, glob: &Option<String>, regex: &Option<String>) -> Result<Source, String> {
    match (source.as_ref().or(glob.as_ref()), regex) {
        (Some(g), None) => crate::glob::to_source(g),
        // Firebase matches the whole path.
        (None, Some(r)) => Ok(Source::Regex(format!("^(?:{r})$"))),
        (Some(_), Some(_)) => Err("give either source (a glob) or regex, not both".into()),
        (None, None) => Err("the rule has no source; add \"source\": \"/path/**\"".into()),
    }
}

/// `firebase.json`.
pub(crate) fn parse(file: &str, text: &str, out: &mut Parsed) {
    let doc: FirebaseJson = match serde_json::from_str(text) {
        Ok(d) => d,
        Err(e) => return out.json_error(file, &e, ""),
    };
    let hosting = match doc.hosting {
        None => return,
        Some(serde_json::Value::Array(mut sites)) => {
            if sites.len() > 1 {
                out.warn(file, 1, "hosting lists several sites; chanto reads the first (deploy each site separately)");
            }
            if sites.is_empty() {
                return;
            }
            sites.swap_remove(0)
        }
        Some(v) => v,
    };
    let hosting: Hosting = match serde_json::from_value(hosting) {
        Ok(h) => h,
        Err(e) => return out.error(file, 1, 1, format!("hosting: {e}")),
    };
    let origin = |key: &str| crate::Origin { file: file.to_owned(), line: find_line(text, key).unwrap_or(1) };
    if hosting.i18n.is_some() {
        let line = find_line(text, "\"i18n\"").unwrap_or(1);
        out.warn(file, line, "i18n rewrites (country- and language-specific content) are not supported by chanto; every visitor gets the default content");
    }
    if hosting.app_association.is_some() {
        let line = find_line(text, "\"appAssociation\"").unwrap_or(1);
        out.warn(
            file,
            line,
            "appAssociation (the app association files Firebase generates) is not supported; chanto serves the deploy's own /.well-known files",
        );
    }
    out.clean_urls = hosting.clean_urls.map(|v| (v, origin("\"cleanUrls\"")));
    out.trailing_slash = hosting.trailing_slash.map(|v| (v, origin("\"trailingSlash\"")));
    for (v, line) in hosting.redirects.into_iter().zip(rule_lines(text, "\"redirects\"")) {
        let Some(r) = out.take_json::<Redirect>(file, line, "redirects", v) else { continue };
        let Some(source) = out.take(file, line, "redirects", source_of(&r.source, &r.glob, &r.regex)) else { continue };
        push(out, file, line, source, &r.destination, Some(r.status.unwrap_or(301)), true);
    }
    for (v, line) in hosting.rewrites.into_iter().zip(rule_lines(text, "\"rewrites\"")) {
        let Some(r) = out.take_json::<Rewrite>(file, line, "rewrites", v) else { continue };
        let Some(destination) = r.destination else {
            let what = if r.function.is_some() {
                "Cloud Functions"
            } else if r.run.is_some() {
                "Cloud Run"
            } else if r.dynamic_links.is_some() {
                "Dynamic Links"
            } else {
                "nothing"
            };
            out.warn(file, line, format!("a rewrite to {what} is not supported by chanto; this rule never applies"));
            continue;
        };
        let Some(source) = out.take(file, line, "rewrites", source_of(&r.source, &r.glob, &r.regex)) else { continue };
        push(out, file, line, source, &destination, Some(200), false);
    }
    for (v, line) in hosting.headers.into_iter().zip(rule_lines(text, "\"headers\"")) {
        let Some(h) = out.take_json::<Headers>(file, line, "headers", v) else { continue };
        let Some(source) = out.take(file, line, "headers", source_of(&h.source, &h.glob, &h.regex)) else { continue };
        out.header_rule_for(file, line, source, h.headers.into_iter().map(|kv| (kv.key, kv.value)).collect());
    }
}

fn push(out: &mut Parsed, file: &str, line: u32, source: Source, to: &str, status: Option<u16>, force: bool) {
    let (from, regex) = match source {
        Source::Path(p) => (p.to_string(), None),
        Source::Regex(r) => ("/".to_owned(), Some(r)),
    };
    // A segment capture written `:rest*` in the source is `:rest*` in the
    // destination too: the same placeholder.
    let to = strip_capture_stars(to);
    let raw = RawRedirect {
        from: &from,
        regex,
        to: &to,
        status,
        force,
        query: Vec::new(),
        country: Vec::new(),
        language: Vec::new(),
    };
    out.redirect(file, line, 1, raw);
}

/// `:name*` → `:name`.
fn strip_capture_stars(to: &str) -> String {
    let mut out = String::with_capacity(to.len());
    let mut in_name = false;
    for c in to.chars() {
        if c == '*' && in_name {
            in_name = false;
            continue;
        }
        in_name = (c == ':') || (in_name && (c.is_ascii_alphanumeric() || c == '_'));
        out.push(c);
    }
    out
}

fn find_line(text: &str, needle: &str) -> Option<u32> {
    text.find(needle).map(|at| line_col(text, at).0)
}

/// Lines of the objects in the array under `key` (the first such key), then
/// line 1 for any the scan could not place.
fn rule_lines(text: &str, key: &str) -> impl Iterator<Item = u32> {
    let offsets = text.find(key).map(|at| crate::sources::array_object_offsets(text, at)).unwrap_or_default();
    let lines: Vec<u32> = offsets.into_iter().map(|o| line_col(text, o).0).collect();
    lines.into_iter().chain(std::iter::repeat(1))
}

#[cfg(test)]
mod tests {
    use crate::{Action, RuleRequest, compile};

    /// Examples from Firebase's "Configure Hosting behavior" documentation.
    const FIREBASE: &str = r#"{
  "hosting": {
    "public": "public",
    "ignore": ["firebase.json", "**/.*"],
    "redirects": [
      {"source": "/foo", "destination": "/bar", "type": 301},
      {"source": "/firebase/**", "destination": "https://firebase.google.com/", "type": 302},
      {"regex": "/blog/(?P<post>.+)", "destination": "https://blog.myapp.com/:post", "type": 301}
    ],
    "rewrites": [
      {"source": "/api/**", "function": "api"},
      {"source": "**", "destination": "/index.html"}
    ],
    "headers": [
      {"source": "**/*.@(eot|otf|ttf|ttc|woff|font.css)", "headers": [{"key": "Access-Control-Allow-Origin", "value": "*"}]},
      {"source": "**/*.@(jpg|jpeg|gif|png)", "headers": [{"key": "Cache-Control", "value": "max-age=7200"}]}
    ]
  }
}"#;

    #[test]
    fn documented_examples() {
        let set = compile(&[("firebase.json", FIREBASE.as_bytes())]).unwrap();
        let m = set.matcher();
        let eval = |path: &str, exists: bool| {
            m.evaluate(&RuleRequest { path, ..Default::default() }, |_| exists).map(|(a, _)| a)
        };
        // Redirects apply even where a file exists.
        assert_eq!(eval("/foo", true), Some(Action::Redirect { status: 301, location: "/bar".into() }));
        assert_eq!(
            eval("/firebase/x/y", false),
            Some(Action::Redirect { status: 302, location: "https://firebase.google.com/".into() })
        );
        assert_eq!(
            eval("/blog/a/b", false),
            Some(Action::Redirect { status: 301, location: "https://blog.myapp.com/a/b".into() })
        );
        // Rewrites only where no file does; the function rewrite never applies.
        assert_eq!(eval("/app/x", false), Some(Action::Rewrite { path: "/index.html".into(), status: 200 }));
        assert_eq!(eval("/app/x", true), None);
        assert_eq!(eval("/api/x", false), Some(Action::Rewrite { path: "/index.html".into(), status: 200 }));
        assert_eq!(set.warnings.len(), 1);
        assert!(
            set.warnings[0].to_string().starts_with("firebase.json:11: warning: a rewrite to Cloud Functions"),
            "{}",
            set.warnings[0]
        );
        assert_eq!(m.headers_for("/img/a.png"), vec![("Cache-Control", "max-age=7200")]);
        assert_eq!(set.redirects[1].origin.line, 7);
    }

    #[test]
    fn settings_chanto_does_not_follow_are_warnings() {
        let text = "{\"hosting\": {\"public\": \"p\",\n  \"i18n\": {\"root\": \"/localized\"}}}";
        let set = compile(&[("firebase.json", text.as_bytes())]).unwrap();
        assert_eq!(set.warnings.len(), 1);
        assert!(
            set.warnings[0].to_string().starts_with("firebase.json:2: warning: i18n rewrites"),
            "{}",
            set.warnings[0]
        );
    }

    #[test]
    fn documented_segment_and_capture_redirects() {
        let text = r#"{"hosting": {"redirects": [
          {"source": "/foo/:rest*", "destination": "/bar/:rest*", "type": 301},
          {"source": "/users/:id/profile", "destination": "/users/:id/newProfile", "type": 301},
          {"regex": "^/posts/(\\d{4})/(\\d{2})/(.+)$", "destination": "/archive/:1-:2/:3", "type": 301}
        ]}}"#;
        let set = compile(&[("firebase.json", text.as_bytes())]).unwrap();
        let m = set.matcher();
        let eval = |path: &str| m.evaluate(&RuleRequest { path, ..Default::default() }, |_| false).map(|(a, _)| a);
        let go = |to: &str| Some(Action::Redirect { status: 301, location: to.into() });
        assert_eq!(eval("/foo/a/b"), go("/bar/a/b"));
        assert_eq!(eval("/users/7/profile"), go("/users/7/newProfile"));
        assert_eq!(eval("/posts/2024/05/hello"), go("/archive/2024-05/hello"));
        assert_eq!(eval("/posts/24/05/hello"), None);
    }

    #[test]
    fn errors() {
        for (text, want) in [
            (
                "{\"hosting\": {\"redirects\": [{\"source\": \"/a\"}]}}",
                "firebase.json:1:1: redirects: `destination` is missing; add it",
            ),
            (
                "{\"hosting\": {\"redirects\": [{\"source\": \"/a\", \"destination\": \"/b\", \"type\": \"301\"}]}}",
                "firebase.json:1:1: redirects: `type` must be a number such as 301, not the text \"301\"",
            ),
            (
                "{\"hosting\": {\"redirects\": [{\"destination\": \"/a\"}]}}",
                "firebase.json:1:1: redirects: the rule has no source",
            ),
            (
                "{\"hosting\": {\"headers\": [{\"source\": \"/!(x)\", \"headers\": []}]}}",
                "firebase.json:1:1: headers: \"/!(x)\"",
            ),
            ("{\"hosting\": ", "firebase.json:1:12: EOF while parsing"),
        ] {
            let errs = compile(&[("firebase.json", text.as_bytes())]).unwrap_err();
            assert!(errs[0].to_string().starts_with(want), "{text}: {}", errs[0]);
        }
        // No hosting block: no rules, Firebase's defaults (paths name files exactly).
        let set = compile(&[("firebase.json", b"{\"functions\": {}}")]).unwrap();
        assert!(set.redirects.is_empty() && set.headers.is_empty() && !set.pretty_urls());
    }
}

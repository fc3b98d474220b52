//! AWS Amplify Hosting: the custom rules JSON (`amplify-rules.json`: the
//! array `aws amplify get-app --query app.customRules` prints, or the whole
//! `{"customRules": […]}` object) and `customHttp.yml` (custom headers).
//!
//! Amplify applies rules top to bottom and, unlike Netlify, applies them even
//! where a file exists, except the `404-200` and `404` rules, which only apply
//! when no file matches. Placeholders are `<name>`, the splat `<*>`, and a
//! source in `</…/>` is a regular expression.

use serde::Deserialize;

use crate::sources::{Parsed, RawRedirect, line_col};

#[derive(Deserialize)]
#[serde(untagged)]
enum RulesFile {
    List(Vec<serde_json::Value>),
    App {
        #[serde(rename = "customRules")]
        custom_rules: Vec<serde_json::Value>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    source: String,
    target: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    condition: Option<String>,
}

/// `amplify-rules.json`.
pub(crate) fn parse_rules(file: &str, text: &str, out: &mut Parsed) {
    let doc: RulesFile = match serde_json::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let hint = "(expected a JSON array of {\"source\", \"target\", \"status\", \"condition\"})";
            return out.json_error(file, &e, hint);
        }
    };
    let rules = match doc {
        RulesFile::List(l) => l,
        RulesFile::App { custom_rules } => custom_rules,
    };
    let starts = crate::sources::array_object_offsets(text, 0);
    for (i, value) in rules.into_iter().enumerate() {
        let (line, col) = starts.get(i).map(|&at| line_col(text, at)).unwrap_or((1, 1));
        let rule: Rule = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => return out.error(file, line, col, format!("rule {}: {e}", i + 1)),
        };
        let (status, force) = match rule.status.as_deref().unwrap_or("200") {
            "404-200" => (200, false),
            "404" => (404, false),
            s => match s.parse::<u16>() {
                Ok(code) => (code, true),
                Err(_) => {
                    out.error(
                        file,
                        line,
                        col,
                        format!("status {s:?} is not an Amplify status (200, 301, 302, 404, 404-200)"),
                    );
                    continue;
                }
            },
        };
        let country: Vec<String> = rule
            .condition
            .iter()
            .flat_map(|c| c.trim_matches(|ch| ch == '<' || ch == '>').split(','))
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        let to = placeholders_to_colons(&rule.target);
        // A query in the source must be there: `<name>` binds its value, any
        // other value must be exactly that.
        let (source, query, values) = match rule.source.split_once('?') {
            Some((path, q)) if !rule.source.starts_with("</") => match source_query(q) {
                Ok((query, values)) => (path, query, values),
                Err(e) => {
                    out.error(file, line, col, format!("source {:?}: {e}", rule.source));
                    continue;
                }
            },
            _ => (rule.source.as_str(), Vec::new(), Vec::new()),
        };
        let (from, regex) = match source.strip_prefix("</").and_then(|r| r.strip_suffix("/>")) {
            Some(re) => ("/".to_owned(), Some(re.to_owned())),
            None => match source_pattern(source) {
                Ok(s) => s,
                Err(e) => {
                    out.error(file, line, col, e);
                    continue;
                }
            },
        };
        let raw = RawRedirect {
            from: &from,
            regex,
            to: &to,
            status: Some(status),
            force,
            query,
            country,
            language: Vec::new(),
        };
        let before = out.redirects.len();
        out.redirect(file, line, col, raw);
        if out.redirects.len() > before
            && let Some(pushed) = out.redirects.last_mut()
        {
            pushed.query_values = values;
        }
    }
}

/// A source's query (`id=<id>&lang=en`): the parameters bound to
/// placeholders, and those that must have a fixed value.
#[allow(clippy::type_complexity)]
fn source_query(q: &str) -> Result<(Vec<(String, String)>, Vec<(String, String)>), String> {
    let (mut bound, mut fixed) = (Vec::new(), Vec::new());
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k.is_empty() {
            return Err(format!("{pair:?} names no query parameter"));
        }
        match v.strip_prefix('<').and_then(|v| v.strip_suffix('>')) {
            Some(name) if is_placeholder(name) => bound.push((k.to_owned(), format!(":{}", placeholder_name(name)))),
            Some(_) => return Err(format!("{pair:?}: <…> must name a placeholder, like <id>")),
            None if v.is_empty() => bound.push((k.to_owned(), String::new())),
            None => fixed.push((k.to_owned(), v.to_owned())),
        }
    }
    Ok((bound, fixed))
}

/// `<name>` → `:name`, `<*>` → `:splat`.
fn placeholders_to_colons(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('>') {
            Some(close) if after[..close] == *"*" => out.push_str(":splat"),
            Some(close) if is_placeholder(&after[..close]) => {
                out.push(':');
                out.push_str(&placeholder_name(&after[..close]));
            }
            _ => {
                out.push('<');
                rest = after;
                continue;
            }
        }
        rest = &after[after.find('>').map_or(after.len(), |c| c + 1)..];
    }
    out.push_str(rest);
    out
}

/// Amplify's placeholder names may have hyphens (`<my-blog-id-value>`).
fn is_placeholder(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The name as chanto's placeholders spell it (`-` → `_`).
fn placeholder_name(name: &str) -> String {
    name.replace('-', "_")
}

/// An Amplify source as a path pattern (whole-segment placeholders, `<*>`
/// last) or, otherwise, a regular expression with named groups.
fn source_pattern(source: &str) -> Result<(String, Option<String>), String> {
    let (host, path) = match source.find("://") {
        Some(at) => {
            let rest = &source[at + 3..];
            let slash = rest.find('/').unwrap_or(rest.len());
            (Some(&source[..at + 3 + slash]), if slash == rest.len() { "/" } else { &rest[slash..] })
        }
        None => (None, source),
    };
    let colons = placeholders_to_colons(path);
    let whole_segments = path.split('/').enumerate().all(|(i, seg)| {
        let last = i + 1 == path.split('/').count();
        !seg.contains('<')
            || (seg.starts_with('<') && seg.ends_with('>') && (seg != "<*>" || last) && seg.matches('<').count() == 1)
    });
    let as_path = colons.replace(":splat", "*");
    if whole_segments {
        return Ok((format!("{}{as_path}", host.unwrap_or("")), None));
    }
    // Placeholders inside segments: a regular expression.
    let mut re = String::from("^");
    let mut rest = path;
    while let Some(open) = rest.find('<') {
        re.push_str(&regex::escape(&rest[..open]));
        let after = &rest[open + 1..];
        let close = after.find('>').ok_or_else(|| format!("source {source:?}: '<' is never closed"))?;
        match &after[..close] {
            "*" => re.push_str("(?P<splat>.*)"),
            name if is_placeholder(name) => re.push_str(&format!("(?P<{}>[^/]+)", placeholder_name(name))),
            other => return Err(format!("source {source:?}: <{other}> is not a placeholder (<name> or <*>)")),
        }
        rest = &after[close + 1..];
    }
    re.push_str(&regex::escape(rest));
    re.push('$');
    Ok((host.map_or("/".to_owned(), |h| format!("{h}/")), Some(re)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomHttp {
    #[serde(rename = "customHeaders")]
    custom_headers: Vec<HeaderBlock>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderBlock {
    pattern: String,
    headers: Vec<KeyValue>,
}

/// A header as `{key, value}` (Amplify's and Firebase's spelling).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyValue {
    pub key: String,
    pub value: String,
}

/// How big a YAML rule file may be once its aliases are expanded: bytes of
/// scalars plus one per node. A file without aliases measures about its
/// size, so this is twice the largest file.
pub(crate) const MAX_EXPANDED_YAML: usize = 2 * crate::sources::MAX_RULE_FILE_BYTES;

/// Walks a YAML document the way deserializing it would (each alias replays
/// what it points to), keeping nothing, and stops once it has seen
/// [`MAX_EXPANDED_YAML`]: a few bytes of aliases must not become gigabytes
/// of header rules.
struct Measure<'a>(&'a std::cell::Cell<usize>);

impl Measure<'_> {
    fn charge<E: serde::de::Error>(&self, n: usize) -> Result<(), E> {
        let seen = self.0.get().saturating_add(n);
        self.0.set(seen);
        if seen > MAX_EXPANDED_YAML {
            return Err(E::custom(format!(
                "the file expands to more than {MAX_EXPANDED_YAML} bytes (YAML aliases repeat what they point to); write the repeated parts out or share fewer"
            )));
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Measure<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Measure<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.charge(1)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.charge(1)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.charge(1)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.charge(1)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.charge(1 + v.len())
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.charge(1 + v.len())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.charge(1)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.charge(1)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.charge(1)?;
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.charge(1)?;
        while seq.next_element_seed(Measure(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.charge(1)?;
        while map.next_key_seed(Measure(self.0))?.is_some() {
            map.next_value_seed(Measure(self.0))?;
        }
        Ok(())
    }
}

/// `customHttp.yml`.
pub(crate) fn parse_custom_http(file: &str, text: &str, out: &mut Parsed) {
    let seen = std::cell::Cell::new(0);
    let measured = serde::de::DeserializeSeed::deserialize(Measure(&seen), serde_yaml_ng::Deserializer::from_str(text));
    let doc: CustomHttp = match measured.and_then(|()| serde_yaml_ng::from_str(text)) {
        Ok(d) => d,
        Err(e) => {
            let (line, col) = e.location().map(|l| (l.line() as u32, l.column() as u32)).unwrap_or((1, 1));
            let msg = e.to_string();
            let shown = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            return out.error(file, line, col, shown);
        }
    };
    // Line of each block: the n-th `pattern:` key.
    let pattern_lines: Vec<u32> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().trim_start_matches("- ").trim_start().starts_with("pattern:"))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    for (i, block) in doc.custom_headers.into_iter().enumerate() {
        let line = pattern_lines.get(i).copied().unwrap_or(1);
        match crate::glob::to_source(&block.pattern) {
            Ok(source) => {
                let headers = block.headers.into_iter().map(|kv| (kv.key, kv.value)).collect();
                out.header_rule_for(file, line, source, headers);
            }
            Err(e) => out.error(file, line, 1, format!("pattern: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Action, RuleRequest, compile};

    fn eval(text: &str, path: &str, exists: bool) -> Option<Action> {
        let set = compile(&[("amplify-rules.json", text.as_bytes())]).unwrap();
        set.matcher().evaluate(&RuleRequest { path, ..Default::default() }, |_| exists).map(|(a, _)| a)
    }

    /// Examples from Amplify's "Using redirects" documentation.
    #[test]
    fn documented_examples() {
        let spa = r#"[{"source": "</^[^.]+$|\\.(?!(css|gif|ico|jpg|js|png|txt|svg|woff|woff2|ttf|map|json|webp)$)([^.]+$)/>", "target": "/index.html", "status": "200", "condition": null}]"#;
        assert_eq!(
            eval(spa, "/dashboard/settings", false),
            Some(Action::Rewrite { path: "/index.html".into(), status: 200 })
        );
        assert_eq!(eval(spa, "/app.js", false), None);

        let rules = r#"{"customRules": [
  {"source": "/docs/<*>", "target": "/documents/<*>", "status": "301"},
  {"source": "/blog/<year>/<slug>", "target": "/posts/<slug>?y=<year>", "status": "302"},
  {"source": "/img-<id>.png", "target": "/images/<id>.png", "status": "301"},
  {"source": "/<*>", "target": "/index.html", "status": "404-200"}
]}"#;
        assert_eq!(
            eval(rules, "/docs/a/b", true),
            Some(Action::Redirect { status: 301, location: "/documents/a/b".into() })
        );
        assert_eq!(
            eval(rules, "/blog/2024/hi", false),
            Some(Action::Redirect { status: 302, location: "/posts/hi?y=2024".into() })
        );
        assert_eq!(
            eval(rules, "/img-7.png", false),
            Some(Action::Redirect { status: 301, location: "/images/7.png".into() })
        );
        // 404-200 only where no file exists.
        assert_eq!(eval(rules, "/app/route", false), Some(Action::Rewrite { path: "/index.html".into(), status: 200 }));
        assert_eq!(eval(rules, "/app/route", true), None);
    }

    /// Amplify's "Query parameters" documentation: the query goes along on
    /// 301 and 302 redirects, except when the source matches a query value
    /// or the target has a query of its own.
    #[test]
    fn query_parameters() {
        let rules = r#"[
  {"source": "/docs?id=<my-blog-id-value>", "target": "/documents/<my-blog-id-value>", "status": "301"},
  {"source": "/search?lang=en&q=<q>", "target": "/en/search/<q>", "status": "302"},
  {"source": "/old", "target": "/new", "status": "301"},
  {"source": "/tagged", "target": "/new?tag=a", "status": "301"}
]"#;
        let set = compile(&[("amplify-rules.json", rules.as_bytes())]).unwrap();
        let eval = |path: &str, query: &str| {
            set.matcher()
                .evaluate(&RuleRequest { path, query: Some(query), ..Default::default() }, |_| false)
                .map(|(a, _)| a)
        };
        let go = |status, to: &str| Some(Action::Redirect { status, location: to.into() });
        assert_eq!(eval("/docs", "id=42&utm=x"), go(301, "/documents/42"), "a matched query is not forwarded");
        assert_eq!(eval("/docs", "other=1"), None, "the parameter must be there");
        assert_eq!(eval("/search", "q=rust&lang=en"), go(302, "/en/search/rust"));
        assert_eq!(eval("/search", "q=rust&lang=fr"), None, "a fixed value must be exactly that");
        assert_eq!(eval("/old", "a=1&b=2"), go(301, "/new?a=1&b=2"), "otherwise the query goes along");
        assert_eq!(eval("/tagged", "a=1"), go(301, "/new?tag=a"), "unless the target has its own");
        let errs = compile(&[("amplify-rules.json", br#"[{"source": "/a?=x", "target": "/b", "status": "301"}]"#)])
            .unwrap_err();
        assert_eq!(errs[0].to_string(), "amplify-rules.json:1:2: source \"/a?=x\": \"=x\" names no query parameter");
    }

    #[test]
    fn errors_name_the_rule_line() {
        let text = "[\n  {\"source\": \"/a\", \"target\": \"/b\"},\n  {\"source\": \"/c\", \"target\": \"/d\", \"status\": \"teapot\"}\n]";
        let errs = compile(&[("amplify-rules.json", text.as_bytes())]).unwrap_err();
        assert!(errs[0].to_string().starts_with("amplify-rules.json:3:3: status \"teapot\""), "{}", errs[0]);
        let errs = compile(&[("amplify-rules.json", b"[{\"source\": \"/a\", \"targt\": \"/b\"}]")]).unwrap_err();
        assert!(errs[0].message.contains("unknown field `targt`"), "{}", errs[0]);
        let errs = compile(&[("amplify-rules.json", b"[{]")]).unwrap_err();
        assert_eq!(errs[0].line, 1);
        let errs = compile(&[("amplify-rules.json", b"[{\"source\": \"</(a/>\", \"target\": \"/b\"}]")]).unwrap_err();
        assert!(errs[0].message.contains("invalid regular expression"), "{}", errs[0]);
    }

    #[test]
    fn custom_http_yml() {
        let text = "customHeaders:\n  - pattern: '**'\n    headers:\n      - key: 'Strict-Transport-Security'\n        value: 'max-age=31536000'\n  - pattern: '*.json'\n    headers:\n      - key: 'Content-Type'\n        value: 'application/json'\n";
        let set = compile(&[("customHttp.yml", text.as_bytes())]).unwrap();
        assert_eq!(set.headers[1].origin.line, 6);
        let m = set.matcher();
        assert_eq!(
            m.headers_for("/data.json"),
            vec![("Strict-Transport-Security", "max-age=31536000"), ("Content-Type", "application/json")]
        );
        assert_eq!(m.headers_for("/a/data.json").len(), 1);
        let errs = compile(&[("customHttp.yml", b"customHeaders:\n  - pattern: '**'\n    headerz: []\n")]).unwrap_err();
        assert_eq!(errs[0].line, 3, "{}", errs[0]);
    }
}

//! Differential test of chanto's Netlify rule parsers against Netlify's own
//! (`@netlify/redirect-parser`, `@netlify/headers-parser`, run by
//! `tests/netlify-corpus/netlify-parse.mjs` under node): every rule of the
//! corpus (the examples of Netlify's docs, quirks, and generated files) is
//! parsed by both, rule for rule — from, to, status, force, query matches,
//! conditions, header paths, names and values, Basic-Auth users, and which
//! rules are errors — and each header rule's path is tried on probe paths
//! through chanto's matcher and through the expression Netlify's parser
//! builds for it. A disagreement fails the test with both sides printed side
//! by side, unless an entry of [`ALLOWED`] says why chanto differs by design.
//!
//! Needs node and the packages, which scripts/test installs into
//! `target/npm` (or set `CHANTO_NPM_DIR`): without them the test skips,
//! unless `CHANTO_TEST_REQUIRE_BROWSER` is set (scripts/test sets it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use chanto_rules::{Matcher, RuleError, RuleSet, STATUSES, Source, compile};
use serde_json::{Value, json};

/// The installed packages' `node_modules`, or why the test cannot run.
fn node_modules() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let npm = std::env::var_os("CHANTO_NPM_DIR").map_or_else(|| root.join("target/npm"), PathBuf::from);
    let modules = npm.join("node_modules");
    for pkg in ["redirect-parser", "headers-parser"] {
        let manifest = modules.join("@netlify").join(pkg).join("package.json");
        if !manifest.is_file() {
            return Err(format!("{} is missing", manifest.display()));
        }
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(modules),
        _ => Err("node is not on PATH".into()),
    }
}

/// One rule of a corpus file: a `_redirects` line, a `_headers` block (a
/// path line and what follows it) or a `netlify.toml` table, written alone
/// at its own line (the lines before it empty), so that both parsers'
/// errors and rules belong to it.
struct Unit {
    case: String,
    file: &'static str,
    line: u32,
    text: String,
    dir: PathBuf,
}

impl Unit {
    fn source(&self) -> &str {
        self.text.trim_start_matches('\n')
    }
}

/// Splits a corpus file into units.
fn units(case: &str, file: &'static str, text: &str, scratch: &Path) -> Vec<Unit> {
    let lines: Vec<&str> = text.lines().collect();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let content = |l: &str| !l.trim().is_empty() && !l.trim().starts_with('#');
    match file {
        "_redirects" => spans.extend((0..lines.len()).filter(|&i| content(lines[i])).map(|i| (i, i + 1))),
        "_headers" => {
            let mut start = None;
            for (i, l) in lines.iter().enumerate() {
                if l.trim().starts_with('/') || (start.is_none() && content(l)) {
                    if let Some(s) = start {
                        spans.push((s, i));
                    }
                    start = Some(i);
                }
            }
            spans.extend(start.map(|s| (s, lines.len())));
        }
        _ => {
            let mut start = None;
            for (i, l) in lines.iter().enumerate() {
                let t = l.trim();
                let sub = t.starts_with("[redirects.") || t.starts_with("[headers.");
                if t.starts_with('[') && !sub {
                    if let Some(s) = start.take() {
                        spans.push((s, i));
                    }
                    if t.starts_with("[[redirects]]") || t.starts_with("[[headers]]") {
                        start = Some(i);
                    }
                }
            }
            spans.extend(start.map(|s| (s, lines.len())));
        }
    }
    spans
        .into_iter()
        .filter(|&(s, e)| lines[s..e].iter().any(|l| content(l)))
        .map(|(s, e)| {
            let text = format!("{}{}\n", "\n".repeat(s), lines[s..e].join("\n"));
            let dir = scratch.join(format!("{case}{}-{}", file.replace('.', "_"), s + 1));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), &text).unwrap();
            Unit { case: case.to_owned(), file, line: s as u32 + 1, text, dir }
        })
        .collect()
}

/// `/a//b/` → `/a/b`, as both parsers read a path (Netlify's headers parser
/// also drops the spaces at the end of each segment).
fn norm_path(p: &str) -> String {
    let segs: Vec<&str> = p.split('/').map(str::trim_end).filter(|s| !s.is_empty()).collect();
    format!("/{}", segs.join("/"))
}

/// A header path Netlify matches with a `*` before its end: chanto keeps it
/// as an expression, compared by probes, not by text.
fn wildcard_inside(p: &str) -> bool {
    let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    segs.iter().enumerate().any(|(i, s)| s.contains('*') && (*s != "*" || i + 1 != segs.len()))
}

fn lower_list(v: Option<&Value>) -> Value {
    let list: Vec<String> = match v {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    // An empty code matches nobody: chanto leaves it out.
    json!(list.iter().map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect::<Vec<_>>())
}

/// Netlify's redirect, in the shape [`chanto_redirect`] gives chanto's.
/// The scheme of a domain-level `from` is not compared: chanto's rules
/// match a host whatever the scheme.
fn netlify_redirect(r: &Value) -> Value {
    let conditions = r["conditions"].as_object().cloned().unwrap_or_default();
    if let Some(key) = conditions.keys().find(|k| *k != "Country" && *k != "Language") {
        return json!({ "never_applies": key.to_ascii_lowercase() });
    }
    let query: BTreeMap<String, String> = r["query"]
        .as_object()
        .map(|q| q.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    json!({
        "host": r["host"].as_str().map(|h| h.split(':').next().unwrap_or_default().to_ascii_lowercase()),
        "from": norm_path(r["path"].as_str().unwrap_or_default()),
        "to": r["to"],
        "status": r.get("status").cloned().unwrap_or(json!(301)),
        "force": r["force"],
        "query": query,
        "country": lower_list(conditions.get("Country")),
        "language": lower_list(conditions.get("Language")),
        "signed": r.get("signed").is_some(),
        "proxy_headers": r["headers"].as_object().is_some_and(|h| !h.is_empty()),
    })
}

fn warnings_at(set: &RuleSet, line: u32) -> Vec<&str> {
    set.warnings.iter().filter(|w| w.origin.line == line).map(|w| w.message.as_str()).collect()
}

fn chanto_redirect(set: &RuleSet, line: u32) -> Value {
    let warnings = warnings_at(set, line);
    let Some(r) = set.redirects.first() else {
        // A condition chanto cannot check: a warning, and no rule.
        return match warnings.iter().find_map(|w| w.split_once("= conditions are not supported")) {
            Some((key, _)) => json!({ "never_applies": key.to_ascii_lowercase() }),
            None => json!({ "nothing": true }),
        };
    };
    let query: BTreeMap<String, String> = r
        .query
        .iter()
        .map(|(k, bind)| (k.clone(), bind.as_ref().map(|b| format!(":{b}")).unwrap_or_default()))
        .collect();
    json!({
        "host": r.host,
        "from": match &r.from { Source::Path(p) => norm_path(&p.to_string()), Source::Regex(re) => format!("regex {re}") },
        "to": r.to,
        "status": r.status,
        "force": r.force,
        "query": query,
        "country": r.conditions.country,
        "language": r.conditions.language,
        "signed": warnings.iter().any(|w| w.starts_with("signed proxy requests")),
        "proxy_headers": warnings.iter().any(|w| w.starts_with("headers apply to proxied requests")),
    })
}

/// Header values by lower-case name, values of one name joined in order.
fn merge_names<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in pairs {
        out.entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    out
}

fn netlify_header(h: &Value) -> Value {
    let values = h["values"].as_object().cloned().unwrap_or_default();
    let mut auth = Vec::new();
    let mut pairs = Vec::new();
    for (name, value) in &values {
        let value = value.as_str().unwrap_or_default();
        if name.eq_ignore_ascii_case("basic-auth") {
            auth.extend(value.split_whitespace().map(|p| p.split_once(':').map(|(u, p)| json!([u, p]))));
        } else {
            pairs.push((name.as_str(), value));
        }
    }
    let path = h["for"].as_str().unwrap_or_default();
    json!({
        "path": if wildcard_inside(path) { "<wildcard>".to_owned() } else { norm_path(path) },
        "headers": merge_names(pairs.into_iter()),
        "basic_auth": auth,
    })
}

fn chanto_header(set: &RuleSet) -> Value {
    if set.headers.is_empty() && set.auth.is_empty() {
        return json!({ "nothing": true });
    }
    let source = set.headers.first().map(|h| &h.path).or_else(|| set.auth.first().map(|a| &a.path));
    let path = match source {
        Some(Source::Path(p)) => norm_path(&p.to_string()),
        _ => "<wildcard>".to_owned(),
    };
    let headers = merge_names(set.headers.iter().flat_map(|h| h.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))));
    let auth: Vec<Value> = set
        .auth
        .iter()
        .flat_map(|a| a.users.iter().map(|u| json!([u.user, u.password.as_deref().unwrap_or_default()])))
        .collect();
    json!({ "path": path, "headers": headers, "basic_auth": auth })
}

/// A way chanto differs from Netlify's parsers on purpose.
struct Allowed {
    name: &'static str,
    /// Whether this entry explains the unit's disagreement: Netlify's
    /// output for it and chanto's errors (empty when chanto accepted it).
    applies: fn(&Unit, &Value, &[RuleError]) -> bool,
}

fn says(errs: &[RuleError], what: &str) -> bool {
    errs.iter().any(|e| e.message.contains(what))
}

fn netlify_ok(netlify: &Value) -> bool {
    netlify["errors"].as_array().is_some_and(Vec::is_empty)
}

/// The fields of a `_redirects` unit's line, up to a comment.
fn redirect_fields(u: &Unit) -> Vec<&str> {
    if u.file != "_redirects" {
        return Vec::new();
    }
    u.source().split_whitespace().take_while(|f| !f.starts_with('#')).collect()
}

/// Every difference chanto keeps, and why. Each must be seen in the corpus.
const ALLOWED: &[Allowed] = &[
    // Netlify's parser takes any integer; chanto serves only the statuses it
    // implements, and refuses a rule it would serve wrongly (401/403 come
    // with Netlify Identity roles, which chanto does not have).
    Allowed {
        name: "a status chanto does not serve (401, 418, 500)",
        applies: |_, n, e| {
            netlify_ok(n)
                && says(e, "is not one chanto serves")
                && n["redirects"][0]["status"].as_u64().is_some_and(|s| !STATUSES.contains(&(s as u16)))
        },
    },
    // A 404 or 410 rule serves a page of the deploy with that status;
    // chanto proxies another origin only as a 200 rewrite, so a 404/410 to
    // a URL is refused rather than answered with a page it does not have.
    Allowed {
        name: "a 404 or 410 rule whose target is another origin's URL",
        applies: |_, n, e| {
            let r = &n["redirects"][0];
            netlify_ok(n)
                && says(e, "rule serves a page of this site")
                && matches!(r["status"].as_u64(), Some(404 | 410))
                && r["to"].as_str().is_some_and(|t| t.starts_with("http"))
        },
    },
    // Netlify's parser keeps `id=123`; chanto cannot match a fixed value,
    // and a rule that ignored the value would catch every value.
    Allowed {
        name: "a fixed query value (id=123)",
        applies: |_, n, e| {
            netlify_ok(n)
                && says(e, "matching fixed values is not supported")
                && n["redirects"][0]["query"].as_object().is_some_and(|q| {
                    q.values().any(|v| v.as_str().is_some_and(|v| !v.is_empty() && !v.starts_with(':')))
                })
        },
    },
    // Netlify's parser takes a word without `=` among the query matches or
    // the conditions as a key with no value, which its output then drops:
    // the word does nothing there, and is almost always a mistake.
    Allowed {
        name: "a stray word among query matches or conditions",
        applies: |u, n, e| {
            netlify_ok(n)
                && (says(e, "expected a query match") || says(e, "after the status; conditions look like"))
                && redirect_fields(u).iter().skip(1).any(|f| {
                    !f.contains('=')
                        && !f.starts_with('/')
                        && !f.starts_with("http")
                        && !f.starts_with(|c: char| c.is_ascii_digit())
                })
        },
    },
    // Netlify's parser reads `301x` with parseInt (301); chanto refuses a
    // status field that is not digits and an optional `!`.
    Allowed {
        name: "a status with other text after its digits (301x)",
        applies: |u, n, e| {
            netlify_ok(n)
                && says(e, "is not a status")
                && redirect_fields(u).iter().any(|f| {
                    let digits = f.trim_start_matches(|c: char| c.is_ascii_digit());
                    digits.len() < f.len() && !digits.is_empty() && digits != "!"
                })
        },
    },
    // `Country=` (nothing listed): Netlify keeps an empty code, which
    // matches nobody; chanto says so instead of keeping a rule that never applies.
    Allowed {
        name: "a condition that lists nothing (Country=)",
        applies: |_, n, e| {
            netlify_ok(n)
                && says(e, "lists nothing")
                && n["redirects"][0]["conditions"].as_object().is_some_and(|c| {
                    c.values().any(|v| v.as_array().is_some_and(|l| l.iter().all(|x| x.as_str() == Some(""))))
                })
        },
    },
    // Headers chanto owns (Content-Length, …; Netlify's docs say it ignores
    // them), names that are not HTTP tokens and values that are not
    // printable ASCII could not be sent as written.
    Allowed {
        name: "a header chanto cannot send as written",
        applies: |_, n, e| {
            netlify_ok(n)
                && (says(e, "is set by chanto") || says(e, "is not a valid header name") || says(e, "printable ASCII"))
        },
    },
    // Netlify's parser skips such a line silently, so the headers after it
    // apply to the path before it; chanto names the line instead.
    Allowed {
        name: "a _headers line that is neither a path nor `Name: value`",
        applies: |u, n, e| {
            netlify_ok(n)
                && says(e, "expected a path starting with '/' or a header")
                && u.source().lines().any(|l| {
                    let t = l.trim();
                    !t.is_empty() && !t.starts_with('#') && !t.starts_with('/') && !t.contains(':')
                })
        },
    },
    // Password rules are plain path patterns, so that no regular-expression
    // budget can ever leave a protected path unprotected.
    Allowed {
        name: "Basic-Auth on a path with '*' before its end",
        applies: |_, n, e| netlify_ok(n) && says(e, "Basic-Auth on a path with '*'"),
    },
    // A redirect's `*` is a final splat in chanto (and in Netlify's docs);
    // Netlify's parser passes `/a/*/b` through without saying what it means.
    Allowed {
        name: "a redirect `from` with '*' before its end",
        applies: |_, n, e| {
            netlify_ok(n)
                && says(e, "'*' may only be the last segment")
                && n["redirects"][0]["path"].as_str().is_some_and(wildcard_inside)
        },
    },
    // Netlify keeps `X-R` and `x-r` as two headers, chanto one (names are
    // case-insensitive in HTTP): the same values, in file order in chanto.
    Allowed {
        name: "a header name repeated in another case",
        applies: |u, n, e| {
            e.is_empty()
                && n["headers"][0]["values"].as_object().is_some_and(|v| {
                    let names: Vec<String> = v.keys().map(|k| k.to_ascii_lowercase()).collect();
                    (1..names.len()).any(|i| names[..i].contains(&names[i]))
                })
                && u.file == "_headers"
        },
    },
];

/// How a probe path relates to the rule's path, for the matching check.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Probe {
    /// Both must agree.
    Plain,
    /// Netlify's expression makes the `/` before a `*` segment optional,
    /// so `/a/*` also matches `/ab`: chanto keeps `*` a whole segment
    /// (everything under /a), as Netlify's docs describe it.
    Fused,
    /// Netlify's expression ignores case; chanto's paths are
    /// case-sensitive, as files are (and Netlify's redirect paths).
    Case,
}

/// Paths to try a header rule's `for` on.
fn probes(pattern: &str) -> Vec<(String, Probe)> {
    let segs: Vec<&str> = pattern.split('/').map(str::trim_end).filter(|s| !s.is_empty()).collect();
    let fill = |v: usize, fuse: bool| -> String {
        let mut out = String::new();
        for (i, seg) in segs.iter().enumerate() {
            let piece = if *seg == "*" {
                ["", "x", "x/y"][v].to_owned()
            } else if seg.contains('*') {
                seg.replace('*', ["", "q", "q/r"][v])
            } else if seg.starts_with(':') {
                "v1".to_owned()
            } else {
                (*seg).to_owned()
            };
            if piece.is_empty() {
                continue;
            }
            if !(fuse && *seg == "*" && i > 0) {
                out.push('/');
            }
            out.push_str(&piece);
        }
        if out.is_empty() { "/".to_owned() } else { out }
    };
    let mut out: Vec<(String, Probe)> = (0..3).map(|v| (fill(v, false), Probe::Plain)).collect();
    let mid = fill(1, false);
    out.push((format!("{}/", mid.trim_end_matches('/')), Probe::Plain));
    out.push((format!("{}/extra", mid.trim_end_matches('/')), Probe::Plain));
    if let Some(i) = segs.iter().position(|s| !s.contains('*') && !s.starts_with(':')) {
        let mut other = segs.clone();
        other[i] = "zz";
        out.push((fill_with(&other), Probe::Plain));
    }
    if segs.iter().skip(1).any(|s| *s == "*") {
        out.push((fill(1, true), Probe::Fused));
    }
    if mid.to_ascii_uppercase() != mid {
        out.push((mid.to_ascii_uppercase(), Probe::Case));
    }
    out
}

fn fill_with(segs: &[&str]) -> String {
    let parts: Vec<String> =
        segs.iter().map(|s| if s.starts_with(':') { "v1".to_owned() } else { s.replace('*', "x") }).collect();
    format!("/{}", parts.join("/"))
}

/// Netlify's `forRegExp` ([source, flags]) as a Rust expression.
fn netlify_regex(re: &Value) -> regex::Regex {
    let source = re[0].as_str().unwrap();
    let flags = re[1].as_str().unwrap_or_default();
    let prefix = if flags.contains('i') { "(?i)" } else { "" };
    regex::Regex::new(&format!("{prefix}{source}")).unwrap_or_else(|e| panic!("Netlify's {source:?}: {e}"))
}

/// Two JSON values side by side, Netlify's on the left.
fn side_by_side(netlify: &Value, chanto: &Value) -> String {
    let left = serde_json::to_string_pretty(netlify).unwrap();
    let right = serde_json::to_string_pretty(chanto).unwrap();
    let (l, r): (Vec<&str>, Vec<&str>) = (left.lines().collect(), right.lines().collect());
    let width = l.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(20);
    let mut out = format!("    {:width$} | chanto\n", "netlify");
    for i in 0..l.len().max(r.len()) {
        let a = l.get(i).copied().unwrap_or("");
        let b = r.get(i).copied().unwrap_or("");
        let mark = if a.trim_end_matches(',') == b.trim_end_matches(',') { ' ' } else { '*' };
        let _ = writeln!(out, "  {mark} {a:width$} | {b}");
    }
    out
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const WORDS: &[&str] = &["blog", "news", "docs", "app", "shop", "old", "en", "fr", "v2", "page.html", "c%C3%A9"];
const COUNTRIES: &[&str] = &["us", "ca", "fr", "de", "au", "nz", "cn", "GB"];
const LANGUAGES: &[&str] = &["en", "fr", "zh", "es", "pt-br"];
const STATUS_CODES: &[&str] = &["200", "301", "302", "303", "307", "308", "404", "410"];

/// A generated redirect, as its fields.
struct GenRedirect {
    from: String,
    query: Vec<(String, String)>,
    /// `None`: a forward rule.
    to: Option<String>,
    /// With its `!`, if forced.
    status: Option<String>,
    /// `Country=us,ca` and such.
    conditions: Vec<String>,
}

/// One random but valid redirect.
fn generated_redirect(rng: &mut Rng) -> GenRedirect {
    let mut from = String::new();
    if rng.chance(10) {
        from.push_str(rng.pick(&["https://old.example", "http://blog.example.com", "https://WWW.Example.org"]));
    }
    let mut params = Vec::new();
    for _ in 0..1 + rng.below(3) {
        if rng.chance(25) {
            let name = rng.pick(&["year", "slug", "id_2", "lang"]);
            if !params.contains(&name) {
                params.push(name);
                from.push_str(&format!("/:{name}"));
                continue;
            }
        }
        from.push('/');
        from.push_str(rng.pick(WORDS));
    }
    let splat = rng.chance(40);
    if splat {
        from.push_str("/*");
    }
    let mut query = Vec::new();
    for _ in 0..rng.below(3) {
        let key = rng.pick(&["id", "tag", "q", "ref"]);
        if query.iter().any(|(k, _): &(String, String)| k == key) {
            continue;
        }
        let value = if rng.chance(80) { format!(":{key}") } else { String::new() };
        query.push((key.to_owned(), value));
    }
    let mut status = rng.chance(70).then(|| rng.pick(STATUS_CODES).to_owned());
    let forward = splat && query.is_empty() && rng.chance(10);
    let to = if forward {
        status = Some("200".into());
        None
    } else {
        let mut to = if rng.chance(15) { "https://new.example".to_owned() } else { String::new() };
        to.push('/');
        to.push_str(rng.pick(&["new", "index.html", "blog", "fr"]));
        for p in &params {
            if rng.chance(70) {
                to.push_str(&format!("/:{p}"));
            }
        }
        for (k, v) in &query {
            if !v.is_empty() && rng.chance(70) {
                to.push_str(&format!("/:{k}"));
            }
        }
        if splat && rng.chance(80) {
            to.push_str("/:splat");
        }
        Some(to)
    };
    if let Some(s) = status.as_mut()
        && rng.chance(30)
    {
        s.push('!');
    }
    let mut conditions = Vec::new();
    if status.is_some() && rng.chance(30) {
        if rng.chance(70) {
            let n = 1 + rng.below(3);
            let list: Vec<&str> = (0..n).map(|_| rng.pick(COUNTRIES)).collect();
            conditions.push(format!("{}={}", rng.pick(&["Country", "country"]), list.join(",")));
        }
        if rng.chance(40) {
            conditions.push(format!("Language={}", rng.pick(LANGUAGES)));
        }
        if rng.chance(10) {
            conditions.push(format!("{}=admin", rng.pick(&["Role", "role"])));
        }
        if rng.chance(5) {
            conditions.push("Sign=API_TOKEN".into());
        }
    }
    GenRedirect { from, query, to, status, conditions }
}

fn generated_redirects(rng: &mut Rng, lines: usize) -> String {
    let mut out = String::new();
    for _ in 0..lines {
        let GenRedirect { from, query, to, status, conditions } = generated_redirect(rng);
        let mut fields = vec![from];
        fields.extend(query.iter().map(|(k, v)| format!("{k}={v}")));
        fields.extend(to);
        fields.extend(status);
        fields.extend(conditions);
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.push_str(rng.pick(&[" ", "  ", "\t", "    "]));
            }
            out.push_str(f);
        }
        if rng.chance(10) {
            out.push_str(" # a comment");
        }
        out.push('\n');
    }
    out
}

const HEADER_PATHS: &[&str] = &[
    "/*",
    "/{w}/*",
    "/{w}/*/index.html",
    "/*/{w}/*",
    "/{w}/:id",
    "/*.css",
    "/{w}/*.js",
    "/{w}",
    "/{w}/{w}",
    "/{w}*",
    "/{w}/:id/*",
    "/*/{w}",
    "/",
];
const HEADERS: &[(&str, &str)] = &[
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "public, max-age=3600"),
    ("Cache-Control", "no-cache ,no-store"),
    ("Link", "</a.css>; rel=preload; as=style"),
    ("X-Robots-Tag", "noindex"),
    ("Access-Control-Allow-Origin", "*"),
    ("Content-Security-Policy", "default-src 'self'; img-src *"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
];

fn generated_path(rng: &mut Rng) -> String {
    let mut path = rng.pick(HEADER_PATHS).to_owned();
    while path.contains("{w}") {
        path = path.replacen("{w}", rng.pick(&["assets", "img", "docs", "templates", "blog"]), 1);
    }
    path
}

fn generated_headers(rng: &mut Rng, blocks: usize) -> String {
    let mut out = String::new();
    for _ in 0..blocks {
        let path = generated_path(rng);
        out.push_str(&path);
        out.push('\n');
        for _ in 0..1 + rng.below(3) {
            let (name, value) = HEADERS[rng.below(HEADERS.len())];
            let indent = rng.pick(&["  ", "\t", "    ", ""]);
            out.push_str(&format!("{indent}{name}: {value}\n"));
        }
        if !wildcard_inside(&path) && rng.chance(10) {
            out.push_str("  Basic-Auth: ann:secret1 bob:secret2\n");
        }
        if rng.chance(20) {
            out.push_str("# a comment\n\n");
        }
    }
    out
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn generated_toml(rng: &mut Rng, redirects: usize, headers: usize) -> String {
    let mut out = String::from("[build]\n  publish = \"dist\"\n\n");
    for _ in 0..redirects {
        let GenRedirect { from, query, to, status, conditions } = generated_redirect(rng);
        out.push_str(&format!("[[redirects]]\n  from = {}\n", toml_string(&from)));
        if let Some(to) = to {
            out.push_str(&format!("  to = {}\n", toml_string(&to)));
        }
        if let Some(s) = status {
            out.push_str(&format!("  status = {}\n", s.trim_end_matches('!')));
            if s.ends_with('!') {
                out.push_str("  force = true\n");
            }
        }
        if !query.is_empty() {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k} = {}", toml_string(v))).collect();
            out.push_str(&format!("  query = {{{}}}\n", q.join(", ")));
        }
        let conds: Vec<String> = conditions
            .iter()
            .filter_map(|c| c.split_once('='))
            .filter(|(k, _)| *k != "Sign")
            .map(|(k, v)| {
                let list: Vec<String> = v.split(',').map(toml_string).collect();
                format!("{k} = [{}]", list.join(", "))
            })
            .collect();
        if !conds.is_empty() {
            out.push_str(&format!("  conditions = {{{}}}\n", conds.join(", ")));
        }
        if conditions.iter().any(|c| c.starts_with("Sign=")) {
            out.push_str("  signed = \"API_TOKEN\"\n");
        }
        out.push('\n');
    }
    for _ in 0..headers {
        out.push_str(&format!("[[headers]]\n  for = {}\n  [headers.values]\n", toml_string(&generated_path(rng))));
        let mut seen = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let (name, value) = HEADERS[rng.below(HEADERS.len())];
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            match rng.below(3) {
                0 => out.push_str(&format!("    {name} = {}\n", toml_string(value))),
                1 => {
                    let items: Vec<String> = value.split(',').map(toml_string).collect();
                    out.push_str(&format!("    {name} = [{}]\n", items.join(", ")));
                }
                _ => out.push_str(&format!("    {name} = '''\n    {}'''\n", value.replace(',', ",\n    "))),
            }
        }
        out.push('\n');
    }
    out
}

/// The corpus: `tests/netlify-corpus/*/` and the generated files, by case name.
fn corpus() -> Vec<(String, Vec<(&'static str, String)>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netlify-corpus");
    let mut cases = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries.into_iter().filter(|p| p.is_dir()) {
        let files: Vec<(&'static str, String)> = ["_redirects", "_headers", "netlify.toml"]
            .into_iter()
            .filter_map(|f| std::fs::read_to_string(path.join(f)).ok().map(|t| (f, t)))
            .collect();
        cases.push((path.file_name().unwrap().to_string_lossy().into_owned(), files));
    }
    let mut rng = Rng(0x5eed_c4a7_0d1f_f00d);
    cases.push((
        "generated".to_owned(),
        vec![
            ("_redirects", generated_redirects(&mut rng, 200)),
            ("_headers", generated_headers(&mut rng, 40)),
            ("netlify.toml", generated_toml(&mut rng, 40, 20)),
        ],
    ));
    cases
}

fn run_node(modules: &Path, dirs: &[&Path]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/netlify-corpus/netlify-parse.mjs");
    let out = Command::new("node").arg(&script).arg(modules).args(dirs).output().expect("node runs");
    assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[test]
#[ignore = "needs node and @netlify/redirect-parser; scripts/test installs them"]
fn chanto_reads_netlify_rule_files_as_netlify_does() {
    let modules = match node_modules() {
        Ok(m) => m,
        Err(why) => {
            assert!(
                std::env::var_os("CHANTO_TEST_REQUIRE_BROWSER").is_none(),
                "CHANTO_TEST_REQUIRE_BROWSER is set but Netlify's parsers cannot run ({why}): run scripts/test, \
                 which installs @netlify/redirect-parser and @netlify/headers-parser into target/npm"
            );
            eprintln!("SKIPPED chanto_reads_netlify_rule_files_as_netlify_does: {why} (scripts/test installs it)");
            return;
        }
    };
    let scratch = std::env::temp_dir().join(format!("chanto-netlify-differential-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let cases = corpus();
    let mut all_units = Vec::new();
    let mut both_files = Vec::new();
    for (case, files) in &cases {
        for (file, text) in files {
            all_units.extend(units(&format!("{case}-"), file, text, &scratch));
        }
        let headers = files.iter().find(|(f, _)| *f == "_headers");
        let toml = files.iter().find(|(f, _)| *f == "netlify.toml");
        if let (Some((_, h)), Some((_, t))) = (headers, toml) {
            let dir = scratch.join(format!("{case}-whole"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("_headers"), h).unwrap();
            std::fs::write(dir.join("netlify.toml"), t).unwrap();
            both_files.push((case.clone(), h.clone(), t.clone(), dir));
        }
    }
    let mut dirs: Vec<&Path> = all_units.iter().map(|u| u.dir.as_path()).collect();
    dirs.extend(both_files.iter().map(|(_, _, _, d)| d.as_path()));
    let results = run_node(&modules, &dirs);
    assert_eq!(results.len(), dirs.len());

    let mut failures = Vec::new();
    let mut allowed_uses = vec![0usize; ALLOWED.len()];
    let (mut rules, mut probes_tried, mut roles_agreed, mut precedence_paths) = (0usize, 0usize, 0usize, 0usize);
    for (unit, result) in all_units.iter().zip(&results) {
        let netlify = match unit.file {
            "_redirects" => result["redirects_file"].clone(),
            "_headers" => result["headers_file"].clone(),
            _ if unit.source().trim_start().starts_with("[[redirects]]") => result["toml_redirects"].clone(),
            _ => result["toml_headers"].clone(),
        };
        let is_redirect = netlify.get("redirects").is_some();
        let chanto = compile(&[(unit.file, unit.text.as_bytes())]);
        let errs: &[RuleError] = chanto.as_ref().err().map_or(&[], Vec::as_slice);
        let netlify_error = !netlify_ok(&netlify);
        let (left, right) = match (&chanto, netlify_error) {
            (Err(_), true) => continue,
            (Err(_), false) | (Ok(_), true) => {
                let n = if netlify_error { json!({ "error": netlify["errors"] }) } else { netlify.clone() };
                let c = match &chanto {
                    Err(e) => json!({ "error": e.iter().map(ToString::to_string).collect::<Vec<_>>() }),
                    Ok(set) if is_redirect => chanto_redirect(set, unit.line),
                    Ok(set) => chanto_header(set),
                };
                (n, c)
            }
            (Ok(set), false) if is_redirect => {
                let n = netlify["redirects"].get(0).map_or(json!({ "nothing": true }), netlify_redirect);
                (n, chanto_redirect(set, unit.line))
            }
            (Ok(set), false) => {
                let n = netlify["headers"].get(0).map_or(json!({ "nothing": true }), netlify_header);
                (n, chanto_header(set))
            }
        };
        rules += 1;
        // Role rules: Netlify keeps them; chanto warns at their line and
        // makes no rule (it has no roles, and a rule applied to everyone
        // would open what the role guards).
        if left == right && left["never_applies"] == "role" {
            roles_agreed += 1;
        }
        if left != right {
            match ALLOWED.iter().position(|a| (a.applies)(unit, &netlify, errs)) {
                Some(i) => allowed_uses[i] += 1,
                None => failures.push(format!(
                    "{}:{} (case {}):\n{}\n{}",
                    unit.file,
                    unit.line,
                    unit.case.trim_end_matches('-'),
                    unit.source().trim_end(),
                    side_by_side(&left, &right)
                )),
            }
            continue;
        }
        // Which paths a header rule covers: chanto's matcher against the
        // expression Netlify's parser builds.
        if let (Ok(set), Some(h)) = (&chanto, netlify["headers"].get(0)) {
            let re = netlify_regex(&h["forRegExp"]);
            let headers = Matcher::new(&[], &set.headers, &[]);
            let auth = Matcher::new(&[], &[], &set.auth);
            for (probe, kind) in probes(h["for"].as_str().unwrap_or_default()) {
                probes_tried += 1;
                let want = re.is_match(&probe);
                let got_headers = !set.headers.is_empty() && !headers.headers_for(&probe).is_empty();
                let got_auth = !set.auth.is_empty() && auth.auth_for(&probe).is_some();
                for (what, present, got) in
                    [("headers", !set.headers.is_empty(), got_headers), ("Basic-Auth", !set.auth.is_empty(), got_auth)]
                {
                    if !present || got == want || (want && kind != Probe::Plain) {
                        continue;
                    }
                    failures.push(format!(
                        "{}:{} (case {}): {what} of {:?} on {probe:?} ({kind:?} probe): Netlify's /{}/ {}, chanto {}",
                        unit.file,
                        unit.line,
                        unit.case.trim_end_matches('-'),
                        h["for"],
                        re.as_str(),
                        if want { "matches" } else { "does not match" },
                        if got { "matches" } else { "does not" },
                    ));
                }
            }
        }
    }

    // `_headers` and `netlify.toml` together: which one's header wins.
    for ((case, h, t, _), result) in both_files.iter().zip(&results[all_units.len()..]) {
        let Ok(set) = compile(&[("_headers", h.as_bytes()), ("netlify.toml", t.as_bytes())]) else { continue };
        let merged = &result["headers_all"]["headers"];
        for path in ["/", "/docs/a", "/templates/a/index.html", "/x/images/y.png", "/assets/app.css"] {
            precedence_paths += 1;
            let mut want: BTreeMap<String, String> = BTreeMap::new();
            for rule in merged.as_array().into_iter().flatten() {
                if netlify_regex(&rule["forRegExp"]).is_match(path) {
                    for (name, value) in rule["values"].as_object().into_iter().flatten() {
                        if !name.eq_ignore_ascii_case("basic-auth") {
                            want.insert(name.to_ascii_lowercase(), value.as_str().unwrap_or_default().to_owned());
                        }
                    }
                }
            }
            // The edge sets each header in turn, a later rule replacing an earlier one's.
            let mut got: BTreeMap<String, String> = BTreeMap::new();
            for (name, value) in set.matcher().headers_for(path) {
                got.insert(name.to_ascii_lowercase(), value.to_owned());
            }
            if want != got {
                failures.push(format!(
                    "case {case}, _headers and netlify.toml together, headers of {path}:\n{}",
                    side_by_side(&json!(want), &json!(got))
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);

    let mut report = format!(
        "{rules} rules compared ({roles_agreed} Role rules refused with a warning by both), {probes_tried} probe \
         paths tried, {precedence_paths} paths with _headers and netlify.toml together\n"
    );
    for (a, n) in ALLOWED.iter().zip(&allowed_uses) {
        let _ = writeln!(report, "  allowed {n:3}x: {}", a.name);
    }
    eprintln!("{report}");
    assert!(
        failures.is_empty(),
        "{} disagreements with Netlify's parsers:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    let unused: Vec<&str> = ALLOWED.iter().zip(&allowed_uses).filter(|(_, n)| **n == 0).map(|(a, _)| a.name).collect();
    assert!(unused.is_empty(), "allow-list entries the corpus never needs (remove them): {unused:?}");
    assert!(rules > 300 && probes_tried > 300, "the corpus shrank: {rules} rules, {probes_tried} probes");
    assert!(roles_agreed >= 5 && precedence_paths >= 10, "{report}");
}

//! The compiled form of a rule set: a trie over path segments, so a lookup
//! walks the request path's segments once (following static, placeholder and
//! splat branches) instead of trying every rule, plus one `RegexSet` pass for
//! the regular-expression rules (those needing look-around are tried one by
//! one, within one budget per lookup: `RegexBudget`). Candidates are then checked in rule order
//! against host, query and conditions.

use std::collections::HashMap;

use crate::pattern::{Segment, split_path, substitute};
use crate::{HeaderRule, Origin, Redirect, Source};

/// Largest compiled regular expression (bytes of automaton).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Backtracking budget of one try of a look-around expression (the last of
/// [`TIERS`]).
const BACKTRACK_LIMIT: usize = 100_000;
/// Backtracking steps one lookup may spend on the expressions tried one by
/// one (look-around, backreferences), all of them together: a deploy's rules
/// cannot make a request cost more than this, however many they are.
pub const LOOKUP_BUDGET: usize = 1_000_000;
/// The step limits a look-around expression is tried with, cheapest first.
/// fancy-regex does not say how many steps a match used, so a try is charged
/// its whole limit; retrying with a larger limit only after the smaller one
/// ran out keeps the charge of a cheap expression small and the charge of a
/// costly one within 1.11 times its true cost.
const TIERS: [usize; 3] = [1_000, 10_000, BACKTRACK_LIMIT];

/// Compiles a rule's regular expression as the matcher will, or says why not.
pub fn compile_regex(re: &str) -> Result<fancy_regex::Regex, String> {
    compile_with_limit(re, BACKTRACK_LIMIT)
}

fn compile_with_limit(re: &str, limit: usize) -> Result<fancy_regex::Regex, String> {
    if re.len() > 4096 {
        return Err(format!("the expression is {} bytes; the limit is 4096", re.len()));
    }
    fancy_regex::RegexBuilder::new(re)
        .delegate_size_limit(REGEX_SIZE_LIMIT)
        .backtrack_limit(limit)
        .build()
        .map_err(|e| format!("invalid regular expression {re:?}: {e}"))
}

fn compile_plain(re: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(re).size_limit(REGEX_SIZE_LIMIT).build().ok()
}

/// Whether an expression needs the backtracking engine (look-around,
/// backreferences), so it is tried one by one, within [`LOOKUP_BUDGET`].
pub(crate) fn needs_backtracking(re: &str) -> bool {
    re.len() <= 4096 && compile_plain(re).is_none()
}

/// What one lookup may still spend on expressions tried one by one. Every
/// [`Matcher`] method without a budget argument starts a fresh one of
/// [`LOOKUP_BUDGET`]; a caller that wants one budget across several lookups
/// of one request passes the same budget to the `*_within` methods.
#[derive(Debug, Clone)]
pub struct RegexBudget {
    remaining: usize,
    tries: usize,
    exhausted: bool,
}

impl Default for RegexBudget {
    fn default() -> Self {
        Self::new(LOOKUP_BUDGET)
    }
}

impl RegexBudget {
    /// A budget of `steps` backtracking steps.
    pub fn new(steps: usize) -> Self {
        Self { remaining: steps, tries: 0, exhausted: false }
    }

    /// Steps left.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Expression runs charged so far.
    pub fn tries(&self) -> usize {
        self.tries
    }

    /// Whether a run was refused for want of budget: the expressions not
    /// run counted as not matching.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Takes `steps` if they are left.
    fn charge(&mut self, steps: usize) -> bool {
        if self.remaining < steps {
            self.exhausted = true;
            return false;
        }
        self.remaining -= steps;
        self.tries += 1;
        true
    }
}

/// A rule's expression, compiled for the engine it needs.
#[derive(Debug)]
enum Compiled {
    /// Linear time: the `regex` crate.
    Plain(regex::Regex),
    /// Look-around or backreferences: fancy-regex, once per limit of [`TIERS`].
    Backtracking(Box<[fancy_regex::Regex; 3]>),
}

/// Rules whose source is a regular expression.
#[derive(Debug)]
struct Regexes {
    /// Every regex rule: its index and compiled form (for captures).
    all: Vec<(u32, Compiled)>,
    /// Rule index → position in `all`.
    by_rule: HashMap<u32, usize>,
    /// The ones the plain engine takes, as one set: position → `all` index.
    set: Option<(regex::RegexSet, Vec<usize>)>,
    /// `all` indexes tried one by one, within the lookup's budget.
    one_by_one: Vec<usize>,
}

impl Regexes {
    fn new(sources: impl Iterator<Item = (u32, String)>) -> Self {
        let mut all = Vec::new();
        let (mut plain, mut plain_at, mut one_by_one) = (Vec::new(), Vec::new(), Vec::new());
        for (rule, re) in sources {
            let at = all.len();
            let compiled = match compile_plain(&re) {
                Some(p) => {
                    plain.push(re);
                    plain_at.push(at);
                    Compiled::Plain(p)
                }
                None => {
                    // Checked by `compile`; a stored rule that no longer compiles never matches.
                    let Ok(tiers) =
                        TIERS.iter().map(|limit| compile_with_limit(&re, *limit)).collect::<Result<Vec<_>, _>>()
                    else {
                        continue;
                    };
                    let Ok(tiers) = <[fancy_regex::Regex; 3]>::try_from(tiers) else { continue };
                    one_by_one.push(at);
                    Compiled::Backtracking(Box::new(tiers))
                }
            };
            all.push((rule, compiled));
        }
        let set = regex::RegexSetBuilder::new(&plain)
            .size_limit(REGEX_SIZE_LIMIT * 8)
            .build()
            .ok()
            .map(|s| (s, plain_at.clone()));
        // Too big as one set: try them one by one instead (charged too).
        if set.is_none() {
            one_by_one.extend(plain_at);
            one_by_one.sort_unstable();
        }
        let by_rule = all.iter().enumerate().map(|(at, (rule, _))| (*rule, at)).collect();
        Self { all, by_rule, set, one_by_one }
    }

    fn candidates(&self, path: &str, out: &mut Vec<u32>, budget: &mut RegexBudget) {
        if let Some((set, at)) = &self.set {
            out.extend(set.matches(path).iter().map(|i| self.all[at[i]].0));
        }
        for &i in &self.one_by_one {
            if budget.exhausted() {
                break;
            }
            let matched = match &self.all[i].1 {
                Compiled::Plain(re) => budget.charge(TIERS[0]) && re.is_match(path),
                Compiled::Backtracking(tiers) => tiered(tiers, budget, |re| re.is_match(path).ok()).unwrap_or(false),
            };
            if matched {
                out.push(self.all[i].0);
            }
        }
    }

    fn captures(&self, rule: u32, path: &str, budget: &mut RegexBudget) -> Option<Vec<(&str, String)>> {
        match &self.all[*self.by_rule.get(&rule)?].1 {
            Compiled::Plain(re) => {
                let caps = re.captures(path)?;
                Some(bindings(re.capture_names(), |i| caps.get(i).map(|m| m.as_str())))
            }
            Compiled::Backtracking(tiers) => {
                let (re, caps) = tiered(tiers, budget, |re| re.captures(path).ok().map(|c| c.map(|c| (re, c))))??;
                Some(bindings(re.capture_names(), |i| caps.get(i).map(|m| m.as_str())))
            }
        }
    }
}

/// Groups by number: Firebase's `regex` destinations refer to them as `:1`
/// … `:9`.
const GROUP_NUMBERS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// A match's placeholders: every group by its number (the first nine), and
/// named groups by name too.
fn bindings<'r, 'p>(
    names: impl Iterator<Item = Option<&'r str>>,
    group: impl Fn(usize) -> Option<&'p str>,
) -> Vec<(&'r str, String)> {
    let mut out = Vec::new();
    for (i, name) in names.enumerate().skip(1) {
        let Some(value) = group(i) else { continue };
        if let Some(number) = GROUP_NUMBERS.get(i) {
            out.push((*number, value.to_owned()));
        }
        if let Some(name) = name {
            out.push((name, value.to_owned()));
        }
    }
    out
}

/// Runs `f` with each limit of [`TIERS`] in turn, charging `budget` the
/// limit before each run, until one finishes within its limit; `None` when
/// every limit ran out or the budget did (counted as no match).
fn tiered<'r, T>(
    tiers: &'r [fancy_regex::Regex; 3],
    budget: &mut RegexBudget,
    mut f: impl FnMut(&'r fancy_regex::Regex) -> Option<T>,
) -> Option<T> {
    for (limit, re) in TIERS.iter().zip(tiers.iter()) {
        if !budget.charge(*limit) {
            return None;
        }
        if let Some(done) = f(re) {
            return Some(done);
        }
    }
    None
}

/// Path rules in a trie, regex rules in a set.
#[derive(Debug)]
struct Index {
    trie: Trie,
    regexes: Regexes,
}

impl Index {
    fn new<'a>(sources: impl Iterator<Item = &'a Source>) -> Self {
        let mut trie = Trie::new();
        let mut res = Vec::new();
        for (i, s) in sources.enumerate() {
            match s {
                Source::Path(p) => trie.insert(p.segments(), i as u32),
                Source::Regex(r) => res.push((i as u32, r.clone())),
            }
        }
        Self { trie, regexes: Regexes::new(res.into_iter()) }
    }

    fn candidates(&self, path: &str, segments: &[&str], budget: &mut RegexBudget) -> Vec<u32> {
        let mut out = self.trie.candidates(segments);
        self.regexes.candidates(path, &mut out, budget);
        out.sort_unstable();
        out.dedup();
        out
    }

    fn captures<'s>(
        &'s self,
        source: &'s Source,
        rule: u32,
        path: &str,
        segments: &[&str],
        budget: &mut RegexBudget,
    ) -> Option<Vec<(&'s str, String)>> {
        match source {
            Source::Path(p) => p.captures(segments),
            Source::Regex(_) => self.regexes.captures(rule, path, budget),
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    statics: HashMap<String, usize>,
    param: Option<usize>,
    /// Rules whose pattern ends in `*` here.
    splat: Vec<u32>,
    /// Rules whose pattern ends exactly here.
    end: Vec<u32>,
}

#[derive(Debug)]
struct Trie {
    nodes: Vec<Node>,
}

impl Trie {
    fn new() -> Self {
        Self { nodes: vec![Node::default()] }
    }

    fn insert(&mut self, segments: &[Segment], rule: u32) {
        let mut at = 0;
        for seg in segments {
            match seg {
                Segment::Splat => {
                    self.nodes[at].splat.push(rule);
                    return;
                }
                Segment::Static(s) => {
                    let next = self.nodes.len();
                    at = match self.nodes[at].statics.get(s) {
                        Some(&n) => n,
                        None => {
                            self.nodes.push(Node::default());
                            self.nodes[at].statics.insert(s.clone(), next);
                            next
                        }
                    };
                }
                Segment::Param(_) => {
                    at = match self.nodes[at].param {
                        Some(n) => n,
                        None => {
                            let next = self.nodes.len();
                            self.nodes.push(Node::default());
                            self.nodes[at].param = Some(next);
                            next
                        }
                    };
                }
            }
        }
        self.nodes[at].end.push(rule);
    }

    /// Every rule whose pattern can match `path`, in rule order.
    fn candidates(&self, path: &[&str]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut stack = vec![(0usize, 0usize)];
        while let Some((node, depth)) = stack.pop() {
            let n = &self.nodes[node];
            out.extend_from_slice(&n.splat);
            match path.get(depth) {
                None => out.extend_from_slice(&n.end),
                Some(seg) => {
                    if let Some(&next) = n.statics.get(*seg) {
                        stack.push((next, depth + 1));
                    }
                    if let Some(next) = n.param {
                        stack.push((next, depth + 1));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A request, as far as rules care.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleRequest<'a> {
    /// Host name, lower case, without port.
    pub host: &'a str,
    /// The normalised, decoded path (`/a/b`).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// The client's country (from the operator's trusted header), any case.
    pub country: Option<&'a str>,
    /// The `Accept-Language` header.
    pub accept_language: Option<&'a str>,
}

/// What a matching rule says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer `status` with `Location: location`.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// The target, placeholders filled in.
        location: String,
    },
    /// Serve the file at `path` with `status` (200, 404 or 410).
    Rewrite {
        /// The file to serve.
        path: String,
        /// The status to serve it with.
        status: u16,
    },
    /// Fetch `url` from another origin (a 200 to an absolute URL).
    Proxy {
        /// The URL, placeholders filled in.
        url: String,
    },
}

/// A rule set compiled for lookups.
#[derive(Debug)]
pub struct Matcher {
    redirects: Vec<Redirect>,
    redirect_index: Index,
    headers: Vec<HeaderRule>,
    header_index: Index,
    auth: Vec<crate::AuthRule>,
    auth_index: Index,
    /// Whether a redirect rule has country or language conditions.
    conditional: bool,
}

impl Matcher {
    /// Compiles rules (in evaluation order).
    pub fn new(redirects: &[Redirect], headers: &[HeaderRule], auth: &[crate::AuthRule]) -> Self {
        Self {
            auth_index: Index::new(auth.iter().map(|a| &a.path)),
            auth: auth.to_vec(),
            redirect_index: Index::new(redirects.iter().map(|r| &r.from)),
            header_index: Index::new(headers.iter().map(|h| &h.path)),
            redirects: redirects.to_vec(),
            headers: headers.to_vec(),
            conditional: redirects.iter().any(|r| !r.conditions.is_empty()),
        }
    }

    /// Whether [`Matcher::evaluate`] reads the request's country or
    /// language: otherwise its answer depends on host, path and query alone.
    pub fn reads_request_headers(&self) -> bool {
        self.conditional
    }

    /// The first rule that applies to `req`, and what it says. A rule that is
    /// not forced never applies where `file_exists(req.path)` (shadowing).
    pub fn evaluate(&self, req: &RuleRequest<'_>, file_exists: impl Fn(&str) -> bool) -> Option<(Action, &Origin)> {
        self.evaluate_within(req, file_exists, &mut RegexBudget::default())
    }

    /// [`Matcher::evaluate`], spending `budget` on expressions tried one by
    /// one; once it is exhausted they count as not matching.
    pub fn evaluate_within(
        &self,
        req: &RuleRequest<'_>,
        file_exists: impl Fn(&str) -> bool,
        budget: &mut RegexBudget,
    ) -> Option<(Action, &Origin)> {
        let segments = split_path(req.path);
        let candidates = self.redirect_index.candidates(req.path, &segments, budget);
        if candidates.is_empty() {
            return None;
        }
        let shadowed = file_exists(req.path);
        let params = req.query.map(parse_query).unwrap_or_default();
        for i in candidates {
            let rule = &self.redirects[i as usize];
            if shadowed && !rule.force {
                continue;
            }
            if rule.host.as_deref().is_some_and(|h| !h.eq_ignore_ascii_case(req.host)) {
                continue;
            }
            if !conditions_hold(rule, req) {
                continue;
            }
            let Some(mut bindings) = self.redirect_index.captures(&rule.from, i, req.path, &segments, budget) else {
                continue;
            };
            let mut query_ok = true;
            for (name, bind) in &rule.query {
                match params.iter().find(|(k, _)| k == name) {
                    Some((_, v)) => {
                        if let Some(b) = bind {
                            bindings.push((b.as_str(), v.clone()));
                        }
                    }
                    None => query_ok = false,
                }
            }
            query_ok &= rule.query_values.iter().all(|(name, want)| params.iter().any(|(k, v)| k == name && v == want));
            if !query_ok {
                continue;
            }
            let target = substitute(&rule.to, &bindings);
            let absolute = target.contains("://");
            let action = match rule.status {
                301 | 302 | 303 | 307 | 308 => {
                    let mut location = target;
                    // As on Netlify and Amplify: the query goes along unless
                    // the rule matched on it or the target has its own.
                    if rule.query.is_empty()
                        && rule.query_values.is_empty()
                        && !location.contains('?')
                        && let Some(q) = req.query.filter(|q| !q.is_empty())
                    {
                        location.push('?');
                        location.push_str(q);
                    }
                    Action::Redirect { status: rule.status, location }
                }
                200 if absolute => Action::Proxy { url: target },
                status => Action::Rewrite { path: target, status },
            };
            return Some((action, &rule.origin));
        }
        None
    }

    /// The users who may see `path`, if a rule puts it behind a password
    /// (the first matching rule; its users' hashes).
    /// (Password rules are path patterns, never expressions: `compile` makes
    /// no other kind, so no budget can leave a protected path unprotected.)
    pub fn auth_for(&self, path: &str) -> Option<&[crate::AuthUser]> {
        let segments = split_path(path);
        let budget = &mut RegexBudget::default();
        self.auth_index.candidates(path, &segments, budget).into_iter().find_map(|i| {
            let rule = &self.auth[i as usize];
            self.auth_index.captures(&rule.path, i, path, &segments, budget).map(|_| rule.users.as_slice())
        })
    }

    /// Every header the rules add to a response for `path`, in rule order.
    pub fn headers_for(&self, path: &str) -> Vec<(&str, &str)> {
        self.headers_for_within(path, &mut RegexBudget::default())
    }

    /// [`Matcher::headers_for`], spending `budget` on expressions tried one
    /// by one; once it is exhausted they count as not matching.
    pub fn headers_for_within(&self, path: &str, budget: &mut RegexBudget) -> Vec<(&str, &str)> {
        let segments = split_path(path);
        let mut out = Vec::new();
        for i in self.header_index.candidates(path, &segments, budget) {
            let rule = &self.headers[i as usize];
            if self.header_index.captures(&rule.path, i, path, &segments, budget).is_some() {
                out.extend(rule.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
        }
        out
    }
}

fn conditions_hold(rule: &Redirect, req: &RuleRequest<'_>) -> bool {
    let c = &rule.conditions;
    if !c.country.is_empty() {
        let Some(country) = req.country else { return false };
        if !c.country.iter().any(|w| w.eq_ignore_ascii_case(country.trim())) {
            return false;
        }
    }
    if !c.language.is_empty() {
        let Some(header) = req.accept_language else { return false };
        let langs: Vec<String> = header
            .split(',')
            .filter_map(|part| {
                let mut it = part.split(';');
                let tag = it.next()?.trim().to_ascii_lowercase();
                let refused = it.any(|p| p.trim().replace(' ', "") == "q=0");
                (!tag.is_empty() && !refused).then_some(tag)
            })
            .collect();
        let matches = |want: &str| {
            langs.iter().any(|l| l == want || l.split('-').next() == Some(want) || want.split('-').next() == Some(l))
        };
        if !c.language.iter().any(|w| matches(w)) {
            return false;
        }
    }
    true
}

/// `a=1&b=2` → pairs, percent-decoded (`+` as space).
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Conditions, PathPattern};

    fn rule(from: &str, to: &str, status: u16) -> Redirect {
        Redirect {
            host: None,
            from: Source::Path(PathPattern::parse(from).unwrap()),
            query: vec![],
            query_values: vec![],
            to: to.into(),
            status,
            force: false,
            conditions: Conditions::default(),
            origin: Origin { file: "_redirects".into(), line: 1 },
        }
    }

    fn eval(m: &Matcher, path: &str, query: Option<&str>) -> Option<Action> {
        m.evaluate(&RuleRequest { host: "example.com", path, query, ..Default::default() }, |_| false).map(|(a, _)| a)
    }

    #[test]
    fn first_matching_rule_wins() {
        let m = Matcher::new(
            &[
                rule("/blog/:year/*", "/news/:year/:splat", 301),
                rule("/blog/*", "/other", 302),
                rule("/*", "/index.html", 200),
            ],
            &[],
            &[],
        );
        assert_eq!(
            eval(&m, "/blog/2024/a/b", None),
            Some(Action::Redirect { status: 301, location: "/news/2024/a/b".into() })
        );
        assert_eq!(eval(&m, "/blog", None), Some(Action::Redirect { status: 302, location: "/other".into() }));
        assert_eq!(eval(&m, "/x", None), Some(Action::Rewrite { path: "/index.html".into(), status: 200 }));
        assert_eq!(
            eval(&m, "/blog", Some("a=1")),
            Some(Action::Redirect { status: 302, location: "/other?a=1".into() })
        );
    }

    #[test]
    fn files_shadow_unforced_rules() {
        let mut forced = rule("/a", "/b", 301);
        forced.force = true;
        let m = Matcher::new(&[rule("/*", "/index.html", 200)], &[], &[]);
        let req = RuleRequest { path: "/app.js", ..Default::default() };
        assert!(m.evaluate(&req, |p| p == "/app.js").is_none());
        let m = Matcher::new(&[forced], &[], &[]);
        assert!(m.evaluate(&RuleRequest { path: "/a", ..Default::default() }, |_| true).is_some());
    }

    #[test]
    fn query_host_and_conditions() {
        let mut q = rule("/store", "/blog/:id", 301);
        q.query = vec![("id".into(), Some("id".into()))];
        let mut h = rule("/*", "https://new.example.com/:splat", 301);
        h.host = Some("old.example.com".into());
        let mut c = rule("/", "/fr/", 302);
        c.conditions = Conditions { country: vec!["fr".into()], language: vec!["fr".into()] };
        let m = Matcher::new(&[q, h, c], &[], &[]);
        assert_eq!(
            eval(&m, "/store", Some("id=7&x=1")),
            Some(Action::Redirect { status: 301, location: "/blog/7".into() })
        );
        assert_eq!(eval(&m, "/store", Some("x=1")), None);
        let old = RuleRequest { host: "OLD.example.com", path: "/a/b", ..Default::default() };
        assert_eq!(
            m.evaluate(&old, |_| false).unwrap().0,
            Action::Redirect { status: 301, location: "https://new.example.com/a/b".into() }
        );
        let fr = RuleRequest {
            path: "/",
            country: Some("FR"),
            accept_language: Some("fr-CA,en;q=0.5"),
            ..Default::default()
        };
        assert!(m.evaluate(&fr, |_| false).is_some());
        let en = RuleRequest { accept_language: Some("en"), ..fr };
        assert!(m.evaluate(&en, |_| false).is_none());
        let nowhere = RuleRequest { country: None, ..fr };
        assert!(m.evaluate(&nowhere, |_| false).is_none());
    }

    #[test]
    fn headers_accumulate_in_order() {
        let h = |p: &str, k: &str, v: &str| HeaderRule {
            path: Source::Path(PathPattern::parse(p).unwrap()),
            headers: vec![(k.into(), v.into())],
            origin: Origin { file: "_headers".into(), line: 1 },
        };
        let m = Matcher::new(&[], &[h("/*", "X-A", "1"), h("/docs/:page", "X-B", "2"), h("/other", "X-C", "3")], &[]);
        assert_eq!(m.headers_for("/docs/intro"), vec![("X-A", "1"), ("X-B", "2")]);
        assert_eq!(m.headers_for("/"), vec![("X-A", "1")]);
    }

    /// Header rules from path patterns (the trie) and from expressions (the
    /// regex set, for Netlify paths with an inner `*`) apply in rule order,
    /// whichever index found them, so a later rule's header is the one the
    /// edge keeps.
    #[test]
    fn pattern_and_expression_header_rules_keep_rule_order() {
        let text = "/*\n  X-A: any\n/*/images/*\n  X-A: images\n/img/*\n  X-A: img\n/*.png\n  X-A: png\n";
        let set = crate::compile(&[("_headers", text.as_bytes())]).unwrap();
        assert!(matches!(set.headers[1].path, Source::Regex(_)) && matches!(set.headers[2].path, Source::Path(_)));
        let m = set.matcher();
        let values = |path: &str| m.headers_for(path).into_iter().map(|(_, v)| v).collect::<Vec<_>>();
        assert_eq!(values("/img/images/a.png"), ["any", "images", "img", "png"]);
        assert_eq!(values("/images/a.gif"), ["any", "images"]);
        assert_eq!(values("/img/a.gif"), ["any", "img"]);
        assert_eq!(values("/a.png"), ["any", "png"]);
        assert_eq!(values("/imagesx/a.gif"), ["any"]);
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// The trie finds exactly the rules whose pattern matches: never
        /// misses one (a wrong answer), never adds one (wasted work).
        #[test]
        fn trie_candidates_are_exactly_the_matching_patterns(
            patterns in proptest::collection::vec(
                proptest::collection::vec(proptest::prop_oneof![
                    proptest::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned),
                    proptest::strategy::Just(":p".to_owned()),
                ], 0..4).prop_flat_map(|segs| (proptest::strategy::Just(segs), proptest::bool::ANY)),
                1..20,
            ),
            path in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c", "d"]), 0..5),
        ) {
            let rules: Vec<Redirect> = patterns
                .iter()
                .map(|(segs, splat)| {
                    let mut p = format!("/{}", segs.join("/"));
                    if *splat {
                        p.push_str(if segs.is_empty() { "*" } else { "/*" });
                    }
                    rule(&p, "/x", 301)
                })
                .collect();
            let m = Matcher::new(&rules, &[], &[]);
            let joined = format!("/{}", path.join("/"));
            let got = m.redirect_index.candidates(&joined, &path, &mut RegexBudget::default());
            let want: Vec<u32> = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| match &r.from { Source::Path(p) => p.captures(&path).is_some(), Source::Regex(_) => false })
                .map(|(i, _)| i as u32)
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn auth_rules_cover_their_paths() {
        let set =
            crate::compile(&[("_headers", b"/admin/*\n  Basic-Auth: ann:pw1 bob:pw2\n  X-Robots-Tag: noindex\n")])
                .unwrap();
        let m = set.matcher();
        let users = m.auth_for("/admin/x").unwrap();
        assert_eq!(users.iter().map(|u| u.user.as_str()).collect::<Vec<_>>(), ["ann", "bob"]);
        assert_eq!(users[0].password.as_deref(), Some("pw1"));
        assert!(m.auth_for("/public").is_none());
        assert_eq!(m.headers_for("/admin/x"), vec![("X-Robots-Tag", "noindex")], "Basic-Auth is not a header");
        // The password never reaches the stored form.
        let stored = serde_json::to_string(&set).unwrap();
        assert!(!stored.contains("pw1"), "{stored}");
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("a=1+2&b=%41%zz&c"),
            vec![("a".into(), "1 2".into()), ("b".into(), "A%zz".into()), ("c".into(), String::new())]
        );
    }
}

//! Rule lookup and compile time at 10, 1,000 and 100,000 rules.
//!
//! `cargo bench -p chanto-rules --bench matcher` prints Markdown tables
//! (`bench/rules` writes them to `bench/results/rules.md`). Targets (issue
//! #4): lookup p50 under 1 µs at 100,000 rules; compiling 100,000 rules
//! under 1 s.
//!
//! A deploy has two rule files, as a migrated site might: a `_redirects` of
//! path rules (a quarter each exact paths, placeholders, splats and query
//! matches) and an `amplify-rules.json` of regular-expression rules (1% of
//! the rules), a few look-around rules (tried one by one on every lookup)
//! and the catch-all SPA rewrite last. Lookups are drawn so every kind is
//! measured on its own: hits spread uniformly over the path rules, over the
//! regex rules and over the look-around rules, and misses that fall through
//! to the catch-all. Every lookup's answer is checked against the rule it
//! was drawn for (file and line), so a wrong matcher fails the bench.
//!
//! Each lookup is timed on its own; the percentiles are over single
//! lookups. The clock's own cost (two `Instant::now` calls, measured with
//! nothing between them) is printed and included in every figure.

use std::hint::black_box;
use std::time::Instant;

use chanto_rules::{RuleRequest, compile};

/// How many rules of each kind a deploy of `n` rules has.
struct Mix {
    path: usize,
    regex: usize,
    lookaround: usize,
}

impl Mix {
    fn of(n: usize) -> Self {
        let lookaround = (1 + n / 1_000).min(5);
        let regex = (n / 100).max(1);
        Self { path: n - lookaround - regex - 1, regex, lookaround }
    }
}

/// The two rule files; the catch-all is the last Amplify rule.
fn rule_files(mix: &Mix) -> (String, String) {
    let mut redirects = String::with_capacity(mix.path * 48);
    for i in 0..mix.path {
        match i % 4 {
            0 => redirects.push_str(&format!("/docs/section-{i}/page  /manual/{i}/page  301\n")),
            1 => redirects.push_str(&format!("/blog-{i}/:year/:slug  /posts/{i}/:year/:slug  302\n")),
            2 => redirects.push_str(&format!("/old-{i}/*  /new-{i}/:splat  301\n")),
            _ => redirects.push_str(&format!("/store-{i} id=:id  /items/{i}/:id  301\n")),
        }
    }
    // One object per line, from line 2.
    let mut amplify = vec![];
    for k in 0..mix.regex {
        amplify.push(format!(r#"{{"source": "</^/re-{k}/([0-9]+)$/>", "target": "/r/{k}", "status": "301"}}"#));
    }
    for m in 0..mix.lookaround {
        amplify
            .push(format!(r#"{{"source": "</^/la-{m}/(?!private)[a-z]+$/>", "target": "/l/{m}", "status": "301"}}"#));
    }
    amplify.push(r#"{"source": "/<*>", "target": "/index.html", "status": "200"}"#.to_owned());
    (redirects, format!("[\n{}\n]\n", amplify.join(",\n")))
}

/// What a lookup is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Path,
    Regex,
    Lookaround,
    Miss,
}

const KINDS: [(Kind, &str); 4] = [
    (Kind::Path, "path rule hit"),
    (Kind::Regex, "regex rule hit"),
    (Kind::Lookaround, "look-around rule hit"),
    (Kind::Miss, "miss (catch-all)"),
];

/// A lookup: its kind, path, query and the rule that must answer it.
struct Lookup {
    kind: Kind,
    path: String,
    query: Option<&'static str>,
    file: &'static str,
    line: u32,
}

fn lookups(mix: &Mix, per_kind: usize) -> Vec<Lookup> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % below as u64) as usize
    };
    let catch_all = 2 + (mix.regex + mix.lookaround) as u32;
    let mut out = Vec::with_capacity(per_kind * 4);
    for _ in 0..per_kind {
        let i = next(mix.path);
        let (path, query) = match i % 4 {
            0 => (format!("/docs/section-{i}/page"), None),
            1 => (format!("/blog-{i}/2024/hello-world"), None),
            2 => (format!("/old-{i}/a/b/c.html"), None),
            _ => (format!("/store-{i}"), Some("id=42&ref=x")),
        };
        out.push(Lookup { kind: Kind::Path, path, query, file: "_redirects", line: i as u32 + 1 });
        let k = next(mix.regex);
        let path = format!("/re-{k}/{}", next(1_000_000));
        out.push(Lookup { kind: Kind::Regex, path, query: None, file: "amplify-rules.json", line: 2 + k as u32 });
        let m = next(mix.lookaround);
        let line = 2 + (mix.regex + m) as u32;
        let path = format!("/la-{m}/docs");
        out.push(Lookup { kind: Kind::Lookaround, path, query: None, file: "amplify-rules.json", line });
        // Near misses: a path rule's neighbour, a store rule without its
        // query, a look-around rule's excluded page, or an SPA route.
        let j = next(mix.path);
        let (path, query) = match next(4) {
            0 => (format!("/docs/section-{j}/other"), None),
            1 => (format!("/store-{}", j - j % 4 + 3), None),
            2 => (format!("/la-{}/private", next(mix.lookaround)), None),
            _ => (format!("/app/route-{j}/deep"), None),
        };
        out.push(Lookup { kind: Kind::Miss, path, query, file: "amplify-rules.json", line: catch_all });
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let clock = {
        let mut ns: Vec<u64> = (0..100_000)
            .map(|_| {
                let t = Instant::now();
                black_box(());
                t.elapsed().as_nanos() as u64
            })
            .collect();
        ns.sort_unstable();
        percentile(&ns, 0.5)
    };
    println!("Clock overhead per timed lookup (p50 of an empty timing): {clock} ns, included below.\n");
    println!("| Rules (path / regex / look-around / catch-all) | Compile (parse + build) |");
    println!("|---|---|");
    let mut results = Vec::new();
    for n in [10usize, 1_000, 100_000] {
        let mix = Mix::of(n);
        let (redirects, amplify) = rule_files(&mix);
        let t = Instant::now();
        let set = compile(&[("_redirects", redirects.as_bytes()), ("amplify-rules.json", amplify.as_bytes())])
            .expect("valid rules");
        let matcher = set.matcher();
        let compile_s = t.elapsed().as_secs_f64();
        assert_eq!(set.redirects.len(), n);
        println!("| {n} ({} / {} / {} / 1) | {:.1} ms |", mix.path, mix.regex, mix.lookaround, compile_s * 1000.0);

        let lookups = lookups(&mix, 50_000);
        // Every lookup is answered by the rule it was drawn for.
        for l in &lookups {
            let req = RuleRequest { host: "example.com", path: &l.path, query: l.query, ..Default::default() };
            let (_, origin) = matcher.evaluate(&req, |_| false).unwrap_or_else(|| panic!("{} found no rule", l.path));
            assert_eq!((origin.file.as_str(), origin.line), (l.file, l.line), "{} {:?}", l.path, l.query);
        }
        let mut ns: Vec<(Kind, u64)> = Vec::with_capacity(lookups.len());
        for l in &lookups {
            let req = RuleRequest { host: "example.com", path: &l.path, query: l.query, ..Default::default() };
            let t = Instant::now();
            black_box(matcher.evaluate(black_box(&req), |_| false));
            ns.push((l.kind, t.elapsed().as_nanos() as u64));
        }
        results.push((n, ns));
    }
    println!();
    println!("| Rules | Lookup | p50 | p90 | p99 | p99.9 | Lookups |");
    println!("|---|---|---|---|---|---|---|");
    for (n, ns) in &results {
        for (kind, name) in KINDS {
            let mut of_kind: Vec<u64> = ns.iter().filter(|(k, _)| *k == kind).map(|(_, t)| *t).collect();
            of_kind.sort_unstable();
            println!(
                "| {n} | {name} | {} ns | {} ns | {} ns | {} ns | {} |",
                percentile(&of_kind, 0.5),
                percentile(&of_kind, 0.9),
                percentile(&of_kind, 0.99),
                percentile(&of_kind, 0.999),
                of_kind.len()
            );
        }
        let mut all: Vec<u64> = ns.iter().map(|(_, t)| *t).collect();
        all.sort_unstable();
        println!(
            "| {n} | **all** | {} ns | {} ns | {} ns | {} ns | {} |",
            percentile(&all, 0.5),
            percentile(&all, 0.9),
            percentile(&all, 0.99),
            percentile(&all, 0.999),
            all.len()
        );
    }
}

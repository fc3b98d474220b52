//! Rule lookup and compile time at 10, 1,000 and 100,000 rules.
//!
//! `cargo bench -p chanto-rules --bench matcher` prints a Markdown table
//! (`bench/rules` writes it to `bench/results/rules.md`). Targets (issue #4):
//! lookup p50 under 1 µs at 100,000 rules; compiling 100,000 rules under 1 s.
//!
//! Rules are a `_redirects` file mixing the shapes real sites use: exact
//! paths, placeholders, splats, query matches, and a catch-all SPA rewrite at
//! the end. Lookups mix hits on every shape with misses that fall through to
//! the catch-all. Each sample times a batch of 64 lookups (the clock costs
//! more than one lookup); the per-lookup time is the batch's average.

use std::hint::black_box;
use std::time::Instant;

use chanto_rules::{RuleRequest, compile};

fn rules_file(n: usize) -> String {
    let mut out = String::with_capacity(n * 48);
    for i in 0..n.saturating_sub(1) {
        match i % 4 {
            0 => out.push_str(&format!("/docs/section-{i}/page  /manual/{i}/page  301\n")),
            1 => out.push_str(&format!("/blog-{i}/:year/:slug  /posts/{i}/:year/:slug  302\n")),
            2 => out.push_str(&format!("/old-{i}/*  /new-{i}/:splat  301\n")),
            _ => out.push_str(&format!("/store-{i} id=:id  /items/{i}/:id  301\n")),
        }
    }
    out.push_str("/*  /index.html  200\n");
    out
}

fn paths(n: usize, count: usize) -> Vec<(String, Option<&'static str>)> {
    let mut seed = 0x9e3779b97f4a7c15u64;
    (0..count)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed % n.max(1) as u64) as usize;
            match seed % 5 {
                0 => (format!("/docs/section-{i}/page"), None),
                1 => (format!("/blog-{i}/2024/hello-world"), None),
                2 => (format!("/old-{i}/a/b/c.html"), None),
                3 => (format!("/store-{i}"), Some("id=42&ref=x")),
                _ => (format!("/app/route-{i}/deep"), None),
            }
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    println!("| Rules | Compile (parse + build) | Lookup p50 | Lookup p99 | Lookups |");
    println!("|---|---|---|---|---|");
    for n in [10usize, 1_000, 100_000] {
        let text = rules_file(n);
        let t = Instant::now();
        let set = compile(&[("_redirects", text.as_bytes())]).expect("valid rules");
        let matcher = set.matcher();
        let compile_s = t.elapsed().as_secs_f64();
        assert_eq!(set.redirects.len(), n);

        let lookups = paths(n, 64 * 4096);
        // Warm up, and check every lookup finds a rule.
        for (p, q) in &lookups[..4096] {
            let req = RuleRequest { host: "example.com", path: p, query: *q, ..Default::default() };
            assert!(matcher.evaluate(&req, |_| false).is_some(), "{p}");
        }
        let mut per_lookup_ns = Vec::with_capacity(lookups.len() / 64);
        for batch in lookups.chunks(64) {
            let t = Instant::now();
            for (p, q) in batch {
                let req = RuleRequest { host: "example.com", path: p, query: *q, ..Default::default() };
                black_box(matcher.evaluate(black_box(&req), |_| false));
            }
            per_lookup_ns.push(t.elapsed().as_nanos() as f64 / batch.len() as f64);
        }
        per_lookup_ns.sort_by(f64::total_cmp);
        println!(
            "| {n} | {:.1} ms | {:.0} ns | {:.0} ns | {} |",
            compile_s * 1000.0,
            percentile(&per_lookup_ns, 0.5),
            percentile(&per_lookup_ns, 0.99),
            lookups.len()
        );
    }
}

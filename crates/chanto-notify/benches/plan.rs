//! How long the deploy plan of a pull-request comment takes at 1,000, 10,000
//! and 100,000 files (a tenth changed, a seventh removed, 1,000 added).
//!
//! `cargo bench -p chanto-notify --bench plan` prints a Markdown table: the
//! median and the slowest of 11 runs per size. The plan is built while a
//! notification is rendered, so it must stay well under a second at the
//! largest deploys chanto accepts.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chanto_notify::{PlanFile, PlanSide, deploy_plan};

fn sides(n: u64) -> (PlanSide, PlanSide) {
    let file = |path: String, hash: &str, size: u64| PlanFile { path, hash: hash.into(), size };
    let base: Vec<PlanFile> = (0..n).map(|i| file(format!("dir{}/file{i}.html", i % 97), "h", i)).collect();
    let mut head: Vec<PlanFile> = base.iter().rev().cloned().collect();
    for (k, f) in head.iter_mut().enumerate() {
        if k % 10 == 0 {
            f.hash = "h2".into();
        }
    }
    head.retain(|f| f.size % 7 != 0);
    head.extend((0..1000).map(|i| file(format!("new/{i}"), "n", 1)));
    (PlanSide { files: base, rules: vec![] }, PlanSide { files: head, rules: vec![] })
}

fn main() {
    println!("| files | median | slowest of 11 |");
    println!("|---:|---:|---:|");
    for n in [1_000u64, 10_000, 100_000] {
        let (base, head) = sides(n);
        let mut times: Vec<Duration> = (0..11)
            .map(|_| {
                let start = Instant::now();
                black_box(deploy_plan(Some(black_box(&base)), black_box(&head)));
                start.elapsed()
            })
            .collect();
        times.sort();
        println!("| {n} | {:.1} ms | {:.1} ms |", ms(times[5]), ms(times[10]));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

//! Storage cleanup through the real binary: `chanto sites update
//! --keep-deploys`, `chanto gc --dry-run` (changes nothing, and says what
//! the following `chanto gc` then does, to the byte), and bad input to each.

mod util;

use std::collections::BTreeMap;
use std::path::Path;

use util::{Server, files_under, http_get, write_tree};

/// Blobs on disk (staged or in place), by name, with their sizes.
fn blobs_on_disk(data: &Path) -> BTreeMap<String, u64> {
    files_under(&data.join("blobs"))
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            let shard = p.parent()?.file_name()?.to_str()?.to_owned();
            // Names of blobs only: a shard of two hex digits and the rest of the hash.
            (shard.len() == 2 && name.len() == 62).then(|| (format!("{shard}{name}"), p.metadata().unwrap().len()))
        })
        .collect()
}

#[test]
fn gc_dry_run_reports_what_gc_then_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &["--gc-grace", "0s", "--rollback-depth", "0"]);
    server.cli(&["sites", "create", "docs"]).ok();
    let site = tmp.path().join("site");
    let mut ids = Vec::new();
    for n in 1..=3 {
        write_tree(&site, &[("index.html", &format!("<h1>version {n}</h1>")), ("logo.svg", "<svg/>")]);
        let d = server.cli(&["deploy", site.to_str().unwrap(), "--site", "docs", "--json"]).ok().json();
        ids.push(d["deploy"]["id"].as_str().unwrap().to_owned());
    }
    let r = server.cli(&["sites", "update", "docs"]).ok();
    assert!(r.stdout().contains("keeps every deploy"), "{}", r.report());
    let r = server.cli(&["sites", "update", "docs", "--keep-deploys", "1"]).ok();
    assert!(r.stdout().contains("newest 1 deploys"), "{}", r.report());
    let permalink = format!("{}--docs.localhost", ids[0]);
    assert_eq!(http_get(&server.edge, &permalink, "/").unwrap().status, 200);

    // The dry run: two old deploys, their pages and manifests; nothing changes.
    let before = blobs_on_disk(&data);
    let dry = server.cli(&["gc", "--dry-run", "--json"]).ok().json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["deploys_pruned"], 2, "{dry}");
    assert_eq!(dry["pruned"][0]["deploys"], serde_json::json!([ids[1], ids[0]]));
    assert_eq!(dry["blobs_deleted"], 4, "{dry}");
    assert_eq!(blobs_on_disk(&data), before, "a dry run deletes nothing");
    assert_eq!(http_get(&server.edge, &permalink, "/").unwrap().status, 200, "nor prunes anything");
    let text = server.cli(&["gc", "--dry-run"]).ok();
    assert!(text.stdout().contains("Would prune 2 deploy(s) of docs/main"), "{}", text.report());
    assert!(text.stdout().contains("Dry run: nothing was changed"), "{}", text.report());
    let list = server.cli(&["deploys", "list", "--site", "docs", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 3);

    // The real run matches the dry run, to the byte.
    let real = server.cli(&["gc", "--json"]).ok().json();
    assert_eq!(real["dry_run"], false);
    for key in ["deploys_pruned", "pruned", "blobs_deleted", "bytes_deleted"] {
        assert_eq!(real[key], dry[key], "{key}: dry run {dry}, real {real}");
    }
    let after = blobs_on_disk(&data);
    let freed: u64 = before.iter().filter(|(k, _)| !after.contains_key(*k)).map(|(_, v)| v).sum();
    assert_eq!(before.len() - after.len(), 4);
    assert_eq!(real["bytes_deleted"].as_u64().unwrap(), freed);
    // Pruned deploys are gone from listings and permalinks; the live one is whole.
    let list = server.cli(&["deploys", "list", "--site", "docs", "--json"]).ok().json();
    let listed: Vec<&str> = list.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[2].as_str()]);
    assert_eq!(http_get(&server.edge, &permalink, "/").unwrap().status, 404);
    let r = server.cli(&["deploys", "show", &ids[0]]).fails();
    assert!(r.stderr().contains(&format!("there is no deploy {}", ids[0])), "{}", r.report());
    let live = http_get(&server.edge, "docs.localhost", "/").unwrap();
    assert_eq!((live.status, live.text()), (200, "<h1>version 3</h1>".to_owned()));
    assert_eq!(http_get(&server.edge, "docs.localhost", "/logo.svg").unwrap().status, 200);
    // Nothing left to do.
    let again = server.cli(&["gc"]).ok();
    assert!(again.stdout().contains("0 deploys pruned, 0 blobs"), "{}", again.report());
}

#[test]
fn bad_gc_and_retention_input_is_refused_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &[]);
    server.cli(&["sites", "create", "docs"]).ok();
    server.cli(&["sites", "update", "docs", "--keep-deploys", "4"]).ok();
    for bad in ["-1", "10001", "99999999999999999999", "abc", "", "1.5"] {
        let r = server.cli(&["sites", "update", "docs", &format!("--keep-deploys={bad}")]).fails();
        assert!(r.stderr().contains("--keep-deploys"), "{bad}: {}", r.report());
    }
    let r = server.cli(&["sites", "update", "docs", "--json"]).ok().json();
    assert_eq!(r["keep_deploys"], 4, "refused input changed nothing");
    let r = server.cli(&["sites", "update", "nope", "--keep-deploys", "1"]).fails();
    assert!(r.stderr().contains("nope"), "{}", r.report());
    let r = server.cli(&["gc", "--dry-run=maybe"]).fails();
    assert!(r.stderr().contains("--dry-run"), "{}", r.report());
    // Without a valid token: refused before anything runs.
    let r = server.cli(&["gc"]).env("CHANTO_TOKEN", "chanto_wrong").fails();
    assert!(r.stderr().to_lowercase().contains("token"), "{}", r.report());
    let r = server.cli(&["sites", "update", "docs", "--keep-deploys", "1"]).env("CHANTO_TOKEN", "chanto_wrong").fails();
    assert!(r.stderr().to_lowercase().contains("token"), "{}", r.report());
    // A grace period that is not a duration stops the server before it starts.
    let other = tmp.path().join("other");
    let ports = ["--edge", "127.0.0.1:0", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"];
    for (flag, bad) in [("--gc-grace", "banana"), ("--gc-grace", "-1h"), ("--rollback-depth", "-3")] {
        let arg = format!("{flag}={bad}");
        let args = [&["serve", "--data", other.to_str().unwrap()][..], &ports[..], &[arg.as_str()][..]].concat();
        let r = util::Cli::new(&args).fails();
        assert!(r.stderr().contains(flag), "{flag}={bad}: {}", r.report());
    }
}

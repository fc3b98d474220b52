//! `chanto gc [--dry-run]` and `chanto sites update --keep-deploys`: storage
//! cleanup through the API (`POST /gc`, `PUT /sites/{site}/retention`).

use chanto_control::gc::{GcReport, GcRequest, Retention};

use crate::client::{Client, seg};
use crate::commands::{parse, print_json, when};
use crate::deploy::human_bytes;

/// Runs (or with `dry_run` previews) retention and garbage collection on the server.
pub async fn gc(client: &Client, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let r: GcReport = client.post("/gc", &GcRequest { dry_run }).await?;
    if json {
        return print_json(&r);
    }
    let (verb_pruned, verb_deleted) = if dry_run { ("Would prune", "would go") } else { ("Pruned", "deleted") };
    for p in &r.pruned {
        println!("{verb_pruned} {} deploy(s) of {}/{}: {}", p.deploys.len(), p.site, p.branch, p.deploys.join(" "));
    }
    println!(
        "{} deploys {}, {} blobs ({}) {verb_deleted}",
        r.deploys_pruned,
        if dry_run { "to prune" } else { "pruned" },
        r.blobs_deleted,
        human_bytes(r.bytes_deleted)
    );
    match r.next_deletable_at {
        Some(at) => println!(
            "{} ({}) within the {} grace period; the first becomes deletable at {}",
            crate::commands::count(r.blobs_waiting, "unreferenced blob"),
            human_bytes(r.bytes_waiting),
            humantime::format_duration(std::time::Duration::from_secs(r.grace_seconds)),
            when(at)
        ),
        None => println!(
            "No unreferenced blob is waiting out the grace period ({}).",
            humantime::format_duration(std::time::Duration::from_secs(r.grace_seconds))
        ),
    }
    if dry_run {
        println!("Dry run: nothing was changed. Run `chanto gc` to do it.");
    }
    Ok(())
}

/// Sets a site's settings (today: retention), or shows them.
pub async fn update_site(client: &Client, name: &str, keep_deploys: Option<u32>, json: bool) -> anyhow::Result<()> {
    parse::<chanto_core::SiteName>("site name", name)?;
    let path = format!("/sites/{}/retention", seg(name));
    let r: Retention = match keep_deploys {
        Some(keep_deploys) => client.put(&path, &Retention { keep_deploys }).await?,
        None => client.get(&path).await?,
    };
    if json {
        return print_json(&r);
    }
    match r.keep_deploys {
        0 => println!("Site {name} keeps every deploy."),
        n => println!(
            "Site {name} keeps the newest {n} deploys of each branch (and any a rollback can reach); `chanto gc --dry-run` shows what goes."
        ),
    }
    Ok(())
}

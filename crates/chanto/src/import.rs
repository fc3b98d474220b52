//! `chanto import amplify|netlify`: turns the JSON a platform's own tools
//! print into chanto's files (`chanto_control::import` does the reading),
//! and says what did not carry over. No network, no server.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

/// `chanto import …`.
#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// An AWS Amplify app, from the JSON `aws amplify get-app --app-id ID`,
    /// `list-branches --app-id ID` and `list-domain-associations --app-id ID`
    /// print (saved to files, given in any order; the app is required).
    #[command(after_help = "Example:\n  \
        aws amplify get-app --app-id d2abc > app.json\n  \
        aws amplify list-branches --app-id d2abc > branches.json\n  \
        chanto import amplify app.json branches.json --out migrated/")]
    Amplify(ImportArgs),
    /// A Netlify site, from the site object its API returns
    /// (`netlify api getSite --data '{"site_id": "ID"}' > site.json`).
    Netlify(ImportArgs),
}

/// What both imports take.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The JSON files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to write chanto's files (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Replace files that are already there.
    #[arg(long)]
    pub force: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Outcome {
    site: String,
    written: Vec<String>,
    report: Vec<ReportLine>,
}

#[derive(Serialize)]
struct ReportLine {
    field: String,
    message: String,
}

/// Runs an import.
pub fn run(cmd: ImportCommand, json: bool) -> anyhow::Result<()> {
    let (platform, args) = match cmd {
        ImportCommand::Amplify(a) => ("amplify", a),
        ImportCommand::Netlify(a) => ("netlify", a),
    };
    let mut inputs = Vec::new();
    for path in &args.files {
        let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        if meta.len() > chanto_control::import::MAX_IMPORT_BYTES as u64 {
            bail!(
                "{}: {} bytes; the limit is {}",
                path.display(),
                meta.len(),
                chanto_control::import::MAX_IMPORT_BYTES
            );
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {} (as UTF-8 JSON)", path.display()))?;
        inputs.push((path.display().to_string(), text));
    }
    let refs: Vec<(&str, &str)> = inputs.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let imported = match platform {
        "amplify" => chanto_control::import::amplify(&refs)?,
        _ => {
            if refs.len() != 1 {
                bail!("give one file: the site object of one Netlify site");
            }
            chanto_control::import::netlify(refs[0].0, refs[0].1)?
        }
    };
    let (config, notes) = chanto_control::import::to_platform_toml(&imported.site);
    let mut files: Vec<(String, String)> = vec![("chanto.platform.toml".to_owned(), config)];
    files.extend(imported.site.files.iter().cloned());
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    if !args.force {
        let taken: Vec<String> = files
            .iter()
            .map(|(n, _)| args.out.join(n))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !taken.is_empty() {
            bail!(
                "{} already there; nothing written (pass --force to replace, or --out another directory)",
                taken.join(", ")
            );
        }
    }
    let mut written = Vec::new();
    for (name, text) in &files {
        let path = args.out.join(name);
        write_new(&path, text)?;
        written.push(path.display().to_string());
    }
    let report: Vec<ReportLine> = imported
        .report
        .iter()
        .chain(&notes)
        .map(|n| ReportLine { field: n.field.clone(), message: n.message.clone() })
        .collect();
    if json {
        return crate::commands::print_json(&Outcome { site: imported.site.name.clone(), written, report });
    }
    println!("Imported the {platform} site as {}:", imported.site.name);
    for w in &written {
        println!("  wrote {w}");
    }
    if report.is_empty() {
        println!("Everything carried over.");
    } else {
        println!("Not carried over as it was ({}):", report.len());
        for r in &report {
            println!("  {}: {}", r.field, r.message);
        }
    }
    println!(
        "Next: put the rule files at the root of what you deploy (amplify.yml at the repository's root). {file} \
         declares the site's settings: set the variables its env: references name, then \
         `chanto plan -f {file} --site {site} --out plan.json` shows what it would change (--site leaves your \
         other sites alone) and `chanto apply plan.json` makes it so.",
        file = args.out.join("chanto.platform.toml").display(),
        site = imported.site.name
    );
    Ok(())
}

/// Writes a file whole or not at all.
fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("chanto-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

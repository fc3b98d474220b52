//! `chanto completions SHELL` and `chanto man`: shell completion scripts and
//! man pages generated from the clap definitions in `cli.rs`, so they never
//! drift from the real flags.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Arguments of `chanto completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `chanto man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command (chanto.1, chanto-sites.1, chanto-sites-create.1, ...)
    /// into this directory instead of printing chanto(1) to standard output.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The command tree as the binary parses it, named `chanto` whatever the
/// executable is called (completions bind to the name users type).
fn command() -> clap::Command {
    crate::cli::command().bin_name("chanto")
}

/// Prints the completion script for one shell to standard output.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command(), "chanto", &mut out);
    out.flush().context("writing the completion script to standard output")?;
    Ok(())
}

/// Prints chanto(1), or writes every page into `--out`.
pub fn man(args: &ManArgs) -> anyhow::Result<()> {
    match &args.out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command(), dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            let mut pages: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("chanto") && n.ends_with(".1"))
                .collect();
            pages.sort();
            eprintln!("wrote {} man pages to {} (chanto.1 is the top page)", pages.len(), dir.display());
            Ok(())
        }
        None => {
            // As generate_to does: no `help` subcommand, which has no page.
            let mut cmd = command().disable_help_subcommand(true);
            cmd.build();
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd).render(&mut out).context("writing the man page to standard output")?;
            out.flush().context("writing the man page to standard output")?;
            Ok(())
        }
    }
}

//! The `chanto` binary: the server (`serve`, `demo`) and the CLI that talks to
//! its API. Glue only: parsing, printing and wiring the library crates.

mod cli;
mod client;
mod commands;
mod demo;
mod deploy;
mod hashcache;
mod serve;
mod walk;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

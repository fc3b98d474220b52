//! The `chanto` binary: the server (`serve`, `demo`) and the CLI that talks to
//! its API. Glue only: parsing, printing and wiring the library crates.

mod accounts;
mod backup;
mod builds;
mod cli;
mod client;
mod commands;
mod completions;
mod demo;
mod deploy;
mod dev;
mod domains;
mod edge_node;
mod gc;
mod glance;
mod hashcache;
mod https;
mod import;
mod migrate;
mod nodes;
mod notify;
mod platform;
mod reload;
mod serve;
mod table;

/// mimalloc instead of glibc malloc: the edge allocates per request, and glibc's
/// malloc and free were 8% of its profile serving small files.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Inside a build's sandbox the binary is the sandbox's init and proxy
    // relay: nothing else of the CLI, no async runtime.
    let mut raw = std::env::args_os();
    if raw.nth(1).is_some_and(|a| a == chanto_control::builds::init::SUBCOMMAND) {
        return chanto_control::builds::init::main(raw.collect());
    }
    let args = cli::parse();
    if !matches!(args.command, cli::Command::Serve(_) | cli::Command::Demo(_) | cli::Command::Dev(_)) {
        // The client commands are short-lived: each fresh 2 MB huge page the
        // allocator touches is zeroed whole, which was 35% of a redeploy's
        // CPU (perf). The servers keep them: the edge answered a 1 KB request
        // in 15.3 instead of 23.8 µs with them (bench/serve).
        let _ = rustix::thread::disable_transparent_huge_pages(true);
        // `chanto deploys list | head`: a reader that went away ends the
        // command quietly, as SIGPIPE would (Rust ignores SIGPIPE, and
        // restoring it needs unsafe code), instead of a panic and a backtrace.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
                std::process::exit(141);
            }
            default(info)
        }));
    }
    // Blocking work (SQLite, file IO, compression) runs on at most 32 threads:
    // the default of 512 let each thread keep its own malloc arena, and a
    // 10,000-file deploy grew the server to 1 GB resident (334 MB with 32).
    let runtime = match tokio::runtime::Builder::new_multi_thread().max_blocking_threads(32).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (code, error) = commands::outcome(runtime.block_on(commands::run(args)));
    if let Some(e) = error {
        eprintln!("error: {e}");
    }
    std::process::ExitCode::from(code)
}

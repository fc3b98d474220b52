//! What runs first inside a build's sandbox (`chanto __build-init`): the
//! sandbox has its own network namespace with only loopback, so this relays
//! `127.0.0.1:<port>` (where `HTTP_PROXY` points) to the egress proxy's Unix
//! socket bound into the sandbox, then runs the build's command in its place. Plain threads, no async runtime: it must stay small and
//! it never outlives the command (the sandbox's pid namespace ends with it).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

/// The subcommand name the server runs inside the sandbox.
pub const SUBCOMMAND: &str = "__build-init";
/// Where the egress proxy's socket appears inside the sandbox.
pub const SANDBOX_SOCKET: &str = "/chanto/egress.sock";
/// Where the chanto binary appears inside the sandbox.
pub const SANDBOX_PROGRAM: &str = "/chanto/chanto";
/// The loopback port builds reach the proxy at.
pub const PROXY_PORT: u16 = 3128;

/// Runs the init: `__build-init [--relay SOCK --port P] [--memory BYTES]
/// [--file-size BYTES] [--processes N] -- PROGRAM ARGS…`. `args` are the
/// arguments after the subcommand name. The limits are set as both soft and
/// hard limits (`RLIMIT_DATA`, `RLIMIT_FSIZE`, `RLIMIT_NPROC`; core dumps
/// off), so the command inherits them and cannot raise them.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let fail = |m: String| {
        let _ = writeln!(std::io::stderr(), "chanto build sandbox: {m}");
        ExitCode::from(125)
    };
    let mut relay: Option<PathBuf> = None;
    let mut relay_only = false;
    let mut port = PROXY_PORT;
    let mut it = args.into_iter();
    let mut command = Vec::new();
    let mut limits = vec![(rustix::process::Resource::Core, 0)];
    while let Some(a) = it.next() {
        let resource = match a.to_str() {
            Some("--memory") => Some(rustix::process::Resource::Data),
            Some("--file-size") => Some(rustix::process::Resource::Fsize),
            Some("--processes") => Some(rustix::process::Resource::Nproc),
            _ => None,
        };
        if let Some(resource) = resource {
            match it.next().and_then(|n| n.to_str().and_then(|n| n.parse::<u64>().ok())) {
                Some(n) => limits.push((resource, n)),
                None => return fail(format!("{a:?} takes a number")),
            }
            continue;
        }
        match a.to_str() {
            Some("--relay") => relay = it.next().map(PathBuf::from),
            Some("--relay-only") => relay_only = true,
            Some("--port") => match it.next().and_then(|p| p.to_str().and_then(|p| p.parse().ok())) {
                Some(p) => port = p,
                None => return fail("--port takes a port number".into()),
            },
            Some("--") => {
                command = it.by_ref().collect();
                break;
            }
            _ => return fail(format!("unexpected argument {a:?}")),
        }
    }
    if relay_only {
        let Some(sock) = relay else { return fail("--relay-only needs --relay SOCK".into()) };
        return serve_relay(&sock, port);
    }
    let Some((program, rest)) = command.split_first() else {
        return fail("no command given after --".into());
    };
    // The relay runs as a process of its own, started before the limits
    // are set: under a small memory limit this process could not start a
    // thread per connection. The command starts once it listens.
    let _relay = match relay {
        Some(sock) => match start_relay(&sock, port) {
            Ok(child) => Some(child),
            Err(e) => return fail(e),
        },
        None => None,
    };
    // The command replaces this process (so its status is the sandbox's),
    // and inherits limits it cannot raise. The command is made before the
    // limits are set: under them this process may not allocate much more.
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    for (resource, n) in limits {
        let limit = rustix::process::Rlimit { current: Some(n), maximum: Some(n) };
        if let Err(e) = rustix::process::setrlimit(resource, limit) {
            return fail(format!("setting the limit {resource:?} to {n}: {e}"));
        }
    }
    use std::os::unix::process::CommandExt;
    let e = cmd.exec();
    fail(format!("starting {program:?}: {e}"))
}

/// Starts `__build-init --relay-only` and waits until it listens.
fn start_relay(sock: &std::path::Path, port: u16) -> Result<std::process::Child, String> {
    use std::io::BufRead;
    let exe = std::env::current_exe().map_err(|e| format!("finding the init's own binary: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .arg(SUBCOMMAND)
        .arg("--relay")
        .arg(sock)
        .arg("--port")
        .arg(port.to_string())
        .arg("--relay-only")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the proxy relay: {e}"))?;
    let mut line = String::new();
    let out = child.stdout.take().expect("piped");
    std::io::BufReader::new(out).read_line(&mut line).map_err(|e| format!("waiting for the proxy relay: {e}"))?;
    if line.trim() != "listening" {
        return Err("the proxy relay did not start (see above)".into());
    }
    Ok(child)
}

/// Listens on `127.0.0.1:port`, says so on stdout, and relays each
/// connection to the proxy's socket, until killed.
fn serve_relay(sock: &std::path::Path, port: u16) -> ExitCode {
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            let _ =
                writeln!(std::io::stderr(), "chanto build sandbox: listening on 127.0.0.1:{port} for the proxy: {e}");
            return ExitCode::from(125);
        }
    };
    println!("listening");
    let _ = std::io::stdout().flush();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let sock = sock.to_path_buf();
        std::thread::spawn(move || relay_one(conn, &sock));
    }
    ExitCode::SUCCESS
}

/// Copies one connection both ways between loopback and the proxy's socket.
fn relay_one(tcp: std::net::TcpStream, sock: &std::path::Path) {
    let Ok(unix) = UnixStream::connect(sock) else { return };
    let (Ok(mut tcp_r), Ok(mut unix_w)) = (tcp.try_clone(), unix.try_clone()) else { return };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut tcp_r, &mut unix_w);
        let _ = unix_w.shutdown(std::net::Shutdown::Write);
    });
    let (mut unix_r, mut tcp_w) = (unix, tcp);
    let _ = std::io::copy(&mut unix_r, &mut tcp_w);
    let _ = tcp_w.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

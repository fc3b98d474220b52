//! What runs first inside a build's sandbox (`chanto __build-init`): the
//! sandbox has its own network namespace with only loopback, so this relays
//! `127.0.0.1:<port>` (where `HTTP_PROXY` points) to the egress proxy's Unix
//! socket bound into the sandbox, then runs the build's command and exits
//! with its status. Plain threads, no async runtime: it must stay small and
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
    let Some((program, rest)) = command.split_first() else {
        return fail("no command given after --".into());
    };
    for (resource, n) in limits {
        let limit = rustix::process::Rlimit { current: Some(n), maximum: Some(n) };
        if let Err(e) = rustix::process::setrlimit(resource, limit) {
            return fail(format!("setting the limit {resource:?} to {n}: {e}"));
        }
    }
    if let Some(sock) = relay {
        let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => l,
            Err(e) => return fail(format!("listening on 127.0.0.1:{port} for the proxy: {e}")),
        };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let sock = sock.clone();
                std::thread::spawn(move || relay_one(conn, &sock));
            }
        });
    }
    let status = match std::process::Command::new(program).args(rest).status() {
        Ok(s) => s,
        Err(e) => return fail(format!("starting {program:?}: {e}")),
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
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

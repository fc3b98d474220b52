//! End-to-end test support: the real `chanto` binary, a real server on port 0
//! in a throwaway data dir, and a failure report that shows the command, the
//! directory, stdout and stderr.

#![allow(dead_code)]

pub mod edge;
pub mod git;
pub mod haproxy;
pub mod receiver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_chanto");

/// A running `chanto serve`.
pub struct Server {
    pub child: Child,
    pub data: PathBuf,
    pub edge: String,
    pub api_url: String,
    pub admin: String,
    pub token: String,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Server {
    /// Starts `chanto serve` on port 0 with `extra` flags and waits until it is healthy.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Self::start_cmd("serve", data, extra)
    }

    pub fn start_cmd(cmd: &str, data: &Path, extra: &[&str]) -> Server {
        Self::start_cmd_env::<&str>(cmd, data, extra, &[])
    }

    /// [`Server::start_cmd`] with extra environment variables for the server
    /// (a HOME of the test's, the AWS_* variables of an S3 store).
    pub fn start_cmd_env<V: AsRef<std::ffi::OsStr>>(
        cmd: &str,
        data: &Path,
        extra: &[&str],
        env: &[(&str, V)],
    ) -> Server {
        std::fs::create_dir_all(data).unwrap();
        let n = std::fs::read_dir(data).map(|d| d.count()).unwrap_or(0);
        let stdout_path = data.with_extension(format!("stdout.{n}"));
        let stderr_path = data.with_extension(format!("stderr.{n}"));
        // Tests stop servers at once unless they test draining.
        let grace: &[&str] = if extra.contains(&"--drain-grace") { &[] } else { &["--drain-grace", "0s"] };
        let child = Command::new(BIN)
            .arg(cmd)
            .arg("--data")
            .arg(data)
            // Port 0 for each listener the caller does not place itself.
            .args(
                ["--edge", "--api", "--admin"]
                    .into_iter()
                    .filter(|flag| !extra.contains(flag))
                    .flat_map(|flag| [flag, "127.0.0.1:0"]),
            )
            .args(grace)
            .args(extra)
            .env("CHANTO_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_ref())))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn chanto serve");
        let mut server = Server {
            child,
            data: data.to_owned(),
            edge: String::new(),
            api_url: String::new(),
            admin: String::new(),
            token: String::new(),
            stdout_path,
            stderr_path,
        };
        let addresses: serde_json::Value = wait_for("addresses.json", Duration::from_secs(30), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "chanto {cmd} exited with {status}\nstderr:\n{}",
                    std::fs::read_to_string(&server.stderr_path).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(data.join("addresses.json")).ok()?;
            // A crashed server leaves its file behind: wait for this one's.
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            (v["pid"] == server.child.id()).then_some(v)
        });
        // Empty for a node without an edge (`--role control`: "edge": null).
        server.edge = addresses["edge"].as_str().unwrap_or_default().to_owned();
        server.api_url = addresses["api_url"].as_str().unwrap().to_owned();
        server.admin = addresses["admin"].as_str().unwrap().to_owned();
        server.token = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned();
        wait_for("healthz", Duration::from_secs(10), || {
            http_get(&server.api_url_addr(), "127.0.0.1", "/healthz").ok().filter(|r| r.status == 200)
        });
        server
    }

    pub fn api_url_addr(&self) -> String {
        self.api_url.trim_start_matches("http://").to_owned()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A `chanto` CLI command against this server.
    pub fn cli(&self, args: &[&str]) -> Cli {
        let mut c = Cli::new(args);
        c.cmd.env("CHANTO_SERVER", &self.api_url).env("CHANTO_TOKEN", &self.token);
        c
    }

    /// GET `path` on the edge with `Host: host`.
    pub fn get(&self, host: &str, path: &str) -> HttpResponse {
        http_get(&self.edge, host, path).expect("edge request")
    }

    /// GET with extra request headers.
    pub fn get_with(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get_with(&self.edge, host, path, headers).expect("edge request")
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the server to stop (SIGTERM) and waits for it.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        wait_for("server exit", Duration::from_secs(30), || self.child.try_wait().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `chanto` command with a private config file and no inherited server settings.
pub struct Cli {
    pub cmd: Command,
    shown: String,
    stdin: Option<String>,
}

pub struct Run {
    pub out: Output,
    pub shown: String,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.out.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e})", self.report()))
    }
    pub fn report(&self) -> String {
        format!(
            "command: {}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
            self.shown,
            self.out.status,
            self.stdout(),
            self.stderr()
        )
    }
}

impl Cli {
    pub fn new(args: &[&str]) -> Cli {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("CHANTO_SERVER")
            .env_remove("CHANTO_TOKEN")
            .env("CHANTO_CONFIG", "/nonexistent/chanto-test-config.toml")
            .env("CHANTO_CACHE_DIR", std::env::temp_dir().join("chanto-e2e-hash-cache"));
        Cli { cmd, shown: format!("chanto {}", args.join(" ")), stdin: None }
    }

    pub fn env(mut self, k: &str, v: &str) -> Cli {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Cli {
        self.cmd.env_remove(k);
        self
    }

    pub fn stdin(mut self, s: &str) -> Cli {
        self.stdin = Some(s.to_owned());
        self
    }

    pub fn run(mut self) -> Run {
        use std::io::Write;
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::piped());
        let mut child = self.cmd.spawn().expect("spawn chanto");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(s) = &self.stdin {
            stdin.write_all(s.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        Run { out, shown: self.shown }
    }

    /// Runs and asserts success.
    pub fn ok(self) -> Run {
        let r = self.run();
        assert!(r.out.status.success(), "expected success\n{}", r.report());
        r
    }

    /// Runs and asserts failure.
    pub fn fails(self) -> Run {
        let r = self.run();
        assert!(!r.out.status.success(), "expected failure\n{}", r.report());
        r
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain HTTP/1.1 GET over TCP (`Connection: close`), so tests see exactly
/// what a client on the wire sees, with any Host header.
pub fn http_get(addr: &str, host: &str, path: &str) -> std::io::Result<HttpResponse> {
    http_get_with(addr, host, path, &[])
}

/// [`http_get`] with extra request headers.
pub fn http_get_with(addr: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<HttpResponse> {
    http_request(addr, "GET", host, path, headers, b"")
}

/// Any request, with a body (sent with `Content-Length`).
pub fn http_request(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let length =
        if body.is_empty() && method == "GET" { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}{length}Connection: close\r\n\r\n")?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// Writes `files` (path → contents) under `dir`.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (path, body) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

/// Every regular file under `dir` (recursively, symlinks not followed).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Asserts that `secret`'s bytes appear in no file under `dir` (the database,
/// its write-ahead log, blobs, logs: everything), naming the file that holds
/// them. Returns how many files were searched, so a caller can check the
/// search saw something.
pub fn assert_secret_nowhere(dir: &Path, secret: &[u8], what: &str) -> usize {
    assert!(secret.len() >= 6, "a secret of {} bytes could match by chance", secret.len());
    let files = files_under(dir);
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret), "{what} is stored in clear in {}", f.display());
    }
    files.len()
}

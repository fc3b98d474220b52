//! HAProxy (the Debian package; `scripts/test` installs it) in front of edges,
//! with the README's own configuration: what the test proves is what an
//! operator copies.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

/// A running HAProxy.
pub struct HaProxy {
    child: Child,
    /// Where it listens for visitors.
    pub addr: String,
    /// Its runtime API (the README's `stats socket`).
    pub sock: PathBuf,
    dir: tempfile::TempDir,
}

/// The README's HAProxy configuration, the front port, the admin socket and
/// one server line per `(edge, admin)` substituted.
pub fn readme_config(port: u16, sock: &Path, servers: &[(&str, &str)]) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("<!-- haproxy.cfg begin").expect("README has the HAProxy configuration");
    let end = readme.find("<!-- haproxy.cfg end").unwrap();
    let block = &readme[start..end];
    let cfg = block.split_once("```haproxy\n").unwrap().1.rsplit_once("```").unwrap().0;
    let mut cfg = cfg
        .replace("/run/haproxy/admin.sock", sock.to_str().unwrap())
        .replace("bind :80", &format!("bind 127.0.0.1:{port}"));
    for (i, (edge, admin)) in servers.iter().enumerate() {
        let zone = format!("10.0.{}.10:8080 check port 8790", i + 1);
        assert!(cfg.contains(&zone), "the README's config has no server line {zone:?}");
        let admin_port = admin.rsplit_once(':').unwrap().1;
        cfg = cfg.replace(&zone, &format!("{edge} check port {admin_port}"));
    }
    cfg
}

impl HaProxy {
    /// Starts HAProxy with the README's configuration in front of the three
    /// `(edge, admin)` addresses (servers edge-a, edge-b, edge-c); checks
    /// the configuration with `haproxy -c` first, and waits until it listens.
    pub fn start_readme(servers: &[(&str, &str)]) -> HaProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let sock = dir.path().join("haproxy.sock");
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, readme_config(port, &sock, servers)).unwrap();
        let check = Command::new("haproxy").arg("-c").arg("-f").arg(&cfg_path).output().expect("haproxy");
        assert!(
            check.status.success(),
            "haproxy -c refused the README's config:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("haproxy.log")).unwrap())
            .spawn()
            .expect("haproxy (scripts/test installs it)");
        let mut h = HaProxy { child, addr: format!("127.0.0.1:{port}"), sock, dir };
        wait_for("haproxy listening", Duration::from_secs(10), || {
            if let Ok(Some(status)) = h.child.try_wait() {
                panic!("haproxy exited: {status}\n{}", h.log());
            }
            std::net::TcpStream::connect(&h.addr).ok()
        });
        h
    }

    /// What HAProxy logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// Panics with the log if HAProxy has exited.
    pub fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("haproxy exited: {status}\n{}", self.log());
        }
    }

    /// One command to HAProxy's runtime API; its answer.
    pub fn command(&self, command: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&self.sock).expect("HAProxy's admin socket");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Edge nodes (`chanto serve --role edge`) as real processes, fed by a real
//! control plane.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{BIN, HttpResponse, http_get, wait_for};

/// The AWS_* variables of the test S3 server.
pub const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", chanto_testkit::s3::ACCESS_KEY),
    ("AWS_SECRET_ACCESS_KEY", chanto_testkit::s3::SECRET_KEY),
    ("AWS_REGION", "us-east-1"),
];

/// A running edge node.
pub struct EdgeProc {
    pub child: Child,
    pub data: PathBuf,
    pub edge: String,
    pub admin: String,
    pub stderr_path: PathBuf,
}

impl EdgeProc {
    /// Starts an edge node on port 0 in zone `zone`, pulling from
    /// `control` with the token in `token_file`, reading blobs from
    /// `blobs` at `endpoint`; waits until its admin listener answers (not
    /// until it is ready: a node with an empty disk and no control plane
    /// never is).
    pub fn start(
        data: &Path,
        zone: &str,
        control: &str,
        token_file: &Path,
        blobs: &str,
        endpoint: &str,
        extra: &[&str],
    ) -> EdgeProc {
        std::fs::create_dir_all(data).unwrap();
        let n = std::fs::read_dir(data).map(|d| d.count()).unwrap_or(0);
        let stderr_path = data.with_extension(format!("stderr.{n}"));
        let child = Command::new(BIN)
            .args(["serve", "--role", "edge", "--zone", zone, "--control", control])
            .arg("--node-token")
            .arg(token_file)
            .arg("--data")
            .arg(data)
            // Port 0 for each listener the caller does not place itself (a
            // node restarted where the load balancer knows it).
            .args(["--edge", "--admin"].into_iter().filter(|f| !extra.contains(f)).flat_map(|f| [f, "127.0.0.1:0"]))
            .args(["--blobs", blobs, "--s3-endpoint", endpoint])
            .args(["--routing-poll", "1s"])
            .args(extra)
            .env("CHANTO_LOG", "info")
            .env_remove("CHANTO_META")
            .envs(AWS_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn chanto serve --role edge");
        let mut node =
            EdgeProc { child, data: data.to_owned(), edge: String::new(), admin: String::new(), stderr_path };
        let addresses: serde_json::Value = wait_for("the edge node's addresses.json", Duration::from_secs(30), || {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("the edge node exited with {status}\nstderr:\n{}", node.stderr());
            }
            let text = std::fs::read_to_string(data.join("addresses.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            (v["pid"] == node.child.id()).then_some(v)
        });
        node.edge = addresses["edge"].as_str().unwrap().to_owned();
        node.admin = addresses["admin"].as_str().unwrap().to_owned();
        wait_for("the edge node's /healthz", Duration::from_secs(10), || {
            http_get(&node.admin, "admin", "/healthz").ok().filter(|r| r.status == 200)
        });
        node
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// GET `path` on this node's edge with `Host: host`.
    pub fn get(&self, host: &str, path: &str) -> HttpResponse {
        http_get(&self.edge, host, path).expect("edge request")
    }

    /// `/readyz`'s status.
    pub fn ready_status(&self) -> u16 {
        http_get(&self.admin, "admin", "/readyz").map(|r| r.status).unwrap_or(0)
    }

    /// A metric's value from `/metrics` (its first line).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = http_get(&self.admin, "admin", "/metrics").ok()?.text();
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
    }

    /// Waits until `host` `path` answers 200 with a body containing `text`.
    pub fn wait_serving(&self, host: &str, path: &str, text: &str, limit: Duration) {
        wait_for(&format!("{host}{path} serving {text:?} on the edge node"), limit, || {
            http_get(&self.edge, host, path).ok().filter(|r| r.status == 200 && r.text().contains(text))
        });
    }

    /// Kills the node at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EdgeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `token` to `path` (mode 600), as `--node-token` reads it.
pub fn write_token(path: &Path, token: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).unwrap();
    writeln!(f, "{token}").unwrap();
}

//! The control plane's settings, ready to use (validated by the binary).

use std::time::Duration;

/// Default brotli quality. Measured on this project's 2-core machines (Rust
/// `brotli` crate, HTML-like text): q4 31.6 MB/s (ratio 0.118), q5 16.7 MB/s
/// (0.107), q6 14.3 MB/s (0.105), q9 7.2 MB/s (0.098). Quality 5 keeps
/// finalize within the same order as copying the files, and still beats gzip.
pub const DEFAULT_BROTLI_QUALITY: u32 = 5;
/// Default gzip level: zlib-rs level 6 compresses at ~89 MB/s (ratio 0.112),
/// level 9 at ~61 MB/s (0.107).
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// Settings for [`crate::Control`].
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The base domain sites are served under (`<site>.<base>`).
    pub base_domain: String,
    /// Where branches, previews and permalinks are served
    /// (`<prefix>--<site>.<preview>`), if not under the base domain.
    pub preview_domain: Option<String>,
    /// How visitors reach the edge, appended to hostnames in URLs the API
    /// prints: scheme and port, e.g. `http` and `:8080` (empty for 80).
    pub edge_scheme: String,
    /// The `:port` suffix of edge URLs, or empty.
    pub edge_port_suffix: String,
    /// Largest single file a deploy may hold, in bytes.
    pub max_file_size: u64,
    /// Most files one deploy may hold.
    pub max_files: usize,
    /// How long a deploy may stay unfinalized before it expires.
    pub upload_ttl: Duration,
    /// Brotli quality (0-11) for precompressed variants.
    pub brotli_quality: u32,
    /// gzip level (0-9) for precompressed variants.
    pub gzip_level: u32,
    /// How long a blob stays unreferenced (and how old it must be) before
    /// garbage collection deletes it.
    pub gc_grace: Duration,
    /// How many successive rollbacks of a branch retention keeps possible:
    /// the deploys they reach are never pruned.
    pub rollback_depth: u32,
    /// This process, as the owner of the builds it claims and the
    /// notification leases it takes. `chanto serve` names its node after the
    /// data directory (`DATA/node-id`), so a restart recovers its last run's
    /// claims at once; the default is a node of its own (nothing of it is
    /// ever taken for a dead earlier run).
    pub owner: chanto_store::Owner,
    /// How long a running build may go without its runner's heartbeat before
    /// another process takes it for dead, marks it interrupted and retries
    /// it. Heartbeats are sent every quarter of it.
    pub build_heartbeat_timeout: Duration,
    /// How long an activation (finalize, publish, rollback) waits for every
    /// healthy edge to serve its routing version before answering with the
    /// edges that lag (0: answer at once with where it is live).
    pub edge_wait: Duration,
    /// How long an edge may go without a heartbeat and still count as
    /// healthy (edges send one every 5 s).
    pub node_timeout: Duration,
}

/// Default [`ControlConfig::edge_wait`].
pub const DEFAULT_EDGE_WAIT: Duration = Duration::from_secs(10);

/// Default [`ControlConfig::node_timeout`]: three missed heartbeats.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(15);

/// Default [`ControlConfig::build_heartbeat_timeout`]: a minute survives a
/// database failover or a long garbage-collection pause of the runner's host,
/// and a dead node's build is retried within about a minute and a quarter.
pub const DEFAULT_BUILD_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default grace period of garbage collection: longer than the upload
/// window, so a blob another process has made for a deploy it has not
/// finalized yet is not deleted under it.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

/// Default rollback depth retention protects.
pub const DEFAULT_ROLLBACK_DEPTH: u32 = 10;

impl ControlConfig {
    /// Defaults for a server whose edge listens on `edge_port` over plain HTTP.
    pub fn new(base_domain: impl Into<String>, edge_port: u16) -> Self {
        Self {
            base_domain: base_domain.into(),
            preview_domain: None,
            edge_scheme: "http".into(),
            edge_port_suffix: if edge_port == 80 { String::new() } else { format!(":{edge_port}") },
            max_file_size: 256 << 20,
            max_files: 100_000,
            upload_ttl: Duration::from_secs(3600),
            brotli_quality: DEFAULT_BROTLI_QUALITY,
            gzip_level: DEFAULT_GZIP_LEVEL,
            gc_grace: DEFAULT_GC_GRACE,
            rollback_depth: DEFAULT_ROLLBACK_DEPTH,
            owner: chanto_store::Owner::new_run(format!(
                "process-{}",
                chanto_store::random_bytes::<6>().iter().map(|b| format!("{b:02x}")).collect::<String>()
            )),
            build_heartbeat_timeout: DEFAULT_BUILD_HEARTBEAT_TIMEOUT,
            edge_wait: DEFAULT_EDGE_WAIT,
            node_timeout: DEFAULT_NODE_TIMEOUT,
        }
    }

    /// The URL of a hostname label (`example`, `dev--example`) on the edge:
    /// a prefixed label (branch, preview, permalink) under the preview
    /// domain when there is one, production under the base domain.
    pub fn url_for(&self, label: &str) -> String {
        let domain = match &self.preview_domain {
            Some(preview) if label.contains("--") => preview,
            _ => &self.base_domain,
        };
        format!("{}://{label}.{domain}{}/", self.edge_scheme, self.edge_port_suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_get_urls_on_the_preview_domain() {
        let mut c = ControlConfig::new("sites.example.com", 443);
        c.edge_scheme = "https".into();
        c.preview_domain = Some("previews.example.net".into());
        assert_eq!(c.url_for("shop"), "https://shop.sites.example.com:443/");
        assert_eq!(c.url_for("pr-7--shop"), "https://pr-7--shop.previews.example.net:443/");
    }
}

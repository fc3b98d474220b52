//! What a store can say about itself to an operator: its state for `/readyz`
//! ([`Check`], probed within a time bound and cached briefly so load
//! balancers probing every second do not hammer a shared database or bucket)
//! and its counters for `/metrics` (Prometheus text, written by
//! [`crate::MetaStore::render_metrics`] and [`crate::BlobStore::render_metrics`]).

use std::fmt::Write;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long one dependency probe may take before it counts as down: a hung
/// database must not hang `/readyz` (load balancers time out at 2-5 s).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a probe's answer is reused. Several load balancers probing each
/// node every second cost the shared stores one request per node per this.
pub const PROBE_CACHE: Duration = Duration::from_secs(3);

/// A dependency's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Working.
    Up,
    /// Working, but short of something (a pool with no free connection, a
    /// cache that cannot be written): slower, or fewer things work.
    Degraded,
    /// Not answering, or refusing.
    Down,
}

impl State {
    /// The word used in `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

/// One dependency's state, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What it is, in the product's words: `metadata`, `blobs`, `blob-cache`.
    pub name: &'static str,
    /// Which backend and where (`postgresql postgres://chanto@db/chanto`),
    /// passwords redacted.
    pub backend: String,
    /// Its state.
    pub state: State,
    /// Why, in words: the error, the pool's use, the cache's fill.
    pub detail: String,
}

impl Check {
    /// A check in `state`.
    pub fn new(name: &'static str, backend: impl Into<String>, state: State, detail: impl Into<String>) -> Self {
        Self { name, backend: backend.into(), state, detail: detail.into() }
    }
}

/// The last answer of a probe, reused for [`PROBE_CACHE`]; one probe at a
/// time (concurrent callers wait for the one in flight, which is bounded).
pub struct ProbeCache {
    last: tokio::sync::Mutex<Option<(Instant, Check)>>,
    keep: Duration,
    timeout: Duration,
}

impl Default for ProbeCache {
    fn default() -> Self {
        Self::new(PROBE_CACHE, PROBE_TIMEOUT)
    }
}

impl ProbeCache {
    /// A cache that reuses an answer for `keep` and cuts a probe off after `timeout`.
    pub fn new(keep: Duration, timeout: Duration) -> Self {
        Self { last: tokio::sync::Mutex::default(), keep, timeout }
    }

    /// The cached check, or `probe`'s, run within the timeout ([`PROBE_TIMEOUT`]
    /// by default); a probe that takes longer gives `timed_out()`.
    pub async fn get<F: Future<Output = Check>>(&self, probe: F, timed_out: impl FnOnce() -> Check) -> Check {
        let mut last = self.last.lock().await;
        if let Some((at, check)) = last.as_ref()
            && at.elapsed() < self.keep
        {
            return check.clone();
        }
        let check = tokio::time::timeout(self.timeout, probe).await.unwrap_or_else(|_| timed_out());
        *last = Some((Instant::now(), check.clone()));
        check
    }
}

/// Upper bounds (seconds) of the store latency histograms' buckets: from a
/// loopback round trip to a retried request.
pub const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

/// A latency histogram of lock-free counters.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the histogram's series `name{labels,le=…}`; `labels` is empty
    /// or `key="value"` pairs without braces. The HELP/TYPE lines are the caller's.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Writes a metric's `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Checks that `dir` takes a new file (created and removed again) and
/// returns the bytes free on its file system; the error names the
/// directory and the cause. Runs off the async threads: a hung network
/// file system blocks a thread of the blocking pool, not the server.
pub async fn probe_dir(dir: &std::path::Path) -> Result<u64, String> {
    let dir = dir.to_owned();
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || {
        let r: [u8; 8] = crate::random_bytes();
        let probe = dir.join(format!(".probe-{:016x}", u64::from_le_bytes(r)));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
        let _ = std::fs::remove_file(&probe);
        let st = rustix::fs::statvfs(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    })
    .await
    .unwrap_or_else(|e| Err(format!("checking {shown}: {e}")))
}

/// Bytes in words (`1.5 GiB`), for details.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Free space below which a directory that must take writes is `degraded`.
pub const LOW_SPACE: u64 = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_with_labels_and_without() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "op=\"get\"");
        assert!(out.contains("x_seconds_bucket{op=\"get\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{op=\"get\",le=\"0.025\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{op=\"get\",le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{op=\"get\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_count{op=\"get\"} 3\n"), "{out}");
        let mut out = String::new();
        h.render(&mut out, "y", "");
        assert!(out.contains("y_bucket{le=\"+Inf\"} 3\ny_sum 60.0201\ny_count 3\n"), "{out}");
    }

    #[tokio::test]
    async fn a_hung_probe_is_cut_off_and_answers_are_reused() {
        let timed_out = || Check::new("metadata", "test", State::Down, "no answer");
        let up = || async { Check::new("metadata", "test", State::Up, "") };
        // A probe that never answers is cut off, and that answer is kept.
        let cache = ProbeCache::new(Duration::from_secs(3600), Duration::from_millis(10));
        assert_eq!(cache.get(std::future::pending(), timed_out).await.state, State::Down);
        assert_eq!(cache.get(up(), timed_out).await.state, State::Down, "reused within the cache time");
        // Kept for no time: every call probes.
        let cache = ProbeCache::new(Duration::ZERO, Duration::from_millis(10));
        assert_eq!(cache.get(std::future::pending(), timed_out).await.state, State::Down);
        assert_eq!(cache.get(up(), timed_out).await.state, State::Up);
    }
}

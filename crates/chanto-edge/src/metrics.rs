//! The edge's counters, rendered as Prometheus text. Labels have bounded
//! cardinality: status class, never host or path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

/// Request, byte, latency and cache counters.
#[derive(Default)]
pub struct Metrics {
    by_class: [AtomicU64; 5],
    bytes_sent: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
    /// Small-blob cache hits.
    pub cache_hits: AtomicU64,
    /// Small-blob cache misses.
    pub cache_misses: AtomicU64,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: AtomicU64,
    /// Responses whose body went from the page cache to the socket (`sendfile`).
    pub sendfile_responses: AtomicU64,
    /// Responses the HTTP/1.1 fast path gave from ready-made answers.
    pub fast_responses: AtomicU64,
    /// Ready-made answers the fast path made (a miss in the snapshot's answers).
    pub fast_renders: AtomicU64,
}

impl Metrics {
    /// Counts one response: its status, body bytes, and time to its headers.
    pub fn record(&self, status: u16, bytes: u64, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses sent so far: all, 4xx, 5xx.
    pub fn counts(&self) -> chanto_store::node_wire::TrafficCounts {
        // Each class read once, so the errors never exceed the sum.
        let by_class: [u64; 5] = std::array::from_fn(|i| self.by_class[i].load(Ordering::Relaxed));
        chanto_store::node_wire::TrafficCounts {
            requests: by_class.iter().sum(),
            client_errors: by_class[3],
            server_errors: by_class[4],
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self, snapshot_version: u64) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP chanto_edge_requests_total Responses sent, by status class.\n# TYPE chanto_edge_requests_total counter\n");
        for (i, c) in self.by_class.iter().enumerate() {
            let _ = writeln!(out, "chanto_edge_requests_total{{class=\"{}xx\"}} {}", i + 1, get(c));
        }
        out.push_str("# HELP chanto_edge_sent_bytes_total Response body bytes sent.\n# TYPE chanto_edge_sent_bytes_total counter\n");
        let _ = writeln!(out, "chanto_edge_sent_bytes_total {}", get(&self.bytes_sent));
        out.push_str("# HELP chanto_edge_request_duration_seconds Time to response headers.\n# TYPE chanto_edge_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(&self.latency_buckets) {
            cumulative += get(n);
            let _ = writeln!(out, "chanto_edge_request_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = get(&self.latency_count);
        let _ = writeln!(out, "chanto_edge_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ =
            writeln!(out, "chanto_edge_request_duration_seconds_sum {}", get(&self.latency_sum_micros) as f64 / 1e6);
        let _ = writeln!(out, "chanto_edge_request_duration_seconds_count {count}");
        out.push_str(
            "# HELP chanto_edge_cache_hits_total Small-blob cache hits.\n# TYPE chanto_edge_cache_hits_total counter\n",
        );
        let _ = writeln!(out, "chanto_edge_cache_hits_total {}", get(&self.cache_hits));
        out.push_str("# HELP chanto_edge_cache_misses_total Small-blob cache misses.\n# TYPE chanto_edge_cache_misses_total counter\n");
        let _ = writeln!(out, "chanto_edge_cache_misses_total {}", get(&self.cache_misses));
        out.push_str("# HELP chanto_edge_sendfile_responses_total Responses whose body was sent from the page cache (sendfile).\n# TYPE chanto_edge_sendfile_responses_total counter\n");
        let _ = writeln!(out, "chanto_edge_sendfile_responses_total {}", get(&self.sendfile_responses));
        out.push_str("# HELP chanto_edge_fast_path_responses_total Responses given from ready-made answers on the HTTP/1.1 fast path.\n# TYPE chanto_edge_fast_path_responses_total counter\n");
        let _ = writeln!(out, "chanto_edge_fast_path_responses_total {}", get(&self.fast_responses));
        out.push_str("# HELP chanto_edge_fast_path_renders_total Ready-made answers the fast path made (the rest were reused).\n# TYPE chanto_edge_fast_path_renders_total counter\n");
        let _ = writeln!(out, "chanto_edge_fast_path_renders_total {}", get(&self.fast_renders));
        out.push_str("# HELP chanto_edge_access_log_dropped_total Access-log lines dropped under load.\n# TYPE chanto_edge_access_log_dropped_total counter\n");
        let _ = writeln!(out, "chanto_edge_access_log_dropped_total {}", get(&self.access_log_dropped));
        out.push_str("# HELP chanto_edge_routing_version Version of the routing snapshot served.\n# TYPE chanto_edge_routing_version gauge\n");
        let _ = writeln!(out, "chanto_edge_routing_version {snapshot_version}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.record(200, 100, Duration::from_micros(50));
        m.record(404, 10, Duration::from_millis(3));
        m.record(503, 0, Duration::from_secs(10));
        let text = m.render(7);
        assert!(text.contains("chanto_edge_requests_total{class=\"2xx\"} 1"));
        assert!(text.contains("chanto_edge_requests_total{class=\"4xx\"} 1"));
        assert!(text.contains("chanto_edge_requests_total{class=\"5xx\"} 1"));
        assert!(text.contains("chanto_edge_sent_bytes_total 110"));
        assert!(text.contains("chanto_edge_request_duration_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("chanto_edge_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("chanto_edge_request_duration_seconds_bucket{le=\"2.5\"} 2"));
        assert!(text.contains("chanto_edge_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("chanto_edge_routing_version 7"));
    }
}

//! The PostgreSQL backend's health and counters: a bounded probe for
//! `/readyz` (the pool's use, then one round trip), and statement latency,
//! failures and pool gauges for `/metrics`.
//!
//! Statement counters are process-wide (`static`): the statement helpers of
//! [`crate::postgres`] run inside a transaction and see no store, and a
//! process has one metadata store.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::StoreError;
use crate::health::{Check, Histogram, PROBE_TIMEOUT, State, header};
use crate::postgres::PostgresMeta;

/// Statement latency (prepare + execute, as the statement helpers run them).
static QUERY_SECONDS: Histogram = Histogram::new();

/// Failure kinds, a metric label each: `unavailable` (the server unreachable
/// or the connection lost; no pooled connection in time), `conflict` (a
/// unique key taken: the caller's input), `other` (a statement failed).
const ERROR_KINDS: [&str; 3] = ["unavailable", "conflict", "other"];
static ERRORS: [AtomicU64; ERROR_KINDS.len()] = [const { AtomicU64::new(0) }; ERROR_KINDS.len()];

/// Counts a failure of a statement or of getting a connection.
pub(crate) fn count_error(e: &StoreError) {
    let kind = match e {
        StoreError::Unavailable(_) => 0,
        StoreError::Conflict(_) => 1,
        _ => 2,
    };
    ERRORS[kind].fetch_add(1, Ordering::Relaxed);
}

/// Runs one statement, counting its time and any failure; one that takes
/// longer than [`crate::postgres::STATEMENT_DEADLINE`] fails as unavailable.
pub(crate) async fn timed<T>(
    statement: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let deadline = crate::postgres::STATEMENT_DEADLINE;
    let out = tokio::time::timeout(deadline, statement).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "the metadata store (PostgreSQL) did not answer a statement within {} s",
            deadline.as_secs()
        )))
    });
    QUERY_SECONDS.observe(started.elapsed());
    if let Err(e) = &out {
        count_error(e);
    }
    out
}

impl PostgresMeta {
    /// The state `/readyz` shows: `degraded` when every pooled connection is
    /// busy and calls queue for one (the database answers, slowly), else one
    /// `SELECT 1` on a pooled connection, `down` if it fails or takes longer
    /// than [`PROBE_TIMEOUT`]. Cached for a few seconds.
    pub(crate) async fn probe(&self) -> Check {
        let backend = || format!("postgresql {}", self.url());
        let s = self.pool().status();
        let pool = format!("pool: {} of {} open, {} idle, {} waiting", s.size, s.max_size, s.available, s.waiting);
        if s.size >= s.max_size && s.available == 0 && s.waiting > 0 {
            return Check::new(
                "metadata",
                backend(),
                State::Degraded,
                format!("every connection is busy and {} calls wait for one ({pool})", s.waiting),
            );
        }
        let query = async {
            let started = Instant::now();
            let answered = match self.conn().await {
                Ok(c) => c.simple_query("SELECT 1").await.map(|_| ()).map_err(StoreError::from),
                Err(e) => Err(e),
            };
            match answered {
                Ok(()) => {
                    let ms = started.elapsed().as_millis();
                    Check::new("metadata", backend(), State::Up, format!("answered in {ms} ms; {pool}"))
                }
                Err(e) => Check::new("metadata", backend(), State::Down, e.to_string()),
            }
        };
        let timed_out = || {
            let why = format!(
                "no answer within {} s (a server that hangs, or a network that drops packets)",
                PROBE_TIMEOUT.as_secs()
            );
            Check::new("metadata", backend(), State::Down, why)
        };
        self.probe_cache().get(query, timed_out).await
    }

    /// Pool gauges, statement latency and failures, as Prometheus text.
    pub(crate) fn render(&self, out: &mut String) {
        let s = self.pool().status();
        let gauges = [
            ("chanto_metadata_pool_connections", "Connections the PostgreSQL pool holds open.", s.size),
            ("chanto_metadata_pool_max_connections", "The PostgreSQL pool's size limit.", s.max_size),
            ("chanto_metadata_pool_idle_connections", "Open connections no call is using.", s.available),
            ("chanto_metadata_pool_waiting", "Calls waiting for a connection (all are busy).", s.waiting),
        ];
        for (name, help, v) in gauges {
            header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {v}");
        }
        let name = "chanto_metadata_query_duration_seconds";
        header(out, name, "histogram", "PostgreSQL statements, prepare and execute.");
        QUERY_SECONDS.render(out, name, "");
        let name = "chanto_metadata_errors_total";
        header(
            out,
            name,
            "counter",
            "Failed PostgreSQL statements and connection attempts, by kind (unavailable, conflict, other).",
        );
        for (kind, n) in ERROR_KINDS.iter().zip(&ERRORS) {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", n.load(Ordering::Relaxed));
        }
    }
}

//! The optional access log: one JSON line per request, written by a
//! background task so a slow disk never slows a response. When the writer
//! falls behind, lines are dropped and counted, never queued without bound.

use std::io::Write;
use std::path::PathBuf;

use tokio::sync::mpsc;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// A handle that requests log lines to.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
}

/// One request, as logged.
#[derive(serde::Serialize)]
pub struct Line<'a> {
    /// Unix time in milliseconds.
    pub ts: u64,
    /// The `Host` header.
    pub host: &'a str,
    /// The request path (as sent, without the query).
    pub path: &'a str,
    /// Response status.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// Time to the response headers, in milliseconds.
    pub duration_ms: f64,
    /// The site served, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<&'a str>,
    /// The branch label served, if any (none for permalinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<&'a str>,
    /// The deploy served, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<&'a str>,
}

impl AccessLog {
    /// Starts the writer: to `path`, appending, or to standard output for `-`.
    pub fn spawn(path: PathBuf) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let mut out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::fs::OpenOptions::new().create(true).append(true).open(&path)?)
        };
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut buf = std::io::BufWriter::with_capacity(64 << 10, &mut out);
            while let Some(line) = rx.blocking_recv() {
                let _ = buf.write_all(line.as_bytes());
                // Flush whenever the queue is momentarily empty.
                while let Ok(line) = rx.try_recv() {
                    let _ = buf.write_all(line.as_bytes());
                }
                let _ = buf.flush();
            }
        });
        Ok((Self { tx }, task))
    }

    /// Queues a line; returns false if it had to be dropped.
    pub fn log(&self, line: &Line<'_>) -> bool {
        match serde_json::to_string(line) {
            Ok(mut s) => {
                s.push('\n');
                self.tx.try_send(s).is_ok()
            }
            Err(_) => false,
        }
    }
}

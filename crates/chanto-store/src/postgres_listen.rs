//! The routing listener of a PostgreSQL metadata store: a dedicated
//! connection doing `LISTEN chanto_routing`, so a deploy made through one
//! `chanto serve` reaches the edges of every other process on the database.
//! A notification is a hint only: after every (re)connect the listener reads
//! the routing version sequence itself, as notifications sent while it was
//! disconnected are lost. It connects with the pool's TLS (`postgres_tls.rs`).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

use crate::postgres::{PostgresMeta, ROUTING_CHANNEL};

/// The longest wait between reconnection attempts while the database is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl PostgresMeta {
    /// The newest routing version any process on this database published,
    /// kept current by a background task (see the module docs). The task
    /// ends when every receiver is dropped.
    pub fn watch_routing(&self) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0u64);
        let config = self.config.clone();
        let tls = self.tls.clone();
        let url = self.url().to_owned();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut was_down = false;
            loop {
                match listen(&config, &tls, &tx).await {
                    Ok(()) => return,
                    Err(e) => {
                        if !was_down {
                            tracing::warn!(url = %url, error = %e, "routing listener lost its PostgreSQL connection; reconnecting");
                        }
                        was_down = true;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        rx
    }
}

/// One connection's life: LISTEN, then read the version now and after every
/// notification. `Ok` when the receivers are gone, `Err` when the connection
/// failed or ended.
async fn listen(
    config: &tokio_postgres::Config,
    tls: &crate::postgres_tls::PgTls,
    tx: &watch::Sender<u64>,
) -> Result<(), String> {
    // The pool's TLS settings, so the listener is as protected as the pool.
    let (client, mut connection) = config.connect(tls.clone()).await.map_err(|e| crate::postgres::error_cause(&e))?;
    let (note_tx, mut notes) = tokio::sync::mpsc::unbounded_channel::<()>();
    // The connection object delivers notifications; it runs until the socket closes.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(_)) => {
                    let _ = note_tx.send(());
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "the server closed the connection".to_owned()
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {ROUTING_CHANNEL}")).await.map_err(|e| e.to_string())?;
        loop {
            // After LISTEN, so no version announced meanwhile is missed.
            let row = client
                .query_one("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM routing_version", &[])
                .await
                .map_err(|e| e.to_string())?;
            let v: i64 = row.get(0);
            let v = v.max(0) as u64;
            tx.send_if_modified(|cur| {
                let newer = v > *cur;
                if newer {
                    *cur = v;
                }
                newer
            });
            tokio::select! {
                note = notes.recv() => {
                    if note.is_none() {
                        return Err("the connection ended".to_owned());
                    }
                    // Several notifications: one read covers them all.
                    while notes.try_recv().is_ok() {}
                }
                _ = tx.closed() => return Ok(()),
            }
        }
    }
    .await;
    driver.abort();
    result
}

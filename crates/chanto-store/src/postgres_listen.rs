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

use crate::RoutingAnnouncement;
use crate::postgres::{PostgresMeta, ROUTING_CHANNEL};

/// Makes `a` the newest announcement if it is newer.
fn announce(tx: &watch::Sender<RoutingAnnouncement>, a: RoutingAnnouncement) {
    tx.send_if_modified(|cur| {
        let newer = a.version > cur.version;
        if newer {
            *cur = a;
        }
        newer
    });
}

/// The longest wait between reconnection attempts while the database is down.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl PostgresMeta {
    /// The newest routing version any process on this database published
    /// (with the sites it changed when its announcement named them), kept
    /// current by a background task (see the module docs). The task ends
    /// when every receiver is dropped.
    pub fn watch_routing(&self) -> watch::Receiver<RoutingAnnouncement> {
        let (tx, rx) = watch::channel(RoutingAnnouncement::default());
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
    tx: &watch::Sender<RoutingAnnouncement>,
) -> Result<(), String> {
    // The pool's TLS settings, so the listener is as protected as the pool.
    let (client, mut connection) = config.connect(tls.clone()).await.map_err(|e| crate::postgres::error_cause(&e))?;
    let (note_tx, mut notes) = tokio::sync::mpsc::unbounded_channel::<String>();
    // The connection object delivers notifications; it runs until the socket closes.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = note_tx.send(n.payload().to_owned());
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "the server closed the connection".to_owned()
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {ROUTING_CHANNEL}")).await.map_err(|e| e.to_string())?;
        // After LISTEN, so no version announced meanwhile is missed; once per
        // connection only. The sequence runs ahead of commits (nextval is not
        // transactional): read after every notification, it announced a
        // version whose change was not committed yet, as "everything
        // changed" — a follower then re-read the old table, and ignored the
        // real announcement that came at the commit (same version).
        let row = client
            .query_one("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM routing_version", &[])
            .await
            .map_err(|e| e.to_string())?;
        let v: i64 = row.get(0);
        announce(tx, RoutingAnnouncement { version: v.max(0) as u64, sites: None });
        loop {
            tokio::select! {
                note = notes.recv() => {
                    let Some(note) = note else { return Err("the connection ended".to_owned()) };
                    // In the order they came; a follower re-reads everything
                    // unless the version it gets is right after its own.
                    for payload in std::iter::once(note).chain(std::iter::from_fn(|| notes.try_recv().ok())) {
                        if let Some(a) = RoutingAnnouncement::parse(&payload) {
                            announce(tx, a);
                        }
                    }
                }
                _ = tx.closed() => return Ok(()),
            }
        }
    }
    .await;
    driver.abort();
    result
}

//! Events the control plane's own loops decide rather than a metadata
//! transaction: certificate events (an ACME order failing, a certificate
//! nearing its end; see `cert_events.rs`). They go through the same outbox as
//! every other event ([`chanto_store::NotifyStore::record_site_event`], the
//! whole [`Event`] as the row's detail), so they are fanned out, retried,
//! listed by `chanto notify deliveries` and redelivered like the others, and
//! survive a restart. Forge subscriptions never get them (a certificate is a
//! domain's, not a commit's: `dispatch` makes no status or comment of them).

use chanto_notify::{Event, Filter};

use super::ChannelConfig;
use crate::Control;

/// Records `event` in the outbox and wakes the dispatcher. Returns how many
/// subscriptions it will go to (0 also when this server sends no
/// notifications, or the subscriptions cannot be read).
pub(crate) async fn send_now(control: &Control, event: Event) -> usize {
    let n = targets(control, &event).await;
    if n > 0 {
        record(control, &event).await;
    }
    n
}

/// The event's row in the outbox; logged when it cannot be written.
async fn record(control: &Control, event: &Event) {
    let Some(notifier) = control.notifier.get() else { return };
    let Ok(site) = event.site.parse::<chanto_core::SiteName>() else { return };
    let body = serde_json::to_string(event).expect("an event serialises");
    match control.meta.record_site_event(&site, event.kind.as_str(), &event.branch, &body, event.at_ms).await {
        Ok(_) => notifier.poke(),
        Err(e) => {
            tracing::warn!(site = %site, kind = %event.kind, error = %e, "recording a notification failed; not sent")
        }
    }
}

/// How many subscriptions of its site `event` would go to: those whose
/// filter matches it, forges left out. 0 without notifications.
pub(crate) async fn targets(control: &Control, event: &Event) -> usize {
    let Some(notifier) = control.notifier.get() else { return 0 };
    let Ok(site) = event.site.parse::<chanto_core::SiteName>() else { return 0 };
    let subs = match control.meta.list_subscriptions(&site).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(site = %site, kind = %event.kind, error = %e, "reading subscriptions failed; event not sent");
            return 0;
        }
    };
    subs.iter()
        .filter(|sub| serde_json::from_str::<Filter>(&sub.filter).is_ok_and(|f| f.matches(event)))
        .filter(|sub| matches!(notifier.open(sub), Ok(config) if !matches!(config, ChannelConfig::Forge { .. })))
        .count()
}

/// Sends `event` (already known to have subscriptions) through the outbox.
pub(crate) async fn send_to(control: &Control, event: Event) {
    record(control, &event).await;
}

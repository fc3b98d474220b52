//! Notifications: subscriptions, the outbox of events and the deliveries made from it.
//!
//! The outbox is written by the state changes themselves: every backend records `build.*`, `deploy.*` and
//! `preview.*` events in the same transaction as the change that caused them (see [`EVENT_KINDS`]). A dispatcher
//! later reads the outbox ([`NotifyStore::pending_events`]), matches subscriptions and turns each match into a
//! delivery in one step ([`NotifyStore::fan_out`]); delivery workers send them and record every attempt.

use async_trait::async_trait;
use chanto_core::{BuildId, DeployId, SiteName};
use serde::Serialize;

use crate::{StoreError, UnixMillis};

/// The events the store records, by name.
pub const EVENT_KINDS: [&str; 12] = [
    "build.queued",
    "build.started",
    "build.succeeded",
    "build.failed",
    "build.cancelled",
    "deploy.ready",
    "deploy.activated",
    "deploy.rolled_back",
    "preview.ready",
    "preview.removed",
    "certificate.failed",
    "certificate.expiring",
];

/// A notification subscription of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its id (`sub_` + hex).
    pub id: String,
    /// The site.
    pub site: SiteName,
    /// The channel: `webhook`, `slack`, `discord`, `email`, `github`, `gitlab`, `gitea`.
    pub channel: String,
    /// The channel's settings as JSON, sealed (they hold URLs, passwords and tokens).
    pub config: Vec<u8>,
    /// A description that is safe to show (secrets masked).
    pub display: String,
    /// Which events and branches, as JSON (`chanto_notify::Filter`).
    pub filter: String,
    /// When it was created.
    pub created_at: UnixMillis,
}

/// An event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Its position; events are handed out in this order.
    pub seq: i64,
    /// The site.
    pub site: SiteName,
    /// One of [`EVENT_KINDS`].
    pub kind: String,
    /// The branch.
    pub branch: String,
    /// The build it is about.
    pub build: Option<BuildId>,
    /// The deploy it is about.
    pub deploy: Option<DeployId>,
    /// For a rollback, the deploy that was rolled back from.
    pub detail: Option<String>,
    /// When it happened.
    pub at: UnixMillis,
}

/// A delivery to create when an event is fanned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The subscription.
    pub subscription: String,
    /// What to do: `send` (chat, mail, webhook), `status` (a commit status) or `comment` (the pull request comment).
    pub action: String,
    /// Deliveries with the same key on one subscription replace each other: once a newer one is delivered, an older
    /// one still pending is dropped instead of overwriting it (e.g. `pr:7`).
    pub key: Option<String>,
    /// The event's kind.
    pub event_kind: String,
    /// The event's id.
    pub event_id: String,
    /// What to send: the event and anything computed for it, as JSON.
    pub payload: String,
}

/// A delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Its id.
    pub id: i64,
    /// The subscription.
    pub subscription: String,
    /// The site.
    #[serde(serialize_with = "crate::notify::ser_site")]
    pub site: SiteName,
    /// `send`, `status` or `comment`.
    pub action: String,
    /// See [`NewDelivery::key`].
    pub key: Option<String>,
    /// The event's kind.
    pub event_kind: String,
    /// The event's id.
    pub event_id: String,
    /// What to send.
    #[serde(skip)]
    pub payload: String,
    /// `pending`, `delivered`, `dead` or `superseded`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_at: UnixMillis,
    /// What the last attempt ended with.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it last changed.
    pub updated_at: UnixMillis,
}

fn ser_site<S: serde::Serializer>(s: &SiteName, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryAttempt {
    /// 1 for the first.
    pub n: u32,
    /// When it started.
    pub at: UnixMillis,
    /// How long it took.
    pub duration_ms: u64,
    /// The receiver's HTTP status or SMTP reply code, if it answered.
    pub status: Option<u16>,
    /// `delivered`, `retry`, `dead` or `superseded`, with the reason.
    pub outcome: String,
    /// The start of what the receiver answered.
    pub response: String,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryNext {
    /// Done.
    Delivered,
    /// Try again at this time.
    Retry(UnixMillis),
    /// Given up.
    Dead,
    /// A newer delivery with the same key made this one moot.
    Superseded,
}

/// The notification repository. Every backend passes [`crate::conformance::notify_store`].
#[async_trait]
pub trait NotifyStore: Send + Sync + 'static {
    /// Adds a subscription.
    async fn add_subscription(&self, s: Subscription) -> Result<(), StoreError>;
    /// A site's subscriptions, oldest first.
    async fn list_subscriptions(&self, site: &SiteName) -> Result<Vec<Subscription>, StoreError>;
    /// One subscription of a site.
    async fn get_subscription(&self, site: &SiteName, id: &str) -> Result<Option<Subscription>, StoreError>;
    /// Removes a subscription with its deliveries; false if there was none.
    async fn delete_subscription(&self, site: &SiteName, id: &str) -> Result<bool, StoreError>;

    /// Records an event that no metadata change of the store's own makes
    /// (`certificate.*`: the control plane's loops decide them), with
    /// `detail` as its body, when the site has a subscription. Returns
    /// whether it was recorded.
    async fn record_site_event(
        &self,
        site: &SiteName,
        kind: &str,
        branch: &str,
        detail: &str,
        at: UnixMillis,
    ) -> Result<bool, StoreError>;

    /// Events not fanned out yet, oldest first.
    async fn pending_events(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError>;
    /// Creates an event's deliveries and marks it fanned out, in one transaction. An event already fanned out is
    /// left alone (so two dispatchers never deliver it twice). Returns whether this call fanned it out.
    async fn fan_out(&self, seq: i64, deliveries: Vec<NewDelivery>, now: UnixMillis) -> Result<bool, StoreError>;
    /// Pending deliveries due at `now`, oldest first, at most one per subscription (so a subscription's deliveries
    /// are made in order).
    async fn due_deliveries(&self, now: UnixMillis, limit: u32) -> Result<Vec<Delivery>, StoreError>;
    /// Takes a due delivery for one attempt: leases it to `owner` until `lease_until` if it is still pending with
    /// `attempts` attempts, due at `now` and not leased (or its lease ended before `now`). False when another worker
    /// (or an earlier pass) took it; a worker that dies mid-attempt leaves it to be tried again once the lease ends
    /// (or at once when its node restarts, [`Self::release_leases`]).
    async fn claim_delivery(
        &self,
        id: i64,
        attempts: u32,
        owner: &crate::Owner,
        now: UnixMillis,
        lease_until: UnixMillis,
    ) -> Result<bool, StoreError>;
    /// Frees the leases of earlier runs of `owner.node`, for a node starting up: their attempts in flight died with
    /// that run (one process per data directory). Leases of other nodes, live or not, are left to run out. Returns
    /// how many were freed.
    async fn release_leases(&self, owner: &crate::Owner) -> Result<u64, StoreError>;
    /// The earliest time a pending delivery is due (or its lease ends), if any.
    async fn next_due(&self) -> Result<Option<UnixMillis>, StoreError>;
    /// Whether a delivery newer than `id` with the same subscription and key has been delivered.
    async fn newer_delivered(&self, subscription: &str, key: &str, id: i64) -> Result<bool, StoreError>;
    /// Records attempt `attempt.n` and moves the delivery on; `Conflict` unless the delivery is pending with
    /// `n - 1` attempts recorded (another worker recorded this attempt).
    async fn record_attempt(
        &self,
        id: i64,
        attempt: DeliveryAttempt,
        next: DeliveryNext,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
    /// A site's deliveries, newest first, optionally of one subscription.
    async fn list_notify_deliveries(
        &self,
        site: &SiteName,
        subscription: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// One delivery of a site with its attempts.
    async fn get_notify_delivery(
        &self,
        site: &SiteName,
        id: i64,
    ) -> Result<Option<(Delivery, Vec<DeliveryAttempt>)>, StoreError>;
    /// Sends an ended delivery of a site again: a new pending delivery with the same subscription, action, key,
    /// event and payload, due at `now`. Returns its id; `None` when there is no such delivery; `Conflict` while it
    /// is still pending.
    async fn redeliver(&self, site: &SiteName, id: i64, now: UnixMillis) -> Result<Option<i64>, StoreError>;
    /// The id of the comment a subscription keeps on a pull request.
    async fn forge_comment(&self, subscription: &str, pull_request: u64) -> Result<Option<String>, StoreError>;
    /// Remembers that comment.
    async fn set_forge_comment(&self, subscription: &str, pull_request: u64, id: &str) -> Result<(), StoreError>;
    /// Drops events and ended deliveries older than `before`. Returns how many rows went.
    async fn prune_notifications(&self, before: UnixMillis) -> Result<u64, StoreError>;
}

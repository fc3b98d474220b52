//! chanto's storage layer: where blobs and metadata live. Every backend sits
//! behind one trait per role ([`BlobStore`], [`MetaStore`]; metadata on SQLite or
//! PostgreSQL) and passes one
//! conformance suite ([`conformance`]), so callers never know which engine runs.

pub mod accounts;
pub mod blob;
pub mod builds;
pub mod cached;
pub mod conformance;
pub mod domains;
pub mod dump;
pub mod error;
pub mod health;
pub mod meta;
pub mod node_wire;
pub mod nodes;
pub mod notify;
pub mod postgres;
mod postgres_accounts;
mod postgres_builds;
mod postgres_domains;
mod postgres_health;
mod postgres_listen;
mod postgres_nodes;
mod postgres_notify;
pub mod postgres_tls;
pub mod rollback;
pub mod routing;
pub mod s3;
pub mod snapshot;
pub mod sqlite;
mod sqlite_accounts;
mod sqlite_builds;
mod sqlite_domains;
mod sqlite_nodes;
mod sqlite_notify;
pub mod tls;

pub use accounts::{AccountStore, ApiToken, AuditEntry, AuditQuery, Role, Scope, SessionRecord, UserRecord};
pub use blob::{BlobInfo, BlobStore, ByteStream, LocalBlobStore, OpenBlob};
pub use builds::{
    BuildHook, BuildOutcome, BuildRecord, BuildStore, EnvVar, GitConnection, NewBuild, Owner, WebhookDelivery,
};
pub use cached::CachedBlobStore;
pub use domains::{
    AcmeChallenge, BaseCertificate, CertificateRecord, CertificateSource, DomainRecord, DomainState, DomainStore,
    NewDomain, SiteTls,
};
pub use error::StoreError;
pub use meta::{
    ActivationKind, BranchRecord, DeployFile, DeployRecord, MetaStore, NewDeploy, Permalink, PlatformState, RoutingRow,
    SiteRecord, VariantRecord,
};
pub use nodes::{NodeRecord, NodeStore, NodeToken};
pub use notify::{
    Delivery, DeliveryAttempt, DeliveryNext, EVENT_KINDS, NewDelivery, NotifyStore, OutboxEvent, Subscription,
};
pub use postgres::PostgresMeta;
pub use routing::{
    BaseCertRoute, BaseChallengeRoute, DomainRoute, RoutingAnnouncement, RoutingChange, RoutingSink, RoutingTable,
    SiteRouting,
};
pub use s3::{S3BlobStore, S3Location, S3Options};
pub use sqlite::SqliteMeta;

/// Milliseconds since the Unix epoch: the one time type stored in metadata.
/// Callers pass the clock in, so expiry and history are testable.
pub type UnixMillis = i64;

/// The current time as [`UnixMillis`].
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source failed");
    out
}

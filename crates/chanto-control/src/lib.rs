//! chanto's control plane: the HTTP API, the deploy pipeline (manifest,
//! upload-what-is-missing, precompression, finalize), activation and rollback,
//! and the janitor that expires abandoned uploads and collects garbage
//! (retention and unreferenced blobs, `gc.rs`). It is the only writer of
//! metadata; it tells edges what to serve through [`chanto_store::RoutingSink`].

pub mod access;
pub mod accounts;
pub mod acme;
mod acme_base;
pub mod acme_dns;
pub mod acme_orders;
pub mod api;
pub mod auth;
pub mod base_certs;
pub mod batch;
pub mod builds;
pub mod cert_events;
pub mod certcheck;
pub mod config;
pub mod console;
pub mod domains;
pub mod error;
pub mod gc;
pub mod import;
pub mod nodes;
pub mod notify;
pub mod oidc;
pub mod pipeline;
pub mod platform;
pub mod platform_ops;
pub mod precompress;
pub mod site_settings;
pub mod walk;

pub use api::{ApiDoc, router};
pub use config::ControlConfig;
pub use error::ApiError;
pub use pipeline::Control;

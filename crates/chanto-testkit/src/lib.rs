//! Test servers for chanto's tests, started once per test binary:
//! PostgreSQL ([`pg`]) and an S3-compatible server ([`s3`]), either over
//! TLS with a throwaway certificate authority ([`tls`]). Dev-only;
//! never a dependency of a shipped crate.

pub mod browser;
pub mod pg;
pub mod s3;
pub mod tls;

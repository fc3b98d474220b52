//! Test servers for chanto's tests, started once per test binary: PostgreSQL
//! ([`pg`]). Dev-only; never a dependency of a shipped crate.

pub mod pg;

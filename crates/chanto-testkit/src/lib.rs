//! Test servers.
pub mod s3;

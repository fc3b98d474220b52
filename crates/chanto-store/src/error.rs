//! The storage layer's error: what failed, whether the caller caused it, and the
//! HTTP status it maps to.

use chanto_core::{ContentHash, ValidationError};

/// An error from a blob store or the metadata repository.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The bytes sent do not hash to the name they were sent under.
    #[error("blob bytes hash to {actual}, not {expected}: the upload was corrupted or sent under the wrong name")]
    HashMismatch {
        /// The hash the client claimed.
        expected: ContentHash,
        /// The hash of the bytes received.
        actual: ContentHash,
    },
    /// A blob is larger than allowed.
    #[error("blob is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The device holding the store is full. Nothing half-written was kept.
    #[error("no space left in the blob store ({context}); free disk space and retry")]
    Full {
        /// What was being written.
        context: String,
    },
    /// The request conflicts with the current state (e.g. a name in use, a
    /// finalized deploy).
    #[error("{0}")]
    Conflict(String),
    /// The input breaks a rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A file-system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database: {0}")]
    Db(String),
    /// A store on another machine (the metadata database, the object store)
    /// cannot be reached, dropped the connection, or kept failing after
    /// bounded retries; nothing of the failed call was kept, and retrying
    /// once it is back succeeds. The message names the store and, where
    /// known, the fix.
    #[error("{0}")]
    Unavailable(String),
    /// The store's configuration is wrong (a bad URL, a refused option); the
    /// message names the flag and the fix.
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    /// An IO error with context; "no space" errors become [`StoreError::Full`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        // ENOSPC (28) and EDQUOT (122) both mean the device will take no more.
        if matches!(source.raw_os_error(), Some(28) | Some(122)) || source.kind() == std::io::ErrorKind::StorageFull {
            return Self::Full { context };
        }
        Self::Io { context, source }
    }

    /// The HTTP status this error maps to when it reaches an API client.
    pub fn http_status_code(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::HashMismatch { .. } | Self::Invalid(_) => 400,
            Self::TooLarge { .. } => 413,
            Self::Conflict(_) => 409,
            Self::Full { .. } => 507,
            Self::Io { .. } | Self::Db(_) | Self::Config(_) => 500,
            Self::Unavailable(_) => 503,
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Full { .. } | Self::Io { .. } | Self::Db(_) | Self::Unavailable(_))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Db(e.to_string())
    }
}

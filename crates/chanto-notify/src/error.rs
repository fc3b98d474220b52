//! The one error type of this crate: each variant names the header or field at fault and the fix.

use crate::event::EVENT_NAMES;

/// Why a webhook delivery failed verification, or why a subscription filter was refused.
///
/// Every variant knows its HTTP status ([`Error::status`]) and a short machine code ([`Error::code`]), so the HTTP
/// layer can answer without matching on variants. Messages echo user input only through `{:?}` (escaped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The secret given to [`crate::verify`] is empty: unsigned webhooks are never accepted.
    #[error(
        "the webhook secret is empty; chanto never accepts unsigned webhooks, so configure the receiver with the \
         secret chanto shows for this webhook"
    )]
    EmptySecret,

    /// A signing header is absent.
    #[error(
        "{header} header is missing; check that the request comes from a chanto webhook (chanto always sends \
         X-Chanto-Timestamp and X-Chanto-Signature) and that no proxy strips it"
    )]
    MissingHeader {
        /// The header that was expected.
        header: &'static str,
    },

    /// A signing header is present but not of the documented form.
    #[error("{header} is not of the form `{expected}`; check that the request comes from a chanto webhook")]
    MalformedHeader {
        /// The header at fault.
        header: &'static str,
        /// The form the header must have.
        expected: &'static str,
    },

    /// The signature was not made with this secret over this timestamp and body.
    #[error(
        "X-Chanto-Signature does not match X-Chanto-Timestamp and the body; check that the receiver uses the secret \
         chanto shows for this webhook and verifies the raw body bytes before parsing them"
    )]
    BadSignature,

    /// The signature is genuine but the timestamp is too far from the receiver's clock: a replay, or clock skew.
    #[error(
        "X-Chanto-Timestamp is {skew_s} s away from the receiver's clock, more than the {tolerance_s} s allowed; the \
         delivery is a replay, or the clocks of chanto and the receiver disagree (synchronise them with NTP)"
    )]
    StaleTimestamp {
        /// How far the timestamp is from the receiver's clock, in seconds.
        skew_s: u64,
        /// The tolerance the receiver allows, in seconds.
        tolerance_s: u64,
    },

    /// An event name is not one of [`crate::EventKind::ALL`].
    #[error("unknown event {name:?} in `events`; use one of: {EVENT_NAMES}")]
    UnknownEvent {
        /// The name given (possibly shortened).
        name: String,
    },

    /// A branch pattern of a subscription filter cannot be used.
    #[error("branches[{index}] {pattern:?} {reason}")]
    BadBranchPattern {
        /// Position of the pattern in `branches`.
        index: usize,
        /// The pattern given (possibly shortened).
        pattern: String,
        /// What is wrong and how to fix it.
        reason: &'static str,
    },
}

impl Error {
    /// The HTTP status a server answers with: 400 for malformed requests, 401 when verification fails, 422 for
    /// a filter that cannot be used.
    pub fn status(&self) -> u16 {
        match self {
            Error::MissingHeader { .. } | Error::MalformedHeader { .. } => 400,
            Error::EmptySecret | Error::BadSignature | Error::StaleTimestamp { .. } => 401,
            Error::UnknownEvent { .. } | Error::BadBranchPattern { .. } => 422,
        }
    }

    /// A short, stable machine-readable code for API responses and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Error::EmptySecret => "empty_secret",
            Error::MissingHeader { .. } => "missing_header",
            Error::MalformedHeader { .. } => "malformed_header",
            Error::BadSignature => "bad_signature",
            Error::StaleTimestamp { .. } => "stale_timestamp",
            Error::UnknownEvent { .. } => "unknown_event",
            Error::BadBranchPattern { .. } => "bad_branch_pattern",
        }
    }
}

/// Shortens user input before it is echoed in an error message.
pub(crate) fn preview(s: &str) -> String {
    crate::text::truncate(s, 64)
}

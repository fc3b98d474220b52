//! The one error type of this crate: each variant names the header or JSON field at fault and the fix.

use crate::Forge;

/// Why a webhook request was refused.
///
/// Every variant knows its HTTP status ([`WebhookError::status`]) and a short machine code
/// ([`WebhookError::code`]), so the HTTP layer can answer without matching on variants.
/// Messages never echo more than a short, escaped preview of what the sender supplied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The site's webhook secret is empty: chanto never accepts unsigned webhooks.
    #[error(
        "the webhook secret for this site is empty; chanto refuses unsigned webhooks, so generate a secret for the site \
         and configure it on the forge"
    )]
    EmptySecret,

    /// The header carrying the signature (or GitLab's token) is absent.
    #[error(
        "{header} header is missing; set the secret of the {} webhook to the one chanto shows for this site \
         (the forge only signs deliveries when a secret is set)",
        .forge.name()
    )]
    MissingSignature {
        /// Forge the request claimed to come from.
        forge: Forge,
        /// Header that was expected, e.g. `X-Hub-Signature-256`.
        header: &'static str,
    },

    /// The signature header is present but not of the expected form.
    #[error(
        "{header} is not of the form `{expected}`; check that the webhook URL on {} names the right forge",
        .forge.name()
    )]
    MalformedSignature {
        /// Forge the request claimed to come from.
        forge: Forge,
        /// Header at fault.
        header: &'static str,
        /// The form the header must have.
        expected: &'static str,
    },

    /// The signature is well-formed but was not made with this site's secret over this body.
    #[error(
        "{header} does not match the body; check that the webhook secret configured on {} is the one chanto shows \
         for this site",
        .forge.name()
    )]
    BadSignature {
        /// Forge the request claimed to come from.
        forge: Forge,
        /// Header at fault.
        header: &'static str,
    },

    /// GitLab's `X-Gitlab-Token` differs from this site's secret.
    #[error(
        "X-Gitlab-Token does not match; check that the secret token configured on the GitLab webhook is the one \
         chanto shows for this site"
    )]
    BadToken,

    /// The header naming the event is absent.
    #[error("{header} header is missing; check that the webhook URL on {} names the right forge", .forge.name())]
    MissingEvent {
        /// Forge the request claimed to come from.
        forge: Forge,
        /// Header that was expected, e.g. `X-GitHub-Event`.
        header: &'static str,
    },

    /// The event header holds something that is not an event name (empty, too long, odd characters).
    #[error(
        "{header} value `{value}` is not an event name; check that the webhook URL on {} names the right forge",
        .forge.name()
    )]
    UnsupportedEvent {
        /// Forge the request claimed to come from.
        forge: Forge,
        /// Header at fault.
        header: &'static str,
        /// Escaped, shortened preview of the value.
        value: String,
    },

    /// The body exceeds [`crate::MAX_BODY_BYTES`].
    #[error(
        "webhook body is {len} bytes, over the {limit}-byte limit; forges cap their payloads below this, so check \
         that the request comes from the forge",
        limit = crate::MAX_BODY_BYTES
    )]
    PayloadTooLarge {
        /// Length of the body received.
        len: usize,
    },

    /// The body is not JSON, or a field has the wrong type or is missing.
    #[error("malformed {forge} {event} payload{}: {message}", at_path(.path))]
    MalformedPayload {
        /// Forge the request claimed to come from.
        forge: Forge,
        /// Event name from the event header.
        event: String,
        /// JSON path of the offending value (`pull_request.head.sha`), or `None` when the body is not JSON at all.
        path: Option<String>,
        /// What the JSON parser reported.
        message: String,
    },

    /// A field is well-typed but its value is unusable (branch name with control characters, commit id that is
    /// not hex, pull request number 0).
    #[error("{forge} {event} payload field `{field}` {problem}")]
    InvalidField {
        /// Forge the request claimed to come from.
        forge: Forge,
        /// Event name from the event header.
        event: String,
        /// JSON path of the field, e.g. `pull_request.head.ref`.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// A forge name (from a URL or configuration) is not one chanto knows.
    #[error("unknown forge `{name}`; expected one of github, gitlab, gitea, forgejo")]
    UnknownForge {
        /// Escaped, shortened preview of the name given.
        name: String,
    },
}

fn at_path(path: &Option<String>) -> String {
    path.as_deref().map(|p| format!(" at {p}")).unwrap_or_default()
}

impl WebhookError {
    /// HTTP status to answer with.
    ///
    /// 401 for a missing or wrong signature/token, 400 for a request whose headers or body are not a usable
    /// webhook, 413 for an oversized body, 404 for an unknown forge (it comes from the URL) and 500 for an empty
    /// secret (chanto's own configuration is at fault, not the sender).
    pub fn status(&self) -> u16 {
        match self {
            Self::EmptySecret => 500,
            Self::MissingSignature { .. }
            | Self::MalformedSignature { .. }
            | Self::BadSignature { .. }
            | Self::BadToken => 401,
            Self::MissingEvent { .. }
            | Self::UnsupportedEvent { .. }
            | Self::MalformedPayload { .. }
            | Self::InvalidField { .. } => 400,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnknownForge { .. } => 404,
        }
    }

    /// Short, stable machine code for API answers and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmptySecret => "empty_secret",
            Self::MissingSignature { .. } => "missing_signature",
            Self::MalformedSignature { .. } => "malformed_signature",
            Self::BadSignature { .. } => "bad_signature",
            Self::BadToken => "bad_token",
            Self::MissingEvent { .. } => "missing_event",
            Self::UnsupportedEvent { .. } => "unsupported_event",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::MalformedPayload { .. } => "malformed_payload",
            Self::InvalidField { .. } => "invalid_field",
            Self::UnknownForge { .. } => "unknown_forge",
        }
    }
}

//! The one error type of the core: a rejected input, naming the field and the fix.

/// An input that breaks one of chanto's rules. `field` names the input (for
/// example `name` or `files["a/../b"]`), `message` says what is wrong and how
/// to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending input, in the caller's words (a JSON field, a path).
    pub field: String,
    /// What is wrong and what would fix it.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// The same error, re-attributed to another field name (a caller that knows
    /// the input better than the validator does).
    pub fn in_field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}

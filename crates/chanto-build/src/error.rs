//! The one error type of this crate, so callers match on a single enum.

/// Everything that can go wrong in this crate. Each message names the input and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A build spec file is malformed. `line` and `column` are 1-based; the column counts characters.
    #[error("{file}:{line}:{column}: {message}")]
    Config {
        /// The file, relative to the repository root, e.g. `amplify.yml` or `site/netlify.toml`.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The repository has no build spec and the site settings name no command or publish directory.
    #[error(
        "no build spec: add a [build] table to chanto.toml (or an amplify.yml or netlify.toml), \
         or set the site's build command or publish directory"
    )]
    NoBuildSpec,
    /// A site build setting is invalid (the settings are the fallback when the repository has no spec).
    #[error("site settings: {field} {message}")]
    Settings {
        /// The setting, e.g. `publish`.
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A branch pattern is invalid.
    #[error("branch pattern {pattern:?} {reason}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An environment variable name or value is invalid.
    #[error("environment variable {name:?}: {reason}")]
    Variable {
        /// The variable's name as given.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}

impl Error {
    /// A stable machine-readable code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config { .. } => "invalid_build_spec",
            Error::NoBuildSpec => "no_build_spec",
            Error::Settings { .. } => "invalid_build_settings",
            Error::Pattern { .. } => "invalid_branch_pattern",
            Error::Variable { .. } => "invalid_variable",
        }
    }
}

/// The error [`crate::resolve_spec`] returns (the crate's one [`Error`]).
pub type SpecError = Error;
/// The error [`crate::BranchFilter::new`] returns (the crate's one [`Error`]).
pub type PatternError = Error;

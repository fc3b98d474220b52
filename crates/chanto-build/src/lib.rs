//! chanto's build logic without IO: callers read files, run processes and keep time; this crate decides.
//!
//! # What is here
//!
//! - [`resolve_spec`]: turn a repository's build configuration into one [`BuildSpec`].
//! - [`BranchFilter`], [`skip_requested`], [`preview_branch`]: which pushes start a build.
//! - [`builtin_env`], [`merge_env`]: the environment a build's commands run with.
//! - [`Masker`]: hide secret values in build logs.
//!
//! # How a build spec is resolved
//!
//! [`resolve_spec`] looks at the repository root and takes the first of:
//!
//! 1. `chanto.toml` with a `[build]` table. A `chanto.toml` without `[build]` (one that only holds
//!    redirects, headers or access rules) is skipped. Unknown keys inside `[build]` are errors.
//! 2. `amplify.yml`, or `amplify.yaml` when there is no `amplify.yml` (AWS Amplify build spec, version 1,
//!    including `applications:` monorepos, selected by [`SiteBuildSettings::app_root`]).
//! 3. `netlify.toml` with a `[build]` or `[context]` table. When the site's settings name a base
//!    directory (Netlify's base directory set in its UI) holding a `netlify.toml`, Netlify reads
//!    `<base>/netlify.toml` instead of the root's: so does chanto, with `publish` and `command` relative to that base,
//!    and its redirects and headers go into the deploy (see [`build_layout`]).
//! 4. The site's own settings ([`SiteBuildSettings`]): `command` becomes one `build` phase. When the
//!    settings have neither a command nor a publish directory, resolution fails with
//!    [`Error::NoBuildSpec`].
//!
//! In `chanto.toml` and `netlify.toml`, a key the file leaves out (`command`, `publish`, `base`) falls
//! back to the site settings, the way Netlify merges its UI settings with `netlify.toml`.
//! Spec files larger than 1 MiB are rejected.

mod env;
mod error;
mod layout;
mod mask;
mod spec;
mod trigger;

pub use env::{BuildVars, builtin_env, merge_env, validate_var_name, validate_var_value};
pub use error::{Error, PatternError, SpecError};
pub use layout::{FIREBASE_DEFAULT_IGNORE, ProjectLayout, RuleFile, build_layout, excluded, project_layout};
pub use mask::Masker;
pub use spec::{BuildSpec, Context, Phase, SiteBuildSettings, SpecInput, resolve_spec};
pub use trigger::{BranchFilter, glob_matches, preview_branch, skip_requested};

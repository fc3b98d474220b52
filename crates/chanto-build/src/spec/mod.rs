//! Resolves a repository's build configuration (chanto.toml, amplify.yml, netlify.toml or the site's
//! settings) into one [`BuildSpec`], so the build runner has a single shape to run.

mod amplify;
mod toml_spec;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Spec files larger than this are rejected before parsing.
const MAX_SPEC_BYTES: usize = 1024 * 1024;

/// Which kind of deploy a build makes (Netlify's deploy contexts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Context {
    /// A deploy of the site's production branch.
    Production,
    /// A deploy of any other branch.
    BranchDeploy,
    /// A deploy of a pull request.
    DeployPreview,
}

impl Context {
    /// The context's name in config files and in `CONTEXT`: `production`, `branch-deploy` or
    /// `deploy-preview`.
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Production => "production",
            Context::BranchDeploy => "branch-deploy",
            Context::DeployPreview => "deploy-preview",
        }
    }
}

/// The site's own build settings (the fallback, and app root for monorepos).
#[derive(Default, Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteBuildSettings {
    /// The build command, run in `base`.
    pub command: Option<String>,
    /// The output directory, relative to `base`.
    pub publish: Option<String>,
    /// The directory the command runs in, relative to the repository root.
    pub base: Option<String>,
    /// Which application of an Amplify monorepo spec (`applications[].appRoot`) this site builds.
    pub app_root: Option<String>,
}

/// One phase of a build: a name and shell commands run in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// `preBuild`, `build` or `postBuild`.
    pub name: String,
    /// Shell commands, run in order; the build fails at the first that fails.
    pub commands: Vec<String>,
}

/// A resolved build specification.
///
/// All paths are relative to the repository root and normalized (`""` is the root, no `.` parts, no
/// trailing `/`), and never absolute, never contain `..`, a backslash or a NUL byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSpec {
    /// Where the spec came from: `chanto.toml`, `amplify.yml`, `amplify.yaml`, `netlify.toml` or
    /// `site settings`.
    pub source: String,
    /// The directory the commands run in.
    pub base: String,
    /// The phases, in order; empty when a checked-in directory is published as is.
    pub phases: Vec<Phase>,
    /// The output directory.
    pub publish: String,
    /// Globs of the files to deploy, relative to `publish` (see [`crate::glob_matches`]); `["**/*"]`
    /// unless the spec says otherwise.
    pub files: Vec<String>,
    /// Variables the spec itself sets, in order.
    pub env: Vec<(String, String)>,
    /// Directories (or globs) to keep between builds.
    pub cache_paths: Vec<String>,
}

/// What [`resolve_spec`] needs to know about a build.
#[derive(Clone, Copy)]
pub struct SpecInput<'a> {
    /// Returns the text of a file, given its path from the repository root (a root file's name, or
    /// `<base>/netlify.toml` for the base directory the settings name), or `None` if there is no such
    /// file. The repository is untrusted: a caller reading a checkout must not follow symlinks on the way.
    pub read: &'a dyn Fn(&str) -> Option<String>,
    /// The kind of deploy this build makes; selects context overrides.
    pub context: Context,
    /// The branch being built; selects branch-name context overrides.
    pub branch: &'a str,
    /// The site's build settings.
    pub settings: &'a SiteBuildSettings,
}

/// Finds the build spec for a build, following the order described in the crate docs, and returns it
/// with warnings about settings chanto ignores (each naming `file:line`).
pub fn resolve_spec(input: &SpecInput<'_>) -> Result<(BuildSpec, Vec<String>), Error> {
    let mut warnings = Vec::new();
    if let Some(text) = read(input, "chanto.toml")?
        && let Some(spec) = toml_spec::chanto(&text, input)?
    {
        return Ok((spec, warnings));
    }
    let amplify = match read(input, "amplify.yml")? {
        Some(text) => Some(("amplify.yml", text)),
        None => read(input, "amplify.yaml")?.map(|text| ("amplify.yaml", text)),
    };
    if let Some((file, text)) = amplify {
        let spec = amplify::resolve(file, &text, input, &mut warnings)?;
        return Ok((spec, warnings));
    }
    if let Some((file, text)) = netlify_toml(input.read, input.settings)?
        && let Some(spec) = toml_spec::netlify(&file, &text, input, &mut warnings)?
    {
        return Ok((spec, warnings));
    }
    // Firebase's firebase.json names no build, only the directory it
    // publishes: the site's build command (if any) runs, and the site's
    // publish setting, when set, still wins.
    if input.settings.publish.is_none()
        && let Some(text) = read(input, "firebase.json")?
        && let Some(public) = crate::layout::firebase_public(&text)?
    {
        let settings = input.settings;
        let base = settings_path("base", settings.base.as_deref())?;
        let publish = normalize_path(&public, true).map_err(|message| Error::Config {
            file: "firebase.json".to_owned(),
            line: 1,
            column: 1,
            message: format!("hosting.public: {message}"),
        })?;
        let mut spec =
            finish("firebase.json", base, non_blank(settings.command.as_deref()), "", Vec::new(), Vec::new());
        spec.publish = publish;
        return Ok((spec, warnings));
    }
    Ok((from_settings(input.settings)?, warnings))
}

/// Reads a spec file, refusing ones too large to be a real spec.
fn read(input: &SpecInput<'_>, file: &str) -> Result<Option<String>, Error> {
    read_capped(input.read, file)
}

/// Reads a file with `read`, refusing one too large to be a real spec.
fn read_capped(read: &dyn Fn(&str) -> Option<String>, file: &str) -> Result<Option<String>, Error> {
    match read(file) {
        Some(text) if text.len() > MAX_SPEC_BYTES => Err(Error::Config {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: format!(
                "the file is {} bytes; build spec files may be at most 1 MiB, so move data out of it",
                text.len()
            ),
        }),
        text => Ok(text),
    }
}

/// The `netlify.toml` a build reads, as Netlify finds it: when the site's settings name a base directory
/// (Netlify's base directory set in its UI), `<base>/netlify.toml` if there is one; else the repository
/// root's. Returns the file's path from the root and its text, or `None` when there is neither.
///
/// The base directory's file wins over the root's, as in Netlify's own lookup (`getConfigPath` in
/// `@netlify/config`: the `--config` flag, then the base directory's file, then the root's).
pub(crate) fn netlify_toml(
    read: &dyn Fn(&str) -> Option<String>,
    settings: &SiteBuildSettings,
) -> Result<Option<(String, String)>, Error> {
    let base = settings_path("base", settings.base.as_deref())?;
    if !base.is_empty() {
        let file = format!("{base}/netlify.toml");
        if let Some(text) = read_capped(read, &file)? {
            return Ok(Some((file, text)));
        }
    }
    Ok(read_capped(read, "netlify.toml")?.map(|text| ("netlify.toml".to_owned(), text)))
}

/// The build spec made from the site's settings alone.
fn from_settings(settings: &SiteBuildSettings) -> Result<BuildSpec, Error> {
    let command = non_blank(settings.command.as_deref());
    if command.is_none() && settings.publish.is_none() {
        return Err(Error::NoBuildSpec);
    }
    let base = settings_path("base", settings.base.as_deref())?;
    let publish = settings_path("publish", settings.publish.as_deref())?;
    Ok(finish("site settings", base, command, &publish, Vec::new(), Vec::new()))
}

/// A command, unless it is missing or blank (which means "no build command").
fn non_blank(command: Option<&str>) -> Option<String> {
    command.filter(|c| !c.trim().is_empty()).map(str::to_owned)
}

/// A normalized path from a site setting; `None` is the root.
fn settings_path(field: &'static str, value: Option<&str>) -> Result<String, Error> {
    normalize_path(value.unwrap_or(""), true).map_err(|message| Error::Settings { field, message })
}

/// Assembles a spec whose paths are already normalized; `publish` and `cache` are relative to `base`.
fn finish(
    source: &str,
    base: String,
    command: Option<String>,
    publish: &str,
    env: Vec<(String, String)>,
    cache: Vec<String>,
) -> BuildSpec {
    BuildSpec {
        source: source.to_owned(),
        publish: join(&base, publish),
        cache_paths: cache.iter().map(|c| join(&base, c)).collect(),
        base,
        phases: command.map(|c| Phase { name: "build".to_owned(), commands: vec![c] }).into_iter().collect(),
        files: default_files(),
        env,
    }
}

/// Every file under the publish directory.
fn default_files() -> Vec<String> {
    vec!["**/*".to_owned()]
}

/// Normalizes a relative path: drops `.` and empty parts and trailing `/`. Rejects absolute paths
/// (unless `leading_slash_is_root`, for formats where `/` means the root), `..`, backslashes and NUL.
/// The error says what is wrong and how to fix it.
fn normalize_path(raw: &str, leading_slash_is_root: bool) -> Result<String, String> {
    let problem = if raw.contains('\0') {
        Some("contains a NUL byte; remove it")
    } else if raw.contains('\\') {
        Some("contains a backslash; separate directories with /")
    } else if raw.starts_with('/') && !leading_slash_is_root {
        Some("is absolute; write it relative to the repository, e.g. \"dist\"")
    } else if raw.split('/').any(|part| part == "..") {
        Some("contains \"..\"; paths must stay inside the repository")
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(format!("path {raw:?} {problem}"));
    }
    let parts: Vec<&str> = raw.split('/').filter(|part| !part.is_empty() && *part != ".").collect();
    Ok(parts.join("/"))
}

/// Joins two normalized relative paths.
fn join(base: &str, rel: &str) -> String {
    match (base, rel) {
        ("", rel) => rel.to_owned(),
        (base, "") => base.to_owned(),
        (base, rel) => format!("{base}/{rel}"),
    }
}

/// 1-based line and column (in characters) of a byte offset in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests;

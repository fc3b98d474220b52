//! A platform config site's build (`GitSettings::platform_config`): the
//! configuration read from the checkout (never through a symlink), its
//! secret references resolved from the server's environment (only
//! `env:CHANTO_PLATFORM_*`), then planned and, on the production branch,
//! applied (the runner does those).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::platform::{MAX_FILE_BYTES, MAX_FILES, PlatformConfig, SecretRef};

/// The prefix of the only server environment variables a repository's
/// configuration may name: its author must not be able to copy any other
/// (a cloud credential, the server's own settings) into a site's variables.
pub const ENV_PREFIX: &str = "CHANTO_PLATFORM_";

/// The `platform_state` key under which a build of `branch` keeps its plan,
/// for the pull request's comment.
pub(crate) fn plan_key(branch: &str) -> String {
    format!("plan:{branch}")
}

/// The `platform_state` key that names the pull request a merge build
/// applied (its result goes to that pull request's comment).
pub(crate) fn merged_key(build: &str) -> String {
    format!("merged:{build}")
}

/// A fingerprint of a configuration's files (names and texts), to know the
/// pull request whose plan a merge applies: its last plan was of the same files.
pub(crate) fn files_hash(files: &[(String, String)]) -> String {
    let mut h = blake3::Hasher::new();
    for (name, text) in files {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().to_hex()[..32].to_owned()
}

/// The plan a build of a platform config site made, as kept for the comment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredPlan {
    /// The build that made it (a comment shows it only for that build's events).
    pub build: String,
    /// The plan for people, as `chanto plan` prints it (and, for a merge, what was applied).
    pub text: String,
    /// [`files_hash`] of the configuration it planned.
    #[serde(default)]
    pub files: String,
}

/// The longest plan text kept for a comment (the log has all of it; the
/// comment is cut far shorter anyway).
const MAX_STORED_PLAN: usize = 256 << 10;

impl StoredPlan {
    pub(crate) fn new(build: &str, text: &str, files: &str) -> Self {
        let mut text = text.to_owned();
        if text.len() > MAX_STORED_PLAN {
            let mut cut = MAX_STORED_PLAN;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n… (cut; the build log has the whole plan)\n");
        }
        Self { build: build.to_owned(), text, files: files.to_owned() }
    }
}

/// Reads the configuration at `rel` in the checkout `root`: a regular file,
/// or a directory's `*.toml` files (sorted by name, not recursive, hidden
/// files skipped, as `chanto plan -f DIR` reads one). Every step of the path
/// must be a real directory and every file a regular file: a symlink (which
/// could point anywhere on the server) is refused, never followed. Names are
/// relative to the repository (`chanto.platform.toml`, `platform/docs.toml`).
pub fn read_files(root: &Path, rel: &str) -> Result<Vec<(String, String)>, String> {
    let rel = rel.trim_matches('/');
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(format!("{rel:?} does not name a configuration in the repository"));
    }
    let mut at = root.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let shown = parts[..=i].join("/");
        let meta = std::fs::symlink_metadata(&at).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "{shown} is not in the repository at this commit; the site's platform config is {rel} (chanto git connect --platform-config)"
            ),
            _ => format!("{shown}: {e}"),
        })?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{shown} is a symlink; a platform configuration is read only from regular files and directories of the repository, never through a symlink"
            ));
        }
        let last = i + 1 == parts.len();
        if !last && !meta.is_dir() {
            return Err(format!("{shown} is not a directory"));
        }
    }
    let meta = std::fs::symlink_metadata(&at).map_err(|e| format!("{rel}: {e}"))?;
    if !meta.is_dir() {
        return Ok(vec![(rel.to_owned(), read_regular(&at, rel)?)]);
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&at).map_err(|e| format!("reading the directory {rel}: {e}"))? {
        let entry = entry.map_err(|e| format!("reading the directory {rel}: {e}"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if crate::platform::is_config_file_name(name) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(format!("{rel} has no *.toml files (subdirectories are not read)"));
    }
    if names.len() > MAX_FILES {
        return Err(format!("{rel} has {} *.toml files; a configuration has at most {MAX_FILES}", names.len()));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let shown = format!("{rel}/{name}");
        let path = at.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{shown}: {e}"))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{shown} is a symlink; a platform configuration is read only from regular files of the repository, never through a symlink"
            ));
        }
        out.push((shown.clone(), read_regular(&path, &shown)?));
    }
    Ok(out)
}

/// A regular file of at most [`MAX_FILE_BYTES`], opened without following a
/// symlink and without blocking on a FIFO.
fn read_regular(path: &Path, shown: &str) -> Result<String, String> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let too_big = || format!("{shown} is over {} KiB; a configuration file is at most that", MAX_FILE_BYTES >> 10);
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("{shown}: {e}"))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text"))
}

/// The value of each secret reference of `config`, by the reference as
/// written, from `env` (the server's environment): only `env:` names that
/// start with [`ENV_PREFIX`]. Else every reference that cannot be resolved,
/// one line each, naming it and why.
pub fn resolve_secrets(
    config: &PlatformConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, Vec<String>> {
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    for r in config.references() {
        match &r {
            SecretRef::Env(name) if name.starts_with(ENV_PREFIX) && name.len() > ENV_PREFIX.len() => match env(name) {
                Some(v) => {
                    values.insert(r.to_string(), v);
                }
                None => problems.push(format!(
                    "{r}: the variable is not set in the chanto server's environment (set it where chanto serve runs)"
                )),
            },
            SecretRef::Env(_) => problems.push(format!(
                "{r}: a repository-driven configuration reads only the server's environment variables named {ENV_PREFIX}…, \
                 so that a commit cannot copy the server's other variables into a site; name it env:{ENV_PREFIX}…"
            )),
            SecretRef::File(_) => problems.push(format!(
                "{r}: file: references are resolved only by the CLI (chanto plan/apply); in a repository-driven configuration use env:{ENV_PREFIX}…"
            )),
        }
    }
    if problems.is_empty() { Ok(values) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn a_file_or_a_directory_is_read_and_symlinks_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(&root.join("chanto.platform.toml"), "[site.a]\n");
        write(&root.join("platform/b.toml"), "[site.b]\n");
        write(&root.join("platform/a.toml"), "[site.a]\n");
        write(&root.join("platform/.hidden.toml"), "x");
        write(&root.join("platform/notes.md"), "x");
        assert_eq!(
            read_files(root, "chanto.platform.toml").unwrap(),
            [("chanto.platform.toml".to_owned(), "[site.a]\n".to_owned())]
        );
        let dir = read_files(root, "platform").unwrap();
        let names: Vec<&str> = dir.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["platform/a.toml", "platform/b.toml"]);

        let outside = tempfile::tempdir().unwrap();
        write(&outside.path().join("secret.toml"), "[site.stolen]\n");
        std::os::unix::fs::symlink(outside.path().join("secret.toml"), root.join("link.toml")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("linkdir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.toml"), root.join("platform/c.toml")).unwrap();
        for (path, shown) in [
            ("link.toml", "link.toml is a symlink"),
            ("linkdir", "linkdir is a symlink"),
            ("linkdir/secret.toml", "linkdir is a symlink"),
            ("platform", "platform/c.toml is a symlink"),
        ] {
            let e = read_files(root, path).unwrap_err();
            assert!(e.contains(shown), "{path}: {e}");
        }
        assert!(read_files(root, "missing.toml").unwrap_err().contains("not in the repository"));
        assert!(read_files(root, "../x").is_err());
        write(&root.join("big.toml"), &"#".repeat(MAX_FILE_BYTES + 1));
        assert!(read_files(root, "big.toml").unwrap_err().contains("at most"));
    }

    #[test]
    fn only_chanto_platform_variables_of_the_server_resolve() {
        let config = crate::platform::parse(
            "chanto.platform.toml",
            "[site.docs.env]\nA = { secret = \"env:CHANTO_PLATFORM_A\" }\nB = { secret = \"env:AWS_SECRET_ACCESS_KEY\" }\n\
             C = { secret = \"file:/etc/passwd\" }\nD = { secret = \"env:CHANTO_PLATFORM_UNSET\" }\n",
        )
        .unwrap();
        let env = |n: &str| match n {
            "CHANTO_PLATFORM_A" => Some("a-value".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("aws-value".to_owned()),
            _ => None,
        };
        let problems = resolve_secrets(&config, env).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("env:AWS_SECRET_ACCESS_KEY: ") && problems[0].contains(ENV_PREFIX));
        assert!(problems[1].starts_with("env:CHANTO_PLATFORM_UNSET: ") && problems[1].contains("not set"));
        assert!(problems[2].starts_with("file:/etc/passwd: file: references are resolved only by the CLI"));
        assert!(!problems.concat().contains("aws-value"));

        let ok = crate::platform::parse(
            "chanto.platform.toml",
            "[site.docs.env]\nA = { secret = \"env:CHANTO_PLATFORM_A\" }\n",
        )
        .unwrap();
        let values = resolve_secrets(&ok, env).unwrap();
        assert_eq!(values["env:CHANTO_PLATFORM_A"], "a-value");
    }

    #[test]
    fn a_stored_plan_is_bounded() {
        let long = "é".repeat(MAX_STORED_PLAN);
        let p = StoredPlan::new("b1", &long, "");
        assert!(p.text.len() < MAX_STORED_PLAN + 100 && p.text.ends_with("whole plan)\n"));
    }
}

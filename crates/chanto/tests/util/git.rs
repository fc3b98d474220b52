//! Real git repositories for end-to-end tests: a bare "origin" and a clone that commits and pushes.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::write_tree;

/// A bare repository and a working clone that pushes to it.
pub struct Repo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Lovelace")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Lovelace")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Repo {
    pub fn new(root: &Path) -> Repo {
        let bare = root.join("origin.git");
        let work = root.join("work");
        std::fs::create_dir_all(&bare).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { bare, work }
    }

    /// Commits `files` on `branch` (created from the current commit) and pushes; returns the commit id.
    pub fn commit(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let current = git(&self.work, &["symbolic-ref", "--short", "HEAD"]);
        if current != branch {
            let exists = Command::new("git")
                .args(["rev-parse", "--verify", "-q", branch])
                .current_dir(&self.work)
                .status()
                .unwrap()
                .success();
            git(
                &self.work,
                &if exists { vec!["checkout", "-q", branch] } else { vec!["checkout", "-q", "-b", branch] },
            );
        }
        write_tree(&self.work, files);
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&self.work, &["push", "-q", "origin", branch]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

/// A temporary directory builds can reach when the server runs them as `nobody`.
pub fn reachable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    tmp
}

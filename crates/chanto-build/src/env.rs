//! The environment a build's commands see: chanto's variables plus the names Amplify and Netlify
//! builds expect, so existing build scripts run unchanged.

use std::collections::HashMap;

use crate::{Context, Error};

/// Longest variable name accepted, in bytes.
const MAX_NAME_BYTES: usize = 256;
/// Largest variable value accepted, in bytes.
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Facts about one build, from which [`builtin_env`] derives the built-in variables.
#[derive(Clone, Copy, Debug)]
pub struct BuildVars<'a> {
    /// The site's name (also its id in chanto).
    pub site: &'a str,
    /// The branch being built (for a pull request preview, see [`crate::preview_branch`]).
    pub branch: &'a str,
    /// The full commit id being built.
    pub commit: &'a str,
    /// This build's id.
    pub build_id: &'a str,
    /// The pull request number, for a deploy preview.
    pub pull_request: Option<u64>,
    /// The site's main (production) URL; Netlify's `URL`.
    pub site_url: &'a str,
    /// The URL of this branch's environment (always shows the branch's latest deploy).
    pub url: &'a str,
    /// The permalink of this build's deploy; may be empty when it is not known before the build.
    pub deploy_url: &'a str,
    /// The kind of deploy this build makes.
    pub context: Context,
    /// The URL the repository is cloned from. Must not contain credentials: builds print variables.
    pub repository_url: &'a str,
}

/// The variables every build gets, in a fixed order:
///
/// - chanto's own: `CI=true`, `CHANTO_SITE`, `CHANTO_BRANCH`, `CHANTO_COMMIT`, `CHANTO_BUILD_ID`,
///   `CHANTO_PULL_REQUEST` (the number, or empty), `CHANTO_URL` (the branch environment),
///   `CHANTO_DEPLOY_URL`, `CHANTO_CONTEXT` (`production`, `branch-deploy` or `deploy-preview`);
/// - Amplify's: `AWS_APP_ID` (the site), `AWS_BRANCH`, `AWS_COMMIT_ID`, `AWS_JOB_ID` (the build id),
///   `AWS_CLONE_URL`, and `AWS_PULL_REQUEST_ID` for a pull request;
/// - Netlify's: `BRANCH` and `HEAD` (both the branch), `COMMIT_REF`, `CONTEXT`, `URL` (the site's main
///   URL), `DEPLOY_URL`, `DEPLOY_PRIME_URL` (the branch environment), `PULL_REQUEST` (`true`/`false`),
///   `REPOSITORY_URL`, and `REVIEW_ID` (the pull request number) for a pull request.
pub fn builtin_env(v: &BuildVars<'_>) -> Vec<(String, String)> {
    let pr = v.pull_request.map(|n| n.to_string());
    let mut env = vec![
        ("CI", "true"),
        ("CHANTO_SITE", v.site),
        ("CHANTO_BRANCH", v.branch),
        ("CHANTO_COMMIT", v.commit),
        ("CHANTO_BUILD_ID", v.build_id),
        ("CHANTO_PULL_REQUEST", pr.as_deref().unwrap_or("")),
        ("CHANTO_URL", v.url),
        ("CHANTO_DEPLOY_URL", v.deploy_url),
        ("CHANTO_CONTEXT", v.context.as_str()),
        ("AWS_APP_ID", v.site),
        ("AWS_BRANCH", v.branch),
        ("AWS_COMMIT_ID", v.commit),
        ("AWS_JOB_ID", v.build_id),
        ("AWS_CLONE_URL", v.repository_url),
        ("BRANCH", v.branch),
        ("HEAD", v.branch),
        ("COMMIT_REF", v.commit),
        ("CONTEXT", v.context.as_str()),
        ("URL", v.site_url),
        ("DEPLOY_URL", v.deploy_url),
        ("DEPLOY_PRIME_URL", v.url),
        ("PULL_REQUEST", if pr.is_some() { "true" } else { "false" }),
        ("REPOSITORY_URL", v.repository_url),
    ];
    if let Some(pr) = &pr {
        env.extend([("AWS_PULL_REQUEST_ID", pr.as_str()), ("REVIEW_ID", pr.as_str())]);
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Merges variable layers; a name set in a later layer (or later in the same layer) wins. Each name
/// keeps the position where it first appeared.
pub fn merge_env(layers: &[&[(String, String)]]) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (name, value) in layers.iter().flat_map(|layer| layer.iter()) {
        match index.get(name.as_str()) {
            Some(&i) => merged[i].1.clone_from(value),
            None => {
                index.insert(name, merged.len());
                merged.push((name.clone(), value.clone()));
            }
        }
    }
    merged
}

/// Checks a variable name: a letter or `_`, then letters, digits or `_` (ASCII), at most 256 bytes.
pub fn validate_var_name(name: &str) -> Result<(), Error> {
    let reason = match name.as_bytes() {
        [] => Some("name is empty"),
        _ if name.len() > MAX_NAME_BYTES => Some("name is longer than 256 bytes"),
        [first, ..] if first.is_ascii_digit() => Some("name starts with a digit; start it with a letter or _"),
        bytes if bytes.iter().any(|b| !(b.is_ascii_alphanumeric() || *b == b'_')) => {
            Some("name may only contain ASCII letters, digits and _")
        }
        _ => None,
    };
    reason.map_or(Ok(()), |reason| Err(Error::Variable { name: name.to_owned(), reason }))
}

/// Checks a variable value: no NUL byte (the OS cannot pass one), at most 64 KiB.
pub fn validate_var_value(name: &str, value: &str) -> Result<(), Error> {
    let reason = if value.contains('\0') {
        Some("value contains a NUL byte, which cannot be passed to a process")
    } else if value.len() > MAX_VALUE_BYTES {
        Some("value is larger than 64 KiB; store large data in a file instead")
    } else {
        None
    };
    reason.map_or(Ok(()), |reason| Err(Error::Variable { name: name.to_owned(), reason }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pull_request: Option<u64>, context: Context) -> BuildVars<'static> {
        BuildVars {
            site: "blog",
            branch: "feature/x",
            commit: "0123abc",
            build_id: "b-17",
            pull_request,
            site_url: "https://blog.example.com",
            url: "https://feature-x--blog.example.com",
            deploy_url: "https://d-17--blog.example.com",
            context,
            repository_url: "https://git.example.com/blog.git",
        }
    }

    fn get<'e>(env: &'e [(String, String)], name: &str) -> Option<&'e str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn branch_deploy_env() {
        let env = builtin_env(&vars(None, Context::BranchDeploy));
        for (name, want) in [
            ("CI", "true"),
            ("CHANTO_SITE", "blog"),
            ("CHANTO_BRANCH", "feature/x"),
            ("CHANTO_PULL_REQUEST", ""),
            ("CHANTO_URL", "https://feature-x--blog.example.com"),
            ("CHANTO_CONTEXT", "branch-deploy"),
            ("AWS_APP_ID", "blog"),
            ("AWS_JOB_ID", "b-17"),
            ("AWS_COMMIT_ID", "0123abc"),
            ("HEAD", "feature/x"),
            ("CONTEXT", "branch-deploy"),
            ("URL", "https://blog.example.com"),
            ("DEPLOY_PRIME_URL", "https://feature-x--blog.example.com"),
            ("DEPLOY_URL", "https://d-17--blog.example.com"),
            ("PULL_REQUEST", "false"),
            ("REPOSITORY_URL", "https://git.example.com/blog.git"),
        ] {
            assert_eq!(get(&env, name), Some(want), "{name}");
        }
        assert_eq!(get(&env, "AWS_PULL_REQUEST_ID"), None);
        assert_eq!(get(&env, "REVIEW_ID"), None);
        for (name, value) in &env {
            validate_var_name(name).unwrap();
            validate_var_value(name, value).unwrap();
        }
    }

    #[test]
    fn deploy_preview_env() {
        let env = builtin_env(&vars(Some(42), Context::DeployPreview));
        for (name, want) in [
            ("CHANTO_PULL_REQUEST", "42"),
            ("AWS_PULL_REQUEST_ID", "42"),
            ("REVIEW_ID", "42"),
            ("PULL_REQUEST", "true"),
            ("CONTEXT", "deploy-preview"),
        ] {
            assert_eq!(get(&env, name), Some(want), "{name}");
        }
    }

    #[test]
    fn merge_later_layers_win() {
        let pairs = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let builtin = pairs(&[("CI", "true"), ("NODE_ENV", "production")]);
        let spec = pairs(&[("NODE_ENV", "staging"), ("API", "a"), ("API", "b")]);
        let site = pairs(&[("SECRET", "s")]);
        assert_eq!(
            merge_env(&[&builtin, &spec, &site]),
            pairs(&[("CI", "true"), ("NODE_ENV", "staging"), ("API", "b"), ("SECRET", "s")])
        );
        assert!(merge_env(&[]).is_empty());
    }

    #[test]
    fn variable_names() {
        for good in ["A", "_", "NODE_VERSION", "a1_b2", &"X".repeat(256)] {
            assert_eq!(validate_var_name(good), Ok(()), "{good}");
        }
        for (bad, reason) in [
            ("", "empty"),
            ("1A", "digit"),
            ("A-B", "only contain"),
            ("A B", "only contain"),
            ("A=B", "only contain"),
            ("ÄPFEL", "only contain"),
            (&"X".repeat(257), "longer than 256"),
        ] {
            let err = validate_var_name(bad).unwrap_err();
            assert!(err.to_string().contains(reason), "{bad}: {err}");
        }
    }

    #[test]
    fn variable_values() {
        assert_eq!(validate_var_value("A", ""), Ok(()));
        assert_eq!(validate_var_value("A", &"x".repeat(64 * 1024)), Ok(()));
        assert!(validate_var_value("A", &"x".repeat(64 * 1024 + 1)).unwrap_err().to_string().contains("64 KiB"));
        assert!(validate_var_value("A", "a\0b").unwrap_err().to_string().contains("NUL"));
    }
}

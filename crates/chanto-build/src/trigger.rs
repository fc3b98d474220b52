//! Which pushes start a build: branch patterns, skip markers in commit messages, preview branch names.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Longest branch pattern accepted, in characters.
const MAX_PATTERN_CHARS: usize = 256;

/// One element of a compiled glob.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Token {
    /// A character that must match itself.
    Literal(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters without `/`.
    Star,
    /// `**` not followed by `/`: any run of characters.
    Any,
    /// `**/`: nothing, or any run of characters ending in `/` (so `**/*` also matches `index.html`).
    AnyDirs,
}

fn tokenize(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let token = match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                    Token::AnyDirs
                } else {
                    Token::Any
                }
            }
            '*' => Token::Star,
            '?' => Token::One,
            c => Token::Literal(c),
        };
        tokens.push(token);
        i += 1;
    }
    tokens
}

/// Whether `text` matches the glob `pattern`.
///
/// `*` matches any run of characters except `/`, `**` matches anything including `/`, `**/` also
/// matches nothing (so `**/*.html` matches `index.html`), `?` matches one character except `/`, and
/// every other character matches itself. Runs in O(pattern × text) time, without backtracking.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let tokens = tokenize(pattern);
    let text: Vec<char> = text.chars().collect();
    let n = text.len();
    // `next[j]`: whether tokens[i + 1..] match text[j..]; filled from the last token backwards.
    let mut next = vec![false; n + 1];
    next[n] = true;
    let mut row = vec![false; n + 1];
    for token in tokens.iter().rev() {
        // Walk the text backwards so `row[j + 1]` (the same token, one character later) is ready.
        // `dirs` is, for `**/`, whether some `/` at or after j is followed by a match of the rest.
        let mut dirs = false;
        for j in (0..=n).rev() {
            let c = text.get(j).copied();
            row[j] = match *token {
                Token::Literal(l) => c == Some(l) && next[j + 1],
                Token::One => c.is_some_and(|c| c != '/') && next[j + 1],
                Token::Star => next[j] || (c.is_some_and(|c| c != '/') && row[j + 1]),
                Token::Any => next[j] || (c.is_some() && row[j + 1]),
                Token::AnyDirs => {
                    dirs = dirs || (c == Some('/') && next[j + 1]);
                    next[j] || dirs
                }
            };
        }
        std::mem::swap(&mut next, &mut row);
    }
    next[0]
}

/// Which branches build automatically (Amplify-style auto-build patterns).
///
/// A branch builds when it matches any `include` pattern (an empty list includes every branch) and no
/// `exclude` pattern. Patterns use [`glob_matches`] syntax, e.g. `feature/*`, `release/**`, `main`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedFilter", deny_unknown_fields)]
pub struct BranchFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

/// The serialized form, validated into a [`BranchFilter`] on deserialization.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UncheckedFilter {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

impl TryFrom<UncheckedFilter> for BranchFilter {
    type Error = Error;

    fn try_from(raw: UncheckedFilter) -> Result<Self, Error> {
        BranchFilter::new(raw.include, raw.exclude)
    }
}

impl BranchFilter {
    /// Builds a filter, rejecting empty patterns, patterns over 256 characters and patterns containing
    /// whitespace or control characters (no git branch name contains those).
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> Result<Self, Error> {
        for pattern in include.iter().chain(&exclude) {
            let reason = if pattern.is_empty() {
                Some("is empty; write a branch name or a glob such as feature/*")
            } else if pattern.chars().count() > MAX_PATTERN_CHARS {
                Some("is longer than 256 characters; shorten it or use * and **")
            } else if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Some("contains whitespace or a control character, which no branch name has; remove it")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::Pattern { pattern: pattern.clone(), reason });
            }
        }
        Ok(BranchFilter { include, exclude })
    }

    /// The include patterns; empty means every branch.
    pub fn include(&self) -> &[String] {
        &self.include
    }

    /// The exclude patterns.
    pub fn exclude(&self) -> &[String] {
        &self.exclude
    }

    /// Whether a push to `branch` builds automatically.
    pub fn matches(&self, branch: &str) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|p| glob_matches(p, branch));
        included && !self.exclude.iter().any(|p| glob_matches(p, branch))
    }
}

/// Commit-message markers that ask for no build, as GitHub Actions, GitLab and Amplify spell them.
const SKIP_MARKERS: [&str; 6] = ["[skip ci]", "[ci skip]", "[skip-ci]", "[skip cd]", "[skip-cd]", "[no ci]"];

/// Whether a commit message asks to skip the build (`[skip ci]`, `[ci skip]`, `[skip-ci]`,
/// `[skip cd]`, `[skip-cd]` or `[no ci]`, in any letter case).
pub fn skip_requested(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    SKIP_MARKERS.iter().any(|marker| message.contains(marker))
}

/// The branch name a pull request's preview deploys under, as Amplify names it: `pr-<number>`.
pub fn preview_branch(pr: u64) -> String {
    format!("pr-{pr}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("main", "main", true),
            ("main", "main2", false),
            ("main", "mai", false),
            ("feature/*", "feature/login", true),
            ("feature/*", "feature/login/form", false),
            ("feature/*", "feature/", true),
            ("feature/**", "feature/login/form", true),
            ("feature/**", "feature", false),
            ("**", "", true),
            ("**", "a/b/c", true),
            ("*", "a/b", false),
            ("*", "", true),
            ("release-?", "release-1", true),
            ("release-?", "release-10", false),
            ("release-?", "release-/", false),
            ("**/*", "index.html", true),
            ("**/*", "a/b/index.html", true),
            ("**/*.html", "a/b/index.html", true),
            ("**/*.html", "a/b/index.css", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/xb", false),
            ("*-hotfix", "v1-hotfix", true),
            ("[x]", "[x]", true),
            ("dependabot/**", "dependabot/npm_and_yarn/lodash-4.17.21", true),
            ("ünï*", "ünïcode", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_matches(pattern, text), *want, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn hostile_glob_is_fast() {
        // Backtracking matchers take exponential time on this; the table-driven one is quadratic.
        let pattern = "*a".repeat(100) + "b";
        let text = "a".repeat(5000);
        assert!(!glob_matches(&pattern, &text));
        assert!(!glob_matches(&"**a".repeat(100), &"b".repeat(5000)));
    }

    #[test]
    fn filter_includes_and_excludes() {
        let filter = BranchFilter::new(
            vec!["main".into(), "feature/**".into()],
            vec!["feature/wip-*".into(), "feature/**/draft".into()],
        )
        .unwrap();
        assert!(filter.matches("main"));
        assert!(filter.matches("feature/login"));
        assert!(filter.matches("feature/a/b"));
        assert!(!filter.matches("feature/wip-login"));
        assert!(!filter.matches("feature/a/draft"));
        assert!(!filter.matches("develop"));

        let everything_but = BranchFilter::new(vec![], vec!["dependabot/**".into()]).unwrap();
        assert!(everything_but.matches("develop"));
        assert!(!everything_but.matches("dependabot/npm/x"));
        assert!(BranchFilter::default().matches("anything/at/all"));
    }

    #[test]
    fn filter_rejects_bad_patterns() {
        let long = "a".repeat(257);
        for (bad, reason) in [
            ("", "is empty"),
            ("feature x", "whitespace"),
            ("main\n", "whitespace"),
            ("a\u{7}", "control"),
            (long.as_str(), "longer than 256"),
        ] {
            let err = BranchFilter::new(vec!["main".into()], vec![bad.into()]).unwrap_err();
            assert_eq!(err.code(), "invalid_branch_pattern");
            assert!(err.to_string().contains(reason), "{err}");
        }
        assert!(BranchFilter::new(vec!["a".repeat(256)], vec![]).is_ok());
    }

    #[test]
    fn filter_serde_validates() {
        let filter: BranchFilter = serde_json::from_str(r#"{"include":["main"],"exclude":[]}"#).unwrap();
        assert!(filter.matches("main") && !filter.matches("dev"));
        assert_eq!(serde_json::to_string(&filter).unwrap(), r#"{"include":["main"],"exclude":[]}"#);
        let err = serde_json::from_str::<BranchFilter>(r#"{"include":[""]}"#).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        assert!(serde_json::from_str::<BranchFilter>(r#"{"inclde":["main"]}"#).is_err());
    }

    #[test]
    fn skip_markers() {
        for message in
            ["docs: typo [skip ci]", "[CI SKIP] wip", "x [skip-ci]", "[Skip CD]", "[skip-cd]", "chore\n\n[no ci]"]
        {
            assert!(skip_requested(message), "{message}");
        }
        for message in ["skip ci", "[skipci]", "fix: ci skip logic", "[ci]", ""] {
            assert!(!skip_requested(message), "{message}");
        }
    }

    #[test]
    fn preview_branch_name() {
        assert_eq!(preview_branch(42), "pr-42");
    }

    proptest! {
        #[test]
        fn glob_never_panics(pattern in "[a-c*?/\\[]{0,24}", text in "[a-c/é]{0,32}") {
            glob_matches(&pattern, &text);
        }

        #[test]
        fn double_star_matches_everything(text in "\\PC{0,64}") {
            prop_assert!(glob_matches("**", &text));
        }

        #[test]
        fn literal_patterns_match_only_themselves(pattern in "[a-z/._-]{1,16}", text in "[a-z/._-]{0,16}") {
            prop_assert!(glob_matches(&pattern, &pattern));
            prop_assert_eq!(glob_matches(&pattern, &text), pattern == text);
        }

        #[test]
        fn star_never_crosses_slash(prefix in "[a-z]{0,8}", rest in "[a-z]{0,8}") {
            let with_slash = format!("{prefix}/{rest}");
            prop_assert!(!glob_matches("*", &with_slash));
            prop_assert!(glob_matches("*/*", &with_slash));
        }
    }
}

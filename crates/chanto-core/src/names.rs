//! Names users type and hostnames carry: sites, branches and deploy ids.
//!
//! A site name is one DNS label without `--`, because `--` separates the branch
//! or deploy from the site in `<branch>--<site>.<base>`. A branch is any git
//! branch name; its *label* is the DNS-safe form used in hostnames.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ValidationError;
use crate::hash::truncate;

/// Longest site name: leaves room for `<branch>--` in a 63-byte DNS label.
pub const MAX_SITE_NAME: usize = 40;
/// Longest branch label used in hostnames.
pub const MAX_BRANCH_LABEL: usize = 63;

/// A site's name: `[a-z0-9-]`, 1 to 40 bytes, starting and ending with a letter
/// or digit, without `--`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SiteName(String);

impl SiteName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SiteName {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown = truncate(s, 80);
        let rule = format!("a site name is 1-{MAX_SITE_NAME} lowercase letters, digits and single hyphens");
        let err = |why: String| {
            let hint = match suggest_site_name(s) {
                Some(good) => format!("; try \"{good}\" ({rule})"),
                None => format!(" ({rule}, e.g. \"my-site\")"),
            };
            ValidationError::new("name", format!("{why}{hint}"))
        };
        if s.is_empty() {
            return Err(err("a site name cannot be empty".into()));
        }
        let invalid = invalid_characters(s);
        if !invalid.is_empty() {
            return Err(err(format!("{shown:?} is not a valid site name: {invalid} not allowed")));
        }
        if s.len() > MAX_SITE_NAME {
            return Err(err(format!(
                "{shown:?} is too long for a site name ({} characters; at most {MAX_SITE_NAME})",
                s.len()
            )));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(err(format!("{shown:?} is not a valid site name: it cannot start or end with a hyphen")));
        }
        if s.contains("--") {
            return Err(err(format!(
                "{shown:?} is not a valid site name: \"--\" separates branch and site in hostnames"
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

/// What is wrong with `s`'s characters, in words: "uppercase letters, `_`
/// and `!` are" (empty when every character is allowed).
fn invalid_characters(s: &str) -> String {
    let mut kinds: Vec<String> = Vec::new();
    let mut push = |k: String| {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    };
    for c in s.chars() {
        match c {
            'a'..='z' | '0'..='9' | '-' => {}
            'A'..='Z' => push("uppercase letters".into()),
            c if c.is_whitespace() => push("spaces".into()),
            c if c.is_control() => push("control characters".into()),
            c if !c.is_ascii() => push("letters outside a-z".into()),
            c => push(format!("`{c}`")),
        }
    }
    let verb = if kinds.len() == 1 && !kinds[0].ends_with('s') { "is" } else { "are" };
    match kinds.as_slice() {
        [] => String::new(),
        [one] => format!("{one} {verb}"),
        [init @ .., last] => format!("{} and {last} are", init.join(", ")),
    }
}

/// A valid site name close to `s` (lowercased, anything else turned into
/// single hyphens, trimmed to the length limit), if one can be made.
pub fn suggest_site_name(s: &str) -> Option<String> {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_SITE_NAME);
    let out = out.trim_end_matches('-').to_owned();
    (!out.is_empty() && out != s).then_some(out)
}

/// A git branch name, validated by git's own rules for ref names
/// (`git check-ref-format --branch`), bounded to 255 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BranchName(String);

impl BranchName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The DNS-safe label for hostnames: lowercase letters and digits, other
    /// runs of characters become one `-`, at most 63 bytes. `feature/Login_v2`
    /// becomes `feature-login-v2`. Two branches can share a label; the metadata
    /// layer makes stored labels unique per site with [`BranchName::label_with_suffix`].
    pub fn label(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for c in self.0.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.truncate(MAX_BRANCH_LABEL);
        while out.ends_with('-') {
            out.pop();
        }
        if out.is_empty() {
            out = format!("branch-{}", &crate::ContentHash::of(self.0.as_bytes()).to_hex()[..8]);
        }
        out
    }

    /// The label made unique with a suffix derived from the full branch name,
    /// for when another branch of the same site already holds [`BranchName::label`].
    pub fn label_with_suffix(&self) -> String {
        let suffix = &crate::ContentHash::of(self.0.as_bytes()).to_hex()[..8];
        let mut base = self.label();
        base.truncate(MAX_BRANCH_LABEL - 9);
        while base.ends_with('-') {
            base.pop();
        }
        format!("{base}-{suffix}")
    }
}

impl FromStr for BranchName {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| {
            ValidationError::new(
                "branch",
                format!(
                    "branch name {:?} {why}; use a name git accepts, e.g. \"main\" or \"feature/login\"",
                    truncate(s, 80)
                ),
            )
        };
        if s.is_empty() {
            return Err(err("is empty"));
        }
        if s.len() > 255 {
            return Err(err("is longer than 255 bytes"));
        }
        if let Some(c) = s.chars().find(|c| c.is_control() || " ~^:?*[\\".contains(*c)) {
            return Err(err(&format!("contains {c:?}")));
        }
        if s.starts_with('-') || s.starts_with('/') || s.ends_with('/') || s.ends_with('.') {
            return Err(err("starts with '-' or '/', or ends with '/' or '.'"));
        }
        if s.contains("..") || s.contains("//") || s.contains("@{") || s == "@" {
            return Err(err("contains \"..\", \"//\" or \"@{\""));
        }
        if s.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock")) {
            return Err(err("has a component starting with '.' or ending with \".lock\""));
        }
        Ok(Self(s.to_owned()))
    }
}

/// A deploy's id: 16 lowercase hex digits (64 random bits). It names the deploy
/// in the API and in its permalink hostname `<deploy-id>--<site>.<base>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeployId(String);

impl DeployId {
    /// Length of a deploy id in characters.
    pub const LEN: usize = 16;

    /// A deploy id from 8 random bytes (the caller owns the randomness; the
    /// core does no IO).
    pub fn from_random(bytes: [u8; 8]) -> Self {
        Self(hex::encode(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` has the shape of a deploy id (used to tell permalinks from
    /// branch labels in hostnames).
    pub fn looks_like(s: &str) -> bool {
        s.len() == Self::LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl FromStr for DeployId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Self::looks_like(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "deploy",
                format!(
                    "{:?} is not a deploy id: expected {} lowercase hex digits, as `chanto deploys list` shows",
                    truncate(s, 80),
                    Self::LEN
                ),
            ))
        }
    }
}

/// A build's id: 16 lowercase hex digits (64 random bits), as deploy ids.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct BuildId(String);

impl BuildId {
    /// A build id from 8 random bytes.
    pub fn from_random(bytes: [u8; 8]) -> Self {
        Self(hex::encode(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BuildId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if DeployId::looks_like(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "build",
                format!(
                    "{:?} is not a build id: expected {} lowercase hex digits, as `chanto builds list` shows",
                    truncate(s, 80),
                    DeployId::LEN
                ),
            ))
        }
    }
}

macro_rules! text_newtype_impls {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(|e: ValidationError| serde::de::Error::custom(e.message))
            }
        }
        impl utoipa::PartialSchema for $t {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                String::schema()
            }
        }
        impl utoipa::ToSchema for $t {}
    )*};
}
text_newtype_impls!(SiteName, BranchName, DeployId, BuildId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names() {
        for ok in ["a", "my-site", "site1", "0x", &"a".repeat(MAX_SITE_NAME)] {
            assert!(ok.parse::<SiteName>().is_ok(), "{ok:?}");
        }
        for bad in ["", "-a", "a-", "a--b", "My", "a.b", "a_b", "a b", "ä", &"a".repeat(MAX_SITE_NAME + 1)] {
            let e = bad.parse::<SiteName>().unwrap_err();
            assert_eq!(e.field, "name", "{bad:?}");
        }
    }

    #[test]
    fn site_name_errors_say_what_is_wrong_and_suggest_a_name() {
        let msg = |s: &str| s.parse::<SiteName>().unwrap_err().message;
        assert_eq!(
            msg("Bad_Name!"),
            "\"Bad_Name!\" is not a valid site name: uppercase letters, `_` and `!` are not allowed; \
             try \"bad-name\" (a site name is 1-40 lowercase letters, digits and single hyphens)"
        );
        assert_eq!(
            msg("my_site"),
            "\"my_site\" is not a valid site name: `_` is not allowed; try \"my-site\" \
             (a site name is 1-40 lowercase letters, digits and single hyphens)"
        );
        assert!(msg("-docs").contains("cannot start or end with a hyphen; try \"docs\""), "{}", msg("-docs"));
        assert!(msg("a--b").contains("separates branch and site in hostnames; try \"a-b\""), "{}", msg("a--b"));
        assert!(msg("").starts_with("a site name cannot be empty (a site name is 1-40"), "{}", msg(""));
        let long = "a".repeat(45);
        assert!(msg(&long).contains("(45 characters; at most 40); try"), "{}", msg(&long));
        assert!(!msg("My Site").contains("site name \""), "the message does not repeat itself");
        assert_eq!(suggest_site_name("!!!"), None);
        assert_eq!(suggest_site_name("Ünïcode Site"), Some("n-code-site".into()));
        for s in ["Bad_Name!", "-x-", "A  B", &"Ab".repeat(40)] {
            let good = suggest_site_name(s).unwrap();
            assert!(good.parse::<SiteName>().is_ok(), "{s:?} → {good:?}");
        }
    }

    #[test]
    fn branch_names() {
        for ok in ["main", "feature/login", "v1.2", "fix_bug", "Release-2026"] {
            assert!(ok.parse::<BranchName>().is_ok(), "{ok:?}");
        }
        for bad in [
            "", "-x", "/x", "x/", "a..b", "a b", "a:b", "a~1", "x.lock", ".hidden", "a/.b", "a//b", "x.", "a@{1}",
            "a\0b", "a\\b",
        ] {
            assert!(bad.parse::<BranchName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn branch_labels() {
        let cases = [
            ("main", "main"),
            ("feature/Login_v2", "feature-login-v2"),
            ("a--b", "a-b"),
            ("v1.2.3", "v1-2-3"),
            ("日本語-x", "x"),
        ];
        for (branch, label) in cases {
            assert_eq!(branch.parse::<BranchName>().unwrap().label(), label, "{branch}");
        }
        let weird: BranchName = "日本語".parse().unwrap();
        assert!(weird.label().starts_with("branch-"));
        let long: BranchName = "x".repeat(200).parse().unwrap();
        assert_eq!(long.label().len(), MAX_BRANCH_LABEL);
        let suffixed = long.label_with_suffix();
        assert!(suffixed.len() <= MAX_BRANCH_LABEL && !suffixed.contains("--"));
        assert_ne!(suffixed, long.label());
    }

    #[test]
    fn deploy_ids() {
        let id = DeployId::from_random([0xab; 8]);
        assert_eq!(id.as_str(), "abababababababab");
        assert!(id.as_str().parse::<DeployId>().is_ok());
        assert!("ABABABABABABABAB".parse::<DeployId>().is_err());
        assert!("abc".parse::<DeployId>().is_err());
    }
}

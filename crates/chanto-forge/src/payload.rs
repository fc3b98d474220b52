//! Decoding and validation shared by every forge: each value chanto hands out passes through here.

use serde::de::DeserializeOwned;

use crate::{Event, Forge, WebhookError};

/// Longest branch name accepted, in bytes (git itself allows more, but no forge UI does).
pub(crate) const MAX_BRANCH_BYTES: usize = 255;

/// Longest preview of sender-supplied text put into reasons and error messages.
const PREVIEW_CHARS: usize = 80;

/// The forge and event being parsed, so errors can name them.
pub(crate) struct Ctx<'a> {
    pub(crate) forge: Forge,
    pub(crate) event: &'a str,
}

impl Ctx<'_> {
    /// Decodes `body` into `T`, reporting the JSON path of the first offending value.
    pub(crate) fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, WebhookError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            // A syntax error means the body is not JSON at all; the path then says nothing useful.
            let path = (path != "." && !inner.is_syntax() && !inner.is_eof()).then_some(path);
            let mut message = inner.to_string();
            if body.trim_ascii_start().first() != Some(&b'{') {
                message.push_str("; check that the webhook's content type is application/json");
            }
            self.malformed(path, message)
        })?;
        de.end().map_err(|err| self.malformed(None, err.to_string()))?;
        Ok(value)
    }

    fn malformed(&self, path: Option<String>, message: String) -> WebhookError {
        WebhookError::MalformedPayload { forge: self.forge, event: self.event.to_owned(), path, message }
    }

    /// An error for a well-typed field whose value is unusable.
    pub(crate) fn invalid(&self, field: &'static str, problem: String) -> WebhookError {
        WebhookError::InvalidField { forge: self.forge, event: self.event.to_owned(), field, problem }
    }

    /// Checks a branch name is safe to hand out: non-empty, at most [`MAX_BRANCH_BYTES`], no control
    /// characters, and no leading `-` (git would read it as an option).
    pub(crate) fn branch(&self, field: &'static str, name: &str) -> Result<String, WebhookError> {
        let problem = if name.is_empty() {
            "is empty".to_owned()
        } else if name.len() > MAX_BRANCH_BYTES {
            format!("is {} bytes long, over the {MAX_BRANCH_BYTES}-byte limit for branch names", name.len())
        } else if name.chars().any(char::is_control) {
            format!("`{}` contains a control character, which a branch name cannot", preview(name))
        } else if name.starts_with('-') {
            format!("`{}` starts with `-`, which a branch name cannot", preview(name))
        } else {
            return Ok(name.to_owned());
        };
        Err(self.invalid(field, problem))
    }

    /// Checks a commit id is 40 (SHA-1) or 64 (SHA-256) hex digits and returns it in lowercase.
    pub(crate) fn commit(&self, field: &'static str, id: &str) -> Result<String, WebhookError> {
        if (id.len() == 40 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(id.to_ascii_lowercase())
        } else {
            Err(self.invalid(field, format!("`{}` is not a commit id (40 or 64 hex digits)", preview(id))))
        }
    }

    /// Checks a pull/merge request number is positive.
    pub(crate) fn number(&self, field: &'static str, number: u64) -> Result<u64, WebhookError> {
        if number == 0 { Err(self.invalid(field, "is 0; request numbers start at 1".to_owned())) } else { Ok(number) }
    }
}

/// Whether a commit id is the all-zero id forges use for "no commit" (a deleted or new ref).
pub(crate) fn is_zero_commit(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b == b'0')
}

/// A short, escaped rendering of sender-supplied text, safe to put in logs and messages.
pub(crate) fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(PREVIEW_CHARS).flat_map(char::escape_debug).collect();
    if text.chars().nth(PREVIEW_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// `Some` of the trimmed text when it has any.
pub(crate) fn non_empty(text: Option<&str>) -> Option<String> {
    text.map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned)
}

/// An [`Event::Ignored`] with the given reason.
pub(crate) fn ignored(reason: impl Into<String>) -> Event {
    Event::Ignored { reason: reason.into() }
}

/// What a full ref name (`refs/heads/main`) points at.
pub(crate) enum RefKind<'a> {
    /// `refs/heads/<branch>`.
    Branch(&'a str),
    /// `refs/tags/<tag>`.
    Tag(&'a str),
    /// Anything else (`refs/notes/…`, a bare name).
    Other,
}

impl<'a> RefKind<'a> {
    pub(crate) fn of(git_ref: &'a str) -> Self {
        if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
            Self::Branch(branch)
        } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
            Self::Tag(tag)
        } else {
            Self::Other
        }
    }
}

/// Resolves a pushed ref to its branch, or to the [`Event::Ignored`] answering a push chanto does not act on.
pub(crate) fn pushed_branch(ctx: &Ctx<'_>, git_ref: &str) -> Result<Result<String, Event>, WebhookError> {
    Ok(match RefKind::of(git_ref) {
        RefKind::Branch(branch) => Ok(ctx.branch("ref", branch)?),
        RefKind::Tag(tag) => Err(ignored(format!("push of tag `{}`; chanto deploys branches only", preview(tag)))),
        RefKind::Other => Err(ignored(format!(
            "push of ref `{}`, which is not a branch; chanto deploys branches only",
            preview(git_ref)
        ))),
    })
}

/// Clone URLs in order of preference, without empties or duplicates.
pub(crate) fn clone_urls<'a>(urls: impl IntoIterator<Item = Option<&'a str>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in urls.into_iter().flatten().map(str::trim).filter(|u| !u.is_empty()) {
        if !out.iter().any(|known| known == url) {
            out.push(url.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx { forge: Forge::GitHub, event: "push" }
    }

    #[test]
    fn branch_names() {
        let table: &[(&str, bool)] = &[
            ("main", true),
            ("feature/ünïcødé", true),
            ("a b", true),
            ("", false),
            ("-rf", false),
            ("evil\nname", false),
            ("nul\0", false),
            ("del\u{7f}", false),
            ("c1\u{85}", false),
        ];
        for &(name, ok) in table {
            assert_eq!(ctx().branch("ref", name).is_ok(), ok, "{name:?}");
        }
        assert!(ctx().branch("ref", &"a".repeat(255)).is_ok());
        assert!(ctx().branch("ref", &"a".repeat(256)).is_err());
    }

    #[test]
    fn commit_ids() {
        assert_eq!(ctx().commit("after", &"AB".repeat(20)).unwrap(), "ab".repeat(20));
        assert!(ctx().commit("after", &"a".repeat(64)).is_ok());
        for bad in ["", "abc", &"g".repeat(40), &"a".repeat(41), &"a".repeat(63), &format!("{} ", "a".repeat(39))] {
            assert!(ctx().commit("after", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn preview_is_short_and_escaped() {
        assert_eq!(preview("a\nb"), "a\\nb");
        let long = preview(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), PREVIEW_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn decode_reports_path_and_syntax() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Outer {
            inner: Inner,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            sha: String,
        }
        let err = ctx().decode::<Outer>(br#"{"inner":{"sha":null}}"#).unwrap_err();
        assert!(matches!(&err, WebhookError::MalformedPayload { path: Some(p), .. } if p == "inner.sha"), "{err:?}");
        let err = ctx().decode::<Outer>(br#"{"inner":{"sha":"x"}"#).unwrap_err();
        assert!(matches!(&err, WebhookError::MalformedPayload { path: None, .. }), "{err:?}");
        assert!(!err.to_string().contains("application/json"), "{err}");
        let err = ctx().decode::<Outer>(b"payload=%7B%22ref%22").unwrap_err();
        assert!(err.to_string().contains("content type is application/json"), "{err}");
        let err = ctx().decode::<Outer>(br#"{"inner":{"sha":"x"}} trailing"#).unwrap_err();
        assert!(matches!(&err, WebhookError::MalformedPayload { path: None, .. }), "{err:?}");
    }
}

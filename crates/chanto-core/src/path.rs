//! Manifest paths: the names files have inside a deploy. A manifest path is
//! relative, `/`-separated UTF-8 without `.` or `..` segments, so that no entry
//! can ever name something outside its deploy (invariant 7).

use crate::ValidationError;
use crate::hash::truncate;

/// Longest manifest path in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest single path segment in bytes (the common file-system limit).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Validates a path as a client sent it and returns its normal form: `./`
/// segments dropped, everything else kept byte for byte. Absolute paths, `..`,
/// backslashes, NUL and other control characters, empty segments and
/// over-long paths are refused with the path named in the error.
pub fn normalize_manifest_path(raw: &str) -> Result<String, ValidationError> {
    let err = |why: &str| ValidationError::new(format!("files[{:?}]", truncate(raw, 200)), format!("path {why}"));
    if raw.is_empty() {
        return Err(err("is empty"));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(err(&format!("is longer than {MAX_PATH_BYTES} bytes")));
    }
    if raw.starts_with('/') {
        return Err(err("is absolute; paths must be relative to the deployed directory"));
    }
    if raw.contains('\\') {
        return Err(err("contains a backslash; use '/' to separate directories"));
    }
    if raw.chars().any(char::is_control) {
        return Err(err("contains a control character (NUL, newline, ...)"));
    }
    let mut out = String::with_capacity(raw.len());
    for segment in raw.split('/') {
        match segment {
            "." => continue,
            ".." => return Err(err("contains \"..\"; nothing outside the deployed directory can be deployed")),
            "" => return Err(err("contains an empty segment (\"//\" or a trailing '/')")),
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(err(&format!("has a segment longer than {MAX_SEGMENT_BYTES} bytes")));
            }
            s => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(s);
            }
        }
    }
    if out.is_empty() {
        return Err(err("names the deployed directory itself, not a file"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let ok = [
            ("index.html", "index.html"),
            ("a/b/c.css", "a/b/c.css"),
            ("./a/./b.js", "a/b.js"),
            ("日本語/ファイル.html", "日本語/ファイル.html"),
            ("with space.txt", "with space.txt"),
            (".well-known/x", ".well-known/x"),
            ("..foo", "..foo"),
            ("%2e%2e/x", "%2e%2e/x"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_manifest_path(raw).as_deref(), Ok(want), "{raw:?}");
        }
        let bad = [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "a\\b",
            "a\0b",
            "a\nb",
            "a//b",
            "a/",
            ".",
            "./",
            &"a".repeat(MAX_PATH_BYTES + 1),
            &"b".repeat(256),
        ];
        for raw in bad {
            let e = normalize_manifest_path(raw).unwrap_err();
            assert!(e.field.starts_with("files["), "{raw:?}: {e}");
        }
    }

    proptest! {
        #[test]
        fn accepted_paths_are_safe_and_stable(raw in "[a-z./\\\\%\0]{0,24}") {
            if let Ok(p) = normalize_manifest_path(&raw) {
                prop_assert!(!p.starts_with('/'));
                prop_assert!(!p.split('/').any(|s| s.is_empty() || s == "." || s == ".."));
                prop_assert!(!p.contains('\\') && !p.contains('\0'));
                prop_assert_eq!(normalize_manifest_path(&p), Ok(p.clone()));
            }
        }
    }
}

//! Hides secret values in build logs, because build commands print whatever they like.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use aho_corasick::AhoCorasick;

/// What each masked region becomes.
const MASK: &str = "***";

/// Replaces secret values in log lines with `***`.
///
/// Every non-empty secret is masked, however short (a one-character secret masks that character
/// everywhere: better noisy logs than a leak). A secret spanning several lines is also masked line by
/// line, since logs are masked a line at a time. Where occurrences of secrets overlap or touch, the
/// whole region becomes one `***`, so no part of either leaks.
#[derive(Clone)]
pub struct Masker {
    /// `None` when there is nothing to mask.
    secrets: Option<AhoCorasick>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.secrets.as_ref().map_or(0, AhoCorasick::patterns_len);
        f.debug_struct("Masker").field("secrets", &count).finish()
    }
}

impl Masker {
    /// Builds a masker for these secret values; empty values are ignored.
    ///
    /// # Panics
    ///
    /// Only if the secrets exceed aho-corasick's automaton limits (billions of states), which variable
    /// values capped at 64 KiB each (see [`crate::validate_var_value`]) cannot reach in practice.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Masker {
        let mut patterns: Vec<String> = Vec::new();
        for secret in secrets {
            if secret.contains('\n') {
                patterns.extend(secret.lines().map(|line| line.trim_end_matches('\r').to_owned()));
            }
            patterns.push(secret);
        }
        patterns.retain(|p| !p.is_empty());
        patterns.sort_unstable();
        patterns.dedup();
        let secrets = (!patterns.is_empty())
            .then(|| AhoCorasick::new(&patterns).expect("secret values stay within aho-corasick's limits"));
        Masker { secrets }
    }

    /// The byte ranges to mask: every occurrence of every secret, overlapping or touching ones merged.
    fn ranges(&self, haystack: &[u8]) -> Vec<Range<usize>> {
        let Some(secrets) = &self.secrets else { return Vec::new() };
        let mut found: Vec<Range<usize>> = secrets.find_overlapping_iter(haystack).map(|m| m.range()).collect();
        found.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(found.len());
        for range in found {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        merged
    }

    /// Masks a text line. Borrows the input when it holds no secret.
    pub fn mask<'a>(&self, line: &'a str) -> Cow<'a, str> {
        let ranges = self.ranges(line.as_bytes());
        if ranges.is_empty() {
            return Cow::Borrowed(line);
        }
        // Matches of UTF-8 secrets in UTF-8 text start and end on character boundaries, so slicing
        // the str at them is sound.
        let mut out = String::with_capacity(line.len());
        let mut at = 0;
        for range in ranges {
            out.push_str(&line[at..range.start]);
            out.push_str(MASK);
            at = range.end;
        }
        out.push_str(&line[at..]);
        Cow::Owned(out)
    }

    /// Masks raw output bytes (which need not be UTF-8). Borrows the input when it holds no secret.
    pub fn mask_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let ranges = self.ranges(bytes);
        if ranges.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        for range in ranges {
            out.extend_from_slice(&bytes[at..range.start]);
            out.extend_from_slice(MASK.as_bytes());
            at = range.end;
        }
        out.extend_from_slice(&bytes[at..]);
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn masker(secrets: &[&str]) -> Masker {
        Masker::new(secrets.iter().map(|s| s.to_string()))
    }

    #[test]
    fn masks_every_occurrence() {
        let m = masker(&["hunter2", "tok_abc"]);
        assert_eq!(m.mask("pw=hunter2 token=tok_abc again hunter2"), "pw=*** token=*** again ***");
        assert!(matches!(m.mask("nothing secret here"), Cow::Borrowed(_)));
    }

    #[test]
    fn overlapping_secrets_mask_fully() {
        let m = masker(&["abcd", "cdef"]);
        assert_eq!(m.mask("x abcdef y"), "x *** y");
        let nested = masker(&["secret", "cret"]);
        assert_eq!(nested.mask("cret secret"), "*** ***");
        let touching = masker(&["ab", "cd"]);
        assert_eq!(touching.mask("abcd"), "***");
    }

    #[test]
    fn empty_masker_and_empty_secrets() {
        let m = masker(&["", ""]);
        assert_eq!(m.mask("anything"), "anything");
        assert_eq!(format!("{m:?}"), "Masker { secrets: 0 }");
        assert_eq!(format!("{:?}", masker(&["hunter2"])), "Masker { secrets: 1 }");
    }

    #[test]
    fn multi_line_secrets_mask_per_line() {
        let m = masker(&["-----BEGIN KEY-----\r\nMIIBOgIBAAJBAKj34\n-----END KEY-----"]);
        assert_eq!(m.mask("key line: MIIBOgIBAAJBAKj34"), "key line: ***");
    }

    #[test]
    fn masks_unicode_and_bytes() {
        let m = masker(&["pässwörd"]);
        assert_eq!(m.mask("ä pässwörd ö"), "ä *** ö");
        assert_eq!(m.mask_bytes(b"\xff p\xc3\xa4ssw\xc3\xb6rd \xfe").as_ref(), b"\xff *** \xfe");
        assert!(matches!(m.mask_bytes(b"\xff clean"), Cow::Borrowed(_)));
    }

    proptest! {
        #[test]
        fn masked_output_never_contains_a_secret(
            secrets in proptest::collection::vec("[a-c0-9]{1,6}", 1..5),
            parts in proptest::collection::vec("[a-c0-9 ]{0,8}", 0..8),
        ) {
            // Build lines that contain the secrets, glued to noise and to each other.
            let mut line = String::new();
            for (i, part) in parts.iter().enumerate() {
                line.push_str(part);
                line.push_str(&secrets[i % secrets.len()]);
            }
            let m = Masker::new(secrets.clone());
            let masked = m.mask(&line);
            let masked_bytes = m.mask_bytes(line.as_bytes());
            prop_assert_eq!(masked.as_bytes(), masked_bytes.as_ref());
            for secret in &secrets {
                prop_assert!(!masked.contains(secret.as_str()), "{:?} leaked in {:?}", secret, masked);
            }
        }
    }
}

//! Path patterns: `/blog/:year/*`. Static segments, `:name` placeholders
//! (one segment each) and a final `*` splat (any number of segments, also
//! none). A trailing slash is insignificant, as on Netlify.

use serde::{Deserialize, Serialize};

/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 2048;
/// Most segments in a pattern.
pub const MAX_SEGMENTS: usize = 64;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal this text.
    Static(String),
    /// Any one segment, bound to this name.
    Param(String),
    /// The rest of the path (any number of segments), bound to `splat`.
    Splat,
}

/// A parsed path pattern. Stored as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() > MAX_PATTERN_BYTES {
            return Err(format!("the path is {} bytes; the limit is {MAX_PATTERN_BYTES}", s.len()));
        }
        if !s.starts_with('/') {
            return Err(format!("{s:?} does not start with '/'; write paths from the site's root, like /blog/*"));
        }
        if s.chars().any(|c| c.is_control() || c == '\\') {
            return Err(format!("{s:?} holds a control character or backslash"));
        }
        let raw: Vec<&str> = s.split('/').filter(|seg| !seg.is_empty()).collect();
        if raw.len() > MAX_SEGMENTS {
            return Err(format!("the path has {} segments; the limit is {MAX_SEGMENTS}", raw.len()));
        }
        let mut segments = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            if *seg == "*" {
                if i + 1 != raw.len() {
                    return Err(format!("in {s:?}, '*' may only be the last segment"));
                }
                segments.push(Segment::Splat);
            } else if let Some(name) = seg.strip_prefix(':') {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("in {s:?}, placeholder {seg:?} must be ':' and letters, digits or '_'"));
                }
                if name == "splat" {
                    return Err(format!("in {s:?}, ':splat' is the name of '*'; write '*' instead"));
                }
                segments.push(Segment::Param(name.to_owned()));
            } else if seg.contains('*') {
                return Err(format!("in {s:?}, '*' must be a whole segment, as in /blog/*"));
            } else if *seg == "." || *seg == ".." {
                return Err(format!("in {s:?}, '.' and '..' segments are not allowed"));
            } else {
                segments.push(Segment::Static((*seg).to_owned()));
            }
        }
        Ok(Self { segments })
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The bindings (`name` → value, `splat` → rest) when `path` (segments of
    /// a normalised request path) matches.
    pub fn captures(&self, path: &[&str]) -> Option<Vec<(&str, String)>> {
        let mut out = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Splat => {
                    out.push(("splat", path.get(i..).unwrap_or(&[]).join("/")));
                    return Some(out);
                }
                Segment::Static(s) => {
                    if path.get(i) != Some(&s.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => out.push((name.as_str(), (*path.get(i)?).to_owned())),
            }
        }
        (path.len() == self.segments.len()).then_some(out)
    }
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for seg in &self.segments {
            match seg {
                Segment::Static(s) => write!(f, "/{s}")?,
                Segment::Param(n) => write!(f, "/:{n}")?,
                Segment::Splat => f.write_str("/*")?,
            }
        }
        Ok(())
    }
}

impl Serialize for PathPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The segments of a normalised request path (`/a/b/` → `["a", "b"]`).
pub fn split_path(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Replaces `:name` placeholders in `to` with their bindings; unknown ones
/// (like a port, `:8080`) stay as written.
///
/// Bindings are decoded text (segments of a normalised path, query values)
/// and `to` is a URL, so each value goes in percent-encoded: the edge
/// decodes a rewrite target once, and a `%2e%2e` a visitor smuggled in as
/// `%252e%252e` stays the literal text `%2e%2e`, never `..` (it cannot
/// climb out of the rule's target or past a path password). `/` stays as
/// is: a splat spans segments.
pub fn substitute(to: &str, bindings: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(to.len());
    let mut rest = to;
    while let Some(at) = rest.find(':') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        let name = &after[..name_len];
        match bindings.iter().find(|(n, _)| *n == name) {
            Some((_, value)) if !name.is_empty() => encode_into(&mut out, value),
            _ => {
                out.push(':');
                out.push_str(name);
            }
        }
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// Appends `value` percent-encoded: every byte but unreserved characters,
/// `/` and the sub-delimiters that mean nothing in a path or a query value.
fn encode_into(out: &mut String, value: &str) {
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$'()*,;:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (src, shown) in [("/", "/"), ("/a/b/", "/a/b"), ("/blog/:year/*", "/blog/:year/*"), ("//x", "/x")] {
            assert_eq!(PathPattern::parse(src).unwrap().to_string(), shown);
        }
        for bad in ["blog", "/a/*/b", "/a*", "/:", "/:a-b", "/:splat", "/a/../b", "/a\\b", "/a\u{0}"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(PathPattern::parse(&format!("/{}", "a/".repeat(65))).is_err());
    }

    #[test]
    fn captures_placeholders_and_splats() {
        let p = PathPattern::parse("/blog/:year/*").unwrap();
        assert_eq!(
            p.captures(&["blog", "2024", "a", "b"]).unwrap(),
            vec![("year", "2024".to_owned()), ("splat", "a/b".to_owned())]
        );
        assert_eq!(p.captures(&["blog", "2024"]).unwrap()[1], ("splat", String::new()));
        assert!(p.captures(&["blog"]).is_none());
        assert!(p.captures(&["news", "2024"]).is_none());
        let exact = PathPattern::parse("/a/:b").unwrap();
        assert!(exact.captures(&["a", "x", "y"]).is_none());
        assert!(PathPattern::parse("/").unwrap().captures(&[]).is_some());
    }

    #[test]
    fn substitutes_known_names_only() {
        let b = vec![("year", "2024".to_owned()), ("splat", "x/y".to_owned())];
        assert_eq!(substitute("/news/:year/:splat", &b), "/news/2024/x/y");
        assert_eq!(substitute("https://h:8080/:splat?a=:nope", &b), "https://h:8080/x/y?a=:nope");
        assert_eq!(substitute("/a:", &b), "/a:");
    }

    /// A binding is decoded text: it goes into the target encoded, so
    /// decoding the target once gives the binding back, never a `..`.
    #[test]
    fn bindings_are_encoded_once() {
        let b = vec![("splat", "%2e%2e/admin/x y?#\\é".to_owned())];
        assert_eq!(substitute("/posts/:splat", &b), "/posts/%252e%252e/admin/x%20y%3F%23%5C%C3%A9");
    }
}

//! Request paths at the edge: percent-decoded, dot segments resolved, and
//! anything that could reach outside a deploy refused (invariant 7).

/// Longest request path accepted, in bytes (decoded).
pub const MAX_REQUEST_PATH_BYTES: usize = 4096;

/// Why a request path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadPath {
    /// Not valid percent-encoded UTF-8.
    Encoding,
    /// Contains NUL, another control character or a backslash.
    Forbidden,
    /// `..` would climb above the deploy's root.
    Escapes,
    /// Longer than [`MAX_REQUEST_PATH_BYTES`].
    TooLong,
}

/// Decodes and normalises the path of a request URI (without the query).
/// Returns a path starting with `/`, without `.`/`..`/empty segments, that
/// keeps a trailing slash if the request had one.
pub fn normalize_request_path(raw: &str) -> Result<String, BadPath> {
    if raw.len() > MAX_REQUEST_PATH_BYTES * 3 {
        return Err(BadPath::TooLong);
    }
    let decoded = percent_decode(raw.as_bytes()).ok_or(BadPath::Encoding)?;
    let decoded = String::from_utf8(decoded).map_err(|_| BadPath::Encoding)?;
    if decoded.len() > MAX_REQUEST_PATH_BYTES {
        return Err(BadPath::TooLong);
    }
    if decoded.chars().any(|c| c.is_control() || c == '\\') {
        return Err(BadPath::Forbidden);
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(BadPath::Escapes);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(out)
}

/// A normalised path (as [`normalize_request_path`] returns it) written
/// back as a URL path for a `Location` header: percent-encoded (every byte
/// but unreserved characters, sub-delimiters, `:`, `@` and `/`), and never
/// starting with `//` or `/\`, which browsers read as another host. So a
/// redirect chanto writes from a request path stays on the same site.
pub fn location_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    for &b in path.trim_start_matches(['/', '\\']).as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // Empty segments cannot come from a normalised path; collapse them
    // anyway so no caller can make `//` appear at the start.
    while out.starts_with("//") {
        out.remove(0);
    }
    out
}

/// A `Location` value a rule wrote, made safe to send: a site-relative
/// target (`/…`) is never sent as `//host` or `/\host` (scheme-relative,
/// another host); absolute URLs and other forms are left as written.
pub fn safe_location(location: &str) -> String {
    match location.strip_prefix('/') {
        Some(rest) if rest.starts_with(['/', '\\']) => format!("/{}", rest.trim_start_matches(['/', '\\'])),
        _ => location.to_owned(),
    }
}

fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let ok = [
            ("/", "/"),
            ("", "/"),
            ("/a/b.html", "/a/b.html"),
            ("/a/", "/a/"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/caf%C3%A9.html", "/café.html"),
            ("/with%20space", "/with space"),
            ("/a%2Fb", "/a/b"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_request_path(raw).as_deref(), Ok(want), "{raw:?}");
        }
        let bad = [
            ("/../etc/passwd", BadPath::Escapes),
            ("/%2e%2e/x", BadPath::Escapes),
            ("/%2E./x", BadPath::Escapes),
            ("/..%2fx", BadPath::Escapes),
            ("/a/%2e%2e/%2e%2e/x", BadPath::Escapes),
            ("/a%5c..%5cb", BadPath::Forbidden),
            ("/a\\b", BadPath::Forbidden),
            ("/a%00b", BadPath::Forbidden),
            ("/a%0ab", BadPath::Forbidden),
            ("/%zz", BadPath::Encoding),
            ("/%c3", BadPath::Encoding),
            ("/%", BadPath::Encoding),
        ];
        for (raw, want) in bad {
            assert_eq!(normalize_request_path(raw), Err(want), "{raw:?}");
        }
        assert_eq!(normalize_request_path(&"/a".repeat(3000)), Err(BadPath::TooLong));
    }

    #[test]
    fn locations_stay_on_the_site() {
        assert_eq!(location_path("/docs/"), "/docs/");
        assert_eq!(location_path("/café dir/"), "/caf%C3%A9%20dir/");
        assert_eq!(location_path("//evil.com/"), "/evil.com/");
        assert_eq!(location_path("/\\evil.com"), "/evil.com");
        assert_eq!(location_path("/a?b#c%"), "/a%3Fb%23c%25");
        assert_eq!(safe_location("//evil.com/x"), "/evil.com/x");
        assert_eq!(safe_location("/\\evil.com"), "/evil.com");
        assert_eq!(safe_location("/ok"), "/ok");
        assert_eq!(safe_location("https://example.com/"), "https://example.com/");
    }

    proptest! {
        #[test]
        fn locations_never_leave(raw in "[/a.%25250-9cfeEF\\\\]{0,40}") {
            if let Ok(p) = normalize_request_path(&raw) {
                let l = location_path(&p);
                prop_assert!(l.starts_with('/') && !l.starts_with("//") && !l.contains('\\'));
                prop_assert_eq!(normalize_request_path(&l), Ok(p));
            }
        }


        #[test]
        fn output_never_escapes(raw in "[/a.%25250-9cfeEF\\\\]{0,40}") {
            if let Ok(p) = normalize_request_path(&raw) {
                prop_assert!(p.starts_with('/'));
                prop_assert!(!p.split('/').any(|s| s == "." || s == ".."));
                prop_assert!(!p.contains('\\') && !p.contains('\0') && !p.contains("//"));
            }
        }
    }
}

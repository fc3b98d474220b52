//! HTTP semantics of serving a static representation, as pure functions over
//! header values: content negotiation, validators (ETag, Last-Modified),
//! conditional requests in RFC 9110 §13.2.2 order, byte ranges, and default
//! caching. No IO: every rule here is tested with a table.

use std::time::SystemTime;

use chanto_core::{ContentHash, Encoding, ManifestEntry, Variant};

/// The representation chosen for a response: the file itself or one of its
/// precompressed variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Representation {
    /// The blob holding its bytes.
    pub hash: ContentHash,
    /// Its size in bytes.
    pub size: u64,
    /// Its `Content-Encoding`, if compressed.
    pub encoding: Option<Encoding>,
}

/// The strong ETag of a representation: derived from its content hash, so the
/// same bytes have the same ETag in every deploy.
pub fn etag(hash: &ContentHash) -> String {
    let mut buf = [0u8; 34];
    buf[0] = b'"';
    buf[33] = b'"';
    hex::encode_to_slice(&hash.as_bytes()[..16], &mut buf[1..33]).expect("16 bytes fill 32 hex digits");
    String::from_utf8(buf.to_vec()).expect("hex is ASCII")
}

/// Picks the representation for an `Accept-Encoding` value (RFC 9110 §12.5.3):
/// the smallest variant whose coding the client accepts with q > 0, else the
/// identity form. Without the header, identity.
pub fn negotiate(accept_encoding: Option<&str>, entry: &ManifestEntry) -> Representation {
    let identity = Representation { hash: entry.hash, size: entry.size, encoding: None };
    let Some(accept) = accept_encoding else { return identity };
    let mut best: Option<&Variant> = None;
    for v in &entry.variants {
        if coding_q(accept, v.encoding.as_str()) > 0.0 && best.is_none_or(|b| v.size < b.size) {
            best = Some(v);
        }
    }
    match best {
        Some(v) => Representation { hash: v.hash, size: v.size, encoding: Some(v.encoding) },
        None => identity,
    }
}

/// The q-value `accept` gives `coding` (an explicit entry beats `*`).
fn coding_q(accept: &str, coding: &str) -> f32 {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let mut q = 1.0f32;
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
            }
        }
        if name.eq_ignore_ascii_case(coding) || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip")) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0.0)
}

/// What the conditional headers decide (RFC 9110 §13.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve normally (ranges may apply).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// The request's conditional headers, raw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditionals<'a> {
    /// `If-Match`.
    pub if_match: Option<&'a str>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a str>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a str>,
    /// `If-Range`.
    pub if_range: Option<&'a str>,
}

/// Whether an entity-tag list matches `etag`; `weak` compares ignoring `W/`.
fn etag_list_matches(list: &str, etag: &str, weak: bool) -> bool {
    let list = list.trim();
    if list == "*" {
        return true;
    }
    list.split(',').map(str::trim).any(|candidate| {
        let (is_weak, tag) = match candidate.strip_prefix("W/") {
            Some(t) => (true, t),
            None => (false, candidate),
        };
        tag == etag && (weak || !is_weak)
    })
}

/// Whole seconds: HTTP dates have no finer resolution.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn parse_date(s: &str) -> Option<u64> {
    httpdate::parse_http_date(s.trim()).ok().map(secs)
}

/// Evaluates preconditions for a GET or HEAD of a representation with these
/// validators, in the order RFC 9110 §13.2.2 prescribes.
pub fn evaluate(c: &Conditionals<'_>, etag: &str, last_modified: SystemTime) -> Precondition {
    let lm = secs(last_modified);
    if let Some(im) = c.if_match {
        if !etag_list_matches(im, etag, false) {
            return Precondition::Failed;
        }
    } else if let Some(ius) = c.if_unmodified_since.and_then(parse_date)
        && lm > ius
    {
        return Precondition::Failed;
    }
    if let Some(inm) = c.if_none_match {
        if etag_list_matches(inm, etag, true) {
            return Precondition::NotModified;
        }
    } else if let Some(ims) = c.if_modified_since.and_then(parse_date)
        && lm <= ims
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// What to send of a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangePlan {
    /// 200 with the whole body.
    Full,
    /// 206 with bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Decides on a `Range` header (RFC 9110 §14). Only single byte ranges are
/// served as 206; a request for several ranges gets the whole body (200),
/// which the RFC allows and every client handles. An `If-Range` that does not
/// match the current representation, or a malformed `Range`, also gets the
/// whole body.
pub fn plan_range(
    range: Option<&str>,
    if_range: Option<&str>,
    etag: &str,
    last_modified: SystemTime,
    size: u64,
) -> RangePlan {
    let Some(range) = range else { return RangePlan::Full };
    if let Some(ir) = if_range {
        let ir = ir.trim();
        let matches = if ir.starts_with('"') || ir.starts_with("W/") {
            ir == etag
        } else {
            parse_date(ir) == Some(secs(last_modified))
        };
        if !matches {
            return RangePlan::Full;
        }
    }
    let Some(spec) = range.trim().strip_prefix("bytes=") else { return RangePlan::Full };
    if spec.contains(',') {
        return RangePlan::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangePlan::Full };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix: the last N bytes.
        if !digits(last) {
            return RangePlan::Full;
        }
        let n: u64 = last.parse().unwrap_or(0);
        if n == 0 || size == 0 {
            return RangePlan::Unsatisfiable;
        }
        return RangePlan::Partial { start: size.saturating_sub(n), end: size - 1 };
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return RangePlan::Full;
    }
    let start: u64 = first.parse().unwrap_or(u64::MAX);
    let end: u64 = if last.is_empty() { u64::MAX } else { last.parse().unwrap_or(u64::MAX) };
    if end < start {
        return RangePlan::Full;
    }
    if start >= size {
        return RangePlan::Unsatisfiable;
    }
    RangePlan::Partial { start, end: end.min(size - 1) }
}

/// Whether a file name carries a content fingerprint, as bundlers write them:
/// a dot- or dash-separated segment of 8+ hex digits (`app.3f9a1c2b.js`,
/// `chunk-5f2e9a01b3.css`) or of 8 base64url characters with a digit and a
/// letter (`index-BX7d9_aQ.js`, Vite's form).
pub fn is_fingerprinted(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((stem, _ext)) = name.rsplit_once('.') else { return false };
    stem.split(['.', '-']).skip(1).any(|seg| {
        let hex =
            seg.len() >= 8 && seg.bytes().all(|b| b.is_ascii_hexdigit()) && seg.bytes().any(|b| b.is_ascii_digit());
        let b64 = seg.len() == 8
            && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && seg.bytes().any(|b| b.is_ascii_digit())
            && seg.bytes().any(|b| b.is_ascii_uppercase())
            && seg.bytes().any(|b| b.is_ascii_lowercase());
        hex || b64
    })
}

/// The default `Cache-Control` for a path: fingerprinted assets are immutable
/// for a year; everything else is revalidated on every use.
pub fn cache_control(path: &str) -> &'static str {
    if is_fingerprinted(path) { "public, max-age=31536000, immutable" } else { "public, max-age=0, must-revalidate" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry() -> ManifestEntry {
        ManifestEntry {
            hash: ContentHash::of(b"identity"),
            size: 1000,
            content_type: "text/html".into(),
            variants: vec![
                Variant { encoding: Encoding::Br, hash: ContentHash::of(b"br"), size: 200 },
                Variant { encoding: Encoding::Gzip, hash: ContentHash::of(b"gz"), size: 300 },
            ],
        }
    }

    #[test]
    fn negotiation_table() {
        let e = entry();
        let cases: &[(Option<&str>, Option<Encoding>)] = &[
            (None, None),
            (Some(""), None),
            (Some("gzip"), Some(Encoding::Gzip)),
            (Some("gzip, deflate, br"), Some(Encoding::Br)),
            (Some("br;q=0, gzip"), Some(Encoding::Gzip)),
            (Some("BR;Q=0.5"), Some(Encoding::Br)),
            (Some("*"), Some(Encoding::Br)),
            (Some("*;q=0"), None),
            (Some("br;q=0, *"), Some(Encoding::Gzip)),
            (Some("identity"), None),
            (Some("x-gzip"), Some(Encoding::Gzip)),
            (Some("gzip;q=garbage"), None),
            (Some("deflate"), None),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(*accept, &e).encoding, *want, "{accept:?}");
        }
        let plain = ManifestEntry { variants: vec![], ..entry() };
        assert_eq!(negotiate(Some("br, gzip"), &plain).hash, plain.hash);
    }

    #[test]
    fn etags_depend_only_on_bytes() {
        let h = ContentHash::of(b"x");
        assert_eq!(etag(&h), etag(&ContentHash::of(b"x")));
        assert_ne!(etag(&h), etag(&ContentHash::of(b"y")));
        assert!(etag(&h).starts_with('"') && etag(&h).len() == 34);
    }

    #[test]
    fn preconditions_in_rfc_order() {
        let lm = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let lm_s = httpdate::fmt_http_date(lm);
        let before = httpdate::fmt_http_date(lm - Duration::from_secs(10));
        let after = httpdate::fmt_http_date(lm + Duration::from_secs(10));
        let tag = "\"abc\"";
        let c = |f: fn(&mut Conditionals<'static>)| {
            let mut c = Conditionals::default();
            f(&mut c);
            c
        };
        use Precondition::*;
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let (lm_s, before, after) = (leak(lm_s), leak(before), leak(after));
        let table: Vec<(Conditionals<'static>, Precondition)> = vec![
            (Conditionals::default(), Proceed),
            (c(|c| c.if_none_match = Some("\"abc\"")), NotModified),
            (c(|c| c.if_none_match = Some("W/\"abc\"")), NotModified),
            (c(|c| c.if_none_match = Some("\"x\", \"abc\"")), NotModified),
            (c(|c| c.if_none_match = Some("*")), NotModified),
            (c(|c| c.if_none_match = Some("\"other\"")), Proceed),
            (c(|c| c.if_match = Some("\"abc\"")), Proceed),
            (c(|c| c.if_match = Some("W/\"abc\"")), Failed),
            (c(|c| c.if_match = Some("\"nope\"")), Failed),
            (c(|c| c.if_match = Some("*")), Proceed),
        ];
        for (cond, want) in &table {
            assert_eq!(evaluate(cond, tag, lm), *want, "{cond:?}");
        }
        let dated = [
            (Conditionals { if_modified_since: Some(lm_s), ..Default::default() }, NotModified),
            (Conditionals { if_modified_since: Some(after), ..Default::default() }, NotModified),
            (Conditionals { if_modified_since: Some(before), ..Default::default() }, Proceed),
            (Conditionals { if_modified_since: Some("not a date"), ..Default::default() }, Proceed),
            // If-None-Match takes precedence over If-Modified-Since.
            (
                Conditionals { if_none_match: Some("\"other\""), if_modified_since: Some(after), ..Default::default() },
                Proceed,
            ),
            (Conditionals { if_unmodified_since: Some(before), ..Default::default() }, Failed),
            (Conditionals { if_unmodified_since: Some(lm_s), ..Default::default() }, Proceed),
            // If-Match takes precedence over If-Unmodified-Since.
            (
                Conditionals { if_match: Some("\"abc\""), if_unmodified_since: Some(before), ..Default::default() },
                Proceed,
            ),
            // A failed If-Match beats a matching If-None-Match.
            (Conditionals { if_match: Some("\"x\""), if_none_match: Some("\"abc\""), ..Default::default() }, Failed),
        ];
        for (cond, want) in &dated {
            assert_eq!(evaluate(cond, tag, lm), *want, "{cond:?}");
        }
    }

    #[test]
    fn range_table() {
        let lm = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let tag = "\"abc\"";
        use RangePlan::*;
        let cases: &[(Option<&str>, Option<&str>, RangePlan)] = &[
            (None, None, Full),
            (Some("bytes=0-99"), None, Partial { start: 0, end: 99 }),
            (Some("bytes=900-"), None, Partial { start: 900, end: 999 }),
            (Some("bytes=900-5000"), None, Partial { start: 900, end: 999 }),
            (Some("bytes=-100"), None, Partial { start: 900, end: 999 }),
            (Some("bytes=-5000"), None, Partial { start: 0, end: 999 }),
            (Some("bytes=1000-"), None, Unsatisfiable),
            (Some("bytes=-0"), None, Unsatisfiable),
            (Some("bytes=5-1"), None, Full),
            (Some("bytes=0-1,5-6"), None, Full),
            (Some("items=0-1"), None, Full),
            (Some("bytes=a-b"), None, Full),
            (Some("bytes=99999999999999999999-"), None, Full),
            (Some("bytes=0-9"), Some("\"abc\""), Partial { start: 0, end: 9 }),
            (Some("bytes=0-9"), Some("\"old\""), Full),
            (Some("bytes=0-9"), Some("W/\"abc\""), Full),
            (Some("bytes=0-9"), Some("Tue, 14 Nov 2023 22:13:20 GMT"), Partial { start: 0, end: 9 }),
            (Some("bytes=0-9"), Some("Tue, 14 Nov 2023 22:13:21 GMT"), Full),
        ];
        for (range, if_range, want) in cases {
            assert_eq!(plan_range(*range, *if_range, tag, lm, 1000), *want, "{range:?} {if_range:?}");
        }
        assert_eq!(plan_range(Some("bytes=0-"), None, tag, lm, 0), Unsatisfiable);
    }

    #[test]
    fn fingerprints() {
        for yes in ["app.3f9a1c2b.js", "a/b/chunk-5f2e9a01b3.css", "index-BX7d9_aQ.js", "main.0123abcd.min.js"] {
            assert!(is_fingerprinted(yes), "{yes}");
            assert_eq!(cache_control(yes), "public, max-age=31536000, immutable");
        }
        for no in [
            "index.html",
            "app.js",
            "style.min.css",
            "logo-dark.svg",
            "deadbeef.js",
            "v1.2.3.js",
            "my-document.pdf",
            "photo-abcdefgh.jpg",
        ] {
            assert!(!is_fingerprinted(no), "{no}");
            assert_eq!(cache_control(no), "public, max-age=0, must-revalidate");
        }
    }
}

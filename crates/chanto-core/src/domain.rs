//! Custom domain names as users give them (`chanto domains add`, an
//! uploaded certificate's names): checked and normalised once, so the rest
//! of chanto compares plain lowercase ASCII. A name in Unicode is taken in
//! its IDNA (punycode) form, the form DNS, TLS and the `Host` header use.
//! Which names are apexes, and which are public suffixes nobody owns, comes
//! from the Public Suffix List compiled into the `psl` crate.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// Longest domain name, in bytes, without the trailing dot (RFC 1035).
pub const MAX_DOMAIN_BYTES: usize = 253;
/// Longest label, in bytes.
pub const MAX_LABEL_BYTES: usize = 63;

/// A fully qualified domain name of at least two labels, lowercase ASCII
/// letters, digits and hyphens (no label starting or ending with a hyphen),
/// no trailing dot; or, made by [`DomainName::parse_pattern`] only, such a
/// name under a leading `*.` (a wildcard of exactly one label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DomainName(String);

impl DomainName {
    /// A host name: what a domain a site answers on must be.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        if input.trim_start().starts_with("*.") {
            return Err(invalid(
                input,
                "is a wildcard; a site answers on exact names (a wildcard certificate is uploaded with `chanto certs upload`)",
            ));
        }
        Self::parse_pattern(input)
    }

    /// A host name, or a wildcard `*.NAME` (one label), as certificates name them.
    pub fn parse_pattern(input: &str) -> Result<Self, ValidationError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid(input, "is empty; give a name like docs.example.com"));
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            return Err(invalid(input, &format!("has a scheme; give the name alone, without {scheme}://")));
        }
        if trimmed.contains(['/', '?', '#', '@']) {
            return Err(invalid(
                input,
                "is not just a name (no path, query or user); give a name like docs.example.com",
            ));
        }
        let (wildcard, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        if rest.starts_with('[') || rest.parse::<std::net::IpAddr>().is_ok() {
            return Err(invalid(input, "is an IP address; a domain is a name (point its DNS at this installation)"));
        }
        if let Some((_, port)) = rest.rsplit_once(':')
            && port.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid(input, "has a port; give the name alone (chanto answers on its own ports)"));
        }
        let ascii = if rest.is_ascii() {
            rest.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(rest)
                .map_err(|_| invalid(input, "is not a valid internationalised name; give its punycode form (xn--…)"))?
        };
        if ascii.len() > MAX_DOMAIN_BYTES {
            return Err(invalid(
                input,
                &format!("is {} bytes long; a domain has at most {MAX_DOMAIN_BYTES}", ascii.len()),
            ));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid(input, "is a single label; give a full name like docs.example.com"));
        }
        for label in &labels {
            check_label(input, label)?;
        }
        let tld = labels[labels.len() - 1];
        if tld.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(input, "ends in a number; a top-level domain is never all digits"));
        }
        let name = if wildcard { format!("*.{ascii}") } else { ascii };
        if name.len() > MAX_DOMAIN_BYTES {
            return Err(invalid(
                input,
                &format!("is {} bytes long; a domain has at most {MAX_DOMAIN_BYTES}", name.len()),
            ));
        }
        Ok(Self(name))
    }

    /// The name as text (lowercase ASCII, no trailing dot).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is a `*.` pattern.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// Whether it is `parent` or a name under it (`parent` as a plain
    /// lowercase name, e.g. the base domain).
    pub fn is_under(&self, parent: &str) -> bool {
        let parent = parent.trim_end_matches('.').to_ascii_lowercase();
        let own = self.0.trim_start_matches("*.");
        own == parent || own.strip_suffix(parent.as_str()).is_some_and(|head| head.ends_with('.'))
    }

    /// Whether this name, or this pattern, covers `host` (a wildcard covers
    /// exactly one more label, as TLS matches them).
    pub fn covers(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            None => host == self.0,
            Some(parent) => host
                .strip_suffix(parent)
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
        }
    }

    /// The registrable domain it is under, by the Public Suffix List
    /// (`docs.example.co.uk` → `example.co.uk`); `None` for a public suffix
    /// itself (`co.uk`, `github.io`), which nobody can own.
    pub fn registrable(&self) -> Option<&str> {
        let own = self.0.trim_start_matches("*.");
        let d = psl::domain(own.as_bytes())?;
        // psl answers with a slice of the name given: its tail.
        Some(&own[own.len() - d.as_bytes().len()..])
    }

    /// Whether it is a public suffix (`co.uk`, `github.io`, `pages.dev`):
    /// no one's to claim for a site.
    pub fn is_public_suffix(&self) -> bool {
        !self.is_wildcard() && self.registrable().is_none()
    }

    /// Whether it is an apex: a registrable domain itself (`example.com`,
    /// `example.co.uk`), where DNS allows no CNAME.
    pub fn is_apex(&self) -> bool {
        !self.is_wildcard() && self.registrable() == Some(self.as_str())
    }

    /// The `www` twin offered with an apex (`example.com` → `www.example.com`)
    /// and the apex of a `www.` name (`www.example.com` → `example.com`);
    /// other names have none.
    pub fn www_twin(&self) -> Option<DomainName> {
        if self.is_apex() {
            return (self.0.len() + 4 <= MAX_DOMAIN_BYTES).then(|| Self(format!("www.{}", self.0)));
        }
        let rest = self.0.strip_prefix("www.")?;
        let apex = Self(rest.to_owned());
        apex.is_apex().then_some(apex)
    }
}

impl std::fmt::Display for DomainName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DomainName {
    type Err = ValidationError;

    /// [`DomainName::parse_pattern`]: stored names, wildcards included, read back.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_pattern(s)
    }
}

impl<'de> Deserialize<'de> for DomainName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// When a certificate valid from `not_before` to `not_after` (Unix
/// milliseconds) is due for renewal: with one third of its lifetime left
/// (Let's Encrypt's advice when the CA gives no renewal window).
pub fn renewal_due(not_before: i64, not_after: i64) -> i64 {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    not_after - lifetime / 3
}

/// When to renew inside the CA's suggested window `start..=end` (ARI, RFC
/// 9773; Unix milliseconds): a point spread across the window by `seed` (any
/// number fixed per certificate, so every node picks the same point and
/// certificates issued together do not all renew at once). A window that
/// has already ended means at once, whatever the seed.
pub fn ari_renewal_at(start: i64, end: i64, seed: u64, now: i64) -> i64 {
    if end <= now {
        return now;
    }
    let span = end.saturating_sub(start).max(0) as u64;
    let offset = if span == 0 { 0 } else { seed % span };
    start.saturating_add(offset as i64)
}

/// The first pause before retrying a failed certificate order.
pub const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest pause between retries.
pub const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The pause before attempt `failures + 1` after `failures` failed ones:
/// doubling from [`RETRY_FIRST`], capped at [`RETRY_MAX`], then spread by up
/// to a tenth either way with `jitter` (any random `u16` the caller draws),
/// so nodes and names that failed together do not retry together.
pub fn retry_backoff(failures: u32, jitter: u16) -> std::time::Duration {
    let base = RETRY_FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(RETRY_MAX);
    // jitter maps 0..=65535 onto -10 % ..= +10 %.
    let spread = base.as_millis() as i128 * (jitter as i128 - 32768) / (32768 * 10);
    let ms = (base.as_millis() as i128 + spread).clamp(0, RETRY_MAX.as_millis() as i128);
    std::time::Duration::from_millis(ms as u64)
}

fn check_label(input: &str, label: &str) -> Result<(), ValidationError> {
    if label.is_empty() {
        return Err(invalid(input, "has an empty label (two dots in a row, or a leading dot)"));
    }
    if label.len() > MAX_LABEL_BYTES {
        return Err(invalid(
            input,
            &format!("has a label of {} bytes; a label has at most {MAX_LABEL_BYTES}", label.len()),
        ));
    }
    if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
        let shown = if c.is_control() || c.is_whitespace() { format!("{:?}", c) } else { format!("'{c}'") };
        return Err(invalid(input, &format!("has {shown}; a domain has only letters, digits, '-' and '.'")));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(invalid(input, &format!("has the label {label:?}, which starts or ends with '-'")));
    }
    Ok(())
}

fn invalid(input: &str, why: &str) -> ValidationError {
    let shown: String = input.chars().take(80).collect();
    let more = if input.chars().count() > 80 { "…" } else { "" };
    ValidationError::new("domain", format!("{shown:?}{more} {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_are_normalised_once() {
        for (input, want) in [
            ("docs.example.com", "docs.example.com"),
            ("Docs.Example.COM.", "docs.example.com"),
            ("  example.org ", "example.org"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("a-b.c0.io", "a-b.c0.io"),
        ] {
            assert_eq!(DomainName::parse(input).unwrap().as_str(), want, "{input}");
        }
        assert_eq!(DomainName::parse_pattern("*.Example.com").unwrap().as_str(), "*.example.com");
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        for (input, says) in [
            ("", "is empty"),
            ("localhost", "single label"),
            ("https://example.com", "without https://"),
            ("example.com/path", "not just a name"),
            ("user@example.com", "not just a name"),
            ("example.com:8080", "has a port"),
            ("192.0.2.1", "IP address"),
            ("[2001:db8::1]", "IP address"),
            ("a..b.com", "empty label"),
            (".example.com", "empty label"),
            (&long_label, "at most 63"),
            (&long_name, "at most 253"),
            ("-a.example.com", "starts or ends with '-'"),
            ("a-.example.com", "starts or ends with '-'"),
            ("under_score.example.com", "'_'"),
            ("nul\0.example.com", "'\\0'"),
            ("tab\t.example.com", "'\\t'"),
            ("example.123", "all digits"),
            ("*.example.com", "wildcard"),
            ("a.*.example.com", "'*'"),
        ] {
            let e = DomainName::parse(input).expect_err(input);
            assert_eq!(e.field, "domain");
            assert!(e.message.contains(says), "{input:?}: {}", e.message);
        }
        // Very long input is cut in the message.
        let e = DomainName::parse(&"x".repeat(10_000)).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message);
        assert!(DomainName::parse_pattern("*.*.example.com").is_err());
        assert!(DomainName::parse_pattern("*.com.").is_err(), "a wildcard over a single label");
    }

    #[test]
    fn wildcards_cover_one_label_and_twins_pair_www() {
        let w = DomainName::parse_pattern("*.example.com").unwrap();
        assert!(w.is_wildcard());
        assert!(w.covers("docs.example.com") && w.covers("DOCS.example.com."));
        assert!(!w.covers("example.com") && !w.covers("a.b.example.com") && !w.covers("xexample.com"));
        let exact = DomainName::parse("docs.example.com").unwrap();
        assert!(exact.covers("docs.example.com") && !exact.covers("a.docs.example.com"));
        assert!(exact.is_under("example.com") && exact.is_under("docs.example.com") && !exact.is_under("ample.com"));
        assert!(w.is_under("example.com"));
        let apex = DomainName::parse("example.com").unwrap();
        assert_eq!(apex.www_twin().unwrap().as_str(), "www.example.com");
        assert_eq!(apex.www_twin().unwrap().www_twin().unwrap(), apex);
        // www.com is an apex of its own (com is the public suffix).
        assert_eq!(DomainName::parse("www.com").unwrap().www_twin().unwrap().as_str(), "www.www.com");
        assert_eq!(DomainName::parse("docs.example.com").unwrap().www_twin(), None, "not an apex");
        assert_eq!(DomainName::parse("www.docs.example.com").unwrap().www_twin(), None);
        assert_eq!(w.www_twin(), None);
    }

    #[test]
    fn the_public_suffix_list_says_what_is_an_apex() {
        for (name, registrable, apex) in [
            ("example.com", Some("example.com"), true),
            ("docs.example.com", Some("example.com"), false),
            ("example.co.uk", Some("example.co.uk"), true),
            ("www.example.co.uk", Some("example.co.uk"), false),
            ("co.uk", None, false),
            ("github.io", None, false),
            ("me.github.io", Some("me.github.io"), true),
            ("docs.me.github.io", Some("me.github.io"), false),
            ("xn--bcher-kva.example", Some("xn--bcher-kva.example"), true),
        ] {
            let d = DomainName::parse(name).unwrap();
            assert_eq!((d.registrable(), d.is_apex()), (registrable, apex), "{name}");
            assert_eq!(d.is_public_suffix(), registrable.is_none(), "{name}");
        }
        let w = DomainName::parse_pattern("*.example.co.uk").unwrap();
        assert_eq!(w.registrable(), Some("example.co.uk"));
        assert!(!w.is_apex() && !w.is_public_suffix());
    }

    #[test]
    fn ari_renewal_falls_inside_the_window_or_now_when_it_has_passed() {
        let (start, end, now) = (10_000, 20_000, 5_000);
        for seed in [0, 1, 9_999, 10_000, 123_456_789, u64::MAX] {
            let at = ari_renewal_at(start, end, seed, now);
            assert!((start..end).contains(&at), "seed {seed}: {at}");
        }
        // Spread: different seeds land on different points.
        assert_ne!(ari_renewal_at(start, end, 1, now), ari_renewal_at(start, end, 7_777, now));
        // A window in the past: now (the CA wants it renewed, e.g. revoked).
        assert_eq!(ari_renewal_at(start, end, 42, 25_000), 25_000);
        // An empty or inverted window: its start.
        assert_eq!(ari_renewal_at(start, start, 42, now), start);
        assert_eq!(ari_renewal_at(start, start - 1, 42, now), start);
        // Inside the window already: a point in it (possibly before now: due).
        assert!((start..end).contains(&ari_renewal_at(start, end, 3, 15_000)));
    }

    #[test]
    fn renewal_starts_with_a_third_of_the_lifetime_left_and_retries_back_off() {
        let day = 86_400_000i64;
        assert_eq!(renewal_due(0, 90 * day), 60 * day);
        assert_eq!(renewal_due(10, 10), 10, "no lifetime: due at once");
        assert_eq!(renewal_due(20, 10), 10, "a backwards validity: due at once");
        let mid = 32768;
        assert_eq!(retry_backoff(1, mid), RETRY_FIRST);
        assert_eq!(retry_backoff(2, mid), RETRY_FIRST * 2);
        assert_eq!(retry_backoff(0, mid), RETRY_FIRST);
        assert_eq!(retry_backoff(11, mid), RETRY_FIRST * 1024);
        assert_eq!(retry_backoff(12, mid), RETRY_MAX, "capped at a day");
        assert_eq!(retry_backoff(u32::MAX, u16::MAX), RETRY_MAX, "never past the cap");
        let (low, high) = (retry_backoff(3, 0), retry_backoff(3, u16::MAX));
        assert!(low >= RETRY_FIRST * 4 * 9 / 10 && low < RETRY_FIRST * 4, "{low:?}");
        assert!(high > RETRY_FIRST * 4 && high <= RETRY_FIRST * 4 * 11 / 10, "{high:?}");
    }

    #[test]
    fn serde_checks_what_it_reads() {
        let d: DomainName = serde_json::from_str("\"Example.com\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"example.com\"");
        assert!(serde_json::from_str::<DomainName>("\"../etc\"").is_err());
    }

    proptest! {
        #[test]
        fn a_parsed_name_parses_to_itself(labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..5), tld in "[a-z]{2,6}") {
            let input = format!("{}.{tld}", labels.join("."));
            let d = DomainName::parse(&input).unwrap();
            prop_assert_eq!(d.as_str(), input.as_str());
            prop_assert_eq!(DomainName::parse(d.as_str()).unwrap(), d.clone());
            prop_assert!(d.covers(&input.to_uppercase()));
        }

        #[test]
        fn any_input_gives_a_name_or_an_error(s in "\\PC{0,300}") {
            if let Ok(d) = DomainName::parse_pattern(&s) {
                prop_assert!(d.as_str().len() <= MAX_DOMAIN_BYTES);
                prop_assert!(d.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*".contains(&b)));
                prop_assert_eq!(DomainName::parse_pattern(d.as_str()).unwrap(), d);
            }
        }
    }
}

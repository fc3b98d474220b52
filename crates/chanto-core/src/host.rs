//! Hostnames to sites: `<site>.<base>` is production, `<prefix>--<site>.<base>`
//! is a branch label or a deploy id. Matching is case-insensitive and ignores
//! the port and a trailing dot.

/// What a `Host` header names under the base domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRoute {
    /// `<site>.<base>`: the site's production branch.
    Production {
        /// Site name.
        site: String,
    },
    /// `<prefix>--<site>.<base>`: a branch label or a deploy id.
    Prefixed {
        /// Branch label or deploy id.
        prefix: String,
        /// Site name.
        site: String,
    },
}

/// Lowercases `host`, strips the port and a trailing dot.
pub fn canonical_host(host: &str) -> String {
    let without_port = if host.starts_with('[') {
        // An IPv6 literal: keep up to the closing bracket.
        host.split_once(']').map(|(h, _)| &host[..=h.len()]).unwrap_or(host)
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Parses a `Host` header against the base domain (e.g. `localhost`). Returns
/// `None` for hosts outside the base domain or with more than one label in
/// front of it.
pub fn parse_host(host: &str, base_domain: &str) -> Option<HostRoute> {
    let host = canonical_host(host);
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    let label = host.strip_suffix(&base)?.strip_suffix('.')?;
    if label.is_empty() || label.contains('.') {
        return None;
    }
    match label.rsplit_once("--") {
        Some((prefix, site)) if !prefix.is_empty() && !site.is_empty() => {
            Some(HostRoute::Prefixed { prefix: prefix.to_owned(), site: site.to_owned() })
        }
        Some(_) => None,
        None => Some(HostRoute::Production { site: label.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prod(s: &str) -> Option<HostRoute> {
        Some(HostRoute::Production { site: s.into() })
    }
    fn pre(p: &str, s: &str) -> Option<HostRoute> {
        Some(HostRoute::Prefixed { prefix: p.into(), site: s.into() })
    }

    #[test]
    fn table() {
        let cases = [
            ("example.localhost", prod("example")),
            ("Example.LOCALHOST:8080", prod("example")),
            ("example.localhost.", prod("example")),
            ("dev--example.localhost", pre("dev", "example")),
            ("0123456789abcdef--example.localhost:1", pre("0123456789abcdef", "example")),
            ("localhost", None),
            ("a.b.localhost", None),
            ("--example.localhost", None),
            ("dev--.localhost", None),
            ("example.other", None),
            ("examplelocalhost", None),
            ("[::1]:8080", None),
            ("", None),
        ];
        for (host, want) in cases {
            assert_eq!(parse_host(host, "localhost"), want, "{host:?}");
        }
        assert_eq!(parse_host("site.chanto.example.com", "chanto.example.com."), prod("site"));
    }

    #[test]
    fn canonical() {
        assert_eq!(canonical_host("[::1]:80"), "[::1]");
        assert_eq!(canonical_host("A.B.:1"), "a.b");
    }
}

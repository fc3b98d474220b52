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

/// Routes a `Host` when previews may live under their own domain
/// (`chanto serve --preview-domain`). Without one, [`parse_host`] on the
/// base domain. With one, the base domain serves production only
/// (`<site>.<base>`) and the preview domain serves only branches, pull
/// requests and permalinks (`<prefix>--<site>.<preview>`): a preview's
/// pages never share a registrable domain, and so cookies and "same-site",
/// with production.
pub fn route_host(host: &str, base_domain: &str, preview_domain: Option<&str>) -> Option<HostRoute> {
    let Some(preview) = preview_domain else { return parse_host(host, base_domain) };
    match parse_host(host, base_domain) {
        Some(route @ HostRoute::Production { .. }) => Some(route),
        Some(HostRoute::Prefixed { .. }) => None,
        None => parse_host(host, preview).filter(|r| matches!(r, HostRoute::Prefixed { .. })),
    }
}

/// Domains chanto knows to be on the Public Suffix List without looking
/// it up: `localhost` (browsers treat every `*.localhost` as its own site
/// for cookies) and a few hosting suffixes listed in the PSL's private
/// section. Not the whole list: a domain missing here may still be on it
/// (the operator says so with `chanto serve --public-suffix-listed`).
pub const KNOWN_PUBLIC_SUFFIXES: &[&str] = &[
    "localhost",
    "github.io",
    "gitlab.io",
    "netlify.app",
    "pages.dev",
    "vercel.app",
    "web.app",
    "firebaseapp.com",
    "amplifyapp.com",
    "herokuapp.com",
    "onrender.com",
    "fly.dev",
];

/// Whether `domain` is known (see [`KNOWN_PUBLIC_SUFFIXES`]) to be a public
/// suffix, so browsers keep the cookies of its subdomains apart.
pub fn is_known_public_suffix(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    KNOWN_PUBLIC_SUFFIXES.contains(&d.as_str())
}

/// Normalises an origin a site or the operator allows proxy rules to reach:
/// `https://API.example.com` → `https://api.example.com:443`, the form the
/// edge compares request URLs in. The error says what form is expected.
pub fn normalize_origin(origin: &str) -> Result<String, crate::ValidationError> {
    let bad = |why: &str| {
        crate::ValidationError::new(
            "origin",
            format!("{origin:?} {why}; give scheme://host[:port], like https://api.example.com"),
        )
    };
    let (scheme, rest) = origin.split_once("://").ok_or_else(|| bad("has no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad("is not http:// or https://")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', '\\']) || authority.contains(char::is_whitespace)
    {
        return Err(bad("is not just an origin (no path, query or user)"));
    }
    let (host, port) = if authority.starts_with('[') {
        let (h, after) = authority.split_once(']').ok_or_else(|| bad("has an unclosed '['"))?;
        (format!("{h}]"), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad("has a bad port"))?,
        None => default_port,
    };
    let host = host.to_ascii_lowercase();
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b))
        && (host.starts_with('[') || !host.contains(':'));
    if !host_ok {
        return Err(bad("has a bad host"));
    }
    Ok(format!("{scheme}://{host}:{port}"))
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
    fn previews_on_their_own_domain() {
        let r = |h: &str| route_host(h, "sites.example.com", Some("previews.example.net"));
        assert_eq!(r("shop.sites.example.com"), prod("shop"));
        assert_eq!(r("pr-7--shop.sites.example.com"), None, "no preview under the production domain");
        assert_eq!(r("pr-7--shop.previews.example.net"), pre("pr-7", "shop"));
        assert_eq!(r("shop.previews.example.net"), None, "no production under the preview domain");
        assert_eq!(route_host("dev--shop.localhost", "localhost", None), pre("dev", "shop"));
    }

    #[test]
    fn known_public_suffixes() {
        assert!(is_known_public_suffix("localhost") && is_known_public_suffix("GitHub.io."));
        assert!(!is_known_public_suffix("sites.example.com") && !is_known_public_suffix("example.github.io"));
    }

    #[test]
    fn origins() {
        let n = |s: &str| normalize_origin(s).ok();
        assert_eq!(n("https://API.example.com").as_deref(), Some("https://api.example.com:443"));
        assert_eq!(n("http://10.0.0.5:8080/").as_deref(), Some("http://10.0.0.5:8080"));
        assert_eq!(n("http://[::1]:9").as_deref(), Some("http://[::1]:9"));
        for bad in ["api.example.com", "ftp://x", "https://x/path", "https://u@x", "https://x:99999", "https://"] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical() {
        assert_eq!(canonical_host("[::1]:80"), "[::1]");
        assert_eq!(canonical_host("A.B.:1"), "a.b");
    }
}

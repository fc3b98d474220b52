//! A deploy's manifest: every path it serves and the blob behind it. Immutable
//! once written, stored as a blob itself, and the only thing the edge needs to
//! answer a request for a deploy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ContentHash;

/// A precompressed encoding of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Brotli (`Content-Encoding: br`).
    Br,
    /// gzip (`Content-Encoding: gzip`).
    Gzip,
}

impl Encoding {
    /// Every encoding chanto precompresses, in order of preference.
    pub const ALL: [Encoding; 2] = [Encoding::Br, Encoding::Gzip];

    /// The `Content-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Br => "br",
            Self::Gzip => "gzip",
        }
    }
}

/// A precompressed form of a file, itself a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// How the variant is encoded.
    pub encoding: Encoding,
    /// The variant blob's hash.
    pub hash: ContentHash,
    /// The variant's size in bytes.
    pub size: u64,
}

/// One file of a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The blob holding the file's bytes.
    pub hash: ContentHash,
    /// Size in bytes.
    pub size: u64,
    /// The `Content-Type` to serve it with.
    pub content_type: String,
    /// Precompressed variants smaller than the file, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
}

/// A deploy's files, by manifest path (see [`crate::normalize_manifest_path`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version, for readers of stored manifests.
    pub version: u32,
    /// path → entry, sorted.
    pub files: BTreeMap<String, ManifestEntry>,
    /// Redirects, rewrites and headers from the deploy's rule files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<chanto_rules::RuleSet>,
}

/// What a request path resolves to in a manifest.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Serve this file.
    File(&'a str, &'a ManifestEntry),
    /// The path names a directory with an `index.html`: redirect to the path
    /// with a trailing slash, so relative links resolve.
    AddSlash,
    /// Nothing here.
    NotFound,
    /// Redirect (301) to this path: a clean or slash-less URL of the file.
    RedirectTo(String),
}

/// How a site spells its URLs (from `clean_urls` / `trailing_slash` rules).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlStyle {
    /// `/about` serves `about.html`, and `/about.html` redirects to `/about`.
    pub clean_urls: bool,
    /// `Some(false)`: `/dir/` redirects to `/dir`, which serves
    /// `dir/index.html`. `Some(true)` and `None`: `/dir` redirects to `/dir/`.
    pub trailing_slash: Option<bool>,
    /// Pretty URLs: `/about` serves `about.html` when nothing else answers
    /// it, and `/about.html` is served as it is (Netlify's and chanto's
    /// default; `clean_urls` also redirects `/about.html`).
    pub pretty_urls: bool,
}

impl Manifest {
    /// The current manifest format version.
    pub const VERSION: u32 = 1;

    /// Resolves an already decoded and normalised request path (starting with
    /// `/`): exact file, then `index.html` for directories.
    pub fn lookup<'a>(&'a self, request_path: &str) -> Lookup<'a> {
        let rel = request_path.trim_start_matches('/');
        let found = |key: &str| self.files.get_key_value(key).map(|(k, e)| Lookup::File(k.as_str(), e));
        if rel.is_empty() {
            return found("index.html").unwrap_or(Lookup::NotFound);
        }
        if let Some(dir) = rel.strip_suffix('/') {
            return found(&format!("{dir}/index.html")).unwrap_or(Lookup::NotFound);
        }
        if let Some(file) = found(rel) {
            return file;
        }
        if self.files.contains_key(&format!("{rel}/index.html")) {
            return Lookup::AddSlash;
        }
        Lookup::NotFound
    }

    /// [`Manifest::lookup`], with the site's URL style applied.
    pub fn resolve<'a>(&'a self, request_path: &str, style: UrlStyle) -> Lookup<'a> {
        if style == UrlStyle::default() {
            return self.lookup(request_path);
        }
        let rel = request_path.trim_start_matches('/');
        let found = |key: &str| self.files.get_key_value(key).map(|(k, e)| Lookup::File(k.as_str(), e));
        let no_slash = style.trailing_slash == Some(false);
        if no_slash && let Some(bare) = rel.strip_suffix('/') {
            let there = self.lookup(request_path) != Lookup::NotFound
                || (style.clean_urls && self.files.contains_key(&format!("{bare}.html")));
            return if there { Lookup::RedirectTo(format!("/{bare}")) } else { Lookup::NotFound };
        }
        if style.clean_urls
            && let Some(stem) = rel.strip_suffix(".html")
            && self.files.contains_key(rel)
        {
            let target = match stem.strip_suffix("index") {
                Some("") => "/".to_owned(),
                Some(dir) if dir.ends_with('/') => {
                    if no_slash {
                        format!("/{}", &dir[..dir.len() - 1])
                    } else {
                        format!("/{dir}")
                    }
                }
                _ => format!("/{stem}"),
            };
            return Lookup::RedirectTo(target);
        }
        match self.lookup(request_path) {
            Lookup::AddSlash if no_slash => found(&format!("{rel}/index.html")).unwrap_or(Lookup::NotFound),
            Lookup::NotFound if (style.clean_urls || style.pretty_urls) && !rel.is_empty() && !rel.ends_with('/') => {
                found(&format!("{rel}.html")).unwrap_or(Lookup::NotFound)
            }
            other => other,
        }
    }

    /// Total size of the files in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(b: &[u8]) -> ManifestEntry {
        ManifestEntry {
            hash: ContentHash::of(b),
            size: b.len() as u64,
            content_type: "text/html".into(),
            variants: vec![],
        }
    }

    #[test]
    fn lookup_table() {
        let mut m = Manifest::default();
        for p in ["index.html", "docs/index.html", "a.css", "docs/page.html"] {
            m.files.insert(p.into(), entry(p.as_bytes()));
        }
        let file = |p: &str| match m.lookup(p) {
            Lookup::File(k, _) => Some(k.to_owned()),
            _ => None,
        };
        assert_eq!(file("/").as_deref(), Some("index.html"));
        assert_eq!(file("/docs/").as_deref(), Some("docs/index.html"));
        assert_eq!(file("/a.css").as_deref(), Some("a.css"));
        assert_eq!(m.lookup("/docs"), Lookup::AddSlash);
        assert_eq!(m.lookup("/missing"), Lookup::NotFound);
        assert_eq!(m.lookup("/a.css/"), Lookup::NotFound);
        assert_eq!(m.total_size(), 10 + 15 + 5 + 14);
    }

    #[test]
    fn url_styles() {
        let mut m = Manifest::default();
        for p in ["index.html", "docs/index.html", "about.html", "docs/page.html"] {
            m.files.insert(p.into(), entry(p.as_bytes()));
        }
        let go = |p: &str| Lookup::RedirectTo(p.to_owned());
        let file = |style, p: &str| match m.resolve(p, style) {
            Lookup::File(k, _) => k.to_owned(),
            other => format!("{other:?}"),
        };
        let clean = UrlStyle { clean_urls: true, ..UrlStyle::default() };
        assert_eq!(file(clean, "/about"), "about.html");
        assert_eq!(file(clean, "/docs/page"), "docs/page.html");
        assert_eq!(m.resolve("/about.html", clean), go("/about"));
        assert_eq!(m.resolve("/index.html", clean), go("/"));
        assert_eq!(m.resolve("/docs/index.html", clean), go("/docs/"));
        assert_eq!(m.resolve("/docs", clean), Lookup::AddSlash);
        assert_eq!(m.resolve("/missing.html", clean), Lookup::NotFound);

        let bare = UrlStyle { clean_urls: true, trailing_slash: Some(false), pretty_urls: false };
        assert_eq!(m.resolve("/docs/", bare), go("/docs"));
        assert_eq!(file(bare, "/docs"), "docs/index.html");
        assert_eq!(m.resolve("/docs/index.html", bare), go("/docs"));
        assert_eq!(m.resolve("/about/", bare), go("/about"));
        assert_eq!(m.resolve("/nope/", bare), Lookup::NotFound);
        assert_eq!(file(bare, "/"), "index.html");

        // No style: exactly `lookup`.
        assert_eq!(m.resolve("/docs", UrlStyle::default()), Lookup::AddSlash);
        assert_eq!(m.resolve("/about", UrlStyle::default()), Lookup::NotFound);

        // Pretty URLs: `/about` serves about.html; nothing is redirected.
        let pretty = UrlStyle { pretty_urls: true, ..UrlStyle::default() };
        assert_eq!(file(pretty, "/about"), "about.html");
        assert_eq!(file(pretty, "/about.html"), "about.html");
        assert_eq!(file(pretty, "/docs/page"), "docs/page.html");
        assert_eq!(m.resolve("/docs", pretty), Lookup::AddSlash, "a directory still gets its slash");
        assert_eq!(m.resolve("/about/", pretty), Lookup::NotFound);
        assert_eq!(m.resolve("/missing", pretty), Lookup::NotFound);
    }
}

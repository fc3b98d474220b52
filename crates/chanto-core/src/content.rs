//! Content types and which of them are worth precompressing.

/// Files smaller than this are not precompressed: the saving is a packet at most.
pub const COMPRESS_MIN_BYTES: u64 = 1024;

/// The `Content-Type` for a manifest path, from its extension; text types carry
/// `charset=utf-8`. Unknown extensions are `application/octet-stream`.
pub fn content_type_for(path: &str) -> String {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    // A few types mime_guess gets wrong or leaves out for the web.
    let mime = match ext.as_str() {
        "js" | "mjs" | "cjs" => "text/javascript".to_owned(),
        "wasm" => "application/wasm".to_owned(),
        "webmanifest" => "application/manifest+json".to_owned(),
        "map" => "application/json".to_owned(),
        "avif" => "image/avif".to_owned(),
        "md" => "text/markdown".to_owned(),
        "" => "application/octet-stream".to_owned(),
        _ => mime_guess::from_ext(&ext).first_raw().unwrap_or("application/octet-stream").to_owned(),
    };
    if is_textual(&mime) { format!("{mime}; charset=utf-8") } else { mime }
}

fn is_textual(mime: &str) -> bool {
    mime.starts_with("text/")
        || matches!(
            mime,
            "application/json"
                | "application/manifest+json"
                | "application/xml"
                | "image/svg+xml"
                | "application/ld+json"
                | "application/rss+xml"
                | "application/atom+xml"
        )
}

/// Whether a file of this content type shrinks under brotli or gzip. Already
/// compressed formats (images other than SVG, fonts in WOFF, archives, media)
/// do not.
pub fn is_compressible(content_type: &str) -> bool {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    is_textual(mime)
        || matches!(
            mime,
            "application/wasm"
                | "font/ttf"
                | "font/otf"
                | "application/vnd.ms-fontobject"
                | "image/x-icon"
                | "image/vnd.microsoft.icon"
                | "image/bmp"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        let cases = [
            ("index.html", "text/html; charset=utf-8"),
            ("a/app.JS", "text/javascript; charset=utf-8"),
            ("s.css", "text/css; charset=utf-8"),
            ("d.json", "application/json; charset=utf-8"),
            ("i.svg", "image/svg+xml; charset=utf-8"),
            ("p.png", "image/png"),
            ("f.woff2", "font/woff2"),
            ("m.wasm", "application/wasm"),
            ("README", "application/octet-stream"),
            ("x.unknownext", "application/octet-stream"),
        ];
        for (path, want) in cases {
            assert_eq!(content_type_for(path), want, "{path}");
        }
    }

    #[test]
    fn compressible() {
        assert!(is_compressible("text/html; charset=utf-8"));
        assert!(is_compressible("application/wasm"));
        assert!(is_compressible("image/svg+xml; charset=utf-8"));
        assert!(!is_compressible("image/png"));
        assert!(!is_compressible("font/woff2"));
        assert!(!is_compressible("application/octet-stream"));
    }
}

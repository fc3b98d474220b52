//! Fuzzes the edge's request-path normaliser: whatever it accepts must stay
//! inside the deploy and be stable under a second pass, and a `Location`
//! built from it must stay on the site.
#![no_main]

use chanto_core::request_path::{location_path, normalize_request_path};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(p) = normalize_request_path(raw) {
        assert!(p.starts_with('/'));
        assert!(!p.split('/').any(|s| s == "." || s == ".."));
        assert!(!p.contains('\\') && !p.contains('\0') && !p.contains("//"));
        // Re-encoding '%' keeps a second pass from decoding twice.
        let again = normalize_request_path(&p.replace('%', "%25")).expect("normal paths stay valid");
        assert_eq!(again, p);
        // A redirect built from it stays on the site and names the same path.
        let location = location_path(&p);
        assert!(location.starts_with('/') && !location.starts_with("//") && !location.contains('\\'));
        assert_eq!(normalize_request_path(&location).as_deref(), Ok(p.as_str()));
    }
});

//! Fuzzes the edge's request-path normaliser: whatever it accepts must stay
//! inside the deploy and be stable under a second pass.
#![no_main]

use chanto_core::request_path::normalize_request_path;
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
    }
});

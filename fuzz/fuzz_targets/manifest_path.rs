//! Fuzzes manifest-path validation: accepted paths are relative, have no dot
//! segments, and are fixed points.
#![no_main]

use chanto_core::normalize_manifest_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(p) = normalize_manifest_path(raw) {
        assert!(!p.starts_with('/') && !p.contains('\\') && !p.contains('\0'));
        assert!(!p.split('/').any(|s| s.is_empty() || s == "." || s == ".."));
        assert_eq!(normalize_manifest_path(&p).as_deref(), Ok(p.as_str()));
    }
});

//! chanto.platform.toml and the import inputs (Amplify's and Netlify's
//! JSON) on arbitrary text: never panic; what parses renders back to the
//! same configuration.
#![no_main]
use chanto_control::{import, platform};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(body) else { return };
    match pick % 3 {
        0 => {
            if let Ok(config) = platform::parse("chanto.platform.toml", text) {
                let again = platform::parse("chanto.platform.toml", &platform::render(&config));
                assert_eq!(again.ok().as_ref(), Some(&config), "render must round-trip");
            }
        }
        1 => {
            if let Ok(i) = import::amplify(&[("app.json", text)]) {
                let _ = import::to_platform_toml(&i.site);
            }
        }
        _ => {
            if let Ok(i) = import::netlify("site.json", text) {
                let _ = import::to_platform_toml(&i.site);
            }
        }
    }
});

//! Every rule-file parser on arbitrary bytes: the first byte picks the file,
//! the rest is its contents. Parsing must return rules or errors, never
//! panic, and the rules it returns must compile into a matcher that answers.
#![no_main]

use chanto_rules::{RULE_FILES, RuleRequest, compile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, contents)) = data.split_first() else { return };
    let name = RULE_FILES[pick as usize % RULE_FILES.len()];
    if let Ok(set) = compile(&[(name, contents)]) {
        let m = set.matcher();
        for path in ["/", "/a", "/a/b/c.html", "/blog/2024/x"] {
            let _ = m.evaluate(&RuleRequest { path, query: Some("id=1"), ..Default::default() }, |_| false);
            let _ = m.headers_for(path);
        }
    }
});

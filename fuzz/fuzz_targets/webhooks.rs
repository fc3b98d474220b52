//! Every forge's webhook parser on arbitrary bytes, under every event it acts on: never panics.
#![no_main]
use chanto_forge::{Forge, parse};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let forge = Forge::ALL[pick as usize % 3];
    let events = ["push", "pull_request", "delete", "Push Hook", "Merge Request Hook", "ping"];
    let event = events[(pick as usize / 3) % events.len()];
    let _ = parse(forge, &|_: &str| Some(event.to_owned()), body);
});

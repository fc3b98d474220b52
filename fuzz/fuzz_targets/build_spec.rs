//! The build-spec parsers (chanto.toml, amplify.yml, netlify.toml) on arbitrary text: never panic.
#![no_main]
use chanto_build::{Context, SiteBuildSettings, SpecInput, resolve_spec};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(body) else { return };
    let file = ["chanto.toml", "amplify.yml", "netlify.toml"][pick as usize % 3];
    let context = [Context::Production, Context::BranchDeploy, Context::DeployPreview][(pick as usize / 3) % 3];
    let read = |name: &str| (name == file).then(|| text.to_owned());
    let settings = SiteBuildSettings { publish: Some("public".into()), ..Default::default() };
    let _ = resolve_spec(&SpecInput { read: &read, context, branch: "main", settings: &settings });
});

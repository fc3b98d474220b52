//! The published JSON Schema of the webhook payload (`docs/webhook-payload.schema.json`) is the one the code
//! describes. After changing the payload, regenerate it with `CHANTO_WRITE_SCHEMA=1 cargo test -p chanto-notify`.

#[test]
fn the_published_schema_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/webhook-payload.schema.json");
    let current = format!("{}\n", serde_json::to_string_pretty(&chanto_notify::webhook_schema()).unwrap());
    if std::env::var_os("CHANTO_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &current).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == current,
        "{} is out of date; run CHANTO_WRITE_SCHEMA=1 cargo test -p chanto-notify --test schema",
        path.display()
    );
}

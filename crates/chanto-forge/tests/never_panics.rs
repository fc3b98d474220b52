//! Property tests: `verify` and `parse` never panic on any input, and whatever `parse` accepts satisfies the
//! crate's invariants (valid branch names, lowercase hex commit ids, positive numbers).

mod common;

use chanto_forge::{Forge, parse, verify};
use common::{Headers, SECRET, assert_valid, fixture};
use proptest::prelude::*;
use serde_json::Value;

/// Every event header value each forge sends that the crate treats specially, plus a few it does not.
fn events(forge: Forge) -> &'static [&'static str] {
    match forge {
        Forge::GitHub => &["push", "pull_request", "delete", "ping", "create", "issues", ""],
        Forge::GitLab => &["Push Hook", "Merge Request Hook", "Tag Push Hook", "System Hook", "Note Hook", ""],
        Forge::Gitea => &["push", "pull_request", "delete", "create", "release", ""],
    }
}

fn event_header(forge: Forge) -> &'static str {
    match forge {
        Forge::GitHub => "X-GitHub-Event",
        Forge::GitLab => "X-Gitlab-Event",
        Forge::Gitea => "X-Gitea-Event",
    }
}

/// A forge and one of its event names.
fn forge_and_event() -> impl Strategy<Value = (Forge, &'static str)> {
    prop::sample::select(Forge::ALL.to_vec())
        .prop_flat_map(|forge| prop::sample::select(events(forge).to_vec()).prop_map(move |event| (forge, event)))
}

/// The fixtures whose shape matches a forge's event, so mutations reach deep into the parsers.
fn fixtures() -> Vec<(Forge, &'static str, Value)> {
    vec![
        (Forge::GitHub, "push", fixture("github_push")),
        (Forge::GitHub, "pull_request", fixture("github_pull_request")),
        (Forge::GitHub, "delete", fixture("github_delete")),
        (Forge::GitLab, "Push Hook", fixture("gitlab_push")),
        (Forge::GitLab, "Merge Request Hook", fixture("gitlab_merge_request")),
        (Forge::Gitea, "push", fixture("gitea_push")),
        (Forge::Gitea, "pull_request", fixture("gitea_pull_request")),
        (Forge::Gitea, "delete", fixture("gitea_delete")),
    ]
}

/// Every JSON pointer to a value inside `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| pointers(v, format!("{at}/{k}"), out)),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
        _ => {}
    }
    out.push(at);
}

/// Arbitrary JSON, with strings that stress validation (control characters, hex-looking ids, zero ids).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
        "[0-9a-fA-F]{38,66}".prop_map(Value::String),
        Just(Value::String("0".repeat(40))),
        "refs/(heads|tags)/[ -~\u{0}-\u{1f}\u{7f}-\u{9f}]{0,300}".prop_map(Value::String),
        prop::sample::select(vec!["opened", "closed", "reopened", "synchronize", "synchronized", "open", "merge"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn headers_for(forge: Forge, event: &str) -> Headers {
    Headers::default().set(event_header(forge), event)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_bytes((forge, event) in forge_and_event(), body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(event) = parse(forge, &headers_for(forge, event).lookup(), &body) {
            assert_valid(&event);
        }
    }

    #[test]
    fn parse_never_panics_on_any_event_header(forge in prop::sample::select(Forge::ALL.to_vec()), event in any::<String>()) {
        let body = br#"{"ref":"refs/heads/main","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}"#;
        if let Ok(event) = parse(forge, &headers_for(forge, &event).lookup(), body) {
            assert_valid(&event);
        }
    }

    #[test]
    fn verify_never_panics_and_refuses_forgeries(
        forge in prop::sample::select(Forge::ALL.to_vec()),
        signature in any::<String>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let headers = Headers::default()
            .set("X-Hub-Signature-256", &signature)
            .set("X-Gitlab-Token", &signature)
            .set("X-Gitea-Signature", &signature);
        // A random string is never the secret nor a signature made with it.
        prop_assert!(verify(forge, &headers.lookup(), &body, SECRET).is_err());
    }

    #[test]
    fn mutated_documented_payloads_parse_to_valid_events_or_errors(
        index in any::<prop::sample::Index>(),
        path_index in any::<prop::sample::Index>(),
        replacement in json_value(),
    ) {
        let fixtures = fixtures();
        let (forge, event, mut payload) = fixtures[index.index(fixtures.len())].clone();
        let mut paths = Vec::new();
        pointers(&payload, String::new(), &mut paths);
        let path = &paths[path_index.index(paths.len())];
        match payload.pointer_mut(path) {
            Some(slot) => *slot = replacement,
            None => unreachable!("pointer {path} was collected from the payload"),
        }
        let body = serde_json::to_vec(&payload).expect("serializable");
        if let Ok(event) = parse(forge, &headers_for(forge, event).lookup(), &body) {
            assert_valid(&event);
        }
    }

    #[test]
    fn corrupted_documented_payloads_never_panic(
        index in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let fixtures = fixtures();
        let (forge, event, payload) = &fixtures[index.index(fixtures.len())];
        let mut body = serde_json::to_vec(payload).expect("serializable");
        for (at, byte) in flips {
            let at = at.index(body.len());
            body[at] = byte;
        }
        body.truncate(cut.index(body.len() + 1));
        if let Ok(event) = parse(*forge, &headers_for(*forge, event).lookup(), &body) {
            assert_valid(&event);
        }
    }
}

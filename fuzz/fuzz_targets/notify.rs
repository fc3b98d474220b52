//! Notifications on arbitrary input: a receiver's signature check, stored filters, and every body rendered from an
//! event whose text is hostile. Never panics; a PR comment always starts with its marker and fits GitHub's limit.
#![no_main]
use chanto_notify::{Event, EventKind, EventUrls, Filter};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1f}');
    let mut next = || parts.next().unwrap_or("").to_owned();
    let (ts, sig, secret) = (next(), next(), next());
    let headers = |name: &str| match name.to_ascii_lowercase().as_str() {
        "x-chanto-timestamp" => Some(ts.clone()),
        "x-chanto-signature" => Some(sig.clone()),
        _ => None,
    };
    let _ = chanto_notify::verify(secret.as_bytes(), &headers, data, 1_700_000_000, 300);
    let _ = serde_json::from_slice::<Filter>(data);
    let kind = EventKind::ALL[data.first().copied().unwrap_or(0) as usize % EventKind::ALL.len()];
    // Site names are DNS labels (at most 63 characters); other text is unbounded.
    let site: String = next().chars().take(63).collect();
    let e = Event {
        id: next(),
        kind,
        at_ms: i64::from_le_bytes(data.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8])),
        site: site.clone(),
        branch: next(),
        commit: Some(next()),
        build_id: Some(next()),
        deploy_id: Some(next()),
        pull_request: Some(7),
        urls: EventUrls { branch: Some(next()), permalink: Some(next()), log: Some(next()) },
        duration_ms: Some(u64::MAX),
        author: Some(next()),
        message: Some(next()),
        error: Some(next()),
        from_fork: true,
        domain: Some(next()),
        expires_at_ms: Some(i64::MIN),
        hint: Some(next()),
    };
    let _ = chanto_notify::slack_body(&e);
    let _ = chanto_notify::discord_body(&e);
    let _ = chanto_notify::email(&e);
    let _ = chanto_notify::webhook_body(&e);
    let comment = chanto_notify::pr_comment(&e, None);
    assert!(comment.starts_with(&chanto_notify::comment_marker(&e.site)));
    assert!(comment.encode_utf16().count() <= chanto_notify::COMMENT_MAX);
    for forge in [chanto_notify::ForgeKind::GitHub, chanto_notify::ForgeKind::GitLab, chanto_notify::ForgeKind::Gitea] {
        let _ = chanto_notify::status_body(forge, &e, &site);
    }
    let _ = chanto_notify::parse_repo_path(&text);
});

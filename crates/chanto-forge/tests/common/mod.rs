//! Helpers shared by the webhook tests: fixtures trimmed from the forges' documented examples, and requests
//! signed the way each forge signs them.

#![allow(dead_code)]

use std::collections::HashMap;

use chanto_forge::{Event, Forge, WebhookError, parse, sign_hmac_sha256_hex, verify};
use serde_json::Value;

/// The site secret the tests' forges are configured with.
pub const SECRET: &[u8] = b"It's a Secret to Everybody";

/// A fixture from `tests/fixtures`, as JSON to edit.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// `value` with the JSON pointer `pointer` set to `new`.
pub fn with(mut value: Value, pointer: &str, new: Value) -> Value {
    *value.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer} in fixture")) = new;
    value
}

/// Request headers, stored in lowercase: a lookup by any other case fails, so the tests also check that the
/// crate looks headers up the way an `http::HeaderMap` stores them.
#[derive(Clone, Debug, Default)]
pub struct Headers(pub HashMap<String, String>);

impl Headers {
    pub fn set(mut self, name: &str, value: &str) -> Self {
        self.0.insert(name.to_ascii_lowercase(), value.to_owned());
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.0.remove(&name.to_ascii_lowercase());
        self
    }

    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| self.0.get(name).cloned()
    }
}

/// Headers a forge sends for `event` with `body`, signed with `secret` using the forge's real algorithm.
pub fn signed_headers(forge: Forge, event: &str, body: &[u8], secret: &[u8]) -> Headers {
    let headers = Headers::default();
    match forge {
        Forge::GitHub => headers
            .set("X-GitHub-Event", event)
            .set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .set("X-Hub-Signature-256", &format!("sha256={}", sign_hmac_sha256_hex(secret, body))),
        Forge::GitLab => headers
            .set("X-Gitlab-Event", event)
            .set("X-Gitlab-Token", std::str::from_utf8(secret).expect("test secrets are UTF-8")),
        Forge::Gitea => headers
            .set("X-Gitea-Event", event)
            .set("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473")
            .set("X-Gitea-Signature", &sign_hmac_sha256_hex(secret, body)),
    }
}

/// What chanto's HTTP layer does with a request: verify, then parse.
pub fn receive(forge: Forge, headers: &Headers, body: &[u8]) -> Result<Event, WebhookError> {
    verify(forge, &headers.lookup(), body, SECRET)?;
    parse(forge, &headers.lookup(), body)
}

/// Serializes `payload`, signs it as `forge` would, verifies and parses it.
pub fn deliver(forge: Forge, event: &str, payload: &Value) -> Result<Event, WebhookError> {
    let body = serde_json::to_vec(payload).expect("serializable");
    receive(forge, &signed_headers(forge, event, &body, SECRET), &body)
}

/// Checks the invariants of everything [`parse`] hands out.
pub fn assert_valid(event: &Event) {
    fn branch(name: &str) {
        assert!(!name.is_empty() && name.len() <= 255, "branch length: {name:?}");
        assert!(!name.chars().any(char::is_control), "control char in branch: {name:?}");
        assert!(!name.starts_with('-'), "leading dash: {name:?}");
    }
    fn commit(id: &str) {
        assert!(id.len() == 40 || id.len() == 64, "commit length: {id:?}");
        assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "commit hex: {id:?}");
    }
    match event {
        Event::Push { branch: b, commit: c, .. } => {
            branch(b);
            commit(c);
        }
        Event::BranchDeleted { branch: b } => branch(b),
        Event::PullRequest { number, head_branch, head_commit, base_branch, .. } => {
            assert!(*number > 0);
            branch(head_branch);
            branch(base_branch);
            commit(head_commit);
        }
        Event::Ping => {}
        Event::Ignored { reason } => assert!(reason.len() < 1_000, "reason too long: {} bytes", reason.len()),
    }
}

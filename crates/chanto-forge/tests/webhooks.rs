//! Webhooks as the forges send them: documented example payloads, signed with the real algorithms, verified and
//! parsed; then every way a request can be refused.

mod common;

use chanto_forge::{Event, Forge, MAX_BODY_BYTES, PrAction, WebhookError, parse, verify};
use common::{Headers, SECRET, assert_valid, deliver, fixture, receive, signed_headers, with};
use serde_json::{Value, json};

const ZERO: &str = "0000000000000000000000000000000000000000";

fn ok(result: Result<Event, WebhookError>) -> Event {
    let event = result.unwrap_or_else(|e| panic!("refused: {e}"));
    assert_valid(&event);
    event
}

fn ignored_reason(result: Result<Event, WebhookError>) -> String {
    match ok(result) {
        Event::Ignored { reason } => reason,
        other => panic!("expected Ignored, got {other:?}"),
    }
}

fn pr_action(event: Event) -> PrAction {
    match event {
        Event::PullRequest { action, .. } => action,
        other => panic!("expected PullRequest, got {other:?}"),
    }
}

fn from_fork(event: Event) -> bool {
    match event {
        Event::PullRequest { from_fork, .. } => from_fork,
        other => panic!("expected PullRequest, got {other:?}"),
    }
}

// ---- GitHub ----

#[test]
fn github_push() {
    assert_eq!(
        ok(deliver(Forge::GitHub, "push", &fixture("github_push"))),
        Event::Push {
            branch: "main".into(),
            commit: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
            message: Some("Update README.md".into()),
            author: Some("Codertocat".into()),
            clone_urls: vec![
                "https://github.com/Codertocat/Hello-World.git".into(),
                "git@github.com:Codertocat/Hello-World.git".into()
            ],
        }
    );
}

#[test]
fn github_push_without_head_commit_names_the_pusher() {
    let payload = with(with(fixture("github_push"), "/head_commit", Value::Null), "/commits", json!([]));
    let Event::Push { message, author, .. } = ok(deliver(Forge::GitHub, "push", &payload)) else { panic!() };
    assert_eq!((message, author), (None, Some("Codertocat".into())));
}

#[test]
fn github_push_lowercases_commit_and_accepts_sha256_ids() {
    let upper = with(fixture("github_push"), "/after", json!("0D1A26E67D8F5EAF1F6BA5C57FC3C7D91AC0FD1C"));
    let Event::Push { commit, .. } = ok(deliver(Forge::GitHub, "push", &upper)) else { panic!() };
    assert_eq!(commit, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    let sha256 = with(fixture("github_push"), "/after", json!("ab".repeat(32)));
    let Event::Push { commit, .. } = ok(deliver(Forge::GitHub, "push", &sha256)) else { panic!() };
    assert_eq!(commit, "ab".repeat(32));
}

#[test]
fn github_push_deleting_a_branch() {
    let deleted = with(with(fixture("github_push"), "/after", json!(ZERO)), "/deleted", json!(true));
    let deleted = with(deleted, "/head_commit", Value::Null);
    assert_eq!(ok(deliver(Forge::GitHub, "push", &deleted)), Event::BranchDeleted { branch: "main".into() });
    // All-zero `after` alone is enough.
    let zero = with(fixture("github_push"), "/after", json!(ZERO));
    assert_eq!(ok(deliver(Forge::GitHub, "push", &zero)), Event::BranchDeleted { branch: "main".into() });
}

#[test]
fn github_tag_and_other_ref_pushes_are_ignored() {
    let tag = with(fixture("github_push"), "/ref", json!("refs/tags/v1.0"));
    assert!(ignored_reason(deliver(Forge::GitHub, "push", &tag)).contains("tag `v1.0`"));
    let notes = with(fixture("github_push"), "/ref", json!("refs/notes/commits"));
    assert!(ignored_reason(deliver(Forge::GitHub, "push", &notes)).contains("not a branch"));
}

#[test]
fn github_pull_request_opened() {
    assert_eq!(
        ok(deliver(Forge::GitHub, "pull_request", &fixture("github_pull_request"))),
        Event::PullRequest {
            number: 2,
            action: PrAction::Opened,
            head_branch: "changes".into(),
            head_commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821".into(),
            base_branch: "master".into(),
            title: "Update the README with new information.".into(),
            author: Some("Codertocat".into()),
            from_fork: false,
        }
    );
}

#[test]
fn github_pull_request_actions() {
    let table = [
        ("reopened", false, Some(PrAction::Opened)),
        ("synchronize", false, Some(PrAction::Updated)),
        ("closed", false, Some(PrAction::Closed { merged: false })),
        ("closed", true, Some(PrAction::Closed { merged: true })),
        ("labeled", false, None),
        ("edited", false, None),
        // Gitea's spelling is not GitHub's.
        ("synchronized", false, None),
    ];
    for (action, merged, expected) in table {
        let payload = with(fixture("github_pull_request"), "/action", json!(action));
        let payload = with(payload, "/pull_request/merged", json!(merged));
        let result = deliver(Forge::GitHub, "pull_request", &payload);
        match expected {
            Some(expected) => assert_eq!(pr_action(ok(result)), expected, "{action}"),
            None => assert!(ignored_reason(result).contains(action), "{action}"),
        }
    }
}

#[test]
fn github_ignored_action_needs_no_other_field() {
    let payload = json!({ "action": "labeled", "label": { "name": "bug" } });
    assert!(ignored_reason(deliver(Forge::GitHub, "pull_request", &payload)).contains("labeled"));
}

#[test]
fn github_pull_request_from_fork() {
    let fork = with(
        fixture("github_pull_request"),
        "/pull_request/head/repo",
        json!({ "id": 1, "full_name": "mallory/Hello-World" }),
    );
    assert!(from_fork(ok(deliver(Forge::GitHub, "pull_request", &fork))));
    // The fork was deleted: GitHub sends `null`, and chanto cannot prove the code is trusted.
    let gone = with(fixture("github_pull_request"), "/pull_request/head/repo", Value::Null);
    assert!(from_fork(ok(deliver(Forge::GitHub, "pull_request", &gone))));
    // Without ids, names decide.
    let by_name = with(
        with(
            fixture("github_pull_request"),
            "/pull_request/head/repo",
            json!({ "full_name": "codertocat/hello-world" }),
        ),
        "/pull_request/base/repo",
        json!({ "full_name": "Codertocat/Hello-World" }),
    );
    assert!(!from_fork(ok(deliver(Forge::GitHub, "pull_request", &by_name))));
}

#[test]
fn github_delete() {
    assert_eq!(
        ok(deliver(Forge::GitHub, "delete", &fixture("github_delete"))),
        Event::BranchDeleted { branch: "simple-branch".into() }
    );
    let tag = with(fixture("github_delete"), "/ref_type", json!("tag"));
    assert!(ignored_reason(deliver(Forge::GitHub, "delete", &tag)).contains("tag"));
}

#[test]
fn github_ping_create_and_other_events() {
    assert_eq!(ok(deliver(Forge::GitHub, "ping", &fixture("github_ping"))), Event::Ping);
    let create = json!({ "ref": "new-branch", "ref_type": "branch", "master_branch": "main" });
    assert!(ignored_reason(deliver(Forge::GitHub, "create", &create)).contains("create"));
    assert!(ignored_reason(deliver(Forge::GitHub, "issues", &json!({ "action": "opened" }))).contains("issues"));
}

// ---- GitLab ----

#[test]
fn gitlab_push() {
    assert_eq!(
        ok(deliver(Forge::GitLab, "Push Hook", &fixture("gitlab_push"))),
        Event::Push {
            branch: "master".into(),
            commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
            message: Some("fixed readme".into()),
            author: Some("GitLab dev user".into()),
            clone_urls: vec!["http://example.com/mike/diaspora.git".into(), "git@example.com:mike/diaspora.git".into()],
        }
    );
}

#[test]
fn gitlab_push_picks_the_commit_named_by_after() {
    // Reorder so the head commit is first: the one whose id is `after` wins, not the last.
    let mut payload = fixture("gitlab_push");
    payload["commits"].as_array_mut().unwrap().reverse();
    let Event::Push { message, .. } = ok(deliver(Forge::GitLab, "Push Hook", &payload)) else { panic!() };
    assert_eq!(message.as_deref(), Some("fixed readme"));
    // Without commits (over GitLab's 20-commit limit, say) the pusher is the author.
    let bare = with(fixture("gitlab_push"), "/commits", json!([]));
    let Event::Push { message, author, .. } = ok(deliver(Forge::GitLab, "Push Hook", &bare)) else { panic!() };
    assert_eq!((message, author), (None, Some("John Smith".into())));
}

#[test]
fn gitlab_push_deleting_a_branch() {
    let payload = with(with(fixture("gitlab_push"), "/after", json!(ZERO)), "/commits", json!([]));
    let payload = with(payload, "/checkout_sha", Value::Null);
    assert_eq!(ok(deliver(Forge::GitLab, "Push Hook", &payload)), Event::BranchDeleted { branch: "master".into() });
}

#[test]
fn gitlab_tags_and_system_hooks_are_ignored() {
    let tag = with(fixture("gitlab_push"), "/ref", json!("refs/tags/v1.0.0"));
    assert!(ignored_reason(deliver(Forge::GitLab, "Push Hook", &tag)).contains("v1.0.0"));
    assert!(ignored_reason(deliver(Forge::GitLab, "Tag Push Hook", &tag)).contains("tag"));
    assert!(ignored_reason(deliver(Forge::GitLab, "System Hook", &fixture("gitlab_push"))).contains("system"));
    assert!(ignored_reason(deliver(Forge::GitLab, "Pipeline Hook", &json!({}))).contains("Pipeline Hook"));
}

#[test]
fn gitlab_merge_request_opened() {
    assert_eq!(
        ok(deliver(Forge::GitLab, "Merge Request Hook", &fixture("gitlab_merge_request"))),
        Event::PullRequest {
            number: 1,
            action: PrAction::Opened,
            head_branch: "ms-viewport".into(),
            head_commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
            base_branch: "master".into(),
            title: "MS-Viewport".into(),
            author: Some("root".into()),
            from_fork: false,
        }
    );
}

#[test]
fn gitlab_merge_request_actions() {
    let oldrev = Some("95790bf891e76fee5e1747ab589903a6a1f80f22");
    let table = [
        ("reopen", None, Some(PrAction::Opened)),
        ("update", oldrev, Some(PrAction::Updated)),
        ("update", None, None),
        ("close", None, Some(PrAction::Closed { merged: false })),
        ("merge", None, Some(PrAction::Closed { merged: true })),
        ("approved", None, None),
        ("unapproval", None, None),
    ];
    for (action, oldrev, expected) in table {
        let mut payload = with(fixture("gitlab_merge_request"), "/object_attributes/action", json!(action));
        if let Some(oldrev) = oldrev {
            payload["object_attributes"]["oldrev"] = json!(oldrev);
        }
        let result = deliver(Forge::GitLab, "Merge Request Hook", &payload);
        match expected {
            Some(expected) => assert_eq!(pr_action(ok(result)), expected, "{action}"),
            None => assert!(ignored_reason(result).contains(action), "{action}"),
        }
    }
}

#[test]
fn gitlab_merge_request_from_fork() {
    let fork = with(fixture("gitlab_merge_request"), "/object_attributes/source_project_id", json!(15));
    assert!(from_fork(ok(deliver(Forge::GitLab, "Merge Request Hook", &fork))));
}

// ---- Gitea / Forgejo ----

#[test]
fn gitea_push() {
    assert_eq!(
        ok(deliver(Forge::Gitea, "push", &fixture("gitea_push"))),
        Event::Push {
            branch: "develop".into(),
            commit: "bffeb74224043ba2feb48d137756c8a9331c449a".into(),
            message: Some("Webhooks Yay!".into()),
            author: Some("Gitea".into()),
            clone_urls: vec![
                "http://localhost:3000/gitea/webhooks.git".into(),
                "ssh://gitea@localhost:2222/gitea/webhooks.git".into()
            ],
        }
    );
}

#[test]
fn gitea_pull_request() {
    assert_eq!(
        ok(deliver(Forge::Gitea, "pull_request", &fixture("gitea_pull_request"))),
        Event::PullRequest {
            number: 7,
            action: PrAction::Opened,
            head_branch: "contact-page".into(),
            head_commit: "4ca8ed21b04b5f9a1b1b9c26e1f1bbc8b3a59aa1".into(),
            base_branch: "master".into(),
            title: "Add a contact page".into(),
            author: Some("alice".into()),
            from_fork: false,
        }
    );
    let table = [
        ("reopened", false, Some(PrAction::Opened)),
        ("synchronized", false, Some(PrAction::Updated)),
        ("closed", true, Some(PrAction::Closed { merged: true })),
        ("closed", false, Some(PrAction::Closed { merged: false })),
        ("label_updated", false, None),
        ("synchronize", false, None),
    ];
    for (action, merged, expected) in table {
        let payload = with(fixture("gitea_pull_request"), "/action", json!(action));
        let payload = with(payload, "/pull_request/merged", json!(merged));
        let result = deliver(Forge::Gitea, "pull_request", &payload);
        match expected {
            Some(expected) => assert_eq!(pr_action(ok(result)), expected, "{action}"),
            None => assert!(ignored_reason(result).contains(action), "{action}"),
        }
    }
    let fork = with(fixture("gitea_pull_request"), "/pull_request/head/repo_id", json!(141));
    assert!(from_fork(ok(deliver(Forge::Gitea, "pull_request", &fork))));
}

#[test]
fn gitea_delete_and_create() {
    assert_eq!(
        ok(deliver(Forge::Gitea, "delete", &fixture("gitea_delete"))),
        Event::BranchDeleted { branch: "contact-page".into() }
    );
    assert!(ignored_reason(deliver(Forge::Gitea, "create", &fixture("gitea_delete"))).contains("create"));
}

#[test]
fn forgejo_headers_are_accepted() {
    let body = serde_json::to_vec(&fixture("gitea_push")).unwrap();
    let headers = Headers::default()
        .set("X-Forgejo-Event", "push")
        .set("X-Forgejo-Signature", &chanto_forge::sign_hmac_sha256_hex(SECRET, &body));
    let Event::Push { branch, .. } = ok(receive(Forge::Gitea, &headers, &body)) else { panic!() };
    assert_eq!(branch, "develop");
}

// ---- Refusals: signatures ----

fn github_request() -> (Headers, Vec<u8>) {
    let body = serde_json::to_vec(&fixture("github_push")).unwrap();
    (signed_headers(Forge::GitHub, "push", &body, SECRET), body)
}

fn refused(result: Result<Event, WebhookError>) -> WebhookError {
    match result {
        Ok(event) => panic!("accepted: {event:?}"),
        Err(err) => err,
    }
}

#[test]
fn tampered_body_is_refused() {
    let (headers, mut body) = github_request();
    body.extend_from_slice(b" ");
    let err = refused(receive(Forge::GitHub, &headers, &body));
    assert_eq!((err.status(), err.code()), (401, "bad_signature"));
    assert_eq!(
        err.to_string(),
        "X-Hub-Signature-256 does not match the body; check that the webhook secret configured on GitHub is the one \
         chanto shows for this site"
    );
}

#[test]
fn wrong_secret_is_refused_for_every_forge() {
    for forge in Forge::ALL {
        let payload = fixture(match forge {
            Forge::GitHub => "github_push",
            Forge::GitLab => "gitlab_push",
            Forge::Gitea => "gitea_push",
        });
        let body = serde_json::to_vec(&payload).unwrap();
        let event = if forge == Forge::GitLab { "Push Hook" } else { "push" };
        let headers = signed_headers(forge, event, &body, b"not the site secret");
        let err = refused(receive(forge, &headers, &body));
        assert_eq!(err.status(), 401, "{forge}");
        let expected = if forge == Forge::GitLab { "bad_token" } else { "bad_signature" };
        assert_eq!(err.code(), expected, "{forge}: {err}");
        // The right secret, truncated, is as wrong as any other.
        let headers = signed_headers(forge, event, &body, &SECRET[..SECRET.len() - 1]);
        assert_eq!(refused(receive(forge, &headers, &body)).status(), 401);
    }
}

#[test]
fn missing_signature_names_the_header() {
    let (headers, body) = github_request();
    let err = refused(receive(Forge::GitHub, &headers.without("X-Hub-Signature-256"), &body));
    assert_eq!((err.status(), err.code()), (401, "missing_signature"));
    assert!(err.to_string().starts_with("X-Hub-Signature-256 header is missing"), "{err}");

    let body = serde_json::to_vec(&fixture("gitlab_push")).unwrap();
    let headers = signed_headers(Forge::GitLab, "Push Hook", &body, SECRET).without("X-Gitlab-Token");
    let err = refused(receive(Forge::GitLab, &headers, &body));
    assert_eq!(err.code(), "missing_signature");
    assert!(err.to_string().starts_with("X-Gitlab-Token header is missing"), "{err}");

    let body = serde_json::to_vec(&fixture("gitea_push")).unwrap();
    let headers = signed_headers(Forge::Gitea, "push", &body, SECRET).without("X-Gitea-Signature");
    let err = refused(receive(Forge::Gitea, &headers, &body));
    assert_eq!(err.code(), "missing_signature");
    assert!(err.to_string().contains("X-Forgejo-Signature"), "{err}");
}

#[test]
fn malformed_signatures_are_refused() {
    let (headers, body) = github_request();
    let good = headers.0["x-hub-signature-256"].clone();
    let sha1 = format!("sha1={}", &good["sha256=".len()..][..40]);
    for bad in [good["sha256=".len()..].to_owned(), sha1, "sha256=zz".to_owned(), format!("{good}00"), String::new()] {
        let err = refused(receive(Forge::GitHub, &headers.clone().set("X-Hub-Signature-256", &bad), &body));
        assert_eq!((err.status(), err.code()), (401, "malformed_signature"), "{bad:?}: {err}");
    }
    // Uppercase hex is the same signature.
    let upper = format!("sha256={}", good["sha256=".len()..].to_ascii_uppercase());
    ok(receive(Forge::GitHub, &headers.set("X-Hub-Signature-256", &upper), &body));
}

#[test]
fn empty_secret_is_refused() {
    let (headers, body) = github_request();
    for forge in Forge::ALL {
        let err = verify(forge, &headers.lookup(), &body, b"").unwrap_err();
        assert_eq!((err.status(), err.code()), (500, "empty_secret"));
    }
    // Even when the sender signed with the empty secret too.
    let headers = signed_headers(Forge::GitHub, "push", &body, b"");
    assert_eq!(verify(Forge::GitHub, &headers.lookup(), &body, b"").unwrap_err(), WebhookError::EmptySecret);
}

#[test]
fn oversized_bodies_are_refused() {
    let body = vec![b' '; MAX_BODY_BYTES + 1];
    let headers = signed_headers(Forge::GitHub, "push", &body, SECRET);
    let err = verify(Forge::GitHub, &headers.lookup(), &body, SECRET).unwrap_err();
    assert_eq!((err.status(), err.code()), (413, "payload_too_large"));
    assert_eq!(parse(Forge::GitHub, &headers.lookup(), &body).unwrap_err(), err);
}

// ---- Refusals: events and payloads ----

#[test]
fn missing_event_header_names_it() {
    let (headers, body) = github_request();
    let err = refused(receive(Forge::GitHub, &headers.without("X-GitHub-Event"), &body));
    assert_eq!((err.status(), err.code()), (400, "missing_event"));
    assert!(err.to_string().starts_with("X-GitHub-Event header is missing"), "{err}");
    let lookup_nothing = |_: &str| None;
    for (forge, header) in
        [(Forge::GitLab, "X-Gitlab-Event header"), (Forge::Gitea, "X-Gitea-Event (or X-Forgejo-Event) header")]
    {
        let err = parse(forge, &lookup_nothing, b"{}").unwrap_err();
        assert!(err.to_string().starts_with(header), "{err}");
    }
}

#[test]
fn garbage_event_header_is_refused() {
    let (headers, body) = github_request();
    for bad in ["", "push; rm -rf /", &"a".repeat(65), "pu\u{1b}[31msh"] {
        let err = refused(receive(Forge::GitHub, &headers.clone().set("X-GitHub-Event", bad), &body));
        assert_eq!((err.status(), err.code()), (400, "unsupported_event"), "{bad:?}");
        assert!(!err.to_string().contains('\u{1b}'));
    }
}

#[test]
fn truncated_json_is_malformed() {
    let body = serde_json::to_vec(&fixture("github_pull_request")).unwrap();
    let body = &body[..body.len() / 2];
    let headers = signed_headers(Forge::GitHub, "pull_request", body, SECRET);
    let err = refused(receive(Forge::GitHub, &headers, body));
    assert_eq!((err.status(), err.code()), (400, "malformed_payload"));
    assert!(err.to_string().starts_with("malformed github pull_request payload: EOF while parsing"), "{err}");
}

#[test]
fn form_encoded_body_points_at_the_content_type() {
    let body = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D";
    let headers = signed_headers(Forge::GitHub, "push", body, SECRET);
    let err = refused(receive(Forge::GitHub, &headers, body));
    assert!(err.to_string().contains("content type is application/json"), "{err}");
}

#[test]
fn wrong_types_name_the_json_path() {
    let null_sha = with(fixture("github_pull_request"), "/pull_request/head/sha", Value::Null);
    let err = refused(deliver(Forge::GitHub, "pull_request", &null_sha));
    assert_eq!((err.status(), err.code()), (400, "malformed_payload"));
    assert!(
        err.to_string().starts_with(
            "malformed github pull_request payload at pull_request.head.sha: invalid type: null, expected a string"
        ),
        "{err}"
    );

    let string_number = with(fixture("github_pull_request"), "/number", json!("2"));
    let err = refused(deliver(Forge::GitHub, "pull_request", &string_number));
    assert!(err.to_string().contains("payload at number: invalid type: string"), "{err}");

    let negative_iid = with(fixture("gitlab_merge_request"), "/object_attributes/iid", json!(-1));
    let err = refused(deliver(Forge::GitLab, "Merge Request Hook", &negative_iid));
    assert!(err.to_string().contains("at object_attributes.iid"), "{err}");

    let mut no_after = fixture("gitea_push");
    no_after.as_object_mut().unwrap().remove("after");
    let err = refused(deliver(Forge::Gitea, "push", &no_after));
    assert!(err.to_string().contains("missing field `after`"), "{err}");

    let array_commits = with(fixture("gitlab_push"), "/commits", json!({ "0": {} }));
    let err = refused(deliver(Forge::GitLab, "Push Hook", &array_commits));
    assert!(err.to_string().contains("at commits"), "{err}");
}

#[test]
fn non_hex_commit_is_invalid() {
    let payload = with(fixture("github_push"), "/after", json!("z".repeat(40)));
    let err = refused(deliver(Forge::GitHub, "push", &payload));
    assert_eq!((err.status(), err.code()), (400, "invalid_field"));
    assert!(err.to_string().starts_with("github push payload field `after`"), "{err}");

    let short = with(fixture("gitlab_merge_request"), "/object_attributes/last_commit/id", json!("da15608"));
    let err = refused(deliver(Forge::GitLab, "Merge Request Hook", &short));
    assert!(err.to_string().contains("`object_attributes.last_commit.id`"), "{err}");
}

#[test]
fn hostile_branch_names_are_invalid() {
    let long = format!("refs/heads/{}", "a".repeat(10 * 1024));
    let cases = [
        (Forge::GitHub, "push", "github_push", "/ref", json!("refs/heads/evil\u{7}\nname"), "`ref`"),
        (Forge::GitHub, "push", "github_push", "/ref", json!(long), "`ref`"),
        (Forge::GitHub, "push", "github_push", "/ref", json!("refs/heads/"), "`ref`"),
        (Forge::GitLab, "Push Hook", "gitlab_push", "/ref", json!("refs/heads/--upload-pack=x"), "`ref`"),
        (Forge::Gitea, "delete", "gitea_delete", "/ref", json!("bad\u{0}"), "`ref`"),
        (
            Forge::GitHub,
            "pull_request",
            "github_pull_request",
            "/pull_request/head/ref",
            json!("x\r\nSet-Cookie: a"),
            "`pull_request.head.ref`",
        ),
        (
            Forge::GitLab,
            "Merge Request Hook",
            "gitlab_merge_request",
            "/object_attributes/target_branch",
            json!("a".repeat(256)),
            "`object_attributes.target_branch`",
        ),
    ];
    for (forge, event, name, pointer, value, field) in cases {
        let err = refused(deliver(forge, event, &with(fixture(name), pointer, value)));
        assert_eq!((err.status(), err.code()), (400, "invalid_field"), "{forge} {pointer}: {err}");
        let message = err.to_string();
        assert!(message.contains(field), "{message}");
        assert!(message.len() < 400, "message echoes the hostile value: {} bytes", message.len());
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }
}

#[test]
fn pull_request_number_zero_is_invalid() {
    let payload = with(fixture("github_pull_request"), "/number", json!(0));
    let err = refused(deliver(Forge::GitHub, "pull_request", &payload));
    assert_eq!(err.code(), "invalid_field");
    assert!(err.to_string().contains("`number`"), "{err}");
}

//! The configuration's promises: what is written reads back the same, a
//! plan shows exactly what differs and never a secret, and every bad input
//! is named by file, line and column.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE";

/// The example of the module's documentation, so it stays valid.
fn example() -> String {
    let doc = include_str!("mod.rs");
    let mut out = String::new();
    let mut inside = false;
    for line in doc.lines().filter_map(|l| l.strip_prefix("//!")) {
        let line = line.strip_prefix(' ').unwrap_or(line);
        match (inside, line.trim()) {
            (false, "```toml") => inside = true,
            (true, "```") => break,
            (true, _) => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    assert!(out.contains("[site.docs]"), "the example was found");
    out
}

fn ok(text: &str) -> PlatformConfig {
    parse("chanto.platform.toml", text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

fn errors(text: &str) -> Vec<String> {
    parse("p.toml", text).expect_err("refused").0.iter().map(ToString::to_string).collect()
}

fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.into_iter().next().unwrap()
}

fn site(c: &PlatformConfig, name: &str) -> SiteConfig {
    c.sites[&name.parse().unwrap()].clone()
}

#[test]
fn the_documented_example_reads_as_it_says() {
    let c = ok(&example());
    let docs = site(&c, "docs");
    assert_eq!(docs.keep_deploys, 20);
    assert_eq!(docs.proxy_origins, ["https://api.example.com:443"]);
    let git = docs.git.as_ref().unwrap();
    assert_eq!(git.credential, Some(GitCredential::Token(SecretRef::Env("DOCS_GIT_TOKEN".into()))));
    assert!(!git.fork_pull_requests && git.delete_branches);
    assert_eq!(docs.build.publish.as_deref(), Some("dist"));
    assert_eq!(docs.env["NODE_VERSION"], EnvValue::Plain("20".into()));
    assert_eq!(docs.env["API_KEY"], EnvValue::Secret(SecretRef::Env("DOCS_API_KEY".into())));
    let previews = docs.access.previews.as_ref().unwrap();
    assert_eq!(previews.users["reviewer"], Password::Hash(HASH.into()));
    assert_eq!(previews.users["ann"], Password::Secret(SecretRef::Env("DOCS_ANN_PASSWORD".into())));
    assert_eq!(docs.branches.len(), 2);
    assert_eq!(docs.domains.len(), 3);
    assert!(docs.domains[&"docs.example.com".parse().unwrap()].primary);
    let Channel::Email { smtp, .. } = &docs.notify["mail"].channel else { panic!("email") };
    assert_eq!((smtp.port, smtp.security), (587, SmtpSecurity::Starttls));
    let Channel::Forge { context, .. } = &docs.notify["statuses"].channel else { panic!("forge") };
    assert_eq!(context, "chanto/docs");
    assert_eq!(
        c.references().iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "env:DOCS_ANN_PASSWORD",
            "env:DOCS_API_KEY",
            "env:DOCS_GITHUB_TOKEN",
            "env:DOCS_GIT_TOKEN",
            "env:DOCS_HOOK_URL",
            "env:DOCS_SLACK_URL",
            "env:SMTP_PASSWORD",
            "file:secrets/hook-signing-key",
        ]
    );
    let keys: Vec<String> = c.secrets().into_iter().map(|s| s.key).collect();
    assert!(keys.contains(&r#"site.docs.access["previews"].users["ann"]"#.to_owned()), "{keys:#?}");
    assert!(keys.contains(&r#"site.docs.env["API_KEY"].value"#.to_owned()), "{keys:#?}");
}

#[test]
fn rendering_reads_back_the_same_and_is_a_fixed_point() {
    let c = ok(&example());
    let text = render(&c);
    assert_eq!(ok(&text), c, "{text}");
    assert_eq!(render(&ok(&text)), text);
    assert!(!text.contains('#'), "no comments");
}

#[test]
fn equal_configurations_plan_nothing() {
    let c = ok(&example());
    let p = plan(&c, &c, &PlanInputs::default());
    assert!(p.is_empty());
    assert_eq!(p.exit_code(), 0);
    assert_eq!(p.render_text(), "No changes. The live configuration matches the file.\n");
    // export → plan: the exported text against what it was exported from.
    assert!(plan(&c, &ok(&render(&c)), &PlanInputs::default()).is_empty());
}

#[test]
fn one_changed_field_is_exactly_one_change() {
    let live = ok(&example());
    let desired = ok(&example().replace("keep_deploys = 20", "keep_deploys = 10"));
    let mut inputs = PlanInputs::default();
    inputs.versions.insert("site.docs".into(), "1700000000000".into());
    let p = plan(&live, &desired, &inputs);
    assert_eq!(
        p.changes,
        [Change {
            address: "site.docs".into(),
            site: "docs".into(),
            action: Action::Update,
            version: Some("1700000000000".into()),
            requires_allow_destroy: false,
            fields: vec![FieldChange {
                field: "keep_deploys".into(),
                before: Some("20".into()),
                after: Some("10".into()),
                sensitive: false,
                note: None,
            }],
        }]
    );
    assert_eq!(p.exit_code(), 2);
    let text = p.render_text();
    assert!(text.contains("  ~ site.docs\n      keep_deploys = 20 -> 10\n"), "{text}");
    assert!(text.ends_with("Plan: 0 to add, 1 to change, 0 to destroy.\n"), "{text}");
}

#[test]
fn a_profile_set_changed_and_cleared_is_one_field_each() {
    let live = ok(&example());
    let changed = ok(&example().replace("profile = \"netlify\"", "profile = \"amplify\""));
    let cleared =
        ok(&example().lines().filter(|l| !l.starts_with("profile =")).map(|l| format!("{l}\n")).collect::<String>());
    let fields = |a: &PlatformConfig, b: &PlatformConfig| {
        let p = plan(a, b, &PlanInputs::default());
        assert_eq!(p.changes.len(), 1, "{}", p.render_text());
        p.changes[0].fields.iter().map(|f| (f.field.clone(), f.before.clone(), f.after.clone())).collect::<Vec<_>>()
    };
    let q = |s: &str| Some(format!("\"{s}\""));
    assert_eq!(fields(&live, &changed), [("profile".to_owned(), q("netlify"), q("amplify"))]);
    assert_eq!(fields(&live, &cleared), [("profile".to_owned(), q("netlify"), None)]);
    assert_eq!(fields(&cleared, &live), [("profile".to_owned(), None, q("netlify"))]);
}

#[test]
fn apply_then_export_gives_the_edited_file() {
    let exported = render(&ok(&example()));
    let edited = exported.replace("preview_retention_days = 7", "preview_retention_days = 3");
    assert_ne!(edited, exported);
    let live = ok(&exported);
    let desired = ok(&edited);
    let p = plan(&live, &desired, &PlanInputs::default());
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].address, "site.docs.git");
    // Applying makes the live configuration the desired one; export writes it.
    assert_eq!(render(&desired), edited);
    assert!(plan(&desired, &ok(&render(&desired)), &PlanInputs::default()).is_empty());
}

#[test]
fn nested_resources_change_by_address() {
    let live = ok(&example());
    let exported = render(&live);
    let text = exported
        .replace("NODE_VERSION = \"20\"", "NODE_VERSION = \"22\"")
        .replace("\n[site.docs.domains.\"staging.example.com\"]\nprimary = false\nbranch = \"staging\"\n", "")
        .replace("channel = \"slack\"", "channel = \"discord\"");
    let p = plan(&live, &ok(&text), &PlanInputs::default());
    let got: Vec<(&str, Action)> = p.changes.iter().map(|c| (c.address.as_str(), c.action)).collect();
    assert_eq!(
        got,
        [
            (r#"site.docs.env["NODE_VERSION"]"#, Action::Update),
            (r#"site.docs.domain["staging.example.com"]"#, Action::Destroy),
            (r#"site.docs.notify["slack-main"]"#, Action::Update),
        ]
    );
    assert!(p.has_destroys() && p.changes[1].requires_allow_destroy);
    assert_eq!(p.summary, Summary { add: 0, change: 2, destroy: 1 });
    assert!(p.render_text().contains("  - site.docs.domain[\"staging.example.com\"]  (needs --allow-destroy)\n"));
}

#[test]
fn a_site_left_out_is_one_destroy_and_a_new_one_is_created_whole() {
    let two = format!("{}\n[site.blog]\n\n[site.blog.domains.\"blog.example.org\"]\n", example());
    let one = example();
    let p = plan(&ok(&two), &ok(&one), &PlanInputs::default());
    assert_eq!(p.changes.len(), 1, "{:#?}", p.changes);
    assert_eq!((p.changes[0].address.as_str(), p.changes[0].action), ("site.blog", Action::Destroy));
    assert!(p.changes[0].requires_allow_destroy);
    assert!(p.render_text().ends_with("Plan: 0 to add, 0 to change, 1 to destroy.\n"));

    let mut inputs = PlanInputs::default();
    inputs.versions.insert("site.docs".into(), "7".into());
    let p = plan(&ok(&one), &ok(&two), &inputs);
    let got: Vec<(&str, Action, Option<&str>)> =
        p.changes.iter().map(|c| (c.address.as_str(), c.action, c.version.as_deref())).collect();
    assert_eq!(
        got,
        [("site.blog", Action::Create, None), (r#"site.blog.domain["blog.example.org"]"#, Action::Create, None)]
    );
    assert!(!p.has_destroys());
}

#[test]
fn a_secret_changes_by_reference_or_by_fingerprint_and_is_never_shown() {
    let live = ok(&example());
    let key = r#"site.docs.env["API_KEY"].value"#.to_owned();
    let pw = r#"site.docs.access["previews"].users["ann"]"#.to_owned();
    let mut inputs = PlanInputs::default();
    inputs.live_fingerprints.insert(key.clone(), "fp-live-1111".into());
    inputs.desired_fingerprints.insert(key.clone(), "fp-live-1111".into());
    assert!(plan(&live, &live, &inputs).is_empty(), "same value, same reference");

    inputs.desired_fingerprints.insert(key.clone(), "fp-new-2222".into());
    inputs.live_fingerprints.insert(pw.clone(), "fp-pw-3333".into());
    inputs.desired_fingerprints.insert(pw, "fp-pw-4444".into());
    let p = plan(&live, &live, &inputs);
    assert_eq!(p.changes.len(), 2, "{:#?}", p.changes);
    let f = &p.changes[0].fields[0];
    assert_eq!(p.changes[0].address, r#"site.docs.env["API_KEY"]"#);
    assert_eq!((f.before.as_deref(), f.after.as_deref(), f.sensitive), (Some(SENSITIVE), Some(SENSITIVE), true));
    assert_eq!(f.note.as_deref(), Some("value behind env:DOCS_API_KEY changed"));

    // A new reference, and a hash replaced by a reference.
    let edited = example()
        .replace("env:DOCS_API_KEY", "file:/run/secrets/api-key")
        .replace(&format!("reviewer = \"{HASH}\""), "reviewer = \"env:REVIEWER_PW\"");
    let p = plan(&live, &ok(&edited), &PlanInputs::default());
    let notes: Vec<&str> = p.changes.iter().flat_map(|c| &c.fields).filter_map(|f| f.note.as_deref()).collect();
    assert_eq!(notes, ["env:DOCS_API_KEY -> file:/run/secrets/api-key", "an argon2id hash -> env:REVIEWER_PW"]);

    for output in
        [p.render_text(), p.to_json(), plan(&live, &live, &inputs).to_json(), plan(&live, &live, &inputs).render_text()]
    {
        assert!(!output.contains(HASH) && !output.contains("LXEWQrcms"), "no hash: {output}");
        assert!(!output.contains("fp-"), "no fingerprint: {output}");
        assert!(output.contains(SENSITIVE), "{output}");
    }
    // A whole new site's secrets are masked too.
    let p = plan(&PlatformConfig::default(), &live, &PlanInputs::default());
    let text = p.render_text() + &p.to_json();
    assert!(!text.contains(HASH) && text.contains("reviewer\"] = (sensitive)"), "{text}");
}

#[test]
fn versions_fall_back_to_the_site() {
    let live = ok(&example());
    let desired = ok(&example()
        .replace("NODE_VERSION = \"20\"", "NODE_VERSION = \"22\"")
        .replace("keep_deploys = 20", "keep_deploys = 1"));
    let mut inputs = PlanInputs::default();
    inputs.versions.insert("site.docs".into(), "s1".into());
    inputs.versions.insert(r#"site.docs.env["NODE_VERSION"]"#.into(), "e9".into());
    let p = plan(&live, &desired, &inputs);
    let got: Vec<Option<&str>> = p.changes.iter().map(|c| c.version.as_deref()).collect();
    assert_eq!(got, [Some("s1"), Some("e9")]);
}

#[test]
fn the_json_forms_are_stable_and_a_saved_plan_reads_back() {
    let live = ok(&example());
    let desired = ok(&example().replace("keep_deploys = 20", "keep_deploys = 10"));
    let inputs = PlanInputs::default();
    let p = plan(&live, &desired, &inputs);
    let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "format_version": 1,
            "changes": [{
                "address": "site.docs", "site": "docs", "action": "update", "version": null,
                "requires_allow_destroy": false,
                "fields": [{"field": "keep_deploys", "before": "20", "after": "10", "sensitive": false, "note": null}]
            }],
            "summary": {"add": 0, "change": 1, "destroy": 0}
        })
    );
    let saved = SavedPlan::new(p.clone(), &desired, &inputs);
    let back = SavedPlan::from_json(&saved.to_json()).unwrap();
    assert_eq!(back, saved);
    assert_eq!(back.desired().unwrap(), desired);
    let old = saved.to_json().replacen("\"format_version\": 1", "\"format_version\": 9", 1);
    assert!(SavedPlan::from_json(&old).unwrap_err().contains("format version 9"));
}

#[test]
fn every_secret_key_is_the_one_plans_compare() {
    let c = ok(&example());
    let uses = c.secrets();
    assert_eq!(uses.len(), 8, "{uses:#?}");
    for u in uses {
        let mut inputs = PlanInputs::default();
        inputs.live_fingerprints.insert(u.key.clone(), "a".into());
        inputs.desired_fingerprints.insert(u.key.clone(), "b".into());
        let p = plan(&c, &c, &inputs);
        let notes: Vec<(&str, Option<&str>)> = p
            .changes
            .iter()
            .flat_map(|ch| ch.fields.iter().map(move |f| (ch.address.as_str(), f.note.as_deref())))
            .collect();
        let want = format!("value behind {} changed", u.reference);
        assert_eq!(notes.len(), 1, "{}: {notes:?}", u.key);
        assert!(u.key.starts_with(notes[0].0) && notes[0].1 == Some(want.as_str()), "{}: {notes:?}", u.key);
    }
}

#[test]
fn a_saved_plan_applies_only_what_nothing_changed_under() {
    let live = ok(&example());
    let edited = example()
        .replace("keep_deploys = 20", "keep_deploys = 10")
        .replace("NODE_VERSION = \"20\"", "NODE_VERSION = \"22\"");
    let desired = ok(&edited);
    let key = r#"site.docs.env["API_KEY"].value"#.to_owned();
    let mut inputs = PlanInputs::default();
    inputs.versions.insert("site.docs".into(), "1".into());
    inputs.versions.insert(r#"site.docs.env["NODE_VERSION"]"#.into(), "5".into());
    inputs.desired_fingerprints.insert(key.clone(), "k1".into());
    let saved = SavedPlan::new(plan(&live, &desired, &inputs), &desired, &inputs);
    assert_eq!(saved.plan.changes.len(), 2);

    // Nothing changed: all of it.
    let fresh = plan(&live, &desired, &inputs);
    assert_eq!(saved.remaining(&fresh, &inputs).unwrap(), saved.plan.changes);

    // Half applied (the site's retention), then stopped: the rest.
    let mut half = live.clone();
    half.sites.get_mut(&"docs".parse().unwrap()).unwrap().keep_deploys = 10;
    let mut now = inputs.clone();
    now.versions.insert("site.docs".into(), "2".into());
    let left = saved.remaining(&plan(&half, &desired, &now), &now).unwrap();
    assert_eq!(left.iter().map(|c| c.address.as_str()).collect::<Vec<_>>(), [r#"site.docs.env["NODE_VERSION"]"#]);

    // Someone changed the variable meanwhile: refused, naming it.
    let mut now = inputs.clone();
    now.versions.insert(r#"site.docs.env["NODE_VERSION"]"#.into(), "6".into());
    let e = saved.remaining(&plan(&live, &desired, &now), &now).unwrap_err();
    assert_eq!(e[0], r#"site.docs.env["NODE_VERSION"] is at version 6 now, not 5 as planned"#);

    // A change the plan did not show.
    let mut other = live.clone();
    other.sites.get_mut(&"docs".parse().unwrap()).unwrap().https.redirect = false;
    let e = saved.remaining(&plan(&other, &desired, &inputs), &inputs).unwrap_err();
    assert_eq!(e[0], "site.docs changed since the plan was made");

    // The secret's value changed after planning.
    let mut now = inputs.clone();
    now.desired_fingerprints.insert(key, "k2".into());
    let e = saved.remaining(&plan(&live, &desired, &now), &now).unwrap_err();
    assert!(e[0].contains(r#"site.docs.env["API_KEY"].value resolves to another value"#), "{e:?}");
}

#[test]
fn bad_input_is_named_by_file_line_and_column() {
    let cases: &[(&str, &str)] = &[
        // unknown key, with the keys that exist
        (
            "[site.docs]\nkeep_deploy = 3\n",
            "p.toml:2:1: unknown key `keep_deploy` in [site.docs]; the keys here are: production_branch,",
        ),
        ("colour = 1\n", "p.toml:1:1: unknown key `colour` in the top level"),
        (
            "[site.docs.git]\nrepository = \"https://x.example/r.git\"\nbranch = \"main\"\n",
            "p.toml:3:1: unknown key `branch` in [site.docs.git]",
        ),
        // wrong type
        (
            "[site.docs]\nkeep_deploys = \"20\"\n",
            "p.toml:2:16: site.docs.keep_deploys must be a number, not a string; write site.docs.keep_deploys = 0 (no quotes)",
        ),
        (
            "[site.docs.https]\nredirect = 1\n",
            "p.toml:2:12: site.docs.https.redirect must be true or false, not an integer",
        ),
        (
            "[site.docs]\nprofile = \"vercel\"\n",
            "p.toml:2:11: site.docs.profile: unknown profile \"vercel\"; use one of: chanto, netlify, amplify, firebase",
        ),
        (
            "[site.docs]\nkeep_deploys = 10001\n",
            "p.toml:2:16: site.docs.keep_deploys must be a whole number from 0 to 10000",
        ),
        // invalid names
        (
            "[site.Docs]\n",
            "p.toml:1:7: site.\"Docs\": \"Docs\" is not a valid site name: uppercase letters are not allowed; try \"docs\"",
        ),
        (
            "[site.docs]\nproduction_branch = \"a..b\"\n",
            "p.toml:2:21: site.docs.production_branch: branch name \"a..b\" contains",
        ),
        ("[site.docs.domains.\"exa mple.com\"]\n", "p.toml:1:20: site.docs.domains: "),
        ("[site.docs.domains.\"co.uk\"]\n", "p.toml:1:20: site.docs.domains: co.uk is a public suffix"),
        ("[site.docs.env]\n1X = \"a\"\n", "p.toml:2:1: site.docs.env: "),
        (
            "[site.docs.notify.Slack]\nchannel = \"slack\"\nurl = \"env:U\"\n",
            "p.toml:1:19: site.docs.notify: \"Slack\" is not a subscription name",
        ),
        // bad secret references
        (
            "[site.docs.env]\nK = { secret = \"env:\" }\n",
            "p.toml:2:16: site.docs.env.K.secret: env:\"\" does not name an environment variable",
        ),
        (
            "[site.docs.env]\nK = { secret = \"file:../../etc/shadow\" }\n",
            "p.toml:2:16: site.docs.env.K.secret: file:../../etc/shadow climbs out of the configuration's directory",
        ),
        (
            "[site.docs.env]\nK = { secret = \"hunter2\" }\n",
            "p.toml:2:16: site.docs.env.K.secret: a secret is a reference, never the value",
        ),
        (
            "[site.docs.access.site]\nusers = { ann = \"hunter2\" }\n",
            "p.toml:2:17: site.docs.access.site.users.ann: a password is an argon2id hash",
        ),
        (
            "[site.docs.access.site]\nusers = { ann = \"$argon2id$v=19$m=4096,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE\" }\n",
            "p.toml:2:17: site.docs.access.site.users.ann: its parameters are m=4096,t=3,p=1",
        ),
        (
            "[site.docs.git]\nrepository = \"https://x.example/r.git\"\ntoken = \"ghp_abc\"\n",
            "p.toml:3:9: site.docs.git.token: a secret is a reference",
        ),
        // rules across keys
        (
            "[site.docs.git]\nrepository = \"https://u:p@x.example/r.git\"\n",
            "p.toml:2:14: site.docs.git.repository: put the credential in token",
        ),
        ("[site.docs.build]\ncommand = \"make\"\n", "p.toml:1:12: [site.docs.build] is used by git builds"),
        (
            "[site.docs.access.site]\nallow = [\"10.0.0.0/33\"]\n",
            "p.toml:2:10: site.docs.access.site.allow[0]: \"10.0.0.0/33\" is not a network",
        ),
        (
            "[site.docs.notify.s]\nchannel = \"slack\"\nurl = \"env:U\"\nto = [\"a@example.com\"]\n",
            "p.toml:4:1: site.docs.notify.s: to does not apply to slack subscriptions",
        ),
        (
            "[site.docs.notify.s]\nchannel = \"slack\"\nurl = \"env:U\"\nevents = [\"deploy.done\"]\n",
            "p.toml:4:11: site.docs.notify.s.events[0]: ",
        ),
        (
            "[site.docs.domains.\"a.example.com\"]\nprimary = true\n[site.docs.domains.\"b.example.com\"]\nprimary = true\n",
            "p.toml:3:20: site.docs.domains: a.example.com is already the primary domain",
        ),
        (
            "[site.docs.domains.\"A.example.com\"]\n[site.docs.domains.\"a.example.com\"]\n",
            "p.toml:2:20: site.docs.domains: a.example.com is already declared for this site at p.toml:1:20",
        ),
        (
            "[site.a.domains.\"x.example.com\"]\n[site.b.domains.\"x.example.com\"]\n",
            "p.toml:2:17: site.b.domains: x.example.com is already declared for site a at p.toml:1:17",
        ),
        // TOML itself
        ("[site.docs]\nkeep_deploys = 1\nkeep_deploys = 2\n", "p.toml:3:1: "),
        ("[site.docs\n", "p.toml:1:"),
    ];
    let mut failures = Vec::new();
    for (text, want) in cases {
        let got = errors(text);
        if got.len() != 1 || !got[0].starts_with(want) {
            failures.push(format!("input:\n{text}want: {want}\ngot:  {got:#?}\n"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let text = "[site.docs]\nkeep_deploys = \"x\"\nbogus = 1\n[site.docs.env]\nK = { secret = \"env:\" }\n";
    let got = errors(text);
    let at: Vec<&str> = got.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(at, ["p.toml:2:16", "p.toml:3:1", "p.toml:5:16"], "{got:#?}");
}

#[test]
fn a_site_in_two_files_names_both() {
    let e = parse_files(&[("a.toml", "[site.docs]\n"), ("b.toml", "\n[site.blog]\n[site.docs]\nkeep_deploys = 1\n")])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "b.toml:3:7: site docs is already declared at a.toml:1:7; declare each site in one file only"
    );
    let merged = parse_files(&[("a.toml", "[site.docs]\n"), ("b.toml", "[site.blog]\n")]).unwrap();
    assert_eq!(merged.sites.len(), 2);
}

#[test]
fn oversized_input_is_refused_plainly() {
    let big = format!("[site.docs]\n#{}\n", "x".repeat(MAX_FILE_BYTES));
    assert_eq!(
        one_error(&big),
        format!(
            "p.toml:1:1: the file is {} bytes; a configuration file holds at most {MAX_FILE_BYTES} (1 MiB): split it into a directory of files",
            big.len()
        )
    );
    let mut env = String::from("[site.docs.env]\n");
    for i in 0..=MAX_ENTRIES {
        env.push_str(&format!("V{i} = \"x\"\n"));
    }
    assert!(one_error(&env).starts_with("p.toml:1:1: site.docs.env has 1001 variables; at most 1000"));
    let many: String = (0..500).map(|i| format!("[site.s{i}]\nbad = 1\n")).collect();
    let e = parse("p.toml", &many).unwrap_err().0;
    assert_eq!(e.len(), MAX_ERRORS + 1);
    assert_eq!(e[MAX_ERRORS].to_string(), "p.toml:200:1: 400 more errors after this one are not shown");
    let sites: String = (0..=MAX_SITES).map(|i| format!("[site.s{i}]\n")).collect();
    assert_eq!(one_error(&sites), "p.toml:1001:7: more than 1000 sites; a configuration declares at most 1000");
    let files: Vec<(String, String)> = (0..=MAX_FILES).map(|i| (format!("{i}.toml"), String::new())).collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert!(parse_files(&refs).unwrap_err().to_string().contains("257 files; a configuration has at most 256"));
}

#[test]
fn deep_nesting_is_refused_without_a_crash() {
    for text in
        [format!("a = {}", "[".repeat(200_000)), format!("a = {}", "{ b = ".repeat(100_000)), "[a]\n".repeat(100_000)]
    {
        let _ = parse("p.toml", &text).expect_err("refused");
    }
}

// Generated configurations: whatever is rendered reads back equal.

fn secret_ref() -> impl Strategy<Value = SecretRef> {
    prop_oneof![
        "[A-Z_][A-Z0-9_]{0,12}".prop_map(SecretRef::Env),
        "(/run/secrets/)?[a-z0-9 ._-]{1,12}".prop_filter_map("no ..", |p| SecretRef::parse(&format!("file:{p}")).ok()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,16}"
}

fn nets() -> impl Strategy<Value = Vec<ipnet::IpNet>> {
    prop::collection::vec(
        (any::<u32>(), 0u8..=32).prop_map(|(a, p)| ipnet::IpNet::V4(ipnet::Ipv4Net::new(a.into(), p).unwrap())),
        0..3,
    )
}

fn access() -> impl Strategy<Value = AccessConfig> {
    let password = prop_oneof![Just(Password::Hash(HASH.into())), secret_ref().prop_map(Password::Secret)];
    (prop::collection::btree_map("[a-zA-Z0-9 ._@-]{1,8}", password, 0..3), nets(), nets(), any::<bool>())
        .prop_map(|(users, allow, deny, allow_preflight)| AccessConfig { users, allow, deny, allow_preflight })
}

fn env() -> impl Strategy<Value = BTreeMap<String, EnvValue>> {
    let value = prop_oneof![text().prop_map(EnvValue::Plain), secret_ref().prop_map(EnvValue::Secret)];
    prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", value, 0..4)
}

fn branch() -> impl Strategy<Value = chanto_core::BranchName> {
    "[a-z0-9][a-z0-9/._-]{0,10}".prop_filter_map("a git branch name", |s| s.parse().ok())
}

fn git() -> impl Strategy<Value = GitConfig> {
    let credential = prop::option::of(prop_oneof![
        secret_ref().prop_map(GitCredential::Token),
        secret_ref().prop_map(GitCredential::SshKey)
    ]);
    (
        "https://[a-z]{1,8}\\.example/[a-z/]{1,10}\\.git",
        credential,
        prop::option::of("[a-z0-9_-]{1,8}"),
        prop::collection::vec("[a-z]{1,6}/\\*\\*?", 0..3),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<u32>()),
        prop::option::of(10u64..=i64::MAX as u64),
        prop::option::of(1u64..=86_400),
        prop::option::of("[a-z]{1,8}(/[a-z._-]{1,8})?(\\.toml)?"),
    )
        .prop_map(|(repository, credential, username, globs, (d, p, f, days), poll, timeout, platform_config)| {
            GitConfig {
                repository,
                credential,
                username,
                include: globs.clone(),
                exclude: globs.into_iter().rev().take(1).collect(),
                delete_branches: d,
                pull_request_previews: p,
                fork_pull_requests: f,
                preview_retention_days: days,
                poll_interval_secs: poll,
                timeout_secs: timeout,
                platform_config,
            }
        })
}

fn subscription() -> impl Strategy<Value = Subscription> {
    let channel = prop_oneof![
        (secret_ref(), secret_ref()).prop_map(|(url, secret)| Channel::Webhook { url, secret }),
        secret_ref().prop_map(|url| Channel::Slack { url }),
        secret_ref().prop_map(|url| Channel::Discord { url }),
        ("[a-z]{1,8}\\.example", 1u16.., prop::option::of(("[a-z]{1,6}", prop::option::of(secret_ref())))).prop_map(
            |(host, port, auth)| Channel::Email {
                smtp: Smtp {
                    host,
                    port,
                    security: SmtpSecurity::Tls,
                    username: auth.as_ref().map(|a| a.0.clone()),
                    password: auth.and_then(|a| a.1),
                },
                from: "ci@example.com".into(),
                to: vec!["b@example.org".into(), "a@example.org".into()],
            }
        ),
        (secret_ref(), prop::option::of("[a-z]{1,6}/[a-z]{1,6}"), text(), any::<bool>()).prop_map(
            |(token, repository, context, comments)| Channel::Forge {
                forge: Forge::Gitea,
                token,
                repository,
                api_url: "https://gitea.example.com/api/v1".into(),
                context: context.chars().filter(|c| !c.is_control()).collect(),
                comments,
            }
        ),
    ];
    let events = prop::sample::subsequence(
        vec![chanto_notify::EventKind::BuildFailed, chanto_notify::EventKind::DeployActivated],
        0..=2,
    );
    (events, prop::collection::vec("[a-z]{1,6}", 0..2), channel).prop_map(|(events, branches, channel)| Subscription {
        events,
        branches,
        channel,
    })
}

fn site_config() -> impl Strategy<Value = SiteConfig> {
    let domains = prop::collection::btree_map(
        "[a-z0-9]{1,8}\\.(example|test)\\.(com|org)".prop_map(|d| chanto_core::DomainName::parse(&d).unwrap()),
        (any::<bool>(), prop::option::of(branch())).prop_map(|(primary, branch)| DomainConfig { primary, branch }),
        0..3,
    );
    let branches = prop::collection::btree_map(
        branch(),
        (env(), prop::option::of(access())).prop_map(|(env, access)| BranchConfig { env, access }),
        0..3,
    );
    let build = (
        prop::option::of(text().prop_filter("not blank", |s| !s.trim().is_empty() && !s.chars().any(char::is_control))),
        prop::option::of("[a-z]{1,5}(/[a-z]{1,5})?"),
    )
        .prop_map(|(command, publish)| chanto_build::SiteBuildSettings {
            command,
            publish,
            base: None,
            app_root: None,
        });
    (
        (branch(), 0u32..=10_000, prop::collection::vec("https?://[a-z]{1,6}\\.example(:[0-9]{2,4})?", 0..3)),
        (any::<bool>(), 0u64..=1_000_000, any::<bool>()),
        prop::option::of((git(), build)),
        env(),
        (prop::option::of(access()), prop::option::of(access()), branches),
        domains,
        prop::collection::btree_map("[a-z0-9][a-z0-9_-]{0,8}", subscription(), 0..3),
    )
        .prop_map(
            |(
                (production_branch, keep_deploys, origins),
                (redirect, max_age, sub),
                git,
                env,
                (s, p, branches),
                mut domains,
                notify,
            )| {
                // One primary at most.
                let mut seen = false;
                for d in domains.values_mut() {
                    if d.primary {
                        d.primary = !seen;
                        seen = true;
                    }
                }
                let (git, build) = match git {
                    Some((g, b)) => (Some(g), b),
                    None => (None, Default::default()),
                };
                SiteConfig {
                    production_branch,
                    keep_deploys,
                    // Varied by the retention, so no new strategy tuple is needed.
                    profile: chanto_rules::Profile::ALL.get(keep_deploys as usize % 5).copied(),
                    proxy_origins: origins.iter().map(|o| chanto_core::normalize_origin(o).unwrap()).collect(),
                    https: HttpsConfig {
                        redirect,
                        hsts_max_age: max_age,
                        hsts_include_subdomains: sub,
                        hsts_preload: false,
                    },
                    git,
                    build,
                    env,
                    access: SiteAccess { site: s, previews: p },
                    branches,
                    domains,
                    notify,
                }
            },
        )
}

fn platform() -> impl Strategy<Value = PlatformConfig> {
    prop::collection::btree_map("[a-z0-9]{1,6}(-[a-z0-9]{1,6})?".prop_map(|s| s.parse().unwrap()), site_config(), 0..3)
        .prop_map(|sites| {
            let mut c = PlatformConfig { sites };
            // A domain belongs to one site.
            let mut seen = std::collections::BTreeSet::new();
            for s in c.sites.values_mut() {
                s.domains.retain(|d, _| seen.insert(d.clone()));
            }
            c.normalize();
            c
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rendered_configurations_read_back_equal(c in platform()) {
        let text = render(&c);
        let back = parse("gen.toml", &text).map_err(|e| TestCaseError::fail(format!("{e}\n---\n{text}")))?;
        prop_assert_eq!(&back, &c, "{}", text);
        prop_assert!(plan(&c, &back, &PlanInputs::default()).is_empty());
    }

    #[test]
    fn any_text_is_read_or_refused_without_panicking(text in "[\\[\\]a-z.=\"{} 0-9\n:_-]{0,200}") {
        let _ = parse("fuzz.toml", &text);
    }
}

#[test]
fn the_plan_text_reads_like_terraform() {
    let live = ok("[site.docs]\nkeep_deploys = 20\n[site.docs.env]\nAPI_KEY = { secret = \"env:A\" }\n[site.old]\n");
    let desired = ok(concat!(
        "[site.docs]\nkeep_deploys = 10\n[site.docs.env]\nAPI_KEY = { secret = \"env:B\" }\n",
        "[site.blog]\n[site.blog.domains.\"blog.example.org\"]\nprimary = true\n",
    ));
    let text = plan(&live, &desired, &PlanInputs::default()).render_text();
    assert_eq!(
        text,
        r#"chanto will make these changes:

  + site.blog
      production_branch             = "main"
      keep_deploys                  = 0
      proxy_origins                 = []
      https.redirect                = true
      https.hsts_max_age            = 0
      https.hsts_include_subdomains = false
      https.hsts_preload            = false

  + site.blog.domain["blog.example.org"]
      primary = true

  ~ site.docs
      keep_deploys = 20 -> 10

  ~ site.docs.env["API_KEY"]
      value = (sensitive) -> (sensitive)  # env:A -> env:B

  - site.old  (needs --allow-destroy)
      production_branch             = "main"
      keep_deploys                  = 0
      proxy_origins                 = []
      https.redirect                = true
      https.hsts_max_age            = 0
      https.hsts_include_subdomains = false
      https.hsts_preload            = false

Plan: 2 to add, 2 to change, 1 to destroy.
"#
    );
}

#[test]
fn a_platform_config_site_is_declared_read_back_and_planned() {
    let text = "[site.infra]\n\n[site.infra.git]\nrepository = \"https://x.example/infra.git\"\nplatform_config = \"platform/chanto.platform.toml\"\n";
    let c = ok(text);
    let git = site(&c, "infra").git.unwrap();
    assert_eq!(git.platform_config.as_deref(), Some("platform/chanto.platform.toml"));
    let rendered = render(&c);
    assert!(rendered.contains("platform_config = \"platform/chanto.platform.toml\"\n"), "{rendered}");
    assert_eq!(ok(&rendered), c, "reads back the same");
    // Off by default, and not written then.
    let plain = ok("[site.infra.git]\nrepository = \"https://x.example/infra.git\"\n");
    assert_eq!(site(&plain, "infra").git.unwrap().platform_config, None);
    assert!(!render(&plain).contains("platform_config"));
    // A change of it is one field of the git connection.
    let p = plan(&plain, &c, &PlanInputs::default());
    assert_eq!(p.changes.len(), 1, "{p:#?}");
    assert_eq!(p.changes[0].address, "site.infra.git");
    let f: Vec<&str> = p.changes[0].fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(f, ["platform_config"]);
    // A path out of the repository, or not a string, is named by line and column.
    for (value, col) in
        [("\"/etc/chanto.toml\"", 19), ("\"../x.toml\"", 19), ("\"a/../../x\"", 19), ("\"\"", 19), ("3", 19)]
    {
        let e = one_error(&format!(
            "[site.infra.git]\nrepository = \"https://x.example/i.git\"\nplatform_config = {value}\n"
        ));
        assert!(e.starts_with(&format!("p.toml:3:{col}: site.infra.git.platform_config")), "{value}: {e}");
    }
}

//! Slack incoming-webhook bodies: a plain fallback `text` plus a coloured attachment of mrkdwn blocks.

use serde_json::{Value, json};

use crate::text::{duration, first_line, safe_url, short_commit, slack_escape, slack_link, truncate};
use crate::{Event, Outcome};

/// The attachment colour: Slack's named `good`/`danger`, else a hex colour.
fn color(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "good",
        Outcome::Failure => "danger",
        Outcome::Neutral | Outcome::Pending => outcome.color_hex(),
    }
}

/// The JSON body to `POST` to a Slack incoming webhook.
///
/// User-controlled text is shortened (so each block stays well under Slack's 3000-character limit) and escaped
/// (`&`, `<`, `>`), which also stops `<!channel>` mentions and forged links.
pub fn slack_body(e: &Event) -> Value {
    let title = e.kind.title();
    let site = slack_escape(&truncate(&e.site, 80));
    let branch = slack_escape(&truncate(&e.branch, 80));
    let heading = match e.primary_url() {
        Some(url) => slack_link(url, title),
        None => title.to_owned(),
    };
    let mut main = match &e.domain {
        Some(domain) => format!("*{heading}* · {site} / {}", slack_escape(&truncate(domain, 260))),
        None => format!("*{heading}* · {site} / {branch}"),
    };
    if let Some(pr) = e.pull_request {
        main.push_str(&format!(" · PR #{pr}"));
    }
    let mut commit_line = Vec::new();
    if let Some(commit) = &e.commit {
        commit_line.push(format!("`{}`", slack_escape(short_commit(commit))));
    }
    if let Some(subject) = e.message.as_deref().map(first_line).filter(|s| !s.is_empty()) {
        commit_line.push(slack_escape(&truncate(subject, 200)));
    }
    if let Some(author) = &e.author {
        commit_line.push(format!("by {}", slack_escape(&truncate(author, 80))));
    }
    if !commit_line.is_empty() {
        main.push('\n');
        main.push_str(&commit_line.join(" "));
    }
    if let Some(expiry) = e.expiry_text() {
        main.push_str(&format!("\nExpires {expiry}"));
    }

    let mut blocks = vec![json!({ "type": "section", "text": { "type": "mrkdwn", "text": main } })];
    if let Some(error) = e.error.as_deref().filter(|s| !s.trim().is_empty()) {
        // Fences inside the text would end the code block early.
        let error = slack_escape(&truncate(error, 500)).replace("```", "'''");
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": format!("```{error}```") } }));
    }
    if let Some(hint) = e.hint.as_deref().filter(|s| !s.trim().is_empty()) {
        let hint = slack_escape(&truncate(hint, 500));
        blocks
            .push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": format!("*What to do:* {hint}") } }));
    }
    let mut context = Vec::new();
    if let Some(ms) = e.duration_ms {
        context.push(format!("Took {}", duration(ms)));
    }
    for (url, text) in [(&e.urls.log, "Build log"), (&e.urls.branch, "Open site"), (&e.urls.permalink, "Permalink")] {
        if let Some(url) = url.as_deref().and_then(safe_url) {
            context.push(slack_link(url, text));
        }
    }
    if !context.is_empty() {
        blocks.push(json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": context.join(" · ") }] }));
    }

    let fallback = slack_escape(&truncate(&e.headline(), 300));
    json!({
        "text": fallback,
        "attachments": [{ "color": color(e.kind.outcome()), "fallback": fallback, "blocks": blocks }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;
    use crate::fixtures::{certificate, event, hostile_certificate, hostile_failure};

    fn all_text(body: &Value) -> String {
        let blocks = body["attachments"][0]["blocks"].as_array().unwrap();
        blocks.iter().map(|b| format!("{}{}", b["text"]["text"], b["elements"][0]["text"])).collect()
    }

    #[test]
    fn succeeded_build() {
        let body = slack_body(&event(EventKind::BuildSucceeded));
        assert_eq!(body["text"], "Build succeeded: blog / main");
        let attachment = &body["attachments"][0];
        assert_eq!(attachment["color"], "good");
        let main = attachment["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(attachment["blocks"][0]["text"]["type"], "mrkdwn");
        assert_eq!(
            main,
            "*<https://d-7.blog.example.org/|Build succeeded>* · blog / main\n`0123456` Fix typo in about page by Ada \
             Lovelace"
        );
        let context = attachment["blocks"][1]["elements"][0]["text"].as_str().unwrap();
        assert_eq!(
            context,
            "Took 1 min 02 s · <https://chanto.example.org/sites/blog/builds/b_42/log|Build log> · \
             <https://main.blog.example.org/|Open site> · <https://d-7.blog.example.org/|Permalink>"
        );
    }

    #[test]
    fn failed_build_with_hostile_text() {
        let body = slack_body(&hostile_failure());
        let attachment = &body["attachments"][0];
        assert_eq!(attachment["color"], "danger");
        let main = attachment["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(main.starts_with("*<https://chanto.example.org/sites/blog/builds/b_42/log|Build failed>*"), "{main}");
        assert!(main.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;!channel&gt; @everyone"), "{main}");
        let error = attachment["blocks"][1]["text"]["text"].as_str().unwrap();
        assert_eq!(error, "```npm ERR! &lt;b&gt;exit 1&lt;/b&gt; &amp; '''```");
        let text = all_text(&body);
        assert!(!text.contains("<script") && !text.contains("<!channel"), "{text}");
    }

    #[test]
    fn neutral_and_pending_colours_and_no_links() {
        let mut e = event(EventKind::BuildCancelled);
        e.urls = Default::default();
        e.message = None;
        e.commit = None;
        e.author = None;
        e.duration_ms = None;
        let body = slack_body(&e);
        assert_eq!(body["attachments"][0]["color"], "#9f9f9f");
        assert_eq!(body["attachments"][0]["blocks"].as_array().unwrap().len(), 1);
        assert_eq!(body["attachments"][0]["blocks"][0]["text"]["text"], "*Build cancelled* · blog / main");
        assert_eq!(slack_body(&event(EventKind::BuildStarted))["attachments"][0]["color"], "#dfb317");
    }

    #[test]
    fn certificate_events_name_the_domain_reason_and_what_to_do() {
        let body = slack_body(&certificate(EventKind::CertificateFailed));
        assert_eq!(body["text"], "Certificate failed: blog / example.com");
        let attachment = &body["attachments"][0];
        assert_eq!(attachment["color"], "danger");
        assert_eq!(attachment["blocks"][0]["text"]["text"], "*Certificate failed* · blog / example.com");
        assert_eq!(attachment["blocks"][1]["text"]["text"], "```could not reach the ACME CA: connection refused```");
        let hint = attachment["blocks"][2]["text"]["text"].as_str().unwrap();
        assert!(hint.starts_with("*What to do:* chanto tries again in 1m (attempt 1)"), "{hint}");
        assert_eq!(attachment["blocks"].as_array().unwrap().len(), 3, "no links, no context");

        let body = slack_body(&certificate(EventKind::CertificateExpiring));
        assert_eq!(body["attachments"][0]["color"], "#dfb317");
        assert_eq!(
            body["attachments"][0]["blocks"][0]["text"]["text"],
            "*Certificate expiring* · blog / example.com\nExpires 2024-03-10 07:08 UTC (in 5 days)"
        );
    }

    #[test]
    fn certificate_reason_and_hint_are_escaped() {
        let body = slack_body(&hostile_certificate());
        let text = all_text(&body);
        for bad in ["<b>", "<!channel", "<script"] {
            assert!(!text.contains(bad), "{bad} in {text}");
        }
        let blocks = body["attachments"][0]["blocks"].as_array().unwrap();
        assert_eq!(
            blocks[1]["text"]["text"],
            "```&lt;b&gt;boom&lt;/b&gt; &amp; &lt;!channel&gt; @everyone\n'''\n[click](https://evil.example) # heading```"
        );
        assert_eq!(
            blocks[2]["text"]["text"],
            "*What to do:* &lt;script&gt;x&lt;/script&gt; @here *bold*\r\nBcc: victim@example.org"
        );
    }

    #[test]
    fn long_text_stays_within_block_limit() {
        let mut e = hostile_failure();
        e.message = Some("&".repeat(10_000));
        e.error = Some("<".repeat(10_000));
        e.branch = ">".repeat(250);
        e.domain = Some("<".repeat(300));
        e.hint = Some("&".repeat(10_000));
        for block in slack_body(&e)["attachments"][0]["blocks"].as_array().unwrap() {
            if let Some(text) = block["text"]["text"].as_str() {
                assert!(text.chars().count() <= 3000, "{}", text.len());
            }
        }
    }
}

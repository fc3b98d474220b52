//! Discord webhook bodies: one coloured embed, kept inside Discord's documented size limits.

use serde_json::{Map, Value, json};

use crate::Event;
use crate::text::{discord_escape, duration, safe_url, short_commit, truncate, units};
use crate::time::iso8601_ms;

/// Discord's limit on an embed title.
pub const DISCORD_TITLE_MAX: usize = 256;
/// Discord's limit on an embed description.
pub const DISCORD_DESCRIPTION_MAX: usize = 4096;
/// Discord's limit on an embed field value.
pub const DISCORD_FIELD_VALUE_MAX: usize = 1024;
/// Discord's limit on all text of an embed together (title, description, field names and values, footer).
pub const DISCORD_EMBED_TOTAL_MAX: usize = 6000;

/// Short fields (site, branch, author) are kept far below the field limit, so the description keeps most of the
/// 6000-character total.
const SHORT_FIELD_MAX: usize = 256;

/// A markdown link target with the characters that would end it percent-encoded.
fn md_url(url: &str) -> String {
    url.replace('(', "%28").replace(')', "%29")
}

/// The JSON body to `POST` to a Discord webhook.
///
/// Markdown in user-controlled text is escaped, mentions are disabled (`allowed_mentions`), and every text is
/// shortened with `…` to fit Discord's limits (title 256, description 4096, field value 1024, 6000 in total).
pub fn discord_body(e: &Event) -> Value {
    let title = truncate(&e.headline(), DISCORD_TITLE_MAX);
    let footer = format!("chanto · {}", e.kind.as_str());

    let mut fields: Vec<(&str, String, bool)> = Vec::new();
    let short = |s: &str| truncate(&discord_escape(s), SHORT_FIELD_MAX);
    fields.push(("Site", short(&e.site), true));
    fields.push(("Branch", short(&e.branch), true));
    if let Some(domain) = &e.domain {
        fields.push(("Domain", short(domain), true));
    }
    if let Some(expiry) = e.expiry_text() {
        fields.push(("Expires", expiry, true));
    }
    if let Some(pr) = e.pull_request {
        fields.push(("Pull request", format!("#{pr}"), true));
    }
    if let Some(commit) = &e.commit {
        fields.push(("Commit", short(short_commit(commit)), true));
    }
    if let Some(author) = &e.author {
        fields.push(("Author", short(author), true));
    }
    if let Some(ms) = e.duration_ms {
        fields.push(("Duration", duration(ms), true));
    }
    let links: Vec<String> =
        [(&e.urls.log, "Build log"), (&e.urls.branch, "Open site"), (&e.urls.permalink, "Permalink")]
            .into_iter()
            .filter_map(|(url, text)| url.as_deref().and_then(safe_url).map(|u| format!("[{text}]({})", md_url(u))))
            .filter(|link| units(link) <= 330)
            .collect();
    if !links.is_empty() {
        fields.push(("Links", links.join(" · "), false));
    }
    if let Some(error) = e.error.as_deref().filter(|s| !s.trim().is_empty()) {
        // Markdown is not rendered inside a code block; only a fence could end it early.
        let error = truncate(&error.replace("```", "'''"), DISCORD_FIELD_VALUE_MAX - 8);
        let name = if e.domain.is_some() { "Reason" } else { "Error" };
        fields.push((name, format!("```\n{error}\n```"), false));
    }
    if let Some(hint) = e.hint.as_deref().filter(|s| !s.trim().is_empty()) {
        fields.push(("What to do", truncate(&discord_escape(hint), DISCORD_FIELD_VALUE_MAX), false));
    }
    // Discord refuses empty field values.
    fields.retain(|(_, value, _)| !value.trim().is_empty());

    let used = units(&title)
        + units(&footer)
        + fields.iter().map(|(name, value, _)| units(name) + units(value)).sum::<usize>();
    let budget = DISCORD_DESCRIPTION_MAX.min(DISCORD_EMBED_TOTAL_MAX.saturating_sub(used));

    let mut embed = Map::new();
    embed.insert("title".into(), json!(title));
    if let Some(url) = e.primary_url() {
        embed.insert("url".into(), json!(url));
    }
    if let Some(message) = e.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        embed.insert("description".into(), json!(truncate(&discord_escape(message), budget)));
    }
    embed.insert("color".into(), json!(e.kind.outcome().color_rgb()));
    let fields: Vec<Value> = fields
        .into_iter()
        .map(|(name, value, inline)| json!({ "name": name, "value": value, "inline": inline }))
        .collect();
    embed.insert("fields".into(), Value::Array(fields));
    embed.insert("footer".into(), json!({ "text": footer }));
    embed.insert("timestamp".into(), json!(iso8601_ms(e.at_ms)));

    json!({ "allowed_mentions": { "parse": [] }, "embeds": [Value::Object(embed)] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;
    use crate::fixtures::{certificate, event, hostile_certificate, hostile_failure};

    fn field<'a>(embed: &'a Value, name: &str) -> Option<&'a str> {
        embed["fields"].as_array().unwrap().iter().find(|f| f["name"] == name).and_then(|f| f["value"].as_str())
    }

    fn total(embed: &Value) -> usize {
        let s = |v: &Value| v.as_str().map_or(0, units);
        s(&embed["title"])
            + s(&embed["description"])
            + s(&embed["footer"]["text"])
            + embed["fields"].as_array().unwrap().iter().map(|f| s(&f["name"]) + s(&f["value"])).sum::<usize>()
    }

    #[test]
    fn succeeded_build() {
        let body = discord_body(&event(EventKind::BuildSucceeded));
        assert_eq!(body["allowed_mentions"]["parse"], serde_json::json!([]));
        assert!(body.get("content").is_none());
        let embed = &body["embeds"][0];
        assert_eq!(embed["title"], "Build succeeded: blog / main");
        assert_eq!(embed["url"], "https://d-7.blog.example.org/");
        assert_eq!(embed["color"], 0x44cc11);
        assert_eq!(embed["timestamp"], "2024-03-05T07:08:09.123Z");
        assert_eq!(
            embed["description"],
            r"Fix typo in about page

Longer body."
        );
        assert_eq!(field(embed, "Site"), Some("blog"));
        assert_eq!(field(embed, "Branch"), Some("main"));
        assert_eq!(field(embed, "Commit"), Some("0123456"));
        assert_eq!(field(embed, "Author"), Some("Ada Lovelace"));
        assert_eq!(field(embed, "Duration"), Some("1 min 02 s"));
        assert_eq!(
            field(embed, "Links"),
            Some(
                "[Build log](https://chanto.example.org/sites/blog/builds/b_42/log) · \
                 [Open site](https://main.blog.example.org/) · [Permalink](https://d-7.blog.example.org/)"
            )
        );
        assert_eq!(field(embed, "Error"), None);
        assert_eq!(embed["footer"]["text"], "chanto · build.succeeded");
    }

    #[test]
    fn failed_build_with_hostile_text() {
        let embed = &discord_body(&hostile_failure())["embeds"][0];
        assert_eq!(embed["color"], 0xe05d44);
        assert_eq!(embed["url"], "https://chanto.example.org/sites/blog/builds/b_42/log");
        assert_eq!(
            embed["description"],
            r"\<script\>alert\(1\)\</script\> & \<!channel\> \@everyone \[click\]\(https\://evil.example\)"
        );
        assert_eq!(field(embed, "Error"), Some("```\nnpm ERR! <b>exit 1</b> & '''\n```"));
    }

    #[test]
    fn ten_kilobyte_message_is_truncated_within_limits() {
        let mut e = hostile_failure();
        e.message = Some("x".repeat(10 * 1024));
        e.error = Some("e".repeat(10 * 1024));
        e.site = "s".repeat(2000);
        e.branch = "b".repeat(2000);
        let embed = &discord_body(&e)["embeds"][0];
        let title = embed["title"].as_str().unwrap();
        let description = embed["description"].as_str().unwrap();
        assert!(units(title) <= DISCORD_TITLE_MAX && title.ends_with('…'));
        assert!(units(description) <= DISCORD_DESCRIPTION_MAX && description.ends_with('…'));
        assert!(units(description) > 1000, "the description keeps most of the budget");
        for f in embed["fields"].as_array().unwrap() {
            let value = f["value"].as_str().unwrap();
            assert!(!value.is_empty() && units(value) <= DISCORD_FIELD_VALUE_MAX, "{}", f["name"]);
        }
        assert!(field(embed, "Error").unwrap().contains('…'));
        assert!(total(embed) <= DISCORD_EMBED_TOTAL_MAX, "{}", total(embed));
    }

    #[test]
    fn certificate_events_name_the_domain_reason_and_what_to_do() {
        let embed = &discord_body(&certificate(EventKind::CertificateFailed))["embeds"][0];
        assert_eq!(embed["title"], "Certificate failed: blog / example.com");
        assert_eq!(embed["color"], 0xe05d44);
        assert!(embed.get("url").is_none() && embed.get("description").is_none(), "{embed}");
        assert_eq!(field(embed, "Domain"), Some("example.com"));
        assert_eq!(field(embed, "Reason"), Some("```\ncould not reach the ACME CA: connection refused\n```"));
        assert_eq!(field(embed, "Error"), None);
        assert!(field(embed, "What to do").unwrap().starts_with(r"chanto tries again in 1m \(attempt 1\)"));
        assert_eq!(field(embed, "Expires"), None);
        assert_eq!(embed["footer"]["text"], "chanto · certificate.failed");

        let embed = &discord_body(&certificate(EventKind::CertificateExpiring))["embeds"][0];
        assert_eq!(embed["color"], 0xdfb317);
        assert_eq!(field(embed, "Expires"), Some("2024-03-10 07:08 UTC (in 5 days)"));
    }

    #[test]
    fn certificate_reason_and_hint_are_escaped_and_within_limits() {
        let embed = &discord_body(&hostile_certificate())["embeds"][0];
        assert_eq!(
            field(embed, "Reason"),
            Some("```\n<b>boom</b> & <!channel> @everyone\n'''\n[click](https://evil.example) # heading\n```")
        );
        assert_eq!(
            field(embed, "What to do"),
            Some("\\<script\\>x\\</script\\> \\@here \\*bold\\*\r\nBcc\\: victim\\@example.org")
        );

        let mut e = hostile_certificate();
        e.error = Some("<".repeat(10_000));
        e.hint = Some("@".repeat(10_000));
        e.domain = Some("d".repeat(2000));
        let embed = &discord_body(&e)["embeds"][0];
        for f in embed["fields"].as_array().unwrap() {
            assert!(units(f["value"].as_str().unwrap()) <= DISCORD_FIELD_VALUE_MAX, "{}", f["name"]);
        }
        assert!(total(embed) <= DISCORD_EMBED_TOTAL_MAX, "{}", total(embed));
    }

    #[test]
    fn unsafe_urls_and_empty_values_are_dropped() {
        let mut e = event(EventKind::PreviewRemoved);
        e.urls.log = Some("javascript:alert(1)".into());
        e.urls.branch = None;
        e.urls.permalink = Some("https://x.example/a(b)".into());
        e.author = Some("  ".into());
        let embed = &discord_body(&e)["embeds"][0];
        assert_eq!(embed["color"], 0x9f9f9f);
        assert_eq!(field(embed, "Links"), Some("[Permalink](https://x.example/a%28b%29)"));
        assert_eq!(field(embed, "Author"), None);
    }
}

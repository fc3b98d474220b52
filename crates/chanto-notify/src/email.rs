//! Notification emails: a one-line subject and matching plain-text and HTML bodies, everything user-controlled
//! escaped.

use std::fmt::Write as _;

use crate::Event;
use crate::text::{duration, html_escape, one_line, safe_url, short_commit, truncate};

/// Longest commit message or error put in an email, in characters; longer ones are shortened with `…`.
const LONG_TEXT_MAX: usize = 10_000;

/// A notification email, ready to be put in a `multipart/alternative` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    /// The subject: one line, no control characters (so it cannot inject headers).
    pub subject: String,
    /// The `text/plain` body.
    pub text: String,
    /// The `text/html` body: a complete document with inline styles; all user text escaped.
    pub html: String,
}

/// Renders the email for an event.
pub fn email(e: &Event) -> Email {
    let mut subject = format!("[chanto] {}", e.headline());
    if let Some(commit) = &e.commit {
        let _ = write!(subject, " ({})", short_commit(commit));
    }
    let subject = truncate(&one_line(&subject), 200);

    let mut rows: Vec<(&str, String)> = vec![("Site", e.site.clone()), ("Branch", e.branch.clone())];
    if let Some(domain) = &e.domain {
        rows.push(("Domain", domain.clone()));
    }
    if let Some(expiry) = e.expiry_text() {
        rows.push(("Expires", expiry));
    }
    if let Some(pr) = e.pull_request {
        rows.push(("Pull request", format!("#{pr}")));
    }
    if let Some(commit) = &e.commit {
        rows.push(("Commit", commit.clone()));
    }
    if let Some(author) = &e.author {
        rows.push(("Author", author.clone()));
    }
    if let Some(ms) = e.duration_ms {
        rows.push(("Duration", duration(ms)));
    }
    let links: Vec<(&str, &str)> =
        [("Build log", &e.urls.log), ("Site", &e.urls.branch), ("Permalink", &e.urls.permalink)]
            .into_iter()
            .filter_map(|(name, url)| url.as_deref().and_then(safe_url).map(|u| (name, u)))
            .collect();
    let message = e.message.as_deref().map(str::trim).filter(|m| !m.is_empty()).map(|m| truncate(m, LONG_TEXT_MAX));
    let error = e.error.as_deref().map(str::trim).filter(|m| !m.is_empty()).map(|m| truncate(m, LONG_TEXT_MAX));
    let hint = e.hint.as_deref().map(str::trim).filter(|m| !m.is_empty()).map(|m| truncate(m, LONG_TEXT_MAX));
    let error_label = if e.domain.is_some() { "Reason" } else { "Error" };
    let sections = [("Message", &message), (error_label, &error), ("What to do", &hint)];
    let headline = e.headline();

    let mut text = format!("{headline}\n\n");
    for (name, value) in &rows {
        let _ = writeln!(text, "{:<14}{}", format!("{name}:"), one_line(value));
    }
    for (label, body) in sections {
        if let Some(body) = body {
            let _ = writeln!(text, "\n{label}:");
            for line in body.lines() {
                let _ = writeln!(text, "    {line}");
            }
        }
    }
    if !links.is_empty() {
        text.push('\n');
        for (name, url) in &links {
            let _ = writeln!(text, "{:<14}{url}", format!("{name}:"));
        }
    }
    let _ = write!(text, "\n-- \nSent by chanto for a notification subscription of the site {}.\n", one_line(&e.site));

    let color = e.kind.outcome().color_hex();
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n\
         <body style=\"font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;color:#24292f\">\n",
    );
    let _ = write!(html, "<h2 style=\"border-left:6px solid {color};padding-left:10px\">");
    match e.primary_url() {
        Some(url) => {
            let _ = write!(html, "<a href=\"{}\">{}</a>", html_escape(url), html_escape(&headline));
        }
        None => html.push_str(&html_escape(&headline)),
    }
    html.push_str("</h2>\n<table cellpadding=\"4\">\n");
    for (name, value) in &rows {
        let _ = writeln!(html, "<tr><th align=\"left\">{name}</th><td>{}</td></tr>", html_escape(value));
    }
    html.push_str("</table>\n");
    for (label, body) in sections {
        if let Some(body) = body {
            let _ = writeln!(
                html,
                "<h3>{label}</h3>\n<pre style=\"white-space:pre-wrap;background:#f6f8fa;padding:8px\">{}</pre>",
                html_escape(body)
            );
        }
    }
    if !links.is_empty() {
        let items: Vec<String> =
            links.iter().map(|(name, url)| format!("<a href=\"{}\">{name}</a>", html_escape(url))).collect();
        let _ = writeln!(html, "<p>{}</p>", items.join(" · "));
    }
    let _ = write!(
        html,
        "<p style=\"color:#57606a;font-size:12px\">Sent by chanto for a notification subscription of the site \
         {}.</p>\n</body></html>\n",
        html_escape(&e.site)
    );

    Email { subject, text, html }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;
    use crate::fixtures::{certificate, event, hostile_certificate, hostile_failure};

    #[test]
    fn succeeded_build() {
        let m = email(&event(EventKind::BuildSucceeded));
        assert_eq!(m.subject, "[chanto] Build succeeded: blog / main (0123456)");
        assert!(
            m.text.starts_with("Build succeeded: blog / main\n\nSite:         blog\nBranch:       main\n"),
            "{}",
            m.text
        );
        assert!(m.text.contains("\nMessage:\n    Fix typo in about page\n    \n    Longer body.\n"), "{}", m.text);
        assert!(m.text.contains("Permalink:    https://d-7.blog.example.org/\n"), "{}", m.text);
        assert!(m.html.contains("<a href=\"https://d-7.blog.example.org/\">Build succeeded: blog / main</a>"));
        assert!(m.html.contains("border-left:6px solid #44cc11"));
    }

    #[test]
    fn hostile_text_is_escaped() {
        let mut e = hostile_failure();
        e.branch = "x\"><img src=y>".into();
        e.site = "blog\r\nBcc: victim@example.org".into();
        let m = email(&e);
        assert!(!m.subject.contains(['\r', '\n']), "{}", m.subject);
        assert!(m.html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;!channel&gt;"));
        assert!(m.html.contains("x&quot;&gt;&lt;img src=y&gt;"));
        assert!(m.html.contains("npm ERR! &lt;b&gt;exit 1&lt;/b&gt;"));
        for bad in ["<script", "<img", "<b>", "<!channel"] {
            assert!(!m.html.contains(bad), "{bad} in html");
        }
        // The plain-text body keeps text as written, but never lets a header line through.
        assert!(m.text.contains("<script>alert(1)</script>"));
        assert!(m.text.contains("Site:         blog  Bcc: victim@example.org\n"), "{}", m.text);
    }

    #[test]
    fn certificate_events_name_the_domain_reason_and_what_to_do() {
        let m = email(&certificate(EventKind::CertificateExpiring));
        assert_eq!(m.subject, "[chanto] Certificate expiring: blog / example.com");
        assert!(
            m.text.starts_with(
                "Certificate expiring: blog / example.com\n\nSite:         blog\nBranch:       main\n\
                 Domain:       example.com\nExpires:      2024-03-10 07:08 UTC (in 5 days)\n"
            ),
            "{}",
            m.text
        );
        assert!(m.text.contains("\nReason:\n    could not reach the ACME CA: connection refused\n"), "{}", m.text);
        assert!(m.text.contains("\nWhat to do:\n    chanto tries again in 1m (attempt 1)"), "{}", m.text);
        assert!(m.html.contains("<h3>What to do</h3>"), "{}", m.html);
        assert!(m.html.contains("<tr><th align=\"left\">Domain</th><td>example.com</td></tr>"), "{}", m.html);
        assert!(m.html.contains("border-left:6px solid #dfb317"));
    }

    #[test]
    fn certificate_reason_and_hint_are_escaped() {
        let mut e = hostile_certificate();
        e.domain = Some("x\r\nBcc: victim@example.org".into());
        let m = email(&e);
        assert!(!m.subject.contains(['\r', '\n']), "{}", m.subject);
        for bad in ["<script", "<b>", "<!channel"] {
            assert!(!m.html.contains(bad), "{bad} in html");
        }
        assert!(m.html.contains("&lt;b&gt;boom&lt;/b&gt; &amp; &lt;!channel&gt;"), "{}", m.html);
        assert!(m.html.contains("&lt;script&gt;x&lt;/script&gt; @here"), "{}", m.html);
        // No header line sneaks into the plain-text rows; multi-line reasons stay indented under their label.
        assert!(m.text.contains("Domain:       x  Bcc: victim@example.org\n"), "{}", m.text);
        assert!(m.text.contains("\nWhat to do:\n    <script>x</script> @here *bold*\n    Bcc: victim@example.org\n"));
    }

    #[test]
    fn unsafe_links_are_not_rendered() {
        let mut e = event(EventKind::DeployActivated);
        e.urls.permalink = Some("javascript:alert(1)".into());
        let m = email(&e);
        assert!(!m.html.contains("javascript:") && !m.text.contains("javascript:"));
        assert!(m.html.contains("<a href=\"https://main.blog.example.org/\">Deploy activated"));
    }
}

//! Status badges (`/badge/<site>/<branch>.svg`): a flat, shields.io-like SVG saying whether the branch builds.

use std::fmt::Write as _;

use crate::Outcome;
use crate::text::{truncate, xml_escape};

/// What a badge says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BadgeStatus {
    /// The last build succeeded: "passing", green.
    Passing,
    /// The last build failed: "failing", red.
    Failing,
    /// A build is queued or running: "building", yellow.
    Building,
    /// No build yet, or the last was cancelled: "unknown", grey.
    Unknown,
}

impl BadgeStatus {
    /// The badge's message.
    pub fn message(self) -> &'static str {
        match self {
            BadgeStatus::Passing => "passing",
            BadgeStatus::Failing => "failing",
            BadgeStatus::Building => "building",
            BadgeStatus::Unknown => "unknown",
        }
    }

    /// The colour of the message half.
    pub fn color(self) -> &'static str {
        match self {
            BadgeStatus::Passing => "#4c1",
            BadgeStatus::Failing => "#e05d44",
            BadgeStatus::Building => "#dfb317",
            BadgeStatus::Unknown => "#9f9f9f",
        }
    }
}

impl From<Outcome> for BadgeStatus {
    /// The status shown after an event with this outcome.
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Success => BadgeStatus::Passing,
            Outcome::Failure => BadgeStatus::Failing,
            Outcome::Pending => BadgeStatus::Building,
            Outcome::Neutral => BadgeStatus::Unknown,
        }
    }
}

/// Longest label drawn, in characters.
const LABEL_MAX: usize = 40;

/// Approximate advance of a character in 11px Verdana, in tenths of a pixel. Only the badge's width depends on it;
/// an estimate a pixel off per word looks the same.
fn char_width(c: char) -> u32 {
    match c {
        'i' | 'l' | '|' | '\'' | '.' | ',' | ':' | ';' | '!' => 33,
        'j' | 'f' | 't' | 'r' | 'I' | '(' | ')' | '[' | ']' | '-' | '/' | '\\' | '`' => 46,
        ' ' => 39,
        'm' | 'w' => 107,
        'M' | 'W' | '%' | '@' => 113,
        'A'..='Z' => 76,
        '0'..='9' | 'a'..='z' | '_' | '#' | '$' | '&' | '*' | '+' | '<' | '=' | '>' | '?' | '~' | '^' => 70,
        // Anything wider (CJK, emoji) would overflow a narrower estimate; a roomy badge is fine.
        c if c.is_ascii() => 70,
        _ => 110,
    }
}

/// Width of `text` in whole pixels, rounded up.
fn text_width(text: &str) -> u32 {
    text.chars().map(char_width).sum::<u32>().div_ceil(10)
}

/// The SVG of a badge reading `label | status` (e.g. `build | passing`).
///
/// `label` is shortened to 40 characters and XML-escaped; the SVG carries a `<title>` and `aria-label` for screen
/// readers. Serve it as `image/svg+xml` with a short cache lifetime.
pub fn badge_svg(label: &str, status: BadgeStatus) -> String {
    let label = truncate(label.trim(), LABEL_MAX);
    let label = if label.is_empty() { "build".to_owned() } else { label };
    let message = status.message();
    let (label_w, message_w) = (text_width(&label) + 10, text_width(message) + 10);
    let width = label_w + message_w;
    let (label_x, message_x) = (label_w * 5, label_w * 10 + message_w * 5);
    let (label_len, message_len) = ((label_w - 10) * 10, (message_w - 10) * 10);
    let label = xml_escape(&label);
    let color = status.color();

    let mut svg = String::with_capacity(1200);
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"20\" role=\"img\" \
         aria-label=\"{label}: {message}\">\
         <title>{label}: {message}</title>\
         <linearGradient id=\"s\" x2=\"0\" y2=\"100%\"><stop offset=\"0\" stop-color=\"#bbb\" stop-opacity=\".1\"/>\
         <stop offset=\"1\" stop-opacity=\".1\"/></linearGradient>\
         <clipPath id=\"r\"><rect width=\"{width}\" height=\"20\" rx=\"3\" fill=\"#fff\"/></clipPath>\
         <g clip-path=\"url(#r)\"><rect width=\"{label_w}\" height=\"20\" fill=\"#555\"/>\
         <rect x=\"{label_w}\" width=\"{message_w}\" height=\"20\" fill=\"{color}\"/>\
         <rect width=\"{width}\" height=\"20\" fill=\"url(#s)\"/></g>\
         <g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,Geneva,DejaVu Sans,sans-serif\" \
         text-rendering=\"geometricPrecision\" font-size=\"110\">\
         <text aria-hidden=\"true\" x=\"{label_x}\" y=\"150\" fill=\"#010101\" fill-opacity=\".3\" \
         transform=\"scale(.1)\" textLength=\"{label_len}\">{label}</text>\
         <text x=\"{label_x}\" y=\"140\" transform=\"scale(.1)\" fill=\"#fff\" textLength=\"{label_len}\">{label}</text>\
         <text aria-hidden=\"true\" x=\"{message_x}\" y=\"150\" fill=\"#010101\" fill-opacity=\".3\" \
         transform=\"scale(.1)\" textLength=\"{message_len}\">{message}</text>\
         <text x=\"{message_x}\" y=\"140\" transform=\"scale(.1)\" fill=\"#fff\" textLength=\"{message_len}\">\
         {message}</text></g></svg>"
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every tag is closed in order, and no raw `<`, `>` or `&` escapes into text.
    fn well_formed(svg: &str) -> Result<(), String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            if text.contains('>') {
                return Err(format!("stray > in {text:?}"));
            }
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..];
                if !["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|e| entity.starts_with(e)) {
                    return Err(format!("raw & in {text:?}"));
                }
            }
            let end = rest[start..].find('>').ok_or("unclosed tag")? + start;
            let tag = &rest[start + 1..end];
            if tag.contains('<') {
                return Err(format!("< inside tag {tag:?}"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("</{name}> without opening"))?;
                if open != name {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or(""));
            }
            rest = &rest[end + 1..];
        }
        if stack.is_empty() && rest.trim().is_empty() { Ok(()) } else { Err(format!("unclosed: {stack:?}")) }
    }

    #[test]
    fn each_status_is_well_formed() {
        let cases = [
            (BadgeStatus::Passing, "passing", "#4c1"),
            (BadgeStatus::Failing, "failing", "#e05d44"),
            (BadgeStatus::Building, "building", "#dfb317"),
            (BadgeStatus::Unknown, "unknown", "#9f9f9f"),
        ];
        for (status, message, color) in cases {
            let svg = badge_svg("build", status);
            assert_eq!(well_formed(&svg), Ok(()), "{svg}");
            assert!(svg.contains(&format!("<title>build: {message}</title>")), "{svg}");
            assert!(svg.contains(&format!("fill=\"{color}\"")), "{svg}");
            assert!(svg.contains(&format!(">{message}</text>")), "{svg}");
        }
    }

    #[test]
    fn hostile_label_is_escaped() {
        let svg = badge_svg("<b>\"x\" & y\u{7}</b>", BadgeStatus::Failing);
        assert_eq!(well_formed(&svg), Ok(()), "{svg}");
        assert!(svg.contains("<title>&lt;b&gt;&quot;x&quot; &amp; y&lt;/b&gt;: failing</title>"), "{svg}");
        assert!(svg.contains("aria-label=\"&lt;b&gt;&quot;x&quot; &amp; y&lt;/b&gt;: failing\""), "{svg}");
        assert!(!svg.contains('\u{7}'));
        // The check itself catches what escaping prevents.
        assert!(well_formed("<svg><text>a & b</text></svg>").is_err());
        assert!(well_formed("<svg><g></svg>").is_err());
    }

    #[test]
    fn width_grows_with_label() {
        let width = |svg: &str| -> u32 {
            let w = svg.split("width=\"").nth(1).unwrap();
            w[..w.find('"').unwrap()].parse().unwrap()
        };
        let short = width(&badge_svg("ci", BadgeStatus::Passing));
        let long = width(&badge_svg("documentation build", BadgeStatus::Passing));
        assert!(long > short + 60, "{short} {long}");
        assert!(width(&badge_svg("build", BadgeStatus::Passing)) >= 80);
        assert!(badge_svg("   ", BadgeStatus::Unknown).contains("<title>build: unknown</title>"));
        let long = badge_svg(&"w".repeat(500), BadgeStatus::Unknown);
        assert_eq!(long.matches(&format!("{}…", "w".repeat(39))).count(), 4, "{long}");
        assert!(!long.contains(&"w".repeat(40)));
    }

    #[test]
    fn outcome_maps_to_status() {
        assert_eq!(BadgeStatus::from(crate::EventKind::BuildFailed.outcome()), BadgeStatus::Failing);
        assert_eq!(BadgeStatus::from(crate::EventKind::BuildStarted.outcome()), BadgeStatus::Building);
        assert_eq!(BadgeStatus::from(crate::EventKind::DeployActivated.outcome()), BadgeStatus::Passing);
    }
}

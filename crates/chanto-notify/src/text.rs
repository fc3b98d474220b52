//! Escaping and shortening of untrusted text, one function per target syntax, shared by every channel.

/// Shortens `s` to at most `max` UTF-16 code units, ending in `…` when cut.
///
/// UTF-16 units are never fewer than characters, so the result fits a limit counted either way (Discord's docs
/// say "characters" without saying which).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.encode_utf16().count() <= max {
        return s.to_owned();
    }
    let budget = max.saturating_sub(1);
    let mut used = 0;
    let mut out = String::new();
    for c in s.chars() {
        used += c.len_utf16();
        if used > budget {
            break;
        }
        out.push(c);
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// Length as counted against Discord's limits.
pub(crate) fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// The first line of a commit message (its subject).
pub(crate) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim_end()
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes text for XML, dropping the control characters XML 1.0 forbids even as references.
pub(crate) fn xml_escape(s: &str) -> String {
    let kept: String = s.chars().filter(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')).collect();
    html_escape(&kept)
}

/// Escapes text for Slack mrkdwn: exactly `&`, `<` and `>`, as Slack's docs ask. Escaping `<` also stops
/// `<!channel>`-style mentions.
pub(crate) fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A Slack link `<url|text>`, with the text escaped and a `|` in the URL percent-encoded.
pub(crate) fn slack_link(url: &str, text: &str) -> String {
    format!("<{}|{}>", slack_escape(url).replace('|', "%7C"), slack_escape(text))
}

/// Escapes Discord markdown with backslashes, so a commit message cannot make links, headings or code blocks.
pub(crate) fn discord_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '[' | ']' | '(' | ')' | '#' | '-' | '<' | '@' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Replaces line breaks and other control characters by spaces: for one-line places such as mail subjects,
/// where a newline would start a new header.
pub(crate) fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The URL if it is an absolute `http(s)` URL without spaces or control characters; channels drop anything else,
/// so a stray `javascript:` link can never be rendered.
pub(crate) fn safe_url(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme_ok = scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http");
    let has_host = !rest.is_empty() && !rest.starts_with('/');
    let clean = !url.chars().any(|c| c.is_whitespace() || c.is_control());
    (scheme_ok && has_host && clean).then_some(url)
}

/// The first 7 characters of a commit id, as git shows them.
pub(crate) fn short_commit(commit: &str) -> &str {
    match commit.char_indices().nth(7) {
        Some((i, _)) => &commit[..i],
        None => commit,
    }
}

/// A duration such as `850 ms`, `42 s`, `3 min 05 s` or `1 h 02 min`.
pub(crate) fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms} ms"),
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_table() {
        let cases: &[(&str, usize, &str)] = &[
            ("hello", 5, "hello"),
            ("hello!", 5, "hell…"),
            ("", 3, ""),
            ("héllo wörld", 6, "héllo…"),
            // An emoji is two UTF-16 units: it must not squeeze past the limit.
            ("ab😀cd", 4, "ab…"),
            ("abc", 0, ""),
        ];
        for (s, max, want) in cases {
            let got = truncate(s, *max);
            assert_eq!(got, *want, "truncate({s:?}, {max})");
            assert!(units(&got) <= *max);
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(html_escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(xml_escape("a\u{1}b\tc<"), "ab\tc&lt;");
        assert_eq!(slack_escape("<!channel> & <x>"), "&lt;!channel&gt; &amp; &lt;x&gt;");
        assert_eq!(slack_link("https://x/?a=1&b|c", "<t>"), "<https://x/?a=1&amp;b%7Cc|&lt;t&gt;>");
        assert_eq!(discord_escape("[x](y) @everyone"), r"\[x\]\(y\) \@everyone");
        assert_eq!(one_line("a\r\nBcc: x"), "a  Bcc: x");
    }

    #[test]
    fn safe_url_table() {
        let cases: &[(&str, bool)] = &[
            ("https://example.org/", true),
            ("HTTP://example.org", true),
            ("javascript:alert(1)", false),
            ("https://exa mple.org", false),
            ("https://", false),
            ("ftp://x", false),
            ("/relative", false),
        ];
        for (u, ok) in cases {
            assert_eq!(safe_url(u).is_some(), *ok, "{u}");
        }
    }

    #[test]
    fn duration_table() {
        let cases: &[(u64, &str)] =
            &[(850, "850 ms"), (42_000, "42 s"), (185_000, "3 min 05 s"), (3_720_000, "1 h 02 min")];
        for (ms, want) in cases {
            assert_eq!(duration(*ms), *want);
        }
        assert_eq!(short_commit("0123456789abcdef"), "0123456");
        assert_eq!(short_commit("abc"), "abc");
    }
}

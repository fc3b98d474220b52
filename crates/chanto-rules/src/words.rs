//! Parser errors in the rule files' own terms: serde says "invalid type:
//! string \"301\", expected u16"; a user needs "`status` must be a number
//! such as 301, not the text \"301\"", naming the key they wrote.

/// `message` (a serde error's text, without position) in plain words about
/// `key` (the key as written in the file, if known).
pub(crate) fn plain(message: &str, key: Option<&str>) -> String {
    let key = key.filter(|k| !k.is_empty());
    if let Some(rest) = message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: "))
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let what = match key {
            Some(k) => format!("`{k}`"),
            None => "this value".to_owned(),
        };
        return format!("{what} must be {}, not {}", expected_words(expected, key), found_words(found));
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (field, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let known = expected.strip_prefix("one of ").unwrap_or(expected);
        return if known.is_empty() {
            format!("unknown key {field}: nothing else belongs here")
        } else {
            format!("unknown key {field} (a typo?); the keys here are {known}")
        };
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("{field} is missing; add it");
    }
    match key {
        Some(k) => format!("`{k}`: {message}"),
        None => message.to_owned(),
    }
}

/// What serde expected, as a user would say it.
fn expected_words(expected: &str, key: Option<&str>) -> String {
    let e = expected.trim();
    let integer = ["u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize"];
    if integer.contains(&e) || e.starts_with("an integer") || e == "a number" {
        return match key {
            Some("status" | "type" | "code") => "a number such as 301".into(),
            _ => "a whole number such as 1".into(),
        };
    }
    if e.starts_with("f32") || e.starts_with("f64") || e.starts_with("a float") {
        return "a number such as 1.5".into();
    }
    match e {
        "a boolean" | "bool" => "true or false".into(),
        "a string" | "a character" | "char" => "text in quotes".into(),
        "a sequence" => "a list ([...])".into(),
        "a map" => "a table of keys and values".into(),
        _ if e.starts_with("struct ") || e.starts_with("a map") => "a table of keys and values".into(),
        _ => e.to_owned(),
    }
}

/// What serde found, as a user would say it.
fn found_words(found: &str) -> String {
    let f = found.trim();
    if let Some(s) = f.strip_prefix("string ") {
        return format!("the text {s}");
    }
    for (prefix, what) in [("integer ", "the number "), ("floating point ", "the number "), ("boolean ", "")] {
        if let Some(v) = f.strip_prefix(prefix) {
            return format!("{what}{}", v.trim_matches('`'));
        }
    }
    match f {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        "unit value" | "null" => "null".into(),
        other => other.to_owned(),
    }
}

/// The key whose value starts at `offset` in a TOML document: the word
/// before the `=` that precedes it on its line (`status = "301"` →
/// `status`; `{ status = "301" }` too).
pub(crate) fn toml_key_at(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset.min(text.len()))?;
    let line = before.rsplit('\n').next()?;
    let lhs = line.trim_end().strip_suffix('=')?;
    let key = lhs.trim_end().rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',').next()?;
    let key = key.trim_matches('"');
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_in_the_files_terms() {
        let cases = [
            (
                "invalid type: string \"301\", expected u16",
                Some("status"),
                "`status` must be a number such as 301, not the text \"301\"",
            ),
            (
                "invalid type: integer `5`, expected a string",
                Some("to"),
                "`to` must be text in quotes, not the number 5",
            ),
            (
                "invalid type: string \"yes\", expected a boolean",
                Some("force"),
                "`force` must be true or false, not the text \"yes\"",
            ),
            (
                "invalid type: string \"x\", expected a sequence",
                None,
                "this value must be a list ([...]), not the text \"x\"",
            ),
            (
                "unknown field `sttaus`, expected one of `from`, `to`, `status`",
                None,
                "unknown key `sttaus` (a typo?); the keys here are `from`, `to`, `status`",
            ),
            ("missing field `to`", None, "`to` is missing; add it"),
            ("something else", Some("k"), "`k`: something else"),
        ];
        for (message, key, want) in cases {
            assert_eq!(plain(message, key), want, "{message}");
        }
    }

    #[test]
    fn toml_keys_before_their_values() {
        let text = "[[redirects]]\nfrom = \"/a\"\nstatus = \"301\"\nx = { force = \"no\" }\n";
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(toml_key_at(text, at("\"301\"")), Some("status"));
        assert_eq!(toml_key_at(text, at("\"no\"")), Some("force"));
        assert_eq!(toml_key_at(text, at("[[redirects]]")), None);
    }
}

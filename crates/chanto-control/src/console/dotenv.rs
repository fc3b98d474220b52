//! Parsing a pasted `.env` file (the console's bulk variable entry): the
//! dotenv format most tools write — `KEY=value`, `export KEY=value`,
//! comments, blank lines, single-quoted (literal) and double-quoted values
//! (with `\n`, `\t`, `\"`, `\\` escapes), an unquoted value ending at ` #`.
//! A line that is none of these is an error naming its line number.

/// The most lines a paste may have.
pub const MAX_LINES: usize = 1000;

/// One `KEY=value` of a paste, with the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its line (1-based).
    pub line: usize,
    /// The variable's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// Parses `text`; every bad line is reported (line number and why), none
/// of the good ones is lost.
pub fn parse(text: &str) -> Result<Vec<Entry>, Vec<String>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > MAX_LINES {
        return Err(vec![format!("{} lines: paste at most {MAX_LINES} at a time", lines.len())]);
    }
    for (i, raw) in lines.iter().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").map_or(l, str::trim_start);
        let Some((name, rest)) = l.split_once('=') else {
            errors.push(format!("line {line}: no '=' (write NAME=value)"));
            continue;
        };
        let name = name.trim();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            errors.push(format!(
                "line {line}: {name:?} is not a variable name (letters, digits and _, not starting with a digit)"
            ));
            continue;
        }
        match value(rest.trim_start()) {
            Ok(value) => entries.push(Entry { line, name: name.to_owned(), value }),
            Err(why) => errors.push(format!("line {line} ({name}): {why}")),
        }
    }
    if errors.is_empty() { Ok(entries) } else { Err(errors) }
}

fn value(rest: &str) -> Result<String, String> {
    if let Some(body) = rest.strip_prefix('\'') {
        let end = body.find('\'').ok_or("the single quote is not closed (values span one line)")?;
        return trailing(&body[end + 1..]).map(|()| body[..end].to_owned());
    }
    if let Some(body) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return trailing(&body[i + 1..]).map(|()| out),
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(e @ ('"' | '\\' | '$')) => out.push(e),
                    Some(e) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => return Err("the double quote is not closed".into()),
                },
                c => out.push(c),
            }
        }
        return Err("the double quote is not closed (values span one line; use \\n)".into());
    }
    // Unquoted: up to a comment that follows whitespace.
    let end = rest.find(" #").or_else(|| rest.find("\t#")).unwrap_or(rest.len());
    Ok(rest[..end].trim_end().to_owned())
}

/// After a closing quote: nothing, or a comment.
fn trailing(after: &str) -> Result<(), String> {
    let after = after.trim();
    if after.is_empty() || after.starts_with('#') {
        Ok(())
    } else {
        Err(format!("{after:?} follows the closing quote"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).unwrap().into_iter().map(|e| (e.name, e.value)).collect()
    }

    #[test]
    fn what_dotenv_files_hold() {
        let text = "# comment\n\nAPI_URL=https://api.example.com/v1?a=b\nexport NODE_ENV=production\r\nEMPTY=\n\
                    QUOTED=\"two words # not a comment\"\nESCAPED=\"a\\nb \\\"c\\\"\"\nLITERAL='$HOME \\n'\n\
                    INLINE=value # a comment\n  SPACED = yes\n";
        assert_eq!(
            pairs(text),
            [
                ("API_URL", "https://api.example.com/v1?a=b"),
                ("NODE_ENV", "production"),
                ("EMPTY", ""),
                ("QUOTED", "two words # not a comment"),
                ("ESCAPED", "a\nb \"c\""),
                ("LITERAL", "$HOME \\n"),
                ("INLINE", "value"),
                ("SPACED", "yes"),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(parse("A=1\nB=2").unwrap()[1].line, 2);
    }

    #[test]
    fn every_bad_line_is_named() {
        let errors = parse("GOOD=1\nno equals here\n1BAD=x\nBAD-NAME=x\nQ=\"open\nS='open\nT=\"x\" junk").unwrap_err();
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].starts_with("line 2: no '='"), "{errors:?}");
        assert!(errors[1].starts_with("line 3:") && errors[2].starts_with("line 4:"), "{errors:?}");
        assert!(errors[3].contains("not closed") && errors[4].contains("not closed"), "{errors:?}");
        assert!(errors[5].contains("follows the closing quote"), "{errors:?}");
        let many = "A=1\n".repeat(MAX_LINES + 1);
        assert!(parse(&many).unwrap_err()[0].contains("at most"));
    }
}

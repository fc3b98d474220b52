//! Globs as Firebase and Amplify's `customHttp.yml` write them (`**`, `*`,
//! `?`, `@(a|b)`, `{a,b}`, and Firebase's `:name` / `:name*` segments),
//! turned into a [`Source`]: a path pattern when the glob is one (so it goes
//! in the trie), else an anchored regular expression.

use crate::Source;
use crate::pattern::PathPattern;

/// Converts a glob; the error says what is not supported.
pub(crate) fn to_source(glob: &str) -> Result<Source, String> {
    if glob.len() > 2048 {
        return Err(format!("the pattern is {} bytes; the limit is 2048", glob.len()));
    }
    let rooted = if glob.starts_with('/') || glob.starts_with("**") { glob.to_owned() } else { format!("/{glob}") };
    if let Some(p) = as_path_pattern(&rooted) {
        return Ok(Source::Path(p));
    }
    Ok(Source::Regex(format!("^{}$", to_regex(&rooted)?)))
}

/// `/a/:b/**` and `**` are path patterns (`/a/:b/*`, `/*`).
fn as_path_pattern(glob: &str) -> Option<PathPattern> {
    let body = if glob == "**" || glob == "/**" {
        "/*".to_owned()
    } else {
        glob.strip_suffix("/**").map_or(glob.to_owned(), |b| format!("{b}/*"))
    };
    let plain = body.trim_end_matches("/*").split('/').all(|seg| {
        !seg.contains(['*', '?', '@', '{', '}', '(', ')', '[', ']', '!', '+'])
            && (!seg.starts_with(':') || seg[1..].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            && !seg[1.min(seg.len())..].contains(':')
    });
    if !plain {
        return None;
    }
    PathPattern::parse(&body).ok()
}

fn to_regex(glob: &str) -> Result<String, String> {
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut seg_start = true;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                if chars.get(i + 2) == Some(&'/') {
                    out.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    out.push_str(".*");
                    i += 2;
                }
                seg_start = false;
                continue;
            }
            '*' => out.push_str("[^/]*"),
            '?' if chars.get(i + 1) == Some(&'(') => return Err(unsupported(glob)),
            '?' => out.push_str("[^/]"),
            '@' if chars.get(i + 1) == Some(&'(') => {
                let (group, used) = alternatives(glob, &chars[i + 2..], ')', '|')?;
                out.push_str(&group);
                i += 2 + used;
                seg_start = false;
                continue;
            }
            '!' | '+' if chars.get(i + 1) == Some(&'(') => return Err(unsupported(glob)),
            '{' => {
                let (group, used) = alternatives(glob, &chars[i + 1..], '}', ',')?;
                out.push_str(&group);
                i += 1 + used;
                seg_start = false;
                continue;
            }
            ':' if seg_start => {
                let name: String =
                    chars[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').collect();
                if name.is_empty() {
                    out.push(':');
                } else {
                    i += 1 + name.chars().count();
                    if chars.get(i) == Some(&'*') {
                        out.push_str(&format!("(?P<{name}>.*)"));
                        i += 1;
                    } else {
                        out.push_str(&format!("(?P<{name}>[^/]+)"));
                    }
                    seg_start = false;
                    continue;
                }
            }
            '[' | ']' => {
                return Err(format!(
                    "{glob:?}: character classes ([...]) are not supported; list alternatives with @(a|b)"
                ));
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        seg_start = c == '/';
        i += 1;
    }
    Ok(out)
}

/// `a|b)` (or `a,b}`) at the start of `rest`: the group as `(?:a|b)` and how
/// many characters it took, the closing one included.
fn alternatives(glob: &str, rest: &[char], close: char, sep: char) -> Result<(String, usize), String> {
    let end = rest
        .iter()
        .position(|&c| c == close)
        .ok_or_else(|| format!("{glob:?}: a group is never closed with {close:?}"))?;
    let inner: String = rest[..end].iter().collect();
    let alts: Result<Vec<String>, String> = inner.split(sep).map(to_regex).collect();
    Ok((format!("(?:{})", alts?.join("|")), end + 1))
}

fn unsupported(glob: &str) -> String {
    format!("{glob:?}: the extglobs !(…), +(…) and ?(…) are not supported; use @(a|b) or several rules")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(glob: &str, path: &str) -> bool {
        match to_source(glob).unwrap() {
            Source::Path(p) => p.captures(&crate::pattern::split_path(path)).is_some(),
            Source::Regex(r) => regex::Regex::new(&r).unwrap().is_match(path),
        }
    }

    #[test]
    fn simple_globs_become_path_patterns() {
        assert_eq!(to_source("**").unwrap(), Source::Path(PathPattern::parse("/*").unwrap()));
        assert_eq!(to_source("/api/**").unwrap(), Source::Path(PathPattern::parse("/api/*").unwrap()));
        assert_eq!(to_source("/users/:id").unwrap(), Source::Path(PathPattern::parse("/users/:id").unwrap()));
        assert_eq!(
            to_source("/exact/page.html").unwrap(),
            Source::Path(PathPattern::parse("/exact/page.html").unwrap())
        );
    }

    #[test]
    fn firebase_documented_globs() {
        assert!(matches("**/*.@(jpg|jpeg|gif|png)", "/img/a/b.png"));
        assert!(matches("**/*.@(jpg|jpeg|gif|png)", "/b.jpg"));
        assert!(!matches("**/*.@(jpg|jpeg|gif|png)", "/b.js"));
        assert!(matches("**/*.@(eot|otf|ttf|ttc|woff|font.css)", "/fonts/x.font.css"));
        assert!(matches("/blog/:post*", "/blog/2024/hello"));
        assert!(matches("*.js", "/app.js"));
        assert!(!matches("*.js", "/dir/app.js"));
        assert!(matches("**/*.{js,css}", "/a/b.css"));
        assert!(matches("/a?c", "/abc"));
        assert!(!matches("/a?c", "/a/c"));
        for bad in ["/!(x)", "/+(x)", "/[ab]", "/@(x", "/{a"] {
            assert!(to_source(bad).is_err(), "{bad}");
        }
    }
}

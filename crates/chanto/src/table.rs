//! Aligned tables for list commands: a header row, columns padded to their
//! widest cell, no trailing whitespace, and a bold header only when standard
//! output is a terminal and `NO_COLOR` is unset (<https://no-color.org>).

use std::io::IsTerminal;

/// Whether to colour standard output.
pub(crate) fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Renders `rows` under `header`, two spaces between columns.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>], colour: bool) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate().take(cols) {
            out.push_str(cell);
            if i + 1 < cols {
                out.extend(std::iter::repeat_n(' ', width[i] - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let head = line(header.to_vec());
    let mut out = if colour { format!("\x1b[1m{head}\x1b[0m\n") } else { format!("{head}\n") };
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// Prints a table on standard output.
pub(crate) fn print(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render(header, rows, colour()));
}

/// A deploy's state in the words a user means: `live`, `draft`, `previous`
/// (was live, replaced by a newer deploy or publish), `rolled back` (was
/// live, taken off the air by a rollback and not live since).
pub(crate) fn deploy_state(d: &chanto_control::api::DeployView) -> &'static str {
    use chanto_core::DeployState::*;
    match d.state {
        Active => "live",
        Ready if d.draft => "draft",
        Ready => "ready",
        Superseded if d.rolled_back => "rolled back",
        Superseded => "previous",
        Uploading => "uploading",
        Failed => "failed",
        Expired => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_without_trailing_spaces() {
        let rows =
            vec![vec!["docs".into(), "main".into(), String::new()], vec!["a".into(), "feature/x".into(), "m".into()]];
        let t = render(&["NAME", "BRANCH", "MESSAGE"], &rows, false);
        assert_eq!(t, "NAME  BRANCH     MESSAGE\ndocs  main\na     feature/x  m\n");
        assert!(render(&["A"], &[], true).starts_with("\x1b[1mA"));
    }
}

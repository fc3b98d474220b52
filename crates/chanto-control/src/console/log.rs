//! Reading build logs for the console: the tail of a log with its line
//! numbers (never the whole log to the browser), the first line that looks
//! like an error, and what was appended after a known position (for the
//! live view over Server-Sent Events).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// How much of a log a page shows at first: its last 64 KiB.
pub const TAIL_BYTES: u64 = 64 * 1024;
/// The most one live update carries.
pub const CHUNK_BYTES: u64 = 64 * 1024;
/// Longer lines are cut (the raw log has them whole).
const MAX_LINE_CHARS: usize = 4000;

/// Where a reader is in a log: the byte offset and the number the next
/// line will have. Written as `OFFSET.LINE` (an SSE event id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Bytes read.
    pub offset: u64,
    /// The number of the next line (1 for the first).
    pub line: u64,
}

impl Position {
    /// The start of a log.
    pub const START: Position = Position { offset: 0, line: 1 };

    /// Parses `OFFSET.LINE` (from `Last-Event-ID` or `?from=`).
    pub fn parse(s: &str) -> Option<Position> {
        let (o, l) = s.trim().split_once('.')?;
        let (offset, line) = (o.parse().ok()?, l.parse().ok()?);
        (line >= 1).then_some(Position { offset, line })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.offset, self.line)
    }
}

/// The end of a log as a page shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// The last lines, numbered.
    pub lines: Vec<(u64, String)>,
    /// Lines before them not shown.
    pub hidden: u64,
    /// Where a live view goes on from.
    pub end: Position,
    /// The first line that looks like an error, anywhere in the log.
    pub first_error: Option<u64>,
}

/// Whether a log line looks like an error (what a person scanning a failed
/// build looks for first).
pub fn is_error_line(line: &str) -> bool {
    // The runner echoes each command as `$ …`: a command that mentions
    // "error" is not one.
    if line.starts_with("$ ") {
        return false;
    }
    let l = line.trim_start().to_ascii_lowercase();
    l.starts_with("error")
        || l.starts_with("fatal")
        || l.contains("error:")
        || l.contains("error[")
        || l.contains("npm err!")
        || l.contains("err!")
        || l.contains("command failed")
        || l.contains("exited with")
        || l.starts_with("failed")
}

fn shown(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    if text.chars().count() > MAX_LINE_CHARS {
        let cut: String = text.chars().take(MAX_LINE_CHARS).collect();
        format!("{cut} … (line cut; the raw log has it whole)")
    } else {
        text.to_owned()
    }
}

/// The tail of the log at `path` (empty when it does not exist yet). Reads
/// the file once, keeping only the last [`TAIL_BYTES`] of lines.
pub fn tail(path: &Path) -> std::io::Result<Tail> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Tail { end: Position::START, ..Tail::default() });
        }
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let tail_from = size.saturating_sub(TAIL_BYTES);
    let mut reader = BufReader::new(file);
    let mut out = Tail { end: Position::START, ..Tail::default() };
    let (mut offset, mut number) = (0u64, 1u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.by_ref().take(1 << 20).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let complete = buf.ends_with(b"\n");
        if !complete && offset + n as u64 >= size {
            // A line still being written: the live view picks it up whole.
            break;
        }
        let text = shown(&buf);
        if out.first_error.is_none() && is_error_line(&text) {
            out.first_error = Some(number);
        }
        if offset >= tail_from {
            out.lines.push((number, text));
        } else {
            out.hidden += 1;
        }
        offset += n as u64;
        number += 1;
    }
    out.end = Position { offset, line: number };
    Ok(out)
}

/// Complete lines appended after `from` (at most [`CHUNK_BYTES`]; a final
/// line without its newline only when `ended`), and the position after them.
pub fn read_after(path: &Path, from: Position, ended: bool) -> std::io::Result<(Vec<(u64, String)>, Position)> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), from)),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    if from.offset >= size {
        return Ok((Vec::new(), from));
    }
    file.seek(SeekFrom::Start(from.offset))?;
    let mut chunk = Vec::new();
    file.take(CHUNK_BYTES).read_to_end(&mut chunk)?;
    let usable = match chunk.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        // One line longer than a chunk: send what there is.
        None if chunk.len() as u64 == CHUNK_BYTES => chunk.len(),
        None if ended => chunk.len(),
        None => 0,
    };
    let usable = if ended && from.offset + chunk.len() as u64 == size { chunk.len() } else { usable };
    let mut lines = Vec::new();
    let mut number = from.line;
    for line in chunk[..usable].split_inclusive(|b| *b == b'\n') {
        lines.push((number, shown(line)));
        number += 1;
    }
    Ok((lines, Position { offset: from.offset + usable as u64, line: number }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_reject_nonsense() {
        let p = Position { offset: 120, line: 7 };
        assert_eq!(Position::parse(&p.to_string()), Some(p));
        for bad in ["", "12", "a.b", "1.0", "-1.2", "1.2.3"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn error_lines_are_what_a_person_looks_for() {
        for yes in [
            "error: cannot find module",
            "npm ERR! code 1",
            "Error[E0425]: x",
            "fatal: not a git repository",
            "the command exited with status 3",
        ] {
            assert!(is_error_line(yes), "{yes}");
        }
        for no in ["0 errors, 0 warnings", "compiling errors.rs", "all good", "$ make || echo 'error: x'"] {
            assert!(!is_error_line(no), "{no}");
        }
    }

    #[test]
    fn the_tail_numbers_lines_and_finds_the_first_error_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        assert_eq!(tail(&path).unwrap().end, Position::START, "no log yet");
        let mut text = String::from("start\nerror: early trouble\n");
        while text.len() < (TAIL_BYTES as usize) * 2 {
            text.push_str("filler line of the build output\n");
        }
        text.push_str("last line\npartial");
        std::fs::write(&path, &text).unwrap();
        let t = tail(&path).unwrap();
        assert_eq!(t.first_error, Some(2), "found though not shown");
        assert!(t.hidden > 0 && t.lines.len() as u64 + t.hidden == text.lines().count() as u64 - 1);
        assert_eq!(t.lines.last().unwrap().1, "last line", "the unfinished line waits");
        assert_eq!(t.lines.last().unwrap().0, t.end.line - 1);
        assert_eq!(t.end.offset as usize, text.len() - "partial".len());
        assert!(t.lines.iter().map(|(_, l)| l.len() as u64 + 1).sum::<u64>() <= TAIL_BYTES);
        // Going on from there: nothing until the line is finished, or the build ended.
        assert_eq!(read_after(&path, t.end, false).unwrap().0, vec![]);
        assert_eq!(read_after(&path, t.end, true).unwrap().0, vec![(t.end.line, "partial".to_owned())]);
        std::fs::write(&path, format!("{text} done\nnext\n")).unwrap();
        let (lines, at) = read_after(&path, t.end, false).unwrap();
        assert_eq!(lines, vec![(t.end.line, "partial done".to_owned()), (t.end.line + 1, "next".to_owned())]);
        assert_eq!(read_after(&path, at, false).unwrap(), (vec![], at));
    }

    #[test]
    fn huge_lines_are_cut_for_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.log");
        std::fs::write(&path, format!("{}\nok\n", "x".repeat(10_000))).unwrap();
        let t = tail(&path).unwrap();
        assert!(t.lines[0].1.ends_with("the raw log has it whole)") && t.lines[0].1.len() < 4100);
        assert_eq!(t.lines[1], (2, "ok".to_owned()));
    }
}

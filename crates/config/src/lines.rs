//! Logical lines as Postfix's `readllines()` reads them, shared by main.cf and master.cf.
//!
//! Blank lines and lines whose first non-blank character is `#` are skipped; a line that
//! starts with white space continues the previous logical line (joined with one space);
//! comment lines inside a continued line are skipped without ending it.

/// One logical line: its text, and the 1-based numbers of its first and last physical lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    pub text: String,
    pub first: usize,
    pub last: usize,
}

/// What a physical line is, for readers and editors alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Empty, white space only, or a `#` comment (possibly indented).
    Ignored,
    /// Starts with white space and has text: continues the current logical line.
    Continuation,
    /// Starts with non-blank text: begins a new logical line.
    Start,
}

pub fn classify(line: &str) -> LineKind {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        LineKind::Ignored
    } else if trimmed.len() != line.len() {
        LineKind::Continuation
    } else {
        LineKind::Start
    }
}

/// Splits text into physical lines without their terminators (`\n`, optional `\r`).
pub fn physical_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// Reads all logical lines. A continuation before any logical line is ignored, as Postfix
/// ignores it ("logical line must not start with whitespace").
pub fn logical_lines(text: &str) -> Vec<LogicalLine> {
    logical_lines_with_warnings(text).0
}

/// Like [`logical_lines`], also returning `(line, text)` for each ignored leading
/// continuation line.
pub fn logical_lines_with_warnings(text: &str) -> (Vec<LogicalLine>, Vec<(usize, String)>) {
    let mut out: Vec<LogicalLine> = Vec::new();
    let mut ignored = Vec::new();
    let mut open = false;
    for (i, line) in physical_lines(text).enumerate() {
        let number = i + 1;
        match classify(line) {
            LineKind::Ignored => {}
            LineKind::Continuation if open => {
                if let Some(cur) = out.last_mut() {
                    let add = line.trim();
                    let kept = cur.text.trim_end().len();
                    cur.text.truncate(kept);
                    cur.text.push(' ');
                    cur.text.push_str(add);
                    cur.last = number;
                }
            }
            LineKind::Continuation => ignored.push((number, line.trim_end().to_string())),
            LineKind::Start => {
                out.push(LogicalLine {
                    text: line.trim().to_string(),
                    first: number,
                    last: number,
                });
                open = true;
            }
        }
    }
    (out, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_joins_with_one_space_and_skips_comments() {
        let t = "a = 1,\n    2 # kept\n# inner comment\n\t3\n\nb = x\n";
        let l = logical_lines(t);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "a = 1, 2 # kept 3");
        assert_eq!((l[0].first, l[0].last), (1, 4));
        assert_eq!(l[1].text, "b = x");
        assert_eq!(l[1].first, 6);
    }

    #[test]
    fn leading_continuation_is_ignored_with_a_warning() {
        let (l, w) = logical_lines_with_warnings("  stray = 1\na = 2\n");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].text, "a = 2");
        assert_eq!(w, vec![(1, "  stray = 1".to_string())]);
    }

    #[test]
    fn crlf_and_indented_comments() {
        let t = "a = 1\r\n   # c\r\n  2\r\n";
        let l = logical_lines(t);
        assert_eq!(l[0].text, "a = 1 2");
    }
}

//! Reading Postfix table source text: logical lines and `key whitespace value` records.
//!
//! The rules are Postfix's `readllines()`: a line that starts with white space continues
//! the previous logical line (its leading white space is kept, the newline dropped); blank
//! lines and lines whose first non-blank character is `#` are skipped, also inside a
//! continued line. A logical line is reported with the number of its first physical line.

use std::io::{self, BufRead};

/// One logical line and the number of its first physical line (counting from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    pub line: usize,
    pub text: String,
}

/// Reads logical lines from `input`. Bytes that are not UTF-8 are replaced (U+FFFD).
pub struct LogicalLines<R> {
    input: R,
    physical: usize,
    pending: Option<LogicalLine>,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> LogicalLines<R> {
    pub fn new(input: R) -> LogicalLines<R> {
        LogicalLines {
            input,
            physical: 0,
            pending: None,
            buf: Vec::new(),
            done: false,
        }
    }
}

fn is_blank_or_comment(s: &[u8]) -> bool {
    match s.iter().find(|b| !b.is_ascii_whitespace()) {
        None => true,
        Some(b) => *b == b'#',
    }
}

impl<R: BufRead> Iterator for LogicalLines<R> {
    type Item = io::Result<LogicalLine>;

    fn next(&mut self) -> Option<io::Result<LogicalLine>> {
        loop {
            if self.done {
                return self.pending.take().map(Ok);
            }
            self.buf.clear();
            match self.input.read_until(b'\n', &mut self.buf) {
                Err(e) => return Some(Err(e)),
                Ok(0) => {
                    self.done = true;
                    continue;
                }
                Ok(_) => {}
            }
            self.physical += 1;
            while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                self.buf.pop();
            }
            if is_blank_or_comment(&self.buf) {
                continue;
            }
            let text = String::from_utf8_lossy(&self.buf);
            // A continuation with nothing to continue starts a line of its own.
            if self.buf[0].is_ascii_whitespace()
                && let Some(p) = self.pending.as_mut()
            {
                p.text.push_str(&text);
                continue;
            }
            let new = LogicalLine {
                line: self.physical,
                text: text.into_owned(),
            };
            if let Some(prev) = self.pending.replace(new) {
                return Some(Ok(prev));
            }
        }
    }
}

/// A record of a table source: `postmap` format (`key value`) or aliases(5) format
/// (`name: value, ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub key: String,
    pub value: String,
}

/// Which source syntax to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// postmap(1): `key whitespace value`.
    Postmap,
    /// postalias(1) / aliases(5): `name: value` (the colon ends the key).
    Aliases,
}

/// Splits one logical line into a record. `Err` carries the warning text Postfix prints
/// (without the `file, line N: ` prefix); such lines are skipped. `Ok(Some(w))` in the
/// second member is a warning for a record that is nevertheless kept.
pub fn parse_record(
    text: &str,
    format: SourceFormat,
) -> Result<(String, String, Option<&'static str>), &'static str> {
    match format {
        SourceFormat::Postmap => {
            let t = text.trim_start_matches(|c: char| c.is_ascii_whitespace());
            let end = t.find(|c: char| c.is_ascii_whitespace()).unwrap_or(t.len());
            let (key, rest) = t.split_at(end);
            let value = rest.trim_matches(|c: char| c.is_ascii_whitespace());
            if key.is_empty() || value.is_empty() {
                return Err("expected format: key whitespace value");
            }
            let warn = key
                .ends_with(':')
                .then_some("record is in \"key: value\" format; is this an alias file?");
            Ok((key.to_string(), value.to_string(), warn))
        }
        SourceFormat::Aliases => {
            let t = text.trim_start_matches(|c: char| c.is_ascii_whitespace());
            let colon = if let Some(rest) = t.strip_prefix('"') {
                rest.find('"')
                    .and_then(|q| rest[q + 1..].find(':').map(|c| q + 2 + c))
            } else {
                t.find(':')
            };
            let Some(colon) = colon else {
                return Err("need name:value pair");
            };
            let key = t[..colon].trim_matches(|c: char| c.is_ascii_whitespace());
            let value = t[colon + 1..].trim_matches(|c: char| c.is_ascii_whitespace());
            if key.is_empty() {
                return Err("missing name before ':'");
            }
            if value.is_empty() {
                return Err("missing value after ':'");
            }
            // Postfix stores the name without its quotes and the value as a normalised
            // address list (`a,b` and `a  , b` become `a, b`).
            let key = key
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .unwrap_or(key);
            Ok((key.to_string(), normalize_list(value), None))
        }
    }
}

/// Joins the comma-separated members of an alias value with `, ` (commas inside quotes,
/// `<>`, `()` and `[]` do not separate).
pub fn normalize_list(value: &str) -> String {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut esc = false;
    for c in value.chars() {
        if esc {
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => depth -= 1,
                ',' if depth <= 0 => {
                    parts.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| p.trim_matches(|c: char| c.is_ascii_whitespace()))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads every record of a source, calling `warn(line, text)` for lines that are skipped
/// or suspicious. Used by `texthash:` and by postmap/postalias when building an index.
pub fn read_records<R: BufRead>(
    input: R,
    format: SourceFormat,
    mut warn: impl FnMut(usize, &str),
    mut record: impl FnMut(Record),
) -> io::Result<()> {
    for l in LogicalLines::new(input) {
        let l = l?;
        match parse_record(&l.text, format) {
            Ok((key, value, w)) => {
                if let Some(w) = w {
                    warn(l.line, w);
                }
                record(Record {
                    line: l.line,
                    key,
                    value,
                });
            }
            Err(w) => warn(l.line, w),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<(usize, String)> {
        LogicalLines::new(s.as_bytes())
            .map(|l| l.map(|l| (l.line, l.text)).unwrap_or_default())
            .collect()
    }

    #[test]
    fn continuation_and_comments() {
        let got = lines("a b\n  c\n#x\n   d\n\nq w  \n");
        assert_eq!(
            got,
            vec![(1, "a b  c   d".to_string()), (6, "q w  ".to_string())]
        );
    }

    #[test]
    fn postmap_records() {
        assert_eq!(
            parse_record("key  some value \t", SourceFormat::Postmap),
            Ok(("key".into(), "some value".into(), None))
        );
        assert!(parse_record("lonely", SourceFormat::Postmap).is_err());
        assert!(parse_record("k: v", SourceFormat::Postmap).is_ok_and(|r| r.2.is_some()));
    }

    #[test]
    fn alias_records() {
        assert_eq!(
            parse_record("root: a, b", SourceFormat::Aliases),
            Ok(("root".into(), "a, b".into(), None))
        );
        assert_eq!(
            parse_record("\"x: y\": z", SourceFormat::Aliases),
            Ok(("x: y".into(), "z".into(), None))
        );
        assert!(parse_record("nocolon", SourceFormat::Aliases).is_err());
        assert_eq!(
            normalize_list("a,b  ,  \"c, d\" , <e,f>"),
            "a, b, \"c, d\", <e,f>"
        );
    }
}

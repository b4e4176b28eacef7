//! Server replies: `ddd-text` continuation lines ending in one `ddd text` line
//! (RFC 5321 §4.2). The parser is fed whatever bytes the socket gave and yields whole
//! replies. Line length and the number of lines of one reply are capped before anything is
//! kept, so a 10 MB banner costs at most [`MAX_LINE`] × [`MAX_LINES`] bytes of memory;
//! the excess is dropped, not refused, as Postfix truncates long replies.

use std::collections::VecDeque;
use std::fmt;

/// Longest reply line kept, in bytes (the rest of a longer line is dropped).
pub const MAX_LINE: usize = 2048;
/// Most lines of one reply kept (further lines are read and dropped).
pub const MAX_LINES: usize = 100;

/// One complete server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code of the last line (which decides, as in Postfix, when a
    /// server mixes codes).
    pub code: u16,
    /// Every line as received, code included, without the line end (`250-PIPELINING`).
    /// Non-UTF-8 bytes and control characters are replaced, so a line is safe to log.
    pub lines: Vec<String>,
}

impl Reply {
    /// Builds a one-line reply (tests, and replies the driver makes up).
    pub fn new(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![format!("{code} {text}")],
        }
    }

    /// The first digit: 2, 3, 4 or 5.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// True for 2xx.
    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// The text after the code on each line.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.get(4..).unwrap_or(""))
    }

    /// The RFC 3463 enhanced status code at the start of the first line's text, if it is
    /// one and its class agrees with the reply code.
    pub fn enhanced(&self) -> Option<String> {
        let text = self.texts().next()?;
        let word = text.split(' ').next()?;
        let parts: Vec<&str> = word.split('.').collect();
        let ok = parts.len() == 3
            && parts[0].len() == 1
            && parts[0].parse::<u16>().ok()? == self.class()
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then(|| word.to_string())
    }

    /// The status for DSNs and logs: the enhanced code, or `X.0.0` after the reply class.
    pub fn dsn(&self) -> String {
        self.enhanced()
            .unwrap_or_else(|| format!("{}.0.0", self.class().clamp(2, 5)))
    }

    /// The whole reply on one line as Postfix writes it in logs and bounces: every line,
    /// code included, joined with spaces (`550-5.7.1 first 550 5.7.1 second`).
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// A reply that is not SMTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line that does not start with three digits and a space, hyphen or line end; the
    /// (sanitised, truncated) line is kept for the log.
    Garbage(String),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Garbage(l) => write!(f, "unexpected server reply: {l}"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Incremental reply parser: [`push`](Self::push) bytes, take replies with
/// [`next_reply`](Self::next_reply).
#[derive(Debug, Default)]
pub struct ReplyParser {
    line: Vec<u8>,
    line_overflow: bool,
    lines: Vec<String>,
    ready: VecDeque<Result<Reply, ReplyError>>,
}

impl ReplyParser {
    /// An empty parser.
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Feeds bytes as they came from the server.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.take_bytes(&data[..i]);
                    data = &data[i + 1..];
                    self.end_line();
                }
                None => {
                    self.take_bytes(data);
                    data = &[];
                }
            }
        }
    }

    fn take_bytes(&mut self, b: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        if b.len() > room {
            self.line_overflow = true;
        }
        self.line.extend_from_slice(&b[..b.len().min(room)]);
    }

    fn end_line(&mut self) {
        let mut raw = std::mem::take(&mut self.line);
        self.line_overflow = false;
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
        let line = sanitize(&raw);
        let b = line.as_bytes();
        let code = (b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit))
            .then(|| line[..3].parse::<u16>().ok())
            .flatten()
            .filter(|c| (200..600).contains(c));
        let sep = b.get(3).copied();
        let (Some(code), Some(b' ' | b'-') | None) = (code, sep) else {
            self.lines.clear();
            self.ready.push_back(Err(ReplyError::Garbage(line)));
            return;
        };
        if self.lines.len() < MAX_LINES {
            self.lines.push(line);
        }
        if sep != Some(b'-') {
            self.ready.push_back(Ok(Reply {
                code,
                lines: std::mem::take(&mut self.lines),
            }));
        }
    }

    /// The next complete reply, if one has arrived.
    pub fn next_reply(&mut self) -> Option<Result<Reply, ReplyError>> {
        self.ready.pop_front()
    }

    /// True when bytes of an unfinished reply are buffered.
    pub fn is_partial(&self) -> bool {
        !self.line.is_empty() || !self.lines.is_empty()
    }

    /// Drops everything buffered (after STARTTLS: nothing sent in plaintext may count).
    pub fn clear(&mut self) {
        *self = ReplyParser::default();
    }
}

/// Makes a reply line safe to keep and log: invalid UTF-8 and control characters become
/// `?`.
fn sanitize(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| {
            if c.is_control() || c == '\u{fffd}' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Vec<Result<Reply, ReplyError>> {
        let mut p = ReplyParser::new();
        p.push(bytes);
        std::iter::from_fn(|| p.next_reply()).collect()
    }

    #[test]
    fn single_and_multi_line() {
        let r = parse(b"220 mx ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\n");
        assert_eq!(r.len(), 2);
        let ehlo = r[1].clone().expect("reply");
        assert_eq!(ehlo.code, 250);
        assert_eq!(ehlo.lines.len(), 3);
        assert_eq!(ehlo.text(), "250-mx 250-PIPELINING 250 SIZE 100");
    }

    #[test]
    fn byte_at_a_time_and_bare_lf() {
        let mut p = ReplyParser::new();
        for b in b"451-4.3.0 a\n451 4.3.0 b\n" {
            assert!(p.next_reply().is_none());
            p.push(&[*b]);
        }
        let r = p.next_reply().expect("one").expect("ok");
        assert_eq!(r.dsn(), "4.3.0");
        assert_eq!(r.text(), "451-4.3.0 a 451 4.3.0 b");
        assert!(!p.is_partial());
    }

    #[test]
    fn enhanced_code_must_match_class() {
        assert_eq!(Reply::new(550, "5.1.1 no").dsn(), "5.1.1");
        assert_eq!(Reply::new(550, "4.1.1 no").dsn(), "5.0.0");
        assert_eq!(Reply::new(450, "busy").dsn(), "4.0.0");
        assert_eq!(Reply::new(250, "2.0.0 Ok: queued as X").dsn(), "2.0.0");
        assert_eq!(Reply::new(550, "5.x.1 no").dsn(), "5.0.0");
    }

    #[test]
    fn garbage_and_huge_banner() {
        let r = parse(b"HTTP/1.1 400 Bad\r\n");
        assert!(matches!(&r[0], Err(ReplyError::Garbage(l)) if l.starts_with("HTTP")));
        let r = parse(b"220-hi\r\n554 no\r\n");
        assert_eq!(r[0].clone().expect("ok").code, 554);
        let r = parse(b"999 no\r\n");
        assert!(r[0].is_err());
        let mut big = b"220-".to_vec();
        big.extend(std::iter::repeat_n(b'x', 10 << 20));
        big.extend_from_slice(b"\r\n");
        for _ in 0..1000 {
            big.extend_from_slice(b"220-more\r\n");
        }
        big.extend_from_slice(b"220 end\r\n");
        let mut p = ReplyParser::new();
        for chunk in big.chunks(65536) {
            p.push(chunk);
        }
        let r = p.next_reply().expect("reply").expect("ok");
        assert_eq!(r.lines.len(), MAX_LINES);
        assert!(r.lines[0].len() <= MAX_LINE);
    }

    #[test]
    fn control_characters_are_replaced() {
        let r = parse(b"250 ok\x1b[31m\xff\r\n");
        let r = r[0].clone().expect("ok");
        assert_eq!(r.lines[0], "250 ok?[31m?");
    }

    #[test]
    fn code_only_line() {
        let r = parse(b"250\r\n");
        assert_eq!(r[0].clone().expect("ok").code, 250);
    }
}

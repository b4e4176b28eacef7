//! Reading the message from standard input as Sendmail does: CRLF line ends become LF, a
//! line with a lone `.` ends the input unless `-i`, and with `-t` the recipients are taken
//! from `To:`, `Cc:` and `Bcc:` (or their `Resent-` forms when any are present) and the
//! `Bcc:` headers are removed. Only the header is held in memory; the body streams.

use std::io::{self, BufRead, Read};

/// Longest piece of a line handled at once; longer lines pass through in pieces.
const PIECE: usize = 64 << 10;

/// Standard input as lines, with Sendmail's end-of-input rule.
pub struct Input<R> {
    inner: R,
    ignore_dots: bool,
    at_line_start: bool,
    done: bool,
}

impl<R: BufRead> Input<R> {
    pub fn new(inner: R, ignore_dots: bool) -> Self {
        Input {
            inner,
            ignore_dots,
            at_line_start: true,
            done: false,
        }
    }

    /// Reads the next line (or piece of a long line) into `out`, LF-terminated when the
    /// line ended; false at the end of input.
    pub fn next_line(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        out.clear();
        if self.done {
            return Ok(false);
        }
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            let room = PIECE - out.len();
            let (take, ended) = match buf.iter().take(room).position(|&b| b == b'\n') {
                Some(p) => (p + 1, true),
                None => (buf.len().min(room), false),
            };
            out.extend_from_slice(&buf[..take]);
            self.inner.consume(take);
            if ended || out.len() >= PIECE {
                break;
            }
        }
        if out.is_empty() {
            self.done = true;
            return Ok(false);
        }
        let line_start = self.at_line_start;
        self.at_line_start = out.ends_with(b"\n");
        if out.ends_with(b"\r\n") {
            out.truncate(out.len() - 2);
            out.push(b'\n');
        }
        if line_start && !self.ignore_dots && (out == b".\n" || out == b".") {
            self.done = true;
            out.clear();
            return Ok(false);
        }
        Ok(true)
    }
}

/// The message header, as logical header fields (each with its continuation lines).
#[derive(Debug, Default)]
pub struct Header {
    pub fields: Vec<Vec<u8>>,
    /// The first body line when the header ended without an empty line (kept for the body).
    pub first_body_line: Option<Vec<u8>>,
    /// The header ended with an empty line (which is kept out of `fields`).
    pub had_separator: bool,
    /// The whole input ended inside the header.
    pub input_ended: bool,
}

fn is_field_start(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    colon > 0 && line[..colon].iter().all(|&b| (33..=126).contains(&b))
}

/// The lower-case name of a header field.
pub fn field_name(field: &[u8]) -> String {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
    String::from_utf8_lossy(&field[..colon])
        .trim()
        .to_ascii_lowercase()
}

/// The unfolded value of a header field.
pub fn field_value(field: &[u8]) -> String {
    let colon = field.iter().position(|&b| b == b':').map_or(0, |c| c + 1);
    String::from_utf8_lossy(&field[colon..])
        .replace(['\r', '\n'], " ")
        .trim()
        .to_string()
}

/// Reads the header; stops at the empty line, at the first line that is not a header,
/// or when the header exceeds `limit` bytes (the rest then counts as body).
pub fn read_header<R: BufRead>(input: &mut Input<R>, limit: usize) -> io::Result<Header> {
    let mut h = Header::default();
    let mut line = Vec::new();
    let mut size = 0usize;
    loop {
        if !input.next_line(&mut line)? {
            h.input_ended = true;
            return Ok(h);
        }
        if line == b"\n" {
            h.had_separator = true;
            return Ok(h);
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t')) && !h.fields.is_empty();
        if continuation {
            if let Some(last) = h.fields.last_mut() {
                last.extend_from_slice(&line);
            }
        } else if is_field_start(&line) && size + line.len() <= limit {
            h.fields.push(line.clone());
        } else {
            h.first_body_line = Some(line.clone());
            return Ok(h);
        }
        size += line.len();
    }
}

impl Header {
    /// True when a field of this (lower-case) name is present.
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| field_name(f) == name)
    }

    /// Sendmail `-t`: the recipients of `To:`, `Cc:`, `Bcc:` (the `Resent-` ones when
    /// present); removes `Bcc:` and `Resent-Bcc:`.
    pub fn extract_recipients(&mut self) -> Vec<String> {
        let resent = self.fields.iter().any(|f| {
            matches!(
                field_name(f).as_str(),
                "resent-to" | "resent-cc" | "resent-bcc"
            )
        });
        let names: &[&str] = if resent {
            &["resent-to", "resent-cc", "resent-bcc"]
        } else {
            &["to", "cc", "bcc"]
        };
        let mut out = Vec::new();
        for f in &self.fields {
            if names.contains(&field_name(f).as_str()) {
                out.extend(parse_address_list(&field_value(f)));
            }
        }
        self.fields
            .retain(|f| !matches!(field_name(f).as_str(), "bcc" | "resent-bcc"));
        out
    }

    /// The header as bytes, followed by the separator line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.fields.concat();
        if self.had_separator || self.first_body_line.is_some() {
            out.push(b'\n');
        }
        if let Some(l) = &self.first_body_line {
            out.extend_from_slice(l);
        }
        out
    }
}

/// The addresses of an RFC 5322 address list: `Name <a@b>`, `a@b (comment)`,
/// `"quoted, name" <c@d>`, groups `team: a@b, c@d;`. Comments and display names are dropped.
pub fn parse_address_list(value: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    let mut cur = String::new();
    let (mut in_quote, mut depth, mut in_angle) = (false, 0usize, false);
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quote || depth > 0 => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' if depth == 0 => {
                in_quote = !in_quote;
                cur.push(c);
            }
            '(' if !in_quote => depth += 1,
            ')' if !in_quote && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            '<' if !in_quote => {
                in_angle = true;
                cur.push(c);
            }
            '>' if !in_quote => {
                in_angle = false;
                cur.push(c);
            }
            ':' if !in_quote && !in_angle => cur.clear(), // group name
            ',' | ';' if !in_quote && !in_angle => items.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    items.push(cur);
    items
        .into_iter()
        .filter_map(|item| {
            let item = item.trim();
            let addr = match (item.find('<'), item.rfind('>')) {
                (Some(a), Some(b)) if a < b => item[a + 1..b].trim(),
                _ => item,
            };
            // A source route `@a,@b:user@c` keeps only the mailbox.
            let addr = addr.rsplit_once(':').map_or(addr, |(_, m)| m).trim();
            (!addr.is_empty()).then(|| addr.to_string())
        })
        .collect()
}

/// The message content for the queue: the (possibly edited) header, then the rest of the
/// input line by line.
pub struct Content<R> {
    head: io::Cursor<Vec<u8>>,
    input: Input<R>,
    line: Vec<u8>,
    pos: usize,
}

impl<R: BufRead> Content<R> {
    pub fn new(head: Vec<u8>, input: Input<R>) -> Self {
        Content {
            head: io::Cursor::new(head),
            input,
            line: Vec::new(),
            pos: 0,
        }
    }
}

impl<R: BufRead> Read for Content<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if self.pos >= self.line.len() {
            self.pos = 0;
            if !self.input.next_line(&mut self.line)? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.line.len() - self.pos);
        buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_and_crlf() {
        let mut i = Input::new(&b"a\r\n..b\n.\nafter\n"[..], false);
        let mut l = Vec::new();
        let mut got = Vec::new();
        while i.next_line(&mut l).expect("read") {
            got.push(l.clone());
        }
        assert_eq!(got, vec![b"a\n".to_vec(), b"..b\n".to_vec()]);
        let mut i = Input::new(&b"a\n.\nafter"[..], true);
        let mut all = Vec::new();
        while i.next_line(&mut l).expect("read") {
            all.extend_from_slice(&l);
        }
        assert_eq!(all, b"a\n.\nafter");
    }

    #[test]
    fn extract_and_remove_bcc() {
        let msg = b"To: A <a@x>, b@y (Bee)\nCc: \"Doe, J\" <j@z>\nBcc: secret@w,\n\tother@w\nSubject: s\n\nbody\n";
        let mut input = Input::new(&msg[..], false);
        let mut h = read_header(&mut input, 1 << 20).expect("header");
        let r = h.extract_recipients();
        assert_eq!(r, ["a@x", "b@y", "j@z", "secret@w", "other@w"]);
        let head = String::from_utf8(h.to_bytes()).expect("utf8");
        assert!(!head.contains("Bcc") && !head.contains("secret"), "{head}");
        assert!(head.ends_with("Subject: s\n\n"));
        let mut rest = String::new();
        Content::new(Vec::new(), input)
            .read_to_string(&mut rest)
            .expect("body");
        assert_eq!(rest, "body\n");
    }

    #[test]
    fn address_lists() {
        assert_eq!(
            parse_address_list("team: a@b, c@d;, e@f"),
            ["a@b", "c@d", "e@f"]
        );
        assert_eq!(parse_address_list("<@r1,@r2:x@y>"), ["x@y"]);
        assert_eq!(
            parse_address_list("undisclosed-recipients:;"),
            Vec::<String>::new()
        );
        assert_eq!(parse_address_list("plain"), ["plain"]);
    }

    #[test]
    fn header_without_separator() {
        let mut input = Input::new(&b"Subject: x\nnot a header\nmore\n"[..], true);
        let h = read_header(&mut input, 1000).expect("h");
        assert_eq!(h.to_bytes(), b"Subject: x\n\nnot a header\n");
    }
}

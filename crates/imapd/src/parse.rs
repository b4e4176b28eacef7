//! IMAP command syntax, sans-IO: the [`Framer`] cuts the byte stream into whole commands
//! (lines plus their literals, synchronising `{n}` and non-synchronising `{n+}`), capping
//! the line length and every announced literal *before* anything is allocated for it; the
//! [`Parser`] turns one command into a tag, a name and a list of [`Value`]s (atoms, quoted
//! strings, literals, parenthesised lists with a nesting limit).
//!
//! Atoms are read permissively (anything but space, parentheses, `{`, `"` and controls),
//! and a `[` inside an atom runs to its matching `]`, so `BODY.PEEK[HEADER.FIELDS (FROM)]<0.10>`
//! is one atom for the FETCH code to take apart.

/// Nesting depth of parenthesised lists accepted.
const MAX_DEPTH: usize = 32;

/// One command argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Atom(String),
    /// A quoted string or a literal.
    Str(Vec<u8>),
    List(Vec<Value>),
}

impl Value {
    /// An atom or string as text (lossy for 8-bit bytes).
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Atom(a) => Some(a.clone()),
            Value::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Value::List(_) => None,
        }
    }
}

/// What the framer has for the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole command (every line ending in CRLF, literals inline).
    Command(Vec<u8>),
    /// The client waits for `+` before sending a literal.
    Continue,
    /// A line longer than the limit (the rest of it is skipped); the tag if known.
    TooLong(Option<String>),
    /// A literal over the limit was announced. Synchronising: refused, the client sends
    /// nothing more of that command. Non-synchronising (`fatal`): the bytes are coming
    /// anyway, the connection is closed.
    TooBig { tag: Option<String>, fatal: bool },
}

/// Cuts input into commands.
pub struct Framer {
    buf: Vec<u8>,
    cmd: Vec<u8>,
    /// Literal bytes still to take into `cmd`.
    literal: usize,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    pub max_line: usize,
    pub max_literal: u64,
}

impl Framer {
    pub fn new(max_line: usize, max_literal: u64) -> Framer {
        Framer {
            buf: Vec::new(),
            cmd: Vec::new(),
            literal: 0,
            skipping: false,
            max_line,
            max_literal,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received and not yet taken into a command.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drops everything buffered (after STARTTLS: plaintext pipelined behind it).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.cmd.clear();
        self.literal = 0;
        self.skipping = false;
    }

    /// The next frame, or `None` when more input is needed.
    pub fn next(&mut self) -> Option<Frame> {
        loop {
            if self.literal > 0 {
                let n = self.literal.min(self.buf.len());
                if n == 0 {
                    return None;
                }
                self.cmd.extend(self.buf.drain(..n));
                self.literal -= n;
                continue;
            }
            let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > self.max_line && !self.skipping {
                    let tag = tag_of(&self.cmd, &self.buf);
                    self.buf.clear();
                    self.cmd.clear();
                    self.skipping = true;
                    return Some(Frame::TooLong(tag));
                }
                if self.skipping {
                    self.buf.clear();
                }
                return None;
            };
            let mut line: Vec<u8> = self.buf.drain(..=lf).collect();
            if self.skipping {
                self.skipping = false;
                continue;
            }
            if line.len() > self.max_line {
                let tag = tag_of(&self.cmd, &line);
                self.cmd.clear();
                return Some(Frame::TooLong(tag));
            }
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.cmd.extend_from_slice(&line);
            self.cmd.extend_from_slice(b"\r\n");
            if let Some((n, sync)) = literal_announced(&line) {
                if n.saturating_add(self.cmd.len() as u64) > self.max_literal {
                    let tag = tag_of(&self.cmd, b"");
                    self.cmd.clear();
                    return Some(Frame::TooBig { tag, fatal: !sync });
                }
                self.literal = n as usize;
                if sync {
                    return Some(Frame::Continue);
                }
                continue;
            }
            return Some(Frame::Command(std::mem::take(&mut self.cmd)));
        }
    }

    /// A single line (AUTHENTICATE responses, IDLE's DONE), without its CRLF.
    pub fn line(&mut self) -> Option<Result<Vec<u8>, ()>> {
        let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() > self.max_line {
                self.buf.clear();
                return Some(Err(()));
            }
            return None;
        };
        let mut line: Vec<u8> = self.buf.drain(..=lf).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Some(Ok(line))
    }
}

/// The tag at the start of a command, when it looks like one.
fn tag_of(cmd: &[u8], more: &[u8]) -> Option<String> {
    let src = if cmd.is_empty() { more } else { cmd };
    let end = src.iter().position(|&b| b == b' ')?;
    let t = &src[..end];
    (!t.is_empty() && t.len() <= 64 && t.iter().all(|&b| is_atom_char(b) && b != b'+'))
        .then(|| String::from_utf8_lossy(t).into_owned())
}

/// `{n}` or `{n+}` at the end of a line: (n, synchronising).
fn literal_announced(line: &[u8]) -> Option<(u64, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let mut digits = &inner[open + 1..];
    let sync = match digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
    {
        Some(d) => {
            digits = d;
            false
        }
        None => true,
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
    Some((n, sync))
}

fn is_atom_char(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b'(' | b')' | b'{' | b'"')
}

/// A parsed command: `tag name args...`.
#[derive(Debug)]
pub struct Command {
    pub tag: String,
    pub name: String,
    pub args: Vec<Value>,
}

/// Why a command could not be parsed: the tag when it was read, and the text for `BAD`.
#[derive(Debug)]
pub struct SyntaxError {
    pub tag: Option<String>,
    pub why: &'static str,
}

/// Parses one framed command.
pub fn command(raw: &[u8]) -> Result<Command, SyntaxError> {
    let mut p = Parser { b: raw, i: 0 };
    let tag = match p.atom_raw() {
        Some(t) if !t.contains('+') => t,
        _ => {
            return Err(SyntaxError {
                tag: None,
                why: "Error in IMAP command received by server.",
            });
        }
    };
    let err = |why| SyntaxError {
        tag: Some(tag.clone()),
        why,
    };
    if !p.eat(b' ') {
        return Err(err("Error in IMAP command received by server."));
    }
    let name = p
        .atom_raw()
        .ok_or_else(|| err("Error in IMAP command received by server."))?
        .to_ascii_uppercase();
    let mut args = Vec::new();
    loop {
        if p.at_end() {
            break;
        }
        if !p.eat(b' ') {
            return Err(err("Error in IMAP command: Missing space."));
        }
        if p.at_end() {
            break;
        }
        args.push(p.value(0).map_err(err)?);
    }
    Ok(Command { tag, name, args })
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.b[self.i..].starts_with(b"\r\n") || self.i >= self.b.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn atom_raw(&mut self) -> Option<String> {
        let start = self.i;
        let mut depth = 0usize;
        while let Some(&c) = self.b.get(self.i) {
            if c == b'[' {
                depth += 1;
            } else if c == b']' && depth > 0 {
                depth -= 1;
            } else if c == b'\r'
                || c == b'\n'
                || (depth == 0 && !is_atom_char(c))
                || (depth > 0 && (c == b'{' || c < b' '))
            {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.b[start..self.i]).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value, &'static str> {
        match self.b.get(self.i) {
            Some(b'(') => {
                if depth >= MAX_DEPTH {
                    return Err("Error in IMAP command: Too deep nesting.");
                }
                self.i += 1;
                let mut v = Vec::new();
                loop {
                    if self.eat(b')') {
                        return Ok(Value::List(v));
                    }
                    if !v.is_empty() && !self.eat(b' ') {
                        return Err("Error in IMAP command: Missing ')'.");
                    }
                    if self.at_end() {
                        return Err("Error in IMAP command: Missing ')'.");
                    }
                    v.push(self.value(depth + 1)?);
                }
            }
            Some(b'"') => {
                self.i += 1;
                let mut s = Vec::new();
                loop {
                    match self.b.get(self.i) {
                        Some(b'"') => {
                            self.i += 1;
                            return Ok(Value::Str(s));
                        }
                        Some(b'\\') => {
                            match self.b.get(self.i + 1) {
                                Some(&c @ (b'"' | b'\\')) => s.push(c),
                                _ => return Err("Error in IMAP command: Invalid quoted string."),
                            }
                            self.i += 2;
                        }
                        Some(b'\r' | b'\n') | None => {
                            return Err("Error in IMAP command: Unterminated quoted string.");
                        }
                        Some(&c) => {
                            s.push(c);
                            self.i += 1;
                        }
                    }
                }
            }
            // A literal8 (RFC 3516, APPEND of binary data) reads as a literal.
            Some(b'~') if self.b.get(self.i + 1) == Some(&b'{') => {
                self.i += 1;
                self.value(depth)
            }
            Some(b'{') => {
                let close = self.b[self.i..]
                    .iter()
                    .position(|&c| c == b'}')
                    .ok_or("Error in IMAP command: Invalid literal.")?;
                let (n, _) = literal_announced(&self.b[self.i..self.i + close + 1])
                    .ok_or("Error in IMAP command: Invalid literal.")?;
                self.i += close + 1;
                if !self.b[self.i..].starts_with(b"\r\n") {
                    return Err("Error in IMAP command: Invalid literal.");
                }
                self.i += 2;
                let n = usize::try_from(n).map_err(|_| "Literal too big.")?;
                let end = self
                    .i
                    .checked_add(n)
                    .filter(|&e| e <= self.b.len())
                    .ok_or("Error in IMAP command: Invalid literal.")?;
                let s = self.b[self.i..end].to_vec();
                self.i = end;
                Ok(Value::Str(s))
            }
            _ => self
                .atom_raw()
                .map(Value::Atom)
                .ok_or("Error in IMAP command: Invalid characters in atom."),
        }
    }
}

/// Parses `1:3,5,7:*` into ranges; `*` is `star`. Ranges come back low-high.
pub fn sequence_set(s: &str, star: u32) -> Option<Vec<(u32, u32)>> {
    if s.is_empty() {
        return None;
    }
    let num = |x: &str| -> Option<u32> {
        if x == "*" {
            Some(star)
        } else if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) && !x.starts_with('0') {
            x.parse().ok()
        } else {
            None
        }
    };
    s.split(',')
        .map(|part| {
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let a = num(part)?;
                    (a, a)
                }
            };
            Some((a.min(b), a.max(b)))
        })
        .collect()
}

/// A string for the wire: quoted when it can be, a literal otherwise; `NIL` for `None`.
pub fn astring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    let Some(s) = s else {
        out.extend_from_slice(b"NIL");
        return;
    };
    if s.len() < 1024 && s.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut f = Framer::new(100, 1000);
        f.feed(input);
        std::iter::from_fn(|| f.next()).collect()
    }

    #[test]
    fn framing() {
        assert_eq!(
            frames(b"a NOOP\r\nb APPEND x {3}\r\nabc\r\n"),
            vec![
                Frame::Command(b"a NOOP\r\n".to_vec()),
                Frame::Continue,
                Frame::Command(b"b APPEND x {3}\r\nabc\r\n".to_vec())
            ]
        );
        assert_eq!(
            frames(b"c APPEND x {4+}\r\nab\r\n\r\n"),
            vec![Frame::Command(b"c APPEND x {4+}\r\nab\r\n\r\n".to_vec())]
        );
        assert_eq!(
            frames(b"d APPEND x {2147483648}\r\ne NOOP\r\n"),
            vec![
                Frame::TooBig {
                    tag: Some("d".into()),
                    fatal: false
                },
                Frame::Command(b"e NOOP\r\n".to_vec())
            ]
        );
        let long = [b"f ".to_vec(), vec![b'x'; 300], b"\r\ng NOOP\r\n".to_vec()].concat();
        assert_eq!(
            frames(&long),
            vec![
                Frame::TooLong(Some("f".into())),
                Frame::Command(b"g NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn literal8() -> Result<(), String> {
        let c = command(b"A APPEND x ~{3}\r\na\0b\r\n").map_err(|e| e.why.to_string())?;
        assert_eq!(c.args[1], Value::Str(b"a\0b".to_vec()));
        assert_eq!(
            frames(b"A APPEND x ~{3}\r\na\0b\r\n"),
            vec![
                Frame::Continue,
                Frame::Command(b"A APPEND x ~{3}\r\na\0b\r\n".to_vec())
            ]
        );
        Ok(())
    }

    #[test]
    fn parsing() -> Result<(), String> {
        let c = command(b"A1 fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>) \"q\\\"s\" {2}\r\nhi\r\n")
            .map_err(|e| e.why.to_string())?;
        assert_eq!(c.tag, "A1");
        assert_eq!(c.name, "FETCH");
        assert_eq!(
            c.args,
            vec![
                Value::Atom("1:*".into()),
                Value::List(vec![
                    Value::Atom("FLAGS".into()),
                    Value::Atom("BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>".into())
                ]),
                Value::Str(b"q\"s".to_vec()),
                Value::Str(b"hi".to_vec()),
            ]
        );
        assert!(command(b"x LIST (((((((((((((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))))))))))))\r\n").is_err());
        assert!(command(b"x LOGIN \"unterminated\r\n").is_err());
        assert!(command(b"\r\n").is_err());
        assert_eq!(
            sequence_set("1:3,5,*:7", 9),
            Some(vec![(1, 3), (5, 5), (7, 9)])
        );
        assert_eq!(sequence_set("0", 9), None);
        assert_eq!(sequence_set("1,,2", 9), None);
        Ok(())
    }
}

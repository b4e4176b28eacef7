//! Copying message content into a mailbox file: line-end conversion, `From ` quoting, limits.
//!
//! Content reaches a delivery agent with CRLF line ends (as received over SMTP) or LF line ends
//! (as submitted locally). Mailbox files on UNIX store LF, as Postfix's `mail_copy()` writes them,
//! so [`Converter`] turns every CRLF into LF. A CR that is not followed by LF is message data
//! and is kept. An incomplete last line gets an LF, as in Postfix.
//!
//! For mbox, lines that begin with `From ` get a `>` prepended (mboxo quoting as Postfix does
//! it: `>From ` is left as it is), and one empty line is appended after the message so the
//! next `From ` line is found by readers.

use std::io::{self, Read, Write};

use crate::error::{Error, Result};

/// How to transform content while copying.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Style {
    /// Prepend `>` to lines starting with `From ` (mbox).
    pub quote_from: bool,
    /// Append one empty line after the message (mbox).
    pub blank_line_at_end: bool,
}

/// Streaming CRLF→LF converter and `From ` quoter; state survives chunk boundaries.
#[derive(Debug)]
pub(crate) struct Converter {
    style: Style,
    at_line_start: bool,
    pending_cr: bool,
    /// Bytes held at the start of a line while they may still become `From `.
    held: Vec<u8>,
}

const FROM_: &[u8] = b"From ";

impl Converter {
    pub(crate) fn new(style: Style) -> Self {
        Converter {
            style,
            at_line_start: true,
            pending_cr: false,
            held: Vec::with_capacity(FROM_.len()),
        }
    }

    /// Converts `input`, appending the result to `out`.
    pub(crate) fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    self.newline(out);
                    continue;
                }
                self.data(b'\r', out);
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => self.newline(out),
                _ => self.data(b, out),
            }
        }
    }

    /// Flushes held state at end of content: completes the last line, adds the mbox blank line.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.data(b'\r', out);
        }
        if !self.held.is_empty() {
            out.append(&mut self.held);
            self.at_line_start = false;
        }
        if !self.at_line_start {
            out.push(b'\n');
            self.at_line_start = true;
        }
        if self.style.blank_line_at_end {
            out.push(b'\n');
        }
    }

    fn newline(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.held);
        out.push(b'\n');
        self.at_line_start = true;
    }

    fn data(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.at_line_start && self.style.quote_from {
            self.held.push(b);
            if !FROM_.starts_with(&self.held) {
                out.append(&mut self.held);
                self.at_line_start = false;
            } else if self.held.len() == FROM_.len() {
                out.push(b'>');
                out.append(&mut self.held);
                self.at_line_start = false;
            }
            return;
        }
        self.at_line_start = false;
        out.push(b);
    }
}

/// Why a copy stopped.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
    /// More than the allowed number of bytes would have been written.
    TooBig,
}

impl CopyError {
    /// Turns the copy failure into the crate error, naming the destination file.
    pub(crate) fn into_error(self, path: &std::path::Path, limit: u64) -> Error {
        match self {
            CopyError::Read(e) => Error::Source(e),
            CopyError::Write(e) => Error::io("write", path, e),
            CopyError::TooBig => Error::SizeLimit { limit },
        }
    }
}

/// Checks that caller-given header lines cannot inject extra lines or break the format.
pub(crate) fn check_header_lines(lines: &[&str]) -> Result<()> {
    for line in lines {
        if line.bytes().any(|b| b == b'\n' || b == b'\r') {
            return Err(Error::Invalid(format!(
                "header line contains a line break: {:?}",
                line.chars().take(80).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// Copies `prefix` verbatim, then `headers` (one line each, LF added), then the converted
/// `src` into `dst`, refusing to write more than `max` bytes in total. Returns bytes written.
pub(crate) fn copy_message<W: Write, R: Read>(
    dst: &mut W,
    prefix: &[u8],
    headers: &[&str],
    src: &mut R,
    style: Style,
    max: u64,
) -> std::result::Result<u64, CopyError> {
    let mut written: u64 = 0;
    let mut emit = |dst: &mut W, bytes: &[u8]| -> std::result::Result<(), CopyError> {
        let n = bytes.len() as u64;
        if written.saturating_add(n) > max {
            return Err(CopyError::TooBig);
        }
        dst.write_all(bytes).map_err(CopyError::Write)?;
        written += n;
        Ok(())
    };
    let mut out = Vec::with_capacity(64 * 1024 + 1024);
    out.extend_from_slice(prefix);
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.push(b'\n');
    }
    let mut conv = Converter::new(style);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        conv.push(&buf[..n], &mut out);
        if out.len() >= 64 * 1024 {
            emit(dst, &out)?;
            out.clear();
        }
    }
    conv.finish(&mut out);
    emit(dst, &out)?;
    dst.flush().map_err(CopyError::Write)?;
    Ok(written)
}

/// Adapts an iterator of chunks into [`Read`], for callers that hold content as pieces
/// (for example records read from a queue file).
///
/// ```
/// use std::io::Read;
/// let mut r = oxipost_mailbox::ChunkReader::new(vec![Ok::<_, std::io::Error>(b"ab".to_vec()), Ok(b"c".to_vec())]);
/// let mut s = String::new();
/// r.read_to_string(&mut s).unwrap();
/// assert_eq!(s, "abc");
/// ```
#[derive(Debug)]
pub struct ChunkReader<I, B> {
    chunks: I,
    current: Option<B>,
    pos: usize,
}

impl<I, B> ChunkReader<I, B>
where
    I: Iterator<Item = io::Result<B>>,
    B: AsRef<[u8]>,
{
    /// Wraps an iterator (or anything iterable) of `io::Result` chunks.
    pub fn new(chunks: impl IntoIterator<IntoIter = I>) -> Self {
        ChunkReader {
            chunks: chunks.into_iter(),
            current: None,
            pos: 0,
        }
    }
}

impl<I, B> Read for ChunkReader<I, B>
where
    I: Iterator<Item = io::Result<B>>,
    B: AsRef<[u8]>,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if let Some(chunk) = &self.current {
                let rest = &chunk.as_ref()[self.pos..];
                if !rest.is_empty() {
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    self.pos += n;
                    return Ok(n);
                }
            }
            match self.chunks.next() {
                None => return Ok(0),
                Some(chunk) => {
                    self.current = Some(chunk?);
                    self.pos = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(style: Style, chunks: &[&[u8]]) -> Vec<u8> {
        let mut c = Converter::new(style);
        let mut out = Vec::new();
        for ch in chunks {
            c.push(ch, &mut out);
        }
        c.finish(&mut out);
        out
    }

    const MBOX: Style = Style {
        quote_from: true,
        blank_line_at_end: true,
    };

    #[test]
    fn crlf_becomes_lf_even_across_chunks() {
        let out = convert(Style::default(), &[b"a\r", b"\nb\r\n"]);
        assert_eq!(out, b"a\nb\n");
    }

    #[test]
    fn bare_cr_is_kept_and_last_line_completed() {
        assert_eq!(convert(Style::default(), &[b"a\rb"]), b"a\rb\n");
        assert_eq!(convert(Style::default(), &[b"a\r"]), b"a\r\n");
        assert_eq!(convert(Style::default(), &[b""]), b"");
    }

    #[test]
    fn from_quoting_only_quotes_from_space() {
        let out = convert(
            MBOX,
            &[b"From x\n>From y\nFrom\nFro", b"m z\nXFrom a\nFrom", b" \n"],
        );
        assert_eq!(
            out,
            b">From x\n>From y\nFrom\n>From z\nXFrom a\n>From \n\n".as_slice()
        );
    }

    #[test]
    fn partial_from_at_end_is_flushed() {
        assert_eq!(convert(MBOX, &[b"a\nFro"]), b"a\nFro\n\n");
    }

    #[test]
    fn copy_respects_limit() {
        let mut dst = Vec::new();
        let r = copy_message(
            &mut dst,
            b"",
            &["X: y"],
            &mut &b"hello\n"[..],
            Style::default(),
            5,
        );
        assert!(matches!(r, Err(CopyError::TooBig)));
        let mut dst = Vec::new();
        let n = copy_message(
            &mut dst,
            b"",
            &["X: y"],
            &mut &b"hello\r\n"[..],
            Style::default(),
            100,
        );
        assert!(matches!(n, Ok(11)));
        assert_eq!(dst, b"X: y\nhello\n");
    }

    struct FullDisk(i32);

    impl Write for FullDisk {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn full_disk_and_quota_are_temporary_write_errors() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let r = copy_message(
                &mut FullDisk(errno),
                b"",
                &[],
                &mut &b"x\n"[..],
                Style::default(),
                u64::MAX,
            );
            let err = match r {
                Err(e) => e.into_error(std::path::Path::new("/m"), u64::MAX),
                Ok(_) => panic!("write to a full disk succeeded"),
            };
            assert!(matches!(err, Error::Io { op: "write", .. }));
            assert!(err.is_temporary() && err.is_full(), "{err}");
        }
    }

    #[test]
    fn header_lines_with_breaks_are_refused() {
        assert!(check_header_lines(&["A: b\r\nC: d"]).is_err());
        assert!(check_header_lines(&["A: b"]).is_ok());
    }
}

//! Messages on the POP3 wire: line ends as CRLF, dot-stuffing, the `TOP` cut, and the
//! size a `LIST`/`STAT` reports for them.
//!
//! Mailboxes store LF line ends (Maildir files, mbox); POP3 sends CRLF. A message's POP3
//! size is the number of octets of its CRLF form without dot-stuffing — what RFC 1939's
//! "exact size" means and what Dovecot reports — so [`wire_size`] counts one extra octet
//! per LF not already preceded by CR. A last line without a line end gets one on the
//! wire (the terminator needs it) and it is counted.

/// The POP3 size of `content` (LF or CRLF line ends): the octets [`write_message`] sends
/// without its dot-stuffing and terminator.
pub fn wire_size(content: &[u8]) -> u64 {
    let mut size = content.len() as u64;
    let mut prev = 0u8;
    for &b in content {
        if b == b'\n' && prev != b'\r' {
            size += 1;
        }
        prev = b;
    }
    if !content.is_empty() && prev != b'\n' {
        size += 2;
    }
    size
}

/// Appends `content` as a POP3 multi-line body: CRLF line ends, a `.` doubled at the start
/// of a line, and the terminating `.` line. With `top = Some(n)` only the header, the
/// empty line after it and the first `n` body lines are sent (RFC 1939 `TOP`).
pub fn write_message(content: &[u8], top: Option<u64>, out: &mut Vec<u8>) {
    out.reserve(content.len() + content.len() / 32 + 8);
    let mut in_body = false;
    let mut body_lines: u64 = 0;
    let mut rest = content;
    while !rest.is_empty() {
        if in_body
            && let Some(n) = top
            && body_lines >= n
        {
            break;
        }
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        if in_body {
            body_lines += 1;
        } else if line.is_empty() {
            in_body = true;
        }
        rest = next;
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstuffed(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn crlf_and_dots() {
        let msg = b"Subject: x\n\n.leading\n..two\nend\n";
        let mut out = Vec::new();
        write_message(msg, None, &mut out);
        assert_eq!(
            out,
            b"Subject: x\r\n\r\n..leading\r\n...two\r\nend\r\n.\r\n".to_vec()
        );
        assert_eq!(unstuffed(&out).len() as u64, wire_size(msg));
    }

    #[test]
    fn size_counts_crs_once() {
        assert_eq!(wire_size(b"a\r\nb\n"), 6);
        assert_eq!(wire_size(b"a"), 3);
        assert_eq!(wire_size(b""), 0);
        let mut out = Vec::new();
        write_message(b"a\r\nb\n", None, &mut out);
        assert_eq!(out, b"a\r\nb\r\n.\r\n".to_vec());
        out.clear();
        write_message(b"no end", None, &mut out);
        assert_eq!(out, b"no end\r\n.\r\n".to_vec());
        assert_eq!(unstuffed(&out).len() as u64, wire_size(b"no end"));
    }

    #[test]
    fn top_cuts_body() {
        let msg = b"A: 1\nB: 2\n\none\n.two\nthree\n";
        let mut out = Vec::new();
        write_message(msg, Some(0), &mut out);
        assert_eq!(out, b"A: 1\r\nB: 2\r\n\r\n.\r\n".to_vec());
        out.clear();
        write_message(msg, Some(2), &mut out);
        assert_eq!(out, b"A: 1\r\nB: 2\r\n\r\none\r\n..two\r\n.\r\n".to_vec());
        out.clear();
        write_message(msg, Some(99), &mut out);
        assert_eq!(
            out,
            b"A: 1\r\nB: 2\r\n\r\none\r\n..two\r\nthree\r\n.\r\n".to_vec()
        );
    }

    #[test]
    fn lone_dot_line_is_stuffed() {
        let mut out = Vec::new();
        write_message(b"H: v\n\n.\n", None, &mut out);
        assert_eq!(out, b"H: v\r\n\r\n..\r\n.\r\n".to_vec());
    }
}

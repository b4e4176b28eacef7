//! Message content for the wire. Queue files keep content as received (CRLF or bare LF
//! line ends); SMTP needs CRLF everywhere, dot-stuffing for `DATA` (not for `BDAT`), and
//! 7-bit content for a server that does not offer `8BITMIME` — Postfix's smtp client
//! converts 8-bit MIME parts to quoted-printable in that case, and so does
//! [`downgrade_8bit`].

/// True when any byte has the high bit set.
pub fn has_8bit(content: &[u8]) -> bool {
    content.iter().any(|&b| b >= 0x80)
}

/// Every line ending becomes CRLF (bare LF and bare CR at a line end alike); a last line
/// without an ending gets one. An empty message stays empty.
pub fn to_crlf(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 2);
    let mut i = 0;
    while i < content.len() {
        let b = content[i];
        match b {
            b'\r' if content.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The `DATA` payload of CRLF content: lines starting with `.` get another `.`, and the
/// terminating `.` line is appended.
pub fn dot_stuff(crlf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(crlf.len() + 64);
    let mut at_line_start = true;
    for &b in crlf {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Converts 8-bit content (CRLF line ends) to 7 bits: every MIME leaf part whose body has
/// 8-bit bytes is re-encoded as quoted-printable and its `Content-Transfer-Encoding`
/// replaced; multipart bodies are walked by their boundary. Header bytes are left alone,
/// as Postfix does. Returns `None` for content that cannot be converted (an 8-bit body
/// under `message/*`, or a part already declared `base64`/`quoted-printable` with 8-bit
/// bytes in it) — Postfix then sends it unchanged or bounces, per its settings.
pub fn downgrade_8bit(crlf: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(crlf.len() + crlf.len() / 8);
    convert_entity(crlf, &mut out, 0)?;
    Some(out)
}

const MAX_DEPTH: usize = 20;

fn convert_entity(entity: &[u8], out: &mut Vec<u8>, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (header, body) = split_header(entity);
    let ctype = header_value(header, "content-type").unwrap_or_default();
    let ctype_l = ctype.to_ascii_lowercase();
    if !has_8bit(body) {
        out.extend_from_slice(entity);
        return Some(());
    }
    if ctype_l.trim_start().starts_with("multipart/") {
        let boundary = param(&ctype, "boundary")?;
        out.extend_from_slice(header);
        return convert_multipart(body, boundary.as_bytes(), out, depth);
    }
    if ctype_l.trim_start().starts_with("message/") {
        return None;
    }
    let cte = header_value(header, "content-transfer-encoding")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if cte == "base64" || cte == "quoted-printable" {
        return None;
    }
    // Header without Content-Transfer-Encoding and MIME-Version lines, then ours.
    let mut saw_mime_version = depth > 0;
    let mut skipping = false;
    for line in lines(header) {
        let is_cont = matches!(line.first(), Some(b' ' | b'\t'));
        if is_cont {
            if !skipping {
                out.extend_from_slice(line);
            }
            continue;
        }
        skipping = false;
        let name = field_name(line);
        if name.eq_ignore_ascii_case("content-transfer-encoding") {
            skipping = true;
            continue;
        }
        if name.eq_ignore_ascii_case("mime-version") {
            saw_mime_version = true;
        }
        if line == b"\r\n" {
            break;
        }
        out.extend_from_slice(line);
    }
    if !saw_mime_version {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n");
    if header.ends_with(b"\r\n\r\n") || header == b"\r\n" {
        out.extend_from_slice(b"\r\n");
    }
    quoted_printable(body, out);
    Some(())
}

fn convert_multipart(body: &[u8], boundary: &[u8], out: &mut Vec<u8>, depth: usize) -> Option<()> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    // Positions of delimiter lines.
    let mut part_start: Option<usize> = None;
    let mut pos = 0;
    for line in lines(body) {
        let start = pos;
        pos += line.len();
        let trimmed = trim_crlf(line);
        if trimmed.starts_with(&delim) {
            let rest = &trimmed[delim.len()..];
            let closing = rest.starts_with(b"--");
            if rest.iter().all(|b| *b == b' ' || *b == b'\t') || closing {
                if let Some(ps) = part_start {
                    // The CRLF before a delimiter belongs to the delimiter.
                    let part = &body[ps..start];
                    let (content, crlf) = match part.strip_suffix(b"\r\n") {
                        Some(c) => (c, true),
                        None => (part, false),
                    };
                    let mut conv = Vec::new();
                    let mut with_end = content.to_vec();
                    with_end.extend_from_slice(b"\r\n");
                    convert_entity(&with_end, &mut conv, depth + 1)?;
                    if !crlf && conv.ends_with(b"\r\n") {
                        conv.truncate(conv.len() - 2);
                    }
                    out.extend_from_slice(&conv);
                } else {
                    out.extend_from_slice(&body[..start]);
                }
                out.extend_from_slice(line);
                if closing {
                    out.extend_from_slice(&body[pos..]);
                    return Some(());
                }
                part_start = Some(pos);
                continue;
            }
        }
    }
    // No closing delimiter: convert what follows the last delimiter as a part.
    match part_start {
        Some(ps) => convert_entity(&body[ps..], out, depth + 1),
        None => {
            out.extend_from_slice(body);
            Some(())
        }
    }
}

/// Splits an entity into its header (including the empty line) and body.
fn split_header(entity: &[u8]) -> (&[u8], &[u8]) {
    if entity.starts_with(b"\r\n") {
        return (&entity[..2], &entity[2..]);
    }
    match find(entity, b"\r\n\r\n") {
        Some(i) => (&entity[..i + 4], &entity[i + 4..]),
        None => (entity, &[]),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Lines including their CRLF (the last one may lack it).
fn lines(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    b.split_inclusive(|&c| c == b'\n')
}

fn trim_crlf(l: &[u8]) -> &[u8] {
    l.strip_suffix(b"\r\n")
        .or_else(|| l.strip_suffix(b"\n"))
        .unwrap_or(l)
}

fn field_name(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b':').unwrap_or(0);
    String::from_utf8_lossy(&line[..end]).trim().to_string()
}

/// The unfolded value of the first header field with this name.
fn header_value(header: &[u8], name: &str) -> Option<String> {
    let mut value: Option<String> = None;
    let mut in_field = false;
    for line in lines(header) {
        let is_cont = matches!(line.first(), Some(b' ' | b'\t'));
        if is_cont && in_field {
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(trim_crlf(line)).trim());
            }
            continue;
        }
        if value.is_some() {
            break;
        }
        in_field = false;
        if field_name(line).eq_ignore_ascii_case(name) {
            let colon = line.iter().position(|&b| b == b':')?;
            value = Some(
                String::from_utf8_lossy(trim_crlf(&line[colon + 1..]))
                    .trim()
                    .to_string(),
            );
            in_field = true;
        }
    }
    value
}

/// A parameter of a structured header value (`boundary="x"`).
fn param(value: &str, name: &str) -> Option<String> {
    for part in value.split(';').skip(1) {
        let (k, v) = part.split_once('=')?;
        if k.trim().eq_ignore_ascii_case(name) {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.split_once('"').map(|(a, _)| a))
                .unwrap_or(v);
            return (!v.is_empty()).then(|| v.to_string());
        }
    }
    None
}

/// RFC 2045 quoted-printable of a CRLF body: lines at most 76 characters with soft line
/// breaks, trailing white space encoded, line ends kept as hard breaks.
fn quoted_printable(body: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for line in lines(body) {
        let (text, eol) = match line.strip_suffix(b"\r\n") {
            Some(t) => (t, true),
            None => (line, false),
        };
        let mut col = 0;
        for (i, &b) in text.iter().enumerate() {
            let last = i + 1 == text.len();
            let literal = (b == b' ' || b == b'\t') && !last
                || (33..=126).contains(&b) && b != b'=' && !(col == 0 && b == b'.');
            let width = if literal { 1 } else { 3 };
            if col + width > 75 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            col += width;
        }
        if eol {
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_stuffing() {
        assert_eq!(to_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc\r\n");
        assert_eq!(to_crlf(b""), b"");
        assert_eq!(to_crlf(b"x\ry\n"), b"x\ry\r\n");
        assert_eq!(dot_stuff(b".a\r\nb\r\n..\r\n"), b"..a\r\nb\r\n...\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn single_part_downgrade() {
        let m = to_crlf(
            "Subject: s\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße = x \n.dot\n"
                .as_bytes(),
        );
        let out = downgrade_8bit(&m).expect("converts");
        let s = String::from_utf8(out).expect("ascii");
        assert!(!has_8bit(s.as_bytes()));
        assert!(s.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
        assert!(!s.contains("8bit"));
        assert!(s.contains("MIME-Version: 1.0\r\n"));
        assert!(
            s.ends_with("\r\n\r\nGr=C3=BC=C3=9Fe =3D x=20\r\n=2Edot\r\n"),
            "{s}"
        );
    }

    #[test]
    fn long_lines_get_soft_breaks() {
        let mut m = b"Subject: s\r\n\r\n".to_vec();
        m.extend(std::iter::repeat_n(0xe9u8, 100));
        m.extend_from_slice(b"\r\n");
        let s = String::from_utf8(downgrade_8bit(&m).expect("ok")).expect("ascii");
        assert!(s.lines().all(|l| l.len() <= 76), "{s}");
    }

    #[test]
    fn multipart_downgrade_keeps_structure() {
        let m = to_crlf(
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\npre\n--b1\nContent-Type: text/plain\n\nascii\n--b1\nContent-Type: text/plain; charset=latin1\n\ncaf\u{e9}\n--b1--\nepilogue\n"
                .as_bytes(),
        );
        let out = String::from_utf8(downgrade_8bit(&m).expect("ok")).expect("ascii");
        assert!(out.contains("--b1\r\nContent-Type: text/plain\r\n\r\nascii\r\n--b1\r\n"));
        assert!(out.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n--b1--\r\nepilogue\r\n"), "{out}");
        assert_eq!(out.matches("MIME-Version").count(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_convert() {
        let m = to_crlf("Content-Type: message/rfc822\n\nSubject: \u{e9}\n\nx\n".as_bytes());
        assert!(downgrade_8bit(&m).is_none());
        let m = to_crlf("Content-Transfer-Encoding: base64\n\n\u{e9}\n".as_bytes());
        assert!(downgrade_8bit(&m).is_none());
    }
}

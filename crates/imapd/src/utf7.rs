//! Modified UTF-7 mailbox names (RFC 3501 5.1.3): the form names have on disk and on
//! the wire unless the client enabled `UTF8=ACCEPT` (RFC 6855), when they travel as
//! UTF-8 and are converted here at the protocol boundary.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// UTF-8 → modified UTF-7.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run: Vec<u16> = Vec::new();
    let flush = |run: &mut Vec<u16>, out: &mut String| {
        if run.is_empty() {
            return;
        }
        let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |a, (i, &b)| a | u32::from(b) << (16 - 8 * i));
            let chars = chunk.len() + 1;
            for k in 0..chars {
                out.push(B64[(n >> (18 - 6 * k) & 63) as usize] as char);
            }
        }
        out.push('-');
        run.clear();
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Modified UTF-7 → UTF-8; `None` when `s` is not valid modified UTF-7 (8-bit or control
/// characters, bad base64, an encoded run holding printable ASCII, broken UTF-16).
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(0x20..0x7f).contains(&c) {
            return None;
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = i + 1 + b[i + 1..].iter().position(|&x| x == b'-')?;
        let run = &b[i + 1..end];
        i = end + 1;
        if run.is_empty() {
            out.push('&');
            continue;
        }
        let (mut acc, mut bits, mut bytes) = (0u32, 0u32, Vec::new());
        for &x in run {
            let v = B64.iter().position(|&y| y == x)? as u32;
            acc = (acc << 6 | v) & 0xffff;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                bytes.push((acc >> bits) as u8);
            }
        }
        // Leftover bits must be zero padding, and whole UTF-16 units.
        if bits >= 6 || acc & ((1 << bits) - 1) != 0 || bytes.len() % 2 != 0 {
            return None;
        }
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        let text = String::from_utf16(&units).ok()?;
        if text.chars().any(|c| (' '..='~').contains(&c)) {
            return None;
        }
        out.push_str(&text);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (u, m) in [
            ("INBOX", "INBOX"),
            ("a&b", "a&-b"),
            ("Entwürfe", "Entw&APw-rfe"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("😀", "&2D3eAA-"),
        ] {
            assert_eq!(encode(u), m);
            assert_eq!(decode(m).as_deref(), Some(u));
        }
        assert_eq!(decode("&Jjo!"), None);
        assert_eq!(decode("&U,BTFw"), None);
        assert_eq!(decode("&AGE-"), None); // an encoded "a"
        assert_eq!(decode("caf\u{e9}"), None);
        assert_eq!(decode("&2D3-"), None);
    }
}

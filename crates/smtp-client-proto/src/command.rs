//! Client commands as wire bytes, each ending in CRLF. Arguments that come from the queue
//! (addresses, DSN parameters) have CR, LF and NUL removed so nothing can smuggle a second
//! command into a line.

/// Removes bytes that would end or corrupt a command line.
pub fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect()
}

/// RFC 3461 xtext: `+`, `=`, and bytes outside `!`..`~` become `+XX`. Queue files keep
/// ENVID and ORCPT decoded, so they are encoded again on the way out.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// `ORCPT=` value: the address type stays, the address is xtext.
pub fn orcpt(value: &str) -> String {
    match value.split_once(';') {
        Some((kind, addr)) => format!("{};{}", clean(kind), xtext(addr)),
        None => format!("rfc822;{}", xtext(value)),
    }
}

/// `EHLO name`.
pub fn ehlo(name: &str) -> Vec<u8> {
    format!("EHLO {}\r\n", clean(name)).into_bytes()
}

/// `HELO name`.
pub fn helo(name: &str) -> Vec<u8> {
    format!("HELO {}\r\n", clean(name)).into_bytes()
}

/// `LHLO name` (RFC 2033).
pub fn lhlo(name: &str) -> Vec<u8> {
    format!("LHLO {}\r\n", clean(name)).into_bytes()
}

/// `STARTTLS`.
pub fn starttls() -> Vec<u8> {
    b"STARTTLS\r\n".to_vec()
}

/// `RSET`.
pub fn rset() -> Vec<u8> {
    b"RSET\r\n".to_vec()
}

/// `QUIT`.
pub fn quit() -> Vec<u8> {
    b"QUIT\r\n".to_vec()
}

/// `DATA`.
pub fn data() -> Vec<u8> {
    b"DATA\r\n".to_vec()
}

/// `BDAT n` or `BDAT n LAST`.
pub fn bdat(len: usize, last: bool) -> Vec<u8> {
    if last {
        format!("BDAT {len} LAST\r\n").into_bytes()
    } else {
        format!("BDAT {len}\r\n").into_bytes()
    }
}

/// `AUTH mechanism [initial-response]` (the response already base64).
pub fn auth(mechanism: &str, initial: Option<&str>) -> Vec<u8> {
    match initial {
        Some(ir) => format!("AUTH {} {}\r\n", clean(mechanism), clean(ir)).into_bytes(),
        None => format!("AUTH {}\r\n", clean(mechanism)).into_bytes(),
    }
}

/// A line of a SASL exchange (base64 text, or `*` to cancel).
pub fn sasl_line(text: &str) -> Vec<u8> {
    format!("{}\r\n", clean(text)).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_smuggling() {
        assert_eq!(ehlo("a\r\nRSET"), b"EHLO aRSET\r\n");
        assert_eq!(bdat(5, true), b"BDAT 5 LAST\r\n");
        assert_eq!(xtext("env+id=1 x"), "env+2Bid+3D1+20x");
        assert_eq!(orcpt("rfc822;a+b@x"), "rfc822;a+2Bb@x");
        assert_eq!(auth("PLAIN", Some("AGEAYg==")), b"AUTH PLAIN AGEAYg==\r\n");
    }
}

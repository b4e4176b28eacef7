//! Reply rendering: status code, optional enhanced status code, text.
//!
//! Driver-supplied texts are sanitised here so that a policy string can never
//! inject an extra reply line (CR/LF) or exceed RFC 5321's 512-octet line.

/// Longest reply text we emit on one line (512 minus code, DSN, CRLF).
const MAX_TEXT: usize = 480;

/// One reply, owned, so that it can be queued until a chunk is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: u16,
    pub enhanced: String,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: enhanced.to_owned(),
            text: text.into(),
        }
    }
}

/// Appends `code [enhanced ]text\r\n` to `out`. `enhanced` is left out when
/// empty or when ENHANCEDSTATUSCODES is switched off (`esc == false`).
pub(crate) fn render(out: &mut Vec<u8>, code: u16, enhanced: &str, text: &str, esc: bool) {
    render_line(out, code, ' ', enhanced, text, esc);
}

/// Appends one line of a multi-line reply (`sep` is `-` or ` `).
pub(crate) fn render_line(
    out: &mut Vec<u8>,
    code: u16,
    sep: char,
    enhanced: &str,
    text: &str,
    esc: bool,
) {
    out.extend_from_slice(format!("{code:03}{sep}").as_bytes());
    if esc && !enhanced.is_empty() {
        out.extend_from_slice(enhanced.as_bytes());
        if !text.is_empty() {
            out.push(b' ');
        }
    }
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Makes a driver-supplied text safe for one reply line.
pub(crate) fn sanitize_text(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Coerces a driver's (code, enhanced) to something valid for a rejection:
/// a 4xx/5xx code and an enhanced code whose class matches it (Postfix's
/// `smtpd_dsn_fix` does the same).
pub(crate) fn fix_reject(code: u16, enhanced: &str) -> (u16, String) {
    let code = if (400..=599).contains(&code) {
        code
    } else {
        451
    };
    let class = if code >= 500 { '5' } else { '4' };
    (code, fix_enhanced(class, enhanced))
}

/// Returns `enhanced` with its class digit set to `class`, or `class.0.0`
/// when it is not of the form `d.ddd.ddd`.
pub(crate) fn fix_enhanced(class: char, enhanced: &str) -> String {
    let parts: Vec<&str> = enhanced.split('.').collect();
    let valid = parts.len() == 3
        && parts[0].len() == 1
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        format!("{class}.{}.{}", parts[1], parts[2])
    } else {
        format!("{class}.0.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_and_without_esc() {
        let mut out = Vec::new();
        render(&mut out, 250, "2.1.0", "Ok", true);
        render(&mut out, 250, "2.1.0", "Ok", false);
        render(&mut out, 354, "", "End", true);
        assert_eq!(out, b"250 2.1.0 Ok\r\n250 Ok\r\n354 End\r\n");
    }

    #[test]
    fn sanitizes_injection() {
        assert_eq!(sanitize_text("a\r\n250 b"), "a  250 b");
        assert!(sanitize_text(&"x".repeat(5000)).len() <= MAX_TEXT);
    }

    #[test]
    fn fixes_codes() {
        assert_eq!(fix_reject(250, "2.0.0"), (451, "4.0.0".to_owned()));
        assert_eq!(fix_reject(550, "4.1.1"), (550, "5.1.1".to_owned()));
        assert_eq!(fix_reject(450, "junk"), (450, "4.0.0".to_owned()));
    }
}

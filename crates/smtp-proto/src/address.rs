//! RFC 5321 path parsing (`<[@route,...:]local@domain>`).
//!
//! Source routes are parsed and dropped (RFC 5321 section 4.1.1.3 says a
//! server SHOULD ignore them). Quoted local parts keep their quotes, since the
//! address is handed on as the client wrote it. Non-ASCII octets are accepted
//! by the grammar here; whether they are allowed (SMTPUTF8) is the caller's
//! decision via [`Address::is_ascii`].

use std::fmt;

/// A mailbox from a MAIL or RCPT path, source route removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// Local part as sent (quoted form kept, e.g. `"a b"`).
    pub local: String,
    /// Domain or address literal (`[192.0.2.1]`); empty only for `<postmaster>`.
    pub domain: String,
}

impl Address {
    /// True when the address needs no SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            f.write_str(&self.local)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

/// The path could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadPath;

/// A parsed path: `None` is the null path `<>`.
pub(crate) type Path = Option<Address>;

/// Parses a path at the start of `s`; returns it and the unparsed remainder
/// (ESMTP parameters). Without `strict`, an address without angle brackets
/// is accepted up to the first space, as Postfix does by default.
pub(crate) fn parse_path(s: &str, strict: bool) -> Result<(Path, &str), BadPath> {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        if strict {
            return Err(BadPath);
        }
        let end = s.find(' ').unwrap_or(s.len());
        let (addr, j) = parse_mailbox(&b[..end], 0)?;
        if j != end {
            return Err(BadPath);
        }
        return Ok((Some(addr), &s[end..]));
    }
    let mut i = 1;
    let mut routed = false;
    if b.get(i) == Some(&b'@') {
        routed = true;
        loop {
            i = scan_domain(b, i + 1)?;
            match b.get(i) {
                Some(b',') if b.get(i + 1) == Some(&b'@') => i += 1,
                Some(b':') => {
                    i += 1;
                    break;
                }
                _ => return Err(BadPath),
            }
        }
    }
    if b.get(i) == Some(&b'>') {
        if routed {
            return Err(BadPath);
        }
        return Ok((None, &s[i + 1..]));
    }
    let (addr, j) = parse_mailbox(b, i)?;
    if b.get(j) != Some(&b'>') {
        return Err(BadPath);
    }
    Ok((Some(addr), &s[j + 1..]))
}

/// Parses `local[@domain]` starting at `i`; returns the end index.
/// Slicing the `&[u8]` back into `String`s is safe because every boundary
/// is an ASCII delimiter of a valid UTF-8 input.
fn parse_mailbox(b: &[u8], start: usize) -> Result<(Address, usize), BadPath> {
    let mut i = start;
    if b.get(i) == Some(&b'"') {
        i += 1;
        loop {
            match b.get(i) {
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(b'\\') => match b.get(i + 1) {
                    Some(&c) if (32..=126).contains(&c) => i += 2,
                    _ => return Err(BadPath),
                },
                Some(&c) if is_qtext(c) => i += 1,
                _ => return Err(BadPath),
            }
        }
    } else {
        // Postfix accepts dots anywhere in an unquoted local part (`.a`, `a..b`, `a.`):
        // mail from old or sloppy software is not refused over local-part syntax.
        while b.get(i).is_some_and(|&c| is_atext(c) || c == b'.') {
            i += 1;
        }
        if i == start {
            return Err(BadPath);
        }
    }
    let local = to_string(&b[start..i])?;
    if local.len() <= 2 && local.starts_with('"') {
        // `""` alone: an empty local part is not a mailbox.
        return Err(BadPath);
    }
    if b.get(i) != Some(&b'@') {
        return Ok((
            Address {
                local,
                domain: String::new(),
            },
            i,
        ));
    }
    let dstart = i + 1;
    let end = if b.get(dstart) == Some(&b'[') {
        scan_literal(b, dstart)?
    } else {
        scan_domain(b, dstart)?
    };
    let domain = to_string(&b[dstart..end])?;
    Ok((Address { local, domain }, end))
}

/// Scans `sub-domain *("." sub-domain)` from `i`; returns the end index. As Postfix's
/// `valid_hostname` after `dup_if_truncate`: one trailing dot is allowed (`example.com.`),
/// underscores are tolerated, an all-numeric name is not a host name.
fn scan_domain(b: &[u8], start: usize) -> Result<usize, BadPath> {
    let mut i = start;
    let mut numeric = true;
    loop {
        let label = i;
        while b
            .get(i)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c >= 0x80)
        {
            i += 1;
        }
        if i == label || b[label] == b'-' || b[i - 1] == b'-' {
            return Err(BadPath);
        }
        numeric &= b[label..i].iter().all(u8::is_ascii_digit);
        if b.get(i) != Some(&b'.') {
            break;
        }
        i += 1;
        let next_is_label = b
            .get(i)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c >= 0x80);
        if !next_is_label {
            if b.get(i) == Some(&b'.') {
                return Err(BadPath);
            }
            break;
        }
    }
    if numeric {
        return Err(BadPath);
    }
    Ok(i)
}

/// Scans an address literal `[...]` (dtext) from `i`; returns the end index.
fn scan_literal(b: &[u8], mut i: usize) -> Result<usize, BadPath> {
    i += 1;
    let start = i;
    while b
        .get(i)
        .is_some_and(|&c| (33..=90).contains(&c) || (94..=126).contains(&c))
    {
        i += 1;
    }
    if i == start || b.get(i) != Some(&b']') {
        return Err(BadPath);
    }
    Ok(i + 1)
}

fn is_atext(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c) || c >= 0x80
}

fn is_qtext(c: u8) -> bool {
    c == 32 || c == 33 || (35..=91).contains(&c) || (93..=126).contains(&c) || c >= 0x80
}

fn to_string(b: &[u8]) -> Result<String, BadPath> {
    std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| BadPath)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (Option<String>, String) {
        let (p, rest) = parse_path(s, false).expect("valid path");
        (p.map(|a| a.to_string()), rest.to_owned())
    }

    #[test]
    fn plain_and_null() {
        assert_eq!(ok("<a@b.c>"), (Some("a@b.c".into()), String::new()));
        assert_eq!(ok("<> SIZE=1"), (None, " SIZE=1".into()));
        assert_eq!(ok("a@b.c BODY=8BITMIME").0, Some("a@b.c".into()));
    }

    #[test]
    fn source_route_is_dropped() {
        assert_eq!(
            ok("<@a.example,@b.example:u@d.example>").0,
            Some("u@d.example".into())
        );
        assert!(parse_path("<@a.example:>", false).is_err());
        assert!(parse_path("<@a.example,b:u@d>", false).is_err());
    }

    #[test]
    fn quoted_local_part() {
        assert_eq!(ok(r#"<"a >b"@c.d>"#).0, Some(r#""a >b"@c.d"#.into()));
        assert_eq!(ok(r#"<"a\"b"@c.d>"#).0, Some(r#""a\"b"@c.d"#.into()));
        assert!(parse_path(r#"<"ab@c.d>"#, false).is_err());
    }

    #[test]
    fn literals_and_utf8() {
        assert_eq!(ok("<u@[192.0.2.1]>").0, Some("u@[192.0.2.1]".into()));
        assert_eq!(
            ok("<u@[IPv6:2001:db8::1]>").0,
            Some("u@[IPv6:2001:db8::1]".into())
        );
        let (p, _) = parse_path("<jöran@bücher.example>", false).expect("utf8");
        assert!(!p.expect("some").is_ascii());
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "<a@b",
            "<a@>",
            "<@>",
            "<a@b.c..>",
            "<a@.>",
            "<a@123>",
            "<a@-b.c>",
            "<a@b..c>",
            "<a b@c>",
            "<a@b.c",
            "",
            "<",
            "<a@[]>",
            "<\"\"@c>",
            "<a@b.c-> ",
        ] {
            assert!(parse_path(s, false).is_err(), "{s:?}");
        }
        assert!(parse_path("a@b.c", true).is_err());
    }

    #[test]
    fn postfix_leniency() {
        // Debian's Postfix 3.7 smtpd answers 250 to each of these.
        assert_eq!(ok("<u@example.com.>").0, Some("u@example.com.".into()));
        assert_eq!(ok("<a..b@c.d>").0, Some("a..b@c.d".into()));
        assert_eq!(ok("<.a@c.d>").0, Some(".a@c.d".into()));
        assert_eq!(ok("<a.>").0, Some("a.".into()));
        assert_eq!(ok("<u@x_y.test>").0, Some("u@x_y.test".into()));
    }

    #[test]
    fn local_only_is_parsed_for_caller_to_judge() {
        let (p, _) = parse_path("<Postmaster>", false).expect("local only");
        assert_eq!(p.expect("some").domain, "");
    }
}

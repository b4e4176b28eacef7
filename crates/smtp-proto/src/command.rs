//! Command line parsing: verb recognition and MAIL/RCPT/BDAT arguments.
//!
//! Everything here is pure: a parse error is returned as the [`Reply`] that
//! Postfix would send, and the session decides what else happens.

use crate::address::parse_path;
use crate::config::ServerConfig;
use crate::event::{Body, MailFrom, Notify, Orcpt, RcptTo, Ret};
use crate::reply::Reply;

/// Recognised command verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    Auth,
    /// HTTP/proxy verbs (Postfix's `smtpd_forbidden_commands`).
    Forbidden,
    Unknown,
}

/// Splits a command line into its verb and trimmed arguments.
pub(crate) fn split(line: &str) -> (Verb, &str) {
    let line = line.trim_matches(' ');
    let (word, args) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_matches(' ')),
        None => (line, ""),
    };
    let verb = match word.to_ascii_uppercase().as_str() {
        "EHLO" => Verb::Ehlo,
        "HELO" => Verb::Helo,
        "MAIL" => Verb::Mail,
        "RCPT" => Verb::Rcpt,
        "DATA" => Verb::Data,
        "BDAT" => Verb::Bdat,
        "RSET" => Verb::Rset,
        "NOOP" => Verb::Noop,
        "QUIT" => Verb::Quit,
        "VRFY" => Verb::Vrfy,
        "HELP" => Verb::Help,
        "STARTTLS" => Verb::StartTls,
        "AUTH" => Verb::Auth,
        "GET" | "POST" | "CONNECT" => Verb::Forbidden,
        _ => Verb::Unknown,
    };
    (verb, args)
}

/// Strips a case-insensitive `prefix` (e.g. `FROM:`) and following spaces.
fn strip_keyword<'a>(args: &'a str, prefix: &str) -> Option<&'a str> {
    let head = args.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        Some(args[prefix.len()..].trim_start_matches(' '))
    } else {
        None
    }
}

/// Splits the text after a path into `KEY[=VALUE]` parameters.
fn params(rest: &str) -> Option<impl Iterator<Item = (String, Option<&str>, &str)>> {
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    Some(
        rest.split(' ')
            .filter(|t| !t.is_empty())
            .map(|tok| match tok.split_once('=') {
                Some((k, v)) => (k.to_ascii_uppercase(), Some(v), tok),
                None => (tok.to_ascii_uppercase(), None, tok),
            }),
    )
}

fn unsupported(tok: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported option: {tok}"))
}

fn utf8_undeclared() -> Reply {
    Reply::new(
        553,
        "5.6.7",
        "Must declare SMTPUTF8 to send unicode address",
    )
}

/// Parses the arguments of MAIL (`FROM:<path> params`).
pub(crate) fn parse_mail(args: &str, cfg: &ServerConfig) -> Result<MailFrom, Reply> {
    let syntax = || Reply::new(501, "5.5.4", "Syntax: MAIL FROM:<address>");
    let bad = || Reply::new(501, "5.1.7", "Bad sender address syntax");
    let rest = strip_keyword(args, "FROM:").ok_or_else(syntax)?;
    if rest.is_empty() {
        return Err(syntax());
    }
    let (sender, rest) = parse_path(rest, cfg.strict_rfc821_envelopes).map_err(|_| bad())?;
    let ext = &cfg.extensions;
    let mut mail = MailFrom {
        sender,
        size: None,
        body: None,
        smtputf8: false,
        ret: None,
        envid: None,
        auth: None,
    };
    for (key, value, tok) in params(rest).ok_or_else(bad)? {
        match (key.as_str(), value) {
            ("SIZE", Some(v)) if ext.size => {
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Reply::new(501, "5.5.4", "Bad message size syntax"));
                }
                // More than 20 digits was refused; overflow means "too big".
                mail.size = Some(v.parse().unwrap_or(u64::MAX));
            }
            ("BODY", Some(v)) if ext.eightbitmime => {
                mail.body = Some(match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" if ext.chunking => Body::BinaryMime,
                    _ => return Err(Reply::new(501, "5.5.4", format!("Bad BODY keyword: {v}"))),
                });
            }
            ("SMTPUTF8", None) if ext.smtputf8 => mail.smtputf8 = true,
            ("RET", Some(v)) if ext.dsn => {
                mail.ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(Reply::new(501, "5.5.4", "Bad RET parameter syntax")),
                });
            }
            ("ENVID", Some(v)) if ext.dsn => {
                let bad_envid = || Reply::new(501, "5.5.4", "Bad ENVID parameter syntax");
                let decoded = xtext_decode(v).ok_or_else(bad_envid)?;
                if decoded.is_empty() || decoded.len() > 100 {
                    return Err(bad_envid());
                }
                mail.envid = Some(decoded);
            }
            ("AUTH", Some(v)) => mail.auth = Some(v.to_owned()),
            _ => return Err(unsupported(tok)),
        }
    }
    if !mail.smtputf8 && mail.sender.as_ref().is_some_and(|a| !a.is_ascii()) {
        return Err(if ext.smtputf8 {
            utf8_undeclared()
        } else {
            bad()
        });
    }
    if let Some(size) = mail.size {
        let limit = cfg.limits.message_size_limit;
        if limit > 0 && size > limit {
            return Err(Reply::new(552, "5.3.4", "Message size exceeds fixed limit"));
        }
    }
    Ok(mail)
}

/// Parses the arguments of RCPT (`TO:<path> params`). `smtputf8` says
/// whether the transaction's MAIL carried SMTPUTF8.
pub(crate) fn parse_rcpt(args: &str, cfg: &ServerConfig, smtputf8: bool) -> Result<RcptTo, Reply> {
    let syntax = || Reply::new(501, "5.5.4", "Syntax: RCPT TO:<address>");
    let bad = || Reply::new(501, "5.1.3", "Bad recipient address syntax");
    let rest = strip_keyword(args, "TO:").ok_or_else(syntax)?;
    if rest.is_empty() {
        return Err(syntax());
    }
    let (path, rest) = parse_path(rest, cfg.strict_rfc821_envelopes).map_err(|_| bad())?;
    // An unqualified address (`<demo>`, RFC 5321 4.5.1's `<postmaster>`) is accepted, as
    // Postfix: cleanup appends `@$myorigin`.
    let recipient = path.ok_or_else(bad)?;
    let mut rcpt = RcptTo {
        recipient,
        notify: None,
        orcpt: None,
    };
    let dsn = cfg.extensions.dsn;
    for (key, value, tok) in params(rest).ok_or_else(bad)? {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) if dsn => {
                rcpt.notify = Some(parse_notify(v).ok_or_else(|| {
                    Reply::new(501, "5.5.4", "Error: Bad NOTIFY parameter syntax")
                })?);
            }
            ("ORCPT", Some(v)) if dsn => {
                let bad_orcpt = || Reply::new(501, "5.5.4", "Error: Bad ORCPT parameter syntax");
                let (ty, addr) = v.split_once(';').ok_or_else(bad_orcpt)?;
                let ty_ok =
                    !ty.is_empty() && ty.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                let address = xtext_decode(addr).filter(|a| !a.is_empty());
                match (ty_ok, address) {
                    (true, Some(address)) => {
                        rcpt.orcpt = Some(Orcpt {
                            addr_type: ty.to_owned(),
                            address,
                        })
                    }
                    _ => return Err(bad_orcpt()),
                }
            }
            _ => return Err(unsupported(tok)),
        }
    }
    if !rcpt.recipient.is_ascii() && !smtputf8 {
        return Err(if cfg.extensions.smtputf8 {
            utf8_undeclared()
        } else {
            bad()
        });
    }
    Ok(rcpt)
}

fn parse_notify(v: &str) -> Option<Notify> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Some(Notify::default());
    }
    let mut n = Notify::default();
    for word in v.split(',') {
        match word.to_ascii_uppercase().as_str() {
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => return None,
        }
    }
    Some(n)
}

/// Decodes RFC 3461 xtext (`+HH` escapes). Non-ASCII is let through for
/// SMTPUTF8 clients (RFC 6533 utf-8-xtext).
fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'=' => return None,
            c if (0x21..=0x7e).contains(&c) || c >= 0x80 => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `BDAT size [LAST]`.
pub(crate) fn parse_bdat(args: &str) -> Option<(u64, bool)> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let size = words.next()?;
    if size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let size: u64 = size.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some((size, last))
}

/// True if `s` is plausible base64 (RFC 4648 alphabet with padding).
pub(crate) fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ServerConfig {
        ServerConfig::new("mx.example")
    }

    #[test]
    fn verbs() {
        assert_eq!(split("ehlo  x.example "), (Verb::Ehlo, "x.example"));
        assert_eq!(split("StartTLS"), (Verb::StartTls, ""));
        assert_eq!(split("XYZZY a"), (Verb::Unknown, "a"));
        assert_eq!(split("GET / HTTP/1.0").0, Verb::Forbidden);
    }

    #[test]
    fn mail_params() {
        let m = parse_mail(
            "FROM:<a@b.c> SIZE=100 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=x+2By",
            &cfg(),
        )
        .expect("valid");
        assert_eq!(m.size, Some(100));
        assert_eq!(m.body, Some(Body::EightBitMime));
        assert!(m.smtputf8);
        assert_eq!(m.ret, Some(Ret::Hdrs));
        assert_eq!(m.envid.as_deref(), Some("x+y"));
        assert!(
            parse_mail("from: <>", &cfg())
                .expect("null")
                .sender
                .is_none()
        );
    }

    #[test]
    fn mail_errors() {
        let code = |a: &str| {
            parse_mail(a, &cfg())
                .map(|_| ())
                .map_err(|r| (r.code, r.text))
        };
        assert_eq!(code("TO:<a@b>").err().map(|e| e.0), Some(501));
        assert_eq!(
            code("FROM:<a@b> SIZE=x").err().map(|e| e.1),
            Some("Bad message size syntax".into())
        );
        assert_eq!(
            code("FROM:<a@b> SIZE=99999999999").err().map(|e| e.0),
            Some(552)
        );
        assert_eq!(code("FROM:<a@b> FOO=1").err().map(|e| e.0), Some(555));
        assert_eq!(code("FROM:<a@b> BODY=9BIT").err().map(|e| e.0), Some(501));
        assert_eq!(code("FROM:<ü@b>").err().map(|e| e.0), Some(553));
        assert!(code("FROM:<ü@b> SMTPUTF8").is_ok());
        assert_eq!(
            code("FROM:<a@b>junk").err().map(|e| e.1),
            Some("Bad sender address syntax".into())
        );
    }

    #[test]
    fn rcpt_params() {
        let r = parse_rcpt(
            "TO:<a@b> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+40b",
            &cfg(),
            false,
        )
        .expect("valid");
        assert_eq!(
            r.notify,
            Some(Notify {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(r.orcpt.expect("orcpt").address, "a@b");
        assert!(parse_rcpt("TO:<postmaster>", &cfg(), false).is_ok());
        assert!(parse_rcpt("TO:<>", &cfg(), false).is_err());
        assert!(parse_rcpt("TO:<bob>", &cfg(), false).is_ok());
        assert!(parse_rcpt("TO:<a@b> NOTIFY=NEVER,SUCCESS", &cfg(), false).is_err());
        assert!(parse_rcpt("TO:<a@b> ORCPT=rfc822", &cfg(), false).is_err());
        assert_eq!(
            parse_rcpt("TO:<ü@b>", &cfg(), false).err().map(|r| r.code),
            Some(553)
        );
    }

    #[test]
    fn bdat_and_base64() {
        assert_eq!(parse_bdat("10 LAST"), Some((10, true)));
        assert_eq!(parse_bdat("0"), Some((0, false)));
        assert_eq!(parse_bdat("x"), None);
        assert_eq!(parse_bdat("1 LAST x"), None);
        assert!(is_base64("AGZvbwBiYXI="));
        assert!(!is_base64("AGZ$"));
        assert!(is_base64(""));
    }
}

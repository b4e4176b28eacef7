//! The service extensions a server announces in its EHLO (or LHLO) reply.

use crate::reply::Reply;

/// What the server offers, as far as the client uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 2920 command pipelining.
    pub pipelining: bool,
    /// `SIZE`: `Some(0)` when offered without a limit, `Some(n)` with one.
    pub size: Option<u64>,
    /// RFC 6152 `8BITMIME`.
    pub eightbitmime: bool,
    /// RFC 6531 `SMTPUTF8`.
    pub smtputf8: bool,
    /// RFC 3030 `CHUNKING` (`BDAT`).
    pub chunking: bool,
    /// RFC 3461 `DSN`.
    pub dsn: bool,
    /// RFC 3207 `STARTTLS`.
    pub starttls: bool,
    /// RFC 2034 `ENHANCEDSTATUSCODES`.
    pub enhanced_status: bool,
    /// SASL mechanisms of `AUTH` (also the pre-standard `AUTH=`), upper case.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Reads the extension lines of a positive EHLO/LHLO reply (the first line is the
    /// server's name and is skipped). Unknown keywords are ignored.
    pub fn parse(reply: &Reply) -> Extensions {
        let mut e = Extensions::default();
        for text in reply.texts().skip(1) {
            let mut words = text.split([' ', '=']).filter(|w| !w.is_empty());
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => e.pipelining = true,
                "SIZE" => e.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => e.eightbitmime = true,
                "SMTPUTF8" => e.smtputf8 = true,
                "CHUNKING" => e.chunking = true,
                "DSN" => e.dsn = true,
                "STARTTLS" => e.starttls = true,
                "ENHANCEDSTATUSCODES" => e.enhanced_status = true,
                "AUTH" => {
                    for m in words {
                        let m = m.to_ascii_uppercase();
                        if !e.auth.contains(&m) {
                            e.auth.push(m);
                        }
                    }
                }
                _ => {}
            }
        }
        e
    }

    /// Whether the server accepts a message of `size` bytes by its announced limit.
    pub fn size_ok(&self, size: u64) -> bool {
        match self.size {
            Some(limit) if limit > 0 => size <= limit,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReplyParser;

    #[test]
    fn parses_postfix_ehlo() {
        let mut p = ReplyParser::new();
        p.push(
            b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n\
              250-ETRN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=PLAIN\r\n\
              250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n\
              250 CHUNKING\r\n",
        );
        let r = p.next_reply().expect("reply").expect("ok");
        let e = Extensions::parse(&r);
        assert!(e.pipelining && e.eightbitmime && e.smtputf8 && e.chunking && e.dsn);
        assert!(e.starttls && e.enhanced_status);
        assert_eq!(e.size, Some(10240000));
        assert_eq!(e.auth, vec!["PLAIN".to_string(), "LOGIN".to_string()]);
        assert!(e.size_ok(10240000) && !e.size_ok(10240001));
    }

    #[test]
    fn first_line_is_not_an_extension() {
        let e = Extensions::parse(&Reply::new(250, "PIPELINING"));
        assert!(!e.pipelining);
        let e = Extensions::parse(&Reply {
            code: 250,
            lines: vec!["250-x".into(), "250 SIZE".into()],
        });
        assert_eq!(e.size, Some(0));
        assert!(e.size_ok(u64::MAX));
    }
}

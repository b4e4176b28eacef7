//! The `Received:` header Postfix's smtpd prepends, in Postfix's exact layout.

use std::time::SystemTime;

use crate::date::mail_date;

/// What the `Received:` header says about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedInfo<'a> {
    /// The HELO/EHLO argument, if the client sent one.
    pub helo: Option<&'a str>,
    /// The client's host name (`unknown` without reverse DNS).
    pub client_name: &'a str,
    /// The client's address as Postfix prints it (`192.0.2.1`, `IPv6:2001:db8::1`).
    pub client_addr: &'a str,
    /// `myhostname`.
    pub myhostname: &'a str,
    /// `mail_name` (e.g. `oxipost`).
    pub mail_name: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA`, `UTF8SMTP`, ... (see [`protocol_name`]).
    pub protocol: &'a str,
    pub queue_id: &'a str,
    /// The recipient when there is exactly one (Postfix names it in the header).
    pub single_recipient: Option<&'a str>,
    pub arrival: SystemTime,
}

/// The `with` protocol name as Postfix forms it: `SMTP` after HELO; `ESMTP` after EHLO,
/// `UTF8SMTP` when the transaction used SMTPUTF8; then `S` for TLS and `A` for SASL.
pub fn protocol_name(extended: bool, smtputf8: bool, tls: bool, authenticated: bool) -> String {
    let mut p = String::from(match (extended, smtputf8) {
        (false, _) => "SMTP",
        (true, false) => "ESMTP",
        (true, true) => "UTF8SMTP",
    });
    if extended {
        if tls {
            p.push('S');
        }
        if authenticated {
            p.push('A');
        }
    }
    p
}

/// Replaces what must not appear in a header (controls, and anything but printable ASCII
/// or UTF-8 text) with `?`, as Postfix's `printable()`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The complete header, folded as Postfix folds it (continuation lines start with a TAB),
/// each line ending in CRLF:
///
/// ```text
/// Received: from HELO (NAME [ADDR])
///         by MYHOSTNAME (oxipost) with ESMTP id QUEUEID
///         for <rcpt>; DATE
/// ```
///
/// With several recipients the last lines are `...id QUEUEID;` and `\tDATE`.
pub fn received_header(r: &ReceivedInfo<'_>) -> String {
    let from = printable(r.helo.unwrap_or(r.client_name));
    let mut h = format!(
        "Received: from {from} ({} [{}])\r\n",
        printable(r.client_name),
        r.client_addr
    );
    let by = format!(
        "\tby {} ({}) with {} id {}",
        r.myhostname, r.mail_name, r.protocol, r.queue_id
    );
    let date = mail_date(r.arrival);
    match r.single_recipient {
        Some(rcpt) => {
            h.push_str(&by);
            h.push_str(&format!("\r\n\tfor <{}>; {date}\r\n", printable(rcpt)));
        }
        None => h.push_str(&format!("{by};\r\n\t{date}\r\n")),
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(rcpt: Option<&str>) -> String {
        received_header(&ReceivedInfo {
            helo: Some("client.example"),
            client_name: "unknown",
            client_addr: "192.0.2.1",
            myhostname: "mx.example",
            mail_name: "oxipost",
            protocol: "ESMTP",
            queue_id: "4ABCDEF",
            single_recipient: rcpt,
            arrival: SystemTime::now(),
        })
    }

    #[test]
    fn single_recipient_layout() {
        let h = info(Some("u@example.org"));
        let lines: Vec<&str> = h.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "Received: from client.example (unknown [192.0.2.1])"
        );
        assert_eq!(lines[1], "\tby mx.example (oxipost) with ESMTP id 4ABCDEF");
        assert!(lines[2].starts_with("\tfor <u@example.org>; "));
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn several_recipients_layout() {
        let h = info(None);
        let lines: Vec<&str> = h.split("\r\n").collect();
        assert_eq!(lines[1], "\tby mx.example (oxipost) with ESMTP id 4ABCDEF;");
        assert!(lines[2].starts_with('\t'));
    }

    #[test]
    fn protocol_names() {
        assert_eq!(protocol_name(false, false, false, false), "SMTP");
        assert_eq!(protocol_name(true, false, false, false), "ESMTP");
        assert_eq!(protocol_name(true, false, true, true), "ESMTPSA");
        assert_eq!(protocol_name(true, true, false, true), "UTF8SMTPA");
    }
}

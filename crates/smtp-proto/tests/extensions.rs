//! BDAT (RFC 3030), STARTTLS (RFC 3207) and AUTH (RFC 4954) conversations.

mod common;

use common::{Answer, Driver, config, lines};
use oxipost_smtp_proto::{Event, Step};

fn txn(d: &mut Driver) {
    d.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
    d.clear();
}

#[test]
fn bdat_chunks() {
    let mut d = Driver::ehlo(config());
    txn(&mut d);
    let out = d.send("BDAT 5\r\nhel\r\nBDAT 0\r\nBDAT 4 LAST\r\nlo\r\n");
    assert_eq!(
        lines(&out),
        [
            "250 2.0.0 Ok: 5 bytes",
            "250 2.0.0 Ok: 0 bytes",
            "250 2.0.0 Ok: queued as TESTID"
        ]
    );
    // Raw content: no dot or CRLF processing.
    assert_eq!(d.data, b"hel\r\nlo\r\n");
    assert!(d.events.contains(&Event::MessageEnd { size: 9 }));
    assert_eq!(
        lines(&d.send("DATA\r\n")),
        ["503 5.5.1 Error: need RCPT command"]
    );
}

#[test]
fn bdat_chunk_split_across_reads() {
    let mut d = Driver::ehlo(config());
    txn(&mut d);
    assert_eq!(d.send("BDAT 10 LAST\r\n0123"), "");
    assert_eq!(d.send("4567"), "");
    assert_eq!(
        lines(&d.send("89NOOP\r\n")),
        ["250 2.0.0 Ok: queued as TESTID", "250 2.0.0 Ok"]
    );
    assert_eq!(d.data, b"0123456789");
}

#[test]
fn bdat_bigger_than_limit_is_consumed_then_552() {
    let mut cfg = config();
    cfg.limits.message_size_limit = 1000;
    let mut d = Driver::ehlo(cfg);
    txn(&mut d);
    assert_eq!(
        lines(&d.send(format!("BDAT 600\r\n{}", "a".repeat(600)))),
        ["250 2.0.0 Ok: 600 bytes"]
    );
    // 600 + 500 > 1000: the 500 bytes are read and dropped, then 552.
    let payload = "RCPT TO:<x@y>\r\n".repeat(40); // 600 bytes that look like commands
    let out = d.send(format!("BDAT 600 LAST\r\n{payload}NOOP\r\n"));
    assert_eq!(
        lines(&out),
        ["552 5.3.4 Message size exceeds fixed limit", "250 2.0.0 Ok"]
    );
    assert_eq!(d.data.len(), 600);
    assert!(d.events.contains(&Event::Reset));
    assert!(
        !d.events
            .iter()
            .any(|e| matches!(e, Event::Rcpt(_) | Event::MessageEnd { .. }))
    );
    assert!(!d.s.in_transaction());
}

#[test]
fn bdat_huge_announced_size_does_not_allocate() {
    let mut d = Driver::ehlo(config());
    txn(&mut d);
    // u64-sized lie: we only ever hold what arrives, and discard it.
    assert_eq!(d.send("BDAT 18446744073709551615 LAST\r\nabc"), "");
    assert!(d.data.is_empty());
    assert!(d.s.wants_read());
    let out = d.send("BDAT 99999999999999999999999 LAST\r\n");
    assert_eq!(out, "", "still inside the lying chunk");
}

#[test]
fn bdat_out_of_sequence_consumes_the_chunk() {
    let mut d = Driver::ehlo(config());
    let out = d.send("BDAT 6\r\nNOOP\r\nNOOP\r\n");
    assert_eq!(
        lines(&out),
        ["503 5.5.1 Error: need MAIL command", "250 2.0.0 Ok"]
    );
    d.send("MAIL FROM:<a@b>\r\n");
    let out = d.send("BDAT 3 LAST\r\nxyzRSET\r\n");
    assert_eq!(
        lines(&out),
        ["503 5.5.1 Error: need RCPT command", "250 2.0.0 Ok"]
    );
    assert_eq!(
        lines(&d.send("BDAT x\r\n")),
        ["501 5.5.4 Syntax: BDAT count [LAST]"]
    );
    assert_eq!(
        lines(&d.send("BDAT 1 FIRST\r\n")),
        ["501 5.5.4 Syntax: BDAT count [LAST]"]
    );
}

#[test]
fn bdat_shorter_than_announced_eats_following_commands() {
    // A client that lies low: the next command becomes chunk data, as the
    // protocol demands; the session stays in sync with the byte count.
    let mut d = Driver::ehlo(config());
    txn(&mut d);
    let out = d.send("BDAT 10 LAST\r\nabcRSET\r\nNOOP\r\n");
    assert_eq!(
        lines(&out),
        [
            "250 2.0.0 Ok: queued as TESTID",
            "502 5.5.2 Error: command not recognized"
        ]
    );
    assert_eq!(d.data, b"abcRSET\r\nN");
}

#[test]
fn starttls_discards_injected_plaintext() {
    let mut cfg = config();
    cfg.starttls = true;
    let mut d = Driver::ehlo(cfg);
    d.s.feed(b"STARTTLS\r\nMAIL FROM:<injected@evil>\r\n");
    assert_eq!(
        d.s.next(),
        Step::Output(b"220 2.0.0 Ready to start TLS\r\n".to_vec())
    );
    assert_eq!(d.s.next(), Step::Event(Event::StartTls));
    assert_eq!(d.s.next(), Step::NeedInput);
    assert!(!d.s.wants_read());
    d.s.feed(b"RCPT TO:<more@evil>\r\n");
    d.s.tls_established();
    assert!(d.s.is_tls());
    assert_eq!(d.s.helo_name(), None);
    d.clear();
    let out = d.send("EHLO c\r\n");
    assert!(!out.contains("STARTTLS"));
    assert!(d.events.iter().all(|e| matches!(e, Event::Helo { .. })));
    assert_eq!(
        lines(&d.send("STARTTLS\r\n")),
        ["554 5.5.1 Error: TLS already active"]
    );
    assert_eq!(
        lines(&d.send("RCPT TO:<a@b>\r\n")),
        ["503 5.5.1 Error: need MAIL command"]
    );
}

#[test]
fn starttls_errors() {
    let mut d = Driver::ehlo(config());
    assert_eq!(
        lines(&d.send("STARTTLS\r\n")),
        ["502 5.5.1 Error: command not implemented"]
    );
    let mut cfg = config();
    cfg.starttls = true;
    let mut d = Driver::ehlo(cfg);
    assert_eq!(
        lines(&d.send("STARTTLS now\r\n")),
        ["501 5.5.4 Syntax: STARTTLS"]
    );
}

#[test]
fn starttls_pipelined_is_refused_when_forbidden() {
    let mut cfg = config();
    cfg.starttls = true;
    cfg.forbid_unauth_pipelining = true;
    let mut d = Driver::new(cfg);
    d.send("EHLO c\r\n");
    let out = d.send("STARTTLS\r\nEHLO x\r\n");
    assert_eq!(
        lines(&out),
        ["554 5.5.0 Error: SMTP protocol synchronization"]
    );
    assert!(d.closed);
}

fn auth_cfg() -> oxipost_smtp_proto::ServerConfig {
    let mut cfg = config();
    cfg.auth_mechanisms = vec!["PLAIN".into(), "LOGIN".into()];
    cfg
}

#[test]
fn auth_plain_with_initial_response() {
    let mut d = Driver::ehlo(auth_cfg());
    let out = d.send("AUTH plain AHVzZXIAcGFzcw==\r\n");
    assert_eq!(lines(&out), ["235 2.7.0 Authentication successful"]);
    assert_eq!(
        d.events,
        [Event::Auth {
            mechanism: "PLAIN".into(),
            initial_response: Some("AHVzZXIAcGFzcw==".into())
        }]
    );
    assert!(d.s.is_authenticated());
    assert_eq!(
        lines(&d.send("AUTH PLAIN =\r\n")),
        ["503 5.5.1 Error: already authenticated"]
    );
}

#[test]
fn auth_login_exchange_and_failure() {
    let mut d = Driver::ehlo(auth_cfg());
    let mut step = 0;
    d.policy = Box::new(move |ev| match ev {
        Event::Auth { .. } => Answer::Challenge("VXNlcm5hbWU6".into()),
        Event::AuthResponse(_) => {
            step += 1;
            if step == 1 {
                Answer::Challenge("UGFzc3dvcmQ6".into())
            } else {
                Answer::Reject(535, "5.7.8", "Error: authentication failed: bad".into())
            }
        }
        _ => Answer::Accept,
    });
    assert_eq!(lines(&d.send("AUTH LOGIN\r\n")), ["334 VXNlcm5hbWU6"]);
    assert_eq!(lines(&d.send("dXNlcg==\r\n")), ["334 UGFzc3dvcmQ6"]);
    assert_eq!(
        lines(&d.send("cGFzcw==\r\n")),
        ["535 5.7.8 Error: authentication failed: bad"]
    );
    assert!(!d.s.is_authenticated());
    assert_eq!(d.events[1], Event::AuthResponse("dXNlcg==".into()));
    // Back in command mode.
    assert_eq!(lines(&d.send("NOOP\r\n")), ["250 2.0.0 Ok"]);
}

#[test]
fn auth_cancel_and_garbage() {
    let mut d = Driver::ehlo(auth_cfg());
    assert_eq!(lines(&d.send("AUTH LOGIN\r\n")), ["334 "]);
    assert_eq!(
        lines(&d.send("*\r\n")),
        ["501 5.7.0 Authentication aborted"]
    );
    assert_eq!(d.events.last(), Some(&Event::AuthAborted));
    assert_eq!(lines(&d.send("AUTH LOGIN\r\n")), ["334 "]);
    assert_eq!(
        lines(&d.send("not base64!\r\n")),
        ["501 5.5.2 Cannot decode response"]
    );
    assert_eq!(
        lines(&d.send("AUTH PLAIN @@@\r\n")),
        ["501 5.5.2 Cannot decode response"]
    );
    assert_eq!(
        lines(&d.send("AUTH CRAM-MD5\r\n")),
        ["535 5.7.8 Error: authentication failed: Invalid authentication mechanism"]
    );
    assert_eq!(
        lines(&d.send("AUTH\r\n")),
        ["501 5.5.4 Syntax: AUTH mechanism"]
    );
    d.send("MAIL FROM:<a@b>\r\n");
    assert_eq!(
        lines(&d.send("AUTH PLAIN\r\n")),
        ["503 5.5.1 Error: MAIL transaction in progress"]
    );
}

#[test]
fn auth_sequence_rules() {
    let mut d = Driver::new(auth_cfg());
    assert_eq!(
        lines(&d.send("AUTH PLAIN\r\n")),
        ["503 5.5.1 Error: send HELO/EHLO first"]
    );
    let mut d = Driver::ehlo(config());
    assert_eq!(
        lines(&d.send("AUTH PLAIN\r\n")),
        ["503 5.5.1 Error: authentication not enabled"]
    );
    let mut cfg = auth_cfg();
    cfg.auth_only_with_tls = true;
    let mut d = Driver::ehlo(cfg);
    assert_eq!(
        lines(&d.send("AUTH PLAIN\r\n")),
        ["538 5.7.11 Encryption required for requested authentication mechanism"]
    );
}

#[test]
fn auth_response_line_too_long() {
    let mut cfg = auth_cfg();
    cfg.limits.sasl_line_limit = 100;
    let mut d = Driver::ehlo(cfg);
    d.send("AUTH LOGIN\r\n");
    let out = d.send(format!("{}\r\n", "A".repeat(400)));
    assert_eq!(
        lines(&out),
        ["500 5.5.6 Authentication exchange line is too long"]
    );
    assert_eq!(d.events.last(), Some(&Event::AuthAborted));
}

//! Conversation tests: every command, error path and limit, driven through
//! the public API only.

mod common;

use common::{Answer, Driver, HOST, config, lines};
use oxipost_smtp_proto::{BareNewline, Body, Event, ServerConfig, Session, Step};

fn txn(d: &mut Driver) {
    let out = d.send("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n");
    assert_eq!(lines(&out), ["250 2.1.0 Ok", "250 2.1.5 Ok"]);
}

#[test]
fn greeting_and_ehlo_keywords() {
    let mut cfg = config();
    cfg.starttls = true;
    cfg.auth_mechanisms = vec!["PLAIN".into(), "LOGIN".into()];
    let mut d = Driver::new(cfg);
    assert_eq!(d.lines(), ["220 mx.example ESMTP"]);
    let out = d.send("EHLO client.example\r\n");
    assert_eq!(
        lines(&out),
        [
            "250-mx.example",
            "250-PIPELINING",
            "250-SIZE 10240000",
            "250-VRFY",
            "250-STARTTLS",
            "250-AUTH PLAIN LOGIN",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-DSN",
            "250-SMTPUTF8",
            "250 CHUNKING",
        ]
    );
    assert_eq!(
        d.events,
        [Event::Helo {
            name: "client.example".into(),
            extended: true
        }]
    );
    assert_eq!(d.s.helo_name(), Some("client.example"));
}

#[test]
fn ehlo_keywords_are_switchable() {
    let mut cfg = config();
    cfg.vrfy_enabled = false;
    cfg.limits.message_size_limit = 0;
    cfg.extensions.pipelining = false;
    cfg.extensions.chunking = false;
    cfg.extensions.dsn = false;
    cfg.auth_mechanisms = vec!["PLAIN".into()];
    cfg.auth_only_with_tls = true;
    let mut d = Driver::new(cfg);
    let out = d.send("EHLO c\r\n");
    assert_eq!(
        lines(&out),
        [
            "250-mx.example",
            "250-SIZE",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250 SMTPUTF8"
        ]
    );
    // Disabled extensions are refused, not just hidden.
    assert_eq!(
        lines(&d.send("BDAT 0 LAST\r\n")),
        ["502 5.5.2 Error: command not recognized"]
    );
    assert_eq!(
        lines(&d.send("MAIL FROM:<a@b> RET=FULL\r\n")),
        ["555 5.5.4 Unsupported option: RET=FULL"]
    );
}

#[test]
fn helo_and_basic_commands() {
    let mut d = Driver::new(config());
    assert_eq!(lines(&d.send("HELO c.example\r\n")), ["250 mx.example"]);
    assert_eq!(lines(&d.send("NOOP\r\n")), ["250 2.0.0 Ok"]);
    assert_eq!(lines(&d.send("RSET\r\n")), ["250 2.0.0 Ok"]);
    assert_eq!(lines(&d.send("RSET x\r\n")), ["501 5.5.4 Syntax: RSET"]);
    assert!(d.send("HELP\r\n").starts_with("214 2.0.0 "));
    assert_eq!(
        lines(&d.send("EHLO\r\n")),
        ["501 5.5.4 Syntax: EHLO hostname"]
    );
    assert_eq!(
        lines(&d.send("HELO\r\n")),
        ["501 5.5.4 Syntax: HELO hostname"]
    );
    assert_eq!(lines(&d.send("QUIT\r\n")), ["221 2.0.0 Bye"]);
    assert!(d.closed);
    // Nothing more happens after close.
    d.s.feed(b"NOOP\r\n");
    assert_eq!(d.s.next(), Step::Close);
}

#[test]
fn full_data_transaction() {
    let mut d = Driver::ehlo(config());
    txn(&mut d);
    assert_eq!(
        lines(&d.send("DATA\r\n")),
        ["354 End data with <CR><LF>.<CR><LF>"]
    );
    let out = d.send("Subject: hi\r\n\r\n..dot\r\n.\r\n");
    assert_eq!(lines(&out), ["250 2.0.0 Ok: queued as TESTID"]);
    assert_eq!(d.data, b"Subject: hi\r\n\r\n.dot\r\n");
    let kinds: Vec<_> = d.events.iter().map(std::mem::discriminant).collect();
    assert_eq!(kinds.len(), 5);
    assert!(matches!(d.events[4], Event::MessageEnd { size: 21 }));
    assert!(!d.s.in_transaction());
    // A second transaction on the same session.
    txn(&mut d);
}

#[test]
fn mail_and_rcpt_events_carry_parameters() {
    let mut d = Driver::ehlo(config());
    d.send(
        "MAIL FROM:<@relay.example:a@b.example> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=abc\r\n\
         RCPT TO:<c@d.example> NOTIFY=FAILURE ORCPT=rfc822;c+40d.example\r\n\
         RCPT TO:<Postmaster>\r\n",
    );
    let Event::Mail(m) = &d.events[0] else {
        panic!("{:?}", d.events)
    };
    assert_eq!(
        m.sender.as_ref().map(ToString::to_string).as_deref(),
        Some("a@b.example")
    );
    assert_eq!(
        (m.size, m.body, m.envid.as_deref()),
        (Some(100), Some(Body::EightBitMime), Some("abc"))
    );
    let Event::Rcpt(r) = &d.events[1] else {
        panic!()
    };
    assert_eq!(
        r.orcpt.as_ref().map(|o| o.address.as_str()),
        Some("c@d.example")
    );
    assert!(r.notify.is_some_and(|n| n.failure && !n.success));
    let Event::Rcpt(r) = &d.events[2] else {
        panic!()
    };
    assert_eq!(r.recipient.local, "Postmaster");
}

#[test]
fn sequence_errors() {
    let mut d = Driver::ehlo(config());
    assert_eq!(
        lines(&d.send("RCPT TO:<a@b>\r\n")),
        ["503 5.5.1 Error: need MAIL command"]
    );
    assert_eq!(
        lines(&d.send("DATA\r\n")),
        ["503 5.5.1 Error: need RCPT command"]
    );
    assert_eq!(lines(&d.send("MAIL FROM:<>\r\n")), ["250 2.1.0 Ok"]);
    assert_eq!(
        lines(&d.send("MAIL FROM:<>\r\n")),
        ["503 5.5.1 Error: nested MAIL command"]
    );
    assert_eq!(
        lines(&d.send("DATA\r\n")),
        ["503 5.5.1 Error: need RCPT command"]
    );
    assert_eq!(lines(&d.send("DATA x\r\n")), ["501 5.5.4 Syntax: DATA"]);
    // RSET ends the transaction and tells the driver.
    d.events.clear();
    d.send("RSET\r\n");
    assert_eq!(d.events, [Event::Reset]);
    assert_eq!(
        lines(&d.send("RCPT TO:<a@b>\r\n")),
        ["503 5.5.1 Error: need MAIL command"]
    );
}

#[test]
fn helo_required() {
    let mut cfg = config();
    cfg.helo_required = true;
    let mut d = Driver::new(cfg);
    assert_eq!(
        lines(&d.send("MAIL FROM:<a@b>\r\n")),
        ["503 5.5.1 Error: send HELO/EHLO first"]
    );
}

#[test]
fn syntax_errors() {
    let mut d = Driver::ehlo(config());
    let cases = [
        ("MAIL TO:<a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("MAIL FROM:<a@b", "501 5.1.7 Bad sender address syntax"),
        ("MAIL FROM:<a@b..c>", "501 5.1.7 Bad sender address syntax"),
        (
            "MAIL FROM:<a@b> SIZE=abc",
            "501 5.5.4 Bad message size syntax",
        ),
        (
            "MAIL FROM:<a@b> SIZE=20000000",
            "552 5.3.4 Message size exceeds fixed limit",
        ),
        (
            "MAIL FROM:<a@b> BOGUS",
            "555 5.5.4 Unsupported option: BOGUS",
        ),
        (
            "MAIL FROM:<jörg@b.example>",
            "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
        ),
        ("FOO", "502 5.5.2 Error: command not recognized"),
        ("", "500 5.5.2 Error: bad syntax"),
        ("NO\0OP", "500 5.5.2 Error: bad syntax"),
        ("VRFY", "501 5.5.4 Syntax: VRFY address"),
    ];
    for (cmd, want) in cases {
        assert_eq!(lines(&d.send(format!("{cmd}\r\n"))), [want], "{cmd:?}");
    }
    assert_eq!(
        lines(&d.send(b"NOOP \xff\r\n")),
        ["500 5.5.2 Error: bad UTF-8 syntax"]
    );
    d.send("MAIL FROM:<a@b>\r\n");
    for (cmd, want) in [
        ("RCPT FROM:<a@b>", "501 5.5.4 Syntax: RCPT TO:<address>"),
        ("RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
        (
            "RCPT TO:<bob@x..y>",
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            "RCPT TO:<a@b> NOTIFY=SOMETIMES",
            "501 5.5.4 Error: Bad NOTIFY parameter syntax",
        ),
        (
            "RCPT TO:<ü@b>",
            "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
        ),
    ] {
        assert_eq!(lines(&d.send(format!("{cmd}\r\n"))), [want], "{cmd:?}");
    }
}

#[test]
fn smtputf8_addresses() {
    let mut d = Driver::ehlo(config());
    let out = d.send("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\nRCPT TO:<ü@例え.jp>\r\n");
    assert_eq!(lines(&out), ["250 2.1.0 Ok", "250 2.1.5 Ok"]);
}

#[test]
fn line_too_long() {
    let mut d = Driver::ehlo(config());
    let long = format!("NOOP {}\r\n", "x".repeat(3000));
    assert_eq!(lines(&d.send(&long)), ["500 5.5.2 Error: line too long"]);
    // Exactly at the limit is fine; the next command still works.
    let max = format!("NOOP {}\r\n", "x".repeat(2048 - 5));
    assert_eq!(lines(&d.send(&max)), ["250 2.0.0 Ok"]);
    // An overlong line arriving in pieces is discarded as it comes.
    d.send("NOOP ");
    for _ in 0..100 {
        assert_eq!(d.send("y".repeat(1000)), "");
    }
    assert_eq!(
        lines(&d.send("\r\nNOOP\r\n")),
        ["500 5.5.2 Error: line too long", "250 2.0.0 Ok"]
    );
}

#[test]
fn recipient_limit_with_ten_thousand_rcpts() {
    let mut d = Driver::ehlo(config());
    d.send("MAIL FROM:<a@b.example>\r\n");
    let mut batch = String::new();
    for i in 0..10_000 {
        batch.push_str(&format!("RCPT TO:<u{i}@d.example>\r\n"));
    }
    d.send(&batch);
    let l = d.lines();
    let ok = l
        .iter()
        .filter(|x| *x == "250 2.1.0 Ok" || *x == "250 2.1.5 Ok")
        .count();
    let full = l
        .iter()
        .filter(|x| *x == "452 4.5.3 Error: too many recipients")
        .count();
    assert_eq!(ok, 1001);
    // 1000 free overshoots, then 20 counted errors hit the hard limit.
    assert_eq!(full, 1020);
    assert_eq!(
        l.last().map(String::as_str),
        Some("421 4.7.0 mx.example Error: too many errors")
    );
    assert!(d.closed);
}

#[test]
fn soft_and_hard_error_limits() {
    let mut d = Driver::ehlo(config());
    for i in 1..20 {
        assert_eq!(
            lines(&d.send("BOGUS\r\n")),
            ["502 5.5.2 Error: command not recognized"]
        );
        assert_eq!(d.s.error_sleep_due(), i >= 10);
    }
    assert_eq!(
        lines(&d.send("BOGUS\r\nNOOP\r\n")),
        [
            "502 5.5.2 Error: command not recognized",
            "421 4.7.0 mx.example Error: too many errors"
        ]
    );
    assert!(d.closed);
}

#[test]
fn delivered_message_resets_error_count() {
    let mut d = Driver::ehlo(config());
    d.send("BOGUS\r\nBOGUS\r\n");
    assert_eq!(d.s.error_count(), 2);
    txn(&mut d);
    d.send("DATA\r\nx\r\n.\r\n");
    assert_eq!(d.s.error_count(), 0);
}

#[test]
fn data_too_big_is_swallowed() {
    let mut cfg = config();
    cfg.limits.message_size_limit = 100;
    cfg.limits.data_chunk_size = 16;
    let mut d = Driver::ehlo(cfg);
    txn(&mut d);
    d.send("DATA\r\n");
    d.clear();
    let body = "0123456789\r\n".repeat(50);
    let out = d.send(format!("{body}.\r\nNOOP\r\n"));
    assert_eq!(
        lines(&out),
        ["552 5.3.4 Message size exceeds fixed limit", "250 2.0.0 Ok"]
    );
    assert!(d.data.len() <= 100, "{}", d.data.len());
    assert!(d.events.contains(&Event::Reset));
    assert!(
        !d.events
            .iter()
            .any(|e| matches!(e, Event::MessageEnd { .. }))
    );
    assert!(!d.s.in_transaction());
}

#[test]
fn smuggling_patterns_do_not_end_data() {
    for mode in [BareNewline::No, BareNewline::Normalize] {
        for sep in ["\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n", "\r.\r\n"] {
            let mut cfg = config();
            cfg.bare_newline = mode;
            let mut d = Driver::ehlo(cfg);
            txn(&mut d);
            d.send("DATA\r\n");
            d.clear();
            let out = d.send(format!(
                "Subject: a\r\n\r\nbody{sep}MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\nDATA\r\n\r\nspoof\r\n.\r\n"
            ));
            assert_eq!(
                lines(&out),
                ["250 2.0.0 Ok: queued as TESTID"],
                "{sep:?} {mode:?}"
            );
            let ends = d
                .events
                .iter()
                .filter(|e| matches!(e, Event::MessageEnd { .. }))
                .count();
            assert_eq!(ends, 1);
            assert!(!d.events.iter().any(|e| matches!(e, Event::Mail(_))));
            assert!(String::from_utf8_lossy(&d.data).contains("MAIL FROM:<evil@x.example>"));
        }
    }
}

#[test]
fn bare_lf_reject_in_command_and_data() {
    let mut cfg = config();
    cfg.bare_newline = BareNewline::Reject;
    let mut d = Driver::new(cfg.clone());
    assert_eq!(
        lines(&d.send("EHLO c\n")),
        ["521 5.5.2 mx.example Error: bare <LF> received"]
    );
    assert!(d.closed);

    let mut d = Driver::ehlo(cfg);
    txn(&mut d);
    d.send("DATA\r\n");
    d.clear();
    let out = d.send("a\r\nb\n.\nRCPT TO:<x@evil.example>\r\n");
    assert_eq!(
        lines(&out),
        ["521 5.5.2 mx.example Error: bare <LF> received"]
    );
    assert!(d.closed);
    assert!(d.events.contains(&Event::Reset));
}

#[test]
fn bare_lf_accepted_in_commands_when_not_rejecting() {
    let mut d = Driver::new(config());
    assert_eq!(
        lines(&d.send("HELO c\nNOOP\n")),
        ["250 mx.example", "250 2.0.0 Ok"]
    );
}

#[test]
fn pipelined_replies_are_batched_in_order() {
    let mut d = Driver::ehlo(config());
    d.writes.clear();
    d.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<>\r\nRCPT TO:<e@f>\r\nDATA\r\n");
    assert_eq!(d.writes.len(), 1, "one write for the group");
    assert_eq!(
        lines(&String::from_utf8_lossy(&d.writes[0])),
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "501 5.1.3 Bad recipient address syntax",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
    );
    let out = d.send("x\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n");
    assert_eq!(
        lines(&out),
        [
            "250 2.0.0 Ok: queued as TESTID",
            "250 2.0.0 Ok",
            "250 2.0.0 Ok",
            "221 2.0.0 Bye"
        ]
    );
}

#[test]
fn deferred_decision_holds_later_replies() {
    let mut d = Driver::ehlo(config());
    d.s.feed(b"MAIL FROM:<a@b>\r\nNOOP\r\n");
    assert!(matches!(d.s.next(), Step::Event(Event::Mail(_))));
    // Undecided (e.g. a policy lookup in flight): NOOP waits behind MAIL.
    assert_eq!(d.s.next(), Step::NeedInput);
    assert!(d.s.decision_pending());
    assert!(d.s.wants_read());
    // A driver text cannot inject a reply line.
    d.s.reject(
        550,
        "5.7.1",
        "<a@b>: Sender address rejected\r\n250 injected",
    )
    .expect("pending");
    assert_eq!(
        d.s.next(),
        Step::Output(
            b"550 5.7.1 <a@b>: Sender address rejected  250 injected\r\n250 2.0.0 Ok\r\n".to_vec()
        )
    );
    assert_eq!(d.s.accept(), Err(oxipost_smtp_proto::NoPendingDecision));
}

#[test]
fn backpressure_while_decision_pending() {
    let mut cfg = config();
    cfg.limits.input_buffer_limit = 1024;
    let mut d = Driver::ehlo(cfg);
    d.policy = Box::new(|_| Answer::Accept);
    d.s.feed(b"VRFY x\r\n");
    assert!(matches!(d.s.next(), Step::Event(Event::Vrfy(_))));
    assert!(d.s.wants_read());
    d.s.feed(&b"NOOP\r\n".repeat(200));
    assert!(!d.s.wants_read());
    d.s.accept().expect("pending");
    d.run();
    assert!(d.s.wants_read());
    assert_eq!(d.lines().len(), 201);
    assert_eq!(d.lines()[0], "252 2.0.0 x");
}

#[test]
fn driver_rejections_and_421() {
    let mut d = Driver::ehlo(config());
    d.policy = Box::new(|ev| match ev {
        Event::Rcpt(r) if r.recipient.local == "nobody" => Answer::Reject(
            550,
            "5.1.1",
            format!("<{}>: Recipient address rejected", r.recipient),
        ),
        Event::Rcpt(_) => Answer::Reject(421, "4.3.0", "mx.example Service unavailable".into()),
        _ => Answer::Accept,
    });
    let out = d.send("MAIL FROM:<a@b>\r\nRCPT TO:<nobody@d>\r\nRCPT TO:<x@d>\r\nNOOP\r\n");
    assert_eq!(
        lines(&out),
        [
            "250 2.1.0 Ok",
            "550 5.1.1 <nobody@d>: Recipient address rejected",
            "421 4.3.0 mx.example Service unavailable",
        ]
    );
    assert!(d.closed);
}

#[test]
fn reject_codes_are_coerced() {
    let mut d = Driver::ehlo(config());
    d.policy = Box::new(|_| Answer::Reject(250, "2.0.0", "nope".into()));
    assert_eq!(lines(&d.send("MAIL FROM:<a@b>\r\n")), ["451 4.0.0 nope"]);
    d.policy = Box::new(|_| Answer::Reject(554, "4.7.1", "no".into()));
    assert_eq!(lines(&d.send("MAIL FROM:<a@b>\r\n")), ["554 5.7.1 no"]);
}

#[test]
fn message_end_rejected() {
    let mut d = Driver::ehlo(config());
    d.policy = Box::new(|ev| match ev {
        Event::MessageEnd { .. } => Answer::Reject(554, "5.7.1", "Message content rejected".into()),
        _ => Answer::Accept,
    });
    txn(&mut d);
    assert_eq!(
        lines(&d.send("DATA\r\nx\r\n.\r\nRCPT TO:<a@b>\r\n")),
        [
            "354 End data with <CR><LF>.<CR><LF>",
            "554 5.7.1 Message content rejected",
            "503 5.5.1 Error: need MAIL command",
        ]
    );
}

#[test]
fn enhanced_status_codes_can_be_off() {
    let mut cfg = config();
    cfg.extensions.enhanced_status_codes = false;
    let mut d = Driver::ehlo(cfg);
    assert_eq!(
        lines(&d.send("MAIL FROM:<a@b>\r\nFOO\r\n")),
        ["250 Ok", "502 Error: command not recognized"]
    );
}

#[test]
fn vrfy() {
    let mut d = Driver::ehlo(config());
    assert_eq!(lines(&d.send("VRFY bob\r\n")), ["252 2.0.0 bob"]);
    let mut cfg = config();
    cfg.vrfy_enabled = false;
    let mut d = Driver::ehlo(cfg);
    assert_eq!(
        lines(&d.send("VRFY bob\r\n")),
        ["502 5.5.1 VRFY command is disabled"]
    );
}

#[test]
fn timeout_and_shutdown() {
    let mut d = Driver::ehlo(config());
    txn(&mut d);
    d.events.clear();
    d.s.timeout();
    d.run();
    assert_eq!(
        d.lines().last().map(String::as_str),
        Some("421 4.4.2 mx.example Error: timeout exceeded")
    );
    assert_eq!(d.events, [Event::Reset]);
    assert!(d.closed);
}

#[test]
fn forbidden_http_commands() {
    let mut d = Driver::new(config());
    assert_eq!(
        lines(&d.send("GET / HTTP/1.0\r\n")),
        ["221 2.7.0 Error: I can break rules, too. Goodbye."]
    );
    assert!(d.closed);
}

#[test]
fn pregreet_input_is_refused() {
    let mut cfg = ServerConfig::new(HOST);
    cfg.forbid_unauth_pipelining = true;
    let mut s = Session::new(cfg.clone());
    s.feed(b"EHLO early\r\n");
    assert_eq!(s.next(), Step::NeedInput);
    s.greet();
    assert_eq!(
        s.next(),
        Step::Output(b"554 5.5.0 Error: SMTP protocol synchronization\r\n".to_vec())
    );
    assert_eq!(s.next(), Step::Close);

    // Without the restriction the early command is simply processed.
    cfg.forbid_unauth_pipelining = false;
    let mut s = Session::new(cfg);
    s.feed(b"NOOP\r\n");
    s.greet();
    assert_eq!(
        s.next(),
        Step::Output(b"220 mx.example ESMTP\r\n250 2.0.0 Ok\r\n".to_vec())
    );
}

#[test]
fn unauthorised_pipelining_is_refused() {
    let mut cfg = ServerConfig::new(HOST);
    cfg.forbid_unauth_pipelining = true;
    // Nothing may follow HELO (no PIPELINING), nor EHLO (must end a group).
    for input in [
        "HELO c\r\nMAIL FROM:<a@b>\r\n",
        "EHLO c\r\nMAIL FROM:<a@b>\r\n",
    ] {
        let mut d = Driver::new(cfg.clone());
        assert_eq!(
            lines(&d.send(input)),
            ["554 5.5.0 Error: SMTP protocol synchronization"]
        );
        assert!(d.closed);
    }
    // After EHLO, a proper group is fine; data right behind DATA is not.
    let mut d = Driver::new(cfg.clone());
    d.send("EHLO c\r\n");
    let out = d.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    assert_eq!(lines(&out).len(), 3);
    let mut cfg = ServerConfig::new(HOST);
    cfg.forbid_unauth_pipelining = true;
    let mut d = Driver::new(cfg);
    d.send("EHLO c\r\n");
    let out = d.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n");
    assert_eq!(
        lines(&out).last().copied(),
        Some("554 5.5.0 Error: SMTP protocol synchronization")
    );
}

#[test]
fn binarymime_needs_bdat() {
    let mut d = Driver::ehlo(config());
    d.send("MAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<c@d>\r\n");
    assert_eq!(
        lines(&d.send("DATA\r\n")),
        ["503 5.5.1 Error: BINARYMIME requires BDAT"]
    );
    assert_eq!(
        lines(&d.send(b"BDAT 3 LAST\r\n\0\xff\n")),
        ["250 2.0.0 Ok: queued as TESTID"]
    );
    assert_eq!(d.data, b"\0\xff\n");
}

#[test]
fn unbounded_feeding_is_capped() {
    let mut cfg = config();
    cfg.limits.input_buffer_limit = 1024;
    let mut d = Driver::ehlo(cfg);
    d.policy = Box::new(|_| Answer::Accept);
    d.s.feed(b"VRFY x\r\n");
    assert!(matches!(d.s.next(), Step::Event(Event::Vrfy(_))));
    // Ignoring wants_read(): the fifth KiB of queued input is refused.
    for _ in 0..5 {
        d.s.feed(&[b'N'; 1000]);
    }
    assert!(d.s.is_closing());
    d.run();
    assert_eq!(
        d.lines(),
        ["421 4.7.0 mx.example Error: too much pipelined input"]
    );
    assert!(d.closed);
}

/// `smtpd_delay_reject = no` with a client rejected at connect, as Debian's Postfix 3.7:
/// the rejection replaces the greeting, the session stays open, every command but QUIT is
/// answered 503.
#[test]
fn access_denied_at_connect() {
    let mut s = Session::new(config());
    s.deny_access(
        554,
        "5.7.1",
        "<c[192.0.2.9]>: Client host rejected: Access denied",
        "c[192.0.2.9]",
    );
    s.feed(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nFOO\r\nRSET\r\nQUIT\r\n");
    let mut wire = Vec::new();
    let mut events = 0;
    loop {
        match s.next() {
            Step::Output(b) => wire.extend_from_slice(&b),
            Step::Event(_) => events += 1,
            Step::NeedInput | Step::Close => break,
        }
    }
    let denied = "503 5.7.0 Error: access denied for c[192.0.2.9]";
    assert_eq!(
        lines(&String::from_utf8_lossy(&wire)),
        [
            "554 5.7.1 <c[192.0.2.9]>: Client host rejected: Access denied",
            denied,
            denied,
            denied,
            denied,
            "221 2.0.0 Bye"
        ]
    );
    assert_eq!(events, 0);
}

#[test]
fn unknown_commands_as_decisions() {
    let mut d = Driver::ehlo(config());
    assert_eq!(
        lines(&d.send("XYZZY a\r\n")),
        ["502 5.5.2 Error: command not recognized"]
    );
    let mut cfg = config();
    cfg.unknown_command_events = true;
    let mut d = Driver::ehlo(cfg);
    d.policy = Box::new(|ev| match ev {
        Event::Unknown(l) if l.contains("REFUSE") => {
            Answer::Reject(553, "5.7.2", "command refused by milter".into())
        }
        _ => Answer::Accept,
    });
    assert_eq!(
        lines(&d.send("XYZZY a\r\nREFUSE me\r\n")),
        [
            "502 5.5.2 Error: command not recognized",
            "553 5.7.2 command refused by milter"
        ]
    );
}

//! Framing independence, random input and large messages.

mod common;

use common::{Answer, Driver, config};
use oxipost_smtp_proto::{BareNewline, Event, ServerConfig, Session, Step};
use proptest::prelude::*;

/// A conversation touching every framing path: pipelining, DATA with
/// stuffing and smuggling-like bytes, BDAT, an overlong line, errors.
fn script() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(
        b"EHLO c\r\nMAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<c@d>\r\nRCPT TO:<>\r\nDATA\r\n",
    );
    s.extend_from_slice(b"line1\r\n..dot\r\n\n.\n\r.\r\r\n.x\r\n.\r\n");
    s.extend_from_slice(
        b"MAIL FROM:<x@y>\r\nRCPT TO:<z@w>\r\nBDAT 7\r\nabc\r\n.\rBDAT 2 LAST\r\nxy",
    );
    s.extend_from_slice(b"NOOP\r\nVRFY u\r\nFOO\r\n");
    s.extend_from_slice(format!("NOOP {}\r\n", "z".repeat(3000)).as_bytes());
    s.extend_from_slice(b"AUTH PLAIN\r\nRSET\r\nQUIT\r\n");
    s
}

/// Feeds `input` split at `cuts` and returns (wire, non-data events, data).
fn run_split(cfg: ServerConfig, input: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<Event>, Vec<u8>) {
    let mut d = Driver::new(cfg);
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    for c in cuts {
        if c > last {
            d.send(&input[last..c]);
            last = c;
        }
    }
    let events = d
        .events
        .into_iter()
        .filter(|e| !matches!(e, Event::MessageData(_)))
        .collect();
    (d.wire, events, d.data)
}

fn small_chunks() -> ServerConfig {
    let mut cfg = config();
    cfg.limits.data_chunk_size = 4;
    cfg
}

#[test]
fn byte_at_a_time_equals_whole_buffer() {
    let input = script();
    let whole = run_split(small_chunks(), &input, &[]);
    let every: Vec<usize> = (1..input.len()).collect();
    let bytewise = run_split(small_chunks(), &input, &every);
    assert_eq!(
        String::from_utf8_lossy(&whole.0),
        String::from_utf8_lossy(&bytewise.0)
    );
    assert_eq!(whole.1, bytewise.1);
    assert_eq!(whole.2, bytewise.2);
    // And the conversation really did what we think.
    let wire = String::from_utf8_lossy(&whole.0);
    assert_eq!(wire.matches("queued as TESTID").count(), 2, "{wire}");
    assert!(wire.contains("500 5.5.2 Error: line too long"));
    assert!(wire.ends_with("221 2.0.0 Bye\r\n"));
    assert_eq!(whole.2, b"line1\r\n.dot\r\n\n.\n\r.\r\r\nx\r\nabc\r\n.\rxy");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_split_equals_whole_buffer(cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
        let input = script();
        let whole = run_split(small_chunks(), &input, &[]);
        let split = run_split(small_chunks(), &input, &cuts);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn random_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        mode in 0u8..3,
    ) {
        let mut cfg = rich_config();
        cfg.bare_newline = [BareNewline::No, BareNewline::Normalize, BareNewline::Reject][mode as usize];
        let (wire, _, _) = run_split_tls(cfg, &input, &cuts);
        assert_wellformed(&wire);
    }

    #[test]
    fn smtp_shaped_noise_never_panics(
        parts in proptest::collection::vec(0usize..FRAGMENTS.len(), 0..60),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        forbid in any::<bool>(),
    ) {
        let input: Vec<u8> = parts.iter().flat_map(|&i| FRAGMENTS[i].iter().copied()).collect();
        let mut cfg = rich_config();
        cfg.forbid_unauth_pipelining = forbid;
        let (wire, _, _) = run_split_tls(cfg, &input, &cuts);
        assert_wellformed(&wire);
    }
}

const FRAGMENTS: &[&[u8]] = &[
    b"EHLO x\r\n",
    b"HELO y\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<> SMTPUTF8 BODY=BINARYMIME\r\n",
    b"RCPT TO:<c@d>\r\n",
    b"RCPT TO:<\"q\"@[1.2.3.4]> NOTIFY=NEVER\r\n",
    b"DATA\r\n",
    b".\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"..",
    b"\0",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT x\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN dXNlcg==\r\n",
    b"*\r\n",
    b"STARTTLS\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY\r\n",
    b"QUIT\r\n",
    b"\xff\xfe",
    b"MAIL FROM:<\xc3\xbc@b>\r\n",
    b"text",
];

fn rich_config() -> ServerConfig {
    let mut cfg = config();
    cfg.starttls = true;
    cfg.auth_mechanisms = vec!["PLAIN".into(), "LOGIN".into()];
    cfg.limits.message_size_limit = 64;
    cfg.limits.line_length_limit = 64;
    cfg.limits.data_chunk_size = 8;
    cfg.limits.hard_error_limit = 1000;
    cfg
}

/// Like `run_split`, but completes STARTTLS handshakes and alternates
/// accept/reject so that both paths are exercised.
fn run_split_tls(
    cfg: ServerConfig,
    input: &[u8],
    cuts: &[usize],
) -> (Vec<u8>, Vec<Event>, Vec<u8>) {
    let mut s = Session::new(cfg);
    s.greet();
    let mut wire = Vec::new();
    let mut n = 0u32;
    let mut pump = |s: &mut Session, wire: &mut Vec<u8>| {
        for _ in 0..1_000_000 {
            match s.next() {
                Step::Output(b) => wire.extend(b),
                Step::Event(Event::StartTls) => s.tls_established(),
                Step::Event(ev) => {
                    n += 1;
                    if s.decision_pending() {
                        let r = match (&ev, n % 3) {
                            (Event::Auth { .. } | Event::AuthResponse(_), 0) => {
                                s.auth_challenge("eA==")
                            }
                            (_, 1) => s.reject(550, "5.0.0", "no"),
                            _ => s.accept(),
                        };
                        assert!(r.is_ok());
                    }
                }
                Step::NeedInput | Step::Close => return,
            }
        }
        panic!("no progress");
    };
    let mut last = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    for c in cuts {
        if c > last {
            s.feed(&input[last..c]);
            pump(&mut s, &mut wire);
            last = c;
        }
    }
    s.timeout();
    pump(&mut s, &mut wire);
    assert!(s.is_closing());
    (wire, Vec::new(), Vec::new())
}

/// Every output line is `ddd[ -]text` and short.
fn assert_wellformed(wire: &[u8]) {
    assert!(wire.ends_with(b"\r\n"));
    for line in wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.ends_with(b"\r"), "{line:?}");
        assert!(line.len() <= 514, "reply line too long");
        assert!(
            line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit),
            "{line:?}"
        );
        assert!(
            line[3] == b' ' || line[3] == b'-' || line.len() == 4,
            "{line:?}"
        );
        assert!(!line[..line.len() - 1].contains(&b'\r'));
    }
}

#[test]
fn ten_megabyte_message_is_streamed() {
    let mut cfg = config();
    cfg.limits.message_size_limit = 20_000_000;
    let chunk = cfg.limits.data_chunk_size;
    let mut d = Driver::ehlo(cfg);
    d.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    d.clear();
    let line = format!("{}\r\n", "x".repeat(998));
    let mut sent = 0usize;
    let mut read = Vec::with_capacity(65536);
    let mut max_event = 0usize;
    while sent < 10_000_000 {
        read.clear();
        while read.len() < 65536 - line.len() {
            read.extend_from_slice(line.as_bytes());
        }
        sent += read.len();
        d.send(&read);
        assert!(d.s.wants_read());
        for e in d.events.drain(..) {
            if let Event::MessageData(b) = e {
                max_event = max_event.max(b.len());
            }
        }
        // The driver would write chunks to the queue file; drop them here.
        d.data.clear();
    }
    let out = d.send(".\r\n");
    assert_eq!(out, "250 2.0.0 Ok: queued as TESTID\r\n");
    assert!(max_event <= chunk + 2, "chunk of {max_event} bytes");
    assert!(d.events.contains(&Event::MessageEnd { size: sent as u64 }));
}

#[test]
fn decisions_can_be_rejected_wholesale() {
    let mut d = Driver::new(config());
    d.policy = Box::new(|_| Answer::Reject(554, "5.7.1", "go away".into()));
    let out = d.send("EHLO c\r\nMAIL FROM:<a@b>\r\nVRFY x\r\n");
    assert_eq!(
        out,
        "554 5.7.1 go away\r\n554 5.7.1 go away\r\n554 5.7.1 go away\r\n"
    );
}

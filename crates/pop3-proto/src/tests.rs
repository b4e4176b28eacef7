//! Session tests: whole conversations with a scripted driver.

use crate::*;

/// A driver whose authentication accepts `alice`/`pw` and whose mailbox holds `msgs`.
struct Driver {
    s: Session,
    wire: Vec<u8>,
    msgs: Vec<&'static [u8]>,
    in_use: bool,
    updates: Vec<Vec<usize>>,
    events: Vec<Event>,
}

impl Driver {
    fn new(cfg: Config, msgs: Vec<&'static [u8]>) -> Driver {
        let s = Session::new(cfg);
        let mut wire = Vec::new();
        s.greet(&mut wire);
        Driver {
            s,
            wire,
            msgs,
            in_use: false,
            updates: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Feeds `input`, runs to NeedInput/Close; returns the new output as text.
    fn say(&mut self, input: &str) -> String {
        self.wire.clear();
        self.s.feed(input.as_bytes());
        loop {
            match self.s.next(&mut self.wire) {
                Step::Event(ev) => {
                    self.events.push(ev.clone());
                    self.handle(ev)
                }
                Step::Wait => panic!("driver left an event unanswered"),
                Step::NeedInput | Step::Close => break,
            }
        }
        String::from_utf8_lossy(&self.wire).into_owned()
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Authenticate {
                mechanism, initial, ..
            } => match initial {
                Some(Secret(i)) if mechanism == "PLAIN" => self.verdict(&i),
                _ => self.s.challenge("", &mut self.wire),
            },
            Event::AuthResponse { response } => {
                if response.0 == "*" {
                    self.s.login_failed(&LoginFailure::Auth, &mut self.wire);
                } else {
                    self.verdict(&response.0)
                }
            }
            Event::StartTls => self.s.tls_started(),
            Event::Retrieve { msg, .. } => {
                let m = self.msgs[msg];
                self.s.message(Ok(m), &mut self.wire)
            }
            Event::Update { deleted } => {
                let n = deleted.len() as u64;
                self.updates.push(deleted);
                self.s.updated(Ok(n), &mut self.wire)
            }
        }
    }

    fn verdict(&mut self, b64: &str) {
        // "\0alice\0pw"
        if b64 == "AGFsaWNlAHB3" {
            if self.in_use {
                self.s.login_failed(
                    &LoginFailure::InUse("Mailbox is locked by another POP3 session.".into()),
                    &mut self.wire,
                );
                return;
            }
            let list = self
                .msgs
                .iter()
                .enumerate()
                .map(|(i, m)| Message {
                    size: wire_size(m),
                    uid: format!("uid{i}"),
                })
                .collect();
            self.s.logged_in(list, &mut self.wire);
        } else {
            self.s.login_failed(&LoginFailure::Auth, &mut self.wire);
        }
    }
}

const M1: &[u8] = b"Subject: one\n\nbody\n.dot\n";
const M2: &[u8] = b"Subject: two\n\nline1\nline2\nline3\n";

fn logged_in() -> Driver {
    let mut d = Driver::new(Config::new(), vec![M1, M2]);
    assert_eq!(
        d.say("USER alice\r\nPASS pw\r\n"),
        "+OK\r\n+OK Logged in.\r\n"
    );
    d
}

#[test]
fn greeting_and_capa() {
    let mut cfg = Config::new();
    cfg.stls = true;
    let mut d = Driver::new(cfg, vec![]);
    assert_eq!(String::from_utf8_lossy(&d.wire), "+OK oxipost ready.\r\n");
    let capa = d.say("CAPA\r\n");
    for line in [
        "CAPA",
        "TOP",
        "UIDL",
        "RESP-CODES",
        "PIPELINING",
        "AUTH-RESP-CODE",
        "USER",
        "SASL PLAIN LOGIN",
        "STLS",
        "IMPLEMENTATION oxipost",
    ] {
        assert!(
            capa.contains(&format!("\r\n{line}\r\n")),
            "{line} in {capa}"
        );
    }
    assert!(capa.starts_with("+OK") && capa.ends_with("\r\n.\r\n"));
}

#[test]
fn stat_list_uidl_retr_top() {
    let mut d = logged_in();
    let (s1, s2) = (wire_size(M1), wire_size(M2));
    assert_eq!(d.say("STAT\r\n"), format!("+OK 2 {}\r\n", s1 + s2));
    assert_eq!(
        d.say("LIST\r\n"),
        format!("+OK\r\n1 {s1}\r\n2 {s2}\r\n.\r\n")
    );
    assert_eq!(d.say("LIST 2\r\n"), format!("+OK 2 {s2}\r\n"));
    assert_eq!(d.say("UIDL\r\n"), "+OK\r\n1 uid0\r\n2 uid1\r\n.\r\n");
    assert_eq!(d.say("uidl 1\r\n"), "+OK 1 uid0\r\n");
    assert_eq!(
        d.say("RETR 1\r\n"),
        format!("+OK {s1} octets\r\nSubject: one\r\n\r\nbody\r\n..dot\r\n.\r\n")
    );
    assert_eq!(
        d.say("TOP 2 1\r\n"),
        "+OK\r\nSubject: two\r\n\r\nline1\r\n.\r\n"
    );
    let st = d.s.stats();
    assert_eq!((st.retr_count, st.retr_bytes, st.top_count), (1, s1, 1));
}

#[test]
fn bad_arguments_get_err() {
    let mut d = logged_in();
    for cmd in [
        "RETR 0",
        "RETR 3",
        "RETR 99999",
        "RETR -1",
        "RETR +1",
        "RETR x",
        "RETR 99999999999999999999999",
        "TOP 1 -1",
        "TOP 1 x",
        "LIST 0",
        "DELE 7",
    ] {
        let r = d.say(&format!("{cmd}\r\n"));
        assert!(r.starts_with("-ERR "), "{cmd}: {r}");
    }
    assert!(d.say("RETR\r\n").starts_with("-ERR"));
    assert!(d.say("FOO\r\n").starts_with("-ERR Unknown command"));
    assert!(d.say("USER bob\r\n").starts_with("-ERR"));
}

#[test]
fn dele_rset_quit_update() {
    let mut d = logged_in();
    assert_eq!(d.say("DELE 1\r\n"), "+OK Marked to be deleted.\r\n");
    assert_eq!(d.say("DELE 1\r\n"), "-ERR Message is deleted.\r\n");
    assert!(d.say("RETR 1\r\n").starts_with("-ERR Message is deleted."));
    assert_eq!(d.say("STAT\r\n"), format!("+OK 1 {}\r\n", wire_size(M2)));
    assert_eq!(
        d.say("LIST\r\n"),
        format!("+OK\r\n2 {}\r\n.\r\n", wire_size(M2))
    );
    assert_eq!(d.say("RSET\r\n"), "+OK\r\n");
    assert!(d.say("STAT\r\n").starts_with("+OK 2 "));
    d.say("DELE 2\r\n");
    assert_eq!(d.say("QUIT\r\n"), "+OK Logging out.\r\n");
    assert_eq!(d.updates, vec![vec![1]]);
    assert_eq!(d.s.stats().deleted, 1);
    assert_eq!(d.s.next(&mut Vec::new()), Step::Close);
}

#[test]
fn no_update_without_quit() {
    let mut d = logged_in();
    d.say("DELE 1\r\nDELE 2\r\n");
    assert!(d.updates.is_empty());
    assert_eq!(d.s.stats().marked, 2);
}

#[test]
fn commands_before_login() {
    let mut d = Driver::new(Config::new(), vec![M1]);
    assert!(d.say("STAT\r\n").starts_with("-ERR"));
    assert!(d.say("RETR 1\r\n").starts_with("-ERR"));
    assert_eq!(d.say("PASS pw\r\n"), "-ERR No username given.\r\n");
    assert!(d.say("APOP alice 0123\r\n").starts_with("-ERR"));
}

#[test]
fn wrong_password_and_attempt_limit() {
    let mut d = Driver::new(Config::new(), vec![M1]);
    assert_eq!(
        d.say("USER alice\r\nPASS nope\r\n"),
        "+OK\r\n-ERR [AUTH] Authentication failed.\r\n"
    );
    d.say("PASS nope\r\n");
    let last = d.say("PASS nope\r\n");
    assert!(
        last.contains("[AUTH]") && last.contains("disconnecting"),
        "{last}"
    );
    assert_eq!(d.s.next(&mut Vec::new()), Step::Close);
}

#[test]
fn password_with_spaces_is_verbatim() {
    let mut d = Driver::new(Config::new(), vec![]);
    d.say("USER alice\r\nPASS a b \r\n");
    let Some(Event::Authenticate {
        initial: Some(Secret(i)),
        ..
    }) = d.events.first().cloned()
    else {
        panic!("no authenticate event");
    };
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(i)
        .expect("base64");
    assert_eq!(raw, b"\0alice\0a b ");
    // Secrets do not show up in Debug output.
    assert!(!format!("{:?}", d.events).contains(&"AGFsaWNl".to_string()));
}

#[test]
fn in_use_is_a_response_code() {
    let mut d = Driver::new(Config::new(), vec![M1]);
    d.in_use = true;
    let r = d.say("USER alice\r\nPASS pw\r\n");
    assert!(
        r.ends_with("-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n"),
        "{r}"
    );
}

#[test]
fn sasl_plain_with_and_without_initial_response() {
    let mut d = Driver::new(Config::new(), vec![M1]);
    assert_eq!(d.say("AUTH PLAIN AGFsaWNlAHB3\r\n"), "+OK Logged in.\r\n");
    let mut d = Driver::new(Config::new(), vec![M1]);
    assert_eq!(d.say("AUTH PLAIN\r\n"), "+ \r\n");
    assert_eq!(d.say("AGFsaWNlAHB3\r\n"), "+OK Logged in.\r\n");
    let mut d = Driver::new(Config::new(), vec![M1]);
    assert_eq!(
        d.say("AUTH PLAIN\r\n*\r\n"),
        "+ \r\n-ERR [AUTH] Authentication failed.\r\n"
    );
    assert!(d.say("AUTH CRAM-MD5\r\n").starts_with("-ERR"));
    assert_eq!(d.say("AUTH\r\n"), "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
}

#[test]
fn pipelined_commands_answer_in_order() {
    let mut d = Driver::new(Config::new(), vec![M1, M2]);
    let r = d.say("USER alice\r\nPASS pw\r\nLIST 1\r\nRETR 2\r\nUIDL 2\r\nQUIT\r\n");
    let want = format!(
        "+OK\r\n+OK Logged in.\r\n+OK 1 {}\r\n+OK {} octets\r\nSubject: two\r\n\r\nline1\r\nline2\r\nline3\r\n.\r\n+OK 2 uid1\r\n+OK Logging out.\r\n",
        wire_size(M1),
        wire_size(M2)
    );
    assert_eq!(r, want);
}

#[test]
fn split_input_and_bare_lf() {
    let mut d = Driver::new(Config::new(), vec![]);
    assert_eq!(d.say("CA"), "");
    assert!(d.say("PA\n").starts_with("+OK Capability"));
}

#[test]
fn long_lines_are_refused_and_skipped() {
    let mut cfg = Config::new();
    cfg.max_line = 20;
    let mut d = Driver::new(cfg, vec![]);
    let long = "X".repeat(100);
    assert_eq!(d.say(&long), "");
    assert_eq!(d.say(&long), "");
    assert_eq!(
        d.say("Y\r\nNOOP\r\n"),
        "-ERR Input line too long.\r\n+OK\r\n"
    );
    assert_eq!(
        d.say(&format!("{}\r\n", "Z".repeat(25))),
        "-ERR Input line too long.\r\n"
    );
}

#[test]
fn too_many_bad_commands_close() {
    let mut cfg = Config::new();
    cfg.max_bad_commands = 3;
    let mut d = Driver::new(cfg, vec![]);
    let r = d.say("A\r\nB\r\nC\r\nD\r\n");
    assert!(r.ends_with("-ERR Too many bad commands.\r\n"), "{r}");
    assert_eq!(r.matches("-ERR").count(), 4);
}

#[test]
fn stls_drops_pipelined_input() {
    let mut cfg = Config::new();
    cfg.stls = true;
    let mut d = Driver::new(cfg, vec![M1]);
    assert_eq!(
        d.say("STLS\r\nUSER evil\r\n"),
        "+OK Begin TLS negotiation now.\r\n"
    );
    assert!(d.s.tls_active());
    assert_eq!(d.s.user_hint(), None);
    assert!(d.say("STLS\r\n").starts_with("-ERR"));
    assert!(!d.say("CAPA\r\n").contains("STLS"));
}

#[test]
fn plaintext_refused_when_tls_required() {
    let mut cfg = Config::new();
    cfg.stls = true;
    cfg.login_requires_tls = true;
    let mut d = Driver::new(cfg, vec![]);
    assert!(d.say("USER alice\r\n").starts_with("-ERR [AUTH] Plaintext"));
    assert!(!d.say("CAPA\r\n").contains("USER"));
}

#[test]
fn timeout_closes() {
    let mut d = logged_in();
    let mut out = Vec::new();
    d.s.timeout(&mut out);
    assert_eq!(out, b"-ERR Disconnected for inactivity.\r\n".to_vec());
    assert_eq!(d.s.next(&mut out), Step::Close);
}

#[test]
fn garbage_never_panics() {
    // A cheap fuzz: every byte value and awkward splits.
    let mut seed: u32 = 12345;
    for _ in 0..200 {
        let mut d = Driver::new(Config::new(), vec![M1, M2]);
        let mut input = Vec::new();
        for _ in 0..300 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let b = (seed >> 16) as u8;
            input.push(match b % 7 {
                0 => b'\n',
                1 => b' ',
                _ => b,
            });
        }
        d.s.feed(b"USER alice\r\nPASS pw\r\n");
        d.s.feed(&input);
        let mut n = 0;
        while let Step::Event(ev) = d.s.next(&mut d.wire) {
            d.handle(ev);
            n += 1;
            assert!(n < 10_000);
        }
    }
}

#[test]
fn apop_only_with_a_timestamp() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    let mut d = Driver::new(Config::new(), vec![M1]);
    assert!(
        d.say("APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n")
            .starts_with("-ERR")
    );
    assert!(d.events.is_empty());
    let mut cfg = Config::new();
    cfg.apop_timestamp = Some("<1.2@h>".into());
    let mut d = Driver::new(cfg, vec![M1]);
    assert_eq!(
        String::from_utf8_lossy(&d.wire),
        "+OK oxipost ready. <1.2@h>\r\n"
    );
    assert!(d.say("APOP alice nothex\r\n").starts_with("-ERR"));
    let out = d.say("APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n");
    let Some(Event::Authenticate {
        mechanism,
        initial: Some(Secret(i)),
        user,
    }) = d.events.last()
    else {
        panic!("no APOP event: {out}");
    };
    assert_eq!(
        (mechanism.as_str(), user.as_deref()),
        ("APOP", Some("alice"))
    );
    assert_eq!(
        B64.decode(i).expect("b64"),
        b"<1.2@h>\0alice\0c4c9334bac560ecc979e58001b3e22fb"
    );
}

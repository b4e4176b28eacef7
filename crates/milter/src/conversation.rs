//! One SMTP session's conversation with the configured milters, event by event, as
//! Postfix's smtpd holds it: connect, HELO, MAIL, each RCPT, DATA, unknown commands and
//! the message content are sent when they happen, and the answer applies to that event
//! (a reject at RCPT refuses that recipient only). Each milter keeps its connection for the
//! whole session; one that accepts the connection is left out for the rest of it, one that
//! accepts a message is left out until the transaction ends. A milter that fails (down,
//! timeout, closed, garbage) gets `milter_default_action` for the rest of the session:
//! `accept` skips it, `tempfail`/`reject` answer every later event with that reply,
//! `quarantine` holds each later message.
//!
//! Blocking: the caller runs it on its own thread (smtpd keeps one per connection).

use std::collections::HashMap;

use crate::client::{Error, Milter, Modification, Reply};
use crate::proto::{Family, Response, step};
use crate::session::{DefaultAction, MilterSettings, MilterSpec, Verdict, Warnings};

/// Postfix's reply for a milter's plain reject of an SMTP command.
pub const REJECT: &str = "550 5.7.1 Command rejected";
/// Postfix's reply for a milter's tempfail (and `milter_default_action = tempfail`).
pub const TEMPFAIL: &str = "451 4.7.1 Service unavailable - try again later";

/// The answer to one SMTP event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Continue,
    /// Refuse the command with this reply (`550 5.7.1 ...`, `451 4.7.1 ...`).
    Reply(String),
    /// Accept, then drop the message at its end (`milter triggers DISCARD action`).
    Discard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    /// Said ACCEPT at connect or HELO: nothing more this session.
    AcceptConn,
    /// Said ACCEPT in a transaction: nothing more until it ends.
    AcceptMsg,
    /// Failed; the default action applies from now on.
    Failed(DefaultAction),
}

struct Slot {
    spec: MilterSpec,
    conn: Option<Milter>,
    state: State,
}

/// The SMTP events (an ACCEPT at connect or HELO is for the whole session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
    Unknown,
}

/// Macro values by name.
type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;
/// One event sent to one milter.
type EventFn<'a> = dyn FnMut(&mut Milter, &Lookup<'_>) -> Result<Reply, Error> + 'a;

/// A session's milters.
pub struct Conversation {
    settings: MilterSettings,
    slots: Vec<Slot>,
    /// The macro values of the session so far; the caller updates them before each event.
    pub macros: HashMap<String, String>,
    warnings: Warnings,
    in_txn: bool,
    /// DATA was sent in this transaction (BDAT sessions have no DATA command: it is sent
    /// before the content, as Postfix does).
    data_sent: bool,
}

fn default_name(a: DefaultAction) -> &'static str {
    match a {
        DefaultAction::Accept => "accept",
        DefaultAction::Tempfail => "tempfail",
        DefaultAction::Reject => "reject",
        DefaultAction::Quarantine => "quarantine",
    }
}

/// What a milter's reply means for the event (`None`: go on).
fn reply_answer(r: Reply, reject: &str) -> Option<Answer> {
    Some(match r {
        Reply::Continue | Reply::Accept => return None,
        Reply::Reject => Answer::Reply(reject.to_string()),
        Reply::Tempfail => Answer::Reply(TEMPFAIL.into()),
        Reply::Discard => Answer::Discard,
        Reply::Code(c) if c.starts_with(['4', '5']) => Answer::Reply(c),
        Reply::Code(_) => Answer::Reply(TEMPFAIL.into()),
    })
}

impl Conversation {
    pub fn new(settings: MilterSettings) -> Conversation {
        let slots = settings
            .milters
            .iter()
            .map(|spec| Slot {
                spec: spec.clone(),
                conn: None,
                state: State::Active,
            })
            .collect();
        // Defaults first: the session's own values replace them.
        let macros = settings.macro_defaults.iter().cloned().collect();
        Conversation {
            settings,
            slots,
            macros,
            warnings: Vec::new(),
            in_txn: false,
            data_sent: false,
        }
    }

    /// The warnings since the last call (milters that failed), for the log.
    pub fn take_warnings(&mut self) -> Warnings {
        std::mem::take(&mut self.warnings)
    }

    /// Runs one event past every milter still listening; the first answer that is not
    /// "continue" decides and the rest are not asked.
    fn event(&mut self, ev: Ev, f: &mut EventFn<'_>) -> Answer {
        let macros = &self.macros;
        let look = |n: &str| macros.get(n).cloned();
        for slot in &mut self.slots {
            match slot.state {
                State::AcceptConn | State::AcceptMsg => continue,
                State::Failed(a) => match a {
                    DefaultAction::Accept | DefaultAction::Quarantine => continue,
                    DefaultAction::Tempfail => return Answer::Reply(TEMPFAIL.into()),
                    DefaultAction::Reject => return Answer::Reply(REJECT.into()),
                },
                State::Active => {}
            }
            let Some(m) = slot.conn.as_mut() else {
                continue;
            };
            match f(m, &look) {
                Ok(Reply::Accept) => {
                    slot.state = if matches!(ev, Ev::Connect | Ev::Helo) {
                        State::AcceptConn
                    } else {
                        State::AcceptMsg
                    };
                }
                Ok(Reply::Discard) if matches!(ev, Ev::Connect | Ev::Helo) => {
                    self.warnings.push(format!(
                        "milter {}: DISCARD action is not allowed in connect or helo phase",
                        slot.spec.name
                    ));
                }
                Ok(Reply::Discard) => {
                    // The message is to be dropped: this milter is done with it
                    // (libmilter answers nothing more for it).
                    slot.state = State::AcceptMsg;
                    return Answer::Discard;
                }
                Ok(r) => {
                    let reject = if ev == Ev::Connect {
                        "554 5.7.1 Command rejected"
                    } else {
                        REJECT
                    };
                    if let Some(a) = reply_answer(r, reject) {
                        return a;
                    }
                }
                Err(e) => {
                    let a = fail(slot, &e, &mut self.warnings);
                    match a {
                        DefaultAction::Tempfail => return Answer::Reply(TEMPFAIL.into()),
                        DefaultAction::Reject => return Answer::Reply(REJECT.into()),
                        DefaultAction::Accept | DefaultAction::Quarantine => {}
                    }
                }
            }
        }
        Answer::Continue
    }

    /// The client connected: connects to every milter (option negotiation) and sends it.
    pub fn connect(&mut self, client_name: &str, family: Family) -> Answer {
        for slot in &mut self.slots {
            if slot.conn.is_none() && slot.state == State::Active {
                match Milter::open(
                    &slot.spec.addr,
                    slot.spec.timeouts,
                    &self.settings.macros,
                    slot.spec.protocol,
                ) {
                    Ok(m) => slot.conn = Some(m),
                    Err(e) => {
                        fail(slot, &e, &mut self.warnings);
                    }
                }
            }
        }
        self.event(Ev::Connect, &mut |m, look| {
            m.connect(client_name, family.clone(), look)
        })
    }

    pub fn helo(&mut self, name: &str) -> Answer {
        self.event(Ev::Helo, &mut |m, look| m.helo(name, look))
    }

    /// `args`: `<sender>` then the ESMTP parameters.
    pub fn mail(&mut self, args: &[String]) -> Answer {
        self.in_txn = true;
        self.event(Ev::Mail, &mut |m, look| m.mail(args.to_vec(), look))
    }

    /// `args`: `<recipient>` then the ESMTP parameters.
    pub fn rcpt(&mut self, args: &[String]) -> Answer {
        self.event(Ev::Rcpt, &mut |m, look| m.rcpt(args.to_vec(), look))
    }

    pub fn data(&mut self) -> Answer {
        self.data_sent = true;
        self.event(Ev::Data, &mut |m, look| m.data(look))
    }

    /// An unknown command, as the client sent it.
    pub fn unknown(&mut self, line: &str) -> Answer {
        self.event(Ev::Unknown, &mut |m, _| m.unknown(line))
    }

    /// The transaction ends without a message (RSET, a refused MAIL or DATA, a new
    /// HELO): milters in a transaction get ABORT; those that accepted the message listen
    /// again.
    pub fn abort(&mut self) {
        self.data_sent = false;
        if !std::mem::take(&mut self.in_txn) {
            return;
        }
        for slot in &mut self.slots {
            if slot.state == State::AcceptMsg {
                slot.state = State::Active;
            }
            if slot.state == State::Active
                && let Some(m) = slot.conn.as_mut()
                && let Err(e) = m.abort()
            {
                fail(slot, &e, &mut self.warnings);
            }
        }
    }

    /// The message (CRLF lines, headers first): headers, end of header, body and end of
    /// message to each milter still listening, then the modifications to apply. The
    /// transaction is over afterwards.
    pub fn message(&mut self, message: &[u8]) -> (Verdict, Warnings) {
        if !self.data_sent {
            match self.data() {
                Answer::Continue => {}
                Answer::Discard => {
                    self.end_txn();
                    return (Verdict::Discard, self.take_warnings());
                }
                Answer::Reply(r) => {
                    self.end_txn();
                    return (Verdict::Refuse(r), self.take_warnings());
                }
            }
        }
        let mut mods = Vec::new();
        let mut quarantine = None;
        let mut verdict = None;
        let (headers, body) = crate::edit::split(message);
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.state == State::Failed(DefaultAction::Quarantine) {
                quarantine.get_or_insert_with(|| "milter triggers quarantine action".to_string());
                continue;
            }
            if verdict.is_some() {
                break;
            }
            let macros = &self.macros;
            let look = |n: &str| macros.get(n).cloned();
            let r = match slot.state {
                State::Active => match slot.conn.as_mut() {
                    Some(m) => content(m, &headers, &body, &look, &mut mods, &mut quarantine),
                    None => Ok(None),
                },
                State::Failed(DefaultAction::Tempfail) => {
                    Ok(Some(Verdict::Refuse(TEMPFAIL.into())))
                }
                State::Failed(DefaultAction::Reject) => Ok(Some(Verdict::Refuse(REJECT.into()))),
                _ => Ok(None),
            };
            match r {
                Ok(v) => verdict = v,
                Err(e) => match fail(slot, &e, &mut self.warnings) {
                    DefaultAction::Tempfail => verdict = Some(Verdict::Refuse(TEMPFAIL.into())),
                    DefaultAction::Reject => verdict = Some(Verdict::Refuse(REJECT.into())),
                    DefaultAction::Quarantine => {
                        quarantine = Some("milter triggers quarantine action".into());
                    }
                    DefaultAction::Accept => {}
                },
            }
        }
        self.end_txn();
        let v = verdict.unwrap_or(Verdict::Accept { mods, quarantine });
        (v, self.take_warnings())
    }

    /// End of transaction: every milter that accepted the message listens again, and one
    /// that refused it has finished it (libmilter waits for the next MAIL).
    fn end_txn(&mut self) {
        self.in_txn = false;
        self.data_sent = false;
        for slot in &mut self.slots {
            if slot.state == State::AcceptMsg {
                slot.state = State::Active;
            }
        }
    }

    /// The session ends: ABORT for a transaction in progress, QUIT to every milter.
    pub fn quit(&mut self) {
        self.abort();
        for slot in &mut self.slots {
            if let Some(mut m) = slot.conn.take() {
                m.quit();
            }
        }
    }
}

/// Marks a milter failed and returns its default action, with a warning naming it.
fn fail(slot: &mut Slot, e: &Error, warnings: &mut Warnings) -> DefaultAction {
    let a = slot.spec.default_action;
    warnings.push(format!(
        "milter {}: {e}; default_action={}",
        slot.spec.name,
        default_name(a)
    ));
    slot.conn = None;
    slot.state = State::Failed(a);
    a
}

/// Headers, end of header, body and end of message to one milter.
fn content(
    m: &mut Milter,
    headers: &[crate::edit::Header],
    body: &[u8],
    look: &dyn Fn(&str) -> Option<String>,
    mods: &mut Vec<(Modification, bool)>,
    quarantine: &mut Option<String>,
) -> Result<Option<Verdict>, Error> {
    let leadspc = m.steps & step::HDR_LEADSPC != 0;
    let verdict = |r: Reply| match reply_answer(r, REJECT) {
        None => None,
        Some(Answer::Discard) => Some(Verdict::Discard),
        Some(Answer::Reply(c)) => Some(Verdict::Refuse(c)),
        Some(Answer::Continue) => None,
    };
    for h in headers {
        match m.header(&h.name, &h.value)? {
            Reply::Accept => return Ok(None),
            r => {
                if let Some(v) = verdict(r) {
                    return Ok(Some(v));
                }
            }
        }
    }
    for stage in 0..2 {
        let r = if stage == 0 {
            m.eoh(look)?
        } else {
            m.body(body)?
        };
        match r {
            Reply::Accept => return Ok(None),
            r => {
                if let Some(v) = verdict(r) {
                    return Ok(Some(v));
                }
            }
        }
    }
    let (reply, got) = m.eom(look)?;
    if let Some(v) = verdict(reply) {
        return Ok(Some(v));
    }
    for g in got {
        match g {
            Response::Quarantine(why) => *quarantine = Some(why),
            other => mods.push((other, leadspc)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Addr, Timeouts};
    use crate::proto::{Response, action};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    fn read_packet(s: &mut impl Read) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut b = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut b).ok()?;
        Some(b)
    }

    /// A fake milter offering `steps`; `answer(cmd, data)` gives the reply packet (None:
    /// none). Returns the commands it saw, as letters.
    fn fake(
        version: u32,
        steps: u32,
        answer: fn(u8, &[u8]) -> Option<Response>,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        std::thread::JoinHandle<(String, u32)>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut seen = String::new();
            let mut offered = 0;
            while let Some(p) = read_packet(&mut s) {
                seen.push(p[0] as char);
                let out = match p[0] {
                    b'O' => {
                        offered = u32::from_be_bytes([p[9], p[10], p[11], p[12]]);
                        Some(Response::OptNeg {
                            version,
                            actions: action::ALL,
                            steps,
                            macros: vec![],
                        })
                    }
                    b'D' | b'A' => None,
                    b'Q' => break,
                    c => answer(c, &p[1..]),
                };
                if let Some(o) = out
                    && s.write_all(&o.encode()).is_err()
                {
                    break;
                }
            }
            (seen, offered)
        });
        (dir, path, h)
    }

    fn conv(path: &std::path::Path, protocol: u32, da: DefaultAction) -> Conversation {
        Conversation::new(MilterSettings {
            milters: vec![MilterSpec {
                name: "test".into(),
                addr: Addr::Unix(path.to_path_buf()),
                default_action: da,
                protocol,
                timeouts: Timeouts {
                    connect: Duration::from_secs(2),
                    command: Duration::from_secs(2),
                    content: Duration::from_secs(2),
                },
            }],
            macros: crate::default_macros(),
            ..MilterSettings::default()
        })
    }

    fn family() -> Family {
        Family::Inet4 {
            port: 1,
            addr: "127.0.0.1".into(),
        }
    }

    #[test]
    fn stages_answer_their_event() {
        let (_d, p, h) = fake(6, 0, |c, d| {
            Some(match c {
                b'R' if d.starts_with(b"<bad@x>") => Response::Reject,
                b'R' if d.starts_with(b"<later@x>") => Response::Tempfail,
                b'M' if d.starts_with(b"<code@x>") => Response::ReplyCode("553 5.7.2 no".into()),
                _ => Response::Continue,
            })
        });
        let mut c = conv(&p, 6, DefaultAction::Tempfail);
        assert_eq!(c.connect("host", family()), Answer::Continue);
        assert_eq!(c.helo("client"), Answer::Continue);
        assert_eq!(
            c.mail(&["<code@x>".into()]),
            Answer::Reply("553 5.7.2 no".into())
        );
        c.abort();
        assert_eq!(c.mail(&["<a@x>".into()]), Answer::Continue);
        assert_eq!(c.rcpt(&["<bad@x>".into()]), Answer::Reply(REJECT.into()));
        assert_eq!(
            c.rcpt(&["<later@x>".into()]),
            Answer::Reply(TEMPFAIL.into())
        );
        assert_eq!(c.rcpt(&["<ok@x>".into()]), Answer::Continue);
        assert_eq!(c.data(), Answer::Continue);
        let (v, w) = c.message(b"Subject: x\r\n\r\nbody\r\n");
        assert!(
            matches!(v, Verdict::Accept { .. }) && w.is_empty(),
            "{v:?} {w:?}"
        );
        assert_eq!(c.unknown("XYZZY"), Answer::Continue);
        c.quit();
        let (seen, offered) = h.join().expect("join");
        assert_eq!(seen, "OCHMAMRRRTLNBEUQ");
        assert_eq!(offered, crate::proto::step::ALL);
    }

    #[test]
    fn negotiated_steps_and_versions() {
        use crate::proto::step;
        // The milter skips HELO and headers and does not reply to RCPT.
        let (_d, p, h) = fake(6, step::NOHELO | step::NOHDRS | step::NR_RCPT, |c, _| {
            (c != b'R').then_some(Response::Continue)
        });
        let mut c = conv(&p, 6, DefaultAction::Tempfail);
        c.connect("host", family());
        c.helo("client");
        c.mail(&["<a@x>".into()]);
        assert_eq!(c.rcpt(&["<b@x>".into()]), Answer::Continue);
        c.data();
        c.message(b"Subject: x\r\n\r\nbody\r\n");
        c.quit();
        assert_eq!(h.join().expect("join").0, "OCMRTNBEQ");
        // milter_protocol = 2: version 2's steps only, no DATA, no UNKNOWN.
        let (_d, p, h) = fake(2, 0, |_, _| Some(Response::Continue));
        let mut c = conv(&p, 2, DefaultAction::Tempfail);
        c.connect("host", family());
        c.mail(&["<a@x>".into()]);
        c.rcpt(&["<b@x>".into()]);
        c.data();
        c.unknown("XYZZY");
        c.message(b"\r\nbody\r\n");
        c.quit();
        let (seen, offered) = h.join().expect("join");
        assert_eq!(seen, "OCMRNBEQ");
        assert_eq!(offered, 0x3F);
    }

    #[test]
    fn accept_at_connect_and_failures() {
        let (_d, p, h) = fake(6, 0, |c, _| {
            Some(if c == b'C' {
                Response::Accept
            } else {
                Response::Reject
            })
        });
        let mut c = conv(&p, 6, DefaultAction::Tempfail);
        assert_eq!(c.connect("host", family()), Answer::Continue);
        assert_eq!(c.mail(&["<a@x>".into()]), Answer::Continue);
        c.quit();
        assert_eq!(h.join().expect("join").0, "OCQ");
        // Not running: the default action answers every event, with one warning.
        let missing = std::path::Path::new("/nonexistent/m.sock");
        let mut c = conv(missing, 6, DefaultAction::Reject);
        assert_eq!(c.connect("host", family()), Answer::Reply(REJECT.into()));
        assert_eq!(c.helo("x"), Answer::Reply(REJECT.into()));
        assert_eq!(c.take_warnings().len(), 1);
        let mut c = conv(missing, 6, DefaultAction::Accept);
        assert_eq!(c.connect("host", family()), Answer::Continue);
        assert!(matches!(c.message(b"\r\nb").0, Verdict::Accept { .. }));
    }
}

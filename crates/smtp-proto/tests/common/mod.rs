//! A tiny test driver: feeds input, answers decisions by a policy, and
//! records the wire output and events.
#![allow(dead_code)]

use oxipost_smtp_proto::{Event, ServerConfig, Session, Step};

pub const HOST: &str = "mx.example";

/// How the test driver answers a decision event.
pub enum Answer {
    Accept,
    AcceptWith(String),
    Reject(u16, &'static str, String),
    Challenge(String),
}

/// Accepts everything; ends messages with a fixed queue id; SASL exchanges
/// get one empty challenge, then success.
pub fn default_policy(ev: &Event) -> Answer {
    match ev {
        Event::MessageEnd { .. } => Answer::AcceptWith("Ok: queued as TESTID".into()),
        Event::Auth {
            initial_response: None,
            ..
        } => Answer::Challenge(String::new()),
        _ => Answer::Accept,
    }
}

pub struct Driver {
    pub s: Session,
    pub wire: Vec<u8>,
    /// Every Output step, to check batching.
    pub writes: Vec<Vec<u8>>,
    pub events: Vec<Event>,
    /// Concatenated MessageData.
    pub data: Vec<u8>,
    pub closed: bool,
    pub policy: Box<dyn FnMut(&Event) -> Answer>,
}

pub fn config() -> ServerConfig {
    let mut c = ServerConfig::new(HOST);
    c.forbid_unauth_pipelining = false;
    c
}

impl Driver {
    pub fn new(cfg: ServerConfig) -> Self {
        let mut s = Session::new(cfg);
        s.greet();
        let mut d = Driver {
            s,
            wire: Vec::new(),
            writes: Vec::new(),
            events: Vec::new(),
            data: Vec::new(),
            closed: false,
            policy: Box::new(default_policy),
        };
        d.run();
        d
    }

    /// A session that has been greeted and said EHLO.
    pub fn ehlo(cfg: ServerConfig) -> Self {
        let mut d = Driver::new(cfg);
        d.send("EHLO client.example\r\n");
        d.clear();
        d
    }

    pub fn clear(&mut self) {
        self.wire.clear();
        self.writes.clear();
        self.events.clear();
        self.data.clear();
    }

    pub fn send(&mut self, input: impl AsRef<[u8]>) -> String {
        let start = self.wire.len();
        self.s.feed(input.as_ref());
        self.run();
        String::from_utf8_lossy(&self.wire[start..]).into_owned()
    }

    /// Runs the session until it needs input or closes.
    pub fn run(&mut self) {
        for _ in 0..10_000_000 {
            match self.s.next() {
                Step::Output(b) => {
                    self.wire.extend_from_slice(&b);
                    self.writes.push(b);
                }
                Step::Event(ev) => {
                    if let Event::MessageData(d) = &ev {
                        self.data.extend_from_slice(d);
                    }
                    let ans = (self.policy)(&ev);
                    if self.s.decision_pending() {
                        match ans {
                            Answer::Accept => self.s.accept(),
                            Answer::AcceptWith(t) => self.s.accept_with(&t),
                            Answer::Reject(c, e, t) => self.s.reject(c, e, &t),
                            Answer::Challenge(c) => self.s.auth_challenge(&c),
                        }
                        .expect("decision pending");
                    }
                    self.events.push(ev);
                }
                Step::NeedInput => return,
                Step::Close => {
                    self.closed = true;
                    return;
                }
            }
        }
        panic!("session did not settle");
    }

    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.wire)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Reply lines in `s` (split on CRLF, empties dropped).
pub fn lines(s: &str) -> Vec<&str> {
    s.split("\r\n").filter(|l| !l.is_empty()).collect()
}

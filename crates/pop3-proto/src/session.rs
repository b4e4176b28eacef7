//! The POP3 session state machine: AUTHORIZATION → TRANSACTION → UPDATE (RFC 1939), with
//! RFC 2449's `CAPA` and response codes, RFC 5034's `AUTH` and RFC 2595's `STLS`.
//!
//! Each complete command line in the input buffer is checked for syntax and state here;
//! what needs the outside world (a credentials check, a message's content, deleting
//! messages, the TLS handshake) becomes an [`Event`], and the driver's answer (one of
//! [`Session::challenge`], [`Session::logged_in`], [`Session::login_failed`],
//! [`Session::message`], [`Session::updated`], [`Session::tls_started`]) writes the
//! reply. Until it is answered the session reads nothing further ([`Session::wants_input`]).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::message::write_message;

/// What the session is configured to offer.
#[derive(Debug, Clone)]
pub struct Config {
    /// The text after `+OK ` in the greeting.
    pub greeting: String,
    /// `IMPLEMENTATION` in `CAPA` (empty: not announced).
    pub implementation: String,
    /// Longest command line (without CRLF); longer lines are answered `-ERR` and skipped.
    pub max_line: usize,
    /// Failed logins before the connection is closed (0: no limit).
    pub max_login_attempts: u32,
    /// Unknown or malformed commands before the connection is closed (0: no limit).
    pub max_bad_commands: u32,
    /// `STLS` is possible (TLS is configured and not yet active).
    pub stls: bool,
    /// TLS is active from the first byte (implicit TLS, port 995).
    pub tls_active: bool,
    /// Logins (`USER`/`PASS`, `AUTH`) only on a secured connection (TLS or loopback), as
    /// Dovecot's `disable_plaintext_auth`.
    pub login_requires_tls: bool,
    /// The connection counts as secured without TLS (a loopback client).
    pub secured: bool,
    /// SASL mechanisms for `AUTH` and `CAPA`'s `SASL` line.
    pub mechanisms: Vec<String>,
    /// RFC 1939's APOP timestamp (`<pid.clock@host>`), unique per connection: announced
    /// at the end of the greeting and `APOP` accepted. None: APOP is not offered (the
    /// authentication service has no plaintext passwords to check digests against).
    pub apop_timestamp: Option<String>,
}

impl Config {
    /// Defaults: greeting `oxipost ready.`, 2048-octet lines, 3 login attempts, 20 bad
    /// commands, no TLS, `PLAIN LOGIN`.
    pub fn new() -> Config {
        Config {
            greeting: "oxipost ready.".to_owned(),
            implementation: "oxipost".to_owned(),
            max_line: 2048,
            max_login_attempts: 3,
            max_bad_commands: 20,
            stls: false,
            tls_active: false,
            login_requires_tls: false,
            secured: false,
            mechanisms: vec!["PLAIN".to_owned(), "LOGIN".to_owned()],
            apop_timestamp: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// Text that must never reach a log: base64 SASL data that may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One message of the mailbox as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The POP3 size (CRLF line ends, see [`crate::wire_size`]).
    pub size: u64,
    /// The `UIDL` unique id: 1 to 70 characters in 0x21..=0x7E.
    pub uid: String,
}

/// Something only the driver can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start a SASL exchange with the authentication service. `USER`/`PASS` arrive here as
    /// `PLAIN` with the initial response built by the session; `user` is the name given
    /// with `USER` (for log lines; never the password).
    Authenticate {
        mechanism: String,
        initial: Option<Secret>,
        user: Option<String>,
    },
    /// The client's answer to a challenge (base64, or `*` to cancel).
    AuthResponse { response: Secret },
    /// `+OK` to `STLS` is queued: flush it, then start the TLS handshake.
    StartTls,
    /// Send message `msg` (0-based index into the list given to [`Session::logged_in`]);
    /// answer with [`Session::message`]. `top` is `TOP`'s line count.
    Retrieve { msg: usize, top: Option<u64> },
    /// `QUIT` in TRANSACTION: remove these messages (0-based), then call
    /// [`Session::updated`].
    Update { deleted: Vec<usize> },
}

/// What [`Session::next`] asks the driver to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Everything buffered is answered: read more input.
    NeedInput,
    /// Waiting for the driver's answer to an [`Event`].
    Wait,
    Event(Event),
    /// Flush the output, then close the connection.
    Close,
}

/// Why a login did not succeed, as the driver learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    /// Wrong credentials (counted towards `max_login_attempts`): `-ERR [AUTH]`.
    Auth,
    /// The authentication service or the mailbox is unavailable: `-ERR [SYS/TEMP]`.
    Temporary(String),
    /// The mailbox is locked by another session, or a connection limit: `-ERR [IN-USE]`.
    InUse(String),
}

/// Counters for the logout log line (Dovecot's `top=`, `retr=`, `del=`, `size=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub top_count: u64,
    pub top_bytes: u64,
    pub retr_count: u64,
    pub retr_bytes: u64,
    /// Messages removed in UPDATE (0 unless the session ended with a successful `QUIT`).
    pub deleted: u64,
    /// Messages marked with `DELE` when the session ended.
    pub marked: u64,
    pub messages: u64,
    /// The mailbox size at login.
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// AUTHORIZATION.
    Auth,
    /// A SASL exchange or a login is with the driver; `sasl` when the next line is a
    /// response to a challenge.
    Authenticating {
        sasl: bool,
        awaiting: bool,
    },
    /// STLS answered; waiting for the handshake.
    StartingTls,
    Transaction,
    /// RETR/TOP is with the driver.
    Retrieving {
        msg: usize,
        top: Option<u64>,
    },
    /// QUIT in TRANSACTION is with the driver.
    Updating,
    Closed,
}

/// One POP3 connection's protocol state.
pub struct Session {
    cfg: Config,
    state: State,
    buf: Vec<u8>,
    /// Searched for LF up to here already.
    scanned: usize,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    user: Option<String>,
    login_failures: u32,
    bad_commands: u32,
    messages: Vec<Message>,
    deleted: Vec<bool>,
    stats: Stats,
    tls: bool,
    logged: bool,
    pending: Option<Event>,
}

impl Session {
    pub fn new(cfg: Config) -> Session {
        let tls = cfg.tls_active;
        Session {
            cfg,
            state: State::Auth,
            buf: Vec::new(),
            scanned: 0,
            discarding: false,
            user: None,
            login_failures: 0,
            bad_commands: 0,
            messages: Vec::new(),
            deleted: Vec::new(),
            stats: Stats::default(),
            tls,
            logged: false,
            pending: None,
        }
    }

    /// Writes the greeting.
    pub fn greet(&self, out: &mut Vec<u8>) {
        match &self.cfg.apop_timestamp {
            Some(ts) => ok(out, &format!("{} {ts}", self.cfg.greeting)),
            None => ok(out, &self.cfg.greeting),
        }
    }

    /// Bytes from the peer. Input is kept (up to one line beyond the limit) until
    /// [`Session::next`] consumes it.
    pub fn feed(&mut self, data: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// Whether the driver should read more input now.
    pub fn wants_input(&self) -> bool {
        match self.state {
            State::Auth | State::Transaction => true,
            State::Authenticating { awaiting, .. } => !awaiting,
            _ => false,
        }
    }

    /// True once the user has logged in (TRANSACTION or later).
    pub fn authenticated(&self) -> bool {
        self.logged
    }

    /// True when TLS is active on the connection.
    pub fn tls_active(&self) -> bool {
        self.tls
    }

    /// The login name given with `USER` (for log lines), if any.
    pub fn user_hint(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.marked = self.deleted.iter().filter(|d| **d).count() as u64;
        s
    }

    /// Handles buffered input until an event, a close, or the need for more input.
    pub fn next(&mut self, out: &mut Vec<u8>) -> Step {
        if let Some(ev) = self.pending.take() {
            return Step::Event(ev);
        }
        loop {
            match self.state {
                State::Closed => return Step::Close,
                State::StartingTls | State::Retrieving { .. } | State::Updating => {
                    return Step::Wait;
                }
                State::Authenticating { awaiting: true, .. } => return Step::Wait,
                _ => {}
            }
            let Some(line) = self.take_line(out) else {
                if self.state == State::Closed {
                    return Step::Close;
                }
                return Step::NeedInput;
            };
            if let Some(step) = self.command(&line, out) {
                return step;
            }
        }
    }

    /// Cuts the next complete line off the buffer (without CRLF). Over-long lines are
    /// answered here and skipped.
    fn take_line(&mut self, out: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            let found = self.buf[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| self.scanned + i);
            match found {
                None => {
                    if self.buf.len() > self.cfg.max_line + 1 {
                        // Remember only that we are inside a long line.
                        self.buf.clear();
                        self.discarding = true;
                    }
                    self.scanned = self.buf.len();
                    return None;
                }
                Some(i) => {
                    let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                    self.scanned = 0;
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if self.discarding || line.len() > self.cfg.max_line {
                        self.discarding = false;
                        err(out, "Input line too long.");
                        if self.bad_command(out) {
                            return None;
                        }
                        continue;
                    }
                    return Some(line);
                }
            }
        }
    }

    /// Counts a bad command; true when the connection is to be closed for it.
    fn bad_command(&mut self, out: &mut Vec<u8>) -> bool {
        self.bad_commands += 1;
        if self.cfg.max_bad_commands > 0 && self.bad_commands >= self.cfg.max_bad_commands {
            err(out, "Too many bad commands.");
            self.close();
            return true;
        }
        false
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.buf.clear();
    }

    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Step> {
        if let State::Authenticating { sasl: true, .. } = self.state {
            let response = String::from_utf8_lossy(line).trim().to_owned();
            self.state = State::Authenticating {
                sasl: true,
                awaiting: true,
            };
            return Some(Step::Event(Event::AuthResponse {
                response: Secret(response),
            }));
        }
        let text = String::from_utf8_lossy(line);
        let (verb, rest) = match text.find(' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (&text[..], ""),
        };
        let verb = verb.to_ascii_uppercase();
        let args: Vec<&str> = rest.split_whitespace().collect();
        match self.state {
            State::Auth => self.auth_command(&verb, rest, &args, out),
            State::Transaction => self.transaction_command(&verb, &args, out),
            _ => None,
        }
    }

    fn login_allowed(&self) -> bool {
        !self.cfg.login_requires_tls || self.tls || self.cfg.secured
    }

    fn auth_command(
        &mut self,
        verb: &str,
        rest: &str,
        args: &[&str],
        out: &mut Vec<u8>,
    ) -> Option<Step> {
        match verb {
            "CAPA" => {
                self.capa(out);
                None
            }
            "QUIT" => {
                ok(out, "Logging out.");
                self.close();
                Some(Step::Close)
            }
            "NOOP" => {
                // RFC 1939 has NOOP in TRANSACTION only; answering it here harms nobody.
                ok(out, "");
                None
            }
            "STLS" => {
                if self.tls {
                    err(out, "TLS is already active.");
                } else if !self.cfg.stls {
                    err(out, "TLS support isn't enabled.");
                } else {
                    ok(out, "Begin TLS negotiation now.");
                    self.state = State::StartingTls;
                    // Whatever was pipelined after STLS is not to be trusted.
                    self.buf.clear();
                    self.scanned = 0;
                    return Some(Step::Event(Event::StartTls));
                }
                None
            }
            "USER" => {
                if !self.login_allowed() {
                    plaintext_refused(out);
                } else if args.len() != 1 || args[0].contains('\0') {
                    err(out, "Invalid USER arguments.");
                    return self.bad_command(out).then_some(Step::Close);
                } else {
                    self.user = Some(args[0].to_owned());
                    ok(out, "");
                }
                None
            }
            "PASS" => {
                if !self.login_allowed() {
                    plaintext_refused(out);
                    return None;
                }
                let Some(user) = self.user.clone() else {
                    err(out, "No username given.");
                    return None;
                };
                let mut plain = Vec::with_capacity(user.len() + rest.len() + 2);
                plain.push(0);
                plain.extend_from_slice(user.as_bytes());
                plain.push(0);
                plain.extend_from_slice(rest.as_bytes());
                self.state = State::Authenticating {
                    sasl: false,
                    awaiting: true,
                };
                Some(Step::Event(Event::Authenticate {
                    mechanism: "PLAIN".to_owned(),
                    initial: Some(Secret(B64.encode(&plain))),
                    user: Some(user),
                }))
            }
            "APOP" => {
                let Some(ts) = self.cfg.apop_timestamp.clone() else {
                    err(out, "APOP is not supported.");
                    return None;
                };
                if !self.login_allowed() {
                    plaintext_refused(out);
                    return None;
                }
                // `APOP name digest`: the digest is MD5(timestamp password) in hex. The
                // authentication service checks it; the session only forwards it.
                if args.len() != 2
                    || args[0].contains('\0')
                    || args[1].len() != 32
                    || !args[1].bytes().all(|b| b.is_ascii_hexdigit())
                {
                    err(out, "Invalid APOP arguments.");
                    return self.bad_command(out).then_some(Step::Close);
                }
                let user = args[0].to_owned();
                let data = format!("{ts}\0{user}\0{}", args[1]);
                self.state = State::Authenticating {
                    sasl: false,
                    awaiting: true,
                };
                Some(Step::Event(Event::Authenticate {
                    mechanism: "APOP".to_owned(),
                    initial: Some(Secret(B64.encode(data.as_bytes()))),
                    user: Some(user),
                }))
            }
            "AUTH" => {
                if args.is_empty() {
                    let mut s = String::from("+OK\r\n");
                    for m in &self.cfg.mechanisms {
                        s.push_str(m);
                        s.push_str("\r\n");
                    }
                    s.push_str(".\r\n");
                    out.extend_from_slice(s.as_bytes());
                    return None;
                }
                if !self.login_allowed() {
                    plaintext_refused(out);
                    return None;
                }
                if args.len() > 2 {
                    err(out, "Invalid AUTH arguments.");
                    return self.bad_command(out).then_some(Step::Close);
                }
                let mech = args[0].to_ascii_uppercase();
                if !self
                    .cfg
                    .mechanisms
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&mech))
                {
                    err(out, "Unsupported authentication mechanism.");
                    return None;
                }
                let initial = args.get(1).map(|i| {
                    // RFC 5034: "=" is an empty initial response.
                    Secret(if *i == "=" {
                        String::new()
                    } else {
                        (*i).to_owned()
                    })
                });
                self.state = State::Authenticating {
                    sasl: true,
                    awaiting: true,
                };
                Some(Step::Event(Event::Authenticate {
                    mechanism: mech,
                    initial,
                    user: None,
                }))
            }
            "" => {
                err(out, "Unknown command.");
                self.bad_command(out).then_some(Step::Close)
            }
            "STAT" | "LIST" | "RETR" | "DELE" | "RSET" | "TOP" | "UIDL" => {
                err(out, "Unknown command or not logged in.");
                None
            }
            _ => {
                err(out, "Unknown command.");
                self.bad_command(out).then_some(Step::Close)
            }
        }
    }

    fn capa(&self, out: &mut Vec<u8>) {
        let mut s = String::from(
            "+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n",
        );
        if self.state == State::Auth && self.login_allowed() {
            s.push_str("USER\r\n");
            if !self.cfg.mechanisms.is_empty() {
                s.push_str("SASL");
                for m in &self.cfg.mechanisms {
                    s.push(' ');
                    s.push_str(m);
                }
                s.push_str("\r\n");
            }
        }
        if self.state == State::Auth && self.cfg.stls && !self.tls {
            s.push_str("STLS\r\n");
        }
        if !self.cfg.implementation.is_empty() {
            s.push_str("IMPLEMENTATION ");
            s.push_str(&self.cfg.implementation);
            s.push_str("\r\n");
        }
        s.push_str(".\r\n");
        out.extend_from_slice(s.as_bytes());
    }

    /// Parses a message number argument: 1-based, present and not deleted.
    fn message_arg(&self, arg: &str, out: &mut Vec<u8>) -> Option<usize> {
        let n = match parse_number(arg) {
            Some(n) if n >= 1 && n <= self.messages.len() as u64 => n as usize - 1,
            _ => {
                err(out, "There's no message with that number.");
                return None;
            }
        };
        if self.deleted[n] {
            err(out, "Message is deleted.");
            return None;
        }
        Some(n)
    }

    fn transaction_command(
        &mut self,
        verb: &str,
        args: &[&str],
        out: &mut Vec<u8>,
    ) -> Option<Step> {
        match (verb, args.len()) {
            ("CAPA", 0) => self.capa(out),
            ("NOOP", 0) => ok(out, ""),
            ("STAT", 0) => {
                let (n, size) = self.live();
                ok(out, &format!("{n} {size}"));
            }
            ("LIST", 0) | ("UIDL", 0) => {
                let uidl = verb == "UIDL";
                let mut s = String::with_capacity(32 + self.messages.len() * 12);
                s.push_str("+OK\r\n");
                for (i, m) in self.messages.iter().enumerate() {
                    if self.deleted[i] {
                        continue;
                    }
                    if uidl {
                        s.push_str(&format!("{} {}\r\n", i + 1, m.uid));
                    } else {
                        s.push_str(&format!("{} {}\r\n", i + 1, m.size));
                    }
                }
                s.push_str(".\r\n");
                out.extend_from_slice(s.as_bytes());
            }
            ("LIST", 1) | ("UIDL", 1) => {
                if let Some(i) = self.message_arg(args[0], out) {
                    let m = &self.messages[i];
                    if verb == "UIDL" {
                        ok(out, &format!("{} {}", i + 1, m.uid));
                    } else {
                        ok(out, &format!("{} {}", i + 1, m.size));
                    }
                }
            }
            ("RETR", 1) => {
                if let Some(msg) = self.message_arg(args[0], out) {
                    return Some(self.retrieve(msg, None));
                }
            }
            ("TOP", 2) => {
                let Some(lines) = parse_number(args[1]) else {
                    err(out, "Invalid number of lines.");
                    return None;
                };
                if let Some(msg) = self.message_arg(args[0], out) {
                    return Some(self.retrieve(msg, Some(lines)));
                }
            }
            ("DELE", 1) => {
                if let Some(i) = self.message_arg(args[0], out) {
                    self.deleted[i] = true;
                    ok(out, "Marked to be deleted.");
                }
            }
            ("RSET", 0) => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                ok(out, "");
            }
            ("QUIT", 0) => {
                let deleted: Vec<usize> = (0..self.messages.len())
                    .filter(|&i| self.deleted[i])
                    .collect();
                self.state = State::Updating;
                return Some(Step::Event(Event::Update { deleted }));
            }
            ("USER" | "PASS" | "APOP" | "AUTH" | "STLS", _) => {
                err(out, "Already logged in.");
            }
            (
                "CAPA" | "NOOP" | "STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "RSET"
                | "QUIT",
                _,
            ) => {
                err(out, "Invalid arguments.");
                return self.bad_command(out).then_some(Step::Close);
            }
            _ => {
                err(out, "Unknown command.");
                return self.bad_command(out).then_some(Step::Close);
            }
        }
        None
    }

    fn retrieve(&mut self, msg: usize, top: Option<u64>) -> Step {
        self.state = State::Retrieving { msg, top };
        Step::Event(Event::Retrieve { msg, top })
    }

    /// Messages not marked deleted, and their total size.
    fn live(&self) -> (usize, u64) {
        let mut n = 0;
        let mut size = 0;
        for (i, m) in self.messages.iter().enumerate() {
            if !self.deleted[i] {
                n += 1;
                size += m.size;
            }
        }
        (n, size)
    }

    /// The authentication service sent a challenge (base64) for the current exchange.
    pub fn challenge(&mut self, data: &str, out: &mut Vec<u8>) {
        if let State::Authenticating { .. } = self.state {
            out.extend_from_slice(b"+ ");
            out.extend_from_slice(data.as_bytes());
            out.extend_from_slice(b"\r\n");
            self.state = State::Authenticating {
                sasl: true,
                awaiting: false,
            };
        }
    }

    /// The login succeeded and the mailbox is open with `messages` (a snapshot: mail
    /// delivered later is seen by the next session).
    pub fn logged_in(&mut self, messages: Vec<Message>, out: &mut Vec<u8>) {
        if !matches!(self.state, State::Authenticating { .. }) {
            return;
        }
        self.stats.messages = messages.len() as u64;
        self.stats.size = messages.iter().map(|m| m.size).sum();
        self.deleted = vec![false; messages.len()];
        self.messages = messages;
        self.state = State::Transaction;
        self.logged = true;
        ok(out, "Logged in.");
    }

    /// The login did not succeed. Returns true when the connection is to be closed (too
    /// many failed attempts).
    pub fn login_failed(&mut self, why: &LoginFailure, out: &mut Vec<u8>) -> bool {
        if !matches!(self.state, State::Authenticating { .. }) {
            return false;
        }
        self.state = State::Auth;
        match why {
            LoginFailure::Auth => {
                self.login_failures += 1;
                if self.cfg.max_login_attempts > 0
                    && self.login_failures >= self.cfg.max_login_attempts
                {
                    err(
                        out,
                        "[AUTH] Authentication failed. Too many attempts, disconnecting.",
                    );
                    self.close();
                    return true;
                }
                err(out, "[AUTH] Authentication failed.");
            }
            LoginFailure::Temporary(t) => err(out, &format!("[SYS/TEMP] {t}")),
            LoginFailure::InUse(t) => err(out, &format!("[IN-USE] {t}")),
        }
        false
    }

    /// The content of the message asked for with [`Event::Retrieve`] (LF or CRLF line
    /// ends), or why it cannot be read.
    pub fn message(&mut self, content: Result<&[u8], &str>, out: &mut Vec<u8>) {
        let State::Retrieving { msg, top } = self.state else {
            return;
        };
        self.state = State::Transaction;
        match content {
            Ok(data) => {
                let size = self.messages.get(msg).map_or(0, |m| m.size);
                match top {
                    None => {
                        ok(out, &format!("{size} octets"));
                        write_message(data, None, out);
                        self.stats.retr_count += 1;
                        self.stats.retr_bytes += size;
                    }
                    Some(n) => {
                        ok(out, "");
                        let before = out.len();
                        write_message(data, Some(n), out);
                        self.stats.top_count += 1;
                        self.stats.top_bytes += (out.len() - before) as u64;
                    }
                }
            }
            Err(why) => err(out, why),
        }
    }

    /// UPDATE is done: `Ok(removed)` answers `+OK` and closes; `Err` answers
    /// `-ERR [SYS/TEMP]` (RFC 1939: some deleted messages were not removed) and closes.
    pub fn updated(&mut self, result: Result<u64, &str>, out: &mut Vec<u8>) {
        if self.state != State::Updating {
            return;
        }
        match result {
            Ok(n) => {
                self.stats.deleted = n;
                ok(out, "Logging out.");
            }
            Err(why) => err(out, &format!("[SYS/TEMP] {why}")),
        }
        self.state = State::Closed;
        self.buf.clear();
    }

    /// The TLS handshake after `STLS` completed: input buffered before it is dropped.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.buf.clear();
        self.scanned = 0;
        self.discarding = false;
        if self.state == State::StartingTls {
            self.state = State::Auth;
            // A new TLS layer: forget what was said with USER before it (RFC 2595).
            self.user = None;
        }
    }

    /// The idle timeout expired: says so and closes.
    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        err(out, "Disconnected for inactivity.");
        self.close();
    }
}

fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+OK");
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn err(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"-ERR ");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn plaintext_refused(out: &mut Vec<u8>) {
    err(
        out,
        "[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
    );
}

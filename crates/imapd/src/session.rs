//! One IMAP session as a state machine (not authenticated → authenticated → selected →
//! logout), driven by bytes in and replies out. It does no socket I/O and no TLS: logins
//! and STARTTLS are [`Event`]s for the driver ([`crate::service`]), which answers through
//! [`Session::logged_in`], [`Session::login_failed`], [`Session::challenge`] and
//! [`Session::tls_started`]. Mailbox operations go straight to `oxipost-store` (local file
//! operations that do not block on a peer).
//!
//! The *view* of a selected mailbox is the list of messages the client knows, in sequence
//! order; [`Session::sync_view`] compares it with the index and reports `EXPUNGE`, flag
//! `FETCH`es, `EXISTS` and `RECENT`, at the points RFC 3501 allows (never during
//! FETCH, STORE or SEARCH, when sequence numbers must not move).

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;

use base64::Engine;
use oxipost_store::folders::SEPARATOR;
use oxipost_store::{Flags, Folders, Mailbox, Message, StoreError};

use crate::fetch::{self, Item};
use crate::parse::{self, Command, Frame, Framer, Value, astring};
use crate::search;

/// Session parameters.
#[derive(Debug, Clone)]
pub struct Config {
    pub max_line: usize,
    pub max_literal: u64,
    pub starttls: bool,
    pub tls_active: bool,
    /// Logins need TLS (or a loopback client: `secured`).
    pub login_requires_tls: bool,
    pub secured: bool,
    pub mechanisms: Vec<String>,
    pub login_attempts: u32,
}

/// What the session needs from the driver.
#[derive(Debug)]
pub enum Event {
    /// Start a SASL exchange (LOGIN arrives as a PLAIN initial response).
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    /// The client's next base64 response (`*` cancels).
    AuthResponse(String),
    StartTls,
}

/// What [`Session::next`] returns.
#[derive(Debug)]
pub enum Step {
    NeedInput,
    /// Waiting for the driver (an authentication answer).
    Wait,
    Close,
    Event(Event),
}

enum Mode {
    Normal,
    /// Waiting for the authentication service.
    AuthWait,
    /// Waiting for the client's response line to a challenge.
    AuthLine,
    Idle,
}

struct Selected {
    name: String,
    mbox: Mailbox,
    view: Vec<Message>,
    readonly: bool,
    modseq: u64,
    recent: HashSet<u32>,
}

enum State {
    NotAuth,
    Auth,
    Selected(Box<Selected>),
    Logout,
}

/// One IMAP session.
pub struct Session {
    cfg: Config,
    framer: Framer,
    state: State,
    mode: Mode,
    /// The tag of the command in progress (AUTHENTICATE, LOGIN, IDLE).
    tag: String,
    folders: Option<Folders>,
    events: VecDeque<Event>,
    failed_logins: u32,
    user_hint: Option<String>,
    /// AUTHENTICATE PLAIN without an initial response: the mechanism, until the
    /// client's line arrives.
    pending_mech: Option<String>,
    /// CONDSTORE (RFC 7162) enabled: MODSEQ goes with every FLAGS.
    condstore: bool,
}

const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

fn store_err(e: &StoreError) -> String {
    match e {
        StoreError::NotFound => "[NONEXISTENT] Mailbox doesn't exist.".into(),
        StoreError::Exists => "[ALREADYEXISTS] Mailbox already exists.".into(),
        StoreError::BadName => "[CANNOT] Invalid mailbox name.".into(),
        StoreError::NotAllowed(w) => format!("[CANNOT] {w}."),
        StoreError::Io(_) | StoreError::Db(_) => {
            oxipost_log::warning!("imap: mail store: {e}");
            "[SERVERBUG] Internal error occurred. Refer to server log for more information.".into()
        }
    }
}

fn norm_name(n: &str) -> String {
    let n = n.trim_end_matches(SEPARATOR);
    if n.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        n.to_owned()
    }
}

fn flag_list(f: Flags, kw: &[String], recent: bool) -> String {
    let mut v: Vec<String> = f.imap_names().iter().map(|s| (*s).to_owned()).collect();
    v.extend(kw.iter().cloned());
    if recent {
        v.push("\\Recent".into());
    }
    format!("({})", v.join(" "))
}

/// `FLAGS (...)`, with ` MODSEQ (n)` when CONDSTORE is on.
fn flags_item(m: &Message, recent: bool, condstore: bool) -> String {
    let mut s = format!("FLAGS {}", flag_list(m.flags, &m.keywords, recent));
    if condstore {
        s.push_str(&format!(" MODSEQ ({})", m.modseq));
    }
    s
}

/// A `(NAME value)` modifier list such as `(CHANGEDSINCE 12)`: the number.
fn modifier(v: Option<&Value>, name: &str) -> Result<Option<u64>, (&'static str, String)> {
    match v {
        None => Ok(None),
        Some(Value::List(l)) if l.len() == 2 => {
            let ok = l[0].text().is_some_and(|t| t.eq_ignore_ascii_case(name));
            let n = l[1].text().and_then(|t| t.parse::<u64>().ok());
            match (ok, n) {
                (true, Some(n)) => Ok(Some(n)),
                _ => Err((
                    "BAD",
                    format!("Error in IMAP command: Invalid {name} modifier."),
                )),
            }
        }
        Some(_) => Err(("BAD", "Error in IMAP command: Invalid arguments.".into())),
    }
}

/// Flags and keywords from a STORE/APPEND argument.
fn parse_flags(v: &Value) -> Result<(Flags, Vec<String>), &'static str> {
    let items: Vec<&Value> = match v {
        Value::List(l) => l.iter().collect(),
        other => vec![other],
    };
    let mut f = Flags::empty();
    let mut kw = Vec::new();
    for i in items {
        let Value::Atom(a) = i else {
            return Err("Invalid flags.");
        };
        if a.starts_with('\\') {
            if a.eq_ignore_ascii_case("\\Recent") {
                continue;
            }
            f = f.union(Flags::from_imap(a).ok_or("Invalid system flag.")?);
        } else if a
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()[]{%*\"\\".contains(&b))
        {
            if !kw.iter().any(|k: &String| k.eq_ignore_ascii_case(a)) {
                kw.push(a.clone());
            }
        } else {
            return Err("Invalid keyword.");
        }
    }
    Ok((f, kw))
}

/// LIST pattern matching: `*` anything, `%` anything but the separator.
fn matches(pat: &[u8], name: &[u8]) -> bool {
    match pat.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|i| matches(&pat[1..], &name[i..])),
        Some(b'%') => (0..=name.len())
            .take_while(|&i| i == 0 || name[i - 1] != SEPARATOR as u8)
            .any(|i| matches(&pat[1..], &name[i..])),
        Some(&c) => name.first() == Some(&c) && matches(&pat[1..], &name[1..]),
    }
}

impl Session {
    pub fn new(cfg: Config) -> Session {
        Session {
            framer: Framer::new(cfg.max_line, cfg.max_literal),
            cfg,
            state: State::NotAuth,
            mode: Mode::Normal,
            tag: String::new(),
            folders: None,
            events: VecDeque::new(),
            failed_logins: 0,
            user_hint: None,
            pending_mech: None,
            condstore: false,
        }
    }

    pub fn capability(&self) -> String {
        let mut c = String::from(
            "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE CONDSTORE",
        );
        if matches!(self.state, State::NotAuth) {
            if self.cfg.starttls && !self.cfg.tls_active {
                c.push_str(" STARTTLS");
            }
            if self.login_disabled() {
                c.push_str(" LOGINDISABLED");
            } else {
                for m in &self.cfg.mechanisms {
                    c.push_str(" AUTH=");
                    c.push_str(m);
                }
            }
        }
        c
    }

    fn login_disabled(&self) -> bool {
        self.cfg.login_requires_tls && !self.cfg.tls_active && !self.cfg.secured
    }

    pub fn greet(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!("* OK [CAPABILITY {}] oxipost ready.\r\n", self.capability()).as_bytes(),
        );
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.framer.feed(data);
    }

    pub fn tls_active(&self) -> bool {
        self.cfg.tls_active
    }

    pub fn user_hint(&self) -> Option<&str> {
        self.user_hint.as_deref()
    }

    /// Whether the driver should read more now.
    pub fn wants_input(&self) -> bool {
        !matches!(self.mode, Mode::AuthWait)
    }

    /// The directory of the selected mailbox (for the change watcher).
    pub fn selected_root(&self) -> Option<PathBuf> {
        match &self.state {
            State::Selected(s) => Some(s.mbox.root().to_path_buf()),
            _ => None,
        }
    }

    /// Runs until input is needed, the driver must act, or the session ends.
    pub fn next(&mut self, out: &mut Vec<u8>) -> Step {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Step::Event(e);
            }
            if matches!(self.state, State::Logout) {
                return Step::Close;
            }
            match self.mode {
                Mode::AuthWait => return Step::Wait,
                Mode::AuthLine => match self.framer.line() {
                    None => return Step::NeedInput,
                    Some(Err(())) => {
                        self.mode = Mode::Normal;
                        self.tagged(out, "BAD", "Authentication response too long.");
                    }
                    Some(Ok(line)) => {
                        let s = String::from_utf8_lossy(&line).trim().to_owned();
                        if s == "*" {
                            self.pending_mech = None;
                            self.mode = Mode::Normal;
                            self.tagged(out, "BAD", "Authentication aborted by client.");
                        } else {
                            self.mode = Mode::AuthWait;
                            if let Some(mechanism) = self.pending_mech.take() {
                                return Step::Event(Event::Authenticate {
                                    mechanism,
                                    initial: Some(s),
                                });
                            }
                            return Step::Event(Event::AuthResponse(s));
                        }
                    }
                },
                Mode::Idle => match self.framer.line() {
                    None => return Step::NeedInput,
                    Some(r) => {
                        self.mode = Mode::Normal;
                        match r {
                            Ok(l) if l.eq_ignore_ascii_case(b"DONE") => {
                                self.sync_view(out);
                                self.tagged(out, "OK", "Idle completed.");
                            }
                            _ => self.tagged(out, "BAD", "Expected DONE."),
                        }
                    }
                },
                Mode::Normal => match self.framer.next() {
                    None => return Step::NeedInput,
                    Some(Frame::Continue) => out.extend_from_slice(b"+ OK\r\n"),
                    Some(Frame::TooLong(tag)) => {
                        let t = tag.unwrap_or_else(|| "*".into());
                        out.extend_from_slice(
                            format!("{t} BAD [TOOBIG] Command line too long.\r\n").as_bytes(),
                        );
                    }
                    Some(Frame::TooBig { tag, fatal }) => {
                        if fatal {
                            out.extend_from_slice(b"* BYE [TOOBIG] Literal too big.\r\n");
                            self.state = State::Logout;
                        } else {
                            let t = tag.unwrap_or_else(|| "*".into());
                            out.extend_from_slice(
                                format!("{t} NO [TOOBIG] Literal too big.\r\n").as_bytes(),
                            );
                        }
                    }
                    Some(Frame::Command(raw)) => match parse::command(&raw) {
                        Err(e) => {
                            let t = e.tag.unwrap_or_else(|| "*".into());
                            out.extend_from_slice(format!("{t} BAD {}\r\n", e.why).as_bytes());
                        }
                        Ok(cmd) => self.execute(cmd, out),
                    },
                },
            }
        }
    }

    fn tagged(&self, out: &mut Vec<u8>, status: &str, text: &str) {
        out.extend_from_slice(format!("{} {status} {text}\r\n", self.tag).as_bytes());
    }

    /// The authentication service's challenge.
    pub fn challenge(&mut self, data: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("+ {data}\r\n").as_bytes());
        self.mode = Mode::AuthLine;
    }

    /// Logged in as `user` with mailboxes under `root`.
    pub fn logged_in(&mut self, user: &str, root: PathBuf, out: &mut Vec<u8>) {
        self.mode = Mode::Normal;
        let folders = Folders::new(root);
        if let Err(e) = folders.ensure_defaults() {
            oxipost_log::warning!("imap({user}): cannot create mailboxes: {e}");
        }
        self.folders = Some(folders);
        self.state = State::Auth;
        let text = format!("[CAPABILITY {}] Logged in", self.capability());
        self.tagged(out, "OK", &text);
    }

    /// The login failed; `temporary`: the service is down. Returns true when the session
    /// ends (too many failures).
    pub fn login_failed(&mut self, temporary: bool, out: &mut Vec<u8>) -> bool {
        self.mode = Mode::Normal;
        if temporary {
            self.tagged(out, "NO", "[UNAVAILABLE] Temporary authentication failure.");
            return false;
        }
        self.failed_logins += 1;
        self.tagged(out, "NO", "[AUTHENTICATIONFAILED] Authentication failed.");
        if self.cfg.login_attempts > 0 && self.failed_logins >= self.cfg.login_attempts {
            out.extend_from_slice(b"* BYE Too many invalid IMAP commands.\r\n");
            self.state = State::Logout;
            return true;
        }
        false
    }

    pub fn tls_started(&mut self) {
        self.framer.clear();
        self.cfg.tls_active = true;
    }

    /// The mailbox changed (inotify): report it to an idling client.
    pub fn changed(&mut self, out: &mut Vec<u8>) {
        if matches!(self.mode, Mode::Idle) {
            self.sync_view(out);
        }
    }

    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"* BYE Disconnected for inactivity.\r\n");
        self.state = State::Logout;
    }

    fn execute(&mut self, cmd: Command, out: &mut Vec<u8>) {
        self.tag = cmd.tag.clone();
        let (uid, name) = if cmd.name == "UID" {
            match cmd.args.first().and_then(Value::text) {
                Some(n) => (true, n.to_ascii_uppercase()),
                None => {
                    self.tagged(out, "BAD", "Error in IMAP command UID: Missing command.");
                    return;
                }
            }
        } else {
            (false, cmd.name.clone())
        };
        let args: &[Value] = if uid { &cmd.args[1..] } else { &cmd.args };
        let authed = !matches!(self.state, State::NotAuth);
        let selected = matches!(self.state, State::Selected(_));
        let any = ["CAPABILITY", "NOOP", "LOGOUT", "ID"];
        let notauth = ["STARTTLS", "LOGIN", "AUTHENTICATE"];
        let sel = [
            "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
        ];
        if uid && !["FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE"].contains(&name.as_str())
        {
            self.tagged(out, "BAD", "Error in IMAP command UID: Unknown command.");
            return;
        }
        if notauth.contains(&name.as_str()) && authed {
            self.tagged(out, "BAD", "Already logged in.");
            return;
        }
        if !any.contains(&name.as_str()) && !notauth.contains(&name.as_str()) && !authed {
            let known = sel.contains(&name.as_str())
                || [
                    "SELECT",
                    "EXAMINE",
                    "CREATE",
                    "DELETE",
                    "RENAME",
                    "SUBSCRIBE",
                    "UNSUBSCRIBE",
                    "LIST",
                    "LSUB",
                    "NAMESPACE",
                    "STATUS",
                    "APPEND",
                    "ENABLE",
                    "IDLE",
                ]
                .contains(&name.as_str());
            if known {
                self.tagged(out, "BAD", "Please log in first.");
            } else {
                let text = format!("Error in IMAP command {}: Unknown command.", short(&name));
                self.tagged(out, "BAD", &text);
            }
            return;
        }
        if sel.contains(&name.as_str()) && !selected {
            self.tagged(out, "BAD", "No mailbox selected.");
            return;
        }
        let no_args = [
            "CAPABILITY",
            "NOOP",
            "LOGOUT",
            "STARTTLS",
            "NAMESPACE",
            "CHECK",
            "CLOSE",
            "UNSELECT",
            "IDLE",
        ];
        if no_args.contains(&name.as_str()) && !args.is_empty() {
            let text = format!("Error in IMAP command {name}: Extra arguments.");
            self.tagged(out, "BAD", &text);
            return;
        }
        let r: Result<String, (&'static str, String)> = match name.as_str() {
            "CAPABILITY" => {
                out.extend_from_slice(format!("* CAPABILITY {}\r\n", self.capability()).as_bytes());
                Ok("Capability completed.".into())
            }
            "NOOP" => {
                self.sync_view(out);
                Ok("NOOP completed.".into())
            }
            "CHECK" => {
                self.sync_view(out);
                Ok("Check completed.".into())
            }
            "LOGOUT" => {
                out.extend_from_slice(b"* BYE Logging out\r\n");
                self.state = State::Logout;
                Ok("Logout completed.".into())
            }
            "ID" => {
                out.extend_from_slice(b"* ID (\"name\" \"oxipost\")\r\n");
                Ok("ID completed.".into())
            }
            "STARTTLS" => {
                if !self.cfg.starttls || self.cfg.tls_active {
                    Err(("BAD", "TLS is not available.".into()))
                } else {
                    self.tagged(out, "OK", "Begin TLS negotiation now.");
                    self.events.push_back(Event::StartTls);
                    return;
                }
            }
            "LOGIN" => return self.login(args, out),
            "AUTHENTICATE" => return self.authenticate(args, out),
            "ENABLE" => {
                let want = args.iter().any(|a| {
                    a.text()
                        .is_some_and(|t| t.eq_ignore_ascii_case("CONDSTORE"))
                });
                if want && !self.condstore {
                    self.condstore = true;
                    out.extend_from_slice(b"* ENABLED CONDSTORE\r\n");
                } else {
                    out.extend_from_slice(b"* ENABLED\r\n");
                }
                Ok("Enabled.".into())
            }
            "NAMESPACE" => {
                out.extend_from_slice(b"* NAMESPACE ((\"\" \".\")) NIL NIL\r\n");
                Ok("Namespace completed.".into())
            }
            "SELECT" | "EXAMINE" => self.select(args, name == "EXAMINE", out),
            "CREATE" | "DELETE" | "SUBSCRIBE" | "UNSUBSCRIBE" => self.folder_op(&name, args),
            "RENAME" => self.rename(args),
            "LIST" | "LSUB" => self.list(args, name == "LSUB", out),
            "STATUS" => self.status(args, out),
            "APPEND" => self.append(args),
            "IDLE" => {
                out.extend_from_slice(b"+ idling\r\n");
                self.mode = Mode::Idle;
                self.sync_view(out);
                return;
            }
            "CLOSE" | "UNSELECT" => {
                if name == "CLOSE" {
                    let _ = self.expunge(None, false, &mut Vec::new());
                }
                self.state = State::Auth;
                Ok(format!("{} completed.", name.to_ascii_uppercase()))
            }
            "EXPUNGE" => {
                let set = if uid {
                    match args.first().and_then(Value::text) {
                        Some(s) => Some(s),
                        None => return self.tagged(out, "BAD", "Missing UID set."),
                    }
                } else {
                    None
                };
                self.expunge(set.as_deref(), true, out)
            }
            "FETCH" => self.fetch(args, uid, out),
            "STORE" => self.store(args, uid, out),
            "SEARCH" => self.search(args, uid, out),
            "COPY" | "MOVE" => self.copy(args, uid, name == "MOVE", out),
            _ => Err((
                "BAD",
                format!("Error in IMAP command {}: Unknown command.", short(&name)),
            )),
        };
        match r {
            Ok(text) => {
                if !matches!(name.as_str(), "FETCH" | "STORE" | "SEARCH" | "LOGOUT")
                    || uid && name != "SEARCH"
                {
                    self.sync_view(out);
                }
                self.tagged(out, "OK", &text);
            }
            Err((status, text)) => self.tagged(out, status, &text),
        }
    }

    fn login(&mut self, args: &[Value], out: &mut Vec<u8>) {
        if self.login_disabled() {
            self.tagged(
                out,
                "NO",
                "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            );
            return;
        }
        let (Some(Value::Atom(_) | Value::Str(_)), Some(Value::Atom(_) | Value::Str(_)), 2) =
            (args.first(), args.get(1), args.len())
        else {
            self.tagged(
                out,
                "BAD",
                "Error in IMAP command LOGIN: Invalid arguments.",
            );
            return;
        };
        let user = match &args[0] {
            Value::Atom(a) => a.as_bytes().to_vec(),
            Value::Str(s) => s.clone(),
            Value::List(_) => Vec::new(),
        };
        let pass = match &args[1] {
            Value::Atom(a) => a.as_bytes().to_vec(),
            Value::Str(s) => s.clone(),
            Value::List(_) => Vec::new(),
        };
        self.user_hint = Some(String::from_utf8_lossy(&user).into_owned());
        let mut plain = vec![0u8];
        plain.extend_from_slice(&user);
        plain.push(0);
        plain.extend_from_slice(&pass);
        self.mode = Mode::AuthWait;
        self.events.push_back(Event::Authenticate {
            mechanism: "PLAIN".into(),
            initial: Some(base64::engine::general_purpose::STANDARD.encode(plain)),
        });
    }

    fn authenticate(&mut self, args: &[Value], out: &mut Vec<u8>) {
        let Some(mech) = args.first().and_then(Value::text) else {
            self.tagged(
                out,
                "BAD",
                "Error in IMAP command AUTHENTICATE: Missing mechanism.",
            );
            return;
        };
        let mech = mech.to_ascii_uppercase();
        if self.login_disabled() {
            self.tagged(
                out,
                "NO",
                "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
            );
            return;
        }
        if !self
            .cfg
            .mechanisms
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&mech))
        {
            self.tagged(out, "NO", "Unsupported authentication mechanism.");
            return;
        }
        let initial = args.get(1).and_then(Value::text);
        if initial.as_deref() == Some("*") {
            self.tagged(out, "BAD", "Authentication aborted by client.");
            return;
        }
        if initial.is_none() && mech == "PLAIN" {
            // PLAIN has the client speak first: an empty challenge, and the client's line
            // becomes the initial response.
            out.extend_from_slice(b"+ \r\n");
            self.mode = Mode::AuthLine;
            self.pending_mech = Some(mech);
            return;
        }
        self.mode = Mode::AuthWait;
        self.events.push_back(Event::Authenticate {
            mechanism: mech,
            initial: initial.map(|i| if i == "=" { String::new() } else { i }),
        });
    }

    fn folders(&self) -> Result<&Folders, (&'static str, String)> {
        self.folders
            .as_ref()
            .ok_or(("NO", "Not logged in.".to_owned()))
    }

    fn mailbox_arg(args: &[Value], i: usize) -> Result<String, (&'static str, String)> {
        args.get(i)
            .and_then(Value::text)
            .map(|n| norm_name(&n))
            .ok_or(("BAD", "Error in IMAP command: Missing mailbox name.".into()))
    }

    fn select(
        &mut self,
        args: &[Value],
        readonly: bool,
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        let name = Self::mailbox_arg(args, 0)?;
        self.state = State::Auth;
        match args.get(1) {
            None => {}
            Some(Value::List(p))
                if p.len() == 1
                    && p[0]
                        .text()
                        .is_some_and(|t| t.eq_ignore_ascii_case("CONDSTORE")) =>
            {
                self.condstore = true;
            }
            Some(_) => {
                return Err((
                    "BAD",
                    "Error in IMAP command SELECT: Invalid parameters.".into(),
                ));
            }
        }
        let f = self.folders()?;
        if !f.exists(&name) {
            return Err(("NO", "[NONEXISTENT] Mailbox doesn't exist.".into()));
        }
        let dir = f.dir(&name).map_err(|e| ("NO", store_err(&e)))?;
        let mut mbox = Mailbox::open(&dir).map_err(|e| ("NO", store_err(&e)))?;
        let recent: HashSet<u32> = if readonly {
            HashSet::new()
        } else {
            mbox.refresh()
                .map_err(|e| ("NO", store_err(&e)))?
                .into_iter()
                .collect()
        };
        let snap = mbox.snapshot().map_err(|e| ("NO", store_err(&e)))?;
        let first_unseen = snap
            .messages
            .iter()
            .position(|m| !m.flags.contains(Flags::SEEN));
        out.extend_from_slice(format!("* FLAGS ({SYSTEM_FLAGS})\r\n").as_bytes());
        out.extend_from_slice(
            format!("* OK [PERMANENTFLAGS ({SYSTEM_FLAGS} \\*)] Flags permitted.\r\n").as_bytes(),
        );
        out.extend_from_slice(format!("* {} EXISTS\r\n", snap.messages.len()).as_bytes());
        out.extend_from_slice(format!("* {} RECENT\r\n", recent.len()).as_bytes());
        if let Some(i) = first_unseen {
            out.extend_from_slice(format!("* OK [UNSEEN {}] First unseen.\r\n", i + 1).as_bytes());
        }
        out.extend_from_slice(
            format!("* OK [UIDVALIDITY {}] UIDs valid\r\n", snap.uidvalidity).as_bytes(),
        );
        out.extend_from_slice(
            format!("* OK [UIDNEXT {}] Predicted next UID\r\n", snap.uidnext).as_bytes(),
        );
        out.extend_from_slice(
            format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", snap.highest_modseq).as_bytes(),
        );
        self.state = State::Selected(Box::new(Selected {
            name,
            mbox,
            view: snap.messages,
            readonly,
            modseq: snap.highest_modseq,
            recent,
        }));
        Ok(if readonly {
            "[READ-ONLY] Examine completed.".into()
        } else {
            "[READ-WRITE] Select completed.".into()
        })
    }

    fn folder_op(&mut self, op: &str, args: &[Value]) -> Result<String, (&'static str, String)> {
        let name = Self::mailbox_arg(args, 0)?;
        let f = self.folders()?;
        let r = match op {
            "CREATE" => f.create(&name),
            "DELETE" => {
                if let State::Selected(s) = &self.state
                    && s.name == name
                {
                    self.state = State::Auth;
                }
                let f = self.folders()?;
                f.delete(&name)
            }
            "SUBSCRIBE" => {
                if f.exists(&name) {
                    f.subscribe(&name, true)
                } else {
                    Err(StoreError::NotFound)
                }
            }
            _ => f.subscribe(&name, false),
        };
        r.map_err(|e| ("NO", store_err(&e)))?;
        Ok(format!("{} completed.", short(op)))
    }

    fn rename(&mut self, args: &[Value]) -> Result<String, (&'static str, String)> {
        let from = Self::mailbox_arg(args, 0)?;
        let to = Self::mailbox_arg(args, 1)?;
        let f = self.folders()?;
        if !f.exists(&from) {
            return Err(("NO", "[NONEXISTENT] Mailbox doesn't exist.".into()));
        }
        f.rename(&from, &to).map_err(|e| ("NO", store_err(&e)))?;
        Ok("Rename completed.".into())
    }

    fn list(
        &mut self,
        args: &[Value],
        lsub: bool,
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        // LIST-EXTENDED selection options: only SPECIAL-USE is understood.
        let (special_only, args) = match args.first() {
            Some(Value::List(opts)) if !lsub => (
                opts.iter().any(|o| {
                    o.text()
                        .is_some_and(|t| t.eq_ignore_ascii_case("SPECIAL-USE"))
                }),
                &args[1..],
            ),
            _ => (false, args),
        };
        let (Some(reference), Some(pattern)) = (
            args.first().and_then(Value::text),
            args.get(1).and_then(Value::text),
        ) else {
            return Err((
                "BAD",
                "Error in IMAP command LIST: Invalid arguments.".into(),
            ));
        };
        let what = if lsub { "LSUB" } else { "LIST" };
        if pattern.is_empty() {
            out.extend_from_slice(format!("* {what} (\\Noselect) \".\" \"\"\r\n").as_bytes());
            return Ok(format!("{what} completed."));
        }
        let f = self.folders()?;
        let all = f.list().map_err(|e| ("NO", store_err(&e)))?;
        let names = if lsub { f.subscriptions() } else { all.clone() };
        let full = format!("{reference}{pattern}");
        for n in names {
            let cmp = match (full.get(..5), full.get(5..)) {
                (Some(head), Some(tail)) if n == "INBOX" && head.eq_ignore_ascii_case("INBOX") => {
                    format!("INBOX{tail}")
                }
                _ => full.clone(),
            };
            if !matches(cmp.as_bytes(), n.as_bytes()) {
                continue;
            }
            let special = Folders::special_use(&n);
            if special_only && special.is_none() {
                continue;
            }
            let prefix = format!("{n}{SEPARATOR}");
            let mut attrs = vec![if all.iter().any(|c| c.starts_with(&prefix)) {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }];
            if let Some(s) = special {
                attrs.push(s);
            }
            if lsub && !all.contains(&n) {
                attrs = vec!["\\Noselect"];
            }
            out.extend_from_slice(format!("* {what} ({}) \".\" ", attrs.join(" ")).as_bytes());
            astring(out, Some(n.as_bytes()));
            out.extend_from_slice(b"\r\n");
        }
        Ok(format!("{what} completed."))
    }

    fn status(
        &mut self,
        args: &[Value],
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        let name = Self::mailbox_arg(args, 0)?;
        let Some(Value::List(items)) = args.get(1) else {
            return Err((
                "BAD",
                "Error in IMAP command STATUS: Invalid arguments.".into(),
            ));
        };
        let f = self.folders()?;
        if !f.exists(&name) {
            return Err(("NO", "[NONEXISTENT] Mailbox doesn't exist.".into()));
        }
        let dir = f.dir(&name).map_err(|e| ("NO", store_err(&e)))?;
        let mbox = Mailbox::open(&dir).map_err(|e| ("NO", store_err(&e)))?;
        let snap = mbox.snapshot().map_err(|e| ("NO", store_err(&e)))?;
        let mut parts = Vec::new();
        for i in items {
            let it = i.text().unwrap_or_default().to_ascii_uppercase();
            let v = match it.as_str() {
                "MESSAGES" => snap.messages.len() as u64,
                "RECENT" => 0,
                "UIDNEXT" => u64::from(snap.uidnext),
                "UIDVALIDITY" => u64::from(snap.uidvalidity),
                "UNSEEN" => snap
                    .messages
                    .iter()
                    .filter(|m| !m.flags.contains(Flags::SEEN))
                    .count() as u64,
                "SIZE" => snap.messages.iter().map(|m| m.size).sum(),
                "HIGHESTMODSEQ" => {
                    self.condstore = true;
                    snap.highest_modseq
                }
                _ => {
                    return Err((
                        "BAD",
                        "Error in IMAP command STATUS: Invalid status item.".into(),
                    ));
                }
            };
            parts.push(format!("{it} {v}"));
        }
        out.extend_from_slice(b"* STATUS ");
        astring(out, Some(name.as_bytes()));
        out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok("Status completed.".into())
    }

    fn append(&mut self, args: &[Value]) -> Result<String, (&'static str, String)> {
        let name = Self::mailbox_arg(args, 0)?;
        let mut i = 1;
        let mut flags = (Flags::empty(), Vec::new());
        if let Some(v @ Value::List(_)) = args.get(i) {
            flags = parse_flags(v).map_err(|e| ("BAD", e.to_owned()))?;
            i += 1;
        }
        let mut date = None;
        if args.len() > i + 1 {
            let d = args[i].text().unwrap_or_default();
            date = Some(fetch::append_date(&d).ok_or((
                "BAD",
                "Error in IMAP command APPEND: Invalid date-time.".into(),
            ))?);
            i += 1;
        }
        let Some(Value::Str(data)) = args.get(i) else {
            return Err((
                "BAD",
                "Error in IMAP command APPEND: Missing message literal.".into(),
            ));
        };
        if args.len() > i + 1 {
            return Err((
                "BAD",
                "Error in IMAP command APPEND: Extra arguments.".into(),
            ));
        }
        let f = self.folders()?;
        if !f.exists(&name) {
            return Err(("NO", "[TRYCREATE] Mailbox doesn't exist.".into()));
        }
        let dir = f.dir(&name).map_err(|e| ("NO", store_err(&e)))?;
        let mut mbox = Mailbox::open(&dir).map_err(|e| ("NO", store_err(&e)))?;
        // Maildir files hold LF line ends; FETCH gives CRLF back.
        let stored: Vec<u8> = {
            let mut v = Vec::with_capacity(data.len());
            let mut it = data.iter().peekable();
            while let Some(&b) = it.next() {
                if b == b'\r' && it.peek() == Some(&&b'\n') {
                    continue;
                }
                v.push(b);
            }
            v
        };
        let uid = mbox
            .append(&stored, flags.0, &flags.1, date)
            .map_err(|e| ("NO", store_err(&e)))?;
        let validity = mbox.uidvalidity().map_err(|e| ("NO", store_err(&e)))?;
        Ok(format!("[APPENDUID {validity} {uid}] Append completed."))
    }

    /// Brings the view up to date with the index; reports the differences.
    fn sync_view(&mut self, out: &mut Vec<u8>) {
        let condstore = self.condstore;
        let State::Selected(s) = &mut self.state else {
            return;
        };
        let new = if s.readonly {
            Vec::new()
        } else {
            s.mbox.refresh().unwrap_or_default()
        };
        s.recent.extend(new.iter().copied());
        let modseq = s.mbox.highest_modseq().unwrap_or(s.modseq);
        if new.is_empty() && modseq == s.modseq {
            return;
        }
        let Ok(snap) = s.mbox.snapshot() else { return };
        s.modseq = snap.highest_modseq;
        // Expunged: highest sequence number first, so the numbers stay right.
        let live: HashSet<u32> = snap.messages.iter().map(|m| m.uid).collect();
        for i in (0..s.view.len()).rev() {
            if !live.contains(&s.view[i].uid) {
                out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                s.view.remove(i);
            }
        }
        let mut j = 0;
        let known = s.view.last().map_or(0, |m| m.uid);
        for (i, m) in s.view.iter_mut().enumerate() {
            while j < snap.messages.len() && snap.messages[j].uid < m.uid {
                j += 1;
            }
            if let Some(n) = snap.messages.get(j)
                && n.uid == m.uid
                && (n.flags != m.flags || n.keywords != m.keywords)
            {
                *m = n.clone();
                out.extend_from_slice(
                    format!(
                        "* {} FETCH ({})\r\n",
                        i + 1,
                        flags_item(m, s.recent.contains(&m.uid), condstore)
                    )
                    .as_bytes(),
                );
            }
        }
        let before = s.view.len();
        s.view
            .extend(snap.messages.into_iter().filter(|m| m.uid > known));
        if s.view.len() != before {
            out.extend_from_slice(format!("* {} EXISTS\r\n", s.view.len()).as_bytes());
            let r = s.view.iter().filter(|m| s.recent.contains(&m.uid)).count();
            out.extend_from_slice(format!("* {r} RECENT\r\n").as_bytes());
        }
    }

    /// Sequence or UID set → indices into the view.
    fn resolve(s: &Selected, set: &str, uid: bool) -> Result<Vec<usize>, (&'static str, String)> {
        let bad = || {
            (
                "BAD",
                "Error in IMAP command: Invalid messageset.".to_owned(),
            )
        };
        if uid {
            let star = s.view.last().map_or(0, |m| m.uid);
            let ranges = parse::sequence_set(set, star.max(1)).ok_or_else(bad)?;
            Ok(s.view
                .iter()
                .enumerate()
                .filter(|(_, m)| ranges.iter().any(|&(a, b)| (a..=b).contains(&m.uid)))
                .map(|(i, _)| i)
                .collect())
        } else {
            let n = s.view.len() as u32;
            let ranges = parse::sequence_set(set, n).ok_or_else(bad)?;
            if ranges.iter().any(|&(a, b)| a == 0 || b > n) {
                return Err(("BAD", "Error in IMAP command: Invalid messageset.".into()));
            }
            let mut v: Vec<usize> = ranges
                .iter()
                .flat_map(|&(a, b)| (a..=b).map(|x| x as usize - 1))
                .collect();
            v.sort_unstable();
            v.dedup();
            Ok(v)
        }
    }

    fn fetch(
        &mut self,
        args: &[Value],
        uid: bool,
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        let changed_since = modifier(args.get(2), "CHANGEDSINCE")?;
        if changed_since.is_some() {
            self.condstore = true;
        }
        let condstore = self.condstore;
        let State::Selected(s) = &mut self.state else {
            return Err(("BAD", "No mailbox selected.".into()));
        };
        let (Some(set), Some(what), 2 | 3) =
            (args.first().and_then(Value::text), args.get(1), args.len())
        else {
            return Err((
                "BAD",
                "Error in IMAP command FETCH: Invalid arguments.".into(),
            ));
        };
        let mut items = fetch::items(what).ok_or((
            "BAD",
            "Error in IMAP command FETCH: Invalid fetch attribute.".to_owned(),
        ))?;
        if uid && !items.contains(&Item::Uid) {
            items.insert(0, Item::Uid);
        }
        if changed_since.is_some() && !items.contains(&Item::ModSeq) {
            items.push(Item::ModSeq);
        }
        if items.contains(&Item::ModSeq) {
            self.condstore = true;
        }
        let mut idx = Self::resolve(s, &set, uid)?;
        if let Some(since) = changed_since {
            idx.retain(|&i| s.view[i].modseq > since);
        }
        let needs_body = items.iter().any(Item::needs_body);
        let sets_seen = !s.readonly
            && items
                .iter()
                .any(|i| matches!(i, Item::Section { peek: false, .. }));
        for i in idx {
            let mut m = s.view[i].clone();
            let raw = if needs_body {
                match s.mbox.read(&m) {
                    Ok(d) => fetch::to_crlf(&d),
                    // Expunged by another session meanwhile: nothing to send for it.
                    Err(_) => continue,
                }
            } else {
                Vec::new()
            };
            let parsed = if items.iter().any(|i| {
                matches!(i, Item::Envelope | Item::BodyStructure | Item::Body)
                    || matches!(i, Item::Section { part, .. } if !part.is_empty())
            }) {
                fetch::parse_message(&raw)
            } else {
                None
            };
            let mut flags_changed = false;
            if sets_seen
                && !m.flags.contains(Flags::SEEN)
                && let Ok(Some(n)) =
                    s.mbox
                        .set_flags(m.uid, m.flags.union(Flags::SEEN), &m.keywords)
            {
                m = n;
                s.view[i] = m.clone();
                flags_changed = true;
            }
            let mut resp = format!("* {} FETCH (", i + 1).into_bytes();
            let mut first = true;
            let mut sep = |resp: &mut Vec<u8>| {
                if !first {
                    resp.push(b' ');
                }
                first = false;
            };
            let mut sent_flags = false;
            for it in &items {
                sep(&mut resp);
                match it {
                    Item::Uid => resp.extend_from_slice(format!("UID {}", m.uid).as_bytes()),
                    Item::ModSeq => {
                        resp.extend_from_slice(format!("MODSEQ ({})", m.modseq).as_bytes())
                    }
                    Item::Flags => {
                        sent_flags = true;
                        resp.extend_from_slice(
                            flags_item(&m, s.recent.contains(&m.uid), condstore).as_bytes(),
                        )
                    }
                    Item::InternalDate => resp.extend_from_slice(
                        format!("INTERNALDATE \"{}\"", fetch::internal_date(m.internal_date))
                            .as_bytes(),
                    ),
                    Item::Size => {
                        resp.extend_from_slice(format!("RFC822.SIZE {}", m.size).as_bytes())
                    }
                    Item::Envelope => {
                        resp.extend_from_slice(b"ENVELOPE ");
                        match &parsed {
                            Some(p) => fetch::envelope(&mut resp, p, 0),
                            None => {
                                resp.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")
                            }
                        }
                    }
                    Item::BodyStructure | Item::Body => {
                        let ext = *it == Item::BodyStructure;
                        resp.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                        match &parsed {
                            Some(p) => fetch::structure(&mut resp, p, 0, ext, 0),
                            None => resp.extend_from_slice(
                                b"(\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0)",
                            ),
                        }
                    }
                    Item::Section {
                        label,
                        part,
                        text,
                        partial,
                        ..
                    } => {
                        let mut data = fetch::section_bytes(&raw, parsed.as_ref(), part, text);
                        if let Some((start, len)) = partial {
                            let a = (*start as usize).min(data.len());
                            let b = a.saturating_add(*len as usize).min(data.len());
                            data = data[a..b].to_vec();
                        }
                        resp.extend_from_slice(label.as_bytes());
                        resp.extend_from_slice(format!(" {{{}}}\r\n", data.len()).as_bytes());
                        resp.extend_from_slice(&data);
                    }
                }
            }
            if flags_changed && !sent_flags {
                sep(&mut resp);
                resp.extend_from_slice(
                    flags_item(&m, s.recent.contains(&m.uid), condstore).as_bytes(),
                );
            }
            resp.extend_from_slice(b")\r\n");
            out.extend_from_slice(&resp);
        }
        Ok("Fetch completed.".into())
    }

    fn store(
        &mut self,
        args: &[Value],
        uid: bool,
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        let mut args = args.to_vec();
        let unchanged_since = match args.get(1) {
            Some(v @ Value::List(_)) => {
                let n = modifier(Some(v), "UNCHANGEDSINCE")?;
                args.remove(1);
                self.condstore = true;
                n
            }
            _ => None,
        };
        let State::Selected(s) = &mut self.state else {
            return Err(("BAD", "No mailbox selected.".into()));
        };
        let (Some(set), Some(op), Some(val), 3) = (
            args.first().and_then(Value::text),
            args.get(1).and_then(Value::text),
            args.get(2),
            args.len(),
        ) else {
            return Err((
                "BAD",
                "Error in IMAP command STORE: Invalid arguments.".into(),
            ));
        };
        let op = op.to_ascii_uppercase();
        let (op, silent) = match op.strip_suffix(".SILENT") {
            Some(o) => (o.to_owned(), true),
            None => (op, false),
        };
        if !["FLAGS", "+FLAGS", "-FLAGS"].contains(&op.as_str()) {
            return Err(("BAD", "Error in IMAP command STORE: Invalid item.".into()));
        }
        let (flags, kw) = parse_flags(val).map_err(|e| ("BAD", e.to_owned()))?;
        let idx = Self::resolve(s, &set, uid)?;
        if s.readonly {
            return Err(("NO", "Mailbox is read-only.".into()));
        }
        let mut modified = Vec::new();
        for i in idx {
            let m = &s.view[i];
            if unchanged_since.is_some_and(|u| m.modseq > u) {
                modified.push(if uid { m.uid } else { i as u32 + 1 });
                continue;
            }
            let (nf, mut nk) = match op.as_str() {
                "FLAGS" => (flags, kw.clone()),
                "+FLAGS" => {
                    let mut k = m.keywords.clone();
                    for x in &kw {
                        if !k.iter().any(|y| y.eq_ignore_ascii_case(x)) {
                            k.push(x.clone());
                        }
                    }
                    (m.flags.union(flags), k)
                }
                _ => (
                    m.flags.minus(flags),
                    m.keywords
                        .iter()
                        .filter(|y| !kw.iter().any(|x| x.eq_ignore_ascii_case(y)))
                        .cloned()
                        .collect(),
                ),
            };
            nk.truncate(64);
            match s.mbox.set_flags(m.uid, nf, &nk) {
                Ok(Some(n)) => s.view[i] = n,
                Ok(None) => continue,
                Err(e) => return Err(("NO", store_err(&e))),
            }
            if !silent {
                let m = &s.view[i];
                let u = if uid {
                    format!("UID {} ", m.uid)
                } else {
                    String::new()
                };
                out.extend_from_slice(
                    format!(
                        "* {} FETCH ({u}{})\r\n",
                        i + 1,
                        flags_item(m, s.recent.contains(&m.uid), self.condstore)
                    )
                    .as_bytes(),
                );
            }
        }
        if !modified.is_empty() {
            let list: Vec<String> = modified.iter().map(u32::to_string).collect();
            return Ok(format!(
                "[MODIFIED {}] Conditional store failed.",
                list.join(",")
            ));
        }
        Ok("Store completed.".into())
    }

    fn expunge(
        &mut self,
        uid_set: Option<&str>,
        report: bool,
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        let State::Selected(s) = &mut self.state else {
            return Err(("BAD", "No mailbox selected.".into()));
        };
        if s.readonly {
            return if report {
                Err(("NO", "Mailbox is read-only.".into()))
            } else {
                Ok(String::new())
            };
        }
        let allowed: Option<HashSet<usize>> = match uid_set {
            Some(set) => Some(Self::resolve(s, set, true)?.into_iter().collect()),
            None => None,
        };
        let uids: Vec<u32> = s
            .view
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                m.flags.contains(Flags::DELETED) && allowed.as_ref().is_none_or(|a| a.contains(i))
            })
            .map(|(_, m)| m.uid)
            .collect();
        let gone: HashSet<u32> = s
            .mbox
            .expunge(&uids)
            .map_err(|e| ("NO", store_err(&e)))?
            .into_iter()
            .collect();
        for i in (0..s.view.len()).rev() {
            if gone.contains(&s.view[i].uid) {
                if report {
                    out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                }
                s.view.remove(i);
            }
        }
        Ok("Expunge completed.".into())
    }

    fn search(
        &mut self,
        args: &[Value],
        uid: bool,
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        let State::Selected(s) = &mut self.state else {
            return Err(("BAD", "No mailbox selected.".into()));
        };
        let mut args = args;
        if args
            .first()
            .and_then(Value::text)
            .is_some_and(|t| t.eq_ignore_ascii_case("CHARSET"))
        {
            let cs = args.get(1).and_then(Value::text).unwrap_or_default();
            if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") {
                return Err((
                    "NO",
                    "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.".into(),
                ));
            }
            args = &args[2..];
        }
        let key = search::parse(args)
            .map_err(|e| ("BAD", format!("Error in IMAP command SEARCH: {e}")))?;
        let star_seq = s.view.len() as u32;
        let star_uid = s.view.last().map_or(0, |m| m.uid);
        let mut hits = Vec::new();
        for (i, m) in s.view.iter().enumerate() {
            let ctx = search::Ctx {
                seq: i as u32 + 1,
                star_seq,
                star_uid,
                msg: m,
                recent: s.recent.contains(&m.uid),
                mbox: &s.mbox,
            };
            if search::eval(&key, &ctx, &mut None) {
                hits.push((if uid { m.uid } else { i as u32 + 1 }, m.modseq));
            }
        }
        out.extend_from_slice(b"* SEARCH");
        for (h, _) in &hits {
            out.extend_from_slice(format!(" {h}").as_bytes());
        }
        if key.uses_modseq()
            && let Some(max) = hits.iter().map(|(_, m)| *m).max()
        {
            out.extend_from_slice(format!(" (MODSEQ {max})").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        Ok("Search completed.".into())
    }

    fn copy(
        &mut self,
        args: &[Value],
        uid: bool,
        mv: bool,
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        let set = args.first().and_then(Value::text).ok_or((
            "BAD",
            "Error in IMAP command COPY: Invalid arguments.".to_owned(),
        ))?;
        let name = Self::mailbox_arg(args, 1)?;
        let f = self.folders()?;
        if !f.exists(&name) {
            return Err(("NO", "[TRYCREATE] Mailbox doesn't exist.".into()));
        }
        let dir = f.dir(&name).map_err(|e| ("NO", store_err(&e)))?;
        let State::Selected(s) = &mut self.state else {
            return Err(("BAD", "No mailbox selected.".into()));
        };
        if mv && s.readonly {
            return Err(("NO", "Mailbox is read-only.".into()));
        }
        let idx = Self::resolve(s, &set, uid)?;
        let mut dest = Mailbox::open(&dir).map_err(|e| ("NO", store_err(&e)))?;
        let (mut src_uids, mut dst_uids) = (Vec::new(), Vec::new());
        for &i in &idx {
            let m = &s.view[i];
            match s.mbox.copy_to(m, &mut dest) {
                Ok(n) => {
                    src_uids.push(m.uid);
                    dst_uids.push(n);
                }
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(("NO", store_err(&e))),
            }
        }
        let validity = dest.uidvalidity().map_err(|e| ("NO", store_err(&e)))?;
        let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let code = if src_uids.is_empty() {
            String::new()
        } else {
            format!(
                "[COPYUID {validity} {} {}] ",
                list(&src_uids),
                list(&dst_uids)
            )
        };
        if !mv {
            return Ok(format!("{code}Copy completed."));
        }
        out.extend_from_slice(format!("* OK {code}Moved UIDs.\r\n").as_bytes());
        let gone: HashSet<u32> = s
            .mbox
            .expunge(&src_uids)
            .map_err(|e| ("NO", store_err(&e)))?
            .into_iter()
            .collect();
        for i in (0..s.view.len()).rev() {
            if gone.contains(&s.view[i].uid) {
                out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                s.view.remove(i);
            }
        }
        Ok("Move completed.".into())
    }
}

/// A command name for a reply, bounded.
fn short(s: &str) -> String {
    s.chars()
        .take(32)
        .filter(|c| c.is_ascii_graphic())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Garbage of every kind into a fresh session: replies, never a panic.
    #[test]
    fn garbage_never_panics() {
        let pieces: [&[u8]; 16] = [
            b"a ",
            b"LOGIN ",
            b"{5}\r\n",
            b"{99999999999999999999}\r\n",
            b"(",
            b")",
            b"\"",
            b"\\",
            b"\r\n",
            b"UID ",
            b"FETCH 1:* BODY[1.2]<0.9>",
            b"*",
            b"\xc3\xa9",
            b"SEARCH SINCE 1-Jan-99999999999 ",
            b"AUTHENTICATE PLAIN\r\n",
            b"x{3+}\r\n",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut s = Session::new(Config {
                max_line: 200,
                max_literal: 1000,
                starttls: true,
                tls_active: false,
                login_requires_tls: false,
                secured: true,
                mechanisms: vec!["PLAIN".into()],
                login_attempts: 3,
            });
            let mut out = Vec::new();
            for _ in 0..12 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.feed(pieces[(seed % pieces.len() as u64) as usize]);
            }
            s.feed(b"\r\n");
            for _ in 0..50 {
                match s.next(&mut out) {
                    Step::Close | Step::NeedInput => break,
                    Step::Wait => {
                        s.login_failed(false, &mut out);
                    }
                    Step::Event(_) => {}
                }
            }
        }
    }

    #[test]
    fn patterns() {
        assert!(matches(b"*", b"a.b"));
        assert!(matches(b"%", b"a"));
        assert!(!matches(b"%", b"a.b"));
        assert!(matches(b"a.%", b"a.b"));
        assert!(matches(b"INBOX", b"INBOX"));
    }
}

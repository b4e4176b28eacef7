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

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use oxipost_store::folders::SEPARATOR;
use oxipost_store::{Flags, Folders, Mailbox, Message, StoreError};

use crate::fetch::{self, Item};
use crate::parse::{self, Command, Frame, Framer, Value, astring};
use crate::search;
use crate::utf7;

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
    /// A FETCH answer is being produced in parts (output back-pressure).
    Fetching,
}

/// Output above this stops a session producing more (the rest of a FETCH, pipelined
/// commands) until the client has read what is queued: a client that does not read
/// cannot make imapd buffer without bound.
pub const OUTPUT_BOUND: usize = 256 * 1024;

/// The version tag of cached ENVELOPE/BODY/BODYSTRUCTURE values in the store's index: a
/// hash of the code that builds them (`fetch.rs`) and of this crate's version, so values
/// computed by another build are misses, never served.
const CACHE_VERSION: u64 = fnv(
    include_str!("fetch.rs").as_bytes(),
    fnv(env!("CARGO_PKG_VERSION").as_bytes(), 0xcbf2_9ce4_8422_2325),
);

const fn fnv(b: &[u8], mut h: u64) -> u64 {
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// Cache field numbers in the store's `cache` table.
const CACHE_ENVELOPE: u8 = 1;
const CACHE_BODY: u8 = 2;
const CACHE_BODYSTRUCTURE: u8 = 3;
/// Messages whose cached values one index query loads.
const CACHE_BATCH: usize = 1000;

fn cache_field(it: &Item) -> Option<u8> {
    match it {
        Item::Envelope => Some(CACHE_ENVELOPE),
        Item::Body => Some(CACHE_BODY),
        Item::BodyStructure => Some(CACHE_BODYSTRUCTURE),
        _ => None,
    }
}

/// A FETCH in progress.
struct FetchJob {
    items: Vec<Item>,
    /// View indices to answer, and how many are done.
    idx: Vec<usize>,
    next: usize,
    flags_modseq: bool,
    needs_body: bool,
    sets_seen: bool,
    uid: bool,
    /// A message of the set was expunged by another session meanwhile.
    expunged: bool,
    /// Cached values loaded for `idx[..cache_to]` (UID, field), not yet used.
    cache: HashMap<(u32, u8), Vec<u8>>,
    cache_to: usize,
}

struct Selected {
    name: String,
    mbox: Mailbox,
    /// Shared with the store's kept list and other sessions until this one changes it.
    view: Arc<Vec<Message>>,
    readonly: bool,
    modseq: u64,
    recent: HashSet<u32>,
}

impl Selected {
    fn fill_dates(&mut self) {
        fill_dates(&mut self.mbox, &mut self.view);
    }
}

/// Computes the internal dates and sizes of `msgs` the index does not have yet (the
/// store indexes a new file without looking into it) and keeps them in the index.
/// A message whose file is gone keeps `None` (it is expunged at the next look).
fn fill_dates(mbox: &mut Mailbox, msgs: &mut Arc<Vec<Message>>) {
    let known = |m: &Message| m.internal_date.is_some() && m.size.is_some();
    if msgs.iter().all(known) {
        return;
    }
    let mut dates = Vec::new();
    for m in Arc::make_mut(msgs).iter_mut() {
        if m.internal_date.is_some() && m.size.is_some() {
            continue;
        }
        if let Ok((d, n)) = mbox.date_and_size(m) {
            (m.internal_date, m.size) = (Some(d), Some(n));
            dates.push((m.uid, d, n));
        }
    }
    // Not kept: only slower next time.
    let _ = mbox.remember(&dates);
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
    /// QRESYNC (RFC 7162) enabled: `VANISHED` instead of `EXPUNGE`, UID in every FETCH.
    qresync: bool,
    /// IMAP4rev2 (RFC 9051) enabled: no `\Recent`/`RECENT`, ESEARCH for SEARCH, LIST in
    /// SELECT.
    rev2: bool,
    /// UTF8=ACCEPT (RFC 6855) enabled: mailbox names travel as UTF-8.
    utf8: bool,
    /// SEARCHRES (RFC 5182): the UIDs `SEARCH RETURN (SAVE)` saved, for `$`.
    saved: Vec<u32>,
    fetching: Option<FetchJob>,
}

const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

fn store_err(e: &StoreError) -> String {
    match e {
        StoreError::NotFound => "[NONEXISTENT] Mailbox doesn't exist.".into(),
        StoreError::Exists => "[ALREADYEXISTS] Mailbox already exists.".into(),
        StoreError::BadName => "[CANNOT] Invalid mailbox name.".into(),
        // RFC 9051's code for a DELETE refused because of child mailboxes.
        StoreError::NotAllowed(w) if w.starts_with("Mailbox has children") => {
            format!("[HASCHILDREN] {w}.")
        }
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
            qresync: false,
            rev2: false,
            utf8: false,
            saved: Vec::new(),
            fetching: None,
        }
    }

    pub fn capability(&self) -> String {
        let mut c = String::from(
            "IMAP4rev1 IMAP4rev2 SASL-IR LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE CONDSTORE QRESYNC ESEARCH SEARCHRES BINARY LIST-EXTENDED LIST-STATUS STATUS=SIZE UTF8=ACCEPT",
        );
        // RFC 7889: the largest APPEND accepted.
        c.push_str(&format!(" APPENDLIMIT={}", self.cfg.max_literal));
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
        // Input held back behind output (see OUTPUT_BOUND) is not read further.
        !matches!(self.mode, Mode::AuthWait | Mode::Fetching)
            && self.framer.buffered() <= self.cfg.max_line
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
                Mode::Fetching => {
                    if out.len() >= OUTPUT_BOUND {
                        return Step::NeedInput;
                    }
                    let uid = self.fetching.as_ref().is_some_and(|j| j.uid);
                    match self.fetch_more(out) {
                        Ok(false) => return Step::NeedInput,
                        Ok(true) => {
                            self.mode = Mode::Normal;
                            if uid {
                                self.sync_view(out);
                            }
                            self.tagged(out, "OK", "Fetch completed.");
                        }
                        Err((status, text)) => {
                            self.fetching = None;
                            self.mode = Mode::Normal;
                            self.tagged(out, status, &text);
                        }
                    }
                }
                // Pipelined commands wait while the client has not read earlier answers.
                Mode::Normal if out.len() >= OUTPUT_BOUND => return Step::NeedInput,
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

    /// The login succeeded but a limit refuses the session (`[LIMIT]`, RFC 9051 7.1);
    /// the client stays unauthenticated and may try again later.
    pub fn login_refused(&mut self, text: &str, out: &mut Vec<u8>) {
        self.mode = Mode::Normal;
        self.tagged(out, "NO", &format!("[LIMIT] {text}"));
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
                if args.is_empty() {
                    return self.tagged(
                        out,
                        "BAD",
                        "Error in IMAP command ENABLE: Missing capability.",
                    );
                }
                let mut enabled = String::from("* ENABLED");
                for a in args {
                    let t = a.text().unwrap_or_default().to_ascii_uppercase();
                    let flag = match t.as_str() {
                        "CONDSTORE" => &mut self.condstore,
                        "QRESYNC" => {
                            self.condstore = true;
                            &mut self.qresync
                        }
                        "IMAP4REV2" => &mut self.rev2,
                        "UTF8=ACCEPT" => &mut self.utf8,
                        // Unknown capabilities are ignored (RFC 5161).
                        _ => continue,
                    };
                    if !*flag {
                        *flag = true;
                        enabled.push(' ');
                        enabled.push_str(if t == "IMAP4REV2" { "IMAP4rev2" } else { &t });
                    }
                }
                if self.rev2
                    && let State::Selected(s) = &mut self.state
                {
                    s.recent.clear();
                }
                enabled.push_str("\r\n");
                out.extend_from_slice(enabled.as_bytes());
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
                self.saved.clear();
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
            "FETCH" => match self
                .fetch(args, uid, out)
                .and_then(|_| self.fetch_more(out))
            {
                Ok(true) => Ok("Fetch completed.".into()),
                Ok(false) => {
                    self.mode = Mode::Fetching;
                    return;
                }
                Err(e) => {
                    self.fetching = None;
                    Err(e)
                }
            },
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

    /// Mailbox argument `i` in its stored form (modified UTF-7): converted from UTF-8
    /// when UTF8=ACCEPT is on, checked to be modified UTF-7 otherwise.
    fn mailbox_arg(&self, args: &[Value], i: usize) -> Result<String, (&'static str, String)> {
        let raw: &[u8] = match args.get(i) {
            Some(Value::Atom(a)) => a.as_bytes(),
            Some(Value::Str(s)) => s,
            _ => return Err(("BAD", "Error in IMAP command: Missing mailbox name.".into())),
        };
        self.name_in(raw)
    }

    fn name_in(&self, raw: &[u8]) -> Result<String, (&'static str, String)> {
        let invalid = || ("NO", "[CANNOT] Mailbox name is not valid.".to_owned());
        let text = std::str::from_utf8(raw).map_err(|_| invalid())?;
        if text.chars().any(char::is_control) {
            return Err(invalid());
        }
        let stored = if self.utf8 {
            utf7::encode(text)
        } else if utf7::decode(text).is_some() {
            text.to_owned()
        } else {
            return Err((
                "NO",
                "[CANNOT] Mailbox name is not valid mUTF-7.".to_owned(),
            ));
        };
        Ok(norm_name(&stored))
    }

    /// A stored mailbox name for the wire: as it is, or as UTF-8 with UTF8=ACCEPT.
    fn put_name(&self, out: &mut Vec<u8>, name: &str) {
        if self.utf8
            && let Some(u) = utf7::decode(name)
        {
            if u.len() < 1024 && !u.chars().any(char::is_control) {
                out.push(b'"');
                for c in u.chars() {
                    if c == '"' || c == '\\' {
                        out.push(b'\\');
                    }
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
                out.push(b'"');
            } else {
                astring(out, Some(u.as_bytes()));
            }
            return;
        }
        astring(out, Some(name.as_bytes()));
    }

    fn select(
        &mut self,
        args: &[Value],
        readonly: bool,
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        let name = self.mailbox_arg(args, 0)?;
        // RFC 7162 3.2.11 / RFC 9051: the old mailbox is closed before anything else.
        if matches!(self.state, State::Selected(_)) && (self.qresync || self.rev2) {
            out.extend_from_slice(b"* OK [CLOSED] Previous mailbox closed.\r\n");
        }
        self.state = State::Auth;
        self.saved.clear();
        let bad = || {
            (
                "BAD",
                "Error in IMAP command SELECT: Invalid parameters.".to_owned(),
            )
        };
        // (CONDSTORE) and/or (QRESYNC (uidvalidity modseq [known-uids [seq-match]])).
        let mut qresync: Option<(u32, u64, Option<String>)> = None;
        match args.get(1) {
            None => {}
            Some(Value::List(p)) if args.len() == 2 => {
                let mut it = p.iter();
                while let Some(v) = it.next() {
                    let t = v.text().unwrap_or_default().to_ascii_uppercase();
                    match t.as_str() {
                        "CONDSTORE" => self.condstore = true,
                        "QRESYNC" if self.qresync => {
                            let Some(Value::List(q)) = it.next() else {
                                return Err(bad());
                            };
                            let num = |i: usize| q.get(i).and_then(Value::text);
                            let validity = num(0).and_then(|v| v.parse::<u32>().ok());
                            let modseq = num(1).and_then(|v| v.parse::<u64>().ok());
                            let known = num(2);
                            let (Some(validity), Some(modseq), true) =
                                (validity, modseq, (2..=4).contains(&q.len()))
                            else {
                                return Err(bad());
                            };
                            if known
                                .as_deref()
                                .is_some_and(|k| parse::sequence_set(k, u32::MAX).is_none())
                            {
                                return Err(bad());
                            }
                            qresync = Some((validity, modseq, known));
                        }
                        "QRESYNC" => {
                            return Err((
                                "BAD",
                                "Error in IMAP command SELECT: QRESYNC not enabled.".into(),
                            ));
                        }
                        _ => return Err(bad()),
                    }
                }
            }
            Some(_) => return Err(bad()),
        }
        let f = self.folders()?;
        if !f.exists(&name) {
            return Err(("NO", "[NONEXISTENT] Mailbox doesn't exist.".into()));
        }
        let dir = f.dir(&name).map_err(|e| ("NO", store_err(&e)))?;
        // The open has just synced the index with the Maildir.
        let mut mbox = Mailbox::open(&dir).map_err(|e| ("NO", store_err(&e)))?;
        let fresh = if readonly {
            Vec::new()
        } else {
            mbox.take_fresh()
        };
        let recent: HashSet<u32> = if self.rev2 {
            HashSet::new()
        } else {
            fresh.into_iter().collect()
        };
        let snap = mbox.snapshot().map_err(|e| ("NO", store_err(&e)))?;
        let first_unseen = snap
            .messages
            .iter()
            .position(|m| !m.flags.contains(Flags::SEEN));
        out.extend_from_slice(format!("* FLAGS ({SYSTEM_FLAGS})\r\n").as_bytes());
        out.extend_from_slice(
            if readonly {
                b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n".to_vec()
            } else {
                format!("* OK [PERMANENTFLAGS ({SYSTEM_FLAGS} \\*)] Flags permitted.\r\n")
                    .into_bytes()
            }
            .as_slice(),
        );
        out.extend_from_slice(format!("* {} EXISTS\r\n", snap.messages.len()).as_bytes());
        if !self.rev2 {
            out.extend_from_slice(format!("* {} RECENT\r\n", recent.len()).as_bytes());
            if let Some(i) = first_unseen {
                out.extend_from_slice(
                    format!("* OK [UNSEEN {}] First unseen.\r\n", i + 1).as_bytes(),
                );
            }
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
        if self.rev2 {
            out.extend_from_slice(b"* LIST () \".\" ");
            self.put_name(out, &name);
            out.extend_from_slice(b"\r\n");
        }
        if let Some((validity, since, known)) = qresync
            && validity == snap.uidvalidity
        {
            let known = known.and_then(|k| parse::sequence_set(&k, u32::MAX));
            let in_known = |u: u32| {
                known
                    .as_ref()
                    .is_none_or(|r| r.iter().any(|&(a, b)| (a..=b).contains(&u)))
            };
            let present: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
            let (log, complete) = mbox
                .vanished_since(since)
                .map_err(|e| ("NO", store_err(&e)))?;
            let mut gone: Vec<(u32, u32)> = log
                .into_iter()
                .filter(|u| present.binary_search(u).is_err() && in_known(*u))
                .map(|u| (u, u))
                .collect();
            if !complete {
                let all = known.clone().unwrap_or_else(|| vec![(1, u32::MAX)]);
                gone = intersect(&gaps(&present, snap.uidnext), &all);
            }
            if !gone.is_empty() {
                out.extend_from_slice(
                    format!("* VANISHED (EARLIER) {}\r\n", ranges_text(&gone)).as_bytes(),
                );
            }
            for (i, m) in snap.messages.iter().enumerate() {
                if m.modseq > since && in_known(m.uid) {
                    out.extend_from_slice(
                        format!(
                            "* {} FETCH (UID {} {})\r\n",
                            i + 1,
                            m.uid,
                            flags_item(m, recent.contains(&m.uid), true)
                        )
                        .as_bytes(),
                    );
                }
            }
        }
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
        let name = self.mailbox_arg(args, 0)?;
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
        let from = self.mailbox_arg(args, 0)?;
        let to = self.mailbox_arg(args, 1)?;
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
        let bad = |w: &str| ("BAD", format!("Error in IMAP command LIST: {w}."));
        let mut args = args;
        // LIST-EXTENDED (RFC 5258) selection options.
        let (mut sel_subscribed, mut recursive, mut sel_special) = (false, false, false);
        let had_selection = !lsub && matches!(args.first(), Some(Value::List(_)));
        if let (false, Some(Value::List(opts))) = (lsub, args.first()) {
            for o in opts {
                match o.text().unwrap_or_default().to_ascii_uppercase().as_str() {
                    "SUBSCRIBED" => sel_subscribed = true,
                    "REMOTE" => {}
                    "RECURSIVEMATCH" => recursive = true,
                    "SPECIAL-USE" => sel_special = true,
                    _ => return Err(bad("Unknown selection option")),
                }
            }
            if recursive && !sel_subscribed && !sel_special {
                return Err(bad("RECURSIVEMATCH needs another selection option"));
            }
            args = &args[1..];
        }
        let Some(reference) = args.first().and_then(Value::text) else {
            return Err(bad("Invalid arguments"));
        };
        let patterns: Vec<Vec<u8>> = match args.get(1) {
            Some(Value::List(l)) if !lsub && !l.is_empty() => l
                .iter()
                .map(|v| match v {
                    Value::Atom(a) => Some(a.as_bytes().to_vec()),
                    Value::Str(s) => Some(s.clone()),
                    Value::List(_) => None,
                })
                .collect::<Option<_>>()
                .ok_or_else(|| bad("Invalid pattern"))?,
            Some(Value::Atom(a)) => vec![a.as_bytes().to_vec()],
            Some(Value::Str(s)) => vec![s.clone()],
            _ => return Err(bad("Invalid arguments")),
        };
        // Return options (RFC 5258, RFC 5819 STATUS).
        // CHILDREN is answered whether asked or not (RFC 5258 allows it).
        let (mut ret_subscribed, mut status) = (false, None);
        match args.get(2) {
            None => {}
            Some(Value::Atom(r)) if !lsub && r.eq_ignore_ascii_case("RETURN") => {
                let Some(Value::List(opts)) = args.get(3) else {
                    return Err(bad("Invalid RETURN"));
                };
                let mut it = opts.iter();
                while let Some(o) = it.next() {
                    match o.text().unwrap_or_default().to_ascii_uppercase().as_str() {
                        "SUBSCRIBED" => ret_subscribed = true,
                        "CHILDREN" | "SPECIAL-USE" => {}
                        "STATUS" => match it.next() {
                            Some(Value::List(items)) => status = Some(items.clone()),
                            _ => return Err(bad("Invalid STATUS return option")),
                        },
                        _ => return Err(bad("Unknown return option")),
                    }
                }
                if args.len() > 4 {
                    return Err(bad("Extra arguments"));
                }
            }
            Some(_) => return Err(bad("Invalid arguments")),
        }
        let extended =
            had_selection || matches!(args.get(1), Some(Value::List(_))) || args.len() > 2;
        let what = if lsub { "LSUB" } else { "LIST" };
        if patterns.len() == 1 && patterns[0].is_empty() {
            out.extend_from_slice(format!("* {what} (\\Noselect) \".\" \"\"\r\n").as_bytes());
            return Ok(format!("{what} completed."));
        }
        let reference = self.name_in(reference.as_bytes())?;
        let full: Vec<String> = patterns
            .iter()
            .map(|p| {
                let p = if self.utf8 {
                    String::from_utf8(p.clone())
                        .map(|u| utf7::encode(&u))
                        .map_err(|_| bad("Invalid pattern"))
                } else {
                    Ok(String::from_utf8_lossy(p).into_owned())
                };
                p.map(|p| format!("{reference}{p}"))
            })
            .collect::<Result<_, _>>()?;
        let f = self.folders()?;
        let all = f.list().map_err(|e| ("NO", store_err(&e)))?;
        let subs = f.subscriptions();
        let matches_any = |n: &str| {
            full.iter().any(|pat| {
                let cmp = match (pat.get(..5), pat.get(5..)) {
                    (Some(head), Some(tail))
                        if n == "INBOX" && head.eq_ignore_ascii_case("INBOX") =>
                    {
                        format!("INBOX{tail}")
                    }
                    _ => pat.clone(),
                };
                matches(cmp.as_bytes(), n.as_bytes())
            })
        };
        let has_children = |n: &str| {
            let prefix = format!("{n}{SEPARATOR}");
            all.iter().any(|c| c.starts_with(&prefix))
        };
        // The candidates: every mailbox, or (SUBSCRIBED) the subscriptions, which may
        // name mailboxes that no longer exist; RECURSIVEMATCH adds the parents of
        // selected ones.
        let mut names: Vec<String> = if lsub || sel_subscribed {
            let mut v = subs.clone();
            // INBOX first, then sorted, as LIST.
            v.sort_by(|a, b| (a != "INBOX", a).cmp(&(b != "INBOX", b)));
            v
        } else {
            all.clone()
        };
        if sel_special {
            names.retain(|n| Folders::special_use(n).is_some());
        } else if !(lsub || sel_subscribed) {
            // A folder `a.b` without `a` (Maildir++ allows it): `a` is listed as a
            // placeholder that cannot be selected.
            for n in &all {
                let mut parts: Vec<&str> = n.split(SEPARATOR).collect();
                while parts.len() > 1 {
                    parts.pop();
                    let parent = parts.join(&SEPARATOR.to_string());
                    if !names.contains(&parent) {
                        names.push(parent);
                    }
                }
            }
            names[1..].sort();
        }
        let mut childinfo: HashSet<String> = HashSet::new();
        if recursive {
            let selected: Vec<String> = names.clone();
            for n in &selected {
                let mut parts: Vec<&str> = n.split(SEPARATOR).collect();
                while parts.len() > 1 {
                    parts.pop();
                    let parent = parts.join(&SEPARATOR.to_string());
                    if !names.contains(&parent) {
                        names.push(parent.clone());
                    }
                    childinfo.insert(parent);
                }
            }
            names.sort();
        }
        for n in names {
            let in_pattern = matches_any(&n);
            if !in_pattern {
                continue;
            }
            let exists = all.contains(&n);
            let subscribed = subs.contains(&n);
            let mut attrs: Vec<&str> = Vec::new();
            if lsub {
                if exists {
                    attrs.push(if has_children(&n) {
                        "\\HasChildren"
                    } else {
                        "\\HasNoChildren"
                    });
                    if let Some(su) = Folders::special_use(&n) {
                        attrs.push(su);
                    }
                } else {
                    attrs.push("\\Noselect");
                }
            } else {
                if !exists {
                    // RFC 5258's \NonExistent (it implies \Noselect) to clients that
                    // speak LIST-EXTENDED or IMAP4rev2, RFC 3501's \Noselect to others.
                    attrs.push(if extended || self.rev2 {
                        "\\NonExistent"
                    } else {
                        "\\Noselect"
                    });
                }
                if has_children(&n) {
                    attrs.push("\\HasChildren");
                } else if exists {
                    attrs.push("\\HasNoChildren");
                }
                if (sel_subscribed || ret_subscribed) && subscribed {
                    attrs.push("\\Subscribed");
                }
                if let Some(su) = Folders::special_use(&n) {
                    attrs.push(su);
                }
            }
            out.extend_from_slice(format!("* {what} ({}) \".\" ", attrs.join(" ")).as_bytes());
            self.put_name(out, &n);
            if recursive && childinfo.contains(&n) && sel_subscribed {
                out.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
            }
            out.extend_from_slice(b"\r\n");
            if let Some(items) = &status
                && exists
            {
                // LIST-STATUS: a failure for one mailbox is left out, not fatal.
                let mut line = Vec::new();
                if self.status_line(&n, items, &mut line).is_ok() {
                    out.extend_from_slice(&line);
                }
            }
        }
        Ok(format!("{what} completed."))
    }

    fn status(
        &mut self,
        args: &[Value],
        out: &mut Vec<u8>,
    ) -> Result<String, (&'static str, String)> {
        let name = self.mailbox_arg(args, 0)?;
        let Some(Value::List(items)) = args.get(1) else {
            return Err((
                "BAD",
                "Error in IMAP command STATUS: Invalid arguments.".into(),
            ));
        };
        if items.iter().any(|i| {
            i.text()
                .is_some_and(|t| t.eq_ignore_ascii_case("HIGHESTMODSEQ"))
        }) {
            self.condstore = true;
        }
        self.status_line(&name, items, out)?;
        Ok("Status completed.".into())
    }

    /// `* STATUS name (...)` for mailbox `name` (stored form).
    fn status_line(
        &self,
        name: &str,
        items: &[Value],
        out: &mut Vec<u8>,
    ) -> Result<(), (&'static str, String)> {
        let f = self.folders()?;
        if !f.exists(name) {
            return Err(("NO", "[NONEXISTENT] Mailbox doesn't exist.".into()));
        }
        let dir = f.dir(name).map_err(|e| ("NO", store_err(&e)))?;
        let mut mbox = Mailbox::open(&dir).map_err(|e| ("NO", store_err(&e)))?;
        let mut snap = mbox.snapshot().map_err(|e| ("NO", store_err(&e)))?;
        if items
            .iter()
            .any(|i| i.text().is_some_and(|t| t.eq_ignore_ascii_case("SIZE")))
        {
            fill_dates(&mut mbox, &mut snap.messages);
        }
        let mut parts = Vec::new();
        for i in items {
            let it = i.text().unwrap_or_default().to_ascii_uppercase();
            let count = |f: Flags, on: bool| {
                snap.messages
                    .iter()
                    .filter(|m| m.flags.contains(f) == on)
                    .count() as u64
            };
            let v = match it.as_str() {
                "MESSAGES" => snap.messages.len() as u64,
                "RECENT" if !self.rev2 => 0,
                "UIDNEXT" => u64::from(snap.uidnext),
                "UIDVALIDITY" => u64::from(snap.uidvalidity),
                "UNSEEN" => count(Flags::SEEN, false),
                "DELETED" => count(Flags::DELETED, true),
                "SIZE" => snap.messages.iter().filter_map(|m| m.size).sum(),
                "HIGHESTMODSEQ" => snap.highest_modseq,
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
        self.put_name(out, name);
        out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(())
    }

    fn append(&mut self, args: &[Value]) -> Result<String, (&'static str, String)> {
        let name = self.mailbox_arg(args, 0)?;
        let mut i = 1;
        let mut flags = (Flags::empty(), Vec::new());
        if let Some(v @ Value::List(_)) = args.get(i) {
            flags = parse_flags(v).map_err(|e| ("BAD", e.to_owned()))?;
            i += 1;
        }
        let mut date = None;
        if args.len() > i + 1 && matches!(args[i], Value::Str(_)) {
            let d = args[i].text().unwrap_or_default();
            date = Some(fetch::append_date(&d).ok_or((
                "BAD",
                "Error in IMAP command APPEND: Invalid date-time.".into(),
            ))?);
            i += 1;
        }
        // RFC 6855 4: `UTF8 (~{n}...)` carries a message with UTF-8 headers.
        if let (Some(Value::Atom(a)), Some(Value::List(l))) = (args.get(i), args.get(i + 1))
            && a.eq_ignore_ascii_case("UTF8")
            && l.len() == 1
        {
            if !self.utf8 {
                return Err((
                    "BAD",
                    "Error in IMAP command APPEND: UTF8=ACCEPT not enabled.".into(),
                ));
            }
            i += 1;
        }
        let data = match args.get(i) {
            Some(Value::Str(d)) => d,
            Some(Value::List(l)) if l.len() == 1 && matches!(l[0], Value::Str(_)) && self.utf8 => {
                let Value::Str(d) = &l[0] else {
                    return Err((
                        "BAD",
                        "Error in IMAP command APPEND: Missing message literal.".into(),
                    ));
                };
                d
            }
            _ => {
                return Err((
                    "BAD",
                    "Error in IMAP command APPEND: Missing message literal.".into(),
                ));
            }
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
        let (qresync, rev2) = (self.qresync, self.rev2);
        let State::Selected(s) = &mut self.state else {
            return;
        };
        let new = if s.readonly {
            Vec::new()
        } else {
            s.mbox.refresh().unwrap_or_default()
        };
        if !rev2 {
            s.recent.extend(new.iter().copied());
        }
        let modseq = s.mbox.highest_modseq().unwrap_or(s.modseq);
        if new.is_empty() && modseq == s.modseq {
            return;
        }
        let Ok(snap) = s.mbox.snapshot() else { return };
        s.modseq = snap.highest_modseq;
        let live: HashSet<u32> = snap.messages.iter().map(|m| m.uid).collect();
        let gone: HashSet<u32> = s
            .view
            .iter()
            .map(|m| m.uid)
            .filter(|u| !live.contains(u))
            .collect();
        remove_from_view(s, &gone, qresync, out);
        let mut j = 0;
        let known = s.view.last().map_or(0, |m| m.uid);
        for i in 0..s.view.len() {
            let uid = s.view[i].uid;
            while j < snap.messages.len() && snap.messages[j].uid < uid {
                j += 1;
            }
            if let Some(n) = snap.messages.get(j)
                && n.uid == uid
                && (n.flags != s.view[i].flags || n.keywords != s.view[i].keywords)
            {
                Arc::make_mut(&mut s.view)[i] = n.clone();
                let m = &s.view[i];
                let u = if qresync {
                    format!("UID {} ", m.uid)
                } else {
                    String::new()
                };
                out.extend_from_slice(
                    format!(
                        "* {} FETCH ({u}{})\r\n",
                        i + 1,
                        flags_item(m, s.recent.contains(&m.uid), condstore)
                    )
                    .as_bytes(),
                );
            }
        }
        let before = s.view.len();
        let added: Vec<Message> = snap
            .messages
            .iter()
            .filter(|m| m.uid > known)
            .cloned()
            .collect();
        if !added.is_empty() {
            Arc::make_mut(&mut s.view).extend(added);
        }
        if s.view.len() != before {
            out.extend_from_slice(format!("* {} EXISTS\r\n", s.view.len()).as_bytes());
            if !rev2 {
                let r = s.view.iter().filter(|m| s.recent.contains(&m.uid)).count();
                out.extend_from_slice(format!("* {r} RECENT\r\n").as_bytes());
            }
        }
    }

    /// Sequence or UID set → indices into the view.
    fn resolve(
        s: &Selected,
        set: &str,
        uid: bool,
        saved: &[u32],
    ) -> Result<Vec<usize>, (&'static str, String)> {
        let bad = || {
            (
                "BAD",
                "Error in IMAP command: Invalid messageset.".to_owned(),
            )
        };
        if set == "$" {
            // SEARCHRES: the saved result, UIDs whichever command uses it.
            return Ok(s
                .view
                .iter()
                .enumerate()
                .filter(|(_, m)| saved.binary_search(&m.uid).is_ok())
                .map(|(i, _)| i)
                .collect());
        }
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
        // (CHANGEDSINCE n [VANISHED]) (RFC 7162).
        let (changed_since, vanished) = match args.get(2) {
            Some(Value::List(l)) if l.len() == 3 => {
                let v = l[2]
                    .text()
                    .is_some_and(|t| t.eq_ignore_ascii_case("VANISHED"));
                if !v {
                    return Err((
                        "BAD",
                        "Error in IMAP command FETCH: Invalid modifier.".into(),
                    ));
                }
                (
                    modifier(Some(&Value::List(l[..2].to_vec())), "CHANGEDSINCE")?,
                    true,
                )
            }
            other => (modifier(other, "CHANGEDSINCE")?, false),
        };
        if vanished && !(uid && self.qresync) {
            return Err((
                "BAD",
                "Error in IMAP command FETCH: VANISHED needs UID FETCH and QRESYNC.".into(),
            ));
        }
        if changed_since.is_some() {
            self.condstore = true;
        }
        let condstore = self.condstore;
        let qresync = self.qresync;
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
        if (uid || qresync) && !items.contains(&Item::Uid) {
            items.insert(0, Item::Uid);
        }
        if changed_since.is_some() && !items.contains(&Item::ModSeq) {
            items.push(Item::ModSeq);
        }
        if items.contains(&Item::ModSeq) {
            self.condstore = true;
        }
        let mut idx = Self::resolve(s, &set, uid, &self.saved)?;
        if let (Some(since), true) = (changed_since, vanished) {
            // Expunged UIDs of the set, reported before the FETCH responses.
            let star = s.view.last().map_or(0, |m| m.uid);
            let want = parse::sequence_set(&set, star.max(1)).unwrap_or_default();
            let present: Vec<u32> = s.view.iter().map(|m| m.uid).collect();
            let (log, complete) = s
                .mbox
                .vanished_since(since)
                .map_err(|e| ("NO", store_err(&e)))?;
            let gone = if complete {
                let log: Vec<u32> = log
                    .into_iter()
                    .filter(|u| present.binary_search(u).is_err())
                    .collect();
                intersect(&to_ranges(&log), &want)
            } else {
                intersect(&gaps(&present, star.saturating_add(1)), &want)
            };
            if !gone.is_empty() {
                out.extend_from_slice(
                    format!("* VANISHED (EARLIER) {}\r\n", ranges_text(&gone)).as_bytes(),
                );
            }
        }
        if let Some(since) = changed_since {
            idx.retain(|&i| s.view[i].modseq > since);
        }
        // MODSEQ goes with FLAGS under CONDSTORE, once.
        let flags_modseq = condstore && !items.contains(&Item::ModSeq);
        let needs_body = items.iter().any(Item::needs_body);
        let sets_seen = !s.readonly
            && items.iter().any(|i| {
                matches!(
                    i,
                    Item::Section { peek: false, .. } | Item::Binary { peek: false, .. }
                )
            });
        self.fetching = Some(FetchJob {
            items,
            idx,
            next: 0,
            flags_modseq,
            needs_body,
            sets_seen,
            uid,
            expunged: false,
            cache: HashMap::new(),
            cache_to: 0,
        });
        Ok(String::new())
    }

    /// Produces FETCH responses of the job in progress until it is done (`Ok(true)`) or
    /// the output passes [`OUTPUT_BOUND`] (`Ok(false)`: the driver calls again when the
    /// client has read it).
    fn fetch_more(&mut self, out: &mut Vec<u8>) -> Result<bool, (&'static str, String)> {
        let Some(job) = self.fetching.as_mut() else {
            return Ok(true);
        };
        let State::Selected(s) = &mut self.state else {
            self.fetching = None;
            return Ok(true);
        };
        // New cache values, written to the index in one transaction per call.
        let mut to_cache: Vec<(u32, u8, Vec<u8>)> = Vec::new();
        let mut dates: Vec<(u32, i64, u64)> = Vec::new();
        let r = Self::fetch_loop(job, s, out, &mut to_cache, &mut dates);
        // A cache that cannot be written is only slower next time.
        if !to_cache.is_empty() {
            let _ = s.mbox.cache_put(CACHE_VERSION, &to_cache);
        }
        let _ = s.mbox.remember(&dates);
        if !r? {
            return Ok(false);
        }
        let expunged = job.expunged;
        self.fetching = None;
        if expunged {
            // RFC 9051 7.1: the rest was answered; the client learns why some was not.
            return Err((
                "NO",
                "[EXPUNGEISSUED] Some of the requested messages no longer exist.".into(),
            ));
        }
        Ok(true)
    }

    /// Loads the cached values of the next [`CACHE_BATCH`] messages of `job` when the
    /// ones loaded are used up.
    fn load_cache(job: &mut FetchJob, s: &Selected, fields: &[u8]) {
        if fields.is_empty() || job.next < job.cache_to {
            return;
        }
        let end = (job.next + CACHE_BATCH).min(job.idx.len());
        let uids: HashSet<u32> = job.idx[job.next..end]
            .iter()
            .filter_map(|&i| s.view.get(i).map(|m| m.uid))
            .collect();
        job.cache.clear();
        job.cache_to = end;
        let (Some(&lo), Some(&hi)) = (uids.iter().min(), uids.iter().max()) else {
            return;
        };
        for &f in fields {
            if let Ok(vals) = s.mbox.cached(f, CACHE_VERSION, lo, hi) {
                job.cache.extend(
                    vals.into_iter()
                        .filter(|(u, _)| uids.contains(u))
                        .map(|(u, v)| ((u, f), v)),
                );
            }
        }
    }

    /// The loop of [`Session::fetch_more`]: `Ok(false)` when stopped at the output bound.
    fn fetch_loop(
        job: &mut FetchJob,
        s: &mut Selected,
        out: &mut Vec<u8>,
        to_cache: &mut Vec<(u32, u8, Vec<u8>)>,
        dates: &mut Vec<(u32, i64, u64)>,
    ) -> Result<bool, (&'static str, String)> {
        let wants_date = job
            .items
            .iter()
            .any(|i| matches!(i, Item::InternalDate | Item::Size));
        let mut fields: Vec<u8> = job.items.iter().filter_map(cache_field).collect();
        fields.sort_unstable();
        fields.dedup();
        // Items that need the file whatever the cache holds.
        let other_body = job
            .items
            .iter()
            .any(|i| i.needs_body() && cache_field(i).is_none());
        let parts = job.items.iter().any(|i| {
            matches!(i, Item::Section { part, .. } | Item::Binary { part, .. } | Item::BinarySize { part } if !part.is_empty())
        });
        while let Some(&i) = job.idx.get(job.next) {
            if out.len() >= OUTPUT_BOUND {
                return Ok(false);
            }
            Self::load_cache(job, s, &fields);
            job.next += 1;
            let (items, flags_modseq, needs_body, sets_seen) =
                (&job.items, job.flags_modseq, job.needs_body, job.sets_seen);
            let Some(mut m) = s.view.get(i).cloned() else {
                continue;
            };
            if wants_date && (m.internal_date.is_none() || m.size.is_none()) {
                match s.mbox.date_and_size(&m) {
                    Ok((d, n)) => {
                        (m.internal_date, m.size) = (Some(d), Some(n));
                        Arc::make_mut(&mut s.view)[i] = m.clone();
                        dates.push((m.uid, d, n));
                    }
                    Err(_) => {
                        job.expunged = true;
                        continue;
                    }
                }
            }
            // Cached values: [envelope, body, bodystructure].
            let mut hit: [Option<Vec<u8>>; 3] = Default::default();
            for &f in &fields {
                hit[usize::from(f - 1)] = job.cache.remove(&(m.uid, f));
            }
            let missing = |f: u8| fields.contains(&f) && hit[usize::from(f - 1)].is_none();
            let structure_missing = missing(CACHE_BODY) || missing(CACHE_BODYSTRUCTURE);
            // ENVELOPE alone needs only the header block.
            let header_only = !other_body && !structure_missing && missing(CACHE_ENVELOPE);
            let read_full = needs_body && (other_body || structure_missing);
            let raw = if read_full || header_only {
                let data = if header_only {
                    s.mbox.read_header(&m)
                } else {
                    s.mbox.read(&m)
                };
                match data {
                    Ok(d) => fetch::to_crlf(d),
                    // Expunged by another session meanwhile: nothing to send for it.
                    Err(_) => {
                        job.expunged = true;
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            let parsed = if parts || structure_missing || missing(CACHE_ENVELOPE) {
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
                Arc::make_mut(&mut s.view)[i] = m.clone();
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
            for it in items {
                sep(&mut resp);
                match it {
                    Item::Uid => resp.extend_from_slice(format!("UID {}", m.uid).as_bytes()),
                    Item::ModSeq => {
                        resp.extend_from_slice(format!("MODSEQ ({})", m.modseq).as_bytes())
                    }
                    Item::Flags => {
                        sent_flags = true;
                        resp.extend_from_slice(
                            flags_item(&m, s.recent.contains(&m.uid), flags_modseq).as_bytes(),
                        )
                    }
                    Item::InternalDate => resp.extend_from_slice(
                        format!(
                            "INTERNALDATE \"{}\"",
                            fetch::internal_date(m.internal_date.unwrap_or(0))
                        )
                        .as_bytes(),
                    ),
                    Item::Size => resp.extend_from_slice(
                        format!("RFC822.SIZE {}", m.size.unwrap_or(0)).as_bytes(),
                    ),
                    Item::Envelope => {
                        resp.extend_from_slice(b"ENVELOPE ");
                        match (&hit[usize::from(CACHE_ENVELOPE - 1)], &parsed) {
                            (Some(v), _) => resp.extend_from_slice(v),
                            (None, Some(p)) => {
                                let start = resp.len();
                                fetch::envelope(&mut resp, p, 0);
                                to_cache.push((m.uid, CACHE_ENVELOPE, resp[start..].to_vec()));
                            }
                            (None, None) => {
                                resp.extend_from_slice(b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")
                            }
                        }
                    }
                    Item::BodyStructure | Item::Body => {
                        let ext = *it == Item::BodyStructure;
                        let field = if ext { CACHE_BODYSTRUCTURE } else { CACHE_BODY };
                        resp.extend_from_slice(if ext { b"BODYSTRUCTURE " } else { b"BODY " });
                        match (&hit[usize::from(field - 1)], &parsed) {
                            (Some(v), _) => resp.extend_from_slice(v),
                            (None, Some(p)) => {
                                let start = resp.len();
                                fetch::structure(&mut resp, p, 0, ext, 0);
                                to_cache.push((m.uid, field, resp[start..].to_vec()));
                            }
                            (None, None) => resp.extend_from_slice(
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
                        // BODY[] is the file as read: sent without another copy.
                        let owned;
                        let mut data: &[u8] =
                            if part.is_empty() && matches!(text, fetch::SectionText::Full) {
                                &raw
                            } else {
                                owned = fetch::section_bytes(&raw, parsed.as_ref(), part, text);
                                &owned
                            };
                        if let Some((start, len)) = partial {
                            let a = (*start as usize).min(data.len());
                            let b = a.saturating_add(*len as usize).min(data.len());
                            data = &data[a..b];
                        }
                        resp.extend_from_slice(label.as_bytes());
                        resp.extend_from_slice(format!(" {{{}}}\r\n", data.len()).as_bytes());
                        resp.extend_from_slice(data);
                    }
                    Item::Binary {
                        label,
                        part,
                        partial,
                        ..
                    } => {
                        let mut data = fetch::binary_bytes(&raw, parsed.as_ref(), part)
                            .map_err(|()| unknown_cte())?;
                        if let Some((start, len)) = partial {
                            let a = (*start as usize).min(data.len());
                            let b = a.saturating_add(*len as usize).min(data.len());
                            data = data[a..b].to_vec();
                        }
                        resp.extend_from_slice(label.as_bytes());
                        // A literal8 only when the data holds NUL (RFC 3516 4.2).
                        let tilde = if data.contains(&0) { "~" } else { "" };
                        resp.extend_from_slice(
                            format!(" {tilde}{{{}}}\r\n", data.len()).as_bytes(),
                        );
                        resp.extend_from_slice(&data);
                    }
                    Item::BinarySize { part } => {
                        let data = fetch::binary_bytes(&raw, parsed.as_ref(), part)
                            .map_err(|()| unknown_cte())?;
                        let spec = part
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(".");
                        resp.extend_from_slice(
                            format!("BINARY.SIZE[{spec}] {}", data.len()).as_bytes(),
                        );
                    }
                }
            }
            if flags_changed && !sent_flags {
                sep(&mut resp);
                resp.extend_from_slice(
                    flags_item(&m, s.recent.contains(&m.uid), flags_modseq).as_bytes(),
                );
            }
            resp.extend_from_slice(b")\r\n");
            out.extend_from_slice(&resp);
        }
        Ok(true)
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
        let idx = Self::resolve(s, &set, uid, &self.saved)?;
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
                Ok(Some(n)) => Arc::make_mut(&mut s.view)[i] = n,
                Ok(None) => continue,
                Err(e) => return Err(("NO", store_err(&e))),
            }
            if !silent {
                let m = &s.view[i];
                let u = if uid || self.qresync {
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
        let qresync = self.qresync;
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
            Some(set) => Some(
                Self::resolve(s, set, true, &self.saved)?
                    .into_iter()
                    .collect(),
            ),
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
        let mut sink = Vec::new();
        remove_from_view(s, &gone, qresync, if report { out } else { &mut sink });
        // RFC 7162 3.2.10: with QRESYNC the new HIGHESTMODSEQ (expunges carry none).
        if qresync && let Ok(m) = s.mbox.highest_modseq() {
            return Ok(format!("[HIGHESTMODSEQ {m}] Expunge completed."));
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
        // ESEARCH (RFC 4731) / SEARCHRES (RFC 5182): RETURN (MIN MAX ALL COUNT SAVE).
        let mut ret: Option<Vec<String>> = None;
        if args
            .first()
            .and_then(Value::text)
            .is_some_and(|t| t.eq_ignore_ascii_case("RETURN"))
        {
            let Some(Value::List(opts)) = args.get(1) else {
                return Err((
                    "BAD",
                    "Error in IMAP command SEARCH: Invalid RETURN.".into(),
                ));
            };
            let mut v = Vec::new();
            for o in opts {
                let t = o.text().unwrap_or_default().to_ascii_uppercase();
                if !["MIN", "MAX", "ALL", "COUNT", "SAVE"].contains(&t.as_str()) {
                    return Err((
                        "BAD",
                        "Error in IMAP command SEARCH: Unknown return option.".into(),
                    ));
                }
                if !v.contains(&t) {
                    v.push(t);
                }
            }
            if v.is_empty() {
                v.push("ALL".into());
            }
            ret = Some(v);
            args = &args[2..];
        }
        let save = ret.as_ref().is_some_and(|r| r.iter().any(|o| o == "SAVE"));
        if save {
            // A failed SEARCH leaves the saved result empty.
            self.saved.clear();
        }
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
        if key.uses_date_or_size() {
            s.fill_dates();
        }
        let star_seq = s.view.len() as u32;
        let star_uid = s.view.last().map_or(0, |m| m.uid);
        let mut hits = Vec::new();
        let mut hit_uids = Vec::new();
        for (i, m) in s.view.iter().enumerate() {
            let ctx = search::Ctx {
                seq: i as u32 + 1,
                star_seq,
                star_uid,
                msg: m,
                recent: s.recent.contains(&m.uid),
                mbox: &s.mbox,
                saved: &self.saved,
            };
            if search::eval(&key, &ctx, &mut None) {
                hits.push((if uid { m.uid } else { i as u32 + 1 }, m.modseq));
                hit_uids.push(m.uid);
            }
        }
        let max_modseq = key
            .uses_modseq()
            .then(|| hits.iter().map(|(_, m)| *m).max())
            .flatten();
        if save {
            self.saved = hit_uids;
        }
        // IMAP4rev2 answers every SEARCH in the ESEARCH form (ALL by default).
        let ret = match ret {
            Some(r) => Some(r),
            None if self.rev2 => Some(vec!["ALL".to_owned()]),
            None => None,
        };
        let Some(ret) = ret else {
            out.extend_from_slice(b"* SEARCH");
            for (h, _) in &hits {
                out.extend_from_slice(format!(" {h}").as_bytes());
            }
            if let Some(max) = max_modseq {
                out.extend_from_slice(format!(" (MODSEQ {max})").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            return Ok("Search completed.".into());
        };
        // SAVE alone: no ESEARCH response (RFC 5182 2.4).
        if ret.iter().all(|o| o == "SAVE") {
            return Ok("Search completed.".into());
        }
        let has = |o: &str| ret.iter().any(|x| x == o);
        let mut nums: Vec<u32> = hits.iter().map(|(h, _)| *h).collect();
        nums.sort_unstable();
        out.extend_from_slice(b"* ESEARCH (TAG ");
        astring(out, Some(self.tag.as_bytes()));
        out.push(b')');
        if uid {
            out.extend_from_slice(b" UID");
        }
        if let (Some(min), Some(max)) = (nums.first(), nums.last()) {
            if has("MIN") {
                out.extend_from_slice(format!(" MIN {min}").as_bytes());
            }
            if has("MAX") {
                out.extend_from_slice(format!(" MAX {max}").as_bytes());
            }
            if has("ALL") {
                out.extend_from_slice(
                    format!(" ALL {}", ranges_text(&to_ranges(&nums))).as_bytes(),
                );
            }
        }
        if has("COUNT") {
            out.extend_from_slice(format!(" COUNT {}", nums.len()).as_bytes());
        }
        if let Some(max) = max_modseq {
            out.extend_from_slice(format!(" MODSEQ {max}").as_bytes());
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
        let name = self.mailbox_arg(args, 1)?;
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
        let idx = Self::resolve(s, &set, uid, &self.saved)?;
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
        remove_from_view(s, &gone, self.qresync, out);
        Ok("Move completed.".into())
    }
}

fn unknown_cte() -> (&'static str, String) {
    (
        "NO",
        "[UNKNOWN-CTE] Unknown Content-Transfer-Encoding.".to_owned(),
    )
}

/// Drops expunged messages from the view, reporting `* n EXPUNGE` (highest sequence
/// number first, so the numbers stay right) or, with QRESYNC, one `* VANISHED`.
fn remove_from_view(s: &mut Selected, gone: &HashSet<u32>, qresync: bool, out: &mut Vec<u8>) {
    let mut uids = Vec::new();
    for i in (0..s.view.len()).rev() {
        if gone.contains(&s.view[i].uid) {
            if !qresync {
                out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
            }
            uids.push(s.view[i].uid);
            Arc::make_mut(&mut s.view).remove(i);
        }
    }
    if qresync && !uids.is_empty() {
        uids.reverse();
        out.extend_from_slice(
            format!("* VANISHED {}\r\n", ranges_text(&to_ranges(&uids))).as_bytes(),
        );
    }
}

/// Sorted, distinct numbers → `1:3,5` ranges.
fn to_ranges(sorted: &[u32]) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = Vec::new();
    for &n in sorted {
        match v.last_mut() {
            Some((_, b)) if n == b.saturating_add(1) || n == *b => *b = n,
            _ => v.push((n, n)),
        }
    }
    v
}

/// Ranges as a sequence set.
fn ranges_text(r: &[(u32, u32)]) -> String {
    r.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The UIDs below `uidnext` that are not in `present` (sorted), as ranges.
fn gaps(present: &[u32], uidnext: u32) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    let mut next = 1u32;
    for &u in present {
        if u > next {
            v.push((next, u - 1));
        }
        next = u.saturating_add(1);
    }
    if uidnext > next {
        v.push((next, uidnext - 1));
    }
    v
}

/// The intersection of two range lists, sorted and merged.
fn intersect(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = Vec::new();
    for &(x1, x2) in a {
        for &(y1, y2) in b {
            let (lo, hi) = (x1.max(y1), x2.min(y2));
            if lo <= hi {
                v.push((lo, hi));
            }
        }
    }
    v.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (lo, hi) in v {
        match merged.last_mut() {
            Some((_, b)) if lo <= b.saturating_add(1) => *b = (*b).max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
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

    /// Extension commands, well-formed and not, in random order on a logged-in session
    /// with a real mailbox: replies, never a panic, and the session keeps answering.
    #[test]
    fn extension_garbage_never_panics() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pieces: [&[u8]; 24] = [
            b"a ENABLE QRESYNC IMAP4rev2 UTF8=ACCEPT\r\n",
            b"a SELECT INBOX (QRESYNC (1 1 1:*))\r\n",
            b"a SELECT INBOX\r\n",
            b"a APPEND INBOX ~{5}\r\nab\0cd\r\n",
            b"a APPEND INBOX {40+}\r\nContent-Transfer-Encoding: base64\r\n\r\nAA=\r\n",
            b"a FETCH 1:* (BINARY[1] BINARY.SIZE[] BINARY.PEEK[1.2.3]<0.1>)\r\n",
            b"a UID FETCH $ (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n",
            b"a SEARCH RETURN (SAVE MIN MAX ALL COUNT) OR 1:* $\r\n",
            b"a SEARCH RETURN (\r\n",
            b"a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"%\" \"*\") RETURN (STATUS (MESSAGES SIZE DELETED) CHILDREN)\r\n",
            b"a LIST () \"\" () RETURN ()\r\n",
            b"a CREATE \"\xe6\x97\xa5.&Jjo-.&\"\r\n",
            b"a STATUS \"&AAA-\" (MESSAGES)\r\n",
            b"a STORE $ +FLAGS (\\Deleted)\r\n",
            b"a EXPUNGE\r\n",
            b"a MOVE 1:* Trash\r\n",
            b"a UID EXPUNGE 1:*\r\n",
            b"a APPEND \"x\" UTF8 (~{3}\r\nabc)\r\n",
            b"a FETCH * BINARY[",
            b"a ENABLE\r\n",
            b"(((",
            b"\r\n",
            b"a NOOP\r\n",
            b"a UNSELECT\r\n",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..60 {
            let mut s = Session::new(Config {
                max_line: 2000,
                max_literal: 100_000,
                starttls: false,
                tls_active: false,
                login_requires_tls: false,
                secured: true,
                mechanisms: vec!["PLAIN".into()],
                login_attempts: 3,
            });
            let mut out = Vec::new();
            s.logged_in("t", dir.path().join("Maildir"), &mut out);
            for _ in 0..16 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.feed(pieces[(seed % pieces.len() as u64) as usize]);
                while let Step::Event(_) = s.next(&mut out) {}
                out.clear();
            }
            s.feed(b"\r\nz NOOP\r\n");
            while let Step::Event(_) = s.next(&mut out) {}
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.contains("z OK") || text.contains("z BAD") || matches!(s.mode, Mode::Idle),
                "{text}"
            );
        }
        Ok(())
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

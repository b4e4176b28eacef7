//! The process-wide part of pop3d (the [`MultiService`]: per-address and per-user
//! connection counts, the authentication result queue, the output back-pressure ticker)
//! and one connection's adapter ([`Pop3Conn`]) between the skeleton and the sans-IO
//! `oxipost-pop3-proto` session.
//!
//! Everything runs on the skeleton's one event-loop thread; helper threads (one per
//! login exchange, and the ticker) talk through queues and wake-up pipes, so the shared
//! state is a `RefCell` behind an `Rc`.
//!
//! Output back-pressure: a client may pipeline thousands of `RETR`s in one packet. A
//! connection stops taking commands once [`OUTPUT_HIGH`] bytes of replies wait unsent,
//! stops reading, and asks the ticker to wake it a few milliseconds later to continue
//! (the skeleton has no "output drained" callback), so one client never makes the process
//! hold more than a few megabytes for it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use oxipost_daemon::{Connection, Flow, MultiService, Peer, TlsInfo};
use oxipost_ipc::auth::{AuthReply, AuthRequest, UserInfo};
use oxipost_pop3_proto::{Config, Event, LoginFailure, Session, Step};
use oxipost_tls::rustls::ServerConfig as TlsConfig;

use crate::auth::{AuthResults, Exchange, StepResult};
use crate::settings::Settings;
use crate::store::{Location, OpenError, Store};

/// Unsent reply bytes above which a connection stops executing commands.
const OUTPUT_HIGH: usize = 4 << 20;
/// How often a connection held back by [`OUTPUT_HIGH`] looks again.
const TICK: Duration = Duration::from_millis(3);

/// State shared by all sessions of this process.
pub struct Shared {
    pub settings: Settings,
    /// The session template (mechanisms, limits, TLS offer).
    proto: Config,
    /// The listening address, for `lip=` in log lines (when bound to one address).
    local_ip: Option<IpAddr>,
    /// The host name for APOP timestamps; None: APOP is not offered.
    apop_host: Option<String>,
    auth: AuthResults,
    ticker: Ticker,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    per_ip: HashMap<IpAddr, usize>,
    per_user: HashMap<String, usize>,
    auth_results: HashMap<usize, (u64, StepResult)>,
    next_exchange: u64,
    /// Connections held back by output back-pressure.
    backlog: HashSet<usize>,
}

/// A helper thread that writes to a pipe every [`TICK`] while `armed`, and sleeps (parked)
/// otherwise, so an idle process does not wake.
struct Ticker {
    read: OwnedFd,
    armed: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl Ticker {
    fn start() -> std::io::Result<Ticker> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(std::io::Error::from)?;
        let armed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&armed);
        let handle = std::thread::Builder::new()
            .name("ticker".into())
            .spawn(move || {
                loop {
                    if !flag.load(Ordering::Acquire) {
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    if flag.load(Ordering::Acquire) {
                        let _ = nix::unistd::write(w.as_fd(), &[1]);
                    }
                }
            })?;
        Ok(Ticker {
            read: r,
            armed,
            thread: handle.thread().clone(),
        })
    }

    fn arm(&self) {
        if !self.armed.swap(true, Ordering::AcqRel) {
            self.thread.unpark();
        }
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.read.as_fd(), &mut buf), Ok(n) if n > 0) {}
    }
}

impl Shared {
    pub fn new(
        settings: Settings,
        mechanisms: Vec<String>,
        apop_host: Option<String>,
        tls_offered: bool,
        local_ip: Option<IpAddr>,
    ) -> Result<Shared, String> {
        let auth = AuthResults::new().map_err(|e| format!("auth result pipe: {e}"))?;
        let ticker = Ticker::start().map_err(|e| format!("start ticker: {e}"))?;
        let mut proto = Config::new();
        proto.max_line = settings.max_line;
        proto.max_login_attempts = settings.login_attempts;
        proto.stls = tls_offered && !settings.tls.wrapper;
        proto.tls_active = false;
        proto.login_requires_tls = settings.tls.required;
        proto.mechanisms = mechanisms;
        Ok(Shared {
            settings,
            proto,
            local_ip,
            apop_host,
            auth,
            ticker,
            state: RefCell::new(State::default()),
        })
    }

    fn auth_start(&self, conn: usize, first: impl FnOnce(u64) -> AuthRequest) -> Exchange {
        let serial = {
            let mut st = self.state.borrow_mut();
            st.next_exchange = st.next_exchange.wrapping_add(1);
            st.next_exchange
        };
        self.auth
            .start(&self.settings.auth_socket, conn, serial, first(serial))
    }

    fn take_auth(&self, conn: usize) -> Option<(u64, StepResult)> {
        self.state.borrow_mut().auth_results.remove(&conn)
    }

    fn hold_back(&self, conn: usize) {
        self.state.borrow_mut().backlog.insert(conn);
        self.ticker.arm();
    }

    /// Counts a logged-in session of `user`; false (not counted) when over the limit.
    fn user_arrive(&self, user: &str) -> bool {
        let mut st = self.state.borrow_mut();
        let n = st.per_user.entry(user.to_owned()).or_insert(0);
        let limit = self.settings.user_limit;
        if limit > 0 && *n >= limit {
            if *n == 0 {
                st.per_user.remove(user);
            }
            return false;
        }
        *n += 1;
        true
    }

    fn user_leave(&self, user: &str) {
        let mut st = self.state.borrow_mut();
        if let Some(n) = st.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_user.remove(user);
            }
        }
    }

    fn ip_leave(&self, ip: IpAddr) {
        let mut st = self.state.borrow_mut();
        if let Some(n) = st.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_ip.remove(&ip);
            }
        }
    }
}

/// The pop3d service.
pub struct Pop3Service {
    shared: Rc<Shared>,
    tls: Option<Arc<TlsConfig>>,
}

impl Pop3Service {
    pub fn new(shared: Shared, tls: Option<Arc<TlsConfig>>) -> Pop3Service {
        Pop3Service {
            shared: Rc::new(shared),
            tls,
        }
    }
}

impl MultiService for Pop3Service {
    type Conn = Pop3Conn;

    fn connect(&mut self, peer: Peer, id: usize) -> Option<Pop3Conn> {
        let ip = match peer {
            Peer::Tcp(a) => a.ip(),
            Peer::Unix => IpAddr::from([127, 0, 0, 1]),
        };
        let count = {
            let mut st = self.shared.state.borrow_mut();
            let n = st.per_ip.entry(ip).or_insert(0);
            *n += 1;
            *n
        };
        let limit = self.shared.settings.client_limit_per_ip;
        let refused = limit > 0 && count > limit;
        Some(Pop3Conn::new(Rc::clone(&self.shared), id, ip, refused))
    }

    fn extra_wake_fds(&self) -> Vec<RawFd> {
        vec![
            self.shared.auth.wake_fd(),
            self.shared.ticker.read.as_raw_fd(),
        ]
    }

    fn woken(&mut self) -> Vec<usize> {
        let mut ids = Vec::new();
        for (conn, serial, result) in self.shared.auth.take() {
            self.shared
                .state
                .borrow_mut()
                .auth_results
                .insert(conn, (serial, result));
            ids.push(conn);
        }
        self.shared.ticker.drain();
        {
            let mut st = self.shared.state.borrow_mut();
            ids.extend(st.backlog.drain());
            self.shared.ticker.armed.store(false, Ordering::Release);
        }
        ids
    }

    fn disconnected(&mut self, id: usize) {
        let mut st = self.shared.state.borrow_mut();
        st.auth_results.remove(&id);
        st.backlog.remove(&id);
    }

    fn max_clients(&self) -> usize {
        self.shared.settings.max_clients
    }

    fn honours_max_use(&self) -> bool {
        // A per-user process cannot serve a second user.
        self.shared.settings.per_user.is_some()
    }

    fn tls_config(&self) -> Option<Arc<TlsConfig>> {
        self.tls.clone()
    }

    fn implicit_tls(&self) -> bool {
        self.shared.settings.tls.wrapper
    }
}

/// One POP3 connection.
pub struct Pop3Conn {
    shared: Rc<Shared>,
    id: usize,
    ip: IpAddr,
    session: Session,
    refused: bool,
    exchange: Option<Exchange>,
    mechanism: String,
    store: Option<Store>,
    /// The logged-in user, counted in the per-user limit.
    user: Option<String>,
    auth_attempts: u32,
    started: Instant,
    /// Output back-pressure: commands wait until the ticker wakes the connection.
    held: bool,
    /// The end of the session has been logged.
    logged_end: bool,
}

impl Pop3Conn {
    fn new(shared: Rc<Shared>, id: usize, ip: IpAddr, refused: bool) -> Pop3Conn {
        let mut cfg = shared.proto.clone();
        cfg.secured = ip.is_loopback();
        cfg.tls_active = shared.settings.tls.wrapper;
        // RFC 1939's `<process-ID.clock@hostname>`, with the connection number so that
        // two clients of this process in one second never share a timestamp.
        cfg.apop_timestamp = shared.apop_host.as_ref().map(|h| {
            let clock = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            format!("<{}.{id}.{clock}@{h}>", std::process::id())
        });
        Pop3Conn {
            session: Session::new(cfg),
            shared,
            id,
            ip,
            refused,
            exchange: None,
            mechanism: String::new(),
            store: None,
            user: None,
            auth_attempts: 0,
            started: Instant::now(),
            held: false,
            logged_end: false,
        }
    }

    fn lip(&self) -> String {
        self.shared
            .local_ip
            .map(|i| format!(", lip={i}"))
            .unwrap_or_default()
    }

    /// Runs the session until it needs input, waits for the driver, or closes.
    fn run(&mut self, out: &mut Vec<u8>) -> Flow {
        loop {
            if out.len() >= OUTPUT_HIGH {
                self.held = true;
                self.shared.hold_back(self.id);
                return Flow::Continue;
            }
            match self.session.next(out) {
                Step::NeedInput | Step::Wait => return Flow::Continue,
                Step::Close => {
                    self.log_end(None);
                    return Flow::Close;
                }
                Step::Event(ev) => {
                    if let Some(flow) = self.event(ev, out) {
                        return flow;
                    }
                }
            }
        }
    }

    fn event(&mut self, ev: Event, out: &mut Vec<u8>) -> Option<Flow> {
        match ev {
            Event::Authenticate {
                mechanism, initial, ..
            } => {
                self.auth_attempts += 1;
                self.mechanism = mechanism.clone();
                let secured = self.session.tls_active() || self.ip.is_loopback();
                let client_address = self.ip.to_string();
                self.exchange =
                    Some(
                        self.shared
                            .auth_start(self.id, |serial| AuthRequest::Start {
                                id: serial,
                                service: "pop3".to_owned(),
                                mechanism,
                                initial: initial.map(|s| s.0),
                                client_address,
                                secured,
                                channel_binding: None,
                            }),
                    );
            }
            Event::AuthResponse { response } => {
                let sent = self.exchange.as_ref().is_some_and(|x| {
                    x.send(AuthRequest::Continue {
                        id: x.serial,
                        response: response.0,
                    })
                });
                if !sent {
                    // The helper is gone; its failure (if any) arrives through the queue.
                    if self.exchange.is_none() {
                        self.session.login_failed(
                            &LoginFailure::Temporary("Temporary authentication failure.".into()),
                            out,
                        );
                    }
                }
            }
            Event::StartTls => return Some(Flow::StartTls),
            Event::Retrieve { msg, .. } => {
                let content = match &self.store {
                    Some(s) => s.read(msg),
                    None => Err("No such message.".to_owned()),
                };
                match &content {
                    Ok(d) => self.session.message(Ok(d), out),
                    Err(e) => self.session.message(Err(e), out),
                }
            }
            Event::Update { deleted } => {
                let result = match self.store.as_mut() {
                    Some(s) => s.update(&deleted),
                    None => Ok(0),
                };
                match &result {
                    Ok(n) => self.session.updated(Ok(*n), out),
                    Err(e) => {
                        oxipost_log::warning!(
                            "pop3({}): UPDATE failed: {e}",
                            self.user.as_deref().unwrap_or("")
                        );
                        self.session.updated(Err(e), out)
                    }
                }
                // Release the mailbox before the goodbye reaches the client.
                self.store = None;
                self.log_end(Some("Logged out"));
            }
        }
        None
    }

    /// An answer from the authentication service.
    fn auth_result(&mut self, serial: u64, result: StepResult, out: &mut Vec<u8>) {
        if self.exchange.as_ref().map(|x| x.serial) != Some(serial) {
            return;
        }
        match result {
            Ok(AuthReply::Challenge { data, .. }) => self.session.challenge(&data, out),
            Ok(AuthReply::Success { user, .. }) => {
                self.exchange = None;
                self.login(user, out);
            }
            Ok(AuthReply::Failure {
                temporary, reason, ..
            }) => {
                self.exchange = None;
                let why = if temporary {
                    LoginFailure::Temporary("Temporary authentication failure.".into())
                } else {
                    LoginFailure::Auth
                };
                oxipost_log::info!(
                    "pop3-login: authentication failed ({}): user=<{}>, method={}, rip={}{}",
                    clean(&reason),
                    clean(self.session.user_hint().unwrap_or("")),
                    self.mechanism,
                    self.ip,
                    self.lip()
                );
                self.session.login_failed(&why, out);
            }
            Ok(_) => {
                self.exchange = None;
                self.session.login_failed(
                    &LoginFailure::Temporary("Temporary authentication failure.".into()),
                    out,
                );
            }
            Err(e) => {
                self.exchange = None;
                oxipost_log::warning!("pop3-login: authentication service: {}", clean(&e));
                self.session.login_failed(
                    &LoginFailure::Temporary("Temporary authentication failure.".into()),
                    out,
                );
            }
        }
    }

    /// Authenticated: check the per-user limit, open and lock the mailbox.
    fn login(&mut self, info: UserInfo, out: &mut Vec<u8>) {
        let name = info.user.clone();
        if !self.shared.user_arrive(&name) {
            oxipost_log::info!(
                "pop3-login: Maximum number of connections exceeded: user=<{}>, rip={}",
                clean(&name),
                self.ip
            );
            self.session.login_failed(
                &LoginFailure::InUse("Maximum number of connections from user exceeded.".into()),
                out,
            );
            return;
        }
        let s = &self.shared.settings;
        if let Some(owner) = s.per_user {
            // Become the user for good before touching the mailbox (uid 0 never).
            let id = oxipost_daemon::privs::login_identity(info.uid, info.gid, owner);
            if let Err(e) = oxipost_daemon::privs::become_user(&id) {
                self.shared.user_leave(&name);
                oxipost_log::warning!(
                    "pop3({}): cannot switch to uid {} gid {}: {e}",
                    clean(&name),
                    id.uid,
                    id.gid
                );
                self.session
                    .login_failed(&LoginFailure::Temporary("Couldn't open INBOX.".into()), out);
                return;
            }
        }
        let spec = if s.mail_location.is_empty() {
            info.mail.as_str()
        } else {
            s.mail_location.as_str()
        };
        let opened = Location::resolve(spec, &name, &info.home, &s.spool_directory)
            .map_err(OpenError::Failed)
            .and_then(|loc| Store::open(&loc, &s.lock));
        match opened {
            Ok((store, messages)) => {
                self.store = Some(store);
                self.user = Some(name.clone());
                self.session.logged_in(messages, out);
                oxipost_log::info!(
                    "pop3-login: Login: user=<{}>, method={}, rip={}{}, mpid={}{}",
                    clean(&name),
                    self.mechanism,
                    self.ip,
                    self.lip(),
                    std::process::id(),
                    if self.session.tls_active() {
                        ", TLS"
                    } else {
                        ""
                    }
                );
            }
            Err(e) => {
                self.shared.user_leave(&name);
                let why = match e {
                    OpenError::InUse => {
                        oxipost_log::info!(
                            "pop3({}): Couldn't open INBOX: Mailbox is locked by another session, rip={}",
                            clean(&name),
                            self.ip
                        );
                        LoginFailure::InUse("Mailbox is locked by another POP3 session.".into())
                    }
                    OpenError::Failed(why) => {
                        oxipost_log::warning!(
                            "pop3({}): Couldn't open INBOX: {}",
                            clean(&name),
                            clean(&why)
                        );
                        LoginFailure::Temporary("Couldn't open INBOX.".into())
                    }
                };
                self.session.login_failed(&why, out);
            }
        }
    }

    /// Logs the end of the session once: Dovecot's `Disconnected` lines.
    fn log_end(&mut self, reason: Option<&str>) {
        if self.logged_end {
            return;
        }
        self.logged_end = true;
        match &self.user {
            Some(user) => {
                let st = self.session.stats();
                oxipost_log::info!(
                    "pop3({}): Disconnected: {} top={}/{}, retr={}/{}, del={}/{}, size={}",
                    clean(user),
                    reason.unwrap_or("Connection closed"),
                    st.top_count,
                    st.top_bytes,
                    st.retr_count,
                    st.retr_bytes,
                    st.deleted,
                    st.messages,
                    st.size
                );
            }
            None => {
                let secs = self.started.elapsed().as_secs();
                let what = match (reason, self.auth_attempts) {
                    (Some(r), _) => r.to_owned(),
                    (None, 0) => format!("no auth attempts in {secs} secs"),
                    (None, n) => format!("auth failed, {n} attempts in {secs} secs"),
                };
                oxipost_log::info!(
                    "pop3-login: Disconnected ({what}): user=<{}>, rip={}{}{}",
                    clean(self.session.user_hint().unwrap_or("")),
                    self.ip,
                    self.lip(),
                    if self.session.tls_active() {
                        ", TLS"
                    } else {
                        ""
                    }
                );
            }
        }
    }
}

impl Connection for Pop3Conn {
    fn start(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.refused {
            out.extend_from_slice(b"-ERR [SYS/TEMP] Too many connections from your address.\r\n");
            self.log_end(Some("connection limit"));
            return Flow::Close;
        }
        self.session.greet(out);
        Flow::Continue
    }

    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) -> Flow {
        self.session.feed(data);
        self.run(out)
    }

    fn timeout(&mut self, out: &mut Vec<u8>) -> Flow {
        self.session.timeout(out);
        self.log_end(Some("Disconnected for inactivity"));
        Flow::Close
    }

    fn timeout_after(&self) -> Duration {
        self.shared.settings.timeout
    }

    fn wake(&mut self, out: &mut Vec<u8>) -> Flow {
        if let Some((serial, result)) = self.shared.take_auth(self.id) {
            self.auth_result(serial, result, out);
        }
        if self.held {
            // Still more than half the limit unsent: look again at the next tick.
            if out.len() > OUTPUT_HIGH / 2 {
                self.shared.hold_back(self.id);
                return Flow::Continue;
            }
            self.held = false;
        }
        self.run(out)
    }

    fn drained(&mut self, out: &mut Vec<u8>) -> Flow {
        // Everything held back is written: go on at once rather than at the next tick.
        if !self.held {
            return Flow::Continue;
        }
        self.held = false;
        self.run(out)
    }

    fn wants_input(&self) -> bool {
        !self.held && self.session.wants_input()
    }

    fn lost(&mut self, why: &str) {
        let why = if why == "lost connection" {
            "Connection closed".to_owned()
        } else {
            format!("Connection closed: {}", clean(why))
        };
        self.log_end(Some(&why));
    }

    fn tls_established(&mut self, _info: &TlsInfo, out: &mut Vec<u8>) -> Flow {
        self.session.tls_started();
        self.run(out)
    }

    fn tls_failed(&mut self, why: &str) {
        self.log_end(Some(&format!("TLS handshaking failed: {}", clean(why))));
    }
}

impl Drop for Pop3Conn {
    fn drop(&mut self) {
        self.log_end(None);
        self.store = None;
        if let Some(u) = self.user.take() {
            self.shared.user_leave(&u);
        }
        self.shared.ip_leave(self.ip);
    }
}

/// Peer text for a log line: printable ASCII only, bounded.
fn clean(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

//! The process-wide part of imapd (the [`MultiService`]: the authentication result
//! queue, the inotify watcher shared by every session of the process) and one
//! connection's adapter ([`ImapConn`]) between the skeleton and the [`Session`].
//!
//! Everything runs on the skeleton's one event-loop thread; login helper threads talk
//! through a queue and a wake-up pipe. The watcher's descriptor is one more wake-up
//! descriptor: a delivery into a selected mailbox wakes exactly the sessions that have it
//! selected, and an idling one reports the change at once (no polling).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxipost_daemon::{Connection, Flow, MultiService, Peer, TlsInfo};
use oxipost_ipc::auth::{AuthReply, AuthRequest};
use oxipost_store::notify::Watcher;
use oxipost_tls::rustls::ServerConfig as TlsConfig;

use crate::auth::{AuthResults, Exchange, StepResult};
use crate::session::{Config, Event, Session, Step};
use crate::settings::{Settings, maildir_of};

/// State shared by all sessions of this process.
pub struct Shared {
    pub settings: Settings,
    proto: Config,
    auth: AuthResults,
    state: RefCell<State>,
}

struct State {
    auth_results: HashMap<usize, (u64, StepResult)>,
    next_exchange: u64,
    watcher: Option<Watcher>,
    /// Mailbox directory → the connections that have it selected.
    watching: HashMap<PathBuf, HashSet<usize>>,
    /// Connections whose mailbox changed since they last looked.
    changed: HashSet<usize>,
}

impl Shared {
    pub fn new(
        settings: Settings,
        mechanisms: Vec<String>,
        tls_offered: bool,
    ) -> Result<Shared, String> {
        let auth = AuthResults::new().map_err(|e| format!("auth result pipe: {e}"))?;
        let watcher = match Watcher::new() {
            Ok(w) => Some(w),
            Err(e) => {
                oxipost_log::warning!(
                    "inotify unavailable, IDLE reports changes only on NOOP: {e}"
                );
                None
            }
        };
        let proto = Config {
            max_line: settings.max_line,
            max_literal: settings.max_literal,
            starttls: tls_offered && !settings.tls.wrapper,
            tls_active: false,
            login_requires_tls: settings.tls.required,
            secured: false,
            mechanisms,
            login_attempts: settings.login_attempts,
        };
        Ok(Shared {
            settings,
            proto,
            auth,
            state: RefCell::new(State {
                auth_results: HashMap::new(),
                next_exchange: 0,
                watcher,
                watching: HashMap::new(),
                changed: HashSet::new(),
            }),
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

    fn watch(&self, conn: usize, old: Option<&PathBuf>, new: Option<&PathBuf>) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        if let Some(o) = old {
            if let Some(w) = st.watcher.as_mut() {
                w.unwatch(o);
            }
            if let Some(set) = st.watching.get_mut(o) {
                set.remove(&conn);
                if set.is_empty() {
                    st.watching.remove(o);
                }
            }
        }
        if let Some(n) = new {
            if let Some(w) = st.watcher.as_mut()
                && let Err(e) = w.watch(n)
            {
                oxipost_log::warning!("inotify watch {}: {e}", n.display());
            }
            st.watching.entry(n.clone()).or_default().insert(conn);
        }
    }
}

/// The imapd service.
pub struct ImapService {
    shared: Rc<Shared>,
    tls: Option<Arc<TlsConfig>>,
}

impl ImapService {
    pub fn new(shared: Shared, tls: Option<Arc<TlsConfig>>) -> ImapService {
        ImapService {
            shared: Rc::new(shared),
            tls,
        }
    }
}

impl MultiService for ImapService {
    type Conn = ImapConn;

    fn connect(&mut self, peer: Peer, id: usize) -> Option<ImapConn> {
        let ip = match peer {
            Peer::Tcp(a) => a.ip(),
            Peer::Unix => IpAddr::from([127, 0, 0, 1]),
        };
        Some(ImapConn::new(Rc::clone(&self.shared), id, ip))
    }

    fn extra_wake_fds(&self) -> Vec<RawFd> {
        let mut v = vec![self.shared.auth.wake_fd()];
        if let Some(w) = &self.shared.state.borrow().watcher {
            v.push(w.fd());
        }
        v
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
        let mut st = self.shared.state.borrow_mut();
        let st = &mut *st;
        let roots = st
            .watcher
            .as_mut()
            .map(Watcher::changed)
            .unwrap_or_default();
        for r in roots {
            if let Some(conns) = st.watching.get(&r) {
                for &c in conns {
                    st.changed.insert(c);
                    ids.push(c);
                }
            }
        }
        ids
    }

    fn disconnected(&mut self, id: usize) {
        let mut st = self.shared.state.borrow_mut();
        st.auth_results.remove(&id);
        st.changed.remove(&id);
    }

    fn honours_max_use(&self) -> bool {
        // A per-user process cannot serve a second user.
        self.shared.settings.per_user.is_some()
    }

    fn max_clients(&self) -> usize {
        self.shared.settings.max_clients
    }

    fn tls_config(&self) -> Option<Arc<TlsConfig>> {
        self.tls.clone()
    }

    fn implicit_tls(&self) -> bool {
        self.shared.settings.tls.wrapper
    }
}

/// One IMAP connection.
pub struct ImapConn {
    shared: Rc<Shared>,
    id: usize,
    ip: IpAddr,
    session: Session,
    exchange: Option<Exchange>,
    mechanism: String,
    user: Option<String>,
    /// The mailbox directory registered with the watcher.
    watched: Option<PathBuf>,
    /// The locked user+IP and per-IP connection slots, released when the connection goes.
    _slot: Option<std::fs::File>,
    _ip_slot: Option<std::fs::File>,
    started: Instant,
}

impl ImapConn {
    fn new(shared: Rc<Shared>, id: usize, ip: IpAddr) -> ImapConn {
        let mut cfg = shared.proto.clone();
        cfg.secured = ip.is_loopback();
        cfg.tls_active = shared.settings.tls.wrapper;
        ImapConn {
            session: Session::new(cfg),
            shared,
            id,
            ip,
            exchange: None,
            mechanism: String::new(),
            user: None,
            watched: None,
            _slot: None,
            _ip_slot: None,
            started: Instant::now(),
        }
    }

    fn run(&mut self, out: &mut Vec<u8>) -> Flow {
        let flow = loop {
            match self.session.next(out) {
                Step::NeedInput | Step::Wait => break Flow::Continue,
                Step::Close => break Flow::Close,
                Step::Event(ev) => {
                    if let Some(f) = self.event(ev, out) {
                        break f;
                    }
                }
            }
        };
        let now = self.session.selected_root();
        if now != self.watched {
            self.shared
                .watch(self.id, self.watched.as_ref(), now.as_ref());
            self.watched = now;
        }
        flow
    }

    fn event(&mut self, ev: Event, out: &mut Vec<u8>) -> Option<Flow> {
        match ev {
            Event::StartTls => return Some(Flow::StartTls),
            Event::Authenticate { mechanism, initial } => {
                self.mechanism = mechanism.clone();
                let secured = self.session.tls_active() || self.ip.is_loopback();
                let client_address = self.ip.to_string();
                self.exchange =
                    Some(
                        self.shared
                            .auth_start(self.id, |serial| AuthRequest::Start {
                                id: serial,
                                service: "imap".to_owned(),
                                mechanism,
                                initial,
                                client_address,
                                secured,
                                channel_binding: None,
                            }),
                    );
            }
            Event::AuthResponse(response) => {
                let sent = self.exchange.as_ref().is_some_and(|x| {
                    x.send(AuthRequest::Continue {
                        id: x.serial,
                        response,
                    })
                });
                if !sent && self.exchange.is_none() && self.session.login_failed(true, out) {
                    return Some(Flow::Close);
                }
            }
        }
        None
    }

    fn auth_result(&mut self, serial: u64, result: StepResult, out: &mut Vec<u8>) {
        if self.exchange.as_ref().map(|x| x.serial) != Some(serial) {
            return;
        }
        match result {
            Ok(AuthReply::Challenge { data, .. }) => self.session.challenge(&data, out),
            Ok(AuthReply::Success { user, .. }) => {
                self.exchange = None;
                let spec = if self.shared.settings.mail_location.is_empty() {
                    user.mail.clone()
                } else {
                    self.shared.settings.mail_location.clone()
                };
                let limit = self.shared.settings.max_userip;
                if limit > 0 {
                    match userip_slot(&self.shared.settings.conn_dir, &user.user, self.ip, limit) {
                        Ok(Some(f)) => self._slot = Some(f),
                        Ok(None) => {
                            oxipost_log::info!(
                                "imap-login: Maximum number of connections from user+IP exceeded (imapd_max_userip_connections={limit}): user=<{}>, rip={}",
                                clean(&user.user),
                                self.ip
                            );
                            self.session.login_refused(
                                &format!("Maximum number of connections from user+IP exceeded (imapd_max_userip_connections={limit})."),
                                out,
                            );
                            return;
                        }
                        // Fail open: a broken slot directory must not lock everyone out.
                        Err(e) => oxipost_log::warning!(
                            "imap: connection slots in {}: {e}",
                            self.shared.settings.conn_dir.display()
                        ),
                    }
                }
                if let Some(owner) = self.shared.settings.per_user {
                    // Become the user for good before touching the mailbox (uid 0 never).
                    let id = oxipost_daemon::privs::login_identity(user.uid, user.gid, owner);
                    if let Err(e) = oxipost_daemon::privs::become_user(&id) {
                        oxipost_log::warning!(
                            "imap({}): cannot switch to uid {} gid {}: {e}",
                            clean(&user.user),
                            id.uid,
                            id.gid
                        );
                        self.session.login_failed(true, out);
                        return;
                    }
                }
                match maildir_of(&spec, &user.user, &user.home) {
                    Ok(root) => {
                        oxipost_log::info!(
                            "imap-login: Login: user=<{}>, method={}, rip={}, mpid={}{}",
                            clean(&user.user),
                            self.mechanism,
                            self.ip,
                            std::process::id(),
                            if self.session.tls_active() {
                                ", TLS"
                            } else {
                                ""
                            }
                        );
                        self.user = Some(user.user.clone());
                        self.session.logged_in(&user.user, root, out);
                    }
                    Err(e) => {
                        oxipost_log::warning!("imap({}): {}", clean(&user.user), clean(&e));
                        self.session.login_failed(true, out);
                    }
                }
            }
            Ok(AuthReply::Failure {
                temporary, reason, ..
            }) => {
                self.exchange = None;
                oxipost_log::info!(
                    "imap-login: authentication failed ({}): user=<{}>, method={}, rip={}",
                    clean(&reason),
                    clean(self.session.user_hint().unwrap_or("")),
                    self.mechanism,
                    self.ip
                );
                self.session.login_failed(temporary, out);
            }
            Ok(_) => {
                self.exchange = None;
                self.session.login_failed(true, out);
            }
            Err(e) => {
                self.exchange = None;
                oxipost_log::warning!("imap-login: authentication service: {}", clean(&e));
                self.session.login_failed(true, out);
            }
        }
    }
}

impl Connection for ImapConn {
    fn start(&mut self, out: &mut Vec<u8>) -> Flow {
        let limit = self.shared.settings.max_per_ip;
        if limit > 0 {
            // The empty user name's slots count every connection from the address.
            match userip_slot(&self.shared.settings.conn_dir, "", self.ip, limit) {
                Ok(Some(f)) => self._ip_slot = Some(f),
                Ok(None) => {
                    oxipost_log::info!(
                        "imap-login: Maximum number of connections from IP exceeded (imapd_client_connection_limit={limit}): rip={}",
                        self.ip
                    );
                    out.extend_from_slice(
                        b"* BYE [UNAVAILABLE] Too many connections from your address.\r\n",
                    );
                    return Flow::Close;
                }
                Err(e) => oxipost_log::warning!(
                    "imap: connection slots in {}: {e}",
                    self.shared.settings.conn_dir.display()
                ),
            }
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
        Flow::Close
    }

    fn timeout_after(&self) -> Duration {
        self.shared.settings.timeout
    }

    fn wake(&mut self, out: &mut Vec<u8>) -> Flow {
        let auth = self.shared.state.borrow_mut().auth_results.remove(&self.id);
        if let Some((serial, result)) = auth {
            self.auth_result(serial, result, out);
        }
        let changed = self.shared.state.borrow_mut().changed.remove(&self.id);
        if changed {
            self.session.changed(out);
        }
        self.run(out)
    }

    fn wants_input(&self) -> bool {
        self.session.wants_input()
    }

    fn drained(&mut self, out: &mut Vec<u8>) -> Flow {
        self.run(out)
    }

    fn lost(&mut self, why: &str) {
        if let Some(u) = &self.user {
            oxipost_log::info!("imap({}): Disconnected: {}", clean(u), clean(why));
        } else {
            oxipost_log::info!(
                "imap-login: Disconnected ({} after {} secs): rip={}",
                clean(why),
                self.started.elapsed().as_secs(),
                self.ip
            );
        }
    }

    fn tls_established(&mut self, _info: &TlsInfo, out: &mut Vec<u8>) -> Flow {
        self.session.tls_started();
        self.run(out)
    }
}

impl Drop for ImapConn {
    fn drop(&mut self) {
        if self.watched.is_some() {
            self.shared.watch(self.id, self.watched.as_ref(), None);
        }
    }
}

/// One of `limit` lock files for (user, IP) under `dir`, locked (flock, so across every
/// imapd process; the kernel drops the lock when the descriptor closes, even on a crash),
/// or `None` when all are taken.
fn userip_slot(
    dir: &std::path::Path,
    user: &str,
    ip: IpAddr,
    limit: u32,
) -> std::io::Result<Option<std::fs::File>> {
    std::fs::create_dir_all(dir)?;
    // FNV-1a of the user name: any user name gives a safe file name.
    let h = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let ip = ip.to_string().replace(':', "_");
    let key = if user.is_empty() {
        format!("ip-{ip}")
    } else {
        format!("{h:016x}-{ip}")
    };
    for n in 0..limit {
        let f = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{key}.{n}")))?;
        match f.try_lock() {
            Ok(()) => return Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    Ok(None)
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

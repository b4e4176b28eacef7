//! The process-wide part of smtpd: the [`MultiService`] that creates sessions, the group
//! committer all sessions share (one flusher makes many messages durable per round), the
//! per-client connection counts, and the qmgr trigger.
//!
//! Everything runs on the skeleton's one event-loop thread (the committer's flusher is the
//! only other thread and talks through its completion queue), so the shared state is a
//! `RefCell` behind an `Rc`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use oxipost_cleanup::CleanupSettings;
use oxipost_daemon::proto::TRIGGER_SCAN_INCOMING;
use oxipost_daemon::{MultiService, Peer};
use oxipost_queue::{
    CommitterOptions, GroupCommitter, Layout, PreparedFile, Queue, QueueError, QueueId,
};
use oxipost_tls::rustls::ServerConfig as TlsConfig;

use crate::log::Client;
use crate::policy::in_mynetworks;
use crate::recipients::Recipients;
use crate::restrict::jobs::{JobResult, Jobs};
use crate::sasl::{AuthResults, Exchange, StepResult};
use crate::session::SmtpConn;
use crate::settings::Settings;

/// State shared by all sessions of this process.
pub struct Shared {
    pub settings: Settings,
    /// Cleanup's rewriting and checks, with their tables open.
    pub cleanup: Arc<CleanupSettings>,
    /// Virtual and relay recipient validity at RCPT.
    pub recipients: Recipients,
    pub layout: Layout,
    committer: GroupCommitter,
    auth: AuthResults,
    /// Restriction checks and client name lookups on helper threads.
    pub jobs: Jobs,
    /// `smtpd_milters` conversations on helper threads ([`crate::milter`]).
    pub milters: crate::milter::Runner,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    per_client: HashMap<IpAddr, usize>,
    next_token: u64,
    /// Commit token -> connection id waiting for it.
    waiting: HashMap<u64, usize>,
    /// Commit tokens of messages that header/body checks put on hold.
    hold: HashSet<u64>,
    /// Results ready for their connections.
    results: HashMap<usize, Result<QueueId, QueueError>>,
    /// SASL step results ready for their connections: (exchange serial, result).
    auth_results: HashMap<usize, (u64, StepResult)>,
    next_exchange: u64,
    /// Finished helper-thread jobs for their connections: (job serial, result).
    job_results: HashMap<usize, (u64, JobResult)>,
}

impl Shared {
    pub fn new(
        settings: Settings,
        cleanup: Arc<CleanupSettings>,
        recipients: Recipients,
    ) -> Result<Shared, String> {
        let layout = Layout::new(settings.queue.clone()).map_err(|e| e.to_string())?;
        let committer = GroupCommitter::start(CommitterOptions::default())
            .map_err(|e| format!("start queue committer: {e}"))?;
        let auth = AuthResults::new().map_err(|e| format!("auth result pipe: {e}"))?;
        let jobs = Jobs::new().map_err(|e| format!("check result pipe: {e}"))?;
        let milters = crate::milter::Runner::new(Arc::clone(&settings.milters))
            .map_err(|e| format!("milter result pipe: {e}"))?;
        Ok(Shared {
            settings,
            cleanup,
            recipients,
            layout,
            committer,
            auth,
            jobs,
            milters,
            state: RefCell::new(State::default()),
        })
    }

    /// Hands a finished message to the committer; the connection is woken with the result.
    /// `hold`: once durable, the file moves from `incoming/` to `hold/` before qmgr is
    /// triggered (header/body checks said `HOLD`).
    pub fn submit(&self, file: PreparedFile, conn: usize, hold: bool) -> Result<(), QueueError> {
        let mut st = self.state.borrow_mut();
        st.next_token = st.next_token.wrapping_add(1);
        let token = st.next_token;
        self.committer.submit(file, token)?;
        st.waiting.insert(token, conn);
        if hold {
            st.hold.insert(token);
        }
        Ok(())
    }

    /// The commit result for `conn`, once it has arrived.
    pub fn take_result(&self, conn: usize) -> Option<Result<QueueId, QueueError>> {
        self.state.borrow_mut().results.remove(&conn)
    }

    /// Starts a SASL exchange with the authentication service for `conn`.
    pub fn auth_start(
        &self,
        conn: usize,
        first: impl FnOnce(u64) -> oxipost_ipc::auth::AuthRequest,
    ) -> Exchange {
        let serial = {
            let mut st = self.state.borrow_mut();
            st.next_exchange = st.next_exchange.wrapping_add(1);
            st.next_exchange
        };
        self.auth
            .start(&self.settings.sasl.socket, conn, serial, first(serial))
    }

    /// The SASL step result for `conn`, once it has arrived.
    pub fn take_auth(&self, conn: usize) -> Option<(u64, StepResult)> {
        self.state.borrow_mut().auth_results.remove(&conn)
    }

    /// The helper-thread result for `conn`, once it has arrived.
    pub fn take_job(&self, conn: usize) -> Option<(u64, JobResult)> {
        self.state.borrow_mut().job_results.remove(&conn)
    }

    /// Counts a new connection from `ip`; returns the count including it.
    fn arrive(&self, ip: IpAddr) -> usize {
        let mut st = self.state.borrow_mut();
        let n = st.per_client.entry(ip).or_insert(0);
        *n += 1;
        *n
    }

    /// A connection from `ip` is gone.
    pub fn leave(&self, ip: IpAddr) {
        let mut st = self.state.borrow_mut();
        if let Some(n) = st.per_client.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_client.remove(&ip);
            }
        }
    }

    /// Forgets everything owed to a closed connection, so that a later connection reusing
    /// its id never sees its result.
    fn forget(&self, conn: usize) {
        let mut st = self.state.borrow_mut();
        st.waiting.retain(|_, c| *c != conn);
        st.results.remove(&conn);
        st.auth_results.remove(&conn);
        st.job_results.remove(&conn);
        self.milters.forget(conn);
    }
}

/// The smtpd service.
pub struct SmtpdService {
    shared: Rc<Shared>,
    tls: Option<Arc<TlsConfig>>,
}

impl SmtpdService {
    pub fn new(shared: Shared, tls: Option<Arc<TlsConfig>>) -> SmtpdService {
        SmtpdService {
            shared: Rc::new(shared),
            tls,
        }
    }
}

impl MultiService for SmtpdService {
    type Conn = SmtpConn;

    fn connect(&mut self, peer: Peer, id: usize) -> Option<SmtpConn> {
        let mut client = match peer {
            Peer::Tcp(a) => Client::new(a.ip(), a.port()),
            // A local (unix-socket) client, e.g. a test harness: treat as localhost.
            Peer::Unix => Client::new(IpAddr::from([127, 0, 0, 1]), 0),
        };
        if self.shared.milters.enabled() {
            client.daemon = oxipost_daemon::local_addr();
        }
        let count = self.shared.arrive(client.ip);
        let limit = self.shared.settings.connection_limit;
        // As Postfix, clients in mynetworks are exempt (smtpd_client_event_limit_exceptions).
        let over = limit > 0 && count > limit && !in_mynetworks(&self.shared.settings, client.ip);
        let refused = over.then_some(count);
        Some(SmtpConn::new(Rc::clone(&self.shared), id, client, refused))
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.shared.committer.notify_fd().as_raw_fd())
    }

    fn extra_wake_fds(&self) -> Vec<RawFd> {
        vec![
            self.shared.auth.wake_fd(),
            self.shared.jobs.wake_fd(),
            self.shared.milters.wake_fd(),
        ]
    }

    fn tls_config(&self) -> Option<Arc<TlsConfig>> {
        self.tls.clone()
    }

    fn implicit_tls(&self) -> bool {
        self.shared.settings.tls.wrapper
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
        for (conn, serial, result) in self.shared.jobs.take() {
            self.shared
                .state
                .borrow_mut()
                .job_results
                .insert(conn, (serial, result));
            ids.push(conn);
        }
        ids.extend(self.shared.milters.woken());
        let mut queued = false;
        let completions = self.shared.committer.take_completions();
        {
            let mut st = self.shared.state.borrow_mut();
            for c in completions {
                queued |= c.result.is_ok();
                if st.hold.remove(&c.token)
                    && let Ok(id) = &c.result
                    && let Err(e) = self.shared.layout.move_to(id, Queue::Incoming, Queue::Hold)
                {
                    oxipost_log::warning!("{id}: cannot move to the hold queue: {e}");
                }
                match st.waiting.remove(&c.token) {
                    Some(conn) => {
                        st.results.insert(conn, c.result);
                        ids.push(conn);
                    }
                    None => {
                        if let Ok(id) = c.result {
                            // Durable, but its client left before hearing so: it may send
                            // the message again (a duplicate, as in every MTA).
                            oxipost_log::info!("{id}: client gone before the reply");
                        }
                    }
                }
            }
        }
        // One trigger per commit round, not per message.
        if queued {
            trigger(&self.shared.settings.qmgr_trigger, TRIGGER_SCAN_INCOMING);
        }
        ids
    }

    fn disconnected(&mut self, id: usize) {
        self.shared.forget(id);
    }
}

/// Writes one trigger byte to a unix stream socket without ever blocking; a missing or busy
/// qmgr is not an error (its periodic scan finds the mail).
pub fn trigger(path: &Path, byte: u8) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return;
    };
    let Ok(addr) = UnixAddr::new(path) else {
        return;
    };
    if connect(fd.as_raw_fd(), &addr).is_ok() {
        let _ = nix::unistd::write(&fd, &[byte]);
    }
}

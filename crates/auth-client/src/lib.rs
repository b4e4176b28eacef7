//! The client side of the suite's authentication service (`auth`, see
//! `oxipost_ipc::auth`), shared by pop3d and imapd.
//!
//! The protocol daemons never decode credentials: POP3 `USER`/`PASS` and IMAP `LOGIN` reach
//! the service as a `PLAIN` initial response built by the protocol core, and `AUTH` /
//! `AUTHENTICATE` data passes through as the client sent it. Each exchange runs on its own
//! short-lived helper thread holding one connection to the service, so that a slow password
//! hash or the service's brute-force delay never stalls the event loop that serves every
//! other session; results come back through a queue and a wake-up pipe (register it with
//! `oxipost_daemon::MultiService::extra_wake_fds`). The service down or failing is a
//! temporary error for the caller to answer, never an accept. smtpd's `sasl.rs` is the
//! same runner shaped for SMTP AUTH and could move here too.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxipost_ipc::auth::{AUTH_PROTOCOL, AUTH_VERSION, AuthReply, AuthRequest};
use oxipost_ipc::{Hello, read_frame, write_frame};

/// How long one request may wait for the service (covers its brute-force delay).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_RETRIES: u32 = 100;

/// The answer to one step of an exchange: the service's reply, or why there is none.
pub type StepResult = Result<AuthReply, String>;

/// Results from helper threads, and the pipe that wakes the event loop for them.
pub struct AuthResults {
    queue: Arc<Mutex<VecDeque<(usize, u64, StepResult)>>>,
    wake_read: OwnedFd,
    wake_write: Arc<OwnedFd>,
}

impl AuthResults {
    pub fn new() -> io::Result<AuthResults> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(io::Error::from)?;
        Ok(AuthResults {
            queue: Arc::new(Mutex::new(VecDeque::new())),
            wake_read: r,
            wake_write: Arc::new(w),
        })
    }

    pub fn wake_fd(&self) -> RawFd {
        self.wake_read.as_raw_fd()
    }

    /// Drains the wake pipe and returns every result that has arrived.
    pub fn take(&self) -> Vec<(usize, u64, StepResult)> {
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(self.wake_read.as_fd(), &mut buf), Ok(n) if n > 0) {}
        match self.queue.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Starts an exchange for connection `conn`; further steps go through the handle.
    pub fn start(&self, socket: &Path, conn: usize, serial: u64, first: AuthRequest) -> Exchange {
        let (tx, rx) = channel::<AuthRequest>();
        let _ = tx.send(first);
        let queue = Arc::clone(&self.queue);
        let wake = Arc::clone(&self.wake_write);
        let socket = socket.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("auth".into())
            .spawn(move || {
                exchange_thread(&socket, rx, |r| {
                    if let Ok(mut q) = queue.lock() {
                        q.push_back((conn, serial, r));
                    }
                    let _ = nix::unistd::write(wake.as_fd(), &[1]);
                })
            });
        if let Err(e) = spawned {
            if let Ok(mut q) = self.queue.lock() {
                q.push_back((conn, serial, Err(format!("cannot start auth thread: {e}"))));
            }
            let _ = nix::unistd::write(self.wake_write.as_fd(), &[1]);
        }
        Exchange { tx, serial }
    }
}

/// One SASL exchange in progress; dropping it ends the helper thread.
pub struct Exchange {
    tx: Sender<AuthRequest>,
    pub serial: u64,
}

impl Exchange {
    /// Sends the next step; false when the helper is gone (its failure is queued).
    pub fn send(&self, req: AuthRequest) -> bool {
        self.tx.send(req).is_ok()
    }
}

/// Connects to the service, retrying for a few seconds while no process accepts (master
/// replaces an auth process that reached `max_use`; meanwhile a connect fails with
/// `EAGAIN` or `ECONNREFUSED`). This runs on a helper thread, never on the event loop.
fn connect(socket: &Path) -> io::Result<UnixStream> {
    let mut tries = 0;
    let s = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e)
                if tries < CONNECT_RETRIES
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                    ) =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    };
    s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    s.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    let mut r = &s;
    Hello::expect(&mut r, AUTH_PROTOCOL, AUTH_VERSION)?;
    s.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(s)
}

fn exchange_thread(socket: &Path, rx: Receiver<AuthRequest>, report: impl Fn(StepResult)) {
    let stream = match connect(socket) {
        Ok(s) => s,
        Err(e) => {
            report(Err(format!("connect to {}: {e}", socket.display())));
            return;
        }
    };
    // One request at a time; the thread ends when the session drops its handle.
    while let Ok(req) = rx.recv() {
        let mut w = &stream;
        if let Err(e) = write_frame(&mut w, &req) {
            report(Err(format!("write to authentication service: {e}")));
            return;
        }
        let mut r = &stream;
        let reply = match read_frame::<_, AuthReply>(&mut r) {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err("authentication service closed the connection".to_owned()),
            Err(e) => Err(format!("read from authentication service: {e}")),
        };
        let done = !matches!(reply, Ok(AuthReply::Challenge { .. }));
        report(reply);
        if done {
            return;
        }
    }
}

/// The mechanisms to offer: asked of the service once at start (blocking, before serving).
/// When the service cannot be reached the usual `PLAIN LOGIN` are offered, and every
/// attempt then gets the temporary failure.
pub fn mechanisms(socket: &Path, service: &str) -> Vec<String> {
    offer(socket, service).0
}

/// [`mechanisms`], and whether POP3 `APOP` can work (plaintext passwords exist).
pub fn offer(socket: &Path, service: &str) -> (Vec<String>, bool) {
    let asked = (|| -> io::Result<(Vec<String>, bool)> {
        let s = connect(socket)?;
        s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let mut w = &s;
        write_frame(
            &mut w,
            &AuthRequest::Mechanisms {
                service: service.to_owned(),
                secured: true,
            },
        )?;
        let mut r = &s;
        match read_frame::<_, AuthReply>(&mut r)? {
            Some(AuthReply::Mechanisms { mechanisms, apop }) => Ok((mechanisms, apop)),
            _ => Err(io::Error::other("unexpected reply")),
        }
    })();
    match asked {
        Ok(m) => m,
        Err(e) => {
            oxipost_log::warning!(
                "SASL: cannot ask the authentication service {} for mechanisms: {e}",
                socket.display()
            );
            (vec!["PLAIN".to_owned(), "LOGIN".to_owned()], false)
        }
    }
}

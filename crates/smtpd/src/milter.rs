//! smtpd's side of the milter protocol (`smtpd_milters`): the configuration, a runner that
//! takes a finished transaction to the milters on a helper thread (milter calls block) and
//! wakes the event loop when they have decided, and the application of their verdict to the
//! queue file before it is committed and the client answered.
//!
//! While milters are configured (and `receive_override_options` does not say
//! `no_milters`), the message content of a transaction is held in memory instead of being
//! streamed to the queue file, so that header and body modifications can be applied before
//! it is written. The whole transaction — connect, HELO, MAIL, every RCPT, DATA, headers,
//! body, end of message — is replayed to each milter at end of data: a reject at any stage
//! refuses the message there (at `.`), not at the command it answered. Envelope changes
//! (add/delete recipient, change sender) rebuild the queue file with its envelope changed.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use oxipost_config::Config;
use oxipost_milter::{Family, MilterSettings, Transaction, Verdict};
use oxipost_queue::QueueWriter;

pub use oxipost_milter::edit::apply;
pub use oxipost_milter::queue::write_and_prepare;

/// Reads `smtpd_milters` and the `milter_*` parameters (empty list, or `no_milters` in
/// `receive_override_options`: no milters).
pub fn settings(cfg: &Config) -> Result<Arc<MilterSettings>, String> {
    let get = |n: &str| cfg.get(n).map_err(|e| format!("parameter {n}: {e}"));
    oxipost_milter::load("smtpd_milters", &get).map(Arc::new)
}

/// A finished message waiting for the milters: its queue file (envelope written, content
/// not yet), the access-table actions to record, and what the log lines need.
pub struct Held {
    pub writer: QueueWriter,
    pub actions: crate::restrict::Actions,
    pub hold: bool,
    pub sender: String,
    pub rcpts: Vec<String>,
}

/// A transaction as handed to the helper thread (owned).
pub struct Input {
    pub client_name: String,
    pub client_addr: String,
    pub client_port: u16,
    pub helo: Option<String>,
    pub sender: String,
    pub rcpts: Vec<String>,
    pub message: Vec<u8>,
    pub macros: HashMap<String, String>,
}

/// What the milters said, with the warnings to log.
pub struct Decision {
    pub verdict: Verdict,
    pub warnings: Vec<String>,
    /// The message the verdict is about (to be modified and written).
    pub message: Vec<u8>,
}

type Ready = Arc<Mutex<HashMap<usize, (u64, Decision)>>>;

/// Milter conversations on helper threads, and the pipe that wakes the event loop.
pub struct Runner {
    pub settings: Arc<MilterSettings>,
    ready: Ready,
    wake_read: OwnedFd,
    wake_write: Arc<OwnedFd>,
}

impl Runner {
    pub fn new(settings: Arc<MilterSettings>) -> io::Result<Runner> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(io::Error::from)?;
        Ok(Runner {
            settings,
            ready: Arc::new(Mutex::new(HashMap::new())),
            wake_read: r,
            wake_write: Arc::new(w),
        })
    }

    /// Whether transactions go to milters at all.
    pub fn enabled(&self) -> bool {
        !self.settings.milters.is_empty()
    }

    pub fn wake_fd(&self) -> RawFd {
        self.wake_read.as_raw_fd()
    }

    /// Drains the wake pipe; the connections whose decision is ready.
    pub fn woken(&self) -> Vec<usize> {
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(self.wake_read.as_fd(), &mut buf), Ok(n) if n > 0) {}
        self.ready
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The decision for `conn` if it is ready and is for `serial`.
    pub fn take(&self, conn: usize, serial: u64) -> Option<Decision> {
        let mut r = self.ready.lock().ok()?;
        match r.remove(&conn) {
            Some((s, d)) if s == serial => Some(d),
            _ => None,
        }
    }

    /// Forgets a closed connection's decision.
    pub fn forget(&self, conn: usize) {
        if let Ok(mut r) = self.ready.lock() {
            r.remove(&conn);
        }
    }

    /// Runs the transaction past the milters on a new thread.
    pub fn start(&self, conn: usize, serial: u64, input: Input) {
        let settings = Arc::clone(&self.settings);
        let ready = Arc::clone(&self.ready);
        let wake = Arc::clone(&self.wake_write);
        let job = move || {
            let d = decide(&settings, input);
            if let Ok(mut r) = ready.lock() {
                r.insert(conn, (serial, d));
            }
            let _ = nix::unistd::write(wake.as_fd(), &[1]);
        };
        let job = Arc::new(Mutex::new(Some(job)));
        let in_thread = Arc::clone(&job);
        let spawned = std::thread::Builder::new()
            .name("smtpd-milter".into())
            .spawn(move || {
                if let Some(j) = in_thread.lock().ok().and_then(|mut j| j.take()) {
                    j();
                }
            });
        if spawned.is_err()
            && let Some(j) = job.lock().ok().and_then(|mut j| j.take())
        {
            // No thread: run here (blocking this process, but never losing the message).
            j();
        }
    }
}

fn decide(settings: &MilterSettings, input: Input) -> Decision {
    let family = match input.client_addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => Family::Inet4 {
            port: input.client_port,
            addr: a.to_string(),
        },
        Ok(std::net::IpAddr::V6(a)) => Family::Inet6 {
            port: input.client_port,
            addr: a.to_string(),
        },
        Err(_) => Family::Unknown,
    };
    let macros = &input.macros;
    let lookup = |n: &str| macros.get(n).cloned();
    let t = Transaction {
        client_name: &input.client_name,
        family,
        helo: input.helo.as_deref(),
        mail: vec![format!("<{}>", input.sender)],
        rcpts: input.rcpts.iter().map(|r| vec![format!("<{r}>")]).collect(),
        message: &input.message,
        macros: &lookup,
    };
    let (verdict, warnings) = oxipost_milter::run(settings, &t);
    Decision {
        verdict,
        warnings,
        message: input.message,
    }
}

/// Splits `550 5.7.1 text` into its parts (a reply without an enhanced code gets one).
pub fn split_reply(reply: &str) -> (u16, String, String) {
    let mut it = reply.splitn(2, ' ');
    let code: u16 = it
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(451);
    let rest = it.next().unwrap_or("").trim();
    let (enh, text) = match rest.split_once(' ') {
        Some((e, t)) if e.split('.').count() == 3 && e.starts_with(['4', '5']) => {
            (e.to_string(), t.to_string())
        }
        _ => (
            if code >= 500 { "5.7.1" } else { "4.7.1" }.to_string(),
            rest.to_string(),
        ),
    };
    (code, enh, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split() {
        assert_eq!(
            split_reply("550 5.7.1 go away"),
            (550, "5.7.1".into(), "go away".into())
        );
        assert_eq!(
            split_reply("451 later"),
            (451, "4.7.1".into(), "later".into())
        );
        assert_eq!(split_reply("garbage").0, 451);
    }
}

//! smtpd's side of the milter protocol (`smtpd_milters`): the configuration, one
//! conversation thread per SMTP connection (milter calls block; the event loop must not),
//! and the application of the verdict at end of message to the queue file before it is
//! committed and the client answered.
//!
//! Each SMTP event — connect, HELO, MAIL, every RCPT, DATA, an unknown command — goes to
//! the connection's thread when it happens; input waits for the answer, which applies to
//! that command as in Postfix (a reject at RCPT refuses that recipient only, at MAIL the
//! transaction). RSET and a refused MAIL send ABORT without waiting.
//!
//! While milters are configured (and `receive_override_options` does not say
//! `no_milters`), the message content of a transaction is held in memory instead of being
//! streamed to the queue file, so that header and body modifications can be applied before
//! it is written; headers, body and end of message go to the milters at end of data.
//! Envelope changes (add/delete recipient, change sender) rebuild the queue file with its
//! envelope changed.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

use oxipost_config::Config;
use oxipost_milter::{Answer, Conversation, Family, MilterSettings, Verdict};
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

/// What the milters said about a message, with the warnings to log.
pub struct Decision {
    pub verdict: Verdict,
    pub warnings: Vec<String>,
    /// The message the verdict is about (to be modified and written).
    pub message: Vec<u8>,
}

/// A finished job of a connection's conversation thread.
pub enum Done {
    /// The answer to an SMTP event, with the warnings to log.
    Event(Answer, Vec<String>),
    /// The verdict on a message.
    Message(Decision),
}

/// Work for a conversation thread; `None`: nobody waits for the result.
type Job = Box<dyn FnOnce(&mut Conversation) -> Option<Done> + Send>;

type Ready = Arc<Mutex<HashMap<usize, (u64, Done)>>>;

/// The connections' conversation threads, and the pipe that wakes the event loop.
pub struct Runner {
    pub settings: Arc<MilterSettings>,
    ready: Ready,
    wake_read: OwnedFd,
    wake_write: Arc<OwnedFd>,
}

/// One connection's conversation thread. Dropping it ends the thread, which says QUIT to
/// the milters.
pub struct Handle {
    jobs: Sender<(u64, Job)>,
}

impl Handle {
    /// Queues a job whose result the connection waits for under `serial`.
    pub fn send(
        &self,
        serial: u64,
        job: impl FnOnce(&mut Conversation) -> Done + Send + 'static,
    ) -> bool {
        self.jobs
            .send((serial, Box::new(move |c| Some(job(c)))))
            .is_ok()
    }

    /// Queues a job nobody waits for (ABORT).
    pub fn post(&self, job: impl FnOnce(&mut Conversation) + Send + 'static) {
        let _ = self.jobs.send((
            0,
            Box::new(move |c| {
                job(c);
                None
            }),
        ));
    }
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

    /// Drains the wake pipe; the connections whose answer is ready.
    pub fn woken(&self) -> Vec<usize> {
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(self.wake_read.as_fd(), &mut buf), Ok(n) if n > 0) {}
        self.ready
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The answer for `conn` if it is ready and is for `serial`.
    pub fn take(&self, conn: usize, serial: u64) -> Option<Done> {
        let mut r = self.ready.lock().ok()?;
        match r.remove(&conn) {
            Some((s, d)) if s == serial => Some(d),
            _ => None,
        }
    }

    /// Forgets a closed connection's answer.
    pub fn forget(&self, conn: usize) {
        if let Ok(mut r) = self.ready.lock() {
            r.remove(&conn);
        }
    }

    /// Starts the conversation thread of connection `conn` (`None`: no thread could be
    /// made).
    pub fn open(&self, conn: usize) -> Option<Handle> {
        let (tx, rx) = channel::<(u64, Job)>();
        let settings = MilterSettings::clone(&self.settings);
        let ready = Arc::clone(&self.ready);
        let wake = Arc::clone(&self.wake_write);
        std::thread::Builder::new()
            .name("smtpd-milter".into())
            // One per connection: small stacks (the conversation keeps its data on the heap).
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut c = Conversation::new(settings);
                while let Ok((serial, job)) = rx.recv() {
                    if let Some(done) = job(&mut c) {
                        if let Ok(mut r) = ready.lock() {
                            r.insert(conn, (serial, done));
                        }
                        let _ = nix::unistd::write(wake.as_fd(), &[1]);
                    }
                }
                c.quit();
            })
            .ok()?;
        Some(Handle { jobs: tx })
    }
}

/// The client's address as the connect event gives it.
pub fn family(addr: &str, port: u16) -> Family {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => Family::Inet4 {
            port,
            addr: a.to_string(),
        },
        Ok(std::net::IpAddr::V6(a)) => Family::Inet6 {
            port,
            addr: a.to_string(),
        },
        Err(_) => Family::Unknown,
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

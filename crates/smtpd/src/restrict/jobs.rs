//! Helper threads for checks that may wait on the network (DNS, policy servers): the
//! event loop hands a closure to [`Jobs::spawn`], goes on serving other clients, and is
//! woken through a pipe ([`oxipost_daemon::MultiService::extra_wake_fds`]) when the result
//! is queued. Each job has a serial so that a late result for a connection that moved on
//! (or closed) is recognised and dropped.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use super::{Outcome, PeerStatus};

/// What a job produced.
#[derive(Debug)]
pub enum JobResult {
    /// A restriction check.
    Check(Outcome),
    /// The client's names: verified name, its status, PTR name, its status.
    Peer(String, PeerStatus, String, PeerStatus),
}

type Queue = Arc<Mutex<VecDeque<(usize, u64, JobResult)>>>;

/// Finished jobs and the pipe that announces them.
pub struct Jobs {
    queue: Queue,
    wake_read: OwnedFd,
    wake_write: Arc<OwnedFd>,
}

impl Jobs {
    pub fn new() -> io::Result<Jobs> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(io::Error::from)?;
        Ok(Jobs {
            queue: Arc::new(Mutex::new(VecDeque::new())),
            wake_read: r,
            wake_write: Arc::new(w),
        })
    }

    pub fn wake_fd(&self) -> RawFd {
        self.wake_read.as_raw_fd()
    }

    /// Drains the wake pipe and returns every finished job: (connection, serial, result).
    pub fn take(&self) -> Vec<(usize, u64, JobResult)> {
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(self.wake_read.as_fd(), &mut buf), Ok(n) if n > 0) {}
        match self.queue.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Runs `job` on a new thread; its result comes back tagged with `conn` and `serial`.
    /// When no thread can be started the job runs here (blocking, but never lost).
    pub fn spawn(
        &self,
        conn: usize,
        serial: u64,
        job: impl FnOnce() -> JobResult + Send + 'static,
    ) {
        let queue = Arc::clone(&self.queue);
        let wake = Arc::clone(&self.wake_write);
        let deliver = move |result: JobResult| {
            if let Ok(mut q) = queue.lock() {
                q.push_back((conn, serial, result));
            }
            let _ = nix::unistd::write(wake.as_fd(), &[1]);
        };
        let job = Arc::new(Mutex::new(Some((job, deliver))));
        let in_thread = Arc::clone(&job);
        let spawned = std::thread::Builder::new()
            .name("smtpd-check".into())
            .spawn(move || {
                let taken = in_thread.lock().ok().and_then(|mut j| j.take());
                if let Some((job, deliver)) = taken {
                    deliver(job());
                }
            });
        if let Err(e) = spawned {
            oxipost_log::warning!("cannot start a check thread: {e}; checking inline");
            let taken = job.lock().ok().and_then(|mut j| j.take());
            if let Some((job, deliver)) = taken {
                deliver(job());
            }
        }
    }
}

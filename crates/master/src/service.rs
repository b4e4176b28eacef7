//! Per-service state: the listening descriptors, the status pipe its workers report on,
//! the workers and whether each is idle, the throttle and the wakeup timer. Decides when
//! the service listens (no idle worker, below its process limit, not throttled): while
//! it listens, a readable endpoint means a client waits and one more worker is needed.

use crate::conf::ServiceConf;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use oxipost_daemon::proto::{STATUS_RECORD_LEN, Status, StatusRecord};
use oxipost_log::warning;
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// A worker master started and has not reaped yet.
#[derive(Debug, Clone)]
pub struct Child {
    pub generation: u32,
    /// Idle (or about to be, for a worker that has not reported yet).
    pub available: bool,
    /// It sent at least one valid status record: its program started properly.
    pub reported: bool,
    pub use_count: u64,
}

pub struct ServiceState {
    pub conf: ServiceConf,
    pub listen: Vec<OwnedFd>,
    /// Listening descriptors are registered with the poll.
    pub listening: bool,
    pub status_read: std::fs::File,
    pub status_write: OwnedFd,
    status_buf: Vec<u8>,
    pub children: HashMap<u32, Child>,
    pub throttled_until: Option<Instant>,
    pub next_wakeup: Option<Instant>,
    /// When the process-limit warning was last logged (at most once per 1000 s).
    pub limit_warned: Option<Instant>,
}

impl ServiceState {
    /// A service with its status pipe and no listeners yet (see [`crate::listen::open`]).
    pub fn new(conf: ServiceConf) -> std::io::Result<ServiceState> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        Ok(ServiceState {
            conf,
            listen: Vec::new(),
            listening: false,
            status_read: std::fs::File::from(r),
            status_write: w,
            status_buf: Vec::new(),
            children: HashMap::new(),
            throttled_until: None,
            next_wakeup: None,
            limit_warned: None,
        })
    }

    pub fn key(&self) -> String {
        self.conf.key()
    }

    pub fn limit(&self, default: u32) -> u32 {
        self.conf.entry.process_limit(default)
    }

    pub fn idle(&self) -> usize {
        self.children.values().filter(|c| c.available).count()
    }

    pub fn total(&self) -> usize {
        self.children.len()
    }

    /// Whether a readable endpoint should start a worker now.
    pub fn wants_listen(&self, default_limit: u32) -> bool {
        let limit = self.limit(default_limit) as usize;
        !self.listen.is_empty()
            && self.throttled_until.is_none()
            && self.idle() == 0
            && (limit == 0 || self.total() < limit)
    }

    pub fn listen_raw(&self) -> Vec<RawFd> {
        self.listen.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Reads every pending status record. Returns true when a child's state changed.
    pub fn read_status(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.status_read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.status_buf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: drained
            }
        }
        let mut changed = false;
        let mut at = 0;
        while self.status_buf.len() - at >= STATUS_RECORD_LEN {
            let rec = StatusRecord::decode(&self.status_buf[at..at + STATUS_RECORD_LEN]);
            at += STATUS_RECORD_LEN;
            let Some(rec) = rec else {
                // "It's all gossip after all": drop what is buffered and carry on.
                warning!(
                    "service {}: garbage on the status pipe, ignored",
                    self.key()
                );
                at = self.status_buf.len();
                break;
            };
            changed |= self.apply(rec);
        }
        self.status_buf.drain(..at);
        if self.status_buf.len() > 4 * STATUS_RECORD_LEN {
            self.status_buf.clear();
        }
        changed
    }

    fn apply(&mut self, rec: StatusRecord) -> bool {
        // Unknown pids are workers of a previous configuration (retired at a reload).
        let Some(child) = self.children.get_mut(&rec.pid) else {
            return false;
        };
        if child.generation != rec.generation {
            return false;
        }
        child.reported = true;
        match rec.status {
            Status::Available => child.available = true,
            Status::Taken => {
                child.available = false;
                child.use_count += 1;
            }
        }
        true
    }
}

//! The master <-> worker protocol, deliberately tiny (as Postfix's master_proto):
//! fixed descriptors, a few argv flags, and a 12-byte status record.
//!
//! **Exec contract.** master runs `daemon_directory/<command>` with
//! `argv = [command, "-n", service_name, "-t", type, ("-u")?, ("-r")?, ("-o", "name=value")*,
//! args...]` and the environment `MAIL_CONFIG=<config_dir>`, `OXIPOST_LISTEN_FDS=<n>`,
//! `OXIPOST_GENERATION=<g>`. `-u`: the service is unprivileged (drop to `mail_owner`); `-r`:
//! chroot into `queue_directory` (master.cf's chroot column).
//!
//! **Descriptors.** [`STATUS_FD`] is the write end of the service's status pipe;
//! [`WATCH_FD`] is the read end of a pipe whose write end only master holds (EOF there
//! means master is gone and the worker must exit); listening sockets (or the fifo) start
//! at [`LISTEN_FD_BASE`].
//!
//! **Status.** A worker writes one [`StatusRecord`] when it becomes available (idle,
//! waiting in accept) and one when it is taken (busy with a client). master counts idle
//! workers per service from these and forks a new one when a listener is readable and none
//! is idle. master ignores records whose generation is not the service's current one
//! (workers of a configuration before a reload) and never trusts them beyond that.
//!
//! **Signals.** SIGTERM to a worker: stop accepting, finish the client(s) at hand, exit 0.
//! master escalates to SIGKILL after its stop timeout.
//!
//! **Wakeups.** For a service with a wakeup time, master connects to its unix socket (or
//! opens its fifo) and writes [`TRIGGER_WAKEUP`], as Postfix writes `W`.

use std::os::fd::RawFd;

pub const STATUS_FD: RawFd = 3;
pub const WATCH_FD: RawFd = 4;
pub const LISTEN_FD_BASE: RawFd = 5;

pub const ENV_LISTEN_FDS: &str = "OXIPOST_LISTEN_FDS";
pub const ENV_GENERATION: &str = "OXIPOST_GENERATION";

/// A trigger byte asking a timer service to do its periodic work.
pub const TRIGGER_WAKEUP: u8 = b'W';
/// Other triggers (qmgr): a new message in incoming/, scan deferred now (flush).
pub const TRIGGER_SCAN_INCOMING: u8 = b'I';
pub const TRIGGER_SCAN_DEFERRED: u8 = b'D';
pub const TRIGGER_FLUSH: u8 = b'F';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Busy with a client.
    Taken = 0,
    /// Idle, ready for the next client.
    Available = 1,
}

/// One status message: pid, generation, status, as 3 x u32 in native byte order (both
/// ends are on the same host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRecord {
    pub pid: u32,
    pub generation: u32,
    pub status: Status,
}

pub const STATUS_RECORD_LEN: usize = 12;

impl StatusRecord {
    pub fn encode(&self) -> [u8; STATUS_RECORD_LEN] {
        let mut b = [0u8; STATUS_RECORD_LEN];
        b[0..4].copy_from_slice(&self.pid.to_ne_bytes());
        b[4..8].copy_from_slice(&self.generation.to_ne_bytes());
        b[8..12].copy_from_slice(&(self.status as u32).to_ne_bytes());
        b
    }

    /// Decodes a record; `None` for garbage (master logs and ignores it).
    pub fn decode(b: &[u8]) -> Option<StatusRecord> {
        if b.len() != STATUS_RECORD_LEN {
            return None;
        }
        let word =
            |i: usize| -> Option<u32> { Some(u32::from_ne_bytes(b[i..i + 4].try_into().ok()?)) };
        let status = match word(8)? {
            0 => Status::Taken,
            1 => Status::Available,
            _ => return None,
        };
        Some(StatusRecord {
            pid: word(0)?,
            generation: word(4)?,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_and_garbage() {
        let r = StatusRecord {
            pid: 1234,
            generation: 7,
            status: Status::Available,
        };
        assert_eq!(StatusRecord::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[8] = 9;
        assert_eq!(StatusRecord::decode(&bad), None);
        assert_eq!(StatusRecord::decode(&[1, 2, 3]), None);
    }
}

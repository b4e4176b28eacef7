//! SIGTERM (and SIGHUP/SIGINT) as readable bytes on a pipe, so event loops see signals as
//! ordinary events instead of running code in a signal handler.

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

pub struct SignalPipe {
    read: UnixStream,
    _write: UnixStream,
}

impl SignalPipe {
    /// Registers the terminating signals (SIGTERM, SIGINT) to write to a new pipe.
    pub fn termination() -> std::io::Result<SignalPipe> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        for sig in [libc::SIGTERM, libc::SIGINT] {
            let w = write.try_clone()?;
            signal_hook::low_level::pipe::register(sig, w)?;
        }
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Drains pending bytes; true if any signal arrived.
    pub fn drain(&mut self) -> bool {
        let mut buf = [0u8; 64];
        let mut got = false;
        while let Ok(n) = self.read.read(&mut buf) {
            if n == 0 {
                break;
            }
            got = true;
        }
        got
    }
}

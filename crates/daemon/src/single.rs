//! One client at a time per process (Postfix's single_server): the service function gets a
//! blocking stream and may take as long as it needs; concurrency comes from master
//! starting more processes.

use crate::proto::Status;
use crate::signals::SignalPipe;
use crate::worker::{Listener, Worker};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;

/// An accepted client, in blocking mode.
#[derive(Debug)]
pub enum Client {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

const WATCH: Token = Token(usize::MAX - 1);
const SIGNAL: Token = Token(usize::MAX - 2);

/// Why a serve loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    MaxUse,
    MaxIdle,
    MasterGone,
    Signal,
    /// A service handler panicked; the process leaves so that master replaces it.
    Panic,
}

/// Registers the worker's listeners, watch descriptor and signal pipe with a poll.
pub(crate) fn register_common(
    poll: &Poll,
    worker: &Worker,
    signals: &SignalPipe,
) -> std::io::Result<()> {
    for (i, l) in worker.listeners.iter().enumerate() {
        let fd = l.raw_fd();
        set_nonblocking(fd);
        poll.registry()
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
    }
    if let Some(w) = worker.watch.as_ref() {
        use std::os::fd::AsRawFd;
        let fd = w.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), WATCH, Interest::READABLE)?;
    }
    let sfd = signals.raw_fd();
    poll.registry()
        .register(&mut SourceFd(&sfd), SIGNAL, Interest::READABLE)?;
    Ok(())
}

pub(crate) fn set_nonblocking(fd: std::os::fd::RawFd) {
    // SAFETY: F_GETFL/F_SETFL on a descriptor this process holds; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Accepts one connection from a listener, or None when another worker was faster.
pub(crate) fn accept(l: &Listener) -> Option<Client> {
    match l {
        Listener::Tcp(t) => t.accept().ok().map(|(s, a)| Client::Tcp(s, a)),
        Listener::Unix(u) => u.accept().ok().map(|(s, _)| Client::Unix(s)),
        Listener::Fifo(_) => None,
    }
}

/// Serves clients one at a time until `max_use`, `max_idle`, SIGTERM or master's exit.
/// The handler runs after the privilege drop; a panic in it is logged and ends the process.
pub fn single_server<F>(mut worker: Worker, mut handler: F) -> ExitReason
where
    F: FnMut(&mut Worker, Client),
{
    let reason = run_single(&mut worker, &mut handler);
    oxipost_log::info!("exiting: {reason:?}");
    reason
}

fn run_single<F>(worker: &mut Worker, handler: &mut F) -> ExitReason
where
    F: FnMut(&mut Worker, Client),
{
    let (mut poll, mut signals) = match (Poll::new(), SignalPipe::termination()) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(e), _) | (_, Err(e)) => oxipost_log::fatal!("event loop setup: {e}"),
    };
    if let Err(e) = register_common(&poll, worker, &signals) {
        oxipost_log::fatal!("event loop setup: {e}");
    }
    let mut events = Events::with_capacity(16);
    let mut uses: u64 = 0;
    loop {
        worker.report(Status::Available);
        let timeout = (!worker.max_idle.is_zero()).then_some(worker.max_idle);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            oxipost_log::fatal!("poll: {e}");
        }
        if events.is_empty() {
            return ExitReason::MaxIdle;
        }
        for ev in events.iter() {
            match ev.token() {
                WATCH => return ExitReason::MasterGone,
                SIGNAL => {
                    if signals.drain() {
                        return ExitReason::Signal;
                    }
                }
                Token(i) => {
                    // Edge-triggered readiness fires once for a whole queue of pending
                    // connections: take them all, one after another, before polling again
                    // (else clients queued behind the first wait for the next arrival).
                    while let Some(client) = worker.listeners.get(i).and_then(accept) {
                        let client = match client {
                            Client::Tcp(s, a) => {
                                let _ = s.set_nonblocking(false);
                                Client::Tcp(s, a)
                            }
                            Client::Unix(s) => {
                                let _ = s.set_nonblocking(false);
                                Client::Unix(s)
                            }
                        };
                        worker.report(Status::Taken);
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            handler(worker, client)
                        }));
                        if r.is_err() {
                            return ExitReason::Panic;
                        }
                        uses += 1;
                        if worker.max_use > 0 && uses >= worker.max_use {
                            return ExitReason::MaxUse;
                        }
                        if signals.drain() {
                            return ExitReason::Signal;
                        }
                        worker.report(Status::Available);
                    }
                }
            }
        }
    }
}

//! Many clients per process on one mio loop (Postfix's multi_server), for protocols whose
//! sessions mostly wait: IMAP IDLE and POP3 must hold thousands of connections without
//! thousands of processes, and smtpd sessions share one group-commit flusher.
//!
//! The driver owns sockets and buffers only; each connection's [`Connection`] is a thin
//! adapter around a sans-IO protocol core: bytes in, bytes out, a timeout, and a wake-up
//! for asynchronous results (a commit that became durable, an auth answer). Edge-triggered
//! readiness is drained to `WouldBlock`; a closing connection is deregistered at once.

use crate::proto::Status;
use crate::signals::SignalPipe;
use crate::single::{ExitReason, register_common};
use crate::worker::{Listener, Worker};
use mio::net::{TcpStream, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// What a connection wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Flush what was written to `out`, then close.
    Close,
}

/// Who connected.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
}

/// One session's protocol adapter. All methods append replies to `out`.
pub trait Connection {
    /// Right after accept (a greeting, or nothing).
    fn start(&mut self, out: &mut Vec<u8>) -> Flow;
    /// Bytes from the peer.
    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) -> Flow;
    /// Nothing arrived for [`Connection::timeout_after`].
    fn timeout(&mut self, out: &mut Vec<u8>) -> Flow;
    fn timeout_after(&self) -> Duration;
    /// The service has an asynchronous result for this connection.
    fn wake(&mut self, _out: &mut Vec<u8>) -> Flow {
        Flow::Continue
    }
    /// Whether to read more input now (false while waiting for an asynchronous result).
    fn wants_input(&self) -> bool {
        true
    }
    /// The peer closed or the connection failed (for the service's log line).
    fn lost(&mut self, _why: &str) {}
}

/// The service behind a multi-client worker.
pub trait MultiService {
    type Conn: Connection;
    /// A new client; `None` refuses it (closed at once, e.g. over a per-client limit).
    fn connect(&mut self, peer: Peer, id: usize) -> Option<Self::Conn>;
    /// A descriptor that becomes readable when [`MultiService::woken`] has ids to return.
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }
    /// Connections with asynchronous results ready (drains the wake descriptor).
    fn woken(&mut self) -> Vec<usize> {
        Vec::new()
    }
    /// A connection is gone.
    fn disconnected(&mut self, _id: usize) {}
    /// Most clients one process holds; master starts another process beyond it.
    fn max_clients(&self) -> usize {
        1000
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Slot<C> {
    stream: Stream,
    conn: C,
    out: Vec<u8>,
    sent: usize,
    deadline: Instant,
    closing: bool,
}

/// Stop reading from a client whose replies pile up unread.
const OUTPUT_HIGH_WATER: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;
const WATCH: Token = Token(usize::MAX - 1);
const SIGNAL: Token = Token(usize::MAX - 2);
const WAKE: Token = Token(usize::MAX - 3);
const CONN_BASE: usize = 1 << 16;

pub fn multi_server<S: MultiService>(mut worker: Worker, mut service: S) -> ExitReason {
    let reason = match run_multi(&mut worker, &mut service) {
        Ok(r) => r,
        Err(e) => oxipost_log::fatal!("event loop: {e}"),
    };
    oxipost_log::info!("exiting: {reason:?}");
    reason
}

fn run_multi<S: MultiService>(worker: &mut Worker, service: &mut S) -> io::Result<ExitReason> {
    let mut poll = Poll::new()?;
    let mut signals = SignalPipe::termination()?;
    register_common(&poll, worker, &signals)?;
    if let Some(fd) = service.wake_fd() {
        poll.registry()
            .register(&mut SourceFd(&fd), WAKE, Interest::READABLE)?;
    }
    let mut slots: Vec<Option<Slot<S::Conn>>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut live = 0usize;
    let mut served: u64 = 0;
    let mut accepting = true;
    let mut idle_since = Some(Instant::now());
    let mut draining: Option<ExitReason> = None;
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; READ_CHUNK];
    worker.report(Status::Available);

    loop {
        // Next deadline: the earliest connection timeout, or the idle limit.
        let now = Instant::now();
        let mut wait: Option<Duration> = slots
            .iter()
            .flatten()
            .map(|s| s.deadline.saturating_duration_since(now))
            .min();
        if let (Some(since), false) = (idle_since, worker.max_idle.is_zero()) {
            let left = (since + worker.max_idle).saturating_duration_since(now);
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        if let Err(e) = poll.poll(&mut events, wait)
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        let mut touched: Vec<usize> = Vec::new();
        for ev in events.iter() {
            match ev.token() {
                WATCH => draining = draining.or(Some(ExitReason::MasterGone)),
                SIGNAL => {
                    if signals.drain() {
                        draining = draining.or(Some(ExitReason::Signal));
                    }
                }
                WAKE => {
                    for id in service.woken() {
                        if let Some(Some(slot)) = slots.get_mut(id) {
                            if slot.conn.wake(&mut slot.out) == Flow::Close {
                                slot.closing = true;
                            }
                            touched.push(id);
                        }
                    }
                }
                Token(t) if t >= CONN_BASE => touched.push(t - CONN_BASE),
                Token(i) => {
                    if !accepting || draining.is_some() {
                        continue;
                    }
                    // Drain the accept queue: edge-triggered readiness fires once.
                    while live < service.max_clients() {
                        let Some((stream, peer)) = worker.listeners.get(i).and_then(accept_one)
                        else {
                            break;
                        };
                        let id = free.pop().unwrap_or_else(|| {
                            slots.push(None);
                            slots.len() - 1
                        });
                        let Some(conn) = service.connect(peer, id) else {
                            free.push(id);
                            continue;
                        };
                        let mut slot = Slot {
                            deadline: Instant::now() + conn.timeout_after(),
                            stream,
                            conn,
                            out: Vec::new(),
                            sent: 0,
                            closing: false,
                        };
                        poll.registry().register(
                            slot.stream.source(),
                            Token(CONN_BASE + id),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        if slot.conn.start(&mut slot.out) == Flow::Close {
                            slot.closing = true;
                        }
                        slots[id] = Some(slot);
                        live += 1;
                        served += 1;
                        idle_since = None;
                        touched.push(id);
                    }
                }
            }
        }
        // Timeouts.
        let now = Instant::now();
        for (id, s) in slots.iter_mut().enumerate() {
            if let Some(slot) = s
                && slot.deadline <= now
                && !slot.closing
            {
                if slot.conn.timeout(&mut slot.out) == Flow::Close {
                    slot.closing = true;
                }
                slot.deadline = now + slot.conn.timeout_after();
                touched.push(id);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            let Some(Some(slot)) = slots.get_mut(id) else {
                continue;
            };
            let keep =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pump(slot, &mut buf)))
                    .unwrap_or_else(|_| {
                        // One bad session: close it, stop taking new ones, exit when empty.
                        draining = draining.or(Some(ExitReason::Panic));
                        false
                    });
            if !keep {
                if let Some(mut slot) = slots[id].take() {
                    let _ = poll.registry().deregister(slot.stream.source());
                }
                free.push(id);
                live -= 1;
                service.disconnected(id);
                if live == 0 {
                    idle_since = Some(Instant::now());
                }
            }
        }
        // Capacity and lifetime bookkeeping; master learns when this process is full.
        let spent = worker.max_use > 0 && served >= worker.max_use;
        let want_accept = draining.is_none() && !spent && live < service.max_clients();
        if want_accept != accepting {
            accepting = want_accept;
            worker.report(if accepting {
                Status::Available
            } else {
                Status::Taken
            });
            for (i, l) in worker.listeners.iter().enumerate() {
                let fd = l.raw_fd();
                if accepting {
                    poll.registry()
                        .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
                } else {
                    let _ = poll.registry().deregister(&mut SourceFd(&fd));
                }
            }
        }
        if live == 0 {
            if let Some(r) = draining {
                return Ok(r);
            }
            if spent {
                return Ok(ExitReason::MaxUse);
            }
            if let Some(since) = idle_since
                && !worker.max_idle.is_zero()
                && since.elapsed() >= worker.max_idle
            {
                return Ok(ExitReason::MaxIdle);
            }
        }
    }
}

fn accept_one(l: &Listener) -> Option<(Stream, Peer)> {
    match l {
        Listener::Tcp(t) => {
            let (s, a) = t.accept().ok()?;
            s.set_nonblocking(true).ok()?;
            Some((Stream::Tcp(TcpStream::from_std(s)), Peer::Tcp(a)))
        }
        Listener::Unix(u) => {
            let (s, _) = u.accept().ok()?;
            s.set_nonblocking(true).ok()?;
            Some((Stream::Unix(UnixStream::from_std(s)), Peer::Unix))
        }
        Listener::Fifo(_) => None,
    }
}

/// Moves bytes both ways until the socket would block. Returns false when the connection
/// is finished (closed by either side, or failed).
fn pump<C: Connection>(slot: &mut Slot<C>, buf: &mut [u8]) -> bool {
    loop {
        // Write what is pending.
        while slot.sent < slot.out.len() {
            match slot.stream.write(&slot.out[slot.sent..]) {
                Ok(0) => return false,
                Ok(n) => slot.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    slot.conn.lost(&e.to_string());
                    return false;
                }
            }
        }
        if slot.sent == slot.out.len() {
            slot.out.clear();
            slot.sent = 0;
            if slot.closing {
                return false;
            }
        }
        if slot.closing
            || !slot.conn.wants_input()
            || slot.out.len() - slot.sent > OUTPUT_HIGH_WATER
        {
            return true;
        }
        match slot.stream.read(buf) {
            Ok(0) => {
                slot.conn.lost("lost connection");
                return false;
            }
            Ok(n) => {
                slot.deadline = Instant::now() + slot.conn.timeout_after();
                if slot.conn.input(&buf[..n], &mut slot.out) == Flow::Close {
                    slot.closing = true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return !(slot.closing && slot.out.is_empty());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                slot.conn.lost(&e.to_string());
                return false;
            }
        }
    }
}

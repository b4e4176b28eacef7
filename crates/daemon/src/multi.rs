//! Many clients per process on one mio loop (Postfix's multi_server), for protocols whose
//! sessions mostly wait: IMAP IDLE and POP3 must hold thousands of connections without
//! thousands of processes, and smtpd sessions share one group-commit flusher.
//!
//! The driver owns sockets and buffers only; each connection's [`Connection`] is a thin
//! adapter around a sans-IO protocol core: bytes in, bytes out, a timeout, and a wake-up
//! for asynchronous results (a commit that became durable, an auth answer). Edge-triggered
//! readiness is drained to `WouldBlock` (a short read counts); a finished connection is closed at
//! once, which also takes it out of the epoll set.
//!
//! TLS is the driver's, never the protocol core's: a service that has a TLS configuration
//! ([`MultiService::tls_config`]) gets implicit TLS from the first byte when
//! [`MultiService::implicit_tls`] says so (ports 465, 993, 995), and STARTTLS when a
//! connection returns [`Flow::StartTls`]: the driver then flushes the pending plaintext
//! reply (`220 Ready to start TLS`), feeds nothing more of what was read before, and swaps
//! the transport for a rustls `ServerConnection` driven through its sans-IO API
//! (`read_tls` / `process_new_packets` / `reader` / `writer` / `write_tls`). When the
//! handshake completes the connection hears [`Connection::tls_established`] with the
//! protocol and cipher. Bytes the peer pipelined after STARTTLS in plaintext are the
//! protocol core's to discard (it drops its buffer in `tls_established`); bytes still in
//! the socket are read as TLS records and fail the handshake (CVE-2011-0411).

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
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxipost_tls::TlsInfo;
use oxipost_tls::rustls::{ServerConfig, ServerConnection};

/// What a connection wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Flush what was written to `out`, then close.
    Close,
    /// Flush what was written to `out` in plaintext, then start a TLS handshake; nothing
    /// more is read in plaintext (STARTTLS).
    StartTls,
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
    /// Everything queued so far was written: a connection that held output back (a long
    /// answer produced in parts, so a client that does not read cannot make the process
    /// buffer without bound) produces its next part now.
    fn drained(&mut self, _out: &mut Vec<u8>) -> Flow {
        Flow::Continue
    }
    /// Whether to read more input now (false while waiting for an asynchronous result).
    fn wants_input(&self) -> bool {
        true
    }
    /// The peer closed or the connection failed (for the service's log line).
    fn lost(&mut self, _why: &str) {}
    /// The TLS handshake (implicit or after [`Flow::StartTls`]) completed.
    fn tls_established(&mut self, _info: &TlsInfo, _out: &mut Vec<u8>) -> Flow {
        Flow::Continue
    }
    /// The TLS handshake or a TLS record failed; the connection is closed next.
    fn tls_failed(&mut self, why: &str) {
        self.lost(why);
    }
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
    /// Whether `max_use` applies (see the event loop): false by default for multi-client
    /// services.
    fn honours_max_use(&self) -> bool {
        false
    }
    /// Most clients one process holds; master starts another process beyond it.
    fn max_clients(&self) -> usize {
        1000
    }
    /// The TLS configuration for STARTTLS and implicit TLS (none: no TLS).
    fn tls_config(&self) -> Option<Arc<ServerConfig>> {
        None
    }
    /// TLS from the first byte (Postfix's `*_tls_wrappermode`).
    fn implicit_tls(&self) -> bool {
        false
    }
    /// More descriptors that wake the service like [`MultiService::wake_fd`] (e.g. a pipe
    /// from helper threads); readiness of any of them calls [`MultiService::woken`].
    fn extra_wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
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
    /// The TLS layer, once started; `out` then holds plaintext for its writer.
    tls: Option<Box<ServerConnection>>,
    /// The handshake has not completed yet.
    handshaking: bool,
    /// STARTTLS was asked for: flush `out` in plaintext, then start TLS.
    starttls: bool,
}

/// Applies a connection's answer to its slot.
fn apply<C>(slot: &mut Slot<C>, flow: Flow) {
    match flow {
        Flow::Continue => {}
        Flow::Close => slot.closing = true,
        Flow::StartTls => slot.starttls = true,
    }
}

/// Stop reading from a client whose replies pile up unread.
const OUTPUT_HIGH_WATER: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;
const WATCH: Token = Token(usize::MAX - 1);
const SIGNAL: Token = Token(usize::MAX - 2);
const WAKE: Token = Token(usize::MAX - 3);
const CONN_BASE: usize = 1 << 16;

thread_local! {
    /// The connection being handed to [`MultiService::connect`] (see [`local_addr`]).
    static CONNECTING: std::cell::Cell<Option<RawFd>> = const { std::cell::Cell::new(None) };
}

/// The local address of the TCP connection being handed to [`MultiService::connect`]
/// (Postfix's `{daemon_addr}`/`{daemon_port}`), read only when asked: one `getsockname`,
/// which a listener on a wildcard address needs. `None` outside `connect` or for Unix
/// sockets.
pub fn local_addr() -> Option<SocketAddr> {
    use nix::sys::socket::{SockaddrStorage, getsockname};
    let fd = CONNECTING.with(|c| c.get())?;
    let ss: SockaddrStorage = getsockname(fd).ok()?;
    if let Some(v4) = ss.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    let v6 = ss.as_sockaddr_in6()?;
    Some(SocketAddr::V6((*v6).into()))
}

pub fn multi_server<S: MultiService>(mut worker: Worker, mut service: S) -> ExitReason {
    let reason = match run_multi(&mut worker, &mut service) {
        Ok(r) => r,
        Err(e) => oxipost_log::fatal!("event loop: {e}"),
    };
    oxipost_log::release();
    oxipost_log::info!("exiting: {reason:?}");
    reason
}

fn run_multi<S: MultiService>(worker: &mut Worker, service: &mut S) -> io::Result<ExitReason> {
    let mut poll = Poll::new()?;
    let mut signals = SignalPipe::termination()?;
    register_common(&poll, worker, &signals)?;
    for fd in service
        .wake_fd()
        .into_iter()
        .chain(service.extra_wake_fds())
    {
        poll.registry()
            .register(&mut SourceFd(&fd), WAKE, Interest::READABLE)?;
    }
    let tls_config = service.tls_config();
    let implicit = service.implicit_tls() && tls_config.is_some();
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
    // Log lines of one round go out in one write, just before the loop sleeps.
    oxipost_log::hold();

    loop {
        oxipost_log::flush();
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
                            let flow = slot.conn.wake(&mut slot.out);
                            apply(slot, flow);
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
                        CONNECTING.with(|c| c.set(raw_fd(&stream)));
                        let conn = service.connect(peer, id);
                        CONNECTING.with(|c| c.set(None));
                        let Some(conn) = conn else {
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
                            tls: None,
                            handshaking: false,
                            starttls: false,
                        };
                        if implicit && let Some(cfg) = &tls_config {
                            match ServerConnection::new(Arc::clone(cfg)) {
                                Ok(c) => {
                                    slot.tls = Some(Box::new(c));
                                    slot.handshaking = true;
                                }
                                Err(e) => {
                                    slot.conn.tls_failed(&e.to_string());
                                    free.push(id);
                                    continue;
                                }
                            }
                        }
                        poll.registry().register(
                            slot.stream.source(),
                            Token(CONN_BASE + id),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        let flow = slot.conn.start(&mut slot.out);
                        apply(&mut slot, flow);
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
                let flow = slot.conn.timeout(&mut slot.out);
                apply(slot, flow);
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
            let keep = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pump(slot, &mut buf, tls_config.as_ref())
            }))
            .unwrap_or_else(|_| {
                // One bad session: close it, stop taking new ones, exit when empty.
                draining = draining.or(Some(ExitReason::Panic));
                false
            });
            if !keep {
                // Closing the socket (dropping the slot) removes it from the epoll set: no
                // EPOLL_CTL_DEL per connection (nothing else holds a copy of the descriptor).
                drop(slots[id].take());
                free.push(id);
                live -= 1;
                service.disconnected(id);
                if live == 0 {
                    idle_since = Some(Instant::now());
                }
            }
        }
        // Capacity and lifetime bookkeeping; master learns when this process is full.
        // max_use recycles processes that serve one client at a time; a multi-client
        // process under steady load would otherwise restart every max_use connections
        // (a fork, exec and configuration load each time) for no benefit. It is honoured
        // only by services that ask for it, and max_idle still recycles idle processes.
        let spent = service.honours_max_use() && worker.max_use > 0 && served >= worker.max_use;
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

fn raw_fd(s: &Stream) -> Option<RawFd> {
    use std::os::fd::AsRawFd;
    match s {
        Stream::Tcp(t) => Some(t.as_raw_fd()),
        Stream::Unix(_) => None,
    }
}

fn accept_one(l: &Listener) -> Option<(Stream, Peer)> {
    match l {
        Listener::Tcp(t) => {
            use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
            let (fd, a) = accept_tcp(t.as_raw_fd())?;
            // SAFETY: fd is a fresh connected socket owned by nothing else.
            let s = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
            Some((Stream::Tcp(s), Peer::Tcp(a)))
        }
        Listener::Unix(u) => {
            let (s, _) = u.accept().ok()?;
            s.set_nonblocking(true).ok()?;
            Some((Stream::Unix(UnixStream::from_std(s)), Peer::Unix))
        }
        Listener::Fifo(_) => None,
    }
}

/// `accept4` with the connection already non-blocking and close-on-exec: one system call
/// per connection where accept and a FIONBIO ioctl were two.
fn accept_tcp(listener: RawFd) -> Option<(std::os::fd::OwnedFd, SocketAddr)> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let fd = loop {
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: ss and len are valid for writes of the sizes given; the result is checked.
        let r = unsafe {
            libc::accept4(
                listener,
                (&mut ss as *mut libc::sockaddr_storage).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if r >= 0 {
            // SAFETY: r is a new descriptor owned by nothing else.
            break unsafe { OwnedFd::from_raw_fd(r) };
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    };
    let addr = match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET peer.
            let sin: libc::sockaddr_in = unsafe { *(&ss as *const libc::sockaddr_storage).cast() };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 peer.
            let sin6: libc::sockaddr_in6 =
                unsafe { *(&ss as *const libc::sockaddr_storage).cast() };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            ))
        }
        _ => return None,
    };
    Some((fd, addr))
}

/// Moves bytes both ways until the socket would block. Returns false when the connection
/// is finished (closed by either side, or failed).
fn pump<C: Connection>(
    slot: &mut Slot<C>,
    buf: &mut [u8],
    tls_config: Option<&Arc<ServerConfig>>,
) -> bool {
    if slot.tls.is_some() {
        return pump_tls(slot, buf);
    }
    // A read that did not fill the buffer emptied the socket; with edge-triggered readiness
    // new data raises a new event, so reading again only to hear EAGAIN is a wasted system
    // call per command (as tokio does).
    let mut drained = false;
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
            if slot.starttls && !slot.closing {
                // The plaintext reply is out: from here on the socket carries TLS.
                slot.starttls = false;
                let Some(cfg) = tls_config else {
                    slot.conn.tls_failed("TLS is not configured");
                    return false;
                };
                match ServerConnection::new(Arc::clone(cfg)) {
                    Ok(c) => {
                        slot.tls = Some(Box::new(c));
                        slot.handshaking = true;
                    }
                    Err(e) => {
                        slot.conn.tls_failed(&e.to_string());
                        return false;
                    }
                }
                return pump_tls(slot, buf);
            }
            if !slot.starttls {
                let flow = slot.conn.drained(&mut slot.out);
                apply(slot, flow);
                if !slot.out.is_empty() {
                    continue;
                }
            }
        }
        if slot.closing
            || slot.starttls
            || !slot.conn.wants_input()
            || slot.out.len() - slot.sent > OUTPUT_HIGH_WATER
        {
            return true;
        }
        if drained {
            return !(slot.closing && slot.out.is_empty());
        }
        match slot.stream.read(buf) {
            Ok(0) => {
                slot.conn.lost("lost connection");
                return false;
            }
            Ok(n) => {
                drained = n < buf.len();
                slot.deadline = Instant::now() + slot.conn.timeout_after();
                let flow = slot.conn.input(&buf[..n], &mut slot.out);
                apply(slot, flow);
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

/// [`pump`] for a TLS connection: plaintext moves between the connection and rustls,
/// records between rustls and the socket.
fn pump_tls<C: Connection>(slot: &mut Slot<C>, buf: &mut [u8]) -> bool {
    loop {
        let Some(tls) = slot.tls.as_mut() else {
            return false;
        };
        // Plaintext replies into rustls (buffered by it until the handshake is done).
        let mut took_plain = false;
        if slot.sent < slot.out.len() {
            match tls.writer().write(&slot.out[slot.sent..]) {
                Ok(n) => {
                    slot.sent += n;
                    took_plain = n > 0;
                }
                Err(e) => {
                    slot.conn.tls_failed(&e.to_string());
                    return false;
                }
            }
            if slot.sent == slot.out.len() {
                slot.out.clear();
                slot.sent = 0;
            }
        }
        // Records to the socket.
        let mut blocked = false;
        while tls.wants_write() {
            match tls.write_tls(&mut slot.stream) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    slot.conn.lost(&e.to_string());
                    return false;
                }
            }
        }
        let flushed = !blocked && slot.out.is_empty() && !tls.wants_write();
        if slot.closing {
            if flushed {
                tls.send_close_notify();
                let _ = tls.write_tls(&mut slot.stream);
                return false;
            }
            return true;
        }
        if slot.starttls {
            // STARTTLS inside TLS is the core's error to answer; never a second layer.
            slot.starttls = false;
        }
        if flushed && !slot.handshaking {
            let flow = slot.conn.drained(&mut slot.out);
            apply(slot, flow);
            if !slot.out.is_empty() {
                continue;
            }
        }
        // Plaintext already decrypted but not yet taken by the connection.
        let mut fed = false;
        while slot.conn.wants_input() && slot.out.len() - slot.sent <= OUTPUT_HIGH_WATER {
            let Some(tls) = slot.tls.as_mut() else {
                return false;
            };
            match tls.reader().read(buf) {
                Ok(0) => {
                    slot.conn.lost("lost connection");
                    return false;
                }
                Ok(n) => {
                    fed = true;
                    let flow = slot.conn.input(&buf[..n], &mut slot.out);
                    apply(slot, flow);
                    if slot.closing {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Peer closed without close_notify (truncation).
                    slot.conn.lost(&e.to_string());
                    return false;
                }
            }
        }
        // Loop again only on progress: rustls's buffers may be full until the peer reads.
        if fed || (took_plain && !blocked && !slot.out.is_empty()) {
            continue;
        }
        let Some(tls) = slot.tls.as_mut() else {
            return false;
        };
        if !slot.handshaking && !slot.conn.wants_input() {
            return true;
        }
        if blocked {
            // The peer must take our records first; writable readiness resumes us.
            return true;
        }
        match tls.read_tls(&mut slot.stream) {
            Ok(0) => {
                if slot.handshaking {
                    slot.conn.tls_failed("lost connection during TLS handshake");
                } else {
                    slot.conn.lost("lost connection");
                }
                return false;
            }
            Ok(_) => {
                slot.deadline = Instant::now() + slot.conn.timeout_after();
                if let Err(e) = tls.process_new_packets() {
                    // Send the alert rustls prepared, then give up.
                    let _ = tls.write_tls(&mut slot.stream);
                    slot.conn.tls_failed(&e.to_string());
                    return false;
                }
                if slot.handshaking && !tls.is_handshaking() {
                    slot.handshaking = false;
                    if let Some(info) = TlsInfo::of(tls) {
                        let flow = slot.conn.tls_established(&info, &mut slot.out);
                        apply(slot, flow);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                slot.conn.lost(&e.to_string());
                return false;
            }
        }
    }
}

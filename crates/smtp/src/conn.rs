//! The IO driver: one connection to one server (TCP, TCP under TLS after STARTTLS, or a
//! UNIX-domain socket for LMTP), the session set-up (greeting, EHLO/LHLO with the HELO
//! fallback, STARTTLS, AUTH) and the transaction loop around the sans-IO
//! [`Transaction`]. Every read and write runs against the deadline of its stage, so a
//! server that stalls or trickles bytes costs at most that stage's timeout.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxipost_smtp_client_proto::{
    ContentMode, Extensions, Output, Reply, ReplyError, ReplyParser, Stage, Transaction, command,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, RootCertStore, StreamOwned};

use crate::sasl::{self, Credentials};
use crate::settings::{Settings, Timeouts};
use crate::tls::{self, TlsLevel, Trust};

/// Why a session or transaction ended early. The text is Postfix's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server's reply ended the session (greeting, EHLO, STARTTLS, AUTH, RSET).
    Reply { reply: Reply, stage: Stage },
    /// The connection closed.
    Lost(Stage),
    /// A stage's time limit passed.
    Timeout(Stage),
    /// The server sent something that is not SMTP.
    Garbage(String, Stage),
    /// The connection could not be made.
    Connect(String),
    /// A decision of ours (TLS required but not offered, SASL failed, ...).
    Local {
        dsn: String,
        text: String,
        permanent: bool,
    },
    /// The TLS handshake failed at an opportunistic level: retry without TLS.
    TlsFallback(String),
}

impl Failure {
    /// True when a later server (the next MX) may do better.
    pub fn try_next(&self) -> bool {
        !matches!(
            self,
            Failure::Local {
                permanent: true,
                ..
            }
        )
    }

    /// The DSN status, whether it is permanent, and the text for the log and bounce.
    pub fn describe(&self, peer: &str, skip_5xx_greeting: bool) -> (String, bool, String) {
        match self {
            Failure::Reply { reply, stage } => {
                if *stage == Stage::Greeting {
                    let dsn = reply.dsn();
                    let perm = reply.class() == 5 && !skip_5xx_greeting;
                    let dsn = if perm { dsn } else { soften(&dsn) };
                    return (
                        dsn,
                        perm,
                        format!("host {peer} refused to talk to me: {}", reply.text()),
                    );
                }
                (
                    reply.dsn(),
                    reply.class() == 5,
                    format!(
                        "host {peer} said: {} ({})",
                        reply.text(),
                        stage.in_reply_to()
                    ),
                )
            }
            Failure::Lost(stage) => (
                "4.4.2".into(),
                false,
                format!("lost connection with {peer} while {}", stage.doing()),
            ),
            Failure::Timeout(stage) => (
                "4.4.2".into(),
                false,
                format!("conversation with {peer} timed out while {}", stage.doing()),
            ),
            Failure::Garbage(line, stage) => (
                "4.4.2".into(),
                false,
                format!(
                    "host {peer} sent a malformed reply: {line} ({})",
                    stage.in_reply_to()
                ),
            ),
            Failure::Connect(text) => ("4.4.1".into(), false, text.clone()),
            Failure::Local {
                dsn,
                text,
                permanent,
            } => (dsn.clone(), *permanent, text.clone()),
            Failure::TlsFallback(text) => ("4.7.5".into(), false, text.clone()),
        }
    }
}

/// `5.x.y` → `4.x.y` (soft bounce of a session-level refusal).
pub fn soften(dsn: &str) -> String {
    match dsn.strip_prefix('5') {
        Some(rest) => format!("4{rest}"),
        None => dsn.to_string(),
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Closed,
}

impl Stream {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) {
        let (r, w) = (
            read.filter(|d| !d.is_zero()),
            write.filter(|d| !d.is_zero()),
        );
        match self {
            Stream::Tcp(s) => {
                let _ = s.set_read_timeout(r);
                let _ = s.set_write_timeout(w);
            }
            Stream::Tls(s) => {
                let _ = s.sock.set_read_timeout(r);
                let _ = s.sock.set_write_timeout(w);
            }
            Stream::Unix(s) => {
                let _ = s.set_read_timeout(r);
                let _ = s.set_write_timeout(w);
            }
            Stream::Closed => {}
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Closed => Ok(0),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Closed => Ok(()),
        }
    }
}

/// Where to connect and how to secure the session.
pub struct Plan<'a> {
    /// Host name for logs, SNI and certificate names.
    pub name: String,
    /// TCP address, or `None` with `unix` set.
    pub addr: Option<SocketAddr>,
    pub unix: Option<&'a Path>,
    pub tls_level: TlsLevel,
    /// Names a certificate may match at verify/secure.
    pub tls_names: Vec<String>,
    pub roots: Arc<RootCertStore>,
    pub credentials: Option<Credentials>,
    /// Loop detection at EHLO (SMTP to a port this system receives mail on).
    pub loop_check: Option<LoopCheck>,
}

/// A server that answers EHLO with our own `myhostname` is this mail system: Postfix's
/// "mail for X loops back to myself", permanent at the best MX host (5.4.6), else
/// temporary (4.4.6) so that the next host is tried.
#[derive(Debug, Clone)]
pub struct LoopCheck {
    pub myhostname: String,
    /// The next hop, for the message.
    pub nexthop: String,
    pub best: bool,
}

/// The message as it goes on the wire.
pub struct Payload {
    /// CRLF content (for BDAT).
    pub crlf: Vec<u8>,
    /// Dot-stuffed content with the final `.` (for DATA), made on first use.
    pub stuffed: Option<Vec<u8>>,
}

/// An open session, ready for mail transactions.
pub struct Session {
    stream: Stream,
    parser: ReplyParser,
    /// `host[addr]` for "said:" texts.
    pub peer: String,
    /// `host[addr]:port` for `relay=`.
    pub relay: String,
    pub ext: Extensions,
    /// `TLSv1.3 with cipher ...` when TLS is on.
    pub tls: Option<String>,
    /// Mail transactions done on this session.
    pub transactions: u32,
    /// A failure left the session unusable.
    pub broken: bool,
    /// When it was opened (for connection reuse limits).
    pub opened: Instant,
    timeouts: Timeouts,
    lmtp: bool,
}

fn peer_names(name: &str, addr: Option<SocketAddr>, unix: Option<&Path>) -> (String, String) {
    match (addr, unix) {
        (Some(a), _) => (
            format!("{name}[{}]", a.ip()),
            format!("{name}[{}]:{}", a.ip(), a.port()),
        ),
        (None, Some(p)) => {
            let p = p.display().to_string();
            (format!("{p}[{p}]"), p)
        }
        (None, None) => (name.to_string(), name.to_string()),
    }
}

/// Connects a TCP socket within `timeout`, from `bind` when given.
fn connect_tcp(addr: SocketAddr, bind: Option<IpAddr>, timeout: Duration) -> io::Result<TcpStream> {
    let timeout = if timeout.is_zero() {
        Duration::from_secs(300)
    } else {
        timeout
    };
    let Some(bind) = bind else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, bind as sbind, connect, getsockopt,
        socket, sockopt,
    };
    let fam = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket(
        fam,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(io::Error::from)?;
    sbind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(bind, 0)),
    )
    .map_err(io::Error::from)?;
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => {}
        Err(nix::errno::Errno::EINPROGRESS) => {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            let mut fds = [PollFd::new(
                std::os::fd::AsFd::as_fd(&fd),
                PollFlags::POLLOUT,
            )];
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            let n = poll(&mut fds, PollTimeout::from(ms)).map_err(io::Error::from)?;
            if n == 0 {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let err = getsockopt(&fd, sockopt::SocketError).map_err(io::Error::from)?;
            if err != 0 {
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        Err(e) => return Err(e.into()),
    }
    // SAFETY: the descriptor is a connected TCP socket we own; ownership moves.
    let s = unsafe { TcpStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    s.set_nonblocking(false)?;
    Ok(s)
}

fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "Connection timed out".into(),
        io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        _ => {
            let s = e.to_string();
            // "Connection refused (os error 111)" → Postfix's strerror text.
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

impl Session {
    /// Opens a session: connect, greeting, EHLO/LHLO (HELO fallback), STARTTLS per the
    /// plan, AUTH when credentials are given.
    pub fn open(s: &Settings, plan: &Plan<'_>) -> Result<Session, (Failure, String, String)> {
        let (peer, relay) = peer_names(&plan.name, plan.addr, plan.unix);
        let fail = |f: Failure| (f, peer.clone(), relay.clone());
        let stream = match (plan.addr, plan.unix) {
            (Some(addr), _) => {
                let bind = match addr.ip() {
                    IpAddr::V4(_) => s.bind4.map(IpAddr::V4),
                    IpAddr::V6(_) => s.bind6.map(IpAddr::V6),
                };
                match connect_tcp(addr, bind, s.timeouts.connect) {
                    Ok(t) => {
                        let _ = t.set_nodelay(true);
                        Stream::Tcp(t)
                    }
                    Err(e) => {
                        return Err(fail(Failure::Connect(format!(
                            "connect to {relay}: {}",
                            io_text(&e)
                        ))));
                    }
                }
            }
            (None, Some(path)) => match UnixStream::connect(path) {
                Ok(u) => Stream::Unix(u),
                Err(e) => {
                    return Err(fail(Failure::Connect(format!(
                        "connect to {}: {}",
                        path.display(),
                        io_text(&e)
                    ))));
                }
            },
            (None, None) => return Err(fail(Failure::Connect("no address".into()))),
        };
        let mut sess = Session {
            stream,
            parser: ReplyParser::new(),
            peer: peer.clone(),
            relay: relay.clone(),
            ext: Extensions::default(),
            tls: None,
            transactions: 0,
            broken: false,
            opened: Instant::now(),
            timeouts: s.timeouts,
            lmtp: s.lmtp,
        };
        sess.handshake(s, plan).map_err(fail)?;
        Ok(sess)
    }

    fn handshake(&mut self, s: &Settings, plan: &Plan<'_>) -> Result<(), Failure> {
        let t = self.timeouts;
        let greeting = self.read_reply(Stage::Greeting, t.helo)?;
        if !greeting.is_positive() {
            return Err(Failure::Reply {
                reply: greeting,
                stage: Stage::Greeting,
            });
        }
        self.hello(s, plan.loop_check.as_ref())?;
        let wants_tls = !matches!(plan.tls_level, TlsLevel::None);
        if wants_tls && plan.addr.is_some() {
            if self.ext.starttls {
                self.starttls(plan)?;
                self.hello(s, None)?;
            } else if plan.tls_level.required() {
                return Err(Failure::Local {
                    dsn: "4.7.4".into(),
                    text: format!("TLS is required, but was not offered by host {}", self.peer),
                    permanent: false,
                });
            }
        }
        if let Some(c) = &plan.credentials
            && !self.ext.auth.is_empty()
        {
            self.authenticate(s, c)?;
        }
        Ok(())
    }

    fn hello(&mut self, s: &Settings, loop_check: Option<&LoopCheck>) -> Result<(), Failure> {
        let t = self.timeouts.helo;
        let (cmd, stage) = if self.lmtp {
            (command::lhlo(&s.helo_name), Stage::Ehlo)
        } else {
            (command::ehlo(&s.helo_name), Stage::Ehlo)
        };
        self.send(&cmd, stage, t)?;
        let r = self.read_reply(stage, t)?;
        if r.is_positive() {
            if let Some(lc) = loop_check {
                let name = r
                    .texts()
                    .next()
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap_or("");
                if name.eq_ignore_ascii_case(&lc.myhostname) {
                    oxipost_log::warning!(
                        "host {} replied to HELO/EHLO with my own hostname {}",
                        self.peer,
                        lc.myhostname
                    );
                    return Err(Failure::Local {
                        dsn: if lc.best { "5.4.6" } else { "4.4.6" }.into(),
                        text: format!("mail for {} loops back to myself", lc.nexthop),
                        permanent: lc.best,
                    });
                }
            }
            self.ext = Extensions::parse(&r);
            for k in &s.discard_ehlo_keywords {
                match k.as_str() {
                    "pipelining" => self.ext.pipelining = false,
                    "chunking" => self.ext.chunking = false,
                    "8bitmime" => self.ext.eightbitmime = false,
                    "starttls" => self.ext.starttls = false,
                    "auth" => self.ext.auth.clear(),
                    "dsn" => self.ext.dsn = false,
                    "size" => self.ext.size = None,
                    "smtputf8" => self.ext.smtputf8 = false,
                    _ => {}
                }
            }
            return Ok(());
        }
        if self.lmtp || r.class() != 5 {
            return Err(Failure::Reply { reply: r, stage });
        }
        self.send(&command::helo(&s.helo_name), Stage::Helo, t)?;
        let r = self.read_reply(Stage::Helo, t)?;
        if !r.is_positive() {
            return Err(Failure::Reply {
                reply: r,
                stage: Stage::Helo,
            });
        }
        self.ext = Extensions::default();
        Ok(())
    }

    fn starttls(&mut self, plan: &Plan<'_>) -> Result<(), Failure> {
        let t = self.timeouts.starttls;
        self.send(&command::starttls(), Stage::StartTls, t)?;
        let r = self.read_reply(Stage::StartTls, t)?;
        if r.code != 220 {
            if plan.tls_level.required() {
                return Err(Failure::Reply {
                    reply: r,
                    stage: Stage::StartTls,
                });
            }
            // Opportunistic: carry on in plaintext, as Postfix does.
            return Ok(());
        }
        // Anything the server sent after its 220 was sent in plaintext: it must not count
        // as a reply inside TLS (response injection).
        self.parser.clear();
        let enforce = plan.tls_level.authenticates();
        let names = if enforce {
            plan.tls_names.clone()
        } else {
            vec![plan.name.clone()]
        };
        let (cfg, outcome) =
            tls::client_config(&plan.roots, &names, enforce).map_err(|e| Failure::Local {
                dsn: "4.7.5".into(),
                text: format!("Cannot start TLS: {e}"),
                permanent: false,
            })?;
        let sni = ServerName::try_from(plan.name.clone())
            .or_else(|_| ServerName::try_from("localhost".to_string()))
            .map_err(|e| Failure::Local {
                dsn: "4.7.5".into(),
                text: format!("Cannot start TLS: bad server name: {e}"),
                permanent: false,
            })?;
        let conn = ClientConnection::new(cfg, sni).map_err(|e| Failure::Local {
            dsn: "4.7.5".into(),
            text: format!("Cannot start TLS: {e}"),
            permanent: false,
        })?;
        let Stream::Tcp(sock) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(Failure::Local {
                dsn: "4.7.5".into(),
                text: "Cannot start TLS: not a TCP connection".into(),
                permanent: false,
            });
        };
        let mut tls = StreamOwned::new(conn, sock);
        let deadline = Instant::now()
            + if t.is_zero() {
                Duration::from_secs(300)
            } else {
                t
            };
        while tls.conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Timeout(Stage::StartTls));
            }
            let _ = tls.sock.set_read_timeout(Some(left));
            let _ = tls.sock.set_write_timeout(Some(left));
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    return Err(Failure::Timeout(Stage::StartTls));
                }
                let trust = outcome.lock().map(|t| *t).unwrap_or_default();
                let why = if enforce && trust != Trust::Verified {
                    format!("Server certificate not verified: {e}")
                } else {
                    format!("Cannot start TLS: handshake failure: {e}")
                };
                if plan.tls_level.required() {
                    return Err(Failure::Local {
                        dsn: "4.7.5".into(),
                        text: format!(
                            "TLS is required, but our TLS engine is unavailable or the handshake with {} failed: {why}",
                            self.peer
                        ),
                        permanent: false,
                    });
                }
                return Err(Failure::TlsFallback(why));
            }
        }
        let trust = outcome.lock().map(|t| *t).unwrap_or_default();
        let summary = tls::summary(&tls.conn);
        oxipost_log::info!(
            "{} TLS connection established to {}: {summary}",
            trust.word(),
            self.relay
        );
        self.tls = Some(summary);
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    fn authenticate(&mut self, s: &Settings, c: &Credentials) -> Result<(), Failure> {
        let t = self.timeouts.helo;
        let opts = if self.tls.is_some() {
            &s.sasl_tls_security_options
        } else {
            &s.sasl_security_options
        };
        let Some(mech) = sasl::choose(&self.ext.auth, &s.sasl_mechanism_filter, opts) else {
            return Err(Failure::Local {
                dsn: "4.7.0".into(),
                text: format!(
                    "SASL authentication failed; cannot authenticate to server {}: no mechanism available",
                    self.peer
                ),
                permanent: false,
            });
        };
        let r = if mech == "PLAIN" {
            self.send(
                &command::auth("PLAIN", Some(&sasl::plain_response(c))),
                Stage::Auth,
                t,
            )?;
            self.read_reply(Stage::Auth, t)?
        } else {
            self.send(&command::auth("LOGIN", None), Stage::Auth, t)?;
            let mut r = self.read_reply(Stage::Auth, t)?;
            for answer in [&c.user, &c.password] {
                if r.code != 334 {
                    break;
                }
                self.send(&command::sasl_line(&sasl::encode(answer)), Stage::Auth, t)?;
                r = self.read_reply(Stage::Auth, t)?;
            }
            r
        };
        if r.code == 235 {
            return Ok(());
        }
        if r.code == 334 {
            let _ = self.send(&command::sasl_line("*"), Stage::Auth, t);
            let _ = self.read_reply(Stage::Auth, t);
        }
        let dsn = if s.sasl_soft_bounce {
            soften(&r.dsn())
        } else {
            r.dsn()
        };
        Err(Failure::Local {
            permanent: dsn.starts_with('5'),
            dsn,
            text: format!(
                "SASL authentication failed; server {} said: {}",
                self.peer,
                r.text()
            ),
        })
    }

    fn limit(&self, stage: Stage) -> Duration {
        let t = &self.timeouts;
        match stage {
            Stage::Connect => t.connect,
            Stage::Greeting | Stage::Ehlo | Stage::Helo | Stage::Auth => t.helo,
            Stage::StartTls => t.starttls,
            Stage::Rset | Stage::Mail => t.mail,
            Stage::Rcpt => t.rcpt,
            Stage::Data => t.data_init,
            Stage::Content => t.data_xfer,
            Stage::DataDone => t.data_done,
            Stage::Quit => t.quit,
        }
    }

    /// Writes bytes within `limit`.
    fn send(&mut self, bytes: &[u8], stage: Stage, limit: Duration) -> Result<(), Failure> {
        self.stream.set_timeouts(None, Some(limit));
        let r = self
            .stream
            .write_all(bytes)
            .and_then(|_| self.stream.flush());
        r.map_err(|e| {
            self.broken = true;
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                Failure::Timeout(stage)
            } else {
                Failure::Lost(stage)
            }
        })
    }

    /// Reads one reply within `limit` from now (zero: no limit).
    fn read_reply(&mut self, stage: Stage, limit: Duration) -> Result<Reply, Failure> {
        let deadline = (!limit.is_zero()).then(|| Instant::now() + limit);
        let mut buf = [0u8; 8192];
        loop {
            match self.parser.next_reply() {
                Some(Ok(r)) => return Ok(r),
                Some(Err(ReplyError::Garbage(l))) => {
                    self.broken = true;
                    return Err(Failure::Garbage(l, stage));
                }
                None => {}
            }
            let left = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.broken = true;
                        return Err(Failure::Timeout(stage));
                    }
                    Some(left)
                }
                None => None,
            };
            self.stream.set_timeouts(left, None);
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.broken = true;
                    return Err(Failure::Lost(stage));
                }
                Ok(n) => self.parser.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.broken = true;
                    return Err(Failure::Timeout(stage));
                }
                Err(_) => {
                    self.broken = true;
                    return Err(Failure::Lost(stage));
                }
            }
        }
    }

    /// Runs a transaction to its end. `Err` means the session broke part-way; the
    /// transaction's results then hold what was decided before.
    pub fn run(&mut self, tx: &mut Transaction, payload: &mut Payload) -> Result<(), Failure> {
        self.transactions += 1;
        let mut pending: Vec<u8> = Vec::new();
        loop {
            while let Some(o) = tx.poll_output() {
                match o {
                    Output::Command(c) => pending.extend_from_slice(&c),
                    Output::EmptyDataEnd => pending.extend_from_slice(b".\r\n"),
                    Output::Content => match tx.content_mode() {
                        ContentMode::Bdat => {
                            pending.extend_from_slice(&command::bdat(payload.crlf.len(), true));
                            let stage = tx.awaiting().unwrap_or(Stage::Mail);
                            self.send(&pending, stage, self.limit(stage))?;
                            pending.clear();
                            self.send(&payload.crlf, Stage::Content, self.timeouts.data_xfer)?;
                        }
                        ContentMode::Data => {
                            if !pending.is_empty() {
                                self.send(&pending, Stage::Content, self.timeouts.data_xfer)?;
                                pending.clear();
                            }
                            if payload.stuffed.is_none() {
                                payload.stuffed = Some(
                                    oxipost_smtp_client_proto::content::dot_stuff(&payload.crlf),
                                );
                            }
                            let stuffed = payload.stuffed.as_deref().unwrap_or(b".\r\n");
                            self.send(stuffed, Stage::Content, self.timeouts.data_xfer)?;
                        }
                    },
                }
            }
            let Some(stage) = tx.awaiting() else { break };
            if !pending.is_empty() {
                self.send(&pending, stage, self.limit(stage))?;
                pending.clear();
            }
            let r = self.read_reply(stage, self.limit(stage))?;
            tx.on_reply(r);
        }
        if !pending.is_empty() {
            let stage = tx.awaiting().unwrap_or(Stage::Mail);
            self.send(&pending, stage, self.limit(stage))?;
        }
        if tx.rset_failed() {
            self.broken = true;
        }
        Ok(())
    }

    /// Ends the session politely (errors ignored).
    pub fn quit(mut self) {
        if !self.broken {
            let t = self.timeouts.quit.min(Duration::from_secs(10));
            if self.send(&command::quit(), Stage::Quit, t).is_ok() {
                let _ = self.read_reply(Stage::Quit, t);
            }
        }
        if let Stream::Tls(mut s) = std::mem::replace(&mut self.stream, Stream::Closed) {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
    }
}

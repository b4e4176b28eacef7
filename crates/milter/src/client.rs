//! One milter connection, blocking, with Postfix's three timeouts: `milter_connect_timeout`
//! for the socket connect, `milter_command_timeout` for option negotiation and the SMTP
//! events, `milter_content_timeout` for headers, body and end of message (each bounds one
//! send and the wait for its reply). Option negotiation keeps what the milter asks for
//! (steps to skip, steps it will not answer, its own macro lists through
//! `SMFIR_SETSYMLIST`); the macros of each stage are sent before its command.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::proto::{self, Command, Family, Response, Stage, action, step};

/// Where a milter listens: `unix:/path` (or `local:`) and `inet:host:port` (also
/// Sendmail's `inet:port@host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Unix(PathBuf),
    Inet(String, u16),
}

impl Addr {
    pub fn parse(s: &str) -> Result<Addr, String> {
        if let Some(p) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            return Ok(Addr::Unix(PathBuf::from(p)));
        }
        let rest = s
            .strip_prefix("inet:")
            .ok_or_else(|| format!("unsupported milter address {s}: use unix: or inet:"))?;
        let (host, port) = if let Some((port, host)) = rest.split_once('@') {
            (host, port)
        } else {
            rest.rsplit_once(':')
                .ok_or_else(|| format!("milter address {s}: missing port"))?
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port
            .parse()
            .map_err(|_| format!("milter address {s}: bad port"))?;
        Ok(Addr::Inet(
            if host.is_empty() { "localhost" } else { host }.to_string(),
            port,
        ))
    }
}

/// The three timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
    pub content: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(30),
            content: Duration::from_secs(300),
        }
    }
}

/// Why a milter conversation failed (the default action applies).
#[derive(Debug)]
pub enum Error {
    Connect(io::Error),
    Io(io::Error),
    Timeout,
    Garbage(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect: {e}"),
            Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "connection closed by milter")
            }
            Error::Io(e) => write!(f, "{e}"),
            Error::Timeout => write!(f, "timeout"),
            Error::Garbage(g) => write!(f, "protocol error: {g}"),
        }
    }
}

fn io_err(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        _ => Error::Io(e),
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Conn::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(b),
            Conn::Tcp(s) => s.read(b),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(b),
            Conn::Tcp(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// A milter's answer to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Continue,
    /// Accept the message without further inspection by this milter.
    Accept,
    Reject,
    Tempfail,
    Discard,
    /// A full SMTP reply from `SMFIR_REPLYCODE`.
    Code(String),
}

/// An end-of-message modification (or the quarantine request).
pub type Modification = Response;

/// The macro names to send per stage.
pub type MacroLists = Vec<(Stage, Vec<String>)>;

/// One negotiated milter connection.
pub struct Milter {
    conn: Conn,
    pub actions: u32,
    pub steps: u32,
    /// The negotiated protocol version (the lower of ours and the milter's).
    pub version: u32,
    timeouts: Timeouts,
    macros: MacroLists,
}

impl Milter {
    /// Connects and negotiates: `version` (`milter_protocol`, normally 6), every action
    /// and step oxipost supports; the milter's answer decides. `macros` are the configured
    /// lists (`milter_*_macros`).
    pub fn open(
        addr: &Addr,
        t: Timeouts,
        macros: &MacroLists,
        version: u32,
    ) -> Result<Milter, Error> {
        let conn = match addr {
            Addr::Unix(p) => {
                // Unix connects do not block for long; the command timeout covers the rest.
                Conn::Unix(UnixStream::connect(p).map_err(Error::Connect)?)
            }
            Addr::Inet(host, port) => {
                let addrs = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(Error::Connect)?;
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                let mut found = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, t.connect) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                Conn::Tcp(found.ok_or(Error::Connect(last))?)
            }
        };
        let mut m = Milter {
            conn,
            actions: 0,
            steps: 0,
            version: version.clamp(2, proto::VERSION),
            timeouts: t,
            macros: macros.clone(),
        };
        // Only the steps the offered version knows (milter_protocol 2..6), as Postfix.
        let offered = step::for_version(m.version);
        m.send(
            &Command::OptNeg {
                version: m.version,
                actions: action::ALL,
                steps: offered,
            },
            t.command,
        )?;
        match m.recv(t.command)? {
            Response::OptNeg {
                version,
                actions,
                steps,
                macros,
            } => {
                if version < 2 {
                    return Err(Error::Garbage(format!("protocol version {version}")));
                }
                m.actions = actions & action::ALL;
                m.steps = steps & offered;
                m.version = m.version.min(version);
                if m.actions & action::SETSYMLIST != 0 {
                    for (stage, names) in macros {
                        m.macros.retain(|(s, _)| *s != stage);
                        m.macros.push((stage, names));
                    }
                }
                Ok(m)
            }
            other => Err(Error::Garbage(format!(
                "unexpected answer to option negotiation: {other:?}"
            ))),
        }
    }

    fn send(&mut self, c: &Command, t: Duration) -> Result<(), Error> {
        self.conn.set_timeout(t).map_err(Error::Io)?;
        self.conn.write_all(&c.encode()).map_err(io_err)
    }

    fn recv(&mut self, t: Duration) -> Result<Response, Error> {
        self.conn.set_timeout(t).map_err(Error::Io)?;
        let mut len = [0u8; 4];
        self.conn.read_exact(&mut len).map_err(io_err)?;
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > proto::MAX_PACKET {
            return Err(Error::Garbage(format!("packet length {n}")));
        }
        let mut buf = vec![0u8; n];
        self.conn.read_exact(&mut buf).map_err(io_err)?;
        Response::decode(&buf).map_err(|g| Error::Garbage(g.0))
    }

    /// Sends the stage's macros (those `lookup` knows).
    fn send_macros(
        &mut self,
        stage: Stage,
        lookup: &dyn Fn(&str) -> Option<String>,
        t: Duration,
    ) -> Result<(), Error> {
        let Some((_, names)) = self.macros.iter().find(|(s, _)| *s == stage) else {
            return Ok(());
        };
        let pairs: Vec<(String, String)> = names
            .iter()
            .filter_map(|n| lookup(n).map(|v| (n.clone(), v)))
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        self.send(
            &Command::Macros {
                command: stage.command(),
                pairs,
            },
            t,
        )
    }

    /// Reads the reply to an event (progress notes extend the wait).
    fn reply(&mut self, t: Duration) -> Result<Reply, Error> {
        loop {
            return Ok(match self.recv(t)? {
                Response::Progress => continue,
                Response::Continue | Response::Skip => Reply::Continue,
                Response::Accept => Reply::Accept,
                Response::Reject => Reply::Reject,
                Response::Tempfail | Response::Shutdown => Reply::Tempfail,
                Response::Discard => Reply::Discard,
                Response::ReplyCode(c) => Reply::Code(c),
                other => {
                    return Err(Error::Garbage(format!("unexpected response {other:?}")));
                }
            });
        }
    }

    /// One event: macros, the command, and the reply unless the milter skips the step
    /// (`skip` flag) or said it will not reply (`no_reply` flag).
    fn event(
        &mut self,
        stage: Option<Stage>,
        cmd: Command,
        skip: u32,
        no_reply: u32,
        lookup: &dyn Fn(&str) -> Option<String>,
        t: Duration,
    ) -> Result<Reply, Error> {
        if self.steps & skip != 0 {
            return Ok(Reply::Continue);
        }
        if let Some(stage) = stage {
            self.send_macros(stage, lookup, t)?;
        }
        self.send(&cmd, t)?;
        if self.steps & no_reply != 0 {
            return Ok(Reply::Continue);
        }
        self.reply(t)
    }

    pub fn connect(
        &mut self,
        hostname: &str,
        family: Family,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Reply, Error> {
        let c = Command::Connect {
            hostname: hostname.to_string(),
            family,
        };
        let t = self.timeouts.command;
        self.event(
            Some(Stage::Connect),
            c,
            step::NOCONNECT,
            step::NR_CONN,
            lookup,
            t,
        )
    }

    pub fn helo(
        &mut self,
        name: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Reply, Error> {
        let t = self.timeouts.command;
        let c = Command::Helo(name.to_string());
        self.event(Some(Stage::Helo), c, step::NOHELO, step::NR_HELO, lookup, t)
    }

    /// `args`: `<sender>` then the ESMTP parameters.
    pub fn mail(
        &mut self,
        args: Vec<String>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Reply, Error> {
        let t = self.timeouts.command;
        self.event(
            Some(Stage::Mail),
            Command::Mail(args),
            step::NOMAIL,
            step::NR_MAIL,
            lookup,
            t,
        )
    }

    pub fn rcpt(
        &mut self,
        args: Vec<String>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Reply, Error> {
        let t = self.timeouts.command;
        self.event(
            Some(Stage::Rcpt),
            Command::Rcpt(args),
            step::NORCPT,
            step::NR_RCPT,
            lookup,
            t,
        )
    }

    pub fn data(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Reply, Error> {
        // DATA is an event from protocol version 4 on.
        if self.version < 4 {
            return Ok(Reply::Continue);
        }
        let t = self.timeouts.command;
        self.event(
            Some(Stage::Data),
            Command::Data,
            step::NODATA,
            step::NR_DATA,
            lookup,
            t,
        )
    }

    /// An unknown SMTP command (protocol version 3 on).
    pub fn unknown(&mut self, line: &str) -> Result<Reply, Error> {
        if self.version < 3 {
            return Ok(Reply::Continue);
        }
        let t = self.timeouts.command;
        let c = Command::Unknown(line.to_string());
        self.event(None, c, step::NOUNKNOWN, step::NR_UNKN, &|_| None, t)
    }

    /// One header; `value` as it follows the colon (its leading space is dropped unless
    /// the milter asked for `SMFIP_HDR_LEADSPC`).
    pub fn header(&mut self, name: &str, value: &str) -> Result<Reply, Error> {
        let value = if self.steps & step::HDR_LEADSPC != 0 {
            value
        } else {
            value.strip_prefix(' ').unwrap_or(value)
        };
        let c = Command::Header {
            name: name.to_string(),
            value: value.to_string(),
        };
        let t = self.timeouts.content;
        self.event(None, c, step::NOHDRS, step::NR_HDR, &|_| None, t)
    }

    pub fn eoh(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Reply, Error> {
        let t = self.timeouts.content;
        self.event(
            Some(Stage::Eoh),
            Command::Eoh,
            step::NOEOH,
            step::NR_EOH,
            lookup,
            t,
        )
    }

    /// The body in chunks; stops early when the milter says skip (or decides).
    pub fn body(&mut self, body: &[u8]) -> Result<Reply, Error> {
        if self.steps & step::NOBODY != 0 {
            return Ok(Reply::Continue);
        }
        let t = self.timeouts.content;
        for chunk in body.chunks(proto::BODY_CHUNK) {
            self.send(&Command::Body(chunk.to_vec()), t)?;
            if self.steps & step::NR_BODY != 0 {
                continue;
            }
            match self.recv(t)? {
                Response::Continue | Response::Progress => {}
                Response::Skip => return Ok(Reply::Continue),
                Response::Accept => return Ok(Reply::Accept),
                Response::Reject => return Ok(Reply::Reject),
                Response::Tempfail | Response::Shutdown => return Ok(Reply::Tempfail),
                Response::Discard => return Ok(Reply::Discard),
                Response::ReplyCode(c) => return Ok(Reply::Code(c)),
                other => return Err(Error::Garbage(format!("unexpected response {other:?}"))),
            }
        }
        Ok(Reply::Continue)
    }

    /// End of message: the modifications (and a quarantine request) the milter sends,
    /// then its final reply. Modifications it did not negotiate are dropped.
    pub fn eom(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Reply, Vec<Modification>), Error> {
        let t = self.timeouts.content;
        self.send_macros(Stage::Eom, lookup, t)?;
        self.send(&Command::Eom, t)?;
        let mut mods = Vec::new();
        loop {
            let r = self.recv(t)?;
            let needs = match &r {
                Response::AddHeader { .. } => action::ADDHDRS,
                Response::InsertHeader { .. } => action::ADDHDRS,
                Response::ChangeHeader { .. } => action::CHGHDRS,
                Response::ReplaceBody(_) => action::CHGBODY,
                Response::AddRcpt { args: None, .. } => action::ADDRCPT,
                Response::AddRcpt { .. } => action::ADDRCPT_PAR,
                Response::DelRcpt(_) => action::DELRCPT,
                Response::ChangeFrom { .. } => action::CHGFROM,
                Response::Quarantine(_) => action::QUARANTINE,
                Response::Progress => continue,
                Response::Continue | Response::Accept | Response::Skip => {
                    return Ok((Reply::Accept, mods));
                }
                Response::Reject => return Ok((Reply::Reject, mods)),
                Response::Tempfail | Response::Shutdown => return Ok((Reply::Tempfail, mods)),
                Response::Discard => return Ok((Reply::Discard, mods)),
                Response::ReplyCode(c) => return Ok((Reply::Code(c.clone()), mods)),
                Response::OptNeg { .. } => {
                    return Err(Error::Garbage(
                        "option negotiation at end of message".into(),
                    ));
                }
            };
            if self.actions & needs != 0 {
                mods.push(r);
            }
        }
    }

    /// Ends the message (the connection may serve the next one).
    pub fn abort(&mut self) -> Result<(), Error> {
        let t = self.timeouts.command;
        self.send(&Command::Abort, t)
    }

    pub fn quit(&mut self) {
        let t = self.timeouts.command;
        let _ = self.send(&Command::Quit, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Addr::parse("inet:127.0.0.1:8891"),
            Ok(Addr::Inet("127.0.0.1".into(), 8891))
        );
        assert_eq!(
            Addr::parse("inet:8891@localhost"),
            Ok(Addr::Inet("localhost".into(), 8891))
        );
        assert_eq!(
            Addr::parse("inet:[::1]:25"),
            Ok(Addr::Inet("::1".into(), 25))
        );
        assert_eq!(
            Addr::parse("unix:/run/m.sock"),
            Ok(Addr::Unix("/run/m.sock".into()))
        );
        assert!(Addr::parse("tcp:x:1").is_err());
        assert!(Addr::parse("inet:host").is_err());
    }
}

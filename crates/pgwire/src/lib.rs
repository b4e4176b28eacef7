//! `oxipost-pgwire` owns oxipost's PostgreSQL client: a small synchronous frontend of the
//! PostgreSQL frontend/backend protocol version 3 over a TCP or Unix-domain stream, as the
//! `pgsql:` lookup table and the `pgsql:` password database need it. Only the simple-query
//! protocol; authentication by trust, cleartext password, md5 and SCRAM-SHA-256 (RFC 5802 /
//! RFC 7677, without channel binding); connect and read timeouts; results as text
//! (`Vec<Vec<Option<String>>>`, NULL as `None`); server errors (`ErrorResponse`) as
//! [`Error::Server`] with their SQLSTATE.
//!
//! Written by hand rather than with the `postgres` crate because that one runs a tokio
//! runtime inside every process, while the lookup tables are synchronous and owned by one
//! process each. The message codec ([`codec`]) and SCRAM ([`scram`]) are sans-IO; only
//! [`Connection`] touches sockets. Passwords are never put into an error or log text.

pub mod codec;
pub mod scram;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use codec::{Backend, Frontend};

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or address and a port.
    Tcp(String, u16),
    /// A Unix-domain socket: the socket file itself, or a directory holding
    /// `.s.PGSQL.<port>` (as libpq's `host=/dir`).
    Unix(PathBuf, u16),
}

impl Endpoint {
    /// Parses Postfix's pgsql_table(5) `hosts` forms: `host`, `host:port`, `inet:host:port`,
    /// `[v6addr]:port`, `unix:/path` (directory or socket file; the port names the socket
    /// in a directory). The default port is 5432.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix:") {
            if !p.starts_with('/') {
                return Err(format!("{s}: a unix: host needs an absolute path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(p), 5432));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s), 5432));
        }
        let s = s.strip_prefix("inet:").unwrap_or(s);
        if s.is_empty() {
            return Err("empty host".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s}: missing ']'"))?;
            (h, after.strip_prefix(':'))
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, Some(p)),
                _ => (s, None),
            }
        };
        let port = match port {
            None => 5432,
            Some(p) => p.parse().map_err(|_| format!("{s}: bad port {p:?}"))?,
        };
        Ok(Endpoint::Tcp(host.to_string(), port))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(h, p) => write!(f, "inet:{h}:{p}"),
            Endpoint::Unix(p, _) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Login parameters.
#[derive(Clone, Default)]
pub struct Params {
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub connect_timeout: Duration,
    /// Read/write timeout for each exchange.
    pub io_timeout: Duration,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .finish_non_exhaustive()
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Connecting, reading or writing failed (the connection is unusable).
    Io(String),
    /// The server sent something this client does not understand (unusable).
    Protocol(String),
    /// Authentication failed or needs an unsupported method.
    Auth(String),
    /// An `ErrorResponse`: SQLSTATE and message. After a query the connection is still
    /// usable unless the code is of class 08 (connection) or 57 (operator intervention).
    Server {
        severity: String,
        code: String,
        message: String,
    },
}

impl Error {
    /// Whether the connection must be dropped after this error.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Server { code, severity, .. } => {
                code.starts_with("08")
                    || code.starts_with("57")
                    || severity == "FATAL"
                    || severity == "PANIC"
            }
            _ => true,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Auth(e) => write!(f, "authentication: {e}"),
            Error::Server {
                severity,
                code,
                message,
            } => write!(f, "{severity} {code}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// The result of a simple query: column names of the last row description and every data
/// row (of every statement) in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn open_stream(ep: &Endpoint, timeout: Duration) -> Result<Stream, Error> {
    let io = |e: std::io::Error| Error::Io(format!("connect to {ep}: {e}"));
    match ep {
        Endpoint::Tcp(h, p) => {
            let addrs = (h.as_str(), *p).to_socket_addrs().map_err(io)?;
            let mut last = None;
            for a in addrs {
                let r = match nonzero(timeout) {
                    Some(t) => TcpStream::connect_timeout(&a, t),
                    None => TcpStream::connect(a),
                };
                match r {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(Stream::Tcp(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.map_or_else(|| Error::Io(format!("connect to {ep}: no address")), io))
        }
        Endpoint::Unix(path, port) => {
            let p: PathBuf = if Path::new(path).is_dir() {
                path.join(format!(".s.PGSQL.{port}"))
            } else {
                path.clone()
            };
            // A local connect does not block for long; the io timeout covers the rest.
            UnixStream::connect(&p).map(Stream::Unix).map_err(io)
        }
    }
}

/// One open, authenticated connection.
pub struct Connection {
    stream: Stream,
    buf: Vec<u8>,
    endpoint: Endpoint,
    standard_conforming_strings: bool,
}

impl Connection {
    /// Connects, authenticates and waits for the server to be ready.
    pub fn connect(ep: &Endpoint, params: &Params) -> Result<Connection, Error> {
        let stream = open_stream(ep, params.connect_timeout)?;
        // The connect timeout bounds the whole start-up; queries use the io timeout.
        let startup = nonzero(params.connect_timeout).or(nonzero(params.io_timeout));
        stream
            .set_timeouts(startup)
            .map_err(|e| Error::Io(format!("{ep}: {e}")))?;
        let mut c = Connection {
            stream,
            buf: Vec::new(),
            endpoint: ep.clone(),
            standard_conforming_strings: true,
        };
        c.startup(params)?;
        c.stream
            .set_timeouts(nonzero(params.io_timeout))
            .map_err(|e| Error::Io(format!("{ep}: {e}")))?;
        Ok(c)
    }

    /// The endpoint this connection talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The server's `standard_conforming_strings` (on unless it said off): whether a
    /// backslash in a `'...'` literal is an ordinary character.
    pub fn standard_conforming_strings(&self) -> bool {
        self.standard_conforming_strings
    }

    fn send(&mut self, m: &Frontend<'_>) -> Result<(), Error> {
        let bytes = m.encode();
        self.stream
            .write_all(&bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| Error::Io(format!("write to {}: {e}", self.endpoint)))
    }

    fn recv(&mut self) -> Result<Backend, Error> {
        loop {
            match codec::decode(&self.buf).map_err(Error::Protocol)? {
                Some((msg, used)) => {
                    self.buf.drain(..used);
                    if let Backend::ParameterStatus(k, v) = &msg
                        && k == "standard_conforming_strings"
                    {
                        self.standard_conforming_strings = v != "off";
                    }
                    return Ok(msg);
                }
                None => {
                    let mut chunk = [0u8; 8192];
                    let n = self
                        .stream
                        .read(&mut chunk)
                        .map_err(|e| Error::Io(format!("read from {}: {e}", self.endpoint)))?;
                    if n == 0 {
                        return Err(Error::Io(format!(
                            "read from {}: connection closed by server",
                            self.endpoint
                        )));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    fn startup(&mut self, p: &Params) -> Result<(), Error> {
        let db = if p.dbname.is_empty() {
            &p.user
        } else {
            &p.dbname
        };
        self.send(&Frontend::Startup {
            params: &[
                ("user", &p.user),
                ("database", db),
                ("client_encoding", "UTF8"),
                ("application_name", "oxipost"),
            ],
        })?;
        let mut scram: Option<scram::Client> = None;
        loop {
            match self.recv()? {
                Backend::AuthOk => {}
                Backend::AuthCleartext => self.send(&Frontend::Password(p.password.as_bytes()))?,
                Backend::AuthMd5(salt) => {
                    let h = codec::md5_password(&p.user, &p.password, salt);
                    self.send(&Frontend::Password(h.as_bytes()))?;
                }
                Backend::AuthSasl(mechs) => {
                    if !mechs.iter().any(|m| m == "SCRAM-SHA-256") {
                        return Err(Error::Auth(format!(
                            "no supported SASL mechanism in {mechs:?}"
                        )));
                    }
                    let mut nonce = [0u8; 18];
                    getrandom::getrandom(&mut nonce)
                        .map_err(|e| Error::Auth(format!("random nonce: {e}")))?;
                    let c = scram::Client::new(&p.password, &nonce);
                    self.send(&Frontend::SaslInitial {
                        mechanism: "SCRAM-SHA-256",
                        data: c.client_first().as_bytes(),
                    })?;
                    scram = Some(c);
                }
                Backend::AuthSaslContinue(data) => {
                    let c = scram
                        .as_mut()
                        .ok_or_else(|| Error::Protocol("SASL continue without start".into()))?;
                    let fin = c.client_final(&data).map_err(Error::Auth)?;
                    self.send(&Frontend::SaslResponse(fin.as_bytes()))?;
                }
                Backend::AuthSaslFinal(data) => {
                    let c = scram
                        .as_mut()
                        .ok_or_else(|| Error::Protocol("SASL final without start".into()))?;
                    c.verify_and_record(&data).map_err(Error::Auth)?;
                }
                Backend::AuthOther(code) => {
                    return Err(Error::Auth(format!(
                        "unsupported authentication request {code}"
                    )));
                }
                Backend::Error(f) => return Err(f.into_error()),
                Backend::ReadyForQuery(_) => {
                    if let Some(c) = &scram
                        && !c.server_verified()
                    {
                        return Err(Error::Auth("server did not prove the password".into()));
                    }
                    return Ok(());
                }
                Backend::ParameterStatus(..)
                | Backend::BackendKeyData
                | Backend::Notice
                | Backend::Other(_) => {}
                m => return Err(Error::Protocol(format!("unexpected {m:?} during start-up"))),
            }
        }
    }

    /// Runs `sql` with the simple-query protocol and returns its rows. A server error is
    /// returned after the server is ready again, so the connection stays usable unless
    /// [`Error::is_fatal`].
    pub fn simple_query(&mut self, sql: &str) -> Result<Rows, Error> {
        if sql.contains('\0') {
            return Err(Error::Protocol("NUL in query".into()));
        }
        self.send(&Frontend::Query(sql))?;
        let mut out = Rows::default();
        let mut err = None;
        loop {
            match self.recv()? {
                Backend::RowDescription(cols) => out.columns = cols,
                Backend::DataRow(r) => out.rows.push(r),
                Backend::CommandComplete | Backend::EmptyQuery => {}
                Backend::Error(f) => {
                    let e = f.into_error();
                    if e.is_fatal() {
                        return Err(e);
                    }
                    err = Some(e);
                }
                Backend::ReadyForQuery(_) => {
                    return match err {
                        Some(e) => Err(e),
                        None => Ok(out),
                    };
                }
                Backend::ParameterStatus(..) | Backend::Notice | Backend::Other(_) => {}
                m => return Err(Error::Protocol(format!("unexpected {m:?} after a query"))),
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Polite goodbye; the server copes without it.
        let _ = self.stream.write_all(&Frontend::Terminate.encode());
    }
}

/// A string as a PostgreSQL literal's body (inside `'...'`): `'` doubled, and `\` doubled
/// when the server does not have standard_conforming_strings on. `None` for a NUL, which
/// no text value can hold.
pub fn quote_literal_body(s: &str, standard_conforming_strings: bool) -> Option<String> {
    if s.contains('\0') {
        return None;
    }
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if !standard_conforming_strings => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("db.example:5433"),
            Ok(Endpoint::Tcp("db.example".into(), 5433))
        );
        assert_eq!(
            Endpoint::parse("inet:127.0.0.1"),
            Ok(Endpoint::Tcp("127.0.0.1".into(), 5432))
        );
        assert_eq!(
            Endpoint::parse("[::1]:6000"),
            Ok(Endpoint::Tcp("::1".into(), 6000))
        );
        assert_eq!(
            Endpoint::parse("unix:/run/postgresql"),
            Ok(Endpoint::Unix("/run/postgresql".into(), 5432))
        );
        assert!(Endpoint::parse("unix:relative").is_err());
        assert!(Endpoint::parse("h:notaport").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(
            quote_literal_body("o'neil", true).as_deref(),
            Some("o''neil")
        );
        assert_eq!(quote_literal_body("a\\b", true).as_deref(), Some("a\\b"));
        assert_eq!(quote_literal_body("a\\b", false).as_deref(), Some("a\\\\b"));
        assert_eq!(quote_literal_body("a\0b", true), None);
    }

    #[test]
    fn refused_connection_is_io_error() {
        // Port 1 on loopback: nothing listens there in a test environment.
        let p = Params {
            user: "u".into(),
            connect_timeout: Duration::from_secs(2),
            ..Params::default()
        };
        let e = Connection::connect(&Endpoint::Tcp("127.0.0.1".into(), 1), &p).err();
        assert!(matches!(e, Some(Error::Io(_))));
        assert!(e.is_some_and(|e| e.is_fatal()));
    }

    /// A scripted server on loopback: `script` runs on the accepted stream.
    fn fake_server(
        script: impl FnOnce(TcpStream) + Send + 'static,
    ) -> (Endpoint, std::thread::JoinHandle<()>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let h = std::thread::spawn(move || {
            if let Ok((s, _)) = l.accept() {
                script(s);
            }
        });
        (Endpoint::Tcp("127.0.0.1".into(), port), h)
    }

    fn read_startup(s: &mut TcpStream) -> Vec<u8> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).expect("len");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        s.read_exact(&mut body).expect("body");
        body
    }

    fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).expect("head");
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).expect("body");
        (head[0], body)
    }

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn ready() -> Vec<u8> {
        msg(b'Z', b"I")
    }

    fn params(password: &str) -> Params {
        Params {
            user: "alice".into(),
            password: password.into(),
            dbname: "mail".into(),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn cleartext_login_queries_errors_and_loss() {
        let (ep, h) = fake_server(|mut s| {
            let startup = read_startup(&mut s);
            assert!(startup.windows(11).any(|w| w == b"user\0alice\0"));
            assert!(startup.windows(14).any(|w| w == b"database\0mail\0"));
            s.write_all(&msg(b'R', &3u32.to_be_bytes())).expect("w");
            assert_eq!(read_msg(&mut s), (b'p', b"pw\0".to_vec()));
            let mut out = msg(b'R', &0u32.to_be_bytes());
            out.extend(msg(b'S', b"standard_conforming_strings\0off\0"));
            out.extend(msg(b'K', &[0; 8]));
            out.extend(ready());
            s.write_all(&out).expect("w");
            // A query with one row.
            assert_eq!(read_msg(&mut s), (b'Q', b"SELECT 1\0".to_vec()));
            let mut t = 1u16.to_be_bytes().to_vec();
            t.extend_from_slice(b"v\0");
            t.extend_from_slice(&[0; 18]);
            let mut d = 1u16.to_be_bytes().to_vec();
            d.extend_from_slice(&1i32.to_be_bytes());
            d.push(b'1');
            let mut out = msg(b'T', &t);
            out.extend(msg(b'D', &d));
            out.extend(msg(b'N', b"SWARNING\0Mnotice\0\0"));
            out.extend(msg(b'C', b"SELECT 1\0"));
            out.extend(ready());
            s.write_all(&out).expect("w");
            // A query that fails: the connection stays usable.
            let _ = read_msg(&mut s);
            let mut out = msg(b'E', b"SERROR\0VERROR\0C42601\0Msyntax error\0\0");
            out.extend(ready());
            s.write_all(&out).expect("w");
            // Then the server goes away mid-conversation.
            let _ = read_msg(&mut s);
        });
        let mut c = Connection::connect(&ep, &params("pw")).expect("connect");
        assert!(!c.standard_conforming_strings());
        let r = c.simple_query("SELECT 1").expect("rows");
        assert_eq!(r.columns, vec!["v".to_string()]);
        assert_eq!(r.rows, vec![vec![Some("1".to_string())]]);
        let e = c.simple_query("SELEC").expect_err("syntax");
        assert!(
            matches!(&e, Error::Server { code, .. } if code == "42601") && !e.is_fatal(),
            "{e:?}"
        );
        let e = c.simple_query("SELECT 2").expect_err("gone");
        assert!(matches!(e, Error::Io(_)) && e.is_fatal());
        assert!(c.simple_query("a\0b").is_err());
        h.join().expect("server");
    }

    #[test]
    fn scram_server_must_prove_the_password() {
        // The server asks for SCRAM, then claims success without the server signature.
        let (ep, h) = fake_server(|mut s| {
            let _ = read_startup(&mut s);
            let mut r = 10u32.to_be_bytes().to_vec();
            r.extend_from_slice(b"SCRAM-SHA-256\0\0");
            s.write_all(&msg(b'R', &r)).expect("w");
            let (kind, body) = read_msg(&mut s);
            assert_eq!(kind, b'p');
            assert!(body.starts_with(b"SCRAM-SHA-256\0"));
            let mut out = msg(b'R', &0u32.to_be_bytes());
            out.extend(ready());
            let _ = s.write_all(&out);
        });
        let e = Connection::connect(&ep, &params("secret")).err();
        assert!(
            matches!(&e, Some(Error::Auth(m)) if m.contains("prove")),
            "{e:?}"
        );
        assert!(!format!("{e:?}").contains("secret"));
        h.join().expect("server");
    }

    #[test]
    fn server_error_at_login_and_unsupported_method() {
        let (ep, h) = fake_server(|mut s| {
            let _ = read_startup(&mut s);
            let _ = s.write_all(&msg(
                b'E',
                b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed\0\0",
            ));
        });
        let e = Connection::connect(&ep, &params("x")).err();
        assert!(
            matches!(&e, Some(Error::Server { code, .. }) if code == "28P01"),
            "{e:?}"
        );
        h.join().expect("server");
        let (ep, h) = fake_server(|mut s| {
            let _ = read_startup(&mut s);
            let _ = s.write_all(&msg(b'R', &7u32.to_be_bytes())); // GSSAPI
        });
        let e = Connection::connect(&ep, &params("x")).err();
        assert!(matches!(e, Some(Error::Auth(_))), "{e:?}");
        h.join().expect("server");
    }
}

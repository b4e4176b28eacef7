//! One blocking connection: connect and authenticate, run text queries, quit.

use crate::Error;
use crate::packet::{read_packet, write_packet};
use crate::proto::{
    self, AuthReply, CLIENT_CAPS, COM_PING, COM_QUERY, COM_QUIT, Column, OkPacket, cap, status,
};
use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// The server's socket where Debian's MariaDB and MySQL put it.
pub const DEFAULT_SOCKET: &str = "/run/mysqld/mysqld.sock";

impl Endpoint {
    /// Parses Postfix's `hosts` forms: `unix:/path`, `inet:host[:port]`, `host[:port]`,
    /// `[v6addr]:port`; the port defaults to 3306. The name `localhost` means the
    /// server's Unix socket ([`DEFAULT_SOCKET`]), as in libmysqlclient, which Postfix
    /// hands its host names to (use `127.0.0.1` for TCP).
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if !p.starts_with('/') {
                return Err(format!("{s}: a Unix socket needs an absolute path"));
            }
            return Ok(Endpoint::Unix(p.into()));
        }
        let hp = s.strip_prefix("inet:").unwrap_or(s);
        let (host, port) = if let Some(rest) = hp.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{s}: missing ']'"))?;
            (h, after.strip_prefix(':'))
        } else if hp.matches(':').count() == 1 {
            let (h, p) = hp.split_once(':').unwrap_or((hp, ""));
            (h, Some(p))
        } else {
            (hp, None)
        };
        if host.is_empty() {
            return Err(format!("{s}: empty host name"));
        }
        if host == "localhost" {
            return Ok(Endpoint::Unix(DEFAULT_SOCKET.into()));
        }
        let port = match port {
            None => 3306,
            Some(p) => p.parse().map_err(|_| format!("{s}: bad port {p:?}"))?,
        };
        Ok(Endpoint::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "inet:[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "inet:{host}:{port}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How to connect.
#[derive(Clone)]
pub struct Opts {
    pub endpoint: Endpoint,
    pub user: String,
    pub password: String,
    /// The default database (empty: none).
    pub database: String,
    pub connect_timeout: Duration,
    /// Bounds every read and write on the connection.
    pub read_timeout: Duration,
    /// The largest packet accepted from the server.
    pub max_packet: usize,
    /// Ask for `CLIENT_DEPRECATE_EOF` when the server offers it.
    pub deprecate_eof: bool,
}

// The password stays out of debug output.
impl std::fmt::Debug for Opts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opts")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Opts {
    pub fn new(endpoint: Endpoint, user: &str, password: &str, database: &str) -> Opts {
        Opts {
            endpoint,
            user: user.into(),
            password: password.into(),
            database: database.into(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_packet: 64 << 20,
            deprecate_eof: true,
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The result of a query: column definitions and rows of optional (NULL) byte strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    pub affected_rows: u64,
}

/// An authenticated connection.
pub struct Conn {
    io: BufReader<Stream>,
    seq: u8,
    caps: u32,
    status: u16,
    max_packet: usize,
    broken: bool,
    server_version: String,
}

fn open(opts: &Opts) -> Result<Stream, Error> {
    let s = match &opts.endpoint {
        Endpoint::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_read_timeout(Some(opts.read_timeout))?;
            s.set_write_timeout(Some(opts.read_timeout))?;
            Stream::Unix(s)
        }
        Endpoint::Tcp { host, port } => {
            let mut last = None;
            let mut found = None;
            for a in (host.as_str(), *port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&a, opts.connect_timeout) {
                    Ok(s) => {
                        found = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let s = match (found, last) {
                (Some(s), _) => s,
                (None, Some(e)) => return Err(e.into()),
                (None, None) => {
                    return Err(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{host}: no address"),
                    )));
                }
            };
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(opts.read_timeout))?;
            s.set_write_timeout(Some(opts.read_timeout))?;
            Stream::Tcp(s)
        }
    };
    Ok(s)
}

impl Conn {
    /// Connects, reads the handshake and logs in (with the default database, if any).
    pub fn connect(opts: &Opts) -> Result<Conn, Error> {
        let mut c = Conn {
            io: BufReader::new(open(opts)?),
            seq: 0,
            caps: 0,
            status: 0,
            max_packet: opts.max_packet,
            broken: false,
            server_version: String::new(),
        };
        if let Err(e) = c.login(opts) {
            // No COM_QUIT in the middle of the authentication exchange.
            c.broken = true;
            return Err(e);
        }
        Ok(c)
    }

    fn read(&mut self) -> Result<Vec<u8>, Error> {
        read_packet(&mut self.io, &mut self.seq, self.max_packet)
    }

    fn write(&mut self, payload: &[u8]) -> Result<(), Error> {
        write_packet(self.io.get_mut(), payload, &mut self.seq)
    }

    fn login(&mut self, opts: &Opts) -> Result<(), Error> {
        let hs = proto::parse_handshake(&self.read()?)?;
        self.server_version.clone_from(&hs.server_version);
        let mut caps = CLIENT_CAPS & hs.capabilities | cap::PROTOCOL_41;
        if !opts.database.is_empty() && hs.capabilities & cap::CONNECT_WITH_DB != 0 {
            caps |= cap::CONNECT_WITH_DB;
        }
        if opts.deprecate_eof {
            caps |= cap::DEPRECATE_EOF & hs.capabilities;
        }
        self.caps = caps;
        let secure = matches!(opts.endpoint, Endpoint::Unix(_));
        let pw = opts.password.as_bytes();
        // An unknown default plugin: answer as mysql_native_password, the server then
        // switches to the user's plugin if it differs.
        let (mut plugin, first) = match proto::auth_response(&hs.plugin, pw, &hs.nonce, secure) {
            Some(a) => (hs.plugin.clone(), a),
            None => (
                "mysql_native_password".to_string(),
                proto::scramble_native(pw, &hs.nonce),
            ),
        };
        let resp = proto::handshake_response(
            caps,
            &opts.user,
            &first,
            &opts.database,
            &plugin,
            u32::try_from(self.max_packet).unwrap_or(u32::MAX),
        );
        self.write(&resp)?;
        for _ in 0..8 {
            match proto::parse_auth_reply(&self.read()?, caps)? {
                AuthReply::Ok(ok) => {
                    self.status = ok.status;
                    return self.use_db_fallback(opts, hs.capabilities);
                }
                AuthReply::Switch { plugin: p, nonce } => {
                    let Some(a) = proto::auth_response(&p, pw, &nonce, secure) else {
                        return Err(Error::Protocol(format!(
                            "authentication plugin {p} is not supported"
                        )));
                    };
                    plugin = p;
                    self.write(&a)?;
                }
                AuthReply::More(data) if plugin == "caching_sha2_password" => {
                    match data.as_slice() {
                        // Fast authentication succeeded; the OK packet follows.
                        [3] => {}
                        // Full authentication: the password in clear, only over a
                        // transport that keeps it private.
                        [4] if secure => {
                            let mut v = pw.to_vec();
                            v.push(0);
                            self.write(&v)?;
                        }
                        [4] => {
                            return Err(Error::Protocol(
                                "caching_sha2_password full authentication needs TLS or a \
                                 Unix socket (not supported over plain TCP)"
                                    .into(),
                            ));
                        }
                        _ => {
                            return Err(Error::Protocol(
                                "unexpected caching_sha2_password data".into(),
                            ));
                        }
                    }
                }
                AuthReply::More(_) => {
                    return Err(Error::Protocol(format!(
                        "unexpected authentication data for {plugin}"
                    )));
                }
            }
        }
        Err(Error::Protocol("authentication did not finish".into()))
    }

    /// A server without `CONNECT_WITH_DB` gets a `USE` statement instead.
    fn use_db_fallback(&mut self, opts: &Opts, server_caps: u32) -> Result<(), Error> {
        if opts.database.is_empty() || server_caps & cap::CONNECT_WITH_DB != 0 {
            return Ok(());
        }
        let db = opts.database.replace('`', "``");
        self.query(&format!("USE `{db}`")).map(|_| ())
    }

    /// The server's version string.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// The negotiated capability flags.
    pub fn capabilities(&self) -> u32 {
        self.caps
    }

    /// Whether an error left the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Escapes a value for a quoted literal, following the server's current SQL mode.
    pub fn escape(&self, s: &str) -> String {
        crate::escape(s, self.status & status::NO_BACKSLASH_ESCAPES != 0)
    }

    /// Runs one statement with the text protocol.
    pub fn query(&mut self, sql: &str) -> Result<ResultSet, Error> {
        if self.broken {
            return Err(Error::Protocol("connection is no longer usable".into()));
        }
        let r = self.query_inner(sql);
        if let Err(e) = &r
            && e.is_broken()
        {
            self.broken = true;
        }
        r
    }

    fn query_inner(&mut self, sql: &str) -> Result<ResultSet, Error> {
        self.seq = 0;
        let mut payload = Vec::with_capacity(sql.len() + 1);
        payload.push(COM_QUERY);
        payload.extend_from_slice(sql.as_bytes());
        self.write(&payload)?;
        let mut first: Option<ResultSet> = None;
        loop {
            let (rs, more) = self.read_result()?;
            if first.is_none() {
                first = Some(rs);
            }
            if !more {
                return Ok(first.unwrap_or_default());
            }
        }
    }

    /// Reads one result (OK or a result set); true when another result follows.
    fn read_result(&mut self) -> Result<(ResultSet, bool), Error> {
        let p = self.read()?;
        match p.first() {
            Some(0x00) => {
                let ok = proto::parse_ok(&p, self.caps)?;
                self.status = ok.status;
                let rs = ResultSet {
                    affected_rows: ok.affected_rows,
                    ..ResultSet::default()
                };
                return Ok((rs, ok.status & status::MORE_RESULTS_EXISTS != 0));
            }
            Some(0xff) => return Err(proto::parse_err(&p)),
            Some(0xfb) => {
                return Err(Error::Protocol("LOCAL INFILE request refused".into()));
            }
            _ => {}
        }
        let n = crate::packet::Reader::new(&p)
            .lenenc_int()?
            .ok_or_else(|| Error::Protocol("bad column count".into()))?;
        let n = usize::try_from(n)
            .ok()
            .filter(|&n| n > 0 && n <= 4096)
            .ok_or_else(|| Error::Protocol(format!("bad column count {n}")))?;
        let mut columns = Vec::with_capacity(n);
        for _ in 0..n {
            columns.push(proto::parse_column(&self.read()?)?);
        }
        if self.caps & cap::DEPRECATE_EOF == 0 {
            let p = self.read()?;
            if !proto::is_end_of_rows(&p, 0) {
                return Err(Error::Protocol(
                    "missing EOF after column definitions".into(),
                ));
            }
        }
        let mut rows = Vec::new();
        loop {
            let p = self.read()?;
            if p.first() == Some(&0xff) {
                return Err(proto::parse_err(&p));
            }
            if proto::is_end_of_rows(&p, self.caps) {
                let end: OkPacket = if self.caps & cap::DEPRECATE_EOF != 0 {
                    proto::parse_ok(&p, self.caps)?
                } else {
                    proto::parse_eof(&p)?
                };
                self.status = end.status;
                let more = end.status & status::MORE_RESULTS_EXISTS != 0;
                return Ok((
                    ResultSet {
                        columns,
                        rows,
                        affected_rows: 0,
                    },
                    more,
                ));
            }
            rows.push(proto::parse_row(&p, n)?);
        }
    }

    /// `COM_PING`.
    pub fn ping(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Protocol("connection is no longer usable".into()));
        }
        self.seq = 0;
        let r = self.write(&[COM_PING]).and_then(|()| {
            let p = self.read()?;
            match proto::parse_auth_reply(&p, self.caps)? {
                AuthReply::Ok(_) => Ok(()),
                _ => Err(Error::Protocol("unexpected reply to COM_PING".into())),
            }
        });
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Sends `COM_QUIT` and closes the connection.
    pub fn close(mut self) {
        self.quit();
    }

    fn quit(&mut self) {
        if !self.broken {
            self.seq = 0;
            let _ = self.write(&[COM_QUIT]);
            self.broken = true;
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The server would otherwise log an aborted connection.
        self.quit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let tcp = |h: &str, p| Endpoint::Tcp {
            host: h.into(),
            port: p,
        };
        assert_eq!(Endpoint::parse("db1"), Ok(tcp("db1", 3306)));
        assert_eq!(Endpoint::parse("inet:db1:3307"), Ok(tcp("db1", 3307)));
        assert_eq!(Endpoint::parse("127.0.0.1:33"), Ok(tcp("127.0.0.1", 33)));
        assert_eq!(Endpoint::parse("[::1]:34"), Ok(tcp("::1", 34)));
        assert_eq!(Endpoint::parse("::1"), Ok(tcp("::1", 3306)));
        assert_eq!(
            Endpoint::parse("unix:/run/mysqld/mysqld.sock"),
            Ok(Endpoint::Unix("/run/mysqld/mysqld.sock".into()))
        );
        assert!(Endpoint::parse("unix:rel").is_err());
        for l in ["localhost", "inet:localhost:3306"] {
            assert_eq!(
                Endpoint::parse(l),
                Ok(Endpoint::Unix(DEFAULT_SOCKET.into()))
            );
        }
        assert!(Endpoint::parse("db:x").is_err());
        assert!(Endpoint::parse("inet:").is_err());
        assert_eq!(tcp("::1", 5).to_string(), "inet:[::1]:5");
    }

    /// A scripted server on a socket pair: handshake, auth switch, one query with
    /// a NULL and EOF packets (no DEPRECATE_EOF).
    #[test]
    fn scripted_server() {
        use crate::packet::{frame, put_lenenc_bytes};
        let dir = std::env::temp_dir().join(format!("mysqlwire-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("sock");
        let _ = std::fs::remove_file(&path);
        let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || -> Result<Vec<u8>, Error> {
            let (mut s, _) = l.accept()?;
            let mut seq = 0;
            let mut hs = vec![10];
            hs.extend_from_slice(b"8.0.0-fake\0\x01\0\0\0abcdefgh\0");
            let caps = (CLIENT_CAPS | cap::CONNECT_WITH_DB) & !cap::DEPRECATE_EOF;
            hs.extend_from_slice(&(caps as u16).to_le_bytes());
            hs.extend_from_slice(&[45, 2, 0]);
            hs.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
            hs.push(21);
            hs.extend_from_slice(&[0; 10]);
            hs.extend_from_slice(b"ijklmnopqrst\0client_ed25519\0");
            s.write_all(&frame(&hs, &mut seq))?;
            let resp = read_packet(&mut s, &mut seq, 1 << 20)?;
            s.write_all(&frame(
                b"\xfemysql_native_password\0ABCDEFGHIJKLMNOPQRST\0",
                &mut seq,
            ))?;
            let scr = read_packet(&mut s, &mut seq, 1 << 20)?;
            assert_eq!(
                scr,
                proto::scramble_native(b"secret", b"ABCDEFGHIJKLMNOPQRST")
            );
            s.write_all(&frame(&[0, 0, 0, 2, 0, 0, 0], &mut seq))?;
            let mut seq = 0;
            let q = read_packet(&mut s, &mut seq, 1 << 20)?;
            assert_eq!(q, b"\x03SELECT a, b FROM t");
            let mut out = frame(&[2], &mut seq);
            for name in ["a", "b"] {
                let mut c = Vec::new();
                for x in ["def", "db", "t", "t", name, name] {
                    put_lenenc_bytes(&mut c, x.as_bytes());
                }
                c.extend_from_slice(&[0x0c, 45, 0, 0, 1, 0, 0, 253, 0, 0, 0, 0, 0]);
                out.extend(frame(&c, &mut seq));
            }
            out.extend(frame(&[0xfe, 0, 0, 2, 0], &mut seq));
            out.extend(frame(b"\x01x\xfb", &mut seq));
            out.extend(frame(b"\x02yz\x01w", &mut seq));
            out.extend(frame(&[0xfe, 0, 0, 2, 0], &mut seq));
            s.write_all(&out)?;
            let mut seq = 0;
            let quit = read_packet(&mut s, &mut seq, 1 << 20)?;
            assert_eq!(quit, [COM_QUIT]);
            Ok(resp)
        });
        let opts = Opts::new(Endpoint::Unix(path.clone()), "joe", "secret", "db");
        let mut c = Conn::connect(&opts).expect("connect");
        assert_eq!(c.server_version(), "8.0.0-fake");
        let rs = c.query("SELECT a, b FROM t").expect("query");
        assert_eq!(rs.columns.len(), 2);
        assert_eq!(
            rs.rows,
            vec![
                vec![Some(b"x".to_vec()), None],
                vec![Some(b"yz".to_vec()), Some(b"w".to_vec())]
            ]
        );
        c.close();
        let resp = server.join().expect("join").expect("server");
        // The response named the user and the database, and fell back to native.
        assert!(resp.windows(5).any(|w| w == b"joe\0\x14"));
        assert!(resp.ends_with(b"db\0mysql_native_password\0"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A Handshake v10 payload offering `plugin`, nonce `abcdefghijklmnopqrst`.
    fn handshake(plugin: &str) -> Vec<u8> {
        let mut hs = vec![10];
        hs.extend_from_slice(b"8.0.36\0\x02\0\0\0abcdefgh\0");
        let caps = CLIENT_CAPS | cap::CONNECT_WITH_DB | cap::DEPRECATE_EOF;
        hs.extend_from_slice(&(caps as u16).to_le_bytes());
        hs.extend_from_slice(&[255, 2, 0]);
        hs.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        hs.push(21);
        hs.extend_from_slice(&[0; 10]);
        hs.extend_from_slice(b"ijklmnopqrst\0");
        hs.extend_from_slice(plugin.as_bytes());
        hs.push(0);
        hs
    }

    /// caching_sha2_password: the fast path over TCP, full authentication over a Unix
    /// socket (the password in clear), and full authentication refused over plain TCP.
    #[test]
    fn caching_sha2() {
        use crate::packet::frame;
        const NONCE: &[u8] = b"abcdefghijklmnopqrst";
        // (reply to the scramble, over unix?, the client must succeed)
        for (more, unix, ok) in [(3u8, false, true), (4, true, true), (4, false, false)] {
            let dir = std::env::temp_dir().join(format!(
                "mysqlwire-sha2-{}-{more}-{unix}",
                std::process::id()
            ));
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join("sock");
            let _ = std::fs::remove_file(&path);
            let script = move |s: &mut dyn ReadWrite| -> Result<(), Error> {
                let mut seq = 0;
                s.write_all(&frame(&handshake("caching_sha2_password"), &mut seq))?;
                let resp = read_packet(&mut &mut *s, &mut seq, 1 << 20)?;
                let scramble = proto::scramble_caching_sha2(b"secret", NONCE);
                assert!(resp.windows(32).any(|w| w == scramble.as_slice()));
                assert!(resp.ends_with(b"caching_sha2_password\0"));
                s.write_all(&frame(&[1, more], &mut seq))?;
                if more == 4 {
                    if !unix {
                        return Ok(());
                    }
                    assert_eq!(read_packet(&mut &mut *s, &mut seq, 1 << 20)?, b"secret\0");
                }
                s.write_all(&frame(&[0, 0, 0, 2, 0, 0, 0], &mut seq))?;
                let mut seq = 0;
                assert_eq!(read_packet(&mut &mut *s, &mut seq, 1 << 20)?, [COM_QUIT]);
                Ok(())
            };
            let (endpoint, server) = if unix {
                let l = std::os::unix::net::UnixListener::bind(&path).expect("bind");
                let t = std::thread::spawn(move || {
                    let (mut s, _) = l.accept()?;
                    script(&mut s)
                });
                (Endpoint::Unix(path.clone()), t)
            } else {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let port = l.local_addr().expect("addr").port();
                let t = std::thread::spawn(move || {
                    let (mut s, _) = l.accept()?;
                    script(&mut s)
                });
                (
                    Endpoint::Tcp {
                        host: "127.0.0.1".into(),
                        port,
                    },
                    t,
                )
            };
            let r = Conn::connect(&Opts::new(endpoint, "joe", "secret", "db"));
            match (r, ok) {
                (Ok(c), true) => c.close(),
                (Err(Error::Protocol(m)), false) => assert!(m.contains("full authentication")),
                (Ok(_), false) => panic!("full authentication over TCP must be refused"),
                (Err(e), _) => panic!("{e}"),
            }
            server.join().expect("join").expect("server");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A server that accepts and never speaks: the read timeout ends the wait.
    #[test]
    fn silent_server_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let mut o = Opts::new(
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            "u",
            "p",
            "",
        );
        o.read_timeout = Duration::from_millis(200);
        // The test itself stays bounded even if the timeout were not applied.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(matches!(Conn::connect(&o), Err(Error::Io(_))));
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(true));
        drop(l);
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}
}

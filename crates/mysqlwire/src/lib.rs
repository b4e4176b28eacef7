//! A small synchronous client for the MySQL/MariaDB client/server protocol, enough for
//! lookup tables and password databases: Handshake v10 and `HandshakeResponse41`,
//! `mysql_native_password`, `caching_sha2_password` (fast path; full authentication only
//! over a Unix socket, where sending the password in clear is what the server expects),
//! MariaDB's/MySQL's auth switch request, `COM_QUERY` with text result sets (with and
//! without `CLIENT_DEPRECATE_EOF`), `ERR` packets as [`Error::Server`], packet sequence ids,
//! reassembly of 16 MB split packets, connect/read/write timeouts and `COM_QUIT`, over TCP
//! or a Unix socket.
//!
//! The protocol is split so it can be tested without a server: [`packet`] holds the
//! codec (length-encoded integers and strings, packet framing), [`proto`] the pure
//! builders and parsers of each packet and the password scrambles; [`Conn`] only moves
//! bytes between them and a socket. No TLS, no prepared statements, no compression, no
//! `LOCAL INFILE` (refused), no connection pool: one blocking connection per caller.

pub mod conn;
pub mod packet;
pub mod proto;

pub use conn::{Conn, DEFAULT_SOCKET, Endpoint, Opts, ResultSet};

use std::fmt;

/// What went wrong; [`Error::is_broken`] tells whether the connection must be dropped.
#[derive(Debug)]
pub enum Error {
    /// The socket failed or timed out (connection lost; reconnect).
    Io(std::io::Error),
    /// The server said something this client cannot parse or does not support
    /// (connection no longer usable).
    Protocol(String),
    /// An `ERR` packet: the server refused the login or the statement.
    Server {
        code: u16,
        state: String,
        message: String,
    },
}

impl Error {
    /// True when the connection is out of step or gone and must not be used again.
    /// A server error after a statement leaves the connection usable.
    pub fn is_broken(&self) -> bool {
        !matches!(self, Error::Server { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::Server {
                code,
                state,
                message,
            } => write!(f, "ERROR {code} ({state}): {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

/// Escapes a string for a quoted SQL literal as `mysql_real_escape_string` does:
/// `\`, `'`, `"`, NUL, LF, CR and ^Z get a backslash. With the server's
/// `NO_BACKSLASH_ESCAPES` mode (`no_backslash` true) only `'` is doubled.
pub fn escape(s: &str, no_backslash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match (c, no_backslash) {
            ('\'', true) => out.push_str("''"),
            (c, true) => out.push(c),
            ('\\', _) => out.push_str("\\\\"),
            ('\'', _) => out.push_str("\\'"),
            ('"', _) => out.push_str("\\\""),
            ('\0', _) => out.push_str("\\0"),
            ('\n', _) => out.push_str("\\n"),
            ('\r', _) => out.push_str("\\r"),
            ('\x1a', _) => out.push_str("\\Z"),
            (c, _) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            escape("a'b\"c\\d\0e\nf\rg\x1ah", false),
            "a\\'b\\\"c\\\\d\\0e\\nf\\rg\\Zh"
        );
        assert_eq!(escape("o'neil\\x", true), "o''neil\\x");
        assert_eq!(escape("plain@example.com", false), "plain@example.com");
    }
}

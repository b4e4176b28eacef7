//! Sans-IO POP3 server protocol core for oxipost's `pop3d`: RFC 1939 (`USER`/`PASS`,
//! `STAT`, `LIST`, `RETR`, `DELE`, `NOOP`, `RSET`, `QUIT`, `TOP`, `UIDL`), RFC 2449
//! (`CAPA`, response codes `[IN-USE]`, `[SYS/TEMP]`, `[AUTH]`), RFC 5034 (`AUTH` with
//! initial responses) and RFC 2595 (`STLS`).
//!
//! This crate owns one connection's conversation: line framing with a capped buffer,
//! command syntax and state checks, the per-session deletion marks, the reply texts
//! (Dovecot's where RFC 1939 leaves them open), dot-stuffing and CRLF conversion of
//! messages ([`write_message`]) and the POP3 size of a message ([`wire_size`]). It must
//! not do IO (no sockets, no files, no clock, no TLS) and knows nothing of mailbox
//! formats, configuration files or the authentication service: checking credentials,
//! reading and removing messages and the TLS handshake are [`Event`]s for the driver.
//! Peer errors become `-ERR` replies, never `Err` or panics.
//!
//! # Driving a session
//!
//! ```
//! use oxipost_pop3_proto::{Config, Event, Message, Session, Step};
//!
//! let mut s = Session::new(Config::new());
//! let mut wire = Vec::new();
//! s.greet(&mut wire);
//! s.feed(b"USER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nQUIT\r\n");
//! loop {
//!     match s.next(&mut wire) {
//!         Step::Event(Event::Authenticate { .. }) => {
//!             // ask the authentication service, open the mailbox, then:
//!             s.logged_in(vec![Message { size: 9, uid: "a1".into() }], &mut wire);
//!         }
//!         Step::Event(Event::Retrieve { .. }) => s.message(Ok(b"S: x\n\nhi\n"), &mut wire),
//!         Step::Event(Event::Update { deleted }) => s.updated(Ok(deleted.len() as u64), &mut wire),
//!         Step::Event(_) | Step::Wait => {}
//!         Step::NeedInput | Step::Close => break,
//!     }
//! }
//! assert!(wire.ends_with(b"+OK 9 octets\r\nS: x\r\n\r\nhi\r\n.\r\n+OK Logging out.\r\n"));
//! ```
//!
//! # Behaviour notes
//!
//! - `USER`/`PASS` become a SASL `PLAIN` exchange whose initial response the session
//!   builds; the driver passes it to the authentication service unread.
//! - `APOP` is refused: the authentication service stores password hashes and never
//!   hands out the plaintext that APOP's digest needs.
//! - Input pipelined after `STLS` is discarded when TLS starts (CVE-2011-0411).
//! - Lines longer than [`Config::max_line`] are answered `-ERR Input line too long.` and
//!   skipped; unknown or malformed commands count towards [`Config::max_bad_commands`].
//! - Message numbers are decimal digits only (`+1`, `-1`, `0x1` are errors); `TOP`'s line
//!   count likewise (a negative count is an error).

mod message;
mod session;

pub use message::{wire_size, write_message};
pub use session::{Config, Event, LoginFailure, Message, Secret, Session, Stats, Step};

#[cfg(test)]
mod tests;

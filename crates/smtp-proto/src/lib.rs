//! Sans-IO SMTP server protocol core for oxipost's `smtpd`.
//!
//! This crate owns the SMTP conversation of one connection: line framing
//! with capped buffers, command parsing (RFC 5321, PIPELINING, SIZE,
//! 8BITMIME, DSN, SMTPUTF8, CHUNKING, STARTTLS, AUTH), sequencing and its
//! errors, error limits, DATA dot-unstuffing with smuggling-safe
//! end-of-data detection, BDAT chunk framing, and Postfix-compatible reply
//! texts with enhanced status codes. It must not do IO (no sockets, no
//! clock, no TLS, no files) and must not make policy: whether a client,
//! sender, recipient, message or login is acceptable is always asked of the
//! driver through an [`Event`], and the driver's answer becomes the reply.
//! Peer errors become replies, never `Err` or panics.
//!
//! # Driving a session
//!
//! ```
//! use oxipost_smtp_proto::{Event, ServerConfig, Session, Step};
//!
//! let mut s = Session::new(ServerConfig::new("mx.example"));
//! s.greet();
//! s.feed(b"EHLO client.example\r\n");
//! let mut wire = Vec::new();
//! loop {
//!     match s.next() {
//!         Step::Output(bytes) => wire.extend(bytes), // write to the socket
//!         Step::Event(Event::Helo { .. }) => s.accept().expect("pending"),
//!         Step::Event(_) => {}                       // see Event's docs
//!         Step::NeedInput => break,                  // read, then feed()
//!         Step::Close => break,                      // flush and close
//!     }
//! }
//! assert!(wire.starts_with(b"220 mx.example ESMTP\r\n250-mx.example\r\n"));
//! ```
//!
//! A decision may also be answered later (after an asynchronous policy
//! lookup): until then `next()` returns the output so far, then `NeedInput`,
//! and further input is only buffered (see [`Session::wants_read`]).
//!
//! # Behaviour notes
//!
//! - Replies follow Postfix's smtpd; unknown commands get `502 5.5.2 Error:
//!   command not recognized` as in Postfix.
//! - Lines in DATA longer than `line_length_limit` are passed through
//!   unsplit (Postfix splits them into records but re-joins them on output,
//!   so the wire result is the same). Command lines longer than the limit
//!   are discarded up to their LF and answered `500 5.5.2 Error: line too
//!   long`.
//! - BDAT content is passed raw (no dot or newline handling), per RFC 3030.
//! - Pipelining violations (`forbid_unauth_pipelining`) are judged on the
//!   bytes fed so far, so they depend on how the driver's reads split the
//!   stream, exactly as in Postfix.
//! - Addresses must have a domain, except `<postmaster>` in RCPT.

mod address;
mod command;
mod config;
mod data;
mod event;
mod reply;
mod session;
mod stats;

pub use address::Address;
pub use config::{BareNewline, Extensions, Limits, ServerConfig};
pub use event::{Body, Event, MailFrom, Notify, Orcpt, RcptTo, Ret, Step};
pub use session::{NoPendingDecision, Session};
pub use stats::CommandStats;

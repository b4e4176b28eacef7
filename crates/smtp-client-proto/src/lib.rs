//! The sans-IO SMTP and LMTP client core of oxipost's `smtp`/`lmtp` delivery agents.
//!
//! It owns the client side of the protocol and nothing else: parsing server replies
//! ([`ReplyParser`], multi-line, size-capped before allocating), reading the EHLO/LHLO
//! extensions ([`Extensions`]), formatting commands ([`command`]), preparing message
//! content for the wire ([`content`]: CRLF line ends, dot-stuffing, 8-bit detection and
//! the quoted-printable downgrade for servers without `8BITMIME`), and one mail
//! transaction as a state machine ([`Transaction`]: RFC 2920 pipelining groups of
//! `MAIL`/`RCPT`/`DATA`, `BDAT` for `CHUNKING`, DSN parameters, LMTP's per-recipient
//! replies after the content) that turns replies into per-recipient results.
//!
//! **Architecture Invariant:** no sockets, no TLS, no clock, no configuration, no
//! logging. The driver (`crates/smtp`) writes the bytes the core hands out, reads bytes
//! into the [`ReplyParser`], applies the per-stage timeouts that [`Stage`] names, and swaps
//! the transport for STARTTLS. A peer's garbage becomes a [`ReplyError`], never a panic.

pub mod command;
pub mod content;
mod ext;
mod reply;
mod transaction;

pub use ext::Extensions;
pub use reply::{MAX_LINE, MAX_LINES, Reply, ReplyError, ReplyParser};
pub use transaction::{
    Body, ContentMode, MailSpec, Output, RcptResult, RcptSpec, Stage, Transaction, TxOptions,
};

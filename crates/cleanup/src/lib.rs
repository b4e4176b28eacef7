//! The cleanup stage of oxipost, as a **library used by every entry point** (`smtpd` now,
//! `pickup` and `sendmail` later) rather than Postfix's separate `cleanup` daemon: the entry
//! point streams message content through a [`Cleanup`] filter straight into its queue writer,
//! which saves one process hop and one copy of every message, and keeps the group commit in
//! the process that answers the client.
//!
//! It owns what Postfix's cleanup does to message *content*: it adds the `Message-Id:`,
//! `Date:` and `From:` headers a message lacks ([`Cleanup`]), keeps the header/body boundary,
//! bounds each header by `header_size_limit`, and renders the `Received:` header smtpd
//! prepends ([`received_header`]) and the RFC 5322 date ([`mail_date`]). It is the documented
//! hook for what comes next: canonical/masquerade rewriting of header addresses and
//! `header_checks`/`body_checks` go into [`Cleanup`]'s per-header and per-body-line steps
//! (see `header.rs`), and envelope rewriting into the entry point's envelope path.
//!
//! It must not do IO of its own (it writes only to the [`std::io::Write`] it is handed), read
//! configuration (callers fill [`CleanupOptions`]), log, or decide policy about clients or
//! recipients. It never fails on message content: any bytes are accepted and passed on.

mod date;
mod header;
mod received;

pub use date::{mail_date, message_id_stamp};
pub use header::{Cleanup, CleanupOptions, CleanupResult};
pub use received::{ReceivedInfo, protocol_name, received_header};

//! The cleanup stage of oxipost, as a **library used by every entry point** (`smtpd` now,
//! `pickup` and `sendmail` later) rather than Postfix's separate `cleanup` daemon: the entry
//! point streams message content through a [`Cleanup`] filter straight into its queue writer,
//! which saves one process hop and one copy of every message, and keeps the group commit in
//! the process that answers the client.
//!
//! It owns what Postfix's cleanup does to message *content*: it adds the `Message-Id:`,
//! `Date:` and `From:` headers a message lacks ([`Cleanup`]), keeps the header/body boundary,
//! bounds each header by `header_size_limit`, and renders the `Received:` header smtpd
//! prepends ([`received_header`]) and the RFC 5322 date ([`mail_date`]). It is also the
//! place of Postfix cleanup's address work and content checks:
//!
//! - [`CleanupSettings`], built once per process from main.cf, holds the open tables;
//! - envelope rewriting ([`CleanupSettings::rewrite_sender`],
//!   [`CleanupSettings::rewrite_recipient`]): canonical mapping, masquerading and recursive
//!   virtual alias expansion ([`rewrite`]), called by the entry point before it writes the
//!   envelope;
//! - header address rewriting and `header_checks`/`body_checks` in the streaming filter
//!   ([`Cleanup::with_settings`], [`checks`]); the decision about the whole message
//!   (`REJECT`, `HOLD`, `DISCARD`) comes back as [`CleanupResult::verdict`] for the entry
//!   point to act on (smtpd answers `550 5.7.1`, pickup drops or holds);
//! - address classes ([`domains`]: local, virtual alias, virtual mailbox, relay), shared with
//!   smtpd's recipient checks and qmgr's routing so that all three agree.
//!
//! It must not do IO of its own beyond its lookup tables (it writes only to the
//! [`std::io::Write`] it is handed), log (warnings and check events are returned), or decide
//! policy about clients. It never fails on message content: any bytes are accepted.

pub mod address;
pub mod checks;
mod date;
pub mod domains;
mod header;
mod received;
pub mod rewrite;
mod settings;

pub use date::{mail_date, message_id_stamp};
pub use domains::{AddressClass, AddressClasses, DomainList};
pub use header::{CheckEvent, Cleanup, CleanupOptions, CleanupResult, Verdict};
pub use received::{ReceivedInfo, protocol_name, received_header};
pub use rewrite::RewriteError;
pub use settings::CleanupSettings;

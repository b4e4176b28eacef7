//! oxipost's milter client: the Sendmail milter protocol, version 6, as Postfix speaks it,
//! so that spamass-milter, clamav-milter, OpenDKIM, rspamd and libmilter/pymilter filters
//! work unchanged.
//!
//! - [`proto`]: the wire format without IO ([`proto::Command`] out,
//!   [`proto::Response`] in), option negotiation flags and macro stages;
//! - [`client`]: one blocking connection ([`client::Milter`]) with `milter_connect_timeout`,
//!   `milter_command_timeout` and `milter_content_timeout`, option negotiation (steps the
//!   milter skips or will not answer, its `SMFIR_SETSYMLIST` macro lists) and one method
//!   per event;
//! - [`conversation`]: one SMTP session's milters, event by event (smtpd);
//! - [`session`]: a whole transaction past the configured list with
//!   `milter_default_action` for a milter that is down, stalls, closes or answers garbage;
//! - [`edit`]: applying header and body modifications to a message held as bytes, and
//!   collecting the envelope changes;
//! - `queue` (feature `queue`): applying envelope changes to a queue file being written.
//!
//! **Architecture Invariant:** no configuration crate, no logging, and no queue unless the
//! `queue` feature asks for it: callers pass main.cf values to [`session::load`], log the
//! returned warnings, and apply the verdict before they commit a queue file or answer the
//! client.

pub mod client;
pub mod conversation;
pub mod edit;
pub mod proto;
#[cfg(feature = "queue")]
pub mod queue;
pub mod session;

pub use client::{Addr, Error, MacroLists, Milter, Modification, Reply, Timeouts};
pub use conversation::{Answer, Conversation};
pub use proto::{Family, Response, Stage};
pub use session::{DefaultAction, MilterSettings, MilterSpec, Transaction, Verdict, load, run};

/// Postfix's default macro lists (`milter_connect_macros` ... `milter_end_of_data_macros`).
pub fn default_macros() -> MacroLists {
    let l = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    vec![
        (Stage::Connect, l("j {daemon_name} {daemon_addr} v _")),
        (
            Stage::Helo,
            l("{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}"),
        ),
        (
            Stage::Mail,
            l("i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"),
        ),
        (Stage::Rcpt, l("i {rcpt_addr} {rcpt_host} {rcpt_mailer}")),
        (Stage::Data, l("i")),
        (Stage::Eoh, l("i")),
        (Stage::Eom, l("i")),
    ]
}

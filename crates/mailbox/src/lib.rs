//! oxipost-mailbox: how mail is written into, and read back from, users' mailboxes.
//!
//! This crate owns the mailbox formats and their on-disk safety rules: Maildir delivery
//! (unique names, tmp → fsync → link into `new/` → fsync `new/`, group commit of several
//! deliveries), Maildir++ folders, mbox delivery with Postfix-compatible locking (`fcntl`,
//! `flock`, dot-lock with stale-lock breaking), `From ` quoting and truncate-on-failure, size
//! limits, the `Delivered-To:` loop check, and a small reading side (list a Maildir with flags,
//! split an mbox) for pop3d and imapd.
//!
//! It must not do anything else: no network, no queue access, no policy (which mailbox a
//! recipient gets, aliases, `.forward`, whether to bounce are the delivery agent's), and no
//! configuration reading (callers pass plain parameters such as [`LockConfig`]). Privilege
//! switching is the caller's: files are created as the calling process's effective user, so a
//! delivery agent switches to the recipient before calling in. Errors say whether to defer or
//! bounce ([`Error::is_temporary`], [`Error::dsn`]) but the crate never decides to.
//!
//! Content may arrive with CRLF or LF line ends; mailboxes store LF (CRLF becomes LF, a bare CR
//! is kept, an incomplete last line is completed), as Postfix's delivery agents write them.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod content;
mod error;
mod headers;
mod lock;
mod maildir;
mod mbox;
mod read;

pub use content::ChunkReader;
pub use error::{Disposition, Error, Result};
pub use headers::{
    count_delivered_to, delivered_to_header, original_to_header, quote_822_local,
    return_path_header,
};
pub use lock::{DotLock, LockConfig, LockMethod, MailboxLock};
pub use maildir::{DeliverOptions, Delivered, Maildir, MaildirBatch, encode_hostname, hostname};
pub use mbox::{MboxDelivery, MboxOptions, asctime_local, deliver_mbox, from_line};
pub use read::{
    MaildirEntry, MboxMessage, Subdir, delivery_order, parse_maildir_name, parse_mbox,
    sort_by_delivery, unquote_from,
};

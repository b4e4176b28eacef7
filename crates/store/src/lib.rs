//! `oxipost-store`: the mail store under imapd — Maildir++ on disk (so mutt, Dovecot and
//! pop3d read the same files) plus a per-mailbox index that gives every message the
//! stable identity IMAP needs: `UIDVALIDITY`, `UIDNEXT`, a UID per message, flags,
//! keywords, a `MODSEQ` per change, the internal date and the size.
//!
//! **On disk.** A mailbox is a Maildir (`cur/`, `new/`, `tmp/`); the INBOX is the user's
//! Maildir root and a folder `Sent` is `<root>/.Sent` (Maildir++, `.` is the hierarchy
//! separator). Flags live in the file names (`:2,FRST`), as every Maildir reader expects;
//! keywords, UIDs and MODSEQs live only in the index, `<mailbox>/oxipost-index` (SQLite,
//! see [`index`]). Updates of the index and of the directory happen together under an
//! exclusive lock on `<mailbox>/oxipost-index.lock`, so concurrent sessions (in one
//! process or many) never assign one UID twice or lose a flag change.
//!
//! **Identity.** A message is known by its Maildir *base name*: the file name up to the
//! first `:` or `,`. That is exactly pop3d's UIDL for Maildir messages
//! (`oxipost-pop3d`'s `maildir_uid`, which cuts at the first `,` of the name before its
//! `:2,` info), so a message keeps its POP3 UIDL and its IMAP UID whatever its flags.
//!
//! **Picking up changes.** New deliveries land in `new/`; [`Mailbox::sync`] (run by
//! [`Mailbox::open`] and [`Mailbox::refresh`]) moves each file to `cur/` and gives it the
//! next UID. Changes made through the store (flags, expunges, appends, copies) update the
//! index in the same locked step, so another session sees them by reading the index
//! (its highest MODSEQ tells it whether anything changed). Changes made behind the
//! store's back (mutt renaming or deleting a file in `cur/`) are found by comparing
//! `cur/`'s listing with the index. Both listings are skipped while the directory's
//! mtime equals the stamp the index recorded at its last listing (stamps older than a
//! second only, so a change in the same clock tick is never hidden), as Dovecot trusts
//! its index: opening an unchanged mailbox costs two `stat`s, not a `readdir` of every
//! message. [`Mailbox::snapshot`] reads the message list in one query; a process keeps
//! the lists it read last and reuses one while the index is unchanged, and keeps the
//! index connections of mailboxes closed lately for their next open (re-validated by
//! the index file's identity, then synced as usual). Indexing a new file costs no
//! `stat` or `read`: its internal date (mtime) and CRLF size are computed on first
//! need ([`Mailbox::date_and_size`]) and kept ([`Mailbox::remember`]).
//!
//! **Cache.** Values computed from a message's (immutable) file — imapd's ENVELOPE and
//! BODYSTRUCTURE — are kept in the index ([`Mailbox::cached`], [`Mailbox::cache_put`]),
//! tagged with the version of the code that computed them.
//!
//! **Recovery.** A missing or unreadable index is rebuilt from the Maildir. The old UIDs
//! cannot be recovered then, so the rebuilt index gets a new `UIDVALIDITY` (the current
//! time, and always greater than the old one when the old one is still readable), as
//! RFC 3501 requires: clients resynchronise instead of trusting stale UIDs.
//!
//! **Notification.** [`notify::Watcher`] wraps one inotify descriptor watching `new/` and
//! `cur/` of the mailboxes sessions have selected: any delivery (local, virtual, another
//! imapd) or another session's flag change or expunge makes it readable, which is how
//! IDLE wakes without polling.
//!
//! **Architecture Invariant:** no network, no protocol: this crate knows Maildir and the
//! index, not IMAP syntax.

pub mod folders;
pub mod index;
pub mod notify;

pub use folders::Folders;
pub use index::{Flags, Mailbox, Message, Snapshot};

use std::fmt;

/// A store failure.
#[derive(Debug)]
pub enum StoreError {
    Io(std::io::Error),
    Db(rusqlite::Error),
    /// The mailbox (or folder) does not exist.
    NotFound,
    /// The folder exists already.
    Exists,
    /// An invalid mailbox name.
    BadName,
    /// The operation is not allowed (e.g. deleting the INBOX).
    NotAllowed(&'static str),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "{e}"),
            StoreError::Db(e) => write!(f, "index: {e}"),
            StoreError::NotFound => f.write_str("Mailbox doesn't exist"),
            StoreError::Exists => f.write_str("Mailbox already exists"),
            StoreError::BadName => f.write_str("Invalid mailbox name"),
            StoreError::NotAllowed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A message's base name: the Maildir file name up to the first `:` or `,` (pop3d's
/// UIDL for the same file, see the crate documentation).
pub fn base_name(file: &str) -> &str {
    // Bytes, not a char pattern: called for every file of a mailbox when it is indexed.
    let end = file
        .bytes()
        .position(|b| b == b':' || b == b',')
        .unwrap_or(file.len());
    &file[..end]
}

#[cfg(test)]
mod tests {
    use super::base_name;

    #[test]
    fn base_names() {
        assert_eq!(base_name("1700.M1P2.host,S=12,W=13:2,RS"), "1700.M1P2.host");
        assert_eq!(base_name("1700.M1P2.host:2,S"), "1700.M1P2.host");
        assert_eq!(base_name("plain"), "plain");
    }
}

//! `oxipost-queue` owns the on-disk mail queue: the directory layout under
//! `queue_directory` (queues `maildrop`, `incoming`, `active`, `deferred`, `hold`, `corrupt`
//! and the per-message logs `defer`, `bounce`, `trace`, with Postfix-style hash
//! subdirectories), Postfix-compatible long queue ids, the queue file format (see
//! [`format`](mod@format)), writing a message durably ([`QueueWriter`], with group commit through
//! [`GroupCommitter`]), reading it back ([`QueueFile`]), marking recipients done in place,
//! moving messages between queues, and printing a file for `postcat` ([`dump()`]).
//!
//! **Architecture invariant:** this crate is mechanism only. It does no network I/O, applies
//! no policy (no address rewriting, no access checks, no retry schedule, no size policy beyond
//! the limit it is given), delivers nothing and knows nothing of the configuration crate: the
//! daemon hands it a plain [`QueueConfig`]. The only threads it starts are the group
//! committer's flusher. A message is acknowledged to its sender only after
//! [`QueueWriter::finish`] (or the committer) has returned its id: by then the file is
//! complete, fsynced, under its final name, and its directory fsynced.

pub mod commit;
pub mod dump;
pub mod error;
pub mod format;
pub mod id;
pub mod layout;
pub mod reader;
pub mod writer;

pub use commit::{CommitHandle, CommitStats, CommitterOptions, Completion, GroupCommitter};
pub use dump::{DumpOptions, dump};
pub use error::{QueueError, Result};
pub use format::{Attribute, BodyType, Envelope, MailParams, Notify, Recipient, Ret};
pub use id::{LongIdParts, QueueId};
pub use layout::{Layout, Queue, QueueConfig, QueueEntry};
pub use reader::{ContentReader, QueueFile};
pub use writer::{PreparedFile, QueueWriter, WriterOptions};

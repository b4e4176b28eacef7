//! The crate's one error type.

use std::fmt;
use std::io;

/// Everything that can go wrong while touching the queue.
///
/// `Incomplete` and `Corrupt` are distinct on purpose: an incomplete file is normal while a
/// writer is still busy (or after it crashed) and is simply never delivered, while a corrupt one
/// belongs in the `corrupt` queue.
#[derive(Debug)]
pub enum QueueError {
    /// An operating-system error.
    Io(io::Error),
    /// The file ends before its end marker: still being written, or the writer died.
    Incomplete,
    /// The file is not a well-formed queue file.
    Corrupt {
        /// Byte offset where the problem was found.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The file was written by a newer, incompatible format version.
    UnsupportedVersion(u16),
    /// The message content grew past the configured limit; the file has been removed.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A string is not a valid queue id (or queue name).
    InvalidId(String),
    /// The operation needs a file opened for update.
    ReadOnly,
    /// A recipient index out of range.
    NoSuchRecipient(usize),
    /// The API was used out of order (for example content after `finish`).
    State(&'static str),
    /// The group committer thread is gone.
    CommitterGone,
}

impl QueueError {
    /// Shorthand for building a `Corrupt` error.
    pub fn corrupt(offset: u64, reason: impl Into<String>) -> Self {
        QueueError::Corrupt {
            offset,
            reason: reason.into(),
        }
    }

    /// True for [`QueueError::Incomplete`].
    pub fn is_incomplete(&self) -> bool {
        matches!(self, QueueError::Incomplete)
    }

    /// True for [`QueueError::Corrupt`] and [`QueueError::UnsupportedVersion`]: files that a
    /// queue manager should move to the `corrupt` queue rather than retry.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            QueueError::Corrupt { .. } | QueueError::UnsupportedVersion(_)
        )
    }

    /// A copy of this error, for reporting one failure to several waiters. I/O errors keep
    /// their kind and OS code but not any custom payload.
    pub fn duplicate(&self) -> QueueError {
        match self {
            QueueError::Io(e) => QueueError::Io(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            }),
            QueueError::Incomplete => QueueError::Incomplete,
            QueueError::Corrupt { offset, reason } => QueueError::corrupt(*offset, reason.clone()),
            QueueError::UnsupportedVersion(v) => QueueError::UnsupportedVersion(*v),
            QueueError::TooLarge { limit } => QueueError::TooLarge { limit: *limit },
            QueueError::InvalidId(s) => QueueError::InvalidId(s.clone()),
            QueueError::ReadOnly => QueueError::ReadOnly,
            QueueError::NoSuchRecipient(i) => QueueError::NoSuchRecipient(*i),
            QueueError::State(s) => QueueError::State(s),
            QueueError::CommitterGone => QueueError::CommitterGone,
        }
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Io(e) => write!(f, "queue I/O error: {e}"),
            QueueError::Incomplete => f.write_str("queue file is incomplete (no end marker)"),
            QueueError::Corrupt { offset, reason } => {
                write!(f, "corrupt queue file at offset {offset}: {reason}")
            }
            QueueError::UnsupportedVersion(v) => {
                write!(f, "queue file format version {v} is newer than supported")
            }
            QueueError::TooLarge { limit } => {
                write!(f, "message content exceeds the size limit of {limit} bytes")
            }
            QueueError::InvalidId(s) => write!(f, "invalid queue id or name: {s:?}"),
            QueueError::ReadOnly => f.write_str("queue file was opened read-only"),
            QueueError::NoSuchRecipient(i) => write!(f, "no recipient with index {i}"),
            QueueError::State(s) => write!(f, "queue API misuse: {s}"),
            QueueError::CommitterGone => f.write_str("group committer thread has stopped"),
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueueError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for QueueError {
    fn from(e: io::Error) -> Self {
        QueueError::Io(e)
    }
}

impl From<QueueError> for io::Error {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Io(e) => e,
            QueueError::TooLarge { .. } => io::Error::new(io::ErrorKind::FileTooLarge, e),
            QueueError::Incomplete => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            other => io::Error::other(other),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

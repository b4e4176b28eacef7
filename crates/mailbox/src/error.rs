//! Errors of mailbox delivery and reading, with the delivery outcome they imply.
//!
//! A delivery agent needs one decision from an error: defer (try again later) or bounce.
//! [`Error::is_temporary`] and [`Error::dsn`] give it, following Postfix's `mbox_dsn()` mapping
//! with two deliberate differences: a full mailbox (`EDQUOT`, `EFBIG`, a configured size limit)
//! defers instead of bouncing, and an unrecognised I/O error defers instead of bouncing (a
//! deferred message bounces anyway once `maximal_queue_lifetime` expires; a bounced one is gone).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Whether the sender should retry later or give up now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Defer: the condition may clear (disk full, mailbox locked, over quota).
    Temporary,
    /// Bounce: retrying will not help (permission denied, invalid path or argument).
    Permanent,
}

/// Why a mailbox operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The message (or the mailbox after appending it) would exceed a configured size limit
    /// (`message_size_limit` or `mailbox_size_limit`). Nothing was left behind.
    SizeLimit {
        /// The limit in bytes that was hit.
        limit: u64,
    },
    /// The mailbox stayed locked by someone else through every lock attempt.
    Locked {
        /// The mailbox (for a dot-lock, the mailbox the `.lock` file belongs to).
        path: PathBuf,
        /// The last error seen while trying, if any.
        source: Option<io::Error>,
    },
    /// Reading the message content given by the caller failed (a queue file read error).
    Source(io::Error),
    /// A file system operation on the mailbox failed.
    Io {
        /// What was being done, e.g. `"create"`, `"write"`, `"fsync"`, `"link"`.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The caller passed something this crate refuses: a header line containing a line break,
    /// a bad folder name, an mbox path that is not a regular file.
    Invalid(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Defer or bounce.
    pub fn disposition(&self) -> Disposition {
        if self.dsn().starts_with('4') {
            Disposition::Temporary
        } else {
            Disposition::Permanent
        }
    }

    /// True when the delivery should be deferred rather than bounced.
    pub fn is_temporary(&self) -> bool {
        self.disposition() == Disposition::Temporary
    }

    /// True when the file system, the user's quota or a size limit is full (`ENOSPC`,
    /// `EDQUOT`, `EFBIG`, [`Error::SizeLimit`]).
    pub fn is_full(&self) -> bool {
        match self {
            Error::SizeLimit { .. } => true,
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
            ),
            _ => false,
        }
    }

    /// The RFC 3463 enhanced status code that describes this failure.
    pub fn dsn(&self) -> &'static str {
        match self {
            Error::SizeLimit { .. } => "4.2.2",
            Error::Locked { .. } => "4.2.0",
            Error::Source(_) => "4.3.0",
            Error::Io { source, .. } => io_dsn(source),
            Error::Invalid(_) => "5.2.0",
        }
    }
}

fn io_dsn(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOSPC) => "4.3.0",
        Some(libc::EDQUOT) | Some(libc::EFBIG) => "4.2.2",
        Some(
            libc::EACCES
            | libc::EPERM
            | libc::ENOTDIR
            | libc::EISDIR
            | libc::ELOOP
            | libc::ENAMETOOLONG
            | libc::EINVAL,
        ) => "5.2.0",
        _ => "4.2.0",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SizeLimit { limit } => write!(f, "message exceeds size limit of {limit} bytes"),
            Error::Locked { path, source } => {
                write!(f, "unable to lock mailbox {}", path.display())?;
                if let Some(e) = source {
                    write!(f, ": {e}")?;
                }
                Ok(())
            }
            Error::Source(e) => write!(f, "error reading message: {e}"),
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Invalid(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Locked {
                source: Some(e), ..
            }
            | Error::Source(e)
            | Error::Io { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_and_quota_defer() {
        let e = Error::io("write", "/x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(e.is_temporary());
        assert_eq!(e.dsn(), "4.3.0");
        let e = Error::io("write", "/x", io::Error::from_raw_os_error(libc::EDQUOT));
        assert!(e.is_temporary());
        assert_eq!(e.dsn(), "4.2.2");
        assert!(Error::SizeLimit { limit: 1 }.is_temporary());
    }

    #[test]
    fn permission_bounces() {
        let e = Error::io("create", "/x", io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.disposition(), Disposition::Permanent);
    }
}

//! The one error type of the crate.

use std::fmt;

/// What went wrong, in the terms a caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The map specification is not `type:name`, or names a type this build lacks.
    /// A configuration error: fix main.cf.
    BadSpec,
    /// The table exists but cannot be used now (unreadable file, malformed index,
    /// database server down, a `fail:` table). Callers answer with a temporary failure
    /// (`451 4.3.0`) and try again later.
    Temporary,
    /// The table's source text is malformed in a way that makes it unusable
    /// (the message starts with `file:line:`).
    Syntax,
    /// The operation is not supported by this table type (for example updating a
    /// `regexp:` table).
    Unsupported,
}

/// An error from opening, querying or updating a lookup table. Its text never holds
/// a database password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    pub kind: ErrorKind,
    pub message: String,
}

impl MapError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> MapError {
        MapError {
            kind,
            message: message.into(),
        }
    }

    pub fn temp(message: impl Into<String>) -> MapError {
        MapError::new(ErrorKind::Temporary, message)
    }

    pub fn spec(message: impl Into<String>) -> MapError {
        MapError::new(ErrorKind::BadSpec, message)
    }

    pub fn unsupported(message: impl Into<String>) -> MapError {
        MapError::new(ErrorKind::Unsupported, message)
    }

    pub fn syntax(message: impl Into<String>) -> MapError {
        MapError::new(ErrorKind::Syntax, message)
    }

    /// True when the caller should answer with a temporary failure and retry later.
    pub fn is_temporary(&self) -> bool {
        !matches!(self.kind, ErrorKind::Unsupported)
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for MapError {}

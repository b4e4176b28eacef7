use std::fmt;
use std::path::PathBuf;

/// A configuration error, printed as `file:line: what is wrong` where a line applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Io {
        path: PathBuf,
        error: String,
    },
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    Expand {
        name: String,
        message: String,
    },
    Value {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { path, error } => write!(f, "{}: {}", path.display(), error),
            ConfigError::Syntax {
                path,
                line,
                message,
            } => {
                write!(f, "{}:{}: {}", path.display(), line, message)
            }
            ConfigError::Expand { name, message } => {
                write!(f, "parameter {name}: {message}")
            }
            ConfigError::Value {
                path,
                line: Some(l),
                message,
            } => {
                write!(f, "{}:{}: {}", path.display(), l, message)
            }
            ConfigError::Value {
                path,
                line: None,
                message,
            } => {
                write!(f, "{}: {}", path.display(), message)
            }
        }
    }
}

impl std::error::Error for ConfigError {}

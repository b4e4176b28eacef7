//! mbox delivery as Postfix's local(8) does it into `mail_spool_directory` or `~/mbox`.
//!
//! The mailbox is opened for append (created with mode 0600 if missing; a symlink or a
//! non-regular file is refused), locked per [`LockConfig`], and checked to still be the file at
//! `path` with one link (a POP server that replaced it must not get our append). Then one
//! message is written:
//!
//! ```text
//! From sender@example.com  Thu Nov 28 08:00:00 2026      <- two spaces, asctime(localtime)
//! <caller's header lines>
//! <content, CRLF -> LF, lines starting "From " written as ">From ">
//! <one empty line>
//! ```
//!
//! The file is fsynced before success. On any failure it is truncated back to its size
//! before the delivery, so a failed delivery leaves no partial message.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::content::{self, Style};
use crate::error::{Error, Result};
use crate::headers::quote_822_local;
use crate::lock::{LockConfig, MailboxLock};

/// Per-delivery choices for mbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxOptions {
    /// How to lock (`mailbox_delivery_lock`, `deliver_lock_attempts`, ...).
    pub lock: LockConfig,
    /// `mailbox_size_limit`: largest mailbox file after the append. `None`/`Some(0)`: none.
    pub mailbox_size_limit: Option<u64>,
    /// `message_size_limit`: largest appended message (From line included). `None`/`Some(0)`:
    /// none.
    pub message_size_limit: Option<u64>,
    /// Mode of a newly created mailbox file.
    pub create_mode: u32,
}

impl Default for MboxOptions {
    fn default() -> Self {
        MboxOptions {
            lock: LockConfig::default(),
            mailbox_size_limit: None,
            message_size_limit: None,
            create_mode: 0o600,
        }
    }
}

/// Where an appended message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MboxDelivery {
    /// Byte offset of its `From ` line.
    pub offset: u64,
    /// Bytes appended (From line and final empty line included).
    pub len: u64,
    /// Tolerated locking problems to log (see [`LockConfig::dotlock_may_fail`]).
    pub warnings: Vec<String>,
}

/// The `From ` separator line Postfix writes (without its LF): `From <sender>  <asctime>`,
/// where an empty (null) sender is written as `MAILER-DAEMON` and the local part is quoted
/// per RFC 822 when needed. `time` is rendered in the local time zone, as `asctime(localtime())`.
pub fn from_line(sender: &str, time: SystemTime) -> String {
    let who = if sender.is_empty() {
        "MAILER-DAEMON".to_string()
    } else {
        quote_822_local(sender)
    };
    format!("From {who}  {}", asctime_local(time))
}

/// `asctime(localtime(t))` without the trailing newline: `Thu Nov  8 08:00:00 2026`.
pub fn asctime_local(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: tm is a plain C struct (all-zero is valid); localtime_r writes it and reads only
    // `t`; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return "Thu Jan  1 00:00:00 1970".to_string();
    }
    let day = DAYS
        .get(usize::try_from(tm.tm_wday).unwrap_or(0))
        .unwrap_or(&"Sun");
    let mon = MONTHS
        .get(usize::try_from(tm.tm_mon).unwrap_or(0))
        .unwrap_or(&"Jan");
    format!(
        "{day} {mon} {:>2} {:02}:{:02}:{:02} {}",
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        i64::from(tm.tm_year) + 1900
    )
}

/// Appends one message to the mbox at `path` (see the module documentation).
///
/// `sender` is the envelope sender (empty for the null sender); `headers` are complete header
/// lines without line ends (`Return-Path: <...>`, `Delivered-To: ...`) written after the
/// `From ` line; `content` is the message, CRLF or LF.
pub fn deliver_mbox<R: Read>(
    path: &Path,
    sender: &str,
    headers: &[&str],
    mut content: R,
    opts: &MboxOptions,
) -> Result<MboxDelivery> {
    content::check_header_lines(headers)?;
    let file = open_mailbox(path, opts.create_mode)?;
    let lock = MailboxLock::acquire(&file, path, &opts.lock)?;
    check_same_file(&file, path)?;
    let orig_len = file
        .metadata()
        .map_err(|e| Error::io("fstat", path, e))?
        .len();
    let result = append(&file, path, orig_len, sender, headers, &mut content, opts);
    if result.is_err() {
        // Postfix's mail_copy(): a failed delivery leaves the mailbox as it was.
        let _ = file.set_len(orig_len);
        let _ = file.sync_all();
    }
    // Kernel locks go with the descriptor; release the dot-lock after the file is settled.
    drop(file);
    let warnings = lock.warnings().to_vec();
    drop(lock);
    let len = result?;
    Ok(MboxDelivery {
        offset: orig_len,
        len,
        warnings,
    })
}

fn append<R: Read>(
    mut file: &File,
    path: &Path,
    orig_len: u64,
    sender: &str,
    headers: &[&str],
    content: &mut R,
    opts: &MboxOptions,
) -> Result<u64> {
    let positive = |v: Option<u64>| v.filter(|&n| n > 0);
    let mut max = u64::MAX;
    let mut limit_hit = u64::MAX;
    if let Some(limit) = positive(opts.mailbox_size_limit) {
        if orig_len >= limit {
            return Err(Error::SizeLimit { limit });
        }
        max = limit - orig_len;
        limit_hit = limit;
    }
    if let Some(limit) = positive(opts.message_size_limit)
        && limit < max
    {
        max = limit;
        limit_hit = limit;
    }
    let mut prefix = from_line(sender, SystemTime::now()).into_bytes();
    prefix.push(b'\n');
    let style = Style {
        quote_from: true,
        blank_line_at_end: true,
    };
    let n = content::copy_message(&mut file, &prefix, headers, content, style, max)
        .map_err(|e| e.into_error(path, limit_hit))?;
    file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
    if orig_len == 0
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
    {
        // The mailbox may have just been created: make its directory entry durable too.
        crate::maildir::fsync_dir(dir)?;
    }
    Ok(n)
}

fn open_mailbox(path: &Path, mode: u32) -> Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("open mailbox", path, e))?;
    let md = file.metadata().map_err(|e| Error::io("fstat", path, e))?;
    if !md.file_type().is_file() {
        return Err(Error::Invalid(format!(
            "mailbox {} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

/// Refuses a mailbox that was replaced or hard-linked while we waited for the lock.
fn check_same_file(file: &File, path: &Path) -> Result<()> {
    let open = file.metadata().map_err(|e| Error::io("fstat", path, e))?;
    let named = std::fs::symlink_metadata(path).map_err(|e| Error::io("lstat", path, e))?;
    if open.dev() != named.dev() || open.ino() != named.ino() || open.nlink() != 1 {
        return Err(Error::Locked {
            path: path.to_path_buf(),
            source: Some(std::io::Error::other(
                "mailbox file status changed unexpectedly",
            )),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn from_line_shape() {
        // The day of month is space-padded to two characters, as asctime() does.
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let line = from_line("a@b", t);
        let rest = line.strip_prefix("From a@b  ").unwrap_or_default();
        assert_eq!(rest.len(), 24, "{line:?}");
        assert_eq!(&rest[3..4], " ");
        assert_eq!(&rest[7..8], " ");
        assert_eq!(&rest[13..14], ":");
        assert!(from_line("", t).starts_with("From MAILER-DAEMON  "));
    }
}

//! Mailbox locking as Postfix's `mailbox_delivery_lock` does it: dot-lock, `flock()`, `fcntl()`.
//!
//! Order and retries follow Postfix's `mbox_open()`: the mailbox is opened first (so that no one
//! dot-locks `/dev/null`), then `<mailbox>.lock` is created exclusively, then the kernel locks
//! are taken. Each method is tried `deliver_lock_attempts` times, `deliver_lock_delay` apart; a
//! `.lock` file whose change time is older than `stale_lock_time` is removed as stale.
//!
//! On Linux the `fcntl` method uses open-file-description locks (`F_OFD_SETLK`). They conflict
//! with the classic POSIX record locks that mutt, procmail or Dovecot take, and unlike those they
//! also exclude other threads of this process, so a multi-threaded delivery agent is safe.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// One locking method of `mailbox_delivery_lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMethod {
    /// POSIX record lock on the whole file (`fcntl`).
    Fcntl,
    /// `<mailbox>.lock` file created with `O_CREAT|O_EXCL`.
    Dotlock,
    /// BSD `flock()`.
    Flock,
}

impl LockMethod {
    /// The name used in main.cf.
    pub fn name(self) -> &'static str {
        match self {
            LockMethod::Fcntl => "fcntl",
            LockMethod::Dotlock => "dotlock",
            LockMethod::Flock => "flock",
        }
    }

    /// Parses a `mailbox_delivery_lock` value: names separated by commas and/or whitespace.
    /// Unknown names are an error; duplicates are ignored.
    pub fn parse_list(value: &str) -> Result<Vec<LockMethod>> {
        let mut out = Vec::new();
        for word in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            let m = match word.to_ascii_lowercase().as_str() {
                "fcntl" => LockMethod::Fcntl,
                "dotlock" => LockMethod::Dotlock,
                "flock" => LockMethod::Flock,
                _ => {
                    return Err(Error::Invalid(format!(
                        "unknown mailbox lock method: {word:?}"
                    )));
                }
            };
            if !out.contains(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }
}

/// The locking parameters a delivery agent passes in (from main.cf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// `mailbox_delivery_lock`; Postfix's Linux default is `fcntl, dotlock`.
    pub methods: Vec<LockMethod>,
    /// `deliver_lock_attempts` (default 20): tries per method before giving up.
    pub attempts: u32,
    /// `deliver_lock_delay` (default 1s): pause between tries.
    pub delay: Duration,
    /// `stale_lock_time` (default 500s): a `.lock` file older than this is removed.
    pub stale_time: Duration,
    /// Warn-and-continue instead of failing when the `.lock` file cannot be created for a
    /// reason other than "exists" (Postfix's `MBOX_DOT_LOCK_MAY_FAIL`, for spool directories
    /// the recipient cannot write to). The failure is reported in [`MailboxLock::warnings`].
    pub dotlock_may_fail: bool,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            methods: vec![LockMethod::Fcntl, LockMethod::Dotlock],
            attempts: 20,
            delay: Duration::from_secs(1),
            stale_time: Duration::from_secs(500),
            dotlock_may_fail: false,
        }
    }
}

/// A `<path>.lock` file owned by this process; removed on drop.
#[derive(Debug)]
pub struct DotLock {
    lock_path: PathBuf,
}

impl DotLock {
    /// The name of the dot-lock file of `path`.
    pub fn lock_path_for(path: &Path) -> PathBuf {
        let mut s = path.as_os_str().to_os_string();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Creates `<path>.lock`, retrying and breaking stale locks per `cfg`.
    ///
    /// Fails with [`Error::Locked`] while a fresh lock exists after every attempt, and with
    /// [`Error::Io`] for any other creation error (for example a read-only spool directory).
    pub fn acquire(path: &Path, cfg: &LockConfig) -> Result<DotLock> {
        let lock_path = Self::lock_path_for(path);
        let attempts = cfg.attempts.max(1);
        let mut count = 1;
        loop {
            // O_CREAT|O_EXCL does not follow a symlink at the final component.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock_path)
            {
                Ok(_) => return Ok(DotLock { lock_path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if count >= attempts {
                        return Err(Error::Locked {
                            path: path.to_path_buf(),
                            source: Some(e),
                        });
                    }
                }
                Err(e) => return Err(Error::io("create lock file", &lock_path, e)),
            }
            if let Ok(md) = std::fs::symlink_metadata(&lock_path)
                && is_stale(&md, cfg.stale_time)
            {
                if let Err(e) = std::fs::remove_file(&lock_path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    return Err(Error::io("remove stale lock file", &lock_path, e));
                }
                // Retry at once: the lock was broken, not busy.
                count += 1;
                continue;
            }
            count += 1;
            thread::sleep(cfg.delay);
        }
    }

    /// The `.lock` file path.
    pub fn path(&self) -> &Path {
        &self.lock_path
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

fn is_stale(md: &std::fs::Metadata, stale_time: Duration) -> bool {
    let ctime = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(md.ctime()).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(md.ctime_nsec()).unwrap_or(0));
    match SystemTime::now().duration_since(ctime) {
        Ok(age) => age > stale_time,
        Err(_) => false,
    }
}

/// Tries a non-blocking exclusive kernel lock of the whole file.
fn try_kernel_lock(file: &File, method: LockMethod) -> io::Result<()> {
    match method {
        LockMethod::Flock => file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io::Error::from_raw_os_error(libc::EWOULDBLOCK),
            std::fs::TryLockError::Error(e) => e,
        }),
        LockMethod::Fcntl => fcntl_lock(file),
        LockMethod::Dotlock => Ok(()),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn fcntl_lock(file: &File) -> io::Result<()> {
    let fl = whole_file_write_lock();
    match nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(()),
        // Kernels before 3.15 lack OFD locks: use classic record locks.
        Err(nix::errno::Errno::EINVAL) => posix_lock(file, &fl),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn fcntl_lock(file: &File) -> io::Result<()> {
    posix_lock(file, &whole_file_write_lock())
}

fn posix_lock(file: &File, fl: &libc::flock) -> io::Result<()> {
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_SETLK(fl))
        .map(|_| ())
        .map_err(io::Error::from)
}

fn whole_file_write_lock() -> libc::flock {
    // SAFETY: libc::flock is a plain C struct for which all-zero bytes are a valid value
    // (start 0, length 0 = whole file, pid 0 as OFD locks require).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl
}

/// Exclusive access to an open mailbox file; dot-lock removed and kernel locks released on drop
/// (kernel locks go with the file descriptor, so keep the file open while this lives).
#[derive(Debug)]
pub struct MailboxLock {
    dotlock: Option<DotLock>,
    warnings: Vec<String>,
}

impl MailboxLock {
    /// Locks `file` (opened from `path`) with every method of `cfg`, as Postfix's `mbox_open()`:
    /// dot-lock first, then `flock`, then `fcntl`, each retried per `cfg`.
    pub fn acquire(file: &File, path: &Path, cfg: &LockConfig) -> Result<MailboxLock> {
        let mut lock = MailboxLock {
            dotlock: None,
            warnings: Vec::new(),
        };
        if cfg.methods.contains(&LockMethod::Dotlock) {
            match DotLock::acquire(path, cfg) {
                Ok(d) => lock.dotlock = Some(d),
                Err(Error::Io { op, path, source }) if cfg.dotlock_may_fail => lock
                    .warnings
                    .push(format!("{op} {}: {source}", path.display())),
                Err(e) => return Err(e),
            }
        }
        for method in [LockMethod::Flock, LockMethod::Fcntl] {
            if cfg.methods.contains(&method) {
                kernel_lock_with_retries(file, path, method, cfg)?;
            }
        }
        Ok(lock)
    }

    /// Problems that were tolerated (a dot-lock that could not be created, with
    /// [`LockConfig::dotlock_may_fail`]); a delivery agent logs them as warnings.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// True when a `.lock` file is held.
    pub fn has_dotlock(&self) -> bool {
        self.dotlock.is_some()
    }
}

fn kernel_lock_with_retries(
    file: &File,
    path: &Path,
    method: LockMethod,
    cfg: &LockConfig,
) -> Result<()> {
    let attempts = cfg.attempts.max(1);
    let mut count = 1;
    loop {
        match try_kernel_lock(file, method) {
            Ok(()) => return Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::EACCES) | Some(libc::EINTR)
                ) || e.raw_os_error() == Some(libc::EWOULDBLOCK) =>
            {
                if count >= attempts {
                    return Err(Error::Locked {
                        path: path.to_path_buf(),
                        source: Some(e),
                    });
                }
            }
            Err(e) => {
                return Err(Error::io(
                    if method == LockMethod::Flock {
                        "flock"
                    } else {
                        "fcntl lock"
                    },
                    path,
                    e,
                ));
            }
        }
        count += 1;
        thread::sleep(cfg.delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_list_accepts_postfix_syntax() {
        assert_eq!(
            LockMethod::parse_list("fcntl, dotlock").ok(),
            Some(vec![LockMethod::Fcntl, LockMethod::Dotlock])
        );
        assert_eq!(
            LockMethod::parse_list("flock\tfcntl,,flock").ok(),
            Some(vec![LockMethod::Flock, LockMethod::Fcntl])
        );
        assert!(LockMethod::parse_list("lockf").is_err());
    }

    #[test]
    fn default_matches_postfix_linux() {
        let d = LockConfig::default();
        assert_eq!(d.methods, vec![LockMethod::Fcntl, LockMethod::Dotlock]);
        assert_eq!(d.attempts, 20);
        assert_eq!(d.delay, Duration::from_secs(1));
        assert_eq!(d.stale_time, Duration::from_secs(500));
    }
}

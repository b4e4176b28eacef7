//! Local submission into `maildrop/`, and the small pieces every queue tool shares.
//!
//! `sendmail` hands a message to [`drop_message`] (in-process when it may write
//! `maildrop/` itself, otherwise through the `postdrop` program, which production installs
//! setgid `setgid_group` so that `maildrop/` can be mode 1730). The message becomes one
//! complete queue file in `maildrop/` (written with the queue crate's writer: temporary
//! name, end marker, fsync, rename), made readable for `pickup` (mode 0744 as Postfix),
//! and `public/pickup` is triggered. A failure at any point leaves nothing behind: the
//! writer removes its temporary file.
//!
//! Also here, because sendmail, postdrop, pickup, showq, postqueue and postsuper all need
//! them: [`Settings`] (the few main.cf values the tools use), [`trigger`], the sysexits
//! codes ([`sysexits`]), the `authorized_*_users` check ([`authorized`]) and the postdrop
//! pipe format ([`stream`]).
//!
//! This crate must not deliver, rewrite headers (that is cleanup's, run by pickup) or
//! talk to any daemon beyond a one-byte trigger.

pub mod stream;

use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oxipost_config::Config;
use oxipost_queue::{
    Layout, MailParams, Queue, QueueConfig, QueueError, QueueId, QueueWriter, WriterOptions,
};
use serde::{Deserialize, Serialize};

/// Exit codes of `<sysexits.h>`, as Postfix's commands use them.
pub mod sysexits {
    pub const EX_OK: i32 = 0;
    pub const EX_USAGE: i32 = 64;
    pub const EX_DATAERR: i32 = 65;
    pub const EX_NOINPUT: i32 = 66;
    pub const EX_NOUSER: i32 = 67;
    pub const EX_UNAVAILABLE: i32 = 69;
    pub const EX_SOFTWARE: i32 = 70;
    pub const EX_OSERR: i32 = 71;
    pub const EX_CANTCREAT: i32 = 73;
    pub const EX_IOERR: i32 = 74;
    pub const EX_TEMPFAIL: i32 = 75;
    pub const EX_NOPERM: i32 = 77;
    pub const EX_CONFIG: i32 = 78;
}

/// Attribute name under which the submitting user's uid is kept in a maildrop file.
pub const ATTR_UID: &str = "submit_uid";
/// Attribute name for the full name given with `sendmail -F`.
pub const ATTR_FULL_NAME: &str = "full_name";

/// The main.cf values the queue tools use, read once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_dir: PathBuf,
    pub queue: QueueConfig,
    pub queue_directory: PathBuf,
    pub command_directory: PathBuf,
    pub daemon_directory: PathBuf,
    pub myhostname: String,
    pub myorigin: String,
    pub mail_name: String,
    pub mail_owner: String,
    pub message_size_limit: u64,
    pub header_size_limit: usize,
    pub authorized_submit_users: Vec<String>,
    pub authorized_mailq_users: Vec<String>,
    pub authorized_flush_users: Vec<String>,
    pub alias_database: Vec<String>,
    pub syslog_name: String,
    pub syslog_facility: String,
    pub maillog_file: String,
}

impl Settings {
    /// Reads main.cf from `-c dir`, else `MAIL_CONFIG`, else the default directory.
    pub fn load(cli_dir: Option<&Path>) -> Result<Settings, String> {
        let (dir, explicit) = Config::resolve_dir(cli_dir);
        let cfg = Config::load(&dir, explicit).map_err(|e| e.to_string())?;
        Settings::from_config(&cfg, dir)
    }

    /// Builds the settings from a loaded configuration.
    pub fn from_config(cfg: &Config, config_dir: PathBuf) -> Result<Settings, String> {
        let get = |n: &str| {
            cfg.get(n)
                .map(|v| v.trim().to_string())
                .map_err(|e| e.to_string())
        };
        let list = |n: &str| cfg.get_list(n).map_err(|e| e.to_string());
        let queue_directory = PathBuf::from(get("queue_directory")?);
        let depth = cfg.get_int("hash_queue_depth").map_err(|e| e.to_string())?;
        let depth = u32::try_from(depth.max(1)).unwrap_or(1);
        let queue = QueueConfig::new(&queue_directory)
            .with_hash_queue_names(&get("hash_queue_names")?)
            .with_hash_queue_depth(depth);
        let mut myhostname = get("myhostname")?;
        if myhostname.is_empty() {
            myhostname = oxipost_config::defaults::myhostname();
        }
        let mut myorigin = get("myorigin")?;
        if myorigin.is_empty() {
            myorigin = myhostname.clone();
        }
        Ok(Settings {
            config_dir,
            queue,
            queue_directory,
            command_directory: PathBuf::from(get("command_directory")?),
            daemon_directory: PathBuf::from(get("daemon_directory")?),
            myhostname,
            myorigin,
            mail_name: get("mail_name")?,
            mail_owner: get("mail_owner")?,
            message_size_limit: cfg
                .get_size("message_size_limit")
                .map_err(|e| e.to_string())?,
            header_size_limit: usize::try_from(
                cfg.get_size("header_size_limit")
                    .map_err(|e| e.to_string())?,
            )
            .unwrap_or(usize::MAX),
            authorized_submit_users: list("authorized_submit_users")?,
            authorized_mailq_users: list("authorized_mailq_users")?,
            authorized_flush_users: list("authorized_flush_users")?,
            alias_database: list("alias_database")?,
            syslog_name: get("syslog_name").unwrap_or_else(|_| "oxipost".into()),
            syslog_facility: get("syslog_facility").unwrap_or_else(|_| "mail".into()),
            maillog_file: get("maillog_file").unwrap_or_default(),
        })
    }

    /// The queue layout.
    pub fn layout(&self) -> Result<Layout, String> {
        Layout::new(self.queue.clone()).map_err(|e| e.to_string())
    }

    /// `queue_directory/public/<name>`.
    pub fn public(&self, name: &str) -> PathBuf {
        self.queue_directory.join("public").join(name)
    }

    /// Logging for a command run by a person: stderr, and `maillog_file` when this user may
    /// write it (failure to open it is silent, as the person sees stderr).
    pub fn init_tool_logging(&self, program: &str) {
        oxipost_log::init(oxipost_log::Options {
            syslog_name: self.syslog_name.clone(),
            program: program.to_string(),
            facility: self.syslog_facility.clone(),
            syslog: Path::new("/dev/log").exists(),
            maillog_file: self.maillog_file.clone(),
            stderr: true,
        });
    }
}

/// Writes one trigger byte to a unix stream socket without blocking; returns whether the
/// byte was sent (a missing or busy service finds the work at its next wakeup).
pub fn trigger(path: &Path, byte: u8) -> bool {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    connect(fd.as_raw_fd(), &addr).is_ok() && nix::unistd::write(&fd, &[byte]).is_ok()
}

/// Logs `fatal: text` (stderr and the mail log) and exits with a sysexits `code`.
pub fn fatal_exit(code: i32, text: &str) -> ! {
    oxipost_log::log(oxipost_log::Level::Fatal, format_args!("{text}"));
    std::process::exit(code)
}

/// The login name of `uid`, or the number as text.
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Postfix's `authorized_*_users` check for `uid`: the list is scanned in order, the first
/// match decides; `static:anyone` matches everybody, `!name` denies, a bare name allows.
/// Other lookup tables are not supported yet and match nobody (fail closed, with a warning).
pub fn authorized(list: &[String], uid: u32) -> bool {
    let name = user_name(uid);
    for item in list {
        let (negate, pat) = match item.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, item.as_str()),
        };
        let matched = if pat.eq_ignore_ascii_case("static:anyone") {
            true
        } else if pat.contains(':') {
            oxipost_log::warning!("unsupported lookup table in authorized users list: {pat}");
            false
        } else {
            pat == name || pat == uid.to_string()
        };
        if matched {
            return !negate;
        }
    }
    false
}

/// A message's envelope as sendmail hands it to postdrop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// Envelope sender, already qualified; empty for `<>`.
    pub sender: String,
    /// Recipients, as given (pickup qualifies bare names with `myorigin`).
    pub recipients: Vec<String>,
    /// DSN `NOTIFY` for every recipient (`sendmail -N`), as a bit mask of the queue format.
    #[serde(default)]
    pub notify: u8,
    /// DSN `RET` (`sendmail -R full|hdrs`).
    #[serde(default)]
    pub ret: Option<String>,
    /// DSN `ENVID` (`sendmail -V`).
    #[serde(default)]
    pub envid: Option<String>,
    /// `BODY` type (`sendmail -B 7bit|8bitmime`).
    #[serde(default)]
    pub body: Option<String>,
    /// Extra attributes (`full_name`, ...).
    #[serde(default)]
    pub attributes: Vec<(String, String)>,
}

/// Why a drop failed, each with the sysexits code it maps to.
#[derive(Debug)]
pub enum DropError {
    /// Reading the message failed.
    Input(io::Error),
    /// The message is larger than `message_size_limit`.
    TooLarge(u64),
    /// The queue could not be written (full disk, permissions): try again later.
    Queue(String),
    /// The request itself is unusable.
    Usage(String),
}

impl DropError {
    /// The sysexits code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            DropError::Input(_) => sysexits::EX_NOINPUT,
            DropError::TooLarge(_) => sysexits::EX_DATAERR,
            DropError::Queue(_) => sysexits::EX_TEMPFAIL,
            DropError::Usage(_) => sysexits::EX_USAGE,
        }
    }
}

impl std::fmt::Display for DropError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropError::Input(e) => write!(f, "error reading input: {e}"),
            DropError::TooLarge(l) => write!(f, "message file too big (limit {l} bytes)"),
            DropError::Queue(e) => write!(f, "cannot write the maildrop queue file: {e}"),
            DropError::Usage(e) => f.write_str(e),
        }
    }
}

/// Writes `sub` and the content read from `content` as one maildrop file; returns its id
/// once the file is durable and readable by pickup. `uid` is recorded as the submitter.
/// Nothing is left in the queue on failure.
pub fn drop_message(
    layout: &Layout,
    sub: &Submission,
    content: &mut dyn Read,
    size_limit: u64,
    uid: u32,
) -> Result<QueueId, DropError> {
    let qerr = |e: QueueError| DropError::Queue(e.to_string());
    if sub.recipients.is_empty() {
        return Err(DropError::Usage("no recipients specified".into()));
    }
    let opts = WriterOptions {
        max_content_size: (size_limit > 0).then_some(size_limit),
        ..WriterOptions::default()
    };
    let mut w = QueueWriter::create(layout, Queue::Maildrop, opts).map_err(qerr)?;
    w.set_sender(&sub.sender).map_err(qerr)?;
    let params = MailParams {
        ret: match sub.ret.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("full") => Some(oxipost_queue::Ret::Full),
            Some("hdrs") => Some(oxipost_queue::Ret::Hdrs),
            _ => None,
        },
        envid: sub.envid.clone(),
        body: match sub.body.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("8bitmime") => Some(oxipost_queue::BodyType::EightBitMime),
            Some("7bit") => Some(oxipost_queue::BodyType::SevenBit),
            _ => None,
        },
        ..MailParams::default()
    };
    if params != MailParams::default() {
        w.set_params(&params).map_err(qerr)?;
    }
    w.add_attribute(ATTR_UID, &uid.to_string()).map_err(qerr)?;
    for (n, v) in &sub.attributes {
        w.add_attribute(n, v).map_err(qerr)?;
    }
    for r in &sub.recipients {
        let mut rc = oxipost_queue::Recipient::new(r.clone());
        rc.notify = oxipost_queue::Notify(sub.notify);
        w.add_recipient(&rc).map_err(qerr)?;
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                w.abort();
                return Err(
                    match e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<QueueWriteMarker>())
                    {
                        Some(_) => DropError::Queue(e.to_string()),
                        None => DropError::Input(e),
                    },
                );
            }
        };
        match w.write_content(&buf[..n]) {
            Ok(()) => {}
            Err(QueueError::TooLarge { limit }) => return Err(DropError::TooLarge(limit)),
            Err(e) => return Err(qerr(e)),
        }
    }
    let id = w.finish().map_err(qerr)?;
    // Postfix's maildrop files are 0744: pickup (mail_owner) reads files of any submitter.
    let path = layout.path_for(Queue::Maildrop, &id);
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o744)) {
        let _ = std::fs::remove_file(&path);
        return Err(DropError::Queue(format!("chmod {}: {e}", path.display())));
    }
    Ok(id)
}

/// Marker payload for an `io::Error` that a content source raises for a queue-side problem
/// (so that it maps to EX_TEMPFAIL rather than EX_NOINPUT).
#[derive(Debug)]
pub struct QueueWriteMarker;

impl std::fmt::Display for QueueWriteMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("queue write error")
    }
}

impl std::error::Error for QueueWriteMarker {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn drop_writes_a_complete_readable_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(QueueConfig::new(tmp.path())).expect("layout");
        layout.create_all().expect("create");
        let sub = Submission {
            sender: "a@example.com".into(),
            recipients: vec!["b@example.com".into()],
            ..Submission::default()
        };
        let id =
            drop_message(&layout, &sub, &mut &b"Subject: x\n\nhi\n"[..], 0, 1000).expect("drop");
        let p = layout.path_for(Queue::Maildrop, &id);
        assert_eq!(std::fs::metadata(&p).expect("meta").mode() & 0o777, 0o744);
        let qf = oxipost_queue::QueueFile::open(&p).expect("open");
        assert_eq!(qf.sender(), "a@example.com");
        assert_eq!(qf.envelope().attribute(ATTR_UID), Some("1000"));
    }

    #[test]
    fn failed_input_leaves_nothing() {
        struct Bad;
        impl Read for Bad {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EBADF))
            }
        }
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(QueueConfig::new(tmp.path())).expect("layout");
        layout.create_all().expect("create");
        let sub = Submission {
            recipients: vec!["b@example.com".into()],
            ..Submission::default()
        };
        let e = drop_message(&layout, &sub, &mut Bad, 0, 0).expect_err("fails");
        assert_eq!(e.exit_code(), sysexits::EX_NOINPUT);
        assert_eq!(
            std::fs::read_dir(layout.queue_dir(Queue::Maildrop))
                .expect("dir")
                .count(),
            0
        );
        let e = drop_message(&layout, &sub, &mut &[b'x'; 100][..], 10, 0).expect_err("too big");
        assert_eq!(e.exit_code(), sysexits::EX_DATAERR);
        assert_eq!(
            std::fs::read_dir(layout.queue_dir(Queue::Maildrop))
                .expect("dir")
                .count(),
            0
        );
    }

    #[test]
    fn authorized_lists() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(authorized(&l(&["static:anyone"]), 12345));
        assert!(!authorized(&l(&[]), 0));
        assert!(!authorized(&l(&["!root", "static:anyone"]), 0));
        assert!(authorized(&l(&["root"]), 0));
    }
}

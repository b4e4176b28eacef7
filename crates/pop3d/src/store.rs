//! A user's mailbox for one POP3 session: opened and locked at login, a snapshot of its
//! messages (POP3 size and UIDL), message contents on demand, and the UPDATE state's
//! removals.
//!
//! # Maildir
//!
//! `new/` and `cur/` are listed once at login (mail delivered later is seen by the next
//! session). A second session is kept out with an exclusive `flock` on
//! `<Maildir>/oxipost-pop3.lock` (`-ERR [IN-USE]`); deliveries need no lock (a Maildir
//! delivery never touches existing files). Files are not moved to `cur/` and flags are not
//! changed, so an IMAP session sees the mailbox as it was.
//!
//! **UIDL**: the message's Maildir base name up to the first `,` (the
//! `<secs>.M<usecs>P<pid>Q<n>V<dev>I<ino>.<host>` part, without `,S=`/`,W=` fields and
//! without `:2,<flags>`). It never changes when the message moves to `cur/` or its flags
//! change, so it is stable across sessions and restarts, and it is the key an IMAP index
//! maps to UIDs. A base name longer than 70 characters or outside 0x21..=0x7E (RFC 1939)
//! is replaced by `X` and 40 hex digits of its SHA-256.
//!
//! **Sizes**: POP3 counts CRLF line ends; Maildir files hold LF. A `,W=<n>` field in the
//! name (Dovecot's) is used as it stands; otherwise the file is read once and its POP3 size
//! remembered in `<Maildir>/oxipost-pop3-sizes` (`<base name> <size>` lines, rewritten by
//! temp file and rename when it changed), so later logins read no message files.
//!
//! # mbox
//!
//! The file is locked for the whole session with the delivery agent's locking
//! (`mailbox_delivery_lock`: dot-lock, `fcntl`, `flock`), one attempt only: a mailbox
//! another session or a delivery holds is `-ERR [IN-USE]`. Messages are split on `From `
//! lines after an empty line, `>From ` quoting is undone for the client.
//!
//! **UIDL**: `M` and 40 hex digits of the SHA-256 of the message's raw bytes (`From ` line
//! and content as stored), with `-2`, `-3`, ... for identical copies: stable as long as the
//! message is not rewritten. UPDATE writes the kept messages to a temporary file beside the
//! mailbox, fsyncs it and renames it over the mailbox while the locks are held, then fsyncs
//! the directory: a crash leaves the old or the new mailbox, never a mix. A delivery agent
//! that opened the old file meanwhile notices the replaced file and retries later.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oxipost_mailbox::{
    LockConfig, MailboxLock, Maildir, MaildirEntry, Subdir, parse_maildir_name, parse_mbox,
    unquote_from,
};
use oxipost_pop3_proto::{Message, wire_size};
use sha2::{Digest, Sha256};

/// Why a mailbox could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another session (or a delivery) holds the mailbox.
    InUse,
    /// Anything else (permissions, I/O): a temporary failure for the client.
    Failed(String),
}

/// Where a user's mail is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Maildir(PathBuf),
    Mbox(PathBuf),
}

impl Location {
    /// Resolves a Dovecot-style location (`maildir:~/Maildir`, `mbox:~/mail:INBOX=/var/mail/%u`,
    /// a bare path) for `user` with home `home`. For `mbox:` naming a directory without an
    /// `INBOX=` the INBOX is `spool/<user>`.
    pub fn resolve(spec: &str, user: &str, home: &str, spool: &Path) -> Result<Location, String> {
        let expand = |p: &str| -> String {
            let p = p.replace("%u", user).replace("%h", home);
            match p.strip_prefix('~') {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
                _ => p,
            }
        };
        if home.is_empty() && (spec.contains('~') || spec.contains("%h")) {
            return Err(format!(
                "mail location {spec:?} for {user} needs a home directory, and there is none"
            ));
        }
        let (kind, rest) = match spec.split_once(':') {
            Some((k, r)) if k.eq_ignore_ascii_case("maildir") || k.eq_ignore_ascii_case("mbox") => {
                (k.to_ascii_lowercase(), r)
            }
            _ => (
                if spec.ends_with('/') {
                    "maildir".into()
                } else {
                    "mbox".into()
                },
                spec,
            ),
        };
        let mut parts = rest.split(':');
        let path = expand(parts.next().unwrap_or(""));
        let inbox = parts.find_map(|o| o.strip_prefix("INBOX=")).map(expand);
        if path.is_empty() || !path.starts_with('/') {
            return Err(format!(
                "mail location {spec:?} for {user} is not an absolute path (home {home:?})"
            ));
        }
        if kind == "maildir" {
            return Ok(Location::Maildir(PathBuf::from(path)));
        }
        if let Some(i) = inbox {
            return Ok(Location::Mbox(PathBuf::from(i)));
        }
        let p = PathBuf::from(&path);
        if p.is_dir() {
            Ok(Location::Mbox(spool.join(user)))
        } else {
            Ok(Location::Mbox(p))
        }
    }
}

/// An open, locked mailbox and the session's snapshot of it.
pub enum Store {
    Maildir(MaildirStore),
    Mbox(MboxStore),
    /// No mailbox exists yet: nothing to read, nothing to lock.
    Empty,
}

impl Store {
    /// Opens and locks the mailbox; returns the store and its messages in order.
    pub fn open(loc: &Location, lock: &LockConfig) -> Result<(Store, Vec<Message>), OpenError> {
        match loc {
            Location::Maildir(p) => MaildirStore::open(p),
            Location::Mbox(p) => MboxStore::open(p, lock),
        }
    }

    /// The stored content (LF line ends) of message `i`.
    pub fn read(&self, i: usize) -> Result<Vec<u8>, String> {
        match self {
            Store::Maildir(m) => m.read(i),
            Store::Mbox(m) => m.read(i),
            Store::Empty => Err("No such message.".into()),
        }
    }

    /// UPDATE: removes messages `deleted`; returns how many were removed.
    pub fn update(&mut self, deleted: &[usize]) -> Result<u64, String> {
        if deleted.is_empty() {
            return Ok(0);
        }
        match self {
            Store::Maildir(m) => m.update(deleted),
            Store::Mbox(m) => m.update(deleted),
            Store::Empty => Ok(0),
        }
    }
}

/// The UIDL of a Maildir message (see the module documentation).
pub fn maildir_uid(unique: &str) -> String {
    let base = unique.split(',').next().unwrap_or(unique);
    if !base.is_empty() && base.len() <= 70 && base.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        base.to_owned()
    } else {
        format!("X{}", &hex(&Sha256::digest(base.as_bytes()))[..40])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const LOCK_NAME: &str = "oxipost-pop3.lock";
const SIZES_NAME: &str = "oxipost-pop3-sizes";

pub struct MaildirStore {
    dir: Maildir,
    entries: Vec<MaildirEntry>,
    /// POP3 sizes of `entries`: a message file is never larger, so one read of that size
    /// plus one byte gets all of it.
    sizes: Vec<u64>,
    /// `new/` and `cur/`, opened once: each RETR opens its file relative to them (one path
    /// component to resolve, not the whole path).
    dirs: [Option<OwnedFd>; 2],
    /// Holds the session's flock.
    _lock: Option<File>,
}

fn open_dir(path: &Path) -> Option<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .ok()
        .map(OwnedFd::from)
}

/// Opens `name` in the directory `dir`, read-only, not following a symbolic link.
fn open_at(dir: &OwnedFd, name: &std::ffi::OsStr) -> io::Result<File> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(name.as_bytes())?;
    // SAFETY: dir is an open descriptor and c a NUL-terminated string, both alive for the
    // call; a returned descriptor is owned by nobody else.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Reads a whole message file whose size is at most `hint` bytes (more is read too):
/// one `read` when the hint holds, as a short read of a regular file means its end.
fn read_all(mut f: File, hint: u64) -> io::Result<Vec<u8>> {
    let cap = usize::try_from(hint)
        .unwrap_or(usize::MAX)
        .saturating_add(1)
        .min(64 << 20);
    let mut buf = vec![0u8; cap.max(4096)];
    let mut len = 0;
    loop {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    break;
                }
                // Larger than the hint said: read the rest the ordinary way.
                buf.truncate(len);
                f.read_to_end(&mut buf)?;
                return Ok(buf);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

impl MaildirStore {
    fn open(root: &Path) -> Result<(Store, Vec<Message>), OpenError> {
        let dir = Maildir::new(root);
        match std::fs::metadata(root.join("cur")) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Err(e) = dir.create() {
                    // No Maildir and none can be made (no home yet): an empty mailbox.
                    oxipost_log::info!("cannot create {}: {e}", root.display());
                    return Ok((Store::Empty, Vec::new()));
                }
            }
            Err(e) => {
                return Err(OpenError::Failed(format!("{}: {e}", root.display())));
            }
        }
        let lock_path = root.join(LOCK_NAME);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| OpenError::Failed(format!("open {}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::InUse),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(OpenError::Failed(format!(
                    "flock {}: {e}",
                    lock_path.display()
                )));
            }
        }
        let entries = dir
            .list()
            .map_err(|e| OpenError::Failed(format!("list {}: {e}", root.display())))?;
        let sizes_path = root.join(SIZES_NAME);
        let cached = read_sizes(&sizes_path);
        let mut known: HashMap<String, u64> = HashMap::with_capacity(entries.len());
        let mut changed = false;
        let mut messages = Vec::with_capacity(entries.len());
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries {
            let size =
                match virtual_size_in_name(&e.unique).or_else(|| cached.get(&e.unique).copied()) {
                    Some(s) => s,
                    None => match std::fs::read(&e.path) {
                        Ok(data) => {
                            changed = true;
                            wire_size(&data)
                        }
                        // Removed by another client since the listing: not part of this session.
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => {
                            return Err(OpenError::Failed(format!(
                                "read {}: {err}",
                                e.path.display()
                            )));
                        }
                    },
                };
            known.insert(e.unique.clone(), size);
            messages.push(Message {
                size,
                uid: maildir_uid(&e.unique),
            });
            kept.push(e);
        }
        if (changed || known.len() != cached.len())
            && let Err(e) = write_sizes(&sizes_path, &kept, &known)
        {
            oxipost_log::warning!("cannot write {}: {e}", sizes_path.display());
        }
        Ok((
            Store::Maildir(MaildirStore {
                sizes: kept
                    .iter()
                    .map(|e| known.get(&e.unique).copied().unwrap_or(0))
                    .collect(),
                dirs: [open_dir(&root.join("new")), open_dir(&root.join("cur"))],
                dir,
                entries: kept,
                _lock: Some(lock),
            }),
            messages,
        ))
    }

    fn read(&self, i: usize) -> Result<Vec<u8>, String> {
        let e = self.entries.get(i).ok_or("No such message.")?;
        let hint = self.sizes.get(i).copied().unwrap_or(0);
        let dir = match e.subdir {
            Subdir::New => self.dirs[0].as_ref(),
            Subdir::Cur => self.dirs[1].as_ref(),
        };
        let opened = match (dir, e.path.file_name()) {
            (Some(d), Some(name)) => open_at(d, name),
            _ => File::open(&e.path),
        };
        match opened.and_then(|f| read_all(f, hint)) {
            Ok(d) => Ok(d),
            Err(err) if err.kind() == io::ErrorKind::NotFound => match self.find(e) {
                Some(p) => std::fs::read(&p).map_err(|err| format!("Cannot read message: {err}")),
                None => Err("Message was deleted by another client.".into()),
            },
            Err(err) => {
                oxipost_log::warning!("read {}: {err}", e.path.display());
                Err("[SYS/TEMP] Cannot read message.".into())
            }
        }
    }

    /// Where a message is now, after another client moved it or changed its flags.
    fn find(&self, e: &MaildirEntry) -> Option<PathBuf> {
        for sub in [Subdir::Cur, Subdir::New] {
            let d = self.dir.subdir(sub.name());
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for f in rd.flatten() {
                let name = f.file_name();
                let Some(name) = name.to_str() else { continue };
                if parse_maildir_name(name).0 == e.unique {
                    return Some(f.path());
                }
            }
        }
        None
    }

    fn update(&mut self, deleted: &[usize]) -> Result<u64, String> {
        let mut removed = 0;
        let mut failed = 0;
        for &i in deleted {
            let Some(e) = self.entries.get(i) else {
                continue;
            };
            let gone = match std::fs::remove_file(&e.path) {
                Ok(()) => true,
                Err(err) if err.kind() == io::ErrorKind::NotFound => match self.find(e) {
                    Some(p) => std::fs::remove_file(p).is_ok(),
                    // Already removed by another client: what was asked is done.
                    None => true,
                },
                Err(err) => {
                    oxipost_log::warning!("remove {}: {err}", e.path.display());
                    false
                }
            };
            if gone {
                removed += 1;
            } else {
                failed += 1;
            }
        }
        for sub in ["cur", "new"] {
            let _ = File::open(self.dir.subdir(sub)).and_then(|d| d.sync_all());
        }
        if failed > 0 {
            return Err(format!("{failed} messages could not be deleted."));
        }
        Ok(removed)
    }
}

/// Dovecot's `,W=<size>` (the size with CRLF line ends) in a Maildir name.
fn virtual_size_in_name(unique: &str) -> Option<u64> {
    unique
        .split(',')
        .skip(1)
        .find_map(|f| f.strip_prefix("W="))
        .and_then(|s| s.parse().ok())
}

fn read_sizes(path: &Path) -> HashMap<String, u64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let (name, size) = l.rsplit_once(' ')?;
            Some((name.to_owned(), size.parse().ok()?))
        })
        .collect()
}

fn write_sizes(
    path: &Path,
    entries: &[MaildirEntry],
    sizes: &HashMap<String, u64>,
) -> io::Result<()> {
    let mut text = String::with_capacity(entries.len() * 80);
    for e in entries {
        if let Some(s) = sizes.get(&e.unique) {
            text.push_str(&format!("{} {s}\n", e.unique));
        }
    }
    let tmp = path.with_file_name(format!(".{SIZES_NAME}.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    // A cache: no fsync needed (a lost or torn file is recomputed).
    std::fs::rename(&tmp, path)
}

/// One mbox message: raw span (from its `From ` line to the next one) and content range.
struct MboxMsg {
    raw: std::ops::Range<u64>,
    content: std::ops::Range<u64>,
}

pub struct MboxStore {
    path: PathBuf,
    file: File,
    msgs: Vec<MboxMsg>,
    /// The file's length when it was read.
    len: u64,
    /// Declared after `file`: fields drop in order, so the kernel locks (which go with the
    /// descriptor) are released before the dot-lock is removed, as local(8) does.
    _lock: MailboxLock,
}

impl MboxStore {
    fn open(path: &Path, cfg: &LockConfig) -> Result<(Store, Vec<Message>), OpenError> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Store::Empty, Vec::new())),
            Err(e) => return Err(OpenError::Failed(format!("open {}: {e}", path.display()))),
        };
        let lock = match MailboxLock::acquire(&file, path, cfg) {
            Ok(l) => l,
            Err(oxipost_mailbox::Error::Locked { .. }) => return Err(OpenError::InUse),
            Err(e) => return Err(OpenError::Failed(e.to_string())),
        };
        let open_md = file
            .metadata()
            .map_err(|e| OpenError::Failed(e.to_string()))?;
        match std::fs::symlink_metadata(path) {
            Ok(md) if md.ino() == open_md.ino() && md.dev() == open_md.dev() => {}
            // Replaced while we waited: someone else rewrote it; the client may retry.
            _ => return Err(OpenError::InUse),
        }
        let mut data = Vec::with_capacity(usize::try_from(open_md.len()).unwrap_or(0));
        (&file)
            .read_to_end(&mut data)
            .map_err(|e| OpenError::Failed(format!("read {}: {e}", path.display())))?;
        let parsed = parse_mbox(&data);
        let mut msgs = Vec::with_capacity(parsed.len());
        let mut messages = Vec::with_capacity(parsed.len());
        let mut seen: HashMap<String, u32> = HashMap::new();
        for (i, m) in parsed.iter().enumerate() {
            let raw_end = parsed.get(i + 1).map_or(data.len(), |n| n.from_line.start);
            let content = unquote_from(&data[m.content.clone()]);
            let digest = hex(&Sha256::digest(&data[m.from_line.start..m.content.end]));
            let mut uid = format!("M{}", &digest[..40]);
            let n = seen.entry(uid.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                uid.push_str(&format!("-{n}"));
            }
            messages.push(Message {
                size: wire_size(&content),
                uid,
            });
            msgs.push(MboxMsg {
                raw: m.from_line.start as u64..raw_end as u64,
                content: m.content.start as u64..m.content.end as u64,
            });
        }
        Ok((
            Store::Mbox(MboxStore {
                path: path.to_path_buf(),
                file,
                msgs,
                len: data.len() as u64,
                _lock: lock,
            }),
            messages,
        ))
    }

    fn read(&self, i: usize) -> Result<Vec<u8>, String> {
        let m = self.msgs.get(i).ok_or("No such message.")?;
        let mut buf = vec![0u8; usize::try_from(m.content.end - m.content.start).unwrap_or(0)];
        self.file
            .read_exact_at(&mut buf, m.content.start)
            .map_err(|e| {
                oxipost_log::warning!("read {}: {e}", self.path.display());
                "[SYS/TEMP] Cannot read message.".to_owned()
            })?;
        Ok(unquote_from(&buf))
    }

    fn update(&mut self, deleted: &[usize]) -> Result<u64, String> {
        let fail = |what: &str, e: io::Error| {
            oxipost_log::warning!("{what} {}: {e}", self.path.display());
            "Cannot rewrite the mailbox; nothing was deleted.".to_owned()
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.pop3-{}", std::process::id()));
        let mode = self
            .file
            .metadata()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        let result = (|| -> io::Result<u64> {
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            let _ = out.set_permissions(std::fs::Permissions::from_mode(mode));
            let mut spans: Vec<std::ops::Range<u64>> = Vec::new();
            // Whatever precedes the first message, each kept message, and anything
            // appended after the session read the file (a delivery that ignored the locks).
            let first = self.msgs.first().map_or(self.len, |m| m.raw.start);
            spans.push(0..first);
            let mut removed = 0;
            for (i, m) in self.msgs.iter().enumerate() {
                if deleted.contains(&i) {
                    removed += 1;
                } else {
                    spans.push(m.raw.clone());
                }
            }
            let now = self.file.metadata()?.len();
            if now > self.len {
                spans.push(self.len..now);
            }
            let mut buf = vec![0u8; 256 * 1024];
            for s in spans {
                let mut pos = s.start;
                while pos < s.end {
                    let n = usize::try_from((s.end - pos).min(buf.len() as u64)).unwrap_or(0);
                    self.file.read_exact_at(&mut buf[..n], pos)?;
                    out.write_all(&buf[..n])?;
                    pos += n as u64;
                }
            }
            out.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()?;
            Ok(removed)
        })();
        match result {
            Ok(n) => Ok(n),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(fail("rewrite", e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let spool = Path::new("/var/mail");
        assert_eq!(
            Location::resolve("maildir:~/Maildir", "a", "/h/a", spool),
            Ok(Location::Maildir("/h/a/Maildir".into()))
        );
        assert_eq!(
            Location::resolve("mbox:~/mbox", "a", "/h/a", spool),
            Ok(Location::Mbox("/h/a/mbox".into()))
        );
        assert_eq!(
            Location::resolve(
                "mbox:/nonexistent-dir-x:INBOX=/var/mail/%u",
                "a",
                "/h",
                spool
            ),
            Ok(Location::Mbox("/var/mail/a".into()))
        );
        assert!(Location::resolve("maildir:~/Maildir", "a", "", spool).is_err());
    }

    #[test]
    fn uids() {
        assert_eq!(
            maildir_uid("1700000000.M42P77Q3V803Iabc.host,S=120,W=124"),
            "1700000000.M42P77Q3V803Iabc.host"
        );
        let long = "x".repeat(80);
        let u = maildir_uid(&long);
        assert!(u.starts_with('X') && u.len() == 41);
        assert_eq!(u, maildir_uid(&long));
    }

    #[test]
    fn maildir_sizes_uids_update() {
        let t = tempfile::tempdir().expect("tmp");
        let root = t.path().join("Maildir");
        let md = Maildir::new(&root);
        md.create().expect("create");
        std::fs::write(root.join("new/1.A.h"), b"S: 1\n\nbody\n").expect("w");
        std::fs::write(root.join("cur/2.B.h,W=99:2,S"), b"S: 2\n\nx\n").expect("w");
        let loc = Location::Maildir(root.clone());
        let (mut s, msgs) = Store::open(&loc, &LockConfig::default()).expect("open");
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].size, 14);
        assert_eq!(msgs[0].uid, "1.A.h");
        assert_eq!(msgs[1].size, 99);
        // A second session is refused while the first holds the lock.
        assert!(matches!(
            Store::open(&loc, &LockConfig::default()),
            Err(OpenError::InUse)
        ));
        assert!(
            std::fs::read_to_string(root.join(SIZES_NAME))
                .expect("cache")
                .contains("1.A.h 14")
        );
        // Another client moves the message to cur/ with flags: still readable, deletable.
        std::fs::rename(root.join("new/1.A.h"), root.join("cur/1.A.h:2,S")).expect("mv");
        assert_eq!(s.read(0).expect("read"), b"S: 1\n\nbody\n");
        assert_eq!(s.update(&[0]), Ok(1));
        assert!(!root.join("cur/1.A.h:2,S").exists());
        drop(s);
        let (_s, msgs) = Store::open(&loc, &LockConfig::default()).expect("reopen");
        assert_eq!(msgs.len(), 1);
    }

    #[test]
    fn mbox_read_update_atomic() {
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("mbox");
        let data = b"From a  Thu Jan  1 00:00:00 1970\nS: 1\n\n>From x\n\nFrom b  Thu Jan  1 00:00:00 1970\nS: 2\n\ny\n\nFrom c  Thu Jan  1 00:00:00 1970\nS: 1\n\n>From x\n\n";
        std::fs::write(&p, data).expect("w");
        let cfg = LockConfig {
            attempts: 1,
            delay: std::time::Duration::ZERO,
            ..LockConfig::default()
        };
        let loc = Location::Mbox(p.clone());
        let (mut s, msgs) = Store::open(&loc, &cfg).expect("open");
        assert_eq!(msgs.len(), 3);
        assert_eq!(s.read(0).expect("read"), b"S: 1\n\nFrom x\n");
        assert_eq!(msgs[0].size, wire_size(b"S: 1\n\nFrom x\n"));
        assert_ne!(msgs[0].uid, msgs[2].uid);
        assert!(matches!(Store::open(&loc, &cfg), Err(OpenError::InUse)));
        assert_eq!(s.update(&[1]), Ok(1));
        drop(s);
        let after = std::fs::read(&p).expect("read");
        assert_eq!(
            after,
            b"From a  Thu Jan  1 00:00:00 1970\nS: 1\n\n>From x\n\nFrom c  Thu Jan  1 00:00:00 1970\nS: 1\n\n>From x\n\n"
        );
        assert!(!p.with_file_name("mbox.lock").exists());
        let (_s, again) = Store::open(&loc, &cfg).expect("reopen");
        assert_eq!(again[0].uid, msgs[0].uid);
    }
}

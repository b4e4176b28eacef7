//! Maildir delivery (D. J. Bernstein's specification, as Postfix's local(8) does it) and
//! Maildir++ folders.
//!
//! A delivery writes `tmp/<name>`, fsyncs it, hard-links it to `new/<name>` (falling back to
//! `rename` on file systems without hard links), removes the `tmp/` name and fsyncs `new/`, so
//! a reader never sees a partial message and a reported delivery survives a crash.
//!
//! Names: `tmp/<secs>.M<usecs>P<pid>Q<count>.<host>` and
//! `new/<secs>.M<usecs>P<pid>Q<count>V<dev>I<ino>.<host>[,S=<size>]`. The `tmp/` name cannot
//! carry the device and inode numbers because they exist only once the file does (Postfix uses
//! two names for the same reason); the process id and a per-process counter keep it unique among
//! concurrent deliveries, and the inode keeps the final name unique even across a pid reuse
//! within one microsecond. In the host name `/` becomes `\057`, `:` becomes `\072`, and (since
//! Maildir++ uses `,` to separate name fields) `,` becomes `\054`. `,S=<size>` (the file size,
//! as Dovecot reads it to skip a `stat`) is added with [`DeliverOptions::size_in_name`].
//!
//! [`MaildirBatch`] makes several deliveries durable together: every file is written and
//! fsynced, then all are linked into `new/`, then each distinct `new/` directory is fsynced
//! once. A delivery agent answers for all of them after [`MaildirBatch::commit`].

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::content::{self, Style};
use crate::error::{Error, Result};

/// Per-delivery choices a delivery agent makes from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliverOptions {
    /// Append `,S=<size>` to the file name (Maildir++ / Dovecot).
    pub size_in_name: bool,
    /// Largest message file allowed, in bytes, prepended headers included: the smaller of
    /// `message_size_limit` and `mailbox_size_limit` (Postfix applies the latter to each
    /// Maildir file). `None` or `Some(0)` means no limit.
    pub size_limit: Option<u64>,
}

/// A completed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The message file in `new/`.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// A Maildir: a directory holding `tmp/`, `new/` and `cur/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// Names a Maildir; nothing is touched on disk.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Maildir { root: root.into() }
    }

    /// The Maildir's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `tmp/`, `new/` or `cur/` of this Maildir.
    pub fn subdir(&self, which: &str) -> PathBuf {
        self.root.join(which)
    }

    /// Creates the Maildir and any missing parent, `tmp/`, `new/` and `cur/`, with mode 0700
    /// (as the calling user: privilege switching is the caller's). Existing directories are
    /// left as they are. Newly created directories are made durable.
    pub fn create(&self) -> Result<()> {
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        let existed = self.root.is_dir();
        builder
            .create(&self.root)
            .map_err(|e| Error::io("create directory", &self.root, e))?;
        let mut created_any = !existed;
        for sub in ["tmp", "new", "cur"] {
            let dir = self.root.join(sub);
            match DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => created_any = true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(Error::io("create directory", &dir, e)),
            }
        }
        if created_any {
            fsync_dir(&self.root)?;
            if !existed
                && let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty())
            {
                fsync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Delivers one message: `headers` (complete lines without line ends, e.g.
    /// `"Return-Path: <a@b>"`, `"Delivered-To: c@d"`) then `content` with CRLF turned into LF.
    /// Returns once the file is durable in `new/`.
    pub fn deliver<R: Read>(
        &self,
        headers: &[&str],
        content: R,
        opts: &DeliverOptions,
    ) -> Result<Delivered> {
        let mut batch = MaildirBatch::new();
        batch.stage(self, headers, content, opts)?;
        batch
            .commit()
            .pop()
            .unwrap_or_else(|| Err(Error::Invalid("empty delivery batch".into())))
    }

    /// The Maildir++ folder `name` (hierarchy separated by `.`, e.g. `"Lists.rust"`), i.e. the
    /// directory `<root>/.<name>`. Nothing is touched on disk. Folder names are stored as
    /// given; IMAP's modified UTF-7 is the caller's business.
    pub fn folder(&self, name: &str) -> Result<Maildir> {
        check_folder_name(name)?;
        Ok(Maildir::new(self.root.join(format!(".{name}"))))
    }

    /// Creates the Maildir++ folder `name` (with its `maildirfolder` marker file) and returns it.
    pub fn create_folder(&self, name: &str) -> Result<Maildir> {
        let folder = self.folder(name)?;
        self.create()?;
        folder.create()?;
        let marker = folder.root.join("maildirfolder");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&marker)
            .map_err(|e| Error::io("create", &marker, e))?;
        Ok(folder)
    }

    /// Names of the Maildir++ folders under this Maildir (without the leading `.`), sorted.
    pub fn folders(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.root).map_err(|e| Error::io("read", &self.root, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io("read", &self.root, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(folder) = name.strip_prefix('.') else {
                continue;
            };
            if check_folder_name(folder).is_err() {
                continue;
            }
            if entry.path().join("cur").is_dir() {
                out.push(folder.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

fn check_folder_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.contains('/')
        || name.contains('\0')
        || name.split('.').any(|part| part.is_empty());
    if bad {
        return Err(Error::Invalid(format!(
            "invalid Maildir++ folder name: {name:?}"
        )));
    }
    Ok(())
}

/// A message written and fsynced in `tmp/`, waiting to be linked into `new/`.
#[derive(Debug)]
struct Staged {
    maildir: Maildir,
    tmp_path: PathBuf,
    final_name: String,
    size: u64,
    /// Written but not yet fsynced: [`MaildirBatch::commit`] syncs all files together.
    file: Option<File>,
}

/// Several Maildir deliveries made durable together (group commit).
///
/// [`stage`](Self::stage) writes and fsyncs each message in its Maildir's `tmp/`;
/// [`commit`](Self::commit) links them all into `new/` and fsyncs each distinct `new/` once.
/// Dropping a batch without committing removes the staged files.
#[derive(Debug, Default)]
pub struct MaildirBatch {
    staged: Vec<Staged>,
}

impl MaildirBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of staged messages.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// True when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Writes one message into `maildir`'s `tmp/` (creating the Maildir if missing) and fsyncs
    /// it. Returns its index in the results of [`commit`](Self::commit). On error nothing is left
    /// in `tmp/` and the batch is unchanged.
    pub fn stage<R: Read>(
        &mut self,
        maildir: &Maildir,
        headers: &[&str],
        mut content: R,
        opts: &DeliverOptions,
    ) -> Result<usize> {
        content::check_header_lines(headers)?;
        let (unique, tmp_path, mut file) = create_tmp(maildir)?;
        let result = write_tmp(&mut file, &tmp_path, headers, &mut content, opts, false);
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&tmp_path);
                return Err(e);
            }
        };
        let md = match file.metadata() {
            Ok(md) => md,
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&tmp_path);
                return Err(Error::io("fstat", &tmp_path, e));
            }
        };
        let final_name = unique.final_name(md.dev(), md.ino(), opts.size_in_name.then_some(size));
        self.staged.push(Staged {
            maildir: maildir.clone(),
            tmp_path,
            final_name,
            size,
            file: Some(file),
        });
        Ok(self.staged.len() - 1)
    }

    /// Links every staged message into `new/`, then fsyncs each distinct `new/` directory once.
    /// Results are in staging order. A message whose directory fsync failed is removed again
    /// and reported as failed, so that a retry cannot produce a duplicate.
    pub fn commit(mut self) -> Vec<Result<Delivered>> {
        let mut staged = std::mem::take(&mut self.staged);
        let synced = sync_all_parallel(&mut staged);
        let mut results: Vec<Result<Delivered>> = Vec::with_capacity(staged.len());
        let mut dirs: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        for (s, sync) in staged.into_iter().zip(synced) {
            if let Err(e) = sync {
                let _ = std::fs::remove_file(&s.tmp_path);
                results.push(Err(e));
                continue;
            }
            let r = link_into_new(&s);
            if r.is_err() {
                let _ = std::fs::remove_file(&s.tmp_path);
            }
            if r.is_ok() {
                let new_dir = s.maildir.subdir("new");
                dirs.entry(new_dir).or_default().push(results.len());
            }
            results.push(r);
        }
        for (dir, members) in dirs {
            if let Err(e) = fsync_dir(&dir) {
                for i in members {
                    if let Some(Ok(d)) = results.get(i) {
                        let _ = std::fs::remove_file(&d.path);
                    }
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Err(copy_error(&e));
                    }
                }
            }
        }
        results
    }
}

impl Drop for MaildirBatch {
    fn drop(&mut self) {
        for s in &self.staged {
            let _ = std::fs::remove_file(&s.tmp_path);
        }
    }
}

fn copy_error(e: &Error) -> Error {
    match e {
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: match source.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(source.kind(), source.to_string()),
            },
        },
        other => Error::Invalid(other.to_string()),
    }
}

/// `rename(2)` that never replaces an existing name; `Ok(false)`: not supported here.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let cfrom = std::ffi::CString::new(from.as_os_str().as_bytes())?;
        let cto = std::ffi::CString::new(to.as_os_str().as_bytes())?;
        // SAFETY: both pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                cfrom.as_ptr(),
                libc::AT_FDCWD,
                cto.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
            _ => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (from, to);
        Ok(false)
    }
}

/// Moves a synced file from tmp/ into new/ (the tmp name is gone afterwards on success):
/// one no-replace rename where the system has it, else link and unlink as the Maildir
/// specification says. Either way an existing message is never replaced.
fn link_into_new(s: &Staged) -> Result<Delivered> {
    let new_path = s.maildir.subdir("new").join(&s.final_name);
    let mut created = false;
    loop {
        match rename_noreplace(&s.tmp_path, &new_path) {
            Ok(true) => {
                return Ok(Delivered {
                    path: new_path,
                    size: s.size,
                });
            }
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && !created => {
                s.maildir.create()?;
                created = true;
                continue;
            }
            // Anything else (EEXIST included): the link below reports it in the usual words.
            Err(_) => {}
        }
        match std::fs::hard_link(&s.tmp_path, &new_path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&s.tmp_path);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !created => {
                s.maildir.create()?;
                created = true;
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
                ) =>
            {
                // No hard links here (some FUSE and network file systems). The name is unique
                // by its inode number, so rename cannot replace another message.
                std::fs::rename(&s.tmp_path, &new_path)
                    .map_err(|e| Error::io("rename", &new_path, e))?;
                break;
            }
            Err(e) => return Err(Error::io("link", &new_path, e)),
        }
    }
    Ok(Delivered {
        path: new_path,
        size: s.size,
    })
}

fn create_tmp(maildir: &Maildir) -> Result<(Unique, PathBuf, File)> {
    let tmp_dir = maildir.subdir("tmp");
    let mut created = false;
    let mut collisions = 0;
    loop {
        let unique = Unique::now();
        let path = tmp_dir.join(unique.tmp_name());
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((unique, path, f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !created => {
                maildir.create()?;
                created = true;
            }
            // Another process with our pid (a pid namespace sharing the directory) in the
            // same microsecond: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && collisions < 100 => {
                collisions += 1;
            }
            Err(e) => return Err(Error::io("create", &path, e)),
        }
    }
}

/// Fsyncs every staged file, several at once: concurrent fsyncs on one file system are
/// merged by its journal into few commits, which is what makes a batch cheaper than the
/// same deliveries one by one.
fn sync_all_parallel(staged: &mut [Staged]) -> Vec<Result<()>> {
    const THREADS: usize = 4;
    let sync_one = |s: &mut Staged| -> Result<()> {
        match s.file.take() {
            Some(f) => f.sync_all().map_err(|e| Error::io("fsync", &s.tmp_path, e)),
            None => Ok(()),
        }
    };
    if staged.len() <= 1 {
        return staged.iter_mut().map(sync_one).collect();
    }
    let chunk = staged.len().div_ceil(THREADS);
    // This thread syncs the first part itself: one thread fewer to start per batch.
    let (first, rest) = staged.split_at_mut(chunk.min(staged.len()));
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .chunks_mut(chunk)
            .map(|part| {
                let n = part.len();
                (
                    n,
                    scope.spawn(move || part.iter_mut().map(sync_one).collect::<Vec<_>>()),
                )
            })
            .collect();
        let mut out: Vec<Result<()>> = first.iter_mut().map(sync_one).collect();
        out.extend(handles.into_iter().flat_map(|(n, h)| {
            h.join().unwrap_or_else(|_| {
                (0..n)
                    .map(|_| Err(Error::Invalid("fsync thread panicked".into())))
                    .collect()
            })
        }));
        out
    })
}

fn write_tmp<R: Read>(
    file: &mut File,
    path: &Path,
    headers: &[&str],
    content: &mut R,
    opts: &DeliverOptions,
    sync: bool,
) -> Result<u64> {
    let limit = match opts.size_limit {
        Some(0) | None => u64::MAX,
        Some(n) => n,
    };
    let size = content::copy_message(file, b"", headers, content, Style::default(), limit)
        .map_err(|e| e.into_error(path, limit))?;
    if sync {
        file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
    }
    Ok(size)
}

/// Opens a directory and fsyncs it, so that entries created in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    match f.sync_all() {
        Ok(()) => Ok(()),
        // Some file systems refuse fsync on directories; nothing more can be done there.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EBADF)) => Ok(()),
        Err(e) => Err(Error::io("fsync directory", dir, e)),
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The time/pid/counter part of a Maildir name.
#[derive(Debug, Clone)]
pub(crate) struct Unique {
    secs: u64,
    usecs: u32,
    pid: u32,
    count: u64,
}

impl Unique {
    fn now() -> Unique {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Unique {
            secs: now.as_secs(),
            usecs: now.subsec_micros(),
            pid: oxipost_log::pid(),
            count: COUNTER.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn stem(&self) -> String {
        format!("{}.M{}P{}Q{}", self.secs, self.usecs, self.pid, self.count)
    }

    fn tmp_name(&self) -> String {
        format!("{}.{}", self.stem(), hostname())
    }

    fn final_name(&self, dev: u64, ino: u64, size: Option<u64>) -> String {
        let mut name = format!("{}V{dev:x}I{ino:x}.{}", self.stem(), hostname());
        if let Some(size) = size {
            name.push_str(&format!(",S={size}"));
        }
        name
    }
}

/// This host's name as used in Maildir file names (computed once).
pub fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let raw = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        encode_hostname(&raw)
    })
}

/// Encodes a host name for a Maildir file name: `/` → `\057`, `:` → `\072`, `,` → `\054`.
pub fn encode_hostname(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            ',' => out.push_str("\\054"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_encoded() {
        assert_eq!(encode_hostname("a/b:c,d"), "a\\057b\\072c\\054d");
    }

    #[test]
    fn unique_name_format() {
        let u = Unique {
            secs: 1700000000,
            usecs: 42,
            pid: 77,
            count: 3,
        };
        let host = hostname();
        assert_eq!(u.tmp_name(), format!("1700000000.M42P77Q3.{host}"));
        assert_eq!(
            u.final_name(0x803, 0xabc, Some(120)),
            format!("1700000000.M42P77Q3V803Iabc.{host},S=120")
        );
    }

    #[test]
    fn folder_names_are_checked() {
        let m = Maildir::new("/x");
        assert!(m.folder("Lists.rust").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a/b"] {
            assert!(m.folder(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            m.folder("Sent").ok().map(|f| f.path().to_path_buf()),
            Some(PathBuf::from("/x/.Sent"))
        );
    }
}

//! The queue directory tree: which queues exist, where a message's file lives (hash
//! subdirectories as in Postfix), creating the tree, moving and listing messages, and the
//! deferred next-attempt time.
//!
//! Layout under `queue_directory`:
//!
//! | directory | mode | purpose |
//! |---|---|---|
//! | `maildrop/` | 0730 (group = the postdrop group) | local submissions awaiting `pickup` |
//! | `incoming/` | 0700 | new messages written by the queue writer |
//! | `active/` | 0700 | messages the queue manager is working on |
//! | `deferred/` | 0700 | messages waiting for a retry (mtime = next attempt) |
//! | `hold/` | 0700 | messages put on hold by the administrator |
//! | `corrupt/` | 0700 | unreadable files set aside |
//! | `defer/`, `bounce/`, `trace/` | 0700 | per-message delivery logs, named by queue id |
//!
//! A queue named in `hash_queue_names` (default `deferred, defer`) keeps its files in
//! `hash_queue_depth` levels of one-character subdirectories, chosen like Postfix's
//! `mail_queue_dir()`: from the microseconds of a long id printed as 5 upper-case hex digits
//! (so `deferred/A/<id>` for depth 1). Temporary files (names starting with `.`) never parse
//! as queue ids, so listings skip them.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{QueueError, Result};
use crate::id::QueueId;

/// The queue crate's configuration: a plain struct the daemon fills from its typed config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// `queue_directory`, e.g. `/var/spool/postfix`.
    pub queue_directory: PathBuf,
    /// `hash_queue_depth` (default 1; at least 1).
    pub hash_queue_depth: u32,
    /// `hash_queue_names`, already split (default `deferred`, `defer`). Compared
    /// case-insensitively, as Postfix does.
    pub hash_queue_names: Vec<String>,
    /// Owner (uid, gid) given to directories made by [`Layout::create_all`]; `None` keeps
    /// the creating process's.
    pub owner: Option<(u32, u32)>,
    /// Group of `maildrop/` (Postfix's `setgid_group`, normally `postdrop`); `None` keeps the
    /// owner's group.
    pub maildrop_group: Option<u32>,
}

impl QueueConfig {
    /// Defaults for a queue at `queue_directory`.
    pub fn new(queue_directory: impl Into<PathBuf>) -> QueueConfig {
        QueueConfig {
            queue_directory: queue_directory.into(),
            hash_queue_depth: 1,
            hash_queue_names: split_names("deferred, defer"),
            owner: None,
            maildrop_group: None,
        }
    }

    /// Sets `hash_queue_names` from main.cf syntax (names separated by commas or white space).
    pub fn with_hash_queue_names(mut self, value: &str) -> QueueConfig {
        self.hash_queue_names = split_names(value);
        self
    }

    /// Sets `hash_queue_depth`.
    pub fn with_hash_queue_depth(mut self, depth: u32) -> QueueConfig {
        self.hash_queue_depth = depth;
        self
    }
}

/// Splits a main.cf list value on commas and white space.
pub fn split_names(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A queue (or per-message log) directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Queue {
    /// `maildrop`.
    Maildrop,
    /// `incoming`.
    Incoming,
    /// `active`.
    Active,
    /// `deferred`.
    Deferred,
    /// `hold`.
    Hold,
    /// `corrupt`.
    Corrupt,
    /// `defer` (per-message defer logs).
    Defer,
    /// `bounce` (per-message bounce logs).
    Bounce,
    /// `trace` (per-message trace logs).
    Trace,
}

impl Queue {
    /// Every queue and log directory.
    pub const ALL: [Queue; 9] = [
        Queue::Maildrop,
        Queue::Incoming,
        Queue::Active,
        Queue::Deferred,
        Queue::Hold,
        Queue::Corrupt,
        Queue::Defer,
        Queue::Bounce,
        Queue::Trace,
    ];

    /// The queues that hold message files (not logs), in the order `mailq` shows them.
    pub const MESSAGE_QUEUES: [Queue; 6] = [
        Queue::Maildrop,
        Queue::Incoming,
        Queue::Active,
        Queue::Deferred,
        Queue::Hold,
        Queue::Corrupt,
    ];

    /// The directory name.
    pub fn name(self) -> &'static str {
        match self {
            Queue::Maildrop => "maildrop",
            Queue::Incoming => "incoming",
            Queue::Active => "active",
            Queue::Deferred => "deferred",
            Queue::Hold => "hold",
            Queue::Corrupt => "corrupt",
            Queue::Defer => "defer",
            Queue::Bounce => "bounce",
            Queue::Trace => "trace",
        }
    }

    /// Looks a queue up by name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Queue> {
        Queue::ALL
            .into_iter()
            .find(|q| q.name().eq_ignore_ascii_case(name))
    }

    /// The directory mode Postfix gives this queue.
    pub fn mode(self) -> u32 {
        match self {
            Queue::Maildrop => 0o730,
            _ => 0o700,
        }
    }
}

impl std::fmt::Display for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One message found by [`Layout::list`].
#[derive(Clone, Debug)]
pub struct QueueEntry {
    /// Its queue id.
    pub id: QueueId,
    /// Its full path.
    pub path: PathBuf,
}

/// Where everything lives; cheap to clone.
#[derive(Clone, Debug)]
pub struct Layout {
    config: QueueConfig,
}

/// Fsyncs a directory so that entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn mkdir_mode(path: &Path, mode: u32) -> io::Result<bool> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // The umask may have cut bits off: set the mode exactly.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

impl Layout {
    /// Checks the configuration and builds the layout.
    pub fn new(config: QueueConfig) -> Result<Layout> {
        if config.hash_queue_depth == 0 || config.hash_queue_depth > 10 {
            return Err(QueueError::State(
                "hash_queue_depth must be between 1 and 10",
            ));
        }
        for n in &config.hash_queue_names {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(QueueError::InvalidId(n.clone()));
            }
        }
        Ok(Layout { config })
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// `queue_directory`.
    pub fn root(&self) -> &Path {
        &self.config.queue_directory
    }

    /// The top directory of a queue.
    pub fn queue_dir(&self, queue: Queue) -> PathBuf {
        self.config.queue_directory.join(queue.name())
    }

    /// True when the queue uses hash subdirectories.
    pub fn is_hashed(&self, queue: Queue) -> bool {
        self.config
            .hash_queue_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(queue.name()))
    }

    /// The directory holding `id` in `queue` (with hash levels if the queue is hashed).
    pub fn dir_for(&self, queue: Queue, id: &QueueId) -> PathBuf {
        let mut dir = self.queue_dir(queue);
        if self.is_hashed(queue) {
            for c in id.hash_dirs(self.config.hash_queue_depth) {
                dir.push(c.to_string());
            }
        }
        dir
    }

    /// The path of `id` in `queue`.
    pub fn path_for(&self, queue: Queue, id: &QueueId) -> PathBuf {
        self.dir_for(queue, id).join(id.as_str())
    }

    fn set_owner(&self, path: &Path, queue: Queue) -> io::Result<()> {
        let gid = match queue {
            Queue::Maildrop => self
                .config
                .maildrop_group
                .or(self.config.owner.map(|o| o.1)),
            _ => self.config.owner.map(|o| o.1),
        };
        let uid = self.config.owner.map(|o| o.0);
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::chown(path, uid, gid)?;
        }
        Ok(())
    }

    /// Creates `queue_directory`, every queue directory and, for hashed queues, every hash
    /// subdirectory (16 per level; depths above 2 are left to be made on demand). Existing
    /// directories are left as they are. Modes are set exactly (0700, maildrop 0730), owner
    /// and group as configured.
    pub fn create_all(&self) -> Result<()> {
        fs::create_dir_all(self.root())?;
        for queue in Queue::ALL {
            let dir = self.queue_dir(queue);
            if mkdir_mode(&dir, queue.mode())? {
                self.set_owner(&dir, queue)?;
            }
            if self.is_hashed(queue) && self.config.hash_queue_depth <= 2 {
                self.create_hash_levels(&dir, queue, self.config.hash_queue_depth)?;
            }
        }
        Ok(())
    }

    fn create_hash_levels(&self, dir: &Path, queue: Queue, depth: u32) -> Result<()> {
        if depth == 0 {
            return Ok(());
        }
        for c in "0123456789ABCDEF".chars() {
            let sub = dir.join(c.to_string());
            if mkdir_mode(&sub, 0o700)? {
                self.set_owner(&sub, queue)?;
            }
            self.create_hash_levels(&sub, queue, depth - 1)?;
        }
        Ok(())
    }

    /// Makes the (hash) directory for `id` in `queue` if it is missing.
    pub fn ensure_dir(&self, queue: Queue, id: &QueueId) -> Result<PathBuf> {
        let dir = self.dir_for(queue, id);
        if !dir.is_dir() {
            let top = self.queue_dir(queue);
            let mut cur = top.clone();
            for comp in dir.strip_prefix(&top).unwrap_or(Path::new("")).components() {
                cur.push(comp);
                if mkdir_mode(&cur, 0o700)? {
                    self.set_owner(&cur, queue)?;
                }
            }
        }
        Ok(dir)
    }

    /// Moves a message between queues: one `rename`, making the target hash directory if
    /// needed, then an fsync of the target directory (on journaling file systems this commits
    /// the whole rename). Returns the new path.
    pub fn move_to(&self, id: &QueueId, from: Queue, to: Queue) -> Result<PathBuf> {
        let new = self.move_unsynced(id, from, to)?;
        sync_dir(&self.dir_for(to, id))?;
        Ok(new)
    }

    /// [`Layout::move_to`] without the directory fsync. Safe for moves between queues that
    /// the queue manager scans anyway (incoming, active, deferred): a rename is atomic, so
    /// after a crash the message is in exactly one of the two directories and is found
    /// there. qmgr uses it on every message, where an fsync would cost throughput.
    pub fn move_unsynced(&self, id: &QueueId, from: Queue, to: Queue) -> Result<PathBuf> {
        let old = self.path_for(from, id);
        let new = self.path_for(to, id);
        if let Err(e) = fs::rename(&old, &new) {
            if e.kind() != io::ErrorKind::NotFound || !old.exists() {
                return Err(e.into());
            }
            self.ensure_dir(to, id)?;
            fs::rename(&old, &new)?;
        }
        Ok(new)
    }

    /// Removes a message (or log) file. A missing file is not an error (returns false).
    pub fn remove(&self, queue: Queue, id: &QueueId) -> Result<bool> {
        match fs::remove_file(self.path_for(queue, id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Finds which message queue holds `id`.
    pub fn find(&self, id: &QueueId) -> Option<(Queue, PathBuf)> {
        Queue::MESSAGE_QUEUES.into_iter().find_map(|q| {
            let p = self.path_for(q, id);
            p.exists().then_some((q, p))
        })
    }

    /// Lists the messages in a queue, walking hash subdirectories of any depth. Names that are
    /// not queue ids (temporary files, strays) are skipped. Order is unspecified.
    pub fn list(&self, queue: Queue) -> Result<Vec<QueueEntry>> {
        let mut out = Vec::new();
        let top = self.queue_dir(queue);
        let depth = if self.is_hashed(queue) {
            self.config.hash_queue_depth
        } else {
            0
        };
        walk(&top, depth, &mut out)?;
        Ok(out)
    }

    /// Sets the next delivery attempt time of a deferred message: the file's atime and mtime,
    /// as Postfix's queue manager does.
    pub fn set_next_attempt(&self, queue: Queue, id: &QueueId, when: SystemTime) -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .open(self.path_for(queue, id))?;
        f.set_times(FileTimes::new().set_accessed(when).set_modified(when))?;
        Ok(())
    }

    /// The next delivery attempt time (mtime) of a message.
    pub fn next_attempt(&self, queue: Queue, id: &QueueId) -> Result<SystemTime> {
        Ok(fs::metadata(self.path_for(queue, id))?.modified()?)
    }

    /// Removes leftover temporary files (from writers that crashed) older than `age` from
    /// `queue`'s top directory. Returns how many were removed.
    pub fn remove_stale_temp(&self, queue: Queue, age: Duration) -> Result<usize> {
        let mut n = 0;
        let now = SystemTime::now();
        for entry in fs::read_dir(self.queue_dir(queue))? {
            let entry = entry?;
            let name = entry.file_name();
            if !name
                .to_string_lossy()
                .starts_with(crate::writer::TEMP_PREFIX)
            {
                continue;
            }
            let meta = entry.metadata()?;
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|d| d >= age);
            if meta.is_file() && old {
                match fs::remove_file(entry.path()) {
                    Ok(()) => n += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(n)
    }
}

fn walk(dir: &Path, depth: u32, out: &mut Vec<QueueEntry>) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ft = entry.file_type()?;
        if ft.is_dir() {
            if depth > 0 && name.chars().count() == 1 {
                walk(&entry.path(), depth - 1, out)?;
            }
        } else if ft.is_file()
            && let Ok(id) = QueueId::parse(name)
        {
            out.push(QueueEntry {
                id,
                path: entry.path(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn create_all_modes_and_hash_dirs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(QueueConfig::new(tmp.path().join("spool"))).expect("layout");
        layout.create_all().expect("create");
        layout.create_all().expect("idempotent");
        for q in Queue::ALL {
            let m = fs::metadata(layout.queue_dir(q)).expect("meta");
            assert!(m.is_dir());
            assert_eq!(m.mode() & 0o7777, q.mode(), "{q}");
        }
        assert!(layout.queue_dir(Queue::Deferred).join("F").is_dir());
        assert!(layout.queue_dir(Queue::Defer).join("0").is_dir());
        assert!(!layout.queue_dir(Queue::Incoming).join("0").exists());
    }

    #[test]
    fn hashed_paths_follow_postfix() {
        let layout = Layout::new(
            QueueConfig::new("/q")
                .with_hash_queue_depth(2)
                .with_hash_queue_names("Deferred,hold"),
        )
        .expect("layout");
        let id = QueueId::new_long(1_700_000_000, 0x3C2A1, 99);
        assert_eq!(
            layout.path_for(Queue::Deferred, &id),
            PathBuf::from(format!("/q/deferred/3/C/{id}"))
        );
        assert_eq!(
            layout.path_for(Queue::Hold, &id),
            PathBuf::from(format!("/q/hold/3/C/{id}"))
        );
        assert_eq!(
            layout.path_for(Queue::Active, &id),
            PathBuf::from(format!("/q/active/{id}"))
        );
    }

    #[test]
    fn config_rejects_bad_values() {
        assert!(Layout::new(QueueConfig::new("/q").with_hash_queue_depth(0)).is_err());
        assert!(Layout::new(QueueConfig::new("/q").with_hash_queue_names("../x")).is_err());
        assert_eq!(
            split_names(" deferred,defer  hold"),
            vec!["deferred", "defer", "hold"]
        );
    }
}

//! One mailbox: a Maildir and its index `oxipost-index` (SQLite).
//!
//! Tables: `meta` (`uidvalidity`, `uidnext`, `highestmodseq`, `schema`) and `msg` (`uid`,
//! `bhash` — a hash of the base name, the message's identity —, `name` — the current file
//! name in `cur/` —, `flags` as Maildir letters, `keywords`
//! space-separated, `modseq`, `internaldate` in Unix seconds, `size` in bytes with CRLF
//! line ends, the size IMAP reports; both -1 until first needed: indexing a new file
//! neither `stat`s nor reads it, see [`Mailbox::date_and_size`]). Every write runs inside [`Mailbox::locked`]: the
//! flock on `oxipost-index.lock` plus one SQLite transaction.
//!
//! **Directory stamps.** `meta` also holds `newstamp`/`curstamp`: the mtimes (ns) of
//! `new/` and `cur/` taken *before* the listing that last brought the index in line with
//! them. While a directory's mtime still equals its stamp nothing was added, renamed or
//! removed in it since, so [`Mailbox::sync`] skips its listing (as Dovecot trusts its
//! index while `cur/`'s mtime is unchanged). A stamp is only recorded when the mtime is
//! more than a second old: a change within the same tick of a coarse clock could
//! otherwise leave the mtime as it was.
//!
//! **Cache.** `cache` holds per message values a reader computed from the immutable file
//! (imapd: ENVELOPE, BODYSTRUCTURE), keyed by UID and field, tagged with the version of
//! the code that computed them (another version's value is a miss), as Dovecot's
//! `dovecot.index.cache`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Result, StoreError, base_name};

const INDEX_NAME: &str = "oxipost-index";
/// The index layout's version (`meta` key `schema`); an older one is converted on open.
const SCHEMA: i64 = 2;
/// The `msg` table. `bhash` is [`base_hash`] of the name's base name, indexed (not
/// unique: the store keeps one row per base name, told apart by the names).
const MSG_COLUMNS: &str = "uid INTEGER PRIMARY KEY, bhash INTEGER NOT NULL,
    name TEXT NOT NULL, flags TEXT NOT NULL, keywords TEXT NOT NULL,
    modseq INTEGER NOT NULL, internaldate INTEGER NOT NULL, size INTEGER NOT NULL";
const LOCK_NAME: &str = "oxipost-index.lock";

/// IMAP's system flags, stored as Maildir info letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    pub const SEEN: Flags = Flags(1);
    pub const ANSWERED: Flags = Flags(2);
    pub const FLAGGED: Flags = Flags(4);
    pub const DELETED: Flags = Flags(8);
    pub const DRAFT: Flags = Flags(16);
    /// IMAP name, Maildir letter.
    const TABLE: [(Flags, &'static str, char); 5] = [
        (Flags::ANSWERED, "\\Answered", 'R'),
        (Flags::FLAGGED, "\\Flagged", 'F'),
        (Flags::DELETED, "\\Deleted", 'T'),
        (Flags::SEEN, "\\Seen", 'S'),
        (Flags::DRAFT, "\\Draft", 'D'),
    ];

    pub fn empty() -> Flags {
        Flags(0)
    }
    pub fn contains(self, o: Flags) -> bool {
        self.0 & o.0 == o.0
    }
    pub fn union(self, o: Flags) -> Flags {
        Flags(self.0 | o.0)
    }
    pub fn minus(self, o: Flags) -> Flags {
        Flags(self.0 & !o.0)
    }
    /// The flag named `name` (`\Seen`, case-insensitive).
    pub fn from_imap(name: &str) -> Option<Flags> {
        Self::TABLE
            .iter()
            .find(|(_, n, _)| n.eq_ignore_ascii_case(name))
            .map(|(f, _, _)| *f)
    }
    /// From Maildir info letters (unknown letters ignored).
    pub fn from_letters(s: &str) -> Flags {
        let mut f = Flags(0);
        for c in s.chars() {
            if let Some((fl, _, _)) = Self::TABLE.iter().find(|(_, _, l)| *l == c) {
                f = f.union(*fl);
            }
        }
        f
    }
    /// Maildir info letters, in ASCII order as the Maildir specification asks.
    pub fn letters(self) -> String {
        self.letters_str().to_owned()
    }

    /// [`Flags::letters`] without an allocation (indexing binds one per message).
    pub fn letters_str(self) -> &'static str {
        // By bit value: S = 1, R = 2, F = 4, T = 8, D = 16.
        const LETTERS: [&str; 32] = [
            "", "S", "R", "RS", "F", "FS", "FR", "FRS", "T", "ST", "RT", "RST", "FT", "FST", "FRT",
            "FRST", "D", "DS", "DR", "DRS", "DF", "DFS", "DFR", "DFRS", "DT", "DST", "DRT", "DRST",
            "DFT", "DFST", "DFRT", "DFRST",
        ];
        LETTERS[usize::from(self.0 & 31)]
    }
    /// IMAP names, space-separated.
    pub fn imap_names(self) -> Vec<&'static str> {
        Self::TABLE
            .iter()
            .filter(|(f, _, _)| self.contains(*f))
            .map(|(_, n, _)| *n)
            .collect()
    }
}

/// One message as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub uid: u32,
    /// The file name in `cur/` when last indexed (shared: copying a mailbox's list of
    /// 10,000s of messages copies no names).
    pub name: Arc<str>,
    pub flags: Flags,
    pub keywords: Vec<String>,
    pub modseq: u64,
    /// The internal date (the file's mtime) and the size with CRLF line ends: `None`
    /// until first needed (indexing a new file costs no `stat` or `read`, as Dovecot's
    /// Maildir), see [`Mailbox::date_and_size`] and [`Mailbox::remember`].
    pub internal_date: Option<i64>,
    pub size: Option<u64>,
}

impl Message {
    /// The base name (the identity, see the crate documentation): a prefix of `name`.
    pub fn base(&self) -> &str {
        base_name(&self.name)
    }
}

/// The mailbox as the index has it at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highest_modseq: u64,
    /// Sorted by UID. Shared: a snapshot handed to 100s of sessions of one mailbox is
    /// one list (a session that changes its copy gets its own, `Arc::make_mut`).
    pub messages: Arc<Vec<Message>>,
}

/// An open mailbox.
pub struct Mailbox {
    root: PathBuf,
    db: Db,
    /// UIDs moved from `new/` while opening, for the first [`Mailbox::refresh`].
    fresh: Vec<u32>,
    /// The index file's (device, inode): with its path, the key of [`SNAPSHOTS`].
    db_id: (u64, u64),
    /// The counters [`Mailbox::sync`] read when it found nothing to do, for the
    /// [`Mailbox::snapshot`] right after (a SELECT): a kept message list with these
    /// counters is taken without another read transaction. Cleared by any write.
    counters: Option<Counters>,
    /// The index's tables are still to be made: by the first write transaction, in
    /// which [`Mailbox::open`]'s first look fills them (one commit and its syncs, not
    /// one for the empty tables and another for the rows).
    create: bool,
    /// The flock [`Mailbox::locked`] uses instead of taking it, while
    /// [`Mailbox::build_new`] holds it for the whole build.
    held: Option<File>,
}

/// UIDVALIDITY, UIDNEXT, highest MODSEQ.
type Counters = (u32, u32, u64);
/// The recorded mtimes of new/ and cur/.
type Stamps = (Option<i64>, Option<i64>);

/// The mailboxes' message lists read most recently in this process (imapd serves many
/// sessions per process): a SELECT of a mailbox whose index has not changed since (same
/// index file, UIDVALIDITY, UIDNEXT and highest MODSEQ — every change of a message row
/// raises the MODSEQ) copies the list instead of reading every row again.
static SNAPSHOTS: Mutex<Vec<KeptSnapshot>> = Mutex::new(Vec::new());
/// Mailbox root, index file (device, inode), list.
type KeptSnapshot = (PathBuf, (u64, u64), Arc<Snapshot>);
const SNAPSHOTS_KEPT: usize = 8;

/// Index connections of mailboxes closed lately in this process, most recent last: a
/// new session's SELECT of one reuses it instead of opening SQLite again (an open, its
/// file locks and schema read are syscalls that count). Mailbox root, index file
/// (device, inode) when opened, the connection.
static CONNECTIONS: Mutex<Vec<KeptConnection>> = Mutex::new(Vec::new());
type KeptConnection = (PathBuf, (u64, u64), Connection);
const CONNECTIONS_KEPT: usize = 16;

/// A mailbox's connection: `None` only once [`Mailbox`]'s `drop` has taken it.
struct Db(Option<Connection>);

impl std::ops::Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0
            .as_ref()
            .expect("the connection is taken only by drop")
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Connection {
        self.0
            .as_mut()
            .expect("the connection is taken only by drop")
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let Some(db) = self.db.0.take() else {
            return;
        };
        // Never one left inside a transaction (cannot happen: transactions are scoped).
        if !db.is_autocommit() {
            return;
        }
        let mut kept = CONNECTIONS.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= CONNECTIONS_KEPT {
            kept.remove(0);
        }
        kept.push((std::mem::take(&mut self.root), self.db_id, db));
    }
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn mtime(md: &fs::Metadata) -> i64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The index's value for "not computed yet" in the `internaldate` and `size` columns.
const UNKNOWN: i64 = -1;

/// Dovecot's `,W=` (the size with CRLF line ends) in a file name.
fn w_size(name: &str) -> Option<u64> {
    let info_start = name.find(':').unwrap_or(name.len());
    name[..info_start]
        .split(',')
        .skip(1)
        .find_map(|f| f.strip_prefix("W="))
        .and_then(|s| s.parse().ok())
}

/// A whole file, with one `read` of the length its `fstat` gives (a Maildir file does
/// not change, so no second `read` to see the end).
fn read_file(mut f: File) -> Result<(fs::Metadata, Vec<u8>)> {
    let md = f.metadata()?;
    let mut data = vec![0u8; usize::try_from(md.len()).unwrap_or(0)];
    let mut got = 0;
    while got < data.len() {
        match f.read(&mut data[got..])? {
            0 => break,
            n => got += n,
        }
    }
    data.truncate(got);
    Ok((md, data))
}

/// The length of `data` once bare LFs become CRLF.
pub fn crlf_len(data: &[u8]) -> u64 {
    let mut n = data.len() as u64;
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            n += 1;
        }
        prev = b;
    }
    n
}

/// The info part for `flags`: `:2,<letters>`.
fn file_name(base_and_fields: &str, flags: Flags) -> String {
    format!("{base_and_fields}:2,{}", flags.letters())
}

/// The name up to its `:2,` info.
fn without_info(name: &str) -> &str {
    name.find(':').map_or(name, |i| &name[..i])
}

fn info_flags(name: &str) -> Flags {
    // The first `:` followed by `2,` (a char search, quicker than a substring one).
    name.match_indices(':')
        .find(|(i, _)| name[i + 1..].starts_with("2,"))
        .map_or(Flags::empty(), |(i, _)| Flags::from_letters(&name[i + 3..]))
}

/// A hasher for the base names of one mailbox's files while it is indexed (std's SipHash
/// counts there; the names are the store's own, not chosen by a client).
#[derive(Default)]
struct NameHasher(u64);

impl std::hash::Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type NameMap<V> = HashMap<V, usize, std::hash::BuildHasherDefault<NameHasher>>;

fn visible(name: &str) -> bool {
    !name.starts_with('.') && !name.is_empty()
}

impl Mailbox {
    /// Opens the mailbox at `root` (a Maildir), creating `cur/`, `new/`, `tmp/` and the
    /// index when missing, rebuilding an unreadable index, and resynchronising the index
    /// with `cur/` and `new/` (skipped for a directory unchanged since, see the module
    /// documentation).
    pub fn open(root: &Path) -> Result<Mailbox> {
        // new/ and cur/ are created by `sync` when its stat finds them missing.
        let tmp = root.join("tmp");
        if !tmp.is_dir() {
            fs::create_dir_all(tmp)?;
        }
        if let Some(mut mb) = Self::reuse(root) {
            match mb.sync() {
                Ok(fresh) => {
                    mb.fresh = fresh;
                    return Ok(mb);
                }
                // Opened afresh below (which rebuilds an unreadable index).
                Err(_) => mb.db.0 = None,
            }
        }
        let db_path = root.join(INDEX_NAME);
        let mut mb = match Self::open_db(root, &db_path) {
            Ok(mb) => mb,
            Err(StoreError::Db(_)) => {
                // Corrupt: keep it aside for inspection, start over with a new UIDVALIDITY.
                let _ = fs::rename(&db_path, root.join(format!("{INDEX_NAME}.corrupt")));
                let _ = fs::remove_file(root.join(format!("{INDEX_NAME}-journal")));
                Self::open_db(root, &db_path)?
            }
            Err(e) => return Err(e),
        };
        if mb.create {
            // No index yet (or an incomplete one): built aside and renamed into place when
            // the file is still empty under the lock, then opened again — this connection
            // may hold the empty file another process has just replaced.
            mb.db.0 = None;
            let fresh = Self::build_new(root, &db_path)?;
            mb = Self::open_db(root, &db_path)?;
            mb.fresh = fresh;
        }
        let fresh = mb.sync()?;
        mb.fresh.extend(fresh);
        Ok(mb)
    }

    /// Builds a mailbox's first index in `oxipost-index.new` — no journal, no fsync —
    /// and renames it into place, so it appears whole or not at all. A build cut short
    /// leaves only the `.new` file, which the next build replaces; the flock is held
    /// throughout, and another process that got it first has built the index already.
    /// Not fsync'd, as Dovecot writes its indexes (an fsync here waits for the
    /// filesystem's journal, which after a burst of deliveries holds all their files):
    /// the mail is in the Maildir, and an index lost to a power cut — missing, empty or
    /// unreadable — is built again under a new UIDVALIDITY, as RFC 3501 asks. Returns
    /// the UIDs of the files moved from `new/`.
    fn build_new(root: &Path, db_path: &Path) -> Result<Vec<u32>> {
        let lock = lock_file(root)?;
        if !is_empty_file(db_path) {
            return Ok(Vec::new());
        }
        let tmp = root.join(format!("{INDEX_NAME}.new"));
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let db = connect(&tmp)?;
        db.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF")?;
        let mut mb = Self::handle(root, &tmp, db)?;
        mb.create = true;
        mb.held = Some(lock);
        // Makes the tables and indexes new/ and cur/ (keeping the list for the SELECT:
        // the file keeps its inode through the rename, the key of the kept list).
        let fresh = mb.sync()?;
        let lock = mb.held.take();
        mb.db.0 = None;
        fs::rename(&tmp, db_path)?;
        drop(lock);
        Ok(fresh)
    }

    /// The connection kept for `root` by a mailbox closed in this process, when its index
    /// file is still the one it opened (not rebuilt or removed since).
    fn reuse(root: &Path) -> Option<Mailbox> {
        use std::os::unix::fs::MetadataExt;
        let (db_id, db) = {
            let mut kept = CONNECTIONS.lock().unwrap_or_else(PoisonError::into_inner);
            let i = kept.iter().rposition(|(p, _, _)| p == root)?;
            let (_, id, db) = kept.remove(i);
            (id, db)
        };
        let md = fs::metadata(root.join(INDEX_NAME)).ok()?;
        ((md.dev(), md.ino()) == db_id).then(|| Mailbox {
            root: root.to_path_buf(),
            db: Db(Some(db)),
            fresh: Vec::new(),
            counters: None,
            db_id,
            create: false,
            held: None,
        })
    }

    fn open_db(root: &Path, db_path: &Path) -> Result<Mailbox> {
        let db = connect(db_path)?;
        db.busy_timeout(Duration::from_secs(10))?;
        // Pages read through a mapping, not a pread each: a SELECT reads them all.
        db.pragma_update(None, "mmap_size", 256i64 << 20)?;
        // The usual case, an index in use: checked in one read transaction (each
        // statement on its own takes and drops the file locks, syscalls that count).
        let ready = {
            let tx = db.unchecked_transaction()?;
            let tables: i64 = db.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='table'
                 AND name IN ('meta', 'msg', 'expunged', 'cache')",
                [],
                |r| r.get(0),
            )?;
            let ready = tables == 4
                && db.query_row(
                    "SELECT count(*) FROM meta WHERE key IN ('uidvalidity', 'expungelog')
                     OR (key = 'schema' AND value = ?1)",
                    [SCHEMA],
                    |r| r.get::<_, i64>(0),
                )? == 3;
            tx.finish()?;
            ready
        };
        let mut mb = Self::handle(root, db_path, db)?;
        mb.create = !ready;
        Ok(mb)
    }

    /// Makes (or completes, or converts from an older schema) the index's tables, inside
    /// the write transaction `db` is in, with the flock held: another process making them
    /// at the same time waits for the lock and then finds them.
    fn create_schema(db: &Connection) -> Result<()> {
        db.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS msg ({MSG_COLUMNS});
             CREATE TABLE IF NOT EXISTS expunged (uid INTEGER PRIMARY KEY, modseq INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS cache (uid INTEGER NOT NULL, field INTEGER NOT NULL,
                version INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY (uid, field))
                WITHOUT ROWID;"
        ))?;
        // Schema 1 kept each base name in a UNIQUE text column, whose index made the
        // first indexing of a big Maildir twice as slow: moved to the hash, UIDs kept.
        let old: i64 = db.query_row(
            "SELECT count(*) FROM pragma_table_info('msg') WHERE name = 'base'",
            [],
            |r| r.get(0),
        )?;
        if old > 0 {
            db.execute_batch(&format!(
                "CREATE TABLE msg_new ({MSG_COLUMNS});
                 INSERT INTO msg_new SELECT uid, 0, name, flags, keywords, modseq,
                    internaldate, size FROM msg;
                 DROP TABLE msg;
                 ALTER TABLE msg_new RENAME TO msg;"
            ))?;
            let rows: Vec<(u32, String)> = db
                .prepare("SELECT uid, name FROM msg")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<std::result::Result<_, _>>()?;
            let mut st = db.prepare("UPDATE msg SET bhash = ?1 WHERE uid = ?2")?;
            for (uid, name) in rows {
                st.execute(params![base_hash(base_name(&name)), uid])?;
            }
        }
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('schema', ?1)",
            [SCHEMA],
        )?;
        let have: Option<i64> = db
            .query_row("SELECT value FROM meta WHERE key='uidvalidity'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if have.is_none() {
            let v = now() as u32;
            db.execute_batch(&format!(
                "INSERT OR REPLACE INTO meta VALUES ('uidvalidity', {v});
                 INSERT OR REPLACE INTO meta VALUES ('uidnext', 1);
                 INSERT OR REPLACE INTO meta VALUES ('highestmodseq', 1);"
            ))?;
        }
        // The expunge log (QRESYNC) is complete from the MODSEQ it started at; an index
        // older than the log has no record of earlier expunges (only here: an index in
        // use has it).
        db.execute(
            "INSERT OR IGNORE INTO meta SELECT 'expungelog', value FROM meta WHERE key='highestmodseq'",
            [],
        )?;
        Ok(())
    }

    fn handle(root: &Path, db_path: &Path, db: Connection) -> Result<Mailbox> {
        use std::os::unix::fs::MetadataExt;
        let md = fs::metadata(db_path)?;
        Ok(Mailbox {
            root: root.to_path_buf(),
            db: Db(Some(db)),
            fresh: Vec::new(),
            counters: None,
            db_id: (md.dev(), md.ino()),
            create: false,
            held: None,
        })
    }

    /// The directory stamps (new/, cur/) the index holds, and its counters (UIDVALIDITY,
    /// UIDNEXT, highest MODSEQ), read in one statement.
    fn stamps(&self) -> Result<(Stamps, Counters)> {
        let mut st = self.db.prepare_cached(
            "SELECT key, value FROM meta WHERE key IN
             ('newstamp', 'curstamp', 'uidvalidity', 'uidnext', 'highestmodseq')",
        )?;
        let mut rows = st.query([])?;
        let mut v = (None, None);
        let mut c = (0, 0, 0);
        while let Some(r) = rows.next()? {
            let n: i64 = r.get(1)?;
            match r.get_ref(0)?.as_str().unwrap_or_default() {
                "newstamp" => v.0 = Some(n),
                "curstamp" => v.1 = Some(n),
                "uidvalidity" => c.0 = n as u32,
                "uidnext" => c.1 = n as u32,
                "highestmodseq" => c.2 = n as u64,
                _ => {}
            }
        }
        Ok((v, c))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `f` with the index locked (flock) inside one transaction.
    fn locked<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.counters = None;
        let lock = match self.held {
            Some(_) => None,
            None => Some(lock_file(&self.root)?),
        };
        let root = self.root.clone();
        let create = self.create;
        let tx = self.db.transaction()?;
        if create {
            Self::create_schema(&tx)?;
        }
        let mut t = Tx {
            tx,
            root,
            modseq: None,
            uidnext: None,
            logged: false,
        };
        let v = f(&mut t)?;
        t.flush()?;
        t.tx.commit()?;
        drop(lock);
        self.create = false;
        Ok(v)
    }

    fn meta(&self, key: &str) -> Result<i64> {
        Ok(self
            .db
            .prepare_cached("SELECT value FROM meta WHERE key=?1")?
            .query_row([key], |r| r.get(0))?)
    }

    #[cfg(test)]
    fn meta_opt(&self, key: &str) -> Result<Option<i64>> {
        Ok(self
            .db
            .prepare_cached("SELECT value FROM meta WHERE key=?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub fn uidvalidity(&self) -> Result<u32> {
        Ok(self.meta("uidvalidity")? as u32)
    }

    /// The highest MODSEQ: unchanged means nothing in the index changed.
    pub fn highest_modseq(&self) -> Result<u64> {
        Ok(self.meta("highestmodseq")? as u64)
    }

    /// Moves new deliveries from `new/` to `cur/` and indexes them, and picks up changes
    /// made in `cur/` behind the store's back (see [`Mailbox::sync`]); returns the new
    /// UIDs (including those this handle moved while opening, which are "recent" to it).
    pub fn refresh(&mut self) -> Result<Vec<u32>> {
        let mut uids = std::mem::take(&mut self.fresh);
        uids.extend(self.sync()?);
        Ok(uids)
    }

    /// The UIDs moved from `new/` by [`Mailbox::open`]: what [`Mailbox::refresh`] would
    /// return right after the open, without looking at the directories again.
    pub fn take_fresh(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.fresh)
    }

    /// Brings the index in line with `new/` and `cur/`, listing only a directory whose
    /// mtime differs from its stamp (or whose stamp could not be trusted); returns the
    /// UIDs given to files moved from `new/`.
    pub fn sync(&mut self) -> Result<Vec<u32>> {
        // Taken before the stats: an mtime older than this minus a second cannot be
        // repeated by a later change.
        let now = now_ns();
        let new_dir = self.root.join("new");
        let new_mtime = dir_mtime(&new_dir)?;
        let mut fresh = Vec::new();
        let ((new_stamp, cur_stamp), counters) = if self.create {
            // Nothing to read yet: both listed (cur/ always: its look makes the tables).
            ((None, None), (0, 0, 0))
        } else {
            self.stamps()?
        };
        let new_ok = new_stamp == Some(new_mtime);
        if !new_ok {
            fresh = self.refresh_new()?;
        }
        // After the moves out of new/, which change cur/.
        let cur_mtime = dir_mtime(&self.root.join("cur"))?;
        let cur_ok = cur_stamp == Some(cur_mtime);
        let trusted = |m: i64| (m < now - 1_000_000_000).then_some(m);
        let stamps = (
            if new_ok { None } else { trusted(new_mtime) },
            if cur_ok { None } else { trusted(cur_mtime) },
        );
        if !cur_ok {
            self.rescan_cur(stamps)?;
        } else if stamps.0.is_some() {
            self.locked(|t| t.set_stamps(stamps))?;
        } else if new_ok {
            // Nothing written since the read: the next snapshot may use these counters.
            self.counters = Some(counters);
        }
        Ok(fresh)
    }

    fn refresh_new(&mut self) -> Result<Vec<u32>> {
        let pending = list_dir(&self.root.join("new"))?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        self.locked(|t| {
            let mut uids = Vec::new();
            // Listed again under the lock: another session may have taken them. UIDs in
            // delivery order, as in `rescan_cur`.
            let mut names = list_dir(&t.root.join("new"))?;
            oxipost_mailbox::sort_by_delivery(&mut names, |n| n);
            for name in names {
                let target = if name.contains(":2,") {
                    name.clone()
                } else {
                    format!("{name}:2,")
                };
                let from = t.root.join("new").join(&name);
                let to = t.root.join("cur").join(&target);
                match fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                }
                if let Some(uid) = t.insert(&target)? {
                    uids.push(uid);
                }
            }
            Ok(uids)
        })
    }

    /// The full comparison of the index with `new/` and `cur/`, whatever their mtimes.
    pub fn resync(&mut self) -> Result<()> {
        let fresh = self.refresh_new()?;
        self.fresh.extend(fresh);
        self.rescan_cur((None, None))
    }

    /// The full comparison of the index with `cur/`: files renamed behind the store's
    /// back get their flags re-read, vanished files are expunged, unknown files get UIDs.
    /// `stamps` (new/, cur/) are recorded in the same transaction.
    fn rescan_cur(&mut self, stamps: (Option<i64>, Option<i64>)) -> Result<()> {
        let built = self.locked(|t| {
            t.set_stamps(stamps)?;
            // New UIDs in delivery order, not string order (`M61129` is before `M301367`).
            let mut names = list_dir(&t.root.join("cur"))?;
            oxipost_mailbox::sort_by_delivery(&mut names, |n| n);

            let rows: Vec<(u32, String)> = {
                let mut st = t.tx.prepare("SELECT uid, name FROM msg")?;
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<std::result::Result<_, _>>()?
            };
            // Listed files the index knows (by base name); the rest get UIDs.
            let mut known = vec![false; names.len()];
            let mut on_disk: NameMap<&str> = NameMap::default();
            if !rows.is_empty() {
                on_disk = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (base_name(n), i))
                    .collect();
                for (uid, name) in &rows {
                    match on_disk.get(base_name(name)) {
                        Some(&i) => {
                            known[i] = true;
                            let now_name = &names[i];
                            if *now_name != *name {
                                let m = t.bump()?;
                                t.tx.execute(
                                    "UPDATE msg SET name=?1, flags=?2, modseq=?3 WHERE uid=?4",
                                    params![now_name, info_flags(now_name).letters(), m, uid],
                                )?;
                            }
                        }
                        None => {
                            let m = t.bump()?;
                            t.tx.execute("DELETE FROM msg WHERE uid=?1", [uid])?;
                            t.log_expunge(*uid, m)?;
                        }
                    }
                }
            }
            // One UID per base name (two files of one message, left by a crash, are one).
            let mut inserted: HashSet<&str, std::hash::BuildHasherDefault<NameHasher>> =
                HashSet::with_capacity_and_hasher(names.len(), Default::default());
            let mut batch: Vec<&str> = Vec::with_capacity(names.len());
            for (name, _) in names.iter().zip(&known).filter(|(_, k)| !**k) {
                let base = base_name(name);
                if on_disk.get(base).is_some_and(|&i| known[i]) || !inserted.insert(base) {
                    continue;
                }
                batch.push(name);
            }
            if !rows.is_empty() {
                t.insert_many(&batch, rows.len())?;
                return Ok(None);
            }
            // An index built from nothing: its whole list is known here, kept for the
            // snapshot that follows (a first SELECT would otherwise read it all back),
            // made on another core while this one fills the index.
            let (first_uid, first_modseq) = t.next_ids()?;
            let make = || -> Vec<Message> {
                batch
                    .iter()
                    .zip(0u32..)
                    .map(|(name, i)| Message {
                        uid: first_uid as u32 + i,
                        name: Arc::from(*name),
                        flags: info_flags(name),
                        keywords: Vec::new(),
                        modseq: first_modseq as u64 + u64::from(i),
                        internal_date: None,
                        size: None,
                    })
                    .collect()
            };
            let messages = std::thread::scope(|sc| -> Result<Vec<Message>> {
                // A thread only where it pays; none to be had (a process limit): made
                // here after the inserts.
                let beside = (batch.len() >= BIG_BATCH)
                    .then(|| std::thread::Builder::new().spawn_scoped(sc, make).ok())
                    .flatten();
                t.insert_many(&batch, 0)?;
                Ok(beside.and_then(|h| h.join().ok()).unwrap_or_else(make))
            })?;
            Ok(Some(Snapshot {
                uidvalidity: t.meta("uidvalidity")? as u32,
                messages: Arc::new(messages),
                uidnext: (first_uid + batch.len() as i64) as u32,
                highest_modseq: match t.modseq {
                    Some(m) => m,
                    None => t.meta("highestmodseq")?,
                } as u64,
            }))
        })?;
        if let Some(snap) = built {
            self.keep_snapshot(snap);
        }
        Ok(())
    }

    /// Everything the index holds now (one query).
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        // Right after a sync that changed nothing: the list as of that sync (as if the
        // SELECT had been answered then; later changes are seen by the next look).
        if let Some(c) = self.counters.take()
            && let Some(s) = self.kept_snapshot(c)
        {
            return Ok(Snapshot::clone(&s));
        }
        // One read transaction: the counters and the rows agree.
        let tx = self.db.unchecked_transaction()?;
        let (uidvalidity, uidnext, highest_modseq) = (
            self.meta("uidvalidity")? as u32,
            self.meta("uidnext")? as u32,
            self.meta("highestmodseq")? as u64,
        );
        if let Some(s) = self.kept_snapshot((uidvalidity, uidnext, highest_modseq)) {
            return Ok(Snapshot::clone(&s));
        }
        let mut st = self.db.prepare_cached(
            "SELECT uid, NULL, name, flags, keywords, modseq, internaldate, size FROM msg ORDER BY uid",
        )?;
        // Sized first: no regrowth while 10,000s of rows are read.
        let hint: i64 = self
            .db
            .prepare_cached("SELECT count(*) FROM msg")?
            .query_row([], |r| r.get(0))?;
        let mut messages = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            messages.push(message_row(r)?);
        }
        drop(rows);
        drop(st);
        tx.finish()?;
        let snap = Snapshot {
            uidvalidity,
            uidnext,
            highest_modseq,
            messages: Arc::new(messages),
        };
        self.keep_snapshot(snap.clone());
        Ok(snap)
    }

    /// Keeps `snap` as this process's latest list of this mailbox (see [`SNAPSHOTS`]).
    fn keep_snapshot(&self, snap: Snapshot) {
        let mut kept = SNAPSHOTS.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|(p, _, _)| *p != self.root);
        if kept.len() >= SNAPSHOTS_KEPT {
            kept.remove(0);
        }
        kept.push((self.root.clone(), self.db_id, Arc::new(snap)));
    }

    /// The message list kept in this process for this index with counters `c`.
    fn kept_snapshot(&self, c: Counters) -> Option<Arc<Snapshot>> {
        SNAPSHOTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(p, id, s)| {
                *id == self.db_id
                    && *p == self.root
                    && (s.uidvalidity, s.uidnext, s.highest_modseq) == c
            })
            .map(|(_, _, s)| Arc::clone(s))
    }

    /// The file of `m`, following a rename by another session (flags changed).
    pub fn path_of(&self, m: &Message) -> Option<PathBuf> {
        let p = self.root.join("cur").join(&*m.name);
        if p.exists() {
            return Some(p);
        }
        let now: Option<String> = self
            .db
            .query_row("SELECT name FROM msg WHERE uid=?1", [m.uid], |r| r.get(0))
            .optional()
            .ok()
            .flatten();
        now.map(|n| self.root.join("cur").join(n))
            .filter(|p| p.exists())
    }

    /// The internal date and CRLF size of `m`: the index's values, else computed from
    /// its file (to be kept with [`Mailbox::remember`]).
    pub fn date_and_size(&self, m: &Message) -> Result<(i64, u64)> {
        if let (Some(d), Some(s)) = (m.internal_date, m.size) {
            return Ok((d, s));
        }
        // The CRLF size is Dovecot's `,W=` when present (then one `stat`), else counted
        // from the file (open, `fstat` for the mtime, one `read`).
        if let Some(w) = w_size(&m.name) {
            let p = self.path_of(m).ok_or(StoreError::NotFound)?;
            return Ok((mtime(&fs::metadata(p)?), w));
        }
        let (md, data) = read_file(self.open_file(m)?)?;
        Ok((mtime(&md), crlf_len(&data)))
    }

    /// Records computed `(uid, internal date, size)` values in the index (one
    /// transaction; no MODSEQ change: the values are facts of the immutable file) and in
    /// this process's kept message list.
    pub fn remember(&mut self, vals: &[(u32, i64, u64)]) -> Result<()> {
        if vals.is_empty() {
            return Ok(());
        }
        self.locked(|t| {
            let mut st =
                t.tx.prepare_cached("UPDATE msg SET internaldate=?2, size=?3 WHERE uid=?1")?;
            for &(uid, date, size) in vals {
                st.execute(params![uid, date, size as i64])?;
            }
            Ok(())
        })?;
        let mut kept = SNAPSHOTS.lock().unwrap_or_else(PoisonError::into_inner);
        for (p, id, snap) in kept.iter_mut() {
            if *id != self.db_id || *p != self.root {
                continue;
            }
            // Copied when sessions share it (once: the copy is this list's own).
            let msgs = Arc::make_mut(&mut Arc::make_mut(snap).messages);
            for &(uid, date, size) in vals {
                if let Ok(i) = msgs.binary_search_by_key(&uid, |m| m.uid) {
                    msgs[i].internal_date = Some(date);
                    msgs[i].size = Some(size);
                }
            }
        }
        Ok(())
    }

    /// Opens the file of `m`: by the name indexed, else by its name now (renamed by
    /// another session): no `stat` first in the usual case.
    fn open_file(&self, m: &Message) -> Result<File> {
        match File::open(self.root.join("cur").join(&*m.name)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let p = self.path_of(m).ok_or(StoreError::NotFound)?;
                Ok(File::open(p)?)
            }
            r => Ok(r?),
        }
    }

    /// The message's bytes as stored: open, `fstat`, one `read`, close.
    pub fn read(&self, m: &Message) -> Result<Vec<u8>> {
        Ok(read_file(self.open_file(m)?)?.1)
    }

    /// The message's header block as stored: the bytes up to and including the first
    /// empty line (the whole file when it has none), without reading the body.
    pub fn read_header(&self, m: &Message) -> Result<Vec<u8>> {
        let mut f = self.open_file(m)?;
        let mut data = Vec::new();
        let mut chunk = vec![0u8; 8192];
        let mut from = 0usize;
        loop {
            let n = f.read(&mut chunk)?;
            if n == 0 {
                return Ok(data);
            }
            data.extend_from_slice(&chunk[..n]);
            // Look from a little before the new bytes: the blank line may straddle reads.
            let start = from.saturating_sub(3);
            if let Some(end) = header_end(&data[start..]) {
                data.truncate(start + end);
                return Ok(data);
            }
            from = data.len();
        }
    }

    /// Sets the flags and keywords of `uid` (renaming its file); returns the updated
    /// message, or `None` when it is gone.
    pub fn set_flags(
        &mut self,
        uid: u32,
        flags: Flags,
        keywords: &[String],
    ) -> Result<Option<Message>> {
        let found = self.locked(|t| {
            let row: Option<(String, String, String)> =
                t.tx.query_row(
                    "SELECT name, flags, keywords FROM msg WHERE uid=?1",
                    [uid],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((name, old_flags, old_kw)) = row else {
                return Ok(false);
            };
            let kw = keywords.join(" ");
            if old_flags != flags.letters() || old_kw != kw {
                let new_name = file_name(without_info(&name), flags);
                if new_name != name {
                    fs::rename(
                        t.root.join("cur").join(&name),
                        t.root.join("cur").join(&new_name),
                    )?;
                }
                let m = t.bump()?;
                t.tx.execute(
                    "UPDATE msg SET name=?1, flags=?2, keywords=?3, modseq=?4 WHERE uid=?5",
                    params![new_name, flags.letters(), kw, m, uid],
                )?;
            }
            Ok(true)
        })?;
        if !found {
            return Ok(None);
        }
        self.message(uid)
    }

    /// The UIDs expunged after MODSEQ `since` (QRESYNC), and whether the expunge log
    /// reaches back that far (when not, any UID below UIDNEXT that is not in the index
    /// may have been expunged after `since`).
    pub fn vanished_since(&self, since: u64) -> Result<(Vec<u32>, bool)> {
        let mut st = self
            .db
            .prepare("SELECT uid FROM expunged WHERE modseq > ?1 ORDER BY uid")?;
        let uids = st
            .query_map([since as i64], |r| r.get(0))?
            .collect::<std::result::Result<Vec<u32>, _>>()?;
        let from = self.meta("expungelog")? as u64;
        Ok((uids, since >= from))
    }

    /// One message by UID.
    pub fn message(&self, uid: u32) -> Result<Option<Message>> {
        Ok(self
            .db
            .prepare_cached(
                "SELECT uid, NULL, name, flags, keywords, modseq, internaldate, size FROM msg WHERE uid=?1",
            )?
            .query_row([uid], message_row)
            .optional()?)
    }

    /// The cached values of `field` computed by code `version` for the messages with
    /// UIDs in `lo..=hi` (one query).
    pub fn cached(
        &self,
        field: u8,
        version: u64,
        lo: u32,
        hi: u32,
    ) -> Result<HashMap<u32, Vec<u8>>> {
        let mut st = self.db.prepare_cached(
            "SELECT uid, value FROM cache WHERE field=?1 AND version=?2 AND uid BETWEEN ?3 AND ?4",
        )?;
        let rows = st.query_map(params![field, version as i64, lo, hi], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Stores computed values `(uid, field, value)` for later [`Mailbox::cached`], in one
    /// transaction. The values of a message never change (its file is immutable), so
    /// the only stale entries are those of other code versions, which are replaced.
    pub fn cache_put(&mut self, version: u64, entries: &[(u32, u8, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.locked(|t| {
            let mut st = t.tx.prepare_cached(
                "INSERT OR REPLACE INTO cache SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM msg WHERE uid=?1)",
            )?;
            for (uid, field, value) in entries {
                st.execute(params![uid, field, version as i64, value])?;
            }
            Ok(())
        })
    }

    /// Removes messages (unlink, then the index row); returns the UIDs removed.
    pub fn expunge(&mut self, uids: &[u32]) -> Result<Vec<u32>> {
        self.locked(|t| {
            let mut gone = Vec::new();
            for &uid in uids {
                let name: Option<String> =
                    t.tx.query_row("SELECT name FROM msg WHERE uid=?1", [uid], |r| r.get(0))
                        .optional()?;
                let Some(name) = name else { continue };
                match fs::remove_file(t.root.join("cur").join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                let m = t.bump()?;
                t.tx.execute("DELETE FROM msg WHERE uid=?1", [uid])?;
                t.log_expunge(uid, m)?;
                gone.push(uid);
            }
            Ok(gone)
        })
    }

    /// Stores a new message (tmp → fsync → link into `cur/` with its flags → index);
    /// returns its UID. `date` is the internal date (file mtime), now when `None`.
    pub fn append(
        &mut self,
        data: &[u8],
        flags: Flags,
        keywords: &[String],
        date: Option<i64>,
    ) -> Result<u32> {
        let base = unique_name();
        let tmp = self.root.join("tmp").join(&base);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            if let Some(d) = date {
                let t = UNIX_EPOCH + Duration::from_secs(d.max(0) as u64);
                f.set_modified(t)?;
            }
            f.sync_all()?;
        }
        let name = file_name(&format!("{base},S={}", data.len()), flags);
        self.adopt(&tmp, &name, keywords)
    }

    /// Copies `m` of `self` into `dest` (a hard link when both are on one file system),
    /// keeping flags, keywords and internal date; returns the new UID in `dest`.
    pub fn copy_to(&self, m: &Message, dest: &mut Mailbox) -> Result<u32> {
        let src = self.path_of(m).ok_or(StoreError::NotFound)?;
        let base = unique_name();
        let tmp = dest.root.join("tmp").join(&base);
        if fs::hard_link(&src, &tmp).is_err() {
            fs::copy(&src, &tmp)?;
            File::open(&tmp)?.sync_all()?;
        }
        // S= is the size of the file as stored (not the CRLF size IMAP reports).
        let size = fs::metadata(&tmp)?.len();
        let name = file_name(&format!("{base},S={size}"), m.flags);
        dest.adopt(&tmp, &name, &m.keywords)
    }

    /// Links a finished file from `tmp/` into `cur/` under `name` and indexes it.
    fn adopt(&mut self, tmp: &Path, name: &str, keywords: &[String]) -> Result<u32> {
        let target = self.root.join("cur").join(name);
        let linked = fs::hard_link(tmp, &target);
        let _ = fs::remove_file(tmp);
        linked?;
        if let Ok(d) = File::open(self.root.join("cur")) {
            let _ = d.sync_all();
        }
        let kw = keywords.join(" ");
        self.locked(|t| {
            let uid = t.insert(name)?.ok_or(StoreError::Exists)?;
            if !kw.is_empty() {
                t.tx.execute("UPDATE msg SET keywords=?1 WHERE uid=?2", params![kw, uid])?;
            }
            Ok(uid)
        })
    }
}

/// A write transaction with the lock held.
struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    root: PathBuf,
    /// `highestmodseq` and `uidnext` as changed in this transaction, written back by
    /// [`Tx::flush`] before the commit (one write each however many messages change).
    modseq: Option<i64>,
    uidnext: Option<i64>,
    /// An expunge was logged: the log is trimmed before the commit.
    logged: bool,
}

/// Messages indexed at once from which the bulk paths pay (index dropped, list made on
/// another thread).
const BIG_BATCH: usize = 512;

/// Expunges the log keeps (QRESYNC's `VANISHED (EARLIER)` from further back answers from
/// the UID gaps instead); trimmed once it is a tenth longer.
const EXPUNGE_LOG_KEPT: i64 = if cfg!(test) { 10 } else { 50_000 };

impl Tx<'_> {
    fn meta(&self, key: &str) -> Result<i64> {
        Ok(self
            .tx
            .prepare_cached("SELECT value FROM meta WHERE key=?1")?
            .query_row([key], |r| r.get(0))?)
    }

    /// Writes the counters changed in this transaction (and trims the expunge log).
    fn flush(&mut self) -> Result<()> {
        if self.logged {
            self.trim_expunge_log()?;
        }
        for (key, v) in [("highestmodseq", self.modseq), ("uidnext", self.uidnext)] {
            if let Some(v) = v {
                self.tx
                    .prepare_cached("UPDATE meta SET value=?1 WHERE key=?2")?
                    .execute(params![v, key])?;
            }
        }
        Ok(())
    }

    /// The next MODSEQ (recorded as the highest).
    fn bump(&mut self) -> Result<i64> {
        let m = match self.modseq {
            Some(m) => m,
            None => self.meta("highestmodseq")?,
        } + 1;
        self.modseq = Some(m);
        Ok(m)
    }

    /// Records an expunge for QRESYNC's `VANISHED (EARLIER)` and drops the message's
    /// cached values.
    fn log_expunge(&mut self, uid: u32, modseq: i64) -> Result<()> {
        self.tx.execute(
            "INSERT OR REPLACE INTO expunged VALUES (?1, ?2)",
            params![uid, modseq],
        )?;
        self.tx.execute("DELETE FROM cache WHERE uid=?1", [uid])?;
        self.logged = true;
        Ok(())
    }

    /// Drops the oldest expunges beyond [`EXPUNGE_LOG_KEPT`]; the log then starts at the
    /// newest MODSEQ dropped (`expungelog`: complete after it).
    fn trim_expunge_log(&mut self) -> Result<()> {
        let n: i64 = self
            .tx
            .query_row("SELECT count(*) FROM expunged", [], |r| r.get(0))?;
        if n <= EXPUNGE_LOG_KEPT + EXPUNGE_LOG_KEPT / 10 {
            return Ok(());
        }
        let cutoff: i64 = self.tx.query_row(
            "SELECT modseq FROM expunged ORDER BY modseq DESC LIMIT 1 OFFSET ?1",
            [EXPUNGE_LOG_KEPT],
            |r| r.get(0),
        )?;
        self.tx
            .execute("DELETE FROM expunged WHERE modseq <= ?1", [cutoff])?;
        self.tx.execute(
            "UPDATE meta SET value = max(value, ?1) WHERE key = 'expungelog'",
            [cutoff],
        )?;
        Ok(())
    }

    /// Records the directory stamps given (new/, cur/).
    fn set_stamps(&mut self, stamps: (Option<i64>, Option<i64>)) -> Result<()> {
        for (key, v) in [("newstamp", stamps.0), ("curstamp", stamps.1)] {
            if let Some(v) = v {
                self.tx.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?1, ?2)",
                    params![key, v],
                )?;
            }
        }
        Ok(())
    }

    /// Indexes `cur/<name>` under the next UID; `None` when its base name is known.
    fn insert(&mut self, name: &str) -> Result<Option<u32>> {
        let base = base_name(name);
        // A no-op once there (see `insert_many`).
        self.tx
            .prepare_cached("CREATE INDEX IF NOT EXISTS msg_bhash ON msg (bhash)")?
            .execute([])?;
        let known = {
            let mut st = self
                .tx
                .prepare_cached("SELECT name FROM msg WHERE bhash=?1")?;
            let mut rows = st.query([base_hash(base)])?;
            let mut known = false;
            while let Some(r) = rows.next()? {
                known |= base_name(r.get_ref(0)?.as_str().unwrap_or_default()) == base;
            }
            known
        };
        if known {
            return Ok(None);
        }
        self.insert_unknown(name).map(Some)
    }

    /// The UID and MODSEQ the next message indexed gets.
    fn next_ids(&mut self) -> Result<(i64, i64)> {
        let uid = match self.uidnext {
            Some(u) => u,
            None => self.meta("uidnext")?,
        };
        let modseq = match self.modseq {
            Some(m) => m,
            None => self.meta("highestmodseq")?,
        } + 1;
        Ok((uid, modseq))
    }

    /// Indexes `cur/<name>` for each of `names` (whose base names the index does not
    /// have, each once) under the next UIDs, in order, in an index of `existing` rows:
    /// statements of many rows, prepared once (a first SELECT of a big Maildir indexes
    /// 10,000s). Returns the first UID and MODSEQ given.
    fn insert_many(&mut self, names: &[&str], existing: usize) -> Result<(i64, i64)> {
        const ROWS: usize = 256;
        let (first_uid, first_modseq) = self.next_ids()?;
        let sql = |rows: usize| {
            let mut q = String::from("INSERT INTO msg VALUES ");
            for i in 0..rows {
                if i > 0 {
                    q.push(',');
                }
                q.push_str("(?,?,?,?,'',?,-1,-1)");
            }
            q
        };
        // Many rows: the hash index is dropped, to be built again by the next
        // [`Tx::insert`] that needs it (sorting once then costs a fraction of 10,000s of
        // inserts at random places in it, and not in the first SELECT).
        if names.len() >= BIG_BATCH && names.len() >= existing {
            self.tx.execute_batch("DROP INDEX IF EXISTS msg_bhash")?;
        }
        let mut n = 0i64;
        for chunk in names.chunks(ROWS) {
            // Cached: the full size, and one row (each delivery, APPEND, COPY).
            let mut st = self.tx.prepare_cached(&sql(chunk.len()))?;
            let mut k = 1;
            for name in chunk {
                st.raw_bind_parameter(k, first_uid + n)?;
                st.raw_bind_parameter(k + 1, base_hash(base_name(name)))?;
                st.raw_bind_parameter(k + 2, *name)?;
                st.raw_bind_parameter(k + 3, info_flags(name).letters_str())?;
                st.raw_bind_parameter(k + 4, first_modseq + n)?;
                k += 5;
                n += 1;
            }
            st.raw_execute()?;
        }
        if n > 0 {
            self.uidnext = Some(first_uid + n);
            self.modseq = Some(first_modseq + n - 1);
        }
        Ok((first_uid, first_modseq))
    }

    /// Indexes `cur/<name>`, whose base name the index does not have, under the next UID.
    fn insert_unknown(&mut self, name: &str) -> Result<u32> {
        Ok(self.insert_many(&[name], usize::MAX)?.0 as u32)
    }
}

/// A lean connection to an index file (see [`configure_sqlite`], [`no_lookaside`]).
fn connect(path: &Path) -> Result<Connection> {
    configure_sqlite();
    let db = Connection::open(path)?;
    no_lookaside(&db);
    Ok(db)
}

/// Process-wide SQLite set-up, before its first use in the process: no initial bulk
/// page-cache allocation per connection (SQLite's default is 20 pages, ~88 KiB, filled in
/// at once; an idle session's index needs a handful). Pages are allocated as read.
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLITE_CONFIG_PAGECACHE takes a buffer pointer (null: none) and two
        // ints, as passed. Called once, from the thread opening the first index; if
        // SQLite was already initialised in this process it refuses (SQLITE_MISUSE) and
        // changes nothing.
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_PAGECACHE,
                std::ptr::null_mut::<libc::c_void>(),
                0 as libc::c_int,
                0 as libc::c_int,
            );
        }
    });
}

/// Turns off `db`'s lookaside allocator (SQLite's default: 120 KiB per connection, its
/// free list written through at once): every selected mailbox of every session holds a
/// connection, so an idle IDLE session would be mostly that buffer; SQLite's small
/// allocations go to malloc instead (no difference measured on a 10,000-message build).
/// Called before the connection has run any statement, as SQLite requires.
fn no_lookaside(db: &Connection) {
    // SAFETY: the handle is this open connection's; SQLITE_DBCONFIG_LOOKASIDE takes a
    // buffer pointer (null) and two ints (slot size, slot count; 0: none), as passed;
    // nothing of the old lookaside is in use before the first statement.
    unsafe {
        rusqlite::ffi::sqlite3_db_config(
            db.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::c_int,
            0 as libc::c_int,
        );
    }
}

/// The key of a base name in the `bhash` index: FNV-1a (fixed, unlike std's seeded
/// hasher: the index outlives the process), collisions told apart by the names.
fn base_hash(base: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in base.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    // Borrowed where the value is not kept: one row per message of a SELECT.
    let text = |i: usize| -> rusqlite::Result<&str> { Ok(r.get_ref(i)?.as_str()?) };
    let kw = text(4)?;
    Ok(Message {
        uid: r.get(0)?,
        name: Arc::from(text(2)?),
        flags: Flags::from_letters(text(3)?),
        keywords: if kw.is_empty() {
            Vec::new()
        } else {
            kw.split_whitespace().map(str::to_owned).collect()
        },
        modseq: r.get::<_, i64>(5)? as u64,
        internal_date: Some(r.get::<_, i64>(6)?).filter(|&d| d != UNKNOWN),
        size: u64::try_from(r.get::<_, i64>(7)?).ok(),
    })
}

/// The end of the header block in `data` (just past its empty line), if there is one.
fn header_end(data: &[u8]) -> Option<usize> {
    let lf = data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The index's flock, taken (blocking).
fn lock_file(root: &Path) -> Result<File> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(LOCK_NAME))?;
    lock.lock()?;
    Ok(lock)
}

/// Whether the index file is missing or empty: no index yet (SQLite writes nothing to a
/// new file before its first transaction).
fn is_empty_file(path: &Path) -> bool {
    fs::metadata(path).map_or(true, |m| m.len() == 0)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// A directory's mtime in nanoseconds; a missing directory is created (a Maildir's new/
/// and cur/ always exist).
fn dir_mtime(dir: &Path) -> Result<i64> {
    let md = match fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            fs::metadata(dir)?
        }
        r => r?,
    };
    Ok(md
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64))
}

/// Visible entries of a directory, in directory order (callers sort as they need).
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Ok(n) = e.file_name().into_string()
            && visible(&n)
        {
            v.push(n);
        }
    }
    Ok(v)
}

/// A Maildir unique name for a file this process creates.
fn unique_name() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['/', ':', ','], "_"))
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{}.M{}P{}Q{}.{}",
        t.as_secs(),
        t.subsec_micros(),
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed),
        host
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(root: &Path, name: &str, body: &[u8]) {
        fs::write(root.join("new").join(name), body).expect("write");
    }

    #[test]
    fn uids_flags_expunge_and_rebuild() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        let mut a = Mailbox::open(&root)?;
        let mut b = Mailbox::open(&root)?;
        deliver(&root, "100.M1P1.h,S=6", b"a\nbc\n");
        deliver(&root, "101.M1P1.h", b"x\r\n");
        assert_eq!(a.refresh()?, vec![1, 2]);
        assert!(b.refresh()?.is_empty());
        let s = b.snapshot()?;
        assert_eq!(s.messages.len(), 2);
        // Indexing read nothing; the CRLF size is computed on demand and then kept.
        assert_eq!(
            (s.messages[0].size, s.messages[0].internal_date),
            (None, None)
        );
        assert_eq!(b.date_and_size(&s.messages[1])?.1, 3);
        let (date, size) = b.date_and_size(&s.messages[0])?;
        assert_eq!(size, 7);
        assert!(date > 0);
        b.remember(&[(1, date, size)])?;
        let s = a.snapshot()?;
        assert_eq!(
            (s.messages[0].size, s.messages[0].internal_date),
            (Some(7), Some(date))
        );
        assert_eq!(s.messages[1].size, None);
        assert_eq!(a.message(1)?.and_then(|m| m.size), Some(7));
        assert_eq!(s.messages[0].base(), "100.M1P1.h");
        assert_eq!(s.uidnext, 3);
        let m = a.set_flags(1, Flags::SEEN.union(Flags::FLAGGED), &["$Junk".into()])?;
        let m = m.ok_or(StoreError::NotFound)?;
        assert_eq!(&*m.name, "100.M1P1.h,S=6:2,FS");
        assert!(root.join("cur/100.M1P1.h,S=6:2,FS").exists());
        // b sees a's change through the index and can still read the renamed file.
        assert!(b.highest_modseq()? > s.highest_modseq);
        assert_eq!(b.read(&s.messages[0])?, b"a\nbc\n");
        let before = a.highest_modseq()?;
        assert_eq!(a.expunge(&[2])?, vec![2]);
        // The expunge log answers QRESYNC: UID 2 vanished after `before`, not after now.
        assert_eq!(b.vanished_since(before)?, (vec![2], true));
        assert_eq!(b.vanished_since(a.highest_modseq()?)?, (vec![], true));
        let uid = a.append(b"new\r\n", Flags::DRAFT, &[], Some(1_000_000))?;
        assert_eq!(uid, 3);
        let validity = a.uidvalidity()?;
        // Behind the store's back: mutt marks message 1 answered.
        fs::rename(
            root.join("cur/100.M1P1.h,S=6:2,FS"),
            root.join("cur/100.M1P1.h,S=6:2,FRS"),
        )?;
        drop((a, b));
        let mut c = Mailbox::open(&root)?;
        let s = c.snapshot()?;
        assert_eq!(s.uidvalidity, validity);
        assert_eq!(
            s.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(s.messages[0].flags.contains(Flags::ANSWERED));
        assert_eq!(c.date_and_size(&s.messages[1])?.0, 1_000_000);
        drop(c);
        // A corrupt index is rebuilt from the Maildir.
        fs::write(root.join(INDEX_NAME), b"garbage garbage garbage garbage")?;
        let mut d = Mailbox::open(&root)?;
        let s = d.snapshot()?;
        assert_eq!(s.messages.len(), 2);
        assert!(root.join("oxipost-index.corrupt").exists());
        Ok(())
    }

    fn set_mtime(dir: &Path, t: SystemTime) -> Result<()> {
        File::open(dir)?.set_modified(t)?;
        Ok(())
    }

    #[test]
    fn directory_stamps_skip_unchanged_and_see_changes() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        let mut a = Mailbox::open(&root)?;
        deliver(&root, "100.M1P1.h", b"a\n");
        deliver(&root, "101.M1P1.h", b"b\n");
        assert_eq!(a.refresh()?, vec![1, 2]);
        // Directories changed just now are listed every time, their stamps not kept.
        assert_eq!(a.meta_opt("curstamp")?, None);
        let old = SystemTime::now() - Duration::from_secs(10);
        set_mtime(&root.join("new"), old)?;
        set_mtime(&root.join("cur"), old)?;
        a.refresh()?;
        let stamp = a.meta_opt("curstamp")?;
        assert!(stamp.is_some());
        assert_eq!(a.meta_opt("newstamp")?, stamp);
        // Unchanged mtime: not listed (a rename hidden by restoring the mtime is not seen).
        fs::rename(
            root.join("cur/100.M1P1.h:2,"),
            root.join("cur/100.M1P1.h:2,S"),
        )?;
        set_mtime(&root.join("cur"), old)?;
        assert!(a.refresh()?.is_empty());
        let mut b = Mailbox::open(&root)?;
        assert_eq!(b.message(1)?.map(|m| m.flags), Some(Flags::empty()));
        // Behind the store's back (mutt): the rename moves the mtime, the next look sees it
        // in this handle and in a new one.
        fs::rename(
            root.join("cur/101.M1P1.h:2,"),
            root.join("cur/101.M1P1.h:2,F"),
        )?;
        assert!(b.refresh()?.is_empty());
        assert_eq!(b.message(1)?.map(|m| m.flags), Some(Flags::SEEN));
        assert_eq!(b.message(2)?.map(|m| m.flags), Some(Flags::FLAGGED));
        deliver(&root, "102.M1P1.h", b"c\n");
        assert_eq!(a.refresh()?, vec![3]);
        fs::remove_file(root.join("cur/100.M1P1.h:2,S"))?;
        let mut c = Mailbox::open(&root)?;
        let s = c.snapshot()?;
        assert_eq!(
            s.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![2, 3]
        );
        Ok(())
    }

    /// Drops what this process keeps of `root` (as another process would start), and
    /// only that: the tests run side by side.
    fn forget(root: &Path) {
        SNAPSHOTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(p, _, _)| p != root);
        CONNECTIONS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(p, _, _)| p != root);
    }

    fn kept(root: &Path) -> usize {
        CONNECTIONS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(p, _, _)| p == root)
            .count()
    }

    #[test]
    fn size_from_w_field_and_renamed_file() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        let mut a = Mailbox::open(&root)?;
        deliver(&root, "300.M1P1.h,S=2,W=42", b"y\n");
        deliver(&root, "301.M1P1.h", b"a\nb\r\n");
        a.refresh()?;
        let s = a.snapshot()?;
        assert_eq!(a.date_and_size(&s.messages[0])?.1, 42);
        // Renamed behind the handle's back (another session's flag change): still found.
        fs::rename(
            root.join("cur/301.M1P1.h:2,"),
            root.join("cur/301.M1P1.h:2,S"),
        )?;
        a.resync()?;
        assert_eq!(a.date_and_size(&s.messages[1])?.1, 6);
        assert_eq!(a.read(&s.messages[1])?, b"a\nb\r\n");
        fs::remove_file(root.join("cur/301.M1P1.h:2,S"))?;
        assert!(a.read(&s.messages[1]).is_err());
        Ok(())
    }

    #[test]
    fn one_uid_per_base_name() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        fs::create_dir_all(root.join("cur"))?;
        // Two files of one message (a crash between link and unlink): one UID.
        fs::write(root.join("cur/400.M1P1.h:2,S"), b"a\n")?;
        fs::write(root.join("cur/400.M1P1.h:2,RS"), b"a\n")?;
        fs::write(root.join("cur/399.M1P1.h:2,"), b"b\n")?;
        let mut a = Mailbox::open(&root)?;
        let s = a.snapshot()?;
        assert_eq!(s.messages.len(), 2);
        assert_eq!(s.messages[0].base(), "399.M1P1.h");
        fs::write(root.join("cur/400.M1P1.h,S=2:2,"), b"a\n")?;
        a.resync()?;
        assert_eq!(a.snapshot()?.messages.len(), 2);
        Ok(())
    }

    #[test]
    fn big_first_build_matches_a_fresh_read() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        fs::create_dir_all(root.join("cur"))?;
        // Enough for the batched path (index built after the rows), names whose string
        // order is not their delivery order, one message in two files.
        for i in 0..700u32 {
            let flags = if i % 3 == 0 { "S" } else { "" };
            fs::write(root.join(format!("cur/1000.M{i}P1.h:2,{flags}")), b"x\n")?;
        }
        fs::write(root.join("cur/1000.M5P1.h,S=2:2,RS"), b"x\n")?;
        let mut a = Mailbox::open(&root)?;
        let built = a.snapshot()?;
        assert_eq!(built.messages.len(), 700);
        assert_eq!(built.messages[10].base(), "1000.M10P1.h");
        assert_eq!(built.messages[10].uid, 11);
        assert!(built.messages[9].flags.contains(Flags::SEEN));
        assert_eq!(built.uidnext, 701);
        // What the index holds, read back by another process (no kept list).
        forget(&root);
        let read = a.snapshot()?;
        assert_eq!(read.messages, built.messages);
        assert_eq!(
            (read.uidvalidity, read.uidnext, read.highest_modseq),
            (built.uidvalidity, built.uidnext, built.highest_modseq)
        );
        // A delivery of a known base name gets no UID; the hash index, left out of the
        // first indexing, is there again.
        let has_index = || -> Result<bool> {
            Ok(Connection::open(root.join(INDEX_NAME))?.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'msg_bhash'",
                [],
                |r| r.get::<_, i64>(0),
            )? == 1)
        };
        assert!(!has_index()?);
        deliver(&root, "1000.M10P1.h", b"x\n");
        deliver(&root, "1001.M1P1.h", b"y\n");
        assert_eq!(a.refresh()?, vec![701]);
        assert!(has_index()?);
        Ok(())
    }

    #[test]
    fn first_index_built_aside_and_renamed() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        fs::create_dir_all(root.join("cur"))?;
        fs::write(root.join("cur/100.M1P1.h:2,S"), b"a\n")?;
        // What a build cut short leaves, and an empty index file (SQLite's before any
        // transaction): both replaced.
        fs::write(root.join(format!("{INDEX_NAME}.new")), b"garbage")?;
        fs::write(root.join(INDEX_NAME), b"")?;
        let mut a = Mailbox::open(&root)?;
        assert_eq!(a.snapshot()?.messages.len(), 1);
        assert!(!root.join(format!("{INDEX_NAME}.new")).exists());
        assert!(!root.join(format!("{INDEX_NAME}-journal")).exists());
        // Another process's view of it: a complete index.
        drop(a);
        forget(&root);
        let mut b = Mailbox::open(&root)?;
        let s = b.snapshot()?;
        assert_eq!(s.messages[0].uid, 1);
        assert!(s.messages[0].flags.contains(Flags::SEEN));
        Ok(())
    }

    #[test]
    fn schema_1_index_converted_keeping_uids() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        for d in ["cur", "new", "tmp"] {
            fs::create_dir_all(root.join(d))?;
        }
        fs::write(root.join("cur/100.M1P1.h:2,S"), b"a\n")?;
        fs::write(root.join("cur/101.M1P1.h:2,"), b"b\n")?;
        {
            let db = Connection::open(root.join(INDEX_NAME))?;
            db.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 CREATE TABLE msg (uid INTEGER PRIMARY KEY, base TEXT NOT NULL UNIQUE,
                    name TEXT NOT NULL, flags TEXT NOT NULL, keywords TEXT NOT NULL,
                    modseq INTEGER NOT NULL, internaldate INTEGER NOT NULL, size INTEGER NOT NULL);
                 CREATE TABLE expunged (uid INTEGER PRIMARY KEY, modseq INTEGER NOT NULL);
                 CREATE TABLE cache (uid INTEGER NOT NULL, field INTEGER NOT NULL,
                    version INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY (uid, field))
                    WITHOUT ROWID;
                 INSERT INTO meta VALUES ('uidvalidity', 4242), ('uidnext', 10),
                    ('highestmodseq', 20), ('expungelog', 1);
                 INSERT INTO msg VALUES (5, '100.M1P1.h', '100.M1P1.h:2,S', 'S', 'work', 7, -1, -1),
                    (9, '101.M1P1.h', '101.M1P1.h:2,', '', '', 8, -1, -1);",
            )?;
        }
        let mut a = Mailbox::open(&root)?;
        let s = a.snapshot()?;
        assert_eq!(s.uidvalidity, 4242);
        let uids: Vec<(u32, &str)> = s.messages.iter().map(|m| (m.uid, m.base())).collect();
        assert_eq!(uids, [(5, "100.M1P1.h"), (9, "101.M1P1.h")]);
        assert_eq!(s.messages[0].keywords, ["work"]);
        deliver(&root, "100.M1P1.h", b"a\n");
        deliver(&root, "102.M1P1.h", b"c\n");
        assert_eq!(a.refresh()?, vec![10]);
        Ok(())
    }

    #[test]
    fn expunge_log_trimmed() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        let mut a = Mailbox::open(&root)?;
        let start = a.highest_modseq()?;
        for i in 0..11 {
            deliver(&root, &format!("{}.M1P1.h", 100 + i), b"x\n");
        }
        a.refresh()?;
        let after_delivery = a.highest_modseq()?;
        let uids: Vec<u32> = (1..=11).collect();
        a.expunge(&uids)?;
        // 11 is within a tenth over 10: kept whole.
        assert_eq!(a.vanished_since(start)?, (uids.clone(), true));
        for i in 0..2 {
            deliver(&root, &format!("{}.M1P1.h", 200 + i), b"x\n");
        }
        a.refresh()?;
        a.expunge(&[12, 13])?;
        // 13: the 10 newest kept, the log complete only after the ones dropped (the
        // expunges of UIDs 1-3, MODSEQs after_delivery + 1..3).
        let (v, complete) = a.vanished_since(after_delivery + 3)?;
        assert_eq!(v, (4..=13).collect::<Vec<u32>>());
        assert!(complete);
        let (v, complete) = a.vanished_since(start)?;
        assert_eq!(v.len(), 10);
        assert!(!complete);
        Ok(())
    }

    #[test]
    fn connection_reused_and_revalidated() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        let a = Mailbox::open(&root)?;
        let validity = a.uidvalidity()?;
        drop(a);
        assert_eq!(kept(&root), 1);
        // Reused, and still synced: a delivery made while it was closed is picked up.
        deliver(&root, "200.M1P1.h", b"x\n");
        let mut b = Mailbox::open(&root)?;
        assert_eq!(kept(&root), 0);
        assert_eq!(b.refresh()?, vec![1]);
        assert_eq!(b.uidvalidity()?, validity);
        // The counters of an open that changed nothing serve the snapshot right after it,
        // unless something was written in between.
        drop(b);
        let mut b = Mailbox::open(&root)?;
        assert_eq!(b.snapshot()?.messages.len(), 1);
        drop(b);
        let mut b = Mailbox::open(&root)?;
        b.append(b"y\r\n", Flags::empty(), &[], None)?;
        assert_eq!(b.snapshot()?.messages.len(), 2);
        assert!(b.expunge(&[2])?.len() == 1);
        drop(b);
        assert_eq!(kept(&root), 1);
        // The index replaced behind the closed connection's back (removed: rebuilt with a
        // new UIDVALIDITY): the kept connection is not used.
        fs::remove_file(root.join(INDEX_NAME))?;
        std::thread::sleep(Duration::from_millis(1100));
        let mut c = Mailbox::open(&root)?;
        assert_eq!(kept(&root), 0);
        assert_ne!(c.uidvalidity()?, validity);
        assert_eq!(c.snapshot()?.messages.len(), 1);
        drop(c);
        // Overwritten in place (same file): the reused connection fails and the open
        // rebuilds the index.
        fs::write(root.join(INDEX_NAME), b"garbage garbage garbage garbage")?;
        let mut d = Mailbox::open(&root)?;
        assert_eq!(d.snapshot()?.messages.len(), 1);
        assert!(root.join("oxipost-index.corrupt").exists());
        Ok(())
    }

    #[test]
    fn cache_and_header() -> Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("Maildir");
        let mut a = Mailbox::open(&root)?;
        let mut body = b"Subject: x\r\nFrom: a@b\r\n\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'z', 20000));
        let uid = a.append(&body, Flags::empty(), &[], None)?;
        let m = a.message(uid)?.ok_or(StoreError::NotFound)?;
        assert_eq!(a.read_header(&m)?, b"Subject: x\r\nFrom: a@b\r\n\r\n");
        let mut big = b"X: ".to_vec();
        big.extend(std::iter::repeat_n(b'y', 9000));
        big.extend_from_slice(b"\n\nbody");
        let uid2 = a.append(&big, Flags::empty(), &[], None)?;
        let m2 = a.message(uid2)?.ok_or(StoreError::NotFound)?;
        assert_eq!(a.read_header(&m2)?.len(), big.len() - 4);
        a.cache_put(
            7,
            &[
                (uid, 1, b"env".to_vec()),
                (uid2, 1, b"e2".to_vec()),
                (99, 1, b"x".to_vec()),
            ],
        )?;
        let got = a.cached(1, 7, 0, 100)?;
        assert_eq!(got.len(), 2);
        assert_eq!(got.get(&uid).map(Vec::as_slice), Some(&b"env"[..]));
        assert!(a.cached(1, 8, 0, 100)?.is_empty());
        assert!(a.cached(2, 7, 0, 100)?.is_empty());
        a.expunge(&[uid])?;
        assert_eq!(a.cached(1, 7, 0, 100)?.len(), 1);
        Ok(())
    }

    #[test]
    fn flag_letters() {
        let f = Flags::from_letters("TSFx");
        assert_eq!(f.letters(), "FST");
        for bits in 0..32u8 {
            let l = Flags(bits).letters_str();
            assert_eq!(Flags::from_letters(l), Flags(bits));
            assert!(l.as_bytes().is_sorted_by(|a, b| a < b), "{l}");
        }
        assert_eq!(f.imap_names(), vec!["\\Flagged", "\\Deleted", "\\Seen"]);
        assert_eq!(Flags::from_imap("\\seen"), Some(Flags::SEEN));
    }
}

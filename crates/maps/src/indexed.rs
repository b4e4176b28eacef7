//! `hash:`, `btree:`, `lmdb:` and `cdb:` — the indexed file that `postmap` builds.
//!
//! All four type names share one on-disk format, so a site's `hash:/etc/aliases` and
//! `lmdb:/etc/postfix/virtual` keep working; the index file is `NAME.db` for `hash:` and
//! `btree:`, `NAME.lmdb` for `lmdb:` and `NAME.cdb` for `cdb:` (as Postfix names them), so
//! oxipost's files never overwrite a Berkeley DB or LMDB file of Postfix's with the other
//! suffix. Ordering (`btree:`'s sorted `postmap -s`) is not kept: a dump lists entries in
//! the order they were added.
//!
//! # Format (version 1, little-endian)
//!
//! ```text
//! 0   magic  "OXIPMAP" 0x01
//! 8   flags  u32 (bit 0: keys were folded to lower case), reserved u32
//! 16  records u64        number of live entries
//! 24  table_off u64      where the slot table starts (= end of the records)
//! 32  slots u64          number of slots, a power of two
//! 40  reserved to 64
//! 64  records            [key_len u32][value_len u32][key][value], in insertion order
//! table_off  slots       [hash u64][record offset u64] x slots; offset 0 = empty
//! ```
//!
//! A key's slot is `hash & (slots - 1)`, then linear probing; the load factor is at most
//! 3/4, so a miss ends at an empty slot after a few probes. The hash is 64-bit FNV-1a of
//! the key bytes followed by the MurmurHash3 finaliser ([`key_hash`]); it is part of the
//! format. Files are written whole to a temporary name, fsynced and renamed over the old
//! one, so a reader sees the old index or the new one, never a mixture; an updating
//! `postmap -i`/`-d` rewrites the file the same way.
//!
//! Reading uses `pread` (two calls per lookup: the probe window and the record), or
//! memory when the file is small ([`MEMORY_LIMIT`]); no mmap, so a file truncated under
//! a reader gives an error, not a SIGBUS. The file is reopened when its inode, size or
//! mtime changes, checked at most every [`crate::MapConfig::reopen_check`].

use crate::{Map, MapConfig, MapError};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const MAGIC: &[u8; 8] = b"OXIPMAP\x01";
const HEADER: u64 = 64;
const SLOT: u64 = 16;
/// Files up to this size are read into memory at open.
pub const MEMORY_LIMIT: u64 = 4 << 20;
/// Flag bit: keys were folded to lower case when the file was built.
pub const FLAG_FOLDED: u32 = 1;

/// The key hash of the format: FNV-1a 64 with the MurmurHash3 64-bit finaliser.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The index file name for a table name: `NAME.db`, `NAME.lmdb` or `NAME.cdb`.
pub fn index_path(kind: &str, name: &str) -> PathBuf {
    let suffix = match kind {
        "lmdb" => "lmdb",
        "cdb" => "cdb",
        _ => "db",
    };
    PathBuf::from(format!("{name}.{suffix}"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn corrupt(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}: rebuild it with postmap", path.display()),
    )
}

enum Store {
    Memory(Vec<u8>),
    File(File),
}

/// An open index file.
pub struct Reader {
    path: PathBuf,
    store: Store,
    flags: u32,
    records: u64,
    table_off: u64,
    slots: u64,
    len: u64,
}

/// Reads exactly `buf.len()` bytes at `off`, or fewer at the end of the file.
fn read_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl Reader {
    /// Opens and checks an index file.
    pub fn open(path: &Path) -> io::Result<Reader> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = [0u8; HEADER as usize];
        if read_full(&file, &mut head, 0)? < head.len() || &head[..8] != MAGIC {
            return Err(corrupt(path, "not an oxipost index file"));
        }
        let flags = u32_at(&head, 8);
        let records = u64_at(&head, 16);
        let table_off = u64_at(&head, 24);
        let slots = u64_at(&head, 32);
        let table_end = slots
            .checked_mul(SLOT)
            .and_then(|t| t.checked_add(table_off));
        if !slots.is_power_of_two() || table_off < HEADER || table_end != Some(len) {
            return Err(corrupt(path, "bad index header"));
        }
        let store = if len <= MEMORY_LIMIT {
            let mut buf = vec![0u8; len as usize];
            if read_full(&file, &mut buf, 0)? != buf.len() {
                return Err(corrupt(path, "short read"));
            }
            Store::Memory(buf)
        } else {
            Store::File(file)
        };
        Ok(Reader {
            path: path.to_path_buf(),
            store,
            flags,
            records,
            table_off,
            slots,
            len,
        })
    }

    /// Number of entries.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Whether the keys were folded to lower case when the file was built.
    pub fn folded(&self) -> bool {
        self.flags & FLAG_FOLDED != 0
    }

    fn read_at<'a>(&'a self, buf: &'a mut Vec<u8>, off: u64, want: usize) -> io::Result<&'a [u8]> {
        let end = (off.saturating_add(want as u64)).min(self.len);
        let n = end.saturating_sub(off) as usize;
        match &self.store {
            Store::Memory(m) => Ok(&m[off as usize..off as usize + n]),
            Store::File(f) => {
                buf.resize(n, 0);
                let got = read_full(f, buf, off)?;
                Ok(&buf[..got])
            }
        }
    }

    /// Reads the record at `off`: (key, value).
    fn record(&self, off: u64, buf: &mut Vec<u8>) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let limit = self.table_off;
        let head = self.read_at(buf, off, 256)?;
        if head.len() < 8 || off + 8 > limit {
            return Err(corrupt(&self.path, "record outside the data"));
        }
        let klen = u32_at(head, 0) as usize;
        let vlen = u32_at(head, 4) as usize;
        let total = 8 + klen + vlen;
        if off + total as u64 > limit {
            return Err(corrupt(&self.path, "record outside the data"));
        }
        if head.len() >= total {
            return Ok((head[8..8 + klen].to_vec(), head[8 + klen..total].to_vec()));
        }
        let rec = self.read_at(buf, off, total)?;
        if rec.len() < total {
            return Err(corrupt(&self.path, "short record"));
        }
        Ok((rec[8..8 + klen].to_vec(), rec[8 + klen..total].to_vec()))
    }

    /// Looks a key up (bytes as stored: the caller folds).
    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        if self.records == 0 {
            return Ok(None);
        }
        let h = key_hash(key);
        let mask = self.slots - 1;
        let mut i = h & mask;
        let mut buf = Vec::new();
        let mut rbuf = Vec::new();
        let mut probed = 0u64;
        loop {
            // A window of up to 4 slots, not wrapping past the end of the table.
            let n = (4u64).min(self.slots - i);
            let win = self
                .read_at(&mut buf, self.table_off + i * SLOT, (n * SLOT) as usize)?
                .to_vec();
            if win.len() < (n * SLOT) as usize {
                return Err(corrupt(&self.path, "short slot table"));
            }
            for s in 0..n as usize {
                let sh = u64_at(&win, s * 16);
                let off = u64_at(&win, s * 16 + 8);
                if off == 0 {
                    return Ok(None);
                }
                if sh == h {
                    let (k, v) = self.record(off, &mut rbuf)?;
                    if k == key {
                        return Ok(Some(v));
                    }
                }
                probed += 1;
                if probed >= self.slots {
                    return Ok(None);
                }
            }
            i = (i + n) & mask;
        }
    }

    /// Every entry in file order.
    pub fn entries(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::with_capacity(self.records.min(1 << 24) as usize);
        let mut off = HEADER;
        let mut buf = Vec::new();
        while off < self.table_off {
            let (k, v) = self.record(off, &mut buf)?;
            off += 8 + k.len() as u64 + v.len() as u64;
            out.push((k, v));
        }
        Ok(out)
    }
}

/// What to do when a key is added a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// Keep the first value and report the duplicate (postmap's default).
    Warn,
    /// Keep the first value silently (`postmap -w`).
    Ignore,
    /// The later value replaces the earlier (`postmap -r`).
    Replace,
}

/// What [`Builder::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The key existed; the first value was kept (the caller warns when asked to).
    KeptFirst,
    Replaced,
}

struct Entry {
    hash: u64,
    key: Box<[u8]>,
    value: Option<Box<[u8]>>,
}

/// Collects entries in memory and writes an index file atomically. Used by `postmap`
/// and `postalias` (and by anything else that must build a table, such as newaliases).
pub struct Builder {
    entries: Vec<Entry>,
    /// Open-addressing table of entry index + 1 (0 = empty).
    slots: Vec<u32>,
    live: usize,
    dups: Duplicates,
    folded: bool,
}

impl Builder {
    /// An empty builder. `folded` is recorded in the file (keys were lower-cased).
    pub fn new(dups: Duplicates, folded: bool) -> Builder {
        Builder {
            entries: Vec::new(),
            slots: vec![0; 16],
            live: 0,
            dups,
            folded,
        }
    }

    /// A builder holding the entries of an existing index (for `postmap -i` / `-d`);
    /// a missing file gives an empty builder.
    pub fn from_file(path: &Path, dups: Duplicates, folded: bool) -> io::Result<Builder> {
        let mut b = Builder::new(dups, folded);
        match Reader::open(path) {
            Ok(r) => {
                for (k, v) in r.entries()? {
                    b.insert_bytes(&k, &v);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(b)
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn find(&self, hash: u64, key: &[u8]) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return Err(i);
            }
            let e = &self.entries[s as usize - 1];
            if e.hash == hash && *e.key == *key {
                return Ok(s as usize - 1);
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let mut slots = vec![0u32; n];
        for (idx, e) in self.entries.iter().enumerate() {
            let mut i = e.hash as usize & (n - 1);
            while slots[i] != 0 {
                i = (i + 1) & (n - 1);
            }
            slots[i] = idx as u32 + 1;
        }
        self.slots = slots;
    }

    /// Adds an entry under the duplicate policy.
    pub fn insert(&mut self, key: &str, value: &str) -> Inserted {
        self.insert_bytes(key.as_bytes(), value.as_bytes())
    }

    pub fn insert_bytes(&mut self, key: &[u8], value: &[u8]) -> Inserted {
        let hash = key_hash(key);
        match self.find(hash, key) {
            Ok(idx) => {
                let e = &mut self.entries[idx];
                if e.value.is_none() {
                    e.value = Some(value.into());
                    self.live += 1;
                    return Inserted::New;
                }
                if self.dups == Duplicates::Replace {
                    e.value = Some(value.into());
                    Inserted::Replaced
                } else {
                    Inserted::KeptFirst
                }
            }
            Err(slot) => {
                self.entries.push(Entry {
                    hash,
                    key: key.into(),
                    value: Some(value.into()),
                });
                self.live += 1;
                self.slots[slot] = self.entries.len() as u32;
                if self.entries.len() * 4 >= self.slots.len() * 3 {
                    self.grow();
                }
                Inserted::New
            }
        }
    }

    /// Removes a key; true when it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let k = key.as_bytes();
        match self.find(key_hash(k), k) {
            Ok(idx) if self.entries[idx].value.is_some() => {
                self.entries[idx].value = None;
                self.live -= 1;
                true
            }
            _ => false,
        }
    }

    /// The file image.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut slots: u64 = 16;
        while slots * 3 < (self.live as u64) * 4 + 1 {
            slots *= 2;
        }
        let data_len: usize = self
            .entries
            .iter()
            .filter_map(|e| e.value.as_ref().map(|v| 8 + e.key.len() + v.len()))
            .sum();
        let table_off = HEADER + data_len as u64;
        let mut out = Vec::with_capacity(table_off as usize + (slots * SLOT) as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(if self.folded { FLAG_FOLDED } else { 0 }).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.live as u64).to_le_bytes());
        out.extend_from_slice(&table_off.to_le_bytes());
        out.extend_from_slice(&slots.to_le_bytes());
        out.resize(HEADER as usize, 0);
        let mut table = vec![0u8; (slots * SLOT) as usize];
        let mask = slots - 1;
        for e in &self.entries {
            let Some(v) = &e.value else { continue };
            let off = out.len() as u64;
            out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.key);
            out.extend_from_slice(v);
            let mut i = e.hash & mask;
            loop {
                let at = (i * SLOT) as usize;
                if u64_at(&table, at + 8) == 0 {
                    table[at..at + 8].copy_from_slice(&e.hash.to_le_bytes());
                    table[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        out.extend_from_slice(&table);
        out
    }

    /// Writes the index to `path` atomically: a temporary file in the same directory,
    /// fsync, rename, fsync of the directory. `mode` sets the permission bits (else 0644).
    pub fn write(&self, path: &Path, mode: Option<u32>) -> io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode.unwrap_or(0o644))
                .open(&tmp)?;
            f.write_all(&self.to_bytes())?;
            if let Some(m) = mode {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(m))?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Identity of a file, to notice a replaced index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
}

fn file_id(path: &Path) -> io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok(FileId {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_ns: m.mtime_nsec(),
    })
}

struct State {
    reader: Result<Arc<Reader>, String>,
    id: Option<FileId>,
    checked: Instant,
}

/// A `hash:`/`btree:`/`lmdb:`/`cdb:` table opened for lookups.
pub struct IndexedMap {
    path: PathBuf,
    warnings: Vec<String>,
    check: std::time::Duration,
    state: Mutex<State>,
}

impl IndexedMap {
    /// Opens `NAME.db` (or `.lmdb`/`.cdb`) for table `kind:name`. A missing or malformed
    /// file is an error here; after a successful open, trouble at a later reopen makes
    /// lookups fail temporarily until the file is good again.
    pub fn open(kind: &str, name: &str, cfg: &MapConfig) -> Result<IndexedMap, MapError> {
        let path = index_path(kind, name);
        let id = file_id(&path).ok();
        let reader = Reader::open(&path)
            .map_err(|e| MapError::temp(format!("open database {}: {e}", path.display())))?;
        let mut warnings = Vec::new();
        if let (Ok(src), Ok(idx)) = (std::fs::metadata(name), std::fs::metadata(&path))
            && (src.mtime(), src.mtime_nsec()) > (idx.mtime(), idx.mtime_nsec())
        {
            warnings.push(format!(
                "database {} is older than source file {name}",
                path.display()
            ));
        }
        Ok(IndexedMap {
            path,
            warnings,
            check: cfg.reopen_check,
            state: Mutex::new(State {
                reader: Ok(Arc::new(reader)),
                id,
                checked: Instant::now(),
            }),
        })
    }

    /// The index file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn current(&self) -> Result<Arc<Reader>, MapError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| MapError::temp("table lock poisoned"))?;
        if st.checked.elapsed() >= self.check {
            st.checked = Instant::now();
            let id = file_id(&self.path).ok();
            if id != st.id {
                st.id = id;
                st.reader = Reader::open(&self.path)
                    .map(Arc::new)
                    .map_err(|e| format!("open database {}: {e}", self.path.display()));
            }
        }
        st.reader.clone().map_err(MapError::temp)
    }
}

impl Map for IndexedMap {
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        let r = self.current()?;
        r.get(key.as_bytes())
            .map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned()))
            .map_err(|e| MapError::temp(e.to_string()))
    }

    fn dump(&self) -> Result<Vec<(String, String)>, MapError> {
        let r = self.current()?;
        let e = r.entries().map_err(|e| MapError::temp(e.to_string()))?;
        Ok(e.into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(n: usize, dir: &Path) -> PathBuf {
        let mut b = Builder::new(Duplicates::Warn, true);
        for i in 0..n {
            b.insert(&format!("key{i}"), &format!("value {i}"));
        }
        let p = dir.join("t.db");
        assert!(b.write(&p, None).is_ok());
        p
    }

    #[test]
    fn build_and_read_small_and_large() {
        let d = tempfile::tempdir().expect("tempdir");
        for n in [0, 1, 5, 1000, 200_000] {
            let p = build(n, d.path());
            let r = Reader::open(&p).expect("open");
            assert_eq!(r.records(), n as u64);
            for i in (0..n).step_by(97) {
                let v = r.get(format!("key{i}").as_bytes()).expect("get");
                assert_eq!(v, Some(format!("value {i}").into_bytes()));
            }
            assert_eq!(r.get(b"nope").expect("get"), None);
            assert_eq!(r.entries().expect("entries").len(), n);
        }
    }

    #[test]
    fn duplicates_and_removal() {
        let mut b = Builder::new(Duplicates::Warn, true);
        assert_eq!(b.insert("a", "1"), Inserted::New);
        assert_eq!(b.insert("a", "2"), Inserted::KeptFirst);
        let mut r = Builder::new(Duplicates::Replace, true);
        r.insert("a", "1");
        assert_eq!(r.insert("a", "2"), Inserted::Replaced);
        assert!(r.remove("a"));
        assert!(!r.remove("a"));
        assert_eq!(r.len(), 0);
        assert_eq!(r.insert("a", "3"), Inserted::New);
    }

    #[test]
    fn reopens_replaced_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let name = d.path().join("m");
        let name = name.to_string_lossy().into_owned();
        let mut b = Builder::new(Duplicates::Warn, true);
        b.insert("k", "old");
        assert!(b.write(&index_path("hash", &name), None).is_ok());
        let cfg = MapConfig {
            reopen_check: std::time::Duration::ZERO,
            ..MapConfig::default()
        };
        let m = IndexedMap::open("hash", &name, &cfg).expect("open");
        assert_eq!(m.lookup("k").ok().flatten().as_deref(), Some("old"));
        let mut b = Builder::new(Duplicates::Warn, true);
        b.insert("k", "new");
        assert!(b.write(&index_path("hash", &name), None).is_ok());
        assert_eq!(m.lookup("k").ok().flatten().as_deref(), Some("new"));
        assert!(std::fs::write(index_path("hash", &name), b"garbage").is_ok());
        assert!(m.lookup("k").is_err());
    }

    #[test]
    fn rejects_garbage() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("g.db");
        assert!(std::fs::write(&p, b"OXIPMAP\x01 short").is_ok());
        assert!(Reader::open(&p).is_err());
    }
}

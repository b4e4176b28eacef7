//! Reading a queue file: [`QueueFile`] parses the envelope, keeps only the positions of the
//! content records, reads content on demand with `pread`, and sets done-marks in place.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{QueueError, Result};
use crate::format::{self, DONE_DONE, Envelope, Header, RecordScanner, rec};
use crate::id::QueueId;

/// An opened queue file.
pub struct QueueFile {
    file: File,
    path: PathBuf,
    writable: bool,
    header: Header,
    arrival: SystemTime,
    envelope: Envelope,
    done_offsets: Vec<u64>,
    segments: Vec<(u64, u32)>,
    content_len: u64,
    complete: bool,
    skipped_records: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    Partial,
}

impl QueueFile {
    /// Opens a complete queue file read-only. An incomplete file is
    /// [`QueueError::Incomplete`]; a malformed one [`QueueError::Corrupt`].
    pub fn open(path: impl AsRef<Path>) -> Result<QueueFile> {
        Self::open_with(path.as_ref(), false, Mode::Strict)
    }

    /// Opens a complete queue file read-write, so that [`mark_done`](Self::mark_done) works.
    pub fn open_for_update(path: impl AsRef<Path>) -> Result<QueueFile> {
        Self::open_with(path.as_ref(), true, Mode::Strict)
    }

    /// Opens a queue file read-only even if it is incomplete (for `postcat` and repair tools);
    /// [`is_complete`](Self::is_complete) tells. Corrupt files are still refused.
    pub fn open_partial(path: impl AsRef<Path>) -> Result<QueueFile> {
        Self::open_with(path.as_ref(), false, Mode::Partial)
    }

    fn open_with(path: &Path, writable: bool, mode: Mode) -> Result<QueueFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(QueueError::corrupt(0, "not a regular file"));
        }
        let mut qf = QueueFile {
            file,
            path: path.to_path_buf(),
            writable,
            header: Header {
                version: format::VERSION,
                flags: 0,
            },
            arrival: UNIX_EPOCH,
            envelope: Envelope::default(),
            done_offsets: Vec::new(),
            segments: Vec::new(),
            content_len: 0,
            complete: false,
            skipped_records: 0,
        };
        match qf.scan(meta.len()) {
            Ok(()) => {}
            Err(QueueError::Incomplete) if mode == Mode::Partial => return Ok(qf),
            Err(e) => return Err(e),
        }
        Ok(qf)
    }

    fn scan(&mut self, file_len: u64) -> Result<()> {
        let mut scanner = RecordScanner::new(&self.file, file_len)?;
        self.header = scanner.header();
        let mut have_arrival = false;
        let mut have_sender = false;
        while let Some(r) = scanner.next_record()? {
            let base = r.payload_offset();
            let payload = r.payload.as_deref().unwrap_or(&[]);
            match r.rtype {
                rec::ARRIVAL => {
                    if have_arrival {
                        return Err(QueueError::corrupt(r.offset, "second arrival record"));
                    }
                    let (s, us) = format::decode_arrival(payload, base)?;
                    self.arrival = UNIX_EPOCH
                        .checked_add(Duration::new(s, us * 1000))
                        .ok_or_else(|| QueueError::corrupt(base, "arrival time out of range"))?;
                    have_arrival = true;
                }
                rec::SENDER => {
                    if have_sender {
                        return Err(QueueError::corrupt(r.offset, "second sender record"));
                    }
                    self.envelope.sender = format::decode_sender(payload, base)?;
                    have_sender = true;
                }
                rec::PARAMS => self.envelope.params = format::decode_params(payload, base)?,
                rec::RECIPIENT => {
                    self.envelope
                        .recipients
                        .push(format::decode_recipient(payload, base)?);
                    self.done_offsets.push(base);
                }
                rec::ATTRIBUTE => self
                    .envelope
                    .attributes
                    .push(format::decode_attribute(payload, base)?),
                rec::CONTENT => {
                    if r.len > 0 {
                        self.segments.push((base, r.len));
                        self.content_len += u64::from(r.len);
                    }
                }
                rec::END => {}
                _ => self.skipped_records += 1,
            }
        }
        if !have_arrival {
            return Err(QueueError::corrupt(0, "no arrival record"));
        }
        if !have_sender {
            return Err(QueueError::corrupt(0, "no sender record"));
        }
        self.complete = true;
        Ok(())
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The queue id, taken from the file name (`None` for a temporary or foreign name).
    pub fn id(&self) -> Option<QueueId> {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| QueueId::parse(n).ok())
    }

    /// True when the end marker was found (always, unless opened with `open_partial`).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The file header (version, flags).
    pub fn header(&self) -> Header {
        self.header
    }

    /// Header flags.
    pub fn flags(&self) -> u16 {
        self.header.flags
    }

    /// The arrival time.
    pub fn arrival(&self) -> SystemTime {
        self.arrival
    }

    /// The envelope (recipients carry their done-marks as of opening, updated by
    /// [`mark_done`](Self::mark_done)).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The envelope sender.
    pub fn sender(&self) -> &str {
        &self.envelope.sender
    }

    /// Recipients in file order.
    pub fn recipients(&self) -> &[format::Recipient] {
        &self.envelope.recipients
    }

    /// Indexes of recipients not yet done.
    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.envelope
            .recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.done)
            .map(|(i, _)| i)
    }

    /// True when every recipient is done.
    pub fn all_done(&self) -> bool {
        self.envelope.recipients.iter().all(|r| r.done)
    }

    /// Records of unknown, skipped types.
    pub fn skipped_records(&self) -> usize {
        self.skipped_records
    }

    /// Total content length in bytes.
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// A reader over the content, streaming from disk.
    pub fn content(&self) -> ContentReader<'_> {
        ContentReader {
            file: &self.file,
            segments: &self.segments,
            seg: 0,
            within: 0,
        }
    }

    /// The underlying file (for locking, `fstat`, …).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Takes an exclusive advisory lock without waiting; false if another process holds it.
    /// The queue manager holds it while a message is active, as Postfix does.
    pub fn try_lock(&self) -> Result<bool> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// Marks recipient `index` done: a one-byte `pwrite` of its done-mark followed by
    /// `fdatasync`. The rest of the file is never rewritten.
    pub fn mark_done(&mut self, index: usize) -> Result<()> {
        if !self.writable {
            return Err(QueueError::ReadOnly);
        }
        if !self.complete {
            return Err(QueueError::Incomplete);
        }
        let off = *self
            .done_offsets
            .get(index)
            .ok_or(QueueError::NoSuchRecipient(index))?;
        self.file.write_all_at(&[DONE_DONE], off)?;
        self.file.sync_data()?;
        if let Some(r) = self.envelope.recipients.get_mut(index) {
            r.done = true;
        }
        Ok(())
    }

    /// Marks several recipients done with one `fdatasync` at the end (none when `sync` is
    /// false: a lost mark only means a duplicate delivery after a crash).
    pub fn mark_done_many(&mut self, indices: &[usize], sync: bool) -> Result<()> {
        if !self.writable {
            return Err(QueueError::ReadOnly);
        }
        if !self.complete {
            return Err(QueueError::Incomplete);
        }
        for &index in indices {
            let off = *self
                .done_offsets
                .get(index)
                .ok_or(QueueError::NoSuchRecipient(index))?;
            self.file.write_all_at(&[DONE_DONE], off)?;
            if let Some(r) = self.envelope.recipients.get_mut(index) {
                r.done = true;
            }
        }
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Re-reads recipient `index`'s done-mark from disk.
    pub fn is_done_on_disk(&self, index: usize) -> Result<bool> {
        let off = *self
            .done_offsets
            .get(index)
            .ok_or(QueueError::NoSuchRecipient(index))?;
        let mut b = [0u8; 1];
        self.file.read_exact_at(&mut b, off)?;
        Ok(b[0] != format::DONE_PENDING)
    }
}

impl std::fmt::Debug for QueueFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueFile")
            .field("path", &self.path)
            .field("complete", &self.complete)
            .field("header", &self.header)
            .field("recipients", &self.envelope.recipients.len())
            .field("content_len", &self.content_len)
            .finish()
    }
}

/// Streams a queue file's content from disk (`pread`, no seeking of the shared descriptor).
pub struct ContentReader<'a> {
    file: &'a File,
    segments: &'a [(u64, u32)],
    seg: usize,
    within: u32,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(&(off, len)) = self.segments.get(self.seg) else {
                return Ok(0);
            };
            if self.within >= len {
                self.seg += 1;
                self.within = 0;
                continue;
            }
            if buf.is_empty() {
                return Ok(0);
            }
            let want = ((len - self.within) as usize).min(buf.len());
            let n = self
                .file
                .read_at(&mut buf[..want], off + u64::from(self.within))?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "queue file shrank while reading content",
                ));
            }
            self.within += n as u32;
            return Ok(n);
        }
    }
}

//! Writing a new queue file: [`QueueWriter`] streams the envelope and content to a temporary
//! file, [`PreparedFile`] is the finished-but-not-yet-durable file, and committing it (alone
//! with [`PreparedFile::commit`], or in a group with [`GroupCommitter`]) makes it durable and
//! gives it its queue-id name.
//!
//! Sequence for one message:
//!
//! 1. `create`: open `<queue>/.tmp.<pid>.<usec>.<n>` with `O_CREAT|O_EXCL`, mode 0600; take its
//!    inode and the time to form the queue id (known from the start, for the `Received:`
//!    header); write the file header and the ARRIVAL record.
//! 2. Envelope records, then content in 64 KiB CONTENT records (never more than one chunk in
//!    memory); exceeding `max_content_size` removes the file and fails.
//! 3. `prepare`: END record, flush, mode 0700.
//! 4. commit: `fdatasync` the file, `rename` (no-replace) to `<queue>/<hash dirs>/<id>`,
//!    `fsync` the directory, and only then report success.
//!
//! Dropping a writer or prepared file that was not committed removes its temporary file.
//!
//! [`GroupCommitter`]: crate::GroupCommitter

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::commit::GroupCommitter;
use crate::error::{QueueError, Result};
use crate::format::{self, CONTENT_CHUNK, Envelope, MailParams, Recipient, rec};
use crate::id::QueueId;
use crate::layout::{Layout, Queue, sync_dir};

/// File-name prefix of temporary queue files (never a valid queue id).
pub const TEMP_PREFIX: &str = ".tmp.";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Options for a new queue file.
#[derive(Clone, Debug, Default)]
pub struct WriterOptions {
    /// Header flags ([`format::FLAG_TRACE`], [`format::FLAG_VERIFY`]).
    pub flags: u16,
    /// Largest content accepted, in bytes (`message_size_limit`); `None` for no limit.
    pub max_content_size: Option<u64>,
    /// Arrival time to record instead of now (e.g. pickup keeping a maildrop file's time).
    pub arrival: Option<SystemTime>,
}

/// Streams one new message into the queue. See the module documentation.
pub struct QueueWriter {
    layout: Layout,
    queue: Queue,
    out: Option<BufWriter<File>>,
    temp_path: PathBuf,
    id: QueueId,
    inode: u64,
    arrival: SystemTime,
    pos: u64,
    pending: Vec<u8>,
    content_size: u64,
    limit: Option<u64>,
    have_sender: bool,
}

fn split_time(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (d.as_secs(), d.subsec_micros())
}

impl QueueWriter {
    /// Creates a new file in `queue` (normally [`Queue::Incoming`], or [`Queue::Maildrop`]
    /// for local submission).
    pub fn create(layout: &Layout, queue: Queue, options: WriterOptions) -> Result<QueueWriter> {
        let dir = layout.queue_dir(queue);
        let pid = oxipost_log::pid();
        let (file, temp_path) = loop {
            let (_, usec) = split_time(SystemTime::now());
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{TEMP_PREFIX}{pid}.{usec}.{n}"));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let inode = match file.metadata() {
            Ok(m) => m.ino(),
            Err(e) => {
                let _ = fs::remove_file(&temp_path);
                return Err(e.into());
            }
        };
        let now = SystemTime::now();
        let id = QueueId::from_time(now, inode);
        let arrival = options.arrival.unwrap_or(now);
        let mut w = QueueWriter {
            layout: layout.clone(),
            queue,
            out: Some(BufWriter::with_capacity(CONTENT_CHUNK, file)),
            temp_path,
            id,
            inode,
            arrival,
            pos: 0,
            pending: Vec::new(),
            content_size: 0,
            limit: options.max_content_size,
            have_sender: false,
        };
        w.raw(&format::encode_header(options.flags))?;
        let (secs, usecs) = split_time(arrival);
        w.record(rec::ARRIVAL, &format::encode_arrival(secs, usecs))?;
        Ok(w)
    }

    /// The queue id this message will have once committed (only a clash with a stale file of
    /// the same name on another file system could change it; `finish` returns the final one).
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// The recorded arrival time.
    pub fn arrival(&self) -> SystemTime {
        self.arrival
    }

    /// Content bytes written so far.
    pub fn content_size(&self) -> u64 {
        self.content_size
    }

    /// The temporary path while writing.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    fn fail(&mut self) {
        self.out = None;
        let _ = fs::remove_file(&self.temp_path);
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or(QueueError::State("writer already failed or finished"))?;
        if let Err(e) = out.write_all(bytes) {
            self.fail();
            return Err(e.into());
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn record(&mut self, rtype: u8, payload: &[u8]) -> Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| rtype == rec::CONTENT || l <= format::MAX_ENVELOPE_RECORD_LEN)
            .ok_or(QueueError::State("envelope record too large"))?;
        self.raw(&format::encode_record_header(rtype, len))?;
        self.raw(payload)
    }

    fn flush_pending(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.record(rec::CONTENT, &chunk)?;
            self.pending = chunk;
            self.pending.clear();
        }
        Ok(())
    }

    fn envelope_record(&mut self, rtype: u8, payload: &[u8]) -> Result<()> {
        self.flush_pending()?;
        self.record(rtype, payload)
    }

    /// Writes the envelope sender (once; empty for `<>`).
    pub fn set_sender(&mut self, sender: &str) -> Result<()> {
        if self.have_sender {
            return Err(QueueError::State("sender written twice"));
        }
        self.envelope_record(rec::SENDER, sender.as_bytes())?;
        self.have_sender = true;
        Ok(())
    }

    /// Writes the MAIL FROM parameters.
    pub fn set_params(&mut self, params: &MailParams) -> Result<()> {
        self.envelope_record(rec::PARAMS, &format::encode_params(params))
    }

    /// Writes one recipient; its index is the number of recipients written before it.
    pub fn add_recipient(&mut self, recipient: &Recipient) -> Result<()> {
        self.envelope_record(rec::RECIPIENT, &format::encode_recipient(recipient))
    }

    /// Writes one attribute.
    pub fn add_attribute(&mut self, name: &str, value: &str) -> Result<()> {
        self.envelope_record(rec::ATTRIBUTE, &format::encode_attribute(name, value))
    }

    /// Writes a whole envelope: sender, parameters, attributes, recipients.
    pub fn write_envelope(&mut self, envelope: &Envelope) -> Result<()> {
        self.set_sender(&envelope.sender)?;
        if envelope.params != MailParams::default() {
            self.set_params(&envelope.params)?;
        }
        for a in &envelope.attributes {
            self.add_attribute(&a.name, &a.value)?;
        }
        for r in &envelope.recipients {
            self.add_recipient(r)?;
        }
        Ok(())
    }

    /// Appends message content (any bytes). At most one 64 KiB chunk is kept in memory.
    /// Exceeding the size limit removes the file and returns [`QueueError::TooLarge`].
    pub fn write_content(&mut self, mut data: &[u8]) -> Result<()> {
        if self.out.is_none() {
            return Err(QueueError::State("writer already failed or finished"));
        }
        let new_size = self.content_size + data.len() as u64;
        if let Some(limit) = self.limit
            && new_size > limit
        {
            self.fail();
            return Err(QueueError::TooLarge { limit });
        }
        self.content_size = new_size;
        if !self.pending.is_empty() {
            let take = (CONTENT_CHUNK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == CONTENT_CHUNK {
                self.flush_pending()?;
            }
        }
        while data.len() >= CONTENT_CHUNK {
            self.record(rec::CONTENT, &data[..CONTENT_CHUNK])?;
            data = &data[CONTENT_CHUNK..];
        }
        if !data.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(CONTENT_CHUNK);
            }
            self.pending.extend_from_slice(data);
        }
        Ok(())
    }

    /// Writes the end marker and flushes; the file is complete but not yet durable and still
    /// under its temporary name. Commit the result alone or through a [`GroupCommitter`].
    pub fn prepare(mut self) -> Result<PreparedFile> {
        if !self.have_sender {
            return Err(QueueError::State("no sender written"));
        }
        self.flush_pending()?;
        let end_at = self.pos;
        self.record(rec::END, &format::encode_end(end_at))?;
        let out = self
            .out
            .take()
            .ok_or(QueueError::State("writer already failed or finished"))?;
        let file = match out.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&self.temp_path);
                return Err(e.into_error().into());
            }
        };
        if let Err(e) = file.set_permissions(fs::Permissions::from_mode(0o700)) {
            let _ = fs::remove_file(&self.temp_path);
            return Err(e.into());
        }
        Ok(PreparedFile {
            file,
            layout: self.layout.clone(),
            queue: self.queue,
            temp_path: std::mem::take(&mut self.temp_path),
            id: self.id.clone(),
            inode: self.inode,
            size: self.pos,
            state: PreparedState::Temp,
        })
    }

    /// Finishes alone: end marker, fsync, rename to the id, fsync the directory. Returns the
    /// queue id only once the message is durable.
    pub fn finish(self) -> Result<QueueId> {
        self.prepare()?.commit()
    }

    /// Finishes through a group committer, blocking until the round covering this file is
    /// done. (An event loop uses [`GroupCommitter::submit`] instead.)
    pub fn finish_with(self, committer: &GroupCommitter) -> Result<QueueId> {
        committer.commit(self.prepare()?)
    }

    /// Abandons the message and removes its file.
    pub fn abort(mut self) {
        self.fail();
    }
}

impl std::fmt::Debug for QueueWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueWriter")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("temp_path", &self.temp_path)
            .field("content_size", &self.content_size)
            .finish()
    }
}

impl Drop for QueueWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.fail();
        }
    }
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_content(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PreparedState {
    Temp,
    Published,
    Committed,
}

/// A complete queue file not yet known to be durable, still under its temporary name.
/// Dropping it without committing removes it.
pub struct PreparedFile {
    file: File,
    layout: Layout,
    queue: Queue,
    temp_path: PathBuf,
    id: QueueId,
    inode: u64,
    size: u64,
    state: PreparedState,
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
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
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {}
            _ => return Err(e),
        }
    }
    // Fallback without renameat2: link refuses to replace, then drop the old name.
    fs::hard_link(from, to)?;
    fs::remove_file(from)
}

impl PreparedFile {
    /// The queue id the file will get.
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The queue the file goes into.
    pub fn queue(&self) -> Queue {
        self.queue
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Commits alone: rename, fdatasync, directory fsync (see the `commit` module for why
    /// the name comes before the data sync).
    pub fn commit(mut self) -> Result<QueueId> {
        let dir = self.publish()?;
        if let Err(e) = self.file.sync_data().and_then(|_| sync_dir(&dir)) {
            self.unpublish();
            return Err(e.into());
        }
        self.state = PreparedState::Committed;
        Ok(self.id.clone())
    }

    /// Renames the file to its queue-id name (making the hash directory if needed, picking a
    /// new time part if the name is taken). Returns the directory to fsync.
    pub(crate) fn publish(&mut self) -> Result<PathBuf> {
        let mut made_dir = false;
        for _ in 0..1000 {
            let path = self.layout.path_for(self.queue, &self.id);
            match rename_noreplace(&self.temp_path, &path) {
                Ok(()) => {
                    self.state = PreparedState::Published;
                    return Ok(self.layout.dir_for(self.queue, &self.id));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // A stale file with our name (copied from elsewhere): take a new time.
                    std::thread::sleep(Duration::from_micros(1));
                    self.id = QueueId::from_time(SystemTime::now(), self.inode);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !made_dir => {
                    self.layout.ensure_dir(self.queue, &self.id)?;
                    made_dir = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(QueueError::State("could not find a free queue id"))
    }

    /// After a failed directory sync: the message was not acknowledged, so remove it rather
    /// than risk delivering a message the client will send again.
    pub(crate) fn unpublish(&mut self) {
        if self.state == PreparedState::Published {
            let _ = fs::remove_file(self.layout.path_for(self.queue, &self.id));
            self.state = PreparedState::Committed;
        }
    }

    pub(crate) fn mark_committed(&mut self) {
        self.state = PreparedState::Committed;
    }
}

impl std::fmt::Debug for PreparedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedFile")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("size", &self.size)
            .finish()
    }
}

impl Drop for PreparedFile {
    fn drop(&mut self) {
        match self.state {
            PreparedState::Temp => {
                let _ = fs::remove_file(&self.temp_path);
            }
            PreparedState::Published => self.unpublish(),
            PreparedState::Committed => {}
        }
    }
}

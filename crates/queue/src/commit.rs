//! Group commit: one flusher thread makes many finished queue files durable per round.
//!
//! A round takes every [`PreparedFile`] submitted since the last round (up to `max_batch`),
//! then:
//!
//! 1. starts write-back of all of them at once (`sync_file_range(SYNC_FILE_RANGE_WRITE)` on
//!    Linux), so the disk sees one batch of writes;
//! 2. renames each (complete, end marker written) file to its queue-id name;
//! 3. `fdatasync`s each file, on up to `sync_threads` threads side by side so that the file
//!    system can merge the flushes into one journal commit — which on a journalling file
//!    system also carries the renames, so that
//! 4. the fsync of each distinct target directory, still done for every round because
//!    only it guarantees the names, usually finds nothing left to write;
//! 5. reports each file's result. Nothing is acknowledged before steps 3 and 4.
//!
//! Renaming before the data sync costs nothing in safety: the file is complete in memory
//! when it gets its name, and a name that survives a crash without its data is a file
//! without its end marker, which the reader never takes for a message (and no client was
//! told it was queued). It saves a journal commit per round: rename-after-sync made every
//! round pay for two.
//!
//! While a round runs, new submissions queue up and form the next round, so batching grows by
//! itself under load and costs nothing when idle.
//!
//! Two ways to learn the result:
//! - blocking: [`GroupCommitter::commit`] (or [`CommitHandle::wait`]), for threads;
//! - event loop: [`GroupCommitter::submit`] with a token; the result is queued and the
//!   committer's eventfd ([`GroupCommitter::notify_fd`]) becomes readable. Register it with mio
//!   (`SourceFd`, readable); on readiness call [`GroupCommitter::take_completions`], which also
//!   resets the eventfd. The event loop never blocks on a disk.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{QueueError, Result};
use crate::id::QueueId;
use crate::writer::PreparedFile;

/// Tuning for a [`GroupCommitter`].
#[derive(Clone, Debug)]
pub struct CommitterOptions {
    /// Most files in one round.
    pub max_batch: usize,
    /// After the first file of a round arrives, wait up to this long for more (0 = take only
    /// what is already queued; batching then comes from submissions made during the previous
    /// round).
    pub gather_delay: Duration,
    /// Start write-back of all files before the first `fdatasync` (Linux only).
    pub use_sync_file_range: bool,
    /// Threads that run a round's `fdatasync` calls side by side (1 = one after another).
    /// Concurrent flushes let the file system merge them into one journal commit.
    pub sync_threads: usize,
}

impl Default for CommitterOptions {
    fn default() -> Self {
        CommitterOptions {
            max_batch: 256,
            gather_delay: Duration::ZERO,
            use_sync_file_range: true,
            sync_threads: 4,
        }
    }
}

/// A finished commit reported to an event loop.
#[derive(Debug)]
pub struct Completion {
    /// The token given to [`GroupCommitter::submit`].
    pub token: u64,
    /// The durable queue id, or why the message is not queued.
    pub result: Result<QueueId>,
}

/// Counters, for tests and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Rounds run.
    pub rounds: u64,
    /// Files committed successfully.
    pub files: u64,
    /// Directory fsyncs issued.
    pub dir_syncs: u64,
}

enum Reply {
    Handle(Sender<Result<QueueId>>),
    Token(u64),
}

struct Job {
    file: PreparedFile,
    reply: Reply,
}

struct Shared {
    completions: Mutex<VecDeque<Completion>>,
    eventfd: OwnedFd,
    rounds: AtomicU64,
    files: AtomicU64,
    dir_syncs: AtomicU64,
}

impl Shared {
    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
        let _ = unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from a non-blocking eventfd we own.
        let _ = unsafe {
            libc::read(
                self.eventfd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

/// The result of a blocking-style submission.
pub struct CommitHandle {
    rx: Receiver<Result<QueueId>>,
}

impl CommitHandle {
    /// Waits for the round covering this file.
    pub fn wait(self) -> Result<QueueId> {
        self.rx.recv().unwrap_or(Err(QueueError::CommitterGone))
    }

    /// The result if the round is done, without blocking.
    pub fn try_wait(&self) -> Option<Result<QueueId>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(QueueError::CommitterGone)),
        }
    }
}

/// The per-process flusher. Dropping it finishes queued work and joins the thread.
pub struct GroupCommitter {
    tx: Option<Sender<Job>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommitter {
    /// Starts the flusher thread.
    pub fn start(options: CommitterOptions) -> Result<GroupCommitter> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let shared = Arc::new(Shared {
            completions: Mutex::new(VecDeque::new()),
            eventfd,
            rounds: AtomicU64::new(0),
            files: AtomicU64::new(0),
            dir_syncs: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("queue-commit".into())
            .spawn(move || flusher(rx, sh, options))?;
        Ok(GroupCommitter {
            tx: Some(tx),
            shared,
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        self.tx
            .as_ref()
            .ok_or(QueueError::CommitterGone)?
            .send(job)
            .map_err(|_| QueueError::CommitterGone)
    }

    /// Submits a file; the result comes back through [`CommitHandle`].
    pub fn submit_handle(&self, file: PreparedFile) -> Result<CommitHandle> {
        let (tx, rx) = mpsc::channel();
        self.send(Job {
            file,
            reply: Reply::Handle(tx),
        })?;
        Ok(CommitHandle { rx })
    }

    /// Submits a file and blocks until it is durable (or failed).
    pub fn commit(&self, file: PreparedFile) -> Result<QueueId> {
        self.submit_handle(file)?.wait()
    }

    /// Submits a file for an event loop: the result is queued under `token` and
    /// [`notify_fd`](Self::notify_fd) becomes readable.
    pub fn submit(&self, file: PreparedFile, token: u64) -> Result<()> {
        self.send(Job {
            file,
            reply: Reply::Token(token),
        })
    }

    /// The eventfd to watch for readability (non-blocking, close-on-exec).
    pub fn notify_fd(&self) -> BorrowedFd<'_> {
        self.shared.eventfd.as_fd()
    }

    /// Takes every queued completion and resets the eventfd.
    pub fn take_completions(&self) -> Vec<Completion> {
        // Reset first: a completion pushed after the drain re-signals.
        self.shared.clear();
        match self.shared.completions.lock() {
            Ok(mut q) => q.drain(..).collect(),
            Err(poisoned) => poisoned.into_inner().drain(..).collect(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            rounds: self.shared.rounds.load(Ordering::Relaxed),
            files: self.shared.files.load(Ordering::Relaxed),
            dir_syncs: self.shared.dir_syncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn gather(rx: &Receiver<Job>, options: &CommitterOptions) -> Option<Vec<Job>> {
    let first = rx.recv().ok()?;
    let mut batch = vec![first];
    let max = options.max_batch.max(1);
    let deadline = Instant::now() + options.gather_delay;
    while batch.len() < max {
        match rx.try_recv() {
            Ok(j) => batch.push(j),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(j) => batch.push(j),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
    }
    Some(batch)
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File) {
    // SAFETY: plain syscall on a valid descriptor; failure only loses the optimisation.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File) {}

/// Open queue directories, so that a round's directory sync is one `fsync` rather than
/// open, fsync, close. Queue directories are never removed while the suite runs; a
/// failed sync drops the descriptor, and the next round opens the directory again.
#[derive(Default)]
struct DirFds(Vec<(PathBuf, std::fs::File)>);

/// More distinct directories than this (deep hashed queues) are not kept open.
const DIR_FDS_MAX: usize = 64;

impl DirFds {
    fn sync(&mut self, dir: &std::path::Path) -> std::io::Result<()> {
        if let Some(pos) = self.0.iter().position(|(d, _)| d == dir) {
            let r = self.0[pos].1.sync_all();
            if r.is_err() {
                self.0.swap_remove(pos);
            }
            return r;
        }
        let f = std::fs::File::open(dir)?;
        f.sync_all()?;
        if self.0.len() < DIR_FDS_MAX {
            self.0.push((dir.to_path_buf(), f));
        }
        Ok(())
    }
}

fn flusher(rx: Receiver<Job>, shared: Arc<Shared>, options: CommitterOptions) {
    let mut dir_fds = DirFds::default();
    let pool = SyncPool::new(options.sync_threads);
    while let Some(batch) = gather(&rx, &options) {
        let results = run_round(batch, &shared, &options, &mut dir_fds, &pool);
        let mut any_token = false;
        {
            let mut q = match shared.completions.lock() {
                Ok(q) => q,
                Err(p) => p.into_inner(),
            };
            for (reply, result) in results {
                match reply {
                    Reply::Handle(tx) => {
                        let _ = tx.send(result);
                    }
                    Reply::Token(token) => {
                        q.push_back(Completion { token, result });
                        any_token = true;
                    }
                }
            }
        }
        if any_token {
            shared.signal();
        }
    }
}

/// Threads that `fdatasync` part of a round's files while the flusher does the rest. They
/// live as long as the flusher: starting threads every round costs a dozen system calls
/// each. Each one ends when its sender is dropped.
struct SyncPool {
    helpers: Vec<Helper>,
}

/// One helper: descriptors to sync go out, their results come back in order.
type Helper = (Sender<Vec<RawFd>>, Receiver<Vec<std::io::Result<()>>>);

fn fdatasync(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fd belongs to a file the flusher keeps open until every result is back.
    if unsafe { libc::fdatasync(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl SyncPool {
    fn new(threads: usize) -> SyncPool {
        let mut helpers = Vec::new();
        for _ in 1..threads.max(1) {
            let (tx, rx) = mpsc::channel::<Vec<RawFd>>();
            let (rtx, rrx) = mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("queue-sync".into())
                .spawn(move || {
                    while let Ok(fds) = rx.recv() {
                        let r: Vec<_> = fds.into_iter().map(fdatasync).collect();
                        if rtx.send(r).is_err() {
                            break;
                        }
                    }
                });
            if spawned.is_err() {
                break; // fewer helpers: the flusher syncs more itself
            }
            helpers.push((tx, rrx));
        }
        SyncPool { helpers }
    }

    /// `fdatasync` every file of the batch, split over the helpers and this thread.
    fn sync_all_data(&self, batch: &[Job]) -> Vec<std::io::Result<()>> {
        let fds: Vec<RawFd> = batch.iter().map(|j| j.file.file().as_raw_fd()).collect();
        let parts = (self.helpers.len() + 1).min(fds.len().max(1));
        if parts == 1 {
            return fds.into_iter().map(fdatasync).collect();
        }
        let per = fds.len().div_ceil(parts);
        let mut chunks = fds.chunks(per);
        let mine = chunks.next().unwrap_or(&[]);
        let mut sent = Vec::new();
        for (chunk, (tx, _)) in chunks.zip(&self.helpers) {
            let ok = tx.send(chunk.to_vec()).is_ok();
            sent.push((chunk.len(), ok));
        }
        let mut out: Vec<std::io::Result<()>> = mine.iter().map(|&fd| fdatasync(fd)).collect();
        for ((len, ok), (_, rx)) in sent.into_iter().zip(&self.helpers) {
            match ok.then(|| rx.recv().ok()).flatten() {
                Some(r) if r.len() == len => out.extend(r),
                _ => out
                    .extend((0..len).map(|_| Err(std::io::Error::other("fdatasync helper gone")))),
            }
        }
        out
    }
}

fn run_round(
    batch: Vec<Job>,
    shared: &Shared,
    options: &CommitterOptions,
    dir_fds: &mut DirFds,
    pool: &SyncPool,
) -> Vec<(Reply, Result<QueueId>)> {
    shared.rounds.fetch_add(1, Ordering::Relaxed);
    if options.use_sync_file_range && batch.len() > 1 {
        for job in &batch {
            start_writeback(job.file.file());
        }
    }
    // Phase 1: names, then data (fdatasync in parallel, so the file system can merge the
    // flushes, renames included, into one journal commit).
    let mut batch = batch;
    let published: Vec<Result<PathBuf>> = batch.iter_mut().map(|j| j.file.publish()).collect();
    let synced = pool.sync_all_data(&batch);
    let mut staged: Vec<(Job, Result<PathBuf>)> = Vec::with_capacity(batch.len());
    for ((mut job, published), synced) in batch.into_iter().zip(published).zip(synced) {
        let r = match (published, synced) {
            (Ok(dir), Ok(())) => Ok(dir),
            (Ok(_), Err(e)) => {
                job.file.unpublish();
                Err(e.into())
            }
            (Err(e), _) => Err(e),
        };
        staged.push((job, r));
    }
    // Phase 2: one fsync per directory.
    let mut dirs: Vec<(PathBuf, Option<QueueError>)> = Vec::new();
    for (_, r) in &staged {
        if let Ok(d) = r
            && !dirs.iter().any(|(x, _)| x == d)
        {
            shared.dir_syncs.fetch_add(1, Ordering::Relaxed);
            let err = dir_fds.sync(d).err().map(QueueError::from);
            dirs.push((d.clone(), err));
        }
    }
    let mut out = Vec::with_capacity(staged.len());
    for (mut job, r) in staged {
        let result = match r {
            Ok(dir) => match dirs
                .iter()
                .find(|(d, _)| *d == dir)
                .and_then(|(_, e)| e.as_ref())
            {
                Some(e) => {
                    job.file.unpublish();
                    Err(e.duplicate())
                }
                None => {
                    job.file.mark_committed();
                    shared.files.fetch_add(1, Ordering::Relaxed);
                    Ok(job.file.id().clone())
                }
            },
            Err(e) => Err(e),
        };
        out.push((job.reply, result));
        // job.file dropped here: a failed one removes its temporary file.
    }
    out
}

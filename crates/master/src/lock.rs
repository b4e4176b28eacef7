//! One master per configuration: an exclusive lock on `data_directory/master.lock` held
//! for master's lifetime (the kernel drops it when master dies, so a crash leaves nothing
//! stale behind), and Postfix's pid file `queue_directory/pid/master.pid` for tools.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const LOCK_NAME: &str = "master.lock";

pub struct InstanceLock {
    _file: File,
    pid_file: PathBuf,
}

pub enum LockError {
    /// Another master holds the lock.
    Running,
    Io(String),
}

impl InstanceLock {
    /// Takes the lock and writes the pid into the lock file and the pid file.
    pub fn acquire(data_dir: &Path, pid_file: &Path) -> Result<InstanceLock, LockError> {
        let path = data_dir.join(LOCK_NAME);
        let io = |what: &Path, e: std::io::Error| LockError::Io(format!("{}: {e}", what.display()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LockError::Running),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path, e)),
        }
        let pid = std::process::id();
        let line = format!("{pid:>10}\n");
        file.set_len(0).map_err(|e| io(&path, e))?;
        file.write_all(line.as_bytes()).map_err(|e| io(&path, e))?;
        if let Some(dir) = pid_file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = pid_file.with_extension("pid.tmp");
        std::fs::write(&tmp, &line).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, pid_file).map_err(|e| io(pid_file, e))?;
        Ok(InstanceLock {
            _file: file,
            pid_file: pid_file.to_path_buf(),
        })
    }

    /// Removes the pid file; the lock itself goes when the process exits.
    pub fn release(&self) {
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

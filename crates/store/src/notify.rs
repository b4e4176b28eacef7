//! Change notification for IDLE: one inotify descriptor per process watching `new/` and
//! `cur/` of the mailboxes its sessions have selected. Deliveries create files in `new/`,
//! other sessions rename (flags, `new/` → `cur/`) or unlink (expunge) in `cur/`; each
//! makes the descriptor readable, and [`Watcher::changed`] says which mailboxes moved.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Watches mailbox directories (reference-counted per mailbox).
pub struct Watcher {
    fd: OwnedFd,
    /// Watch descriptor → mailbox root.
    wds: HashMap<i32, PathBuf>,
    /// Mailbox root → (watch descriptors, users).
    roots: HashMap<PathBuf, (Vec<i32>, usize)>,
}

impl Watcher {
    pub fn new() -> std::io::Result<Watcher> {
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Watcher {
            fd,
            wds: HashMap::new(),
            roots: HashMap::new(),
        })
    }

    /// The descriptor that becomes readable on a change.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Starts (or counts one more user of) the watch on mailbox `root`.
    pub fn watch(&mut self, root: &Path) -> std::io::Result<()> {
        if let Some((_, n)) = self.roots.get_mut(root) {
            *n += 1;
            return Ok(());
        }
        let mut wds = Vec::new();
        for sub in ["new", "cur"] {
            let p = CString::new(root.join(sub).as_os_str().as_bytes())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            let mask = libc::IN_CREATE
                | libc::IN_MOVED_TO
                | libc::IN_MOVED_FROM
                | libc::IN_DELETE
                | libc::IN_ONLYDIR;
            // SAFETY: a valid descriptor and a NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), p.as_ptr(), mask) };
            if wd < 0 {
                let e = std::io::Error::last_os_error();
                for w in wds {
                    self.rm(w);
                }
                return Err(e);
            }
            self.wds.insert(wd, root.to_path_buf());
            wds.push(wd);
        }
        self.roots.insert(root.to_path_buf(), (wds, 1));
        Ok(())
    }

    fn rm(&mut self, wd: i32) {
        self.wds.remove(&wd);
        // SAFETY: removing a watch by number; a stale number only fails with EINVAL.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// One user of `root` is done with it.
    pub fn unwatch(&mut self, root: &Path) {
        let last = match self.roots.get_mut(root) {
            Some((_, n)) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if last && let Some((wds, _)) = self.roots.remove(root) {
            for w in wds {
                self.rm(w);
            }
        }
    }

    /// Drains the descriptor; returns the mailbox roots that changed.
    pub fn changed(&mut self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into a buffer we own, with its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            let mut off = 0;
            while off + head <= n {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with alignment.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                if let Some(root) = self.wds.get(&ev.wd)
                    && !out.contains(root)
                {
                    out.push(root.clone());
                }
                off += head + ev.len as usize;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_wakes() -> std::io::Result<()> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("M");
        for d in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let mut w = Watcher::new()?;
        w.watch(&root)?;
        w.watch(&root)?;
        assert!(w.changed().is_empty());
        std::fs::write(root.join("new/x"), b"hi")?;
        assert_eq!(w.changed(), vec![root.clone()]);
        w.unwatch(&root);
        w.unwatch(&root);
        std::fs::write(root.join("new/y"), b"hi")?;
        assert!(w.changed().is_empty());
        Ok(())
    }
}

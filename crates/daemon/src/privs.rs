//! Running delivery work with a recipient's or mailbox owner's rights, for delivery agents
//! that keep root (master.cf `unprivileged=n`: local, virtual). Each group of deliveries for
//! one identity runs in a forked child that switches irrevocably (`setgroups`, `setgid`,
//! `setuid`) before it touches a mailbox, and reports its results over a pipe as one
//! [`DeliveryReply`] frame: a bug or a hostile mailbox can then hurt only that user's files.
//! Not running as root (the unprivileged quick start), the work runs in-process as the
//! current user. The caller must be single-threaded when it calls [`run_as`] (the agents'
//! server loops run one client at a time).

use std::fs::File;
use std::os::fd::OwnedFd;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, fork, geteuid, setgid, setgroups, setuid};
use oxipost_ipc::{DeliveryReply, RcptResult, read_frame, write_frame};

/// The rights one delivery runs with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (Postfix sets only the primary group; a group-writable mail
    /// spool adds its group).
    pub groups: Vec<u32>,
}

impl Identity {
    pub fn user(uid: u32, gid: u32) -> Identity {
        Identity {
            uid,
            gid,
            groups: vec![gid],
        }
    }
}

/// Whether the effective user is root: 0 not looked up yet, 1 yes, 2 no. Forked children
/// inherit the answer, which holds until they switch users (every switch here resets it).
static ROOT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

fn forget_root() {
    ROOT.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// True when deliveries must switch to the recipient (asked per delivery: remembered, as
/// `geteuid` is a system call).
pub fn privileged() -> bool {
    use std::sync::atomic::Ordering;
    match ROOT.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let root = geteuid().is_root();
            ROOT.store(if root { 1 } else { 2 }, Ordering::Relaxed);
            root
        }
    }
}

/// For code that changes the process's users outside this module (the worker's privilege
/// drop): the next [`privileged`] looks again.
pub fn users_changed() {
    forget_root();
}

/// Runs `work` with the rights of `id`: in a forked child when this process is root, in
/// process otherwise. `Err` when the child could not be run or died without answering; the
/// caller then defers the recipients it covered.
pub fn run_as<F>(id: &Identity, work: F) -> Result<Vec<RcptResult>, String>
where
    F: FnOnce() -> Vec<RcptResult>,
{
    if !privileged() {
        return Ok(work());
    }
    // Held log lines would otherwise be written twice: by the child too.
    oxipost_log::flush();
    let (rd, wr) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: callers are single-threaded when they fork (see the module documentation), so
    // the child may
    // allocate and run ordinary Rust code before it exits with _exit.
    match unsafe { fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            drop(rd);
            // The child ends with _exit: nothing it logs may wait in memory.
            oxipost_log::release();
            child(id, wr, work)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(wr);
            let mut pipe = File::from(rd);
            let reply: std::io::Result<Option<DeliveryReply>> = read_frame(&mut pipe);
            drop(pipe);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            match reply {
                Ok(Some(r)) => Ok(r.results),
                _ => Err(match status {
                    Ok(WaitStatus::Exited(_, 3)) => {
                        format!("cannot switch to uid {} gid {}", id.uid, id.gid)
                    }
                    Ok(s) => format!("delivery process ended without a result: {s:?}"),
                    Err(e) => format!("waitpid: {e}"),
                }),
            }
        }
    }
}

fn child<F>(id: &Identity, wr: OwnedFd, work: F) -> !
where
    F: FnOnce() -> Vec<RcptResult>,
{
    if let Err(e) = switch(id) {
        oxipost_log::warning!("cannot switch to uid {} gid {}: {e}", id.uid, id.gid);
        // SAFETY: _exit ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(3) }
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    let code = match r {
        Ok(results) => {
            let mut pipe = File::from(wr);
            match write_frame(&mut pipe, &DeliveryReply { results }) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }
        Err(_) => 2,
    };
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

/// For a process that keeps root to become one user later (pop3d serving one client per
/// process, as Dovecot's mail processes): runs with the effective ids of `uid`/`gid` (only
/// that group) until [`become_user`], keeping root as the real and saved user so that the
/// switch stays possible. Not an isolation boundary on its own: it keeps file access before
/// login to what `mail_owner` may touch.
pub fn lower(uid: u32, gid: u32) -> Result<(), String> {
    use nix::unistd::{setegid, seteuid};
    forget_root();
    setgroups(&[Gid::from_raw(gid)]).map_err(|e| format!("setgroups: {e}"))?;
    setegid(Gid::from_raw(gid)).map_err(|e| format!("setegid: {e}"))?;
    seteuid(Uid::from_raw(uid)).map_err(|e| format!("seteuid: {e}"))?;
    Ok(())
}

/// For a mail-reading daemon (pop3d, imapd) still root after its start sequence (master.cf's
/// unprivileged column says `n`): serve one client per process, as Dovecot's mail processes,
/// with `mail_owner`'s effective ids until the login, then [`become_user`] the logged-in user
/// before opening the mailbox, so system users' own mode-700 Maildirs are read with their
/// rights. The process ends with its client (`max_use` 1). Returns `mail_owner`'s uid and gid
/// (the identity for users the user database gives no uid, or uid 0). A multi-client process
/// cannot change users per session, so this mode is one client per process.
pub fn per_user_mode(worker: &mut crate::Worker) -> Result<(u32, u32), String> {
    let name = worker.config.get("mail_owner").unwrap_or_default();
    let owner = match nix::unistd::User::from_name(name.trim()) {
        Ok(Some(u)) if !u.uid.is_root() => u,
        _ => return Err(format!("mail_owner {name}: no such unprivileged user")),
    };
    lower(owner.uid.as_raw(), owner.gid.as_raw())
        .map_err(|e| format!("cannot run as mail_owner {name} until login: {e}"))?;
    worker.max_use = 1;
    Ok((owner.uid.as_raw(), owner.gid.as_raw()))
}

/// The identity a per-user process becomes for a user the user database names with
/// `uid`/`gid`: uid 0 (or none) never; `mail_owner`'s (`owner`) instead.
pub fn login_identity(uid: u32, gid: u32, owner: (u32, u32)) -> Identity {
    match uid {
        0 => Identity::user(owner.0, owner.1),
        _ => Identity::user(uid, gid),
    }
}

/// Irrevocably becomes `id`, from root or from a process [`lower`]ed while root.
pub fn become_user(id: &Identity) -> Result<(), String> {
    forget_root();
    if !geteuid().is_root() && nix::unistd::getuid().is_root() {
        nix::unistd::seteuid(Uid::from_raw(0)).map_err(|e| format!("seteuid: {e}"))?;
    }
    switch(id)
}

/// Irrevocably becomes `id` (from root).
fn switch(id: &Identity) -> Result<(), String> {
    forget_root();
    let groups: Vec<Gid> = id.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    setgid(Gid::from_raw(id.gid)).map_err(|e| format!("setgid: {e}"))?;
    setuid(Uid::from_raw(id.uid)).map_err(|e| format!("setuid: {e}"))?;
    if id.uid != 0 && setuid(Uid::from_raw(0)).is_ok() {
        return Err("root privileges could be regained".into());
    }
    Ok(())
}

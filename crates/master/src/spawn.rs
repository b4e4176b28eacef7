//! Starting one worker: fork and exec of the service's program with the descriptors,
//! arguments and environment of the master <-> worker protocol ([`oxipost_daemon::proto`]).
//! An exec failure (missing or unexecutable program) is reported synchronously as an
//! error, so master can log it once and throttle the service instead of reaping a child.

use crate::conf::Settings;
use oxipost_config::Service;
use oxipost_daemon::proto::{ENV_GENERATION, ENV_LISTEN_FDS, LISTEN_FD_BASE, STATUS_FD, WATCH_FD};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The program a master.cf command names: absolute, or relative to `daemon_directory`.
pub fn program_path(settings: &Settings, command: &str) -> PathBuf {
    let p = Path::new(command);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        settings.daemon_directory.join(p)
    }
}

/// The argument vector after argv[0], as the protocol defines it.
pub fn worker_args(entry: &Service, root: bool) -> Vec<String> {
    let mut args = vec![
        "-n".to_string(),
        entry.name.clone(),
        "-t".to_string(),
        entry.kind.as_str().to_string(),
    ];
    // Privilege drops and chroot need root; an unprivileged master runs everything as
    // its own user, so the flags would only ask for the impossible.
    if root && entry.is_unprivileged() {
        args.push("-u".into());
    }
    if root && entry.is_chrooted() {
        args.push("-r".into());
    }
    for (n, v) in &entry.overrides {
        args.push("-o".into());
        args.push(format!("{n}={v}"));
    }
    args.extend(entry.args.iter().cloned());
    args
}

/// Descriptors a worker receives.
pub struct Fds<'a> {
    pub status_write: RawFd,
    pub watch_read: RawFd,
    pub listen: &'a [RawFd],
}

/// Forks and execs one worker; returns its pid.
pub fn spawn(
    settings: &Settings,
    entry: &Service,
    generation: u32,
    fds: Fds<'_>,
    root: bool,
) -> std::io::Result<u32> {
    let program = program_path(settings, &entry.command);
    let mut cmd = Command::new(&program);
    cmd.arg0(&entry.command)
        .args(worker_args(entry, root))
        .env_clear()
        .stdin(Stdio::null());
    for item in &settings.import_environment {
        match item.split_once('=') {
            Some((n, v)) => {
                cmd.env(n, v);
            }
            None => {
                if let Some(v) = std::env::var_os(item) {
                    cmd.env(item, v);
                }
            }
        }
    }
    cmd.env("MAIL_CONFIG", &settings.config_dir)
        .env(ENV_LISTEN_FDS, fds.listen.len().to_string())
        .env(ENV_GENERATION, generation.to_string());
    let mut sources = vec![fds.status_write, fds.watch_read];
    sources.extend_from_slice(fds.listen);
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // async-signal-safe functions (fcntl, dup2) on descriptors it owns there; it does not
    // allocate (the vector was built before the fork).
    unsafe {
        cmd.pre_exec(move || move_fds(&sources));
    }
    let child = cmd.spawn()?;
    // Dropping std's Child neither waits nor kills: master reaps with waitpid.
    Ok(child.id())
}

/// Places `sources[i]` at descriptor `STATUS_FD + i` (3, 4, 5...). Every source is first
/// copied above the target range (close-on-exec) so that no target overwrites a source
/// that has not been moved yet; dup2 then clears close-on-exec on the targets.
fn move_fds(sources: &[RawFd]) -> std::io::Result<()> {
    debug_assert_eq!(WATCH_FD, STATUS_FD + 1);
    debug_assert_eq!(LISTEN_FD_BASE, STATUS_FD + 2);
    let floor = STATUS_FD + sources.len() as RawFd + 1;
    let mut tmp = [0 as RawFd; 64];
    if sources.len() > tmp.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
    }
    for (i, &src) in sources.iter().enumerate() {
        // SAFETY: fcntl on a descriptor number; failure is reported.
        let fd = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, floor) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        tmp[i] = fd;
    }
    for (i, &fd) in tmp[..sources.len()].iter().enumerate() {
        // SAFETY: dup2 between descriptor numbers of this (child) process.
        if unsafe { libc::dup2(fd, STATUS_FD + i as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

//! The start sequence every daemon runs, in one order (as OpenSMTPD and Postfix do):
//! arguments from master -> configuration with `-o` overrides -> logging (opened before any
//! chroot) -> inherited descriptors -> chroot -> drop privileges -> serve.

use crate::args::{self, ServiceArgs};
use crate::proto::{self, Status, StatusRecord};
use oxipost_config::Config;
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

/// A listening endpoint inherited from master.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    /// A fifo opened for reading (trigger services).
    Fifo(File),
}

impl Listener {
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Fifo(f) => f.as_raw_fd(),
        }
    }

    /// Classifies an inherited descriptor by asking the kernel what it is.
    fn from_fd(fd: OwnedFd) -> Result<Listener, String> {
        use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
        let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("fstat fd: {e}"))?;
        if (st.st_mode & libc::S_IFMT) == libc::S_IFIFO {
            return Ok(Listener::Fifo(File::from(fd)));
        }
        let addr: SockaddrStorage =
            getsockname(fd.as_raw_fd()).map_err(|e| format!("getsockname: {e}"))?;
        match addr.family() {
            Some(AddressFamily::Inet) | Some(AddressFamily::Inet6) => {
                Ok(Listener::Tcp(TcpListener::from(fd)))
            }
            Some(AddressFamily::Unix) => Ok(Listener::Unix(UnixListener::from(fd))),
            other => Err(format!("inherited socket of unsupported family {other:?}")),
        }
    }
}

/// One worker process's view of itself: its service, configuration and descriptors.
#[derive(Debug)]
pub struct Worker {
    pub program: String,
    pub service: ServiceArgs,
    pub config: Config,
    pub generation: u32,
    pub listeners: Vec<Listener>,
    status: Option<File>,
    /// Readable (EOF) once master is gone.
    pub watch: Option<OwnedFd>,
    pub max_use: u64,
    pub max_idle: Duration,
}

impl Worker {
    /// Runs the start sequence up to (not including) the privilege drop. Any failure is
    /// logged as `fatal:` and ends the process: master sees the exit and throttles.
    pub fn start(program: &str) -> Worker {
        match Worker::try_start(program) {
            Ok(w) => w,
            Err(e) => {
                // Logging may not be set up yet: stderr still reaches master's log file.
                oxipost_log::init_tool(program);
                oxipost_log::fatal!("{e}")
            }
        }
    }

    fn try_start(program: &str) -> Result<Worker, String> {
        // Claim master's fixed descriptors before anything else opens a file: otherwise a
        // log socket could land on fd 3 and receive status records.
        set_cloexec(proto::STATUS_FD);
        set_cloexec(proto::WATCH_FD);
        // SAFETY: fixed descriptors from master; nothing else in this process owns them.
        let status =
            fd_is_open(proto::STATUS_FD).then(|| unsafe { File::from_raw_fd(proto::STATUS_FD) });
        let watch =
            fd_is_open(proto::WATCH_FD).then(|| unsafe { OwnedFd::from_raw_fd(proto::WATCH_FD) });
        let listen_fds: i32 = std::env::var(proto::ENV_LISTEN_FDS)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                format!(
                    "{program}: must be started by master ({} not set)",
                    proto::ENV_LISTEN_FDS
                )
            })?;
        let mut inherited = Vec::new();
        for i in 0..listen_fds {
            let fd = proto::LISTEN_FD_BASE + i;
            if !fd_is_open(fd) {
                return Err(format!("listening descriptor {fd} is not open"));
            }
            set_cloexec(fd);
            // SAFETY: master hands these descriptors over at exec; nothing else owns them.
            inherited.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let service = args::parse(&argv)?;
        let (dir, explicit) = Config::resolve_dir(None);
        let mut config = Config::load(&dir, explicit).map_err(|e| e.to_string())?;
        for (n, v) in &service.overrides {
            config.set_override(n, v);
        }
        config.set_override("service_name", &service.name);
        config.set_override("process_name", program);
        config.set_override("process_id", &std::process::id().to_string());
        init_logging(program, &config);
        let generation = std::env::var(proto::ENV_GENERATION)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let listeners = inherited
            .into_iter()
            .map(Listener::from_fd)
            .collect::<Result<Vec<_>, _>>()?;
        let max_use = config.get_int("max_use").unwrap_or(100).max(0) as u64;
        let max_idle = config
            .get_time("max_idle")
            .unwrap_or(Duration::from_secs(100));
        install_panic_hook();
        Ok(Worker {
            program: program.to_string(),
            service,
            config,
            generation,
            listeners,
            status,
            watch,
            max_use,
            max_idle,
        })
    }

    /// A worker assembled by hand (tests, or a program run outside master).
    pub fn from_parts(program: &str, config: Config, listeners: Vec<Listener>) -> Worker {
        Worker {
            program: program.to_string(),
            service: ServiceArgs::default(),
            config,
            generation: 0,
            listeners,
            status: None,
            watch: None,
            max_use: 0,
            max_idle: Duration::ZERO,
        }
    }

    /// Tells master whether this worker is idle or busy. Failure means master is gone;
    /// the watch descriptor will say so, so it is not an error here.
    pub fn report(&mut self, status: Status) {
        if let Some(f) = self.status.as_mut() {
            let rec = StatusRecord {
                pid: oxipost_log::pid(),
                generation: self.generation,
                status,
            };
            let _ = f.write_all(&rec.encode());
        }
    }

    /// chroot (`-r`) and switch to `mail_owner` (`-u`), irrevocably, when running as root.
    /// A worker started by an ordinary user stays that user (the unprivileged quick start).
    pub fn drop_privileges(&self) -> Result<(), String> {
        use nix::unistd::{Gid, Uid, User, chdir, chroot, geteuid, setgid, setgroups, setuid};
        if !geteuid().is_root() {
            return Ok(());
        }
        let user = if self.service.unprivileged {
            let name = self.config.get("mail_owner").map_err(|e| e.to_string())?;
            let u = User::from_name(&name)
                .map_err(|e| format!("look up mail_owner {name}: {e}"))?
                .ok_or_else(|| format!("mail_owner {name}: no such user"))?;
            if u.uid.is_root() {
                return Err(format!("mail_owner {name} must not be root"));
            }
            Some(u)
        } else {
            None
        };
        if self.service.chroot {
            let dir = self
                .config
                .get("queue_directory")
                .map_err(|e| e.to_string())?;
            chroot(dir.as_str()).map_err(|e| format!("chroot {dir}: {e}"))?;
            chdir("/").map_err(|e| format!("chdir /: {e}"))?;
        }
        if let Some(u) = user {
            crate::privs::users_changed();
            setgroups(&[u.gid]).map_err(|e| format!("setgroups: {e}"))?;
            setgid(u.gid).map_err(|e| format!("setgid: {e}"))?;
            setuid(u.uid).map_err(|e| format!("setuid: {e}"))?;
            // Irrevocable: getting root back must fail.
            if setuid(Uid::from_raw(0)).is_ok() || setgid(Gid::from_raw(0)).is_ok() {
                return Err("privileges could be regained after setuid".into());
            }
        }
        Ok(())
    }
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only asks whether the descriptor exists.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Inherited descriptors must not leak into programs a daemon runs (pipes, commands).
fn set_cloexec(fd: RawFd) {
    // SAFETY: F_SETFD on a descriptor of this process; no memory is passed.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

/// Logging per main.cf: `syslog_name/program`, syslog when `/dev/log` exists, and
/// `maillog_file` when set.
pub fn init_logging(program: &str, config: &Config) {
    oxipost_log::init(oxipost_log::Options {
        syslog_name: config
            .get("syslog_name")
            .unwrap_or_else(|_| "oxipost".into()),
        program: program.to_string(),
        facility: config
            .get("syslog_facility")
            .unwrap_or_else(|_| "mail".into()),
        syslog: std::path::Path::new("/dev/log").exists(),
        maillog_file: config.get("maillog_file").unwrap_or_default(),
        stderr: false,
    });
}

/// Logs a panic as Postfix logs `panic:` lines; the skeleton then closes the connection at
/// fault (or the process exits and master replaces it).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        oxipost_log::log(oxipost_log::Level::Panic, format_args!("{msg}{at}"));
    }));
}

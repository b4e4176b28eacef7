//! The event loop: one mio poll for signals, status pipes and listening endpoints, with
//! the poll timeout as the only timer (wakeups, throttle ends). Workers are started on
//! demand and reaped here; shutdown leaves no child behind.

use crate::conf::{self, Loaded, Settings};
use crate::service::{Child, ServiceState};
use crate::signals::{self, Event};
use crate::{lock::InstanceLock, spawn, status};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use oxipost_config::ServiceType;
use oxipost_daemon::proto::TRIGGER_WAKEUP;
use oxipost_log::{error, info, warning};
use signal_hook_mio::v1_0::Signals;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

const SIGNAL_TOKEN: Token = Token(usize::MAX);
/// Tokens per service: slot 0 is the status pipe, 1.. the listening descriptors.
const SLOTS: usize = 64;
/// How long a stop waits for workers to finish before killing them.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Postfix warns about a service at its process limit at most this often.
const LIMIT_WARN_INTERVAL: Duration = Duration::from_secs(1000);

/// A worker of a previous configuration (or of a removed service): it was asked to exit
/// and is only waited for.
pub struct Retired {
    pub program: String,
}

pub struct Supervisor {
    pub poll: Poll,
    signals: Signals,
    pub loaded: Loaded,
    pub services: BTreeMap<usize, ServiceState>,
    pub next_id: usize,
    pub generation: u32,
    watch_read: OwnedFd,
    watch_write: Option<OwnedFd>,
    pub retired: HashMap<u32, Retired>,
    started: u64,
    dirty: bool,
    root: bool,
    lock: InstanceLock,
}

enum Exit {
    Stop,
    Abort,
}

impl Supervisor {
    /// Takes ownership of the opened services; creates the poll (master never forks
    /// itself after this point: workers are fork+exec'ed).
    pub fn new(
        loaded: Loaded,
        opened: Vec<ServiceState>,
        lock: InstanceLock,
    ) -> std::io::Result<Supervisor> {
        let poll = Poll::new()?;
        let mut signals = signals::install()?;
        poll.registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;
        let (watch_read, watch_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut sup = Supervisor {
            poll,
            signals,
            loaded,
            services: BTreeMap::new(),
            next_id: 0,
            generation: 1,
            watch_read,
            watch_write: Some(watch_write),
            retired: HashMap::new(),
            started,
            dirty: true,
            root: conf::is_root(),
            lock,
        };
        for s in opened {
            sup.add_service(s)?;
        }
        Ok(sup)
    }

    pub fn settings(&self) -> &Settings {
        &self.loaded.settings
    }

    /// Registers a service's status pipe and arms its wakeup timer.
    pub fn add_service(&mut self, mut s: ServiceState) -> std::io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let fd = s.status_read.as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(id * SLOTS), Interest::READABLE)?;
        if let Some(w) = s.conf.entry.wakeup {
            s.next_wakeup = Some(Instant::now() + Duration::from_secs(u64::from(w.seconds)));
        }
        self.services.insert(id, s);
        self.update_listening(id);
        Ok(())
    }

    /// Deregisters everything of a service and asks its workers to exit.
    pub fn remove_service(&mut self, id: usize) -> Option<ServiceState> {
        self.set_listening(id, false);
        let mut s = self.services.remove(&id)?;
        let fd = s.status_read.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        self.retire_children(&mut s);
        self.dirty = true;
        Some(s)
    }

    /// SIGTERM to every worker of `s`; they are waited for as retired children.
    pub fn retire_children(&mut self, s: &mut ServiceState) {
        let program = self.program(s);
        for (pid, _) in s.children.drain() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            self.retired.insert(
                pid,
                Retired {
                    program: program.clone(),
                },
            );
        }
        self.dirty = true;
    }

    fn program(&self, s: &ServiceState) -> String {
        spawn::program_path(self.settings(), &s.conf.entry.command)
            .display()
            .to_string()
    }

    /// Registers or deregisters the listening descriptors of a service.
    pub fn set_listening(&mut self, id: usize, on: bool) {
        let Some(s) = self.services.get_mut(&id) else {
            return;
        };
        if s.listening == on {
            return;
        }
        for (i, fd) in s.listen_raw().iter().enumerate() {
            let token = Token(id * SLOTS + 1 + i);
            let r = if on {
                self.poll
                    .registry()
                    .register(&mut SourceFd(fd), token, Interest::READABLE)
            } else {
                self.poll.registry().deregister(&mut SourceFd(fd))
            };
            if let Err(e) = r {
                error!("service {}: poll registration: {e}", s.key());
            }
        }
        s.listening = on;
    }

    fn update_listening(&mut self, id: usize) {
        let default = self.settings().default_process_limit;
        if let Some(s) = self.services.get(&id) {
            let want = s.wants_listen(default);
            self.set_listening(id, want);
        }
    }

    /// Runs until a stop signal; returns the process exit status.
    pub fn run(mut self) -> i32 {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()) + Duration::from_millis(1));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    error!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            let mut exit = None;
            for ev in events.iter() {
                let t = ev.token();
                if t == SIGNAL_TOKEN {
                    for sig in signals::pending(&mut self.signals) {
                        match sig {
                            Event::Child => self.reap(),
                            Event::Reload => crate::reload::reload(&mut self),
                            Event::Stop(n) => {
                                info!("terminating on signal {n}");
                                exit = Some(Exit::Stop);
                            }
                            Event::Abort(n) => {
                                info!("aborting on signal {n}");
                                exit = Some(Exit::Abort);
                            }
                        }
                    }
                    continue;
                }
                let (id, slot) = (t.0 / SLOTS, t.0 % SLOTS);
                if slot == 0 {
                    if let Some(s) = self.services.get_mut(&id)
                        && s.read_status()
                    {
                        self.dirty = true;
                    }
                } else {
                    self.client_waiting(id);
                }
                self.update_listening(id);
            }
            if let Some(how) = exit {
                return self.shutdown(how);
            }
            self.timers();
            let ids: Vec<usize> = self.services.keys().copied().collect();
            for id in ids {
                self.update_listening(id);
            }
            if self.dirty {
                self.write_status();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.services
            .values()
            .flat_map(|s| [s.throttled_until, s.next_wakeup])
            .flatten()
            .min()
    }

    /// A listening endpoint of service `id` is readable: start one worker.
    fn client_waiting(&mut self, id: usize) {
        let default = self.settings().default_process_limit;
        let Some(s) = self.services.get(&id) else {
            return;
        };
        if !s.wants_listen(default) {
            return;
        }
        let listen = s.listen_raw();
        let fds = spawn::Fds {
            status_write: s.status_write.as_raw_fd(),
            watch_read: self.watch_read.as_raw_fd(),
            listen: &listen,
        };
        let result = spawn::spawn(
            self.settings(),
            &s.conf.entry,
            self.generation,
            fds,
            self.root,
        );
        let program = self.program(s);
        let key = s.key();
        match result {
            Ok(pid) => {
                if let Some(s) = self.services.get_mut(&id) {
                    let limit = s.limit(self.loaded.settings.default_process_limit) as usize;
                    if limit > 0
                        && s.total() + 1 >= limit
                        && s.limit_warned
                            .is_none_or(|t| t.elapsed() >= LIMIT_WARN_INTERVAL)
                    {
                        s.limit_warned = Some(Instant::now());
                        warning!(
                            "service {key} has reached its process limit {limit}: new clients may experience noticeable delays"
                        );
                    }
                    s.children.insert(
                        pid,
                        Child {
                            generation: self.generation,
                            available: true,
                            reported: false,
                            use_count: 0,
                        },
                    );
                }
            }
            Err(e) => {
                warning!("service {key}: cannot execute {program}: {e} -- throttling");
                self.throttle(id);
            }
        }
        self.dirty = true;
    }

    fn throttle(&mut self, id: usize) {
        let t = self.settings().service_throttle_time;
        if let Some(s) = self.services.get_mut(&id) {
            s.throttled_until = Some(Instant::now() + t);
        }
        self.set_listening(id, false);
        self.dirty = true;
    }

    /// Ends throttles that expired and sends due wakeups.
    fn timers(&mut self) {
        let now = Instant::now();
        let ids: Vec<usize> = self.services.keys().copied().collect();
        for id in ids {
            let Some(s) = self.services.get_mut(&id) else {
                continue;
            };
            if s.throttled_until.is_some_and(|t| t <= now) {
                s.throttled_until = None;
                self.dirty = true;
            }
            if let (Some(due), Some(w)) = (s.next_wakeup, s.conf.entry.wakeup)
                && due <= now
            {
                s.next_wakeup = Some(now + Duration::from_secs(u64::from(w.seconds)));
                if s.throttled_until.is_none() {
                    wakeup(s);
                }
            }
        }
    }

    /// Reaps every exited child, logs abnormal ends as Postfix does, throttles a service
    /// whose worker died before it ever reported.
    fn reap(&mut self) {
        loop {
            let st = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => st,
            };
            let (pid, abnormal, text) = match st {
                WaitStatus::Exited(pid, code) => (pid, code != 0, format!("exit status {code}")),
                WaitStatus::Signaled(pid, sig, _) => {
                    (pid, true, format!("killed by signal {}", sig as i32))
                }
                _ => continue,
            };
            let raw = pid.as_raw() as u32;
            if let Some(r) = self.retired.remove(&raw) {
                if abnormal {
                    warning!("process {} pid {raw} {text}", r.program);
                }
                continue;
            }
            let found = self
                .services
                .iter()
                .find(|(_, s)| s.children.contains_key(&raw))
                .map(|(id, _)| *id);
            let Some(id) = found else {
                continue;
            };
            let Some(s) = self.services.get_mut(&id) else {
                continue;
            };
            let child = s.children.remove(&raw);
            self.dirty = true;
            let program = self.program(&self.services[&id]);
            let key = self.services[&id].key();
            if abnormal {
                warning!("process {program} pid {raw} {text}");
                if child.is_some_and(|c| !c.reported) {
                    let secs = self.settings().service_throttle_time.as_secs();
                    warning!(
                        "service {key}: {program}: bad command startup -- throttling for {secs}s"
                    );
                    self.throttle(id);
                }
            }
        }
    }

    /// Rewrites master's status file (for `mailctl status`).
    pub fn write_status(&mut self) {
        self.dirty = false;
        let settings = self.settings().clone();
        let list: Vec<&ServiceState> = self.services.values().collect();
        let r = status::write(
            &settings.data_directory,
            self.started,
            self.generation,
            settings.default_process_limit,
            &list,
            |s| {
                spawn::program_path(&settings, &s.conf.entry.command)
                    .display()
                    .to_string()
            },
        );
        if let Err(e) = r {
            warning!("cannot write the status file: {e}");
        }
    }

    /// Stops every worker (SIGTERM, or SIGKILL when aborting), waits up to
    /// [`STOP_GRACE`], kills what is left, removes the pid file.
    fn shutdown(mut self, how: Exit) -> i32 {
        let ids: Vec<usize> = self.services.keys().copied().collect();
        let mut pids: Vec<u32> = self.retired.keys().copied().collect();
        for id in ids {
            self.set_listening(id, false);
            if let Some(s) = self.services.get_mut(&id) {
                pids.extend(s.children.keys().copied());
                s.listen.clear();
            }
        }
        let first = match how {
            Exit::Stop => Signal::SIGTERM,
            Exit::Abort => Signal::SIGKILL,
        };
        for &p in &pids {
            let _ = kill(Pid::from_raw(p as i32), first);
        }
        // Workers also see end-of-file on the watch pipe.
        self.watch_write = None;
        let deadline = Instant::now() + STOP_GRACE;
        let mut left: Vec<u32> = pids;
        while !left.is_empty() {
            left.retain(|&p| {
                !matches!(
                    waitpid(Pid::from_raw(p as i32), Some(WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_)
                )
            });
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for &p in &left {
                    warning!("process pid {p} did not stop: killing it");
                    let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
                    let _ = waitpid(Pid::from_raw(p as i32), None);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        status::remove(&self.settings().data_directory);
        self.lock.release();
        0
    }
}

/// Wakes a timer service: connects to its socket (or opens its fifo) and writes `W`.
/// Failures are not logged: a busy or throttled service is woken at the next interval.
fn wakeup(s: &ServiceState) {
    use std::io::Write;
    let Some(path) = s.conf.endpoint.path() else {
        return;
    };
    match s.conf.entry.kind {
        ServiceType::Unix => {
            use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
            let Ok(fd) = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            ) else {
                return;
            };
            let Ok(addr) = UnixAddr::new(path.as_path()) else {
                return;
            };
            if connect(fd.as_raw_fd(), &addr).is_ok() {
                let _ = std::fs::File::from(fd).write_all(&[TRIGGER_WAKEUP]);
            }
        }
        ServiceType::Fifo => {
            use std::os::unix::fs::OpenOptionsExt;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
            {
                let _ = f.write_all(&[TRIGGER_WAKEUP]);
            }
        }
        _ => {}
    }
}

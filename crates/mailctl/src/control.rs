//! Talking to a running master: whether one runs (its instance lock in data_directory is
//! held), its pid, start/stop/abort/reload, the status file, the qmgr trigger.

use crate::setup::Setup;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use oxipost_log::info;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Must match master's `lock::LOCK_NAME` and `status::STATUS_NAME` (see master(8)).
const LOCK_NAME: &str = "master.lock";
const STATUS_NAME: &str = "master.status";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// True when a master holds the instance lock of this configuration. A pid file left by
/// a crashed master does not count: the kernel released its lock.
pub fn running(s: &Setup) -> bool {
    let Ok(f) = std::fs::File::open(s.data_directory.join(LOCK_NAME)) else {
        return false;
    };
    matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1)
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// The pid of the running master: the pid file, else the lock file (both written by it).
pub fn master_pid(s: &Setup) -> Option<i32> {
    [s.pid_file.clone(), s.data_directory.join(LOCK_NAME)]
        .iter()
        .filter_map(|p| read_pid(p))
        .find(|&p| alive(p))
}

/// Waits until the instance lock is released (master has exited).
fn wait_stopped(s: &Setup, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if !running(s) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !running(s)
}

/// `start`: master detached in its own session; waits until it reports that its
/// endpoints are open (it closes its stderr pipe) and every inet port listens.
pub fn start(s: &Setup) -> Result<i32, String> {
    let program = s.daemon_directory.join("master");
    if !program.exists() {
        return Err(format!("{}: no such program", program.display()));
    }
    let mut cmd = Command::new(&program);
    cmd.arg("-c")
        .arg(&s.config_dir)
        .arg("--detached")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe; it makes master a session and group leader,
    // so that `stop` can reach every worker through the process group.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    let pid = child.id() as i32;
    let mut stderr = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut text);
        }
        let _ = tx.send(text);
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let text = match rx.recv_timeout(START_TIMEOUT) {
        Ok(t) => t,
        Err(_) => {
            // Do not leave a half-started master behind.
            let _ = child.kill();
            let _ = child.wait();
            return Err("master did not finish starting within 10 seconds".into());
        }
    };
    if let Ok(Some(status)) = child.try_wait() {
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| {
                l.trim_start_matches("master: ")
                    .trim_start_matches("fatal: ")
            })
            .unwrap_or("no message")
            .to_string();
        return Err(format!("master exited ({status}): {reason}"));
    }
    // Startup is over; the ports must listen.
    loop {
        let missing: Vec<u16> = s
            .inet_ports
            .iter()
            .copied()
            .filter(|p| !tcp_listening(*p))
            .collect();
        let pid_ok = read_pid(&s.pid_file) == Some(pid);
        if missing.is_empty() && pid_ok {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("master exited ({status}) during startup"));
        }
        if Instant::now() >= deadline {
            return Err(if pid_ok {
                format!("ports not listening after 10 seconds: {missing:?}")
            } else {
                format!("no pid file {} after 10 seconds", s.pid_file.display())
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(pid)
}

/// Whether some socket listens on TCP `port` (IPv4 or IPv6), from /proc/net.
fn tcp_listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let mut w = l.split_whitespace();
                let (_, local, _, state) = (w.next(), w.next(), w.next(), w.next());
                state == Some("0A") && local.is_some_and(|a| a.ends_with(&want))
            })
        })
    })
}

/// `start-fg`: replaces mailctl with master in the foreground.
pub fn start_fg(s: &Setup) -> String {
    let program = s.daemon_directory.join("master");
    let e = Command::new(&program).arg("-c").arg(&s.config_dir).exec();
    format!("{}: {e}", program.display())
}

/// Sends `sig` to master and waits for it to go; then kills its process group.
pub fn stop(s: &Setup, sig: Signal, grace: Duration) -> Result<(), String> {
    let pid = master_pid(s).ok_or("the mail system is running but master's pid is unknown")?;
    kill(Pid::from_raw(pid), sig).map_err(|e| format!("kill {pid}: {e}"))?;
    if wait_stopped(s, grace) {
        return Ok(());
    }
    info!(
        "master pid {pid} did not stop within {}s: killing it",
        grace.as_secs()
    );
    // Only a group master leads (started by `mailctl start`), never someone else's.
    if nix::unistd::getpgid(Some(Pid::from_raw(pid))).ok() == Some(Pid::from_raw(pid)) {
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    } else {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if wait_stopped(s, Duration::from_secs(3)) {
        Ok(())
    } else {
        Err(format!("master pid {pid} does not stop"))
    }
}

pub fn stop_timeout() -> Duration {
    STOP_TIMEOUT
}

pub fn signal(s: &Setup, sig: Signal) -> Result<i32, String> {
    let pid = master_pid(s).ok_or("the mail system is running but master's pid is unknown")?;
    kill(Pid::from_raw(pid), sig).map_err(|e| format!("kill {pid}: {e}"))?;
    Ok(pid)
}

/// One service line of the status file.
pub struct ServiceStatus {
    pub key: String,
    pub total: u64,
    pub idle: u64,
    pub limit: u64,
    pub throttled: bool,
}

pub struct MasterStatus {
    pub started: u64,
    pub services: Vec<ServiceStatus>,
}

pub fn read_status(s: &Setup) -> Option<MasterStatus> {
    let text = std::fs::read_to_string(s.data_directory.join(STATUS_NAME)).ok()?;
    let mut st = MasterStatus {
        started: 0,
        services: Vec::new(),
    };
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["started", t] => st.started = t.parse().unwrap_or(0),
            ["service", key, rest @ ..] => {
                let field = |name: &str| -> u64 {
                    rest.iter()
                        .position(|x| *x == name)
                        .and_then(|i| rest.get(i + 1))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                st.services.push(ServiceStatus {
                    key: key.to_string(),
                    total: field("total"),
                    idle: field("idle"),
                    limit: field("limit"),
                    throttled: field("throttled") != 0,
                });
            }
            _ => {}
        }
    }
    Some(st)
}

pub fn format_uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h{m}m")
    } else if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// `flush`: the one-byte trigger to qmgr's public socket.
pub fn flush(s: &Setup) -> Result<(), String> {
    use std::io::Write;
    let path = s.queue_directory.join("public").join("qmgr");
    let mut sock = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|_| "qmgr is not running (no public/qmgr socket)".to_string())?;
    sock.write_all(&[oxipost_daemon::proto::TRIGGER_FLUSH])
        .map_err(|e| format!("{}: {e}", path.display()))
}

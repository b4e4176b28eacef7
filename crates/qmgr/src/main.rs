//! qmgr(8): the queue manager. One process (master.cf maxproc 1) that learns of new mail
//! through a trigger on `public/qmgr` (from smtpd/pickup, and master's wakeup timer),
//! schedules deliveries through the transports of master.cf within Postfix's concurrency
//! limits, and defers, bounces or removes each message. It owns the active queue; it never
//! reads message content except to quote it in a bounce, and it never delivers mail itself.

mod active;
mod bounce;
mod date;
mod defer_log;
mod destination;
mod dispatch;
mod notify;
mod resolve;
mod settings;

use oxipost_daemon::proto::{TRIGGER_FLUSH, TRIGGER_SCAN_DEFERRED};
use oxipost_daemon::{TriggerService, trigger_server};
use std::time::Instant;

struct Qmgr {
    sched: active::Scheduler,
}

impl TriggerService for Qmgr {
    fn trigger(&mut self, bytes: &[u8]) {
        if bytes.contains(&TRIGGER_FLUSH) {
            self.sched.revive_dead();
        }
        if bytes.contains(&TRIGGER_FLUSH) || bytes.contains(&TRIGGER_SCAN_DEFERRED) {
            self.sched.scan_deferred(true);
        }
        // Any trigger (new mail `I`, master's wakeup `W`) means: look at incoming/.
        self.sched.scan_incoming();
    }

    fn deadline(&self) -> Option<Instant> {
        Some(self.sched.next_deadline())
    }

    fn timer(&mut self) {
        self.sched.timer();
    }

    fn solitary(&self) -> bool {
        true
    }

    fn wake_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.sched.wake_fd())
    }

    fn woken(&mut self) {
        self.sched.collect();
    }
}

/// Agent connections and queue scans need descriptors; like Postfix's qmgr, take the
/// hard limit as the soft one.
fn raise_open_file_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--help") {
        println!("usage: qmgr (started by master; see qmgr(8))");
        return;
    }
    let worker = oxipost_daemon::start("qmgr");
    raise_open_file_limit();
    let settings = match settings::Settings::from_config(&worker.config) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let mut sched = match active::Scheduler::new(settings) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    sched.recover();
    sched.scan_incoming();
    sched.scan_deferred(false);
    trigger_server(worker, Qmgr { sched });
}

//! Trigger servers (Postfix's trigger_server), for qmgr and pickup: wake-ups arrive as a few
//! bytes on a unix socket or fifo (from master's timer or from a program that just queued
//! mail); the service also gets its own timer. One process; blocking work is allowed.

use crate::proto::Status;
use crate::signals::SignalPipe;
use crate::single::{ExitReason, register_common};
use crate::worker::{Listener, Worker};
use mio::{Events, Poll, Token};
use std::io::Read;
use std::time::{Duration, Instant};

pub trait TriggerService {
    /// Trigger bytes arrived (e.g. `W` wakeup, `I` new mail, `F` flush).
    fn trigger(&mut self, bytes: &[u8]);
    /// When the service next wants [`TriggerService::timer`] called.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    fn timer(&mut self) {}
    /// Solitary services (qmgr) ignore max_use/max_idle and run until told to stop.
    fn solitary(&self) -> bool {
        false
    }
    /// A descriptor that becomes readable when the service has asynchronous results
    /// (e.g. replies from delivery agents collected by its threads).
    fn wake_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// Called when [`TriggerService::wake_fd`] is readable; drains it.
    fn woken(&mut self) {}
}

const WATCH: Token = Token(usize::MAX - 1);
const SIGNAL: Token = Token(usize::MAX - 2);
const WAKE: Token = Token(usize::MAX - 3);
/// Bytes read from one trigger client at most: triggers are tiny.
const TRIGGER_MAX: usize = 1024;

pub fn trigger_server<S: TriggerService>(mut worker: Worker, mut service: S) -> ExitReason {
    let reason = match run(&mut worker, &mut service) {
        Ok(r) => r,
        Err(e) => oxipost_log::fatal!("event loop: {e}"),
    };
    oxipost_log::release();
    oxipost_log::info!("exiting: {reason:?}");
    reason
}

fn run<S: TriggerService>(worker: &mut Worker, service: &mut S) -> std::io::Result<ExitReason> {
    let mut poll = Poll::new()?;
    let mut signals = SignalPipe::termination()?;
    register_common(&poll, worker, &signals)?;
    if let Some(fd) = service.wake_fd() {
        poll.registry()
            .register(&mut mio::unix::SourceFd(&fd), WAKE, mio::Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(16);
    let mut uses: u64 = 0;
    let mut last_activity = Instant::now();
    worker.report(Status::Available);
    // Log lines of one round go out in one write, just before the loop sleeps.
    oxipost_log::hold();
    loop {
        oxipost_log::flush();
        let now = Instant::now();
        let mut wait = service.deadline().map(|d| d.saturating_duration_since(now));
        if !service.solitary() && !worker.max_idle.is_zero() {
            let left = (last_activity + worker.max_idle).saturating_duration_since(now);
            wait = Some(wait.map_or(left, |w: Duration| w.min(left)));
        }
        if let Err(e) = poll.poll(&mut events, wait)
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for ev in events.iter() {
            match ev.token() {
                WATCH => return Ok(ExitReason::MasterGone),
                WAKE => service.woken(),
                SIGNAL => {
                    if signals.drain() {
                        return Ok(ExitReason::Signal);
                    }
                }
                Token(i) => {
                    let Some(l) = worker.listeners.get(i) else {
                        continue;
                    };
                    let mut batches: Vec<Vec<u8>> = Vec::new();
                    match l {
                        Listener::Unix(u) => {
                            while let Ok((mut s, _)) = u.accept() {
                                // An accepted socket is blocking (O_NONBLOCK is not
                                // inherited from the listener): only bound the wait.
                                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                                let mut data = Vec::new();
                                let _ = (&mut s).take(TRIGGER_MAX as u64).read_to_end(&mut data);
                                batches.push(data);
                            }
                        }
                        Listener::Fifo(f) => {
                            let mut data = vec![0u8; TRIGGER_MAX];
                            let mut f = f;
                            while let Ok(n) = f.read(&mut data) {
                                if n == 0 {
                                    break;
                                }
                                batches.push(data[..n].to_vec());
                            }
                        }
                        Listener::Tcp(t) => while t.accept().is_ok() {},
                    }
                    if batches.is_empty() {
                        continue;
                    }
                    // One busy/available pair per round of triggers, not per trigger; none
                    // for a solitary service (qmgr): master never starts a second one, and
                    // each record costs master a status-file rewrite.
                    let tell = !service.solitary();
                    if tell {
                        worker.report(Status::Taken);
                    }
                    for b in batches {
                        service.trigger(&b);
                        uses += 1;
                    }
                    last_activity = Instant::now();
                    if tell {
                        worker.report(Status::Available);
                    }
                }
            }
        }
        if service.deadline().is_some_and(|d| d <= Instant::now()) {
            service.timer();
            last_activity = Instant::now();
        }
        if !service.solitary() {
            if worker.max_use > 0 && uses >= worker.max_use {
                return Ok(ExitReason::MaxUse);
            }
            if !worker.max_idle.is_zero() && last_activity.elapsed() >= worker.max_idle {
                return Ok(ExitReason::MaxIdle);
            }
        }
    }
}

//! Signals as events of the poll loop (signal-hook-mio: the handler only writes to a
//! self-pipe). SIGCHLD: reap; SIGHUP: reload; SIGTERM: graceful stop; SIGINT/SIGQUIT:
//! abort (workers are killed at once).

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Child,
    Reload,
    Stop(i32),
    Abort(i32),
}

pub fn install() -> std::io::Result<Signals> {
    Signals::new([SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGQUIT])
}

/// Drains pending signals into events.
pub fn pending(signals: &mut Signals) -> Vec<Event> {
    signals
        .pending()
        .filter_map(|s| match s {
            SIGCHLD => Some(Event::Child),
            SIGHUP => Some(Event::Reload),
            SIGTERM => Some(Event::Stop(s)),
            SIGINT | SIGQUIT => Some(Event::Abort(s)),
            _ => None,
        })
        .collect()
}

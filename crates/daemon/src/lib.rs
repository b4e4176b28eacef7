//! The worker skeleton every oxipost daemon runs on, in the spirit of Postfix's
//! single/multi/trigger servers, and the master <-> worker protocol ([`proto`]). It owns the
//! process start sequence (arguments from master, configuration with `-o` overrides,
//! logging, privilege drop and chroot), the accept loops, busy/idle reports to master,
//! `max_use`/`max_idle`, graceful exit on SIGTERM or when master goes away, and catching a
//! panic so that one bad client costs one worker. It knows nothing about any mail
//! protocol: services plug in handlers that drive their own sans-IO state machines.
//!
//! A daemon's `main` is a page: `let w = Worker::start("smtpd");` build its typed settings
//! from `w.config`, `w.drop_privileges()`, then one of [`single_server`],
//! [`multi_server`] or [`trigger_server`].

pub mod args;
pub mod mailtls;
pub mod multi;
pub mod privs;
pub mod proto;
pub mod signals;
pub mod single;
pub mod trigger;
pub mod worker;

pub use multi::{Connection, Flow, MultiService, Peer, local_addr, multi_server};
pub use oxipost_tls::TlsInfo;
pub use single::{Client, ExitReason, single_server};
pub use trigger::{TriggerService, trigger_server};
pub use worker::{Listener, Worker};

/// The usual daemon start: skeleton start sequence, then the irrevocable privilege drop.
/// Failure to drop is fatal: a daemon never serves with more privilege than it should.
pub fn start(program: &str) -> Worker {
    let w = Worker::start(program);
    if let Err(e) = w.drop_privileges() {
        oxipost_log::fatal!("{e}");
    }
    w
}

//! The worker skeleton every oxipost daemon runs on, in the spirit of Postfix's
//! single/multi/trigger servers, and the master <-> worker protocol ([`proto`]). It owns the
//! process start sequence (arguments from master, configuration with `-o` overrides,
//! logging, privilege drop and chroot), the accept loop, busy/idle reports to master,
//! `max_use`/`max_idle`, graceful exit on SIGTERM or when master goes away, and catching a
//! panic so that one bad client costs one worker. It knows nothing about any mail
//! protocol: services plug in handlers that drive their own sans-IO state machines.

pub mod proto;

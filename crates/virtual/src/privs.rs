//! Delivering with the mailbox owner's rights: `oxipost_daemon::privs`.

pub use oxipost_daemon::privs::{Identity, run_as};

//! `virtual`: oxipost's virtual(8) delivery agent. qmgr hands it delivery requests for
//! recipients in `virtual_mailbox_domains`; for each recipient it looks up the mailbox path
//! in `virtual_mailbox_maps` (relative to `virtual_mailbox_base`; a path ending in `/` is a
//! Maildir, anything else an mbox file), the owner in `virtual_uid_maps` and
//! `virtual_gid_maps` (typically `static:5000`), refuses owners below `virtual_minimum_uid`,
//! checks for mail loops (`Delivered-To:`), and delivers with the owner's rights.
//!
//! It is local(8) without the parts that make local dangerous: no aliases, no `.forward`,
//! no commands, no files named by users. It keeps root (master.cf `unprivileged=n`) and
//! delivers in a child that has switched to the mailbox owner; not running as root (the
//! unprivileged quick start), it delivers in process as its own user.
//!
//! Modules: [`settings`] (typed main.cf), [`deliver`] (lookups and mailboxes), [`privs`]
//! (rights), [`service`] (the protocol with qmgr and the log lines).

mod deliver;
mod privs;
mod service;
mod settings;

use std::process::ExitCode;

const HELP: &str = "\
usage: virtual [-n service] [-t type] [-v] [-o name=value]...

oxipost's virtual mailbox delivery agent. It is started by master (master.cf:
`virtual unix - n n - - virtual`) with its listening socket on descriptor 5; it reads
main.cf from MAIL_CONFIG (default /etc/oxipost). Parameters: virtual_mailbox_maps,
virtual_mailbox_base, virtual_uid_maps, virtual_gid_maps, virtual_minimum_uid,
virtual_mailbox_limit, virtual_mailbox_lock, deliver_lock_attempts, deliver_lock_delay,
stale_lock_time, recipient_delimiter, message_size_limit, header_size_limit.
";

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let worker = oxipost_daemon::Worker::start("virtual");
    let settings = match settings::Settings::from_config(&worker.config) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    for w in settings.warnings() {
        oxipost_log::warning!("{w}");
    }
    let idle = if worker.max_idle.is_zero() {
        std::time::Duration::from_secs(100)
    } else {
        worker.max_idle
    };
    oxipost_daemon::single_server(worker, |_, client| service::serve(&settings, client, idle));
    ExitCode::SUCCESS
}

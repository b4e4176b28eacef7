//! `local`: oxipost's local(8) delivery agent. qmgr hands it delivery requests for
//! recipients in `mydestination`; it finds each recipient (a system account, or an entry of
//! `local_users` in the unprivileged quick start), checks for mail loops (`Delivered-To:`),
//! and delivers to a Maildir or mbox under the home directory, an mbox in
//! `mail_spool_directory`, or through `mailbox_command`, with the recipient's rights. It keeps
//! root (master.cf `unprivileged=n`) and switches per delivery in a child process.
//!
//! Modules: [`settings`] (typed main.cf), [`resolve`] (addresses and users), [`deliver`]
//! (the request and the mailboxes), [`command`] (mailbox_command), [`privs`] (rights),
//! [`report`] (log lines), [`service`] (the protocol with qmgr).

mod alias;
mod aliasdb;
mod command;
mod deliver;
mod expand;
mod privs;
mod reinject;
mod report;
mod resolve;
mod service;
mod settings;

use std::process::ExitCode;

const HELP: &str = "\
usage: local [-n service] [-t type] [-v] [-o name=value]...

oxipost's local delivery agent. It is started by master (master.cf: `local unix - n n - - local`)
with its listening socket on descriptor 5 and OXIPOST_LISTEN_FDS set; it reads main.cf from
MAIL_CONFIG (default /etc/oxipost). Parameters: mydestination, recipient_delimiter,
local_users, local_home_base, home_mailbox, mail_spool_directory, mailbox_command,
command_time_limit, mailbox_size_limit, message_size_limit, mailbox_delivery_lock,
deliver_lock_attempts, deliver_lock_delay, stale_lock_time, export_environment,
default_privs, prepend_delivered_header, header_size_limit.
";

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let worker = oxipost_daemon::Worker::start("local");
    let settings = match settings::Settings::from_config(&worker.config) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let idle = if worker.max_idle.is_zero() {
        std::time::Duration::from_secs(100)
    } else {
        worker.max_idle
    };
    oxipost_daemon::single_server(worker, |_, client| service::serve(&settings, client, idle));
    ExitCode::SUCCESS
}

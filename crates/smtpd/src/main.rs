//! `smtpd`: oxipost's SMTP server (Postfix's smtpd(8)). master runs it with a listening
//! socket; one process serves many sessions on one event loop (the multi-client
//! skeleton) and shares one group committer between them.
//!
//! It owns the SMTP conversation's decisions (relay and recipient policy, limits, the
//! queue file of each message, the 250 only after the file is durable) and Postfix's log
//! lines. It must not deliver, rewrite addresses or talk to qmgr beyond a trigger byte; the
//! protocol itself is `oxipost-smtp-proto`'s and the content rules are `oxipost-cleanup`'s.

mod log;
mod policy;
mod service;
mod session;
mod settings;

use service::{Shared, SmtpdService};
use settings::Settings;

const USAGE: &str = "\
usage: smtpd [-n service] [-t type] [-u] [-r] [-v] [-o name=value]...

oxipost's SMTP server. It is started by master(8) with the listening socket on
descriptor 5 (OXIPOST_LISTEN_FDS=1) and reads main.cf from MAIL_CONFIG; it is not
meant to be run by hand. See DESIGN.md and crates/daemon/src/proto.rs.
";

fn main() {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return;
    }
    let worker = oxipost_daemon::start("smtpd");
    let settings = match Settings::from_config(&worker.config) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let shared = match Shared::new(settings) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    oxipost_daemon::multi_server(worker, SmtpdService::new(shared));
}

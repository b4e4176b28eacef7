//! pickup(8): the trigger server that takes locally submitted mail into the queue. Woken
//! by master's timer (`W` every 60 s by master.cf's wakeup field) and by postdrop after
//! each submission (a `W` on `public/pickup`), it moves every complete file of
//! `maildrop/` through the cleanup library into a new `incoming/` file, removes the
//! maildrop file, and triggers qmgr once per batch.
//!
//! A maildrop file that is not a complete, well-formed queue file, or that has no
//! recipients, is moved to `corrupt/` with a warning; pickup never crashes on it. A file
//! it may not read yet (postdrop sets its mode right after the rename) is left for the
//! next wakeup. A crash between writing the incoming file and removing the maildrop file
//! may deliver a message twice, never lose it. pickup must not deliver, resolve
//! recipients or talk to anything but qmgr's trigger.
//!
//! Cleanup's address rewriting (canonical maps, masquerading, virtual aliases) and
//! header/body checks apply as for SMTP mail: `HOLD` queues into `hold/`, `DISCARD` and
//! `REJECT` drop the message with a log line (a bounce to the local sender is not
//! generated yet), a table that cannot answer leaves the file for the next wakeup.

mod pick;

use oxipost_daemon::{TriggerService, trigger_server};

struct Pickup {
    p: pick::Picker,
}

impl TriggerService for Pickup {
    fn trigger(&mut self, _bytes: &[u8]) {
        self.p.scan();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--help") {
        println!("usage: pickup (started by master from master.cf; see pickup(8))");
        return;
    }
    let worker = oxipost_daemon::start("pickup");
    let settings = match oxipost_postdrop::Settings::from_config(&worker.config, Default::default())
    {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let cleanup = match oxipost_cleanup::CleanupSettings::from_config(&worker.config) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    for w in cleanup.warnings() {
        oxipost_log::warning!("{w}");
    }
    let get = |n: &str| {
        worker
            .config
            .get(n)
            .map_err(|e| format!("parameter {n}: {e}"))
    };
    let milters = match oxipost_milter::load("non_smtpd_milters", &get) {
        Ok(m) => m,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let header_checks = match oxipost_cleanup::checks::milter_header_checks(&worker.config) {
        Ok(c) => c,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let p = match pick::Picker::new(settings, cleanup) {
        Ok(p) => p.with_milters(milters, header_checks),
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let mut service = Pickup { p };
    // Mail dropped while no pickup ran is taken at once.
    service.p.scan();
    trigger_server(worker, service);
}

//! `smtpd`: oxipost's SMTP server (Postfix's smtpd(8)). master runs it with a listening
//! socket; one process serves many sessions on one event loop (the multi-client
//! skeleton) and shares one group committer between them.
//!
//! It owns the SMTP conversation's decisions (relay and recipient policy, limits, the
//! queue file of each message, the 250 only after the file is durable) and Postfix's log
//! lines. It must not deliver, rewrite addresses or talk to qmgr beyond a trigger byte; the
//! protocol itself is `oxipost-smtp-proto`'s and the content rules are `oxipost-cleanup`'s.

mod log;
mod milter;
mod notice;
mod policy;
mod recipients;
mod restrict;
mod sasl;
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
    let worker = oxipost_daemon::Worker::start("smtpd");
    let mut settings = match Settings::from_config(&worker.config) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    // Keys are read with the start privileges (as Postfix, before the drop), so that they
    // may stay readable by root only. A bad file is a clear warning naming it; required
    // TLS then fails closed, opportunistic TLS is not offered.
    let mut tls = None;
    if let Some(why) = settings.tls.problem.clone() {
        oxipost_log::warning!("{why}");
        settings.unsupported = Some(why);
    } else if settings.tls.enabled {
        match oxipost_tls::server_config(&settings.tls.files) {
            Ok(c) => tls = Some(c),
            Err(e) => {
                oxipost_log::warning!("cannot load TLS certificates: {e}");
                if settings.tls.required {
                    settings.unsupported = Some(format!("TLS is required but unusable: {e}"));
                } else {
                    settings.tls.enabled = false;
                    settings.server.starttls = false;
                }
            }
        }
    }
    // Lookup tables are opened before the drop, as Postfix does, so that they may be
    // readable by root only.
    let cleanup = match oxipost_cleanup::CleanupSettings::from_config(&worker.config) {
        Ok(c) => std::sync::Arc::new(c),
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let recipients = match recipients::Recipients::from_config(
        &worker.config,
        std::sync::Arc::clone(&cleanup),
    ) {
        Ok(r) => r,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    for w in cleanup.warnings().into_iter().chain(recipients.warnings()) {
        oxipost_log::warning!("{w}");
    }
    if let Err(e) = worker.drop_privileges() {
        oxipost_log::fatal!("{e}");
    }
    if settings.sasl.enabled {
        let options = if settings.server.auth_only_with_tls || settings.tls.wrapper {
            &settings.sasl.tls_security_options
        } else {
            &settings.sasl.security_options
        };
        settings.server.auth_mechanisms = sasl::mechanisms(&settings.sasl.socket, options, "smtp");
    }
    let shared = match Shared::new(settings, cleanup, recipients) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    oxipost_daemon::multi_server(worker, SmtpdService::new(shared, tls));
}

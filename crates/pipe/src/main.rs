//! `pipe`: oxipost's pipe(8) delivery agent. A master.cf entry such as
//! `myfilter unix - n n - - pipe flags=Rq user=filter argv=/usr/bin/filter -f ${sender} -- ${recipient}`
//! makes qmgr hand the recipients routed to `myfilter` (through `transport_maps` or
//! `content_filter`) to this program, which runs the command once per request with the
//! message on standard input and reports the command's result for every recipient.
//!
//! Modules: [`spec`] (the master.cf attributes), [`expand`] (command-line macros),
//! [`command`] (running the command with a time limit and mapping its exit status),
//! [`deliver`] (one request), and the qmgr protocol below. The command runs as `user=`
//! (never root) when pipe runs as root; in the unprivileged quick start it runs as the
//! suite's user. The time limit is `<service>_time_limit` (default `command_time_limit`).

mod command;
mod deliver;
mod expand;
mod spec;

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use oxipost_daemon::Client;

use crate::spec::{Settings, Spec};

const HELP: &str = "\
usage: pipe [-n service] [-t type] [-v] [-o name=value]... [--] attribute=value... argv=command...

oxipost's pipe delivery agent: runs a command for each delivery request from qmgr, with
the message on standard input. Started by master, e.g. in master.cf:

  myfilter unix - n n - - pipe flags=Rq user=filter argv=/path/filter -f ${sender} -- ${recipient}

Attributes: flags= (B D F O R X h q u . >), user=name[:group] (required, never root),
null_sender=, directory=, eol=, size=, and argv= (last; every following word is an
argument). Macros in arguments: ${sender} ${recipient} ${original_recipient} ${user}
${extension} ${domain} ${mailbox} ${nexthop} ${queue_id} ${size} ${client_address}
${client_hostname} ${client_helo} ${client_port} ${client_protocol} ${sasl_method}
${sasl_sender} ${sasl_username}; an argument with a per-recipient macro is repeated for
every recipient. Parameters: <service>_time_limit (default command_time_limit),
recipient_delimiter. Exit status: 0 delivered, 75 (EX_TEMPFAIL) deferred, other sysexits
as sendmail's, any other status bounced.
";

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let worker = oxipost_daemon::Worker::start("pipe");
    let settings = match settings(&worker) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let idle = if worker.max_idle.is_zero() {
        Duration::from_secs(100)
    } else {
        worker.max_idle
    };
    oxipost_daemon::single_server(worker, |_, client| match client {
        Client::Unix(s) => {
            let _ = s.set_read_timeout(Some(idle));
            conversation(&settings, s);
        }
        Client::Tcp(s, _) => {
            let _ = s.set_read_timeout(Some(idle));
            conversation(&settings, s);
        }
    });
    ExitCode::SUCCESS
}

fn settings(worker: &oxipost_daemon::Worker) -> Result<Settings, String> {
    let cfg = &worker.config;
    let spec =
        Spec::parse(&worker.service.args).map_err(|e| format!("{}: {e}", worker.service.name))?;
    let service = worker.service.name.clone();
    let own = format!("{service}_time_limit");
    let time_limit = if cfg.raw(&own).is_some() {
        cfg.get_time(&own)
    } else {
        cfg.get_time("command_time_limit")
    }
    .map_err(|e| e.to_string())?;
    Ok(Settings {
        spec,
        time_limit,
        recipient_delimiter: cfg.get("recipient_delimiter").map_err(|e| e.to_string())?,
        service,
    })
}

/// Serves one qmgr connection (see `oxipost_ipc::serve_deliveries`).
fn conversation<S: Read + Write>(s: &Settings, mut stream: S) {
    let served = oxipost_ipc::serve_deliveries(&mut stream, |reqs, _| {
        reqs.iter()
            .map(|req| {
                let started = std::time::Instant::now();
                let results = deliver::deliver(s, req);
                for (rcpt, r) in req.recipients.iter().zip(&results) {
                    let status = match r.outcome {
                        oxipost_ipc::Outcome::Delivered => "sent",
                        oxipost_ipc::Outcome::Deferred => "deferred",
                        oxipost_ipc::Outcome::Bounced => "bounced",
                    };
                    oxipost_log::info!(
                        "{}: to=<{}>, relay={}, delay={:.2}, dsn={}, status={} ({})",
                        req.queue_id,
                        rcpt.address,
                        r.relay,
                        started.elapsed().as_secs_f64(),
                        r.status,
                        status,
                        r.text
                    );
                }
                results
            })
            .collect()
    });
    if let Err(e) = served {
        oxipost_log::warning!("{e}");
    }
}

//! `auth`: the authentication service daemon (see the `oxipost_auth` crate docs). master
//! starts it for `private/auth`; it serves every client connection on its own thread in
//! one process, so that the brute-force guard sees all attempts.

use std::sync::Arc;
use std::time::Duration;

use oxipost_auth::guard::{Guard, GuardConfig};
use oxipost_auth::passdb::{Defaults, PassDb};
use oxipost_auth::server::Service;
use oxipost_daemon::{Client, Worker};

const USAGE: &str = "\
usage: auth [-n service] [-t type] [-u] [-o name=value]...

oxipost's authentication service. master(8) starts it for the `auth` service of
master.cf (socket queue_directory/private/auth); it is not meant to be run by hand.
Parameters: auth_passdb, auth_mechanisms, auth_failure_delay, auth_failure_limit,
auth_failure_window (postconf(5)).
";

fn settings(w: &Worker) -> Result<Service, String> {
    let cfg = &w.config;
    let err = |n: &str, e: &dyn std::fmt::Display| format!("parameter {n}: {e}");
    let passdbs = cfg
        .get_list("auth_passdb")
        .map_err(|e| err("auth_passdb", &e))?
        .iter()
        .map(|s| PassDb::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mechanisms = Service::select_mechanisms(
        &cfg.get_list("auth_mechanisms")
            .map_err(|e| err("auth_mechanisms", &e))?,
    );
    let owner = cfg.get("mail_owner").map_err(|e| err("mail_owner", &e))?;
    let defaults = match nix::unistd::User::from_name(owner.trim()) {
        Ok(Some(u)) => Defaults {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        },
        _ => Defaults {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        },
    };
    let limit = cfg
        .get_int("auth_failure_limit")
        .map_err(|e| err("auth_failure_limit", &e))?;
    let guard = GuardConfig {
        delay: cfg
            .get_time("auth_failure_delay")
            .map_err(|e| err("auth_failure_delay", &e))?,
        limit: u32::try_from(limit.max(0)).unwrap_or(u32::MAX),
        window: cfg
            .get_time("auth_failure_window")
            .map_err(|e| err("auth_failure_window", &e))?
            .max(Duration::from_secs(1)),
    };
    let host = cfg.get("myhostname").map_err(|e| err("myhostname", &e))?;
    Ok(Service {
        passdbs,
        guard: Guard::new(guard),
        mechanisms,
        defaults,
        host: match host.trim() {
            "" => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            h => h.to_owned(),
        },
    })
}

fn main() {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return;
    }
    let mut worker = Worker::start("auth");
    let service = match settings(&worker) {
        Ok(s) => Arc::new(s),
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    // /etc/shadow needs root; every other passdb is read as mail_owner.
    if !service.passdbs.iter().any(PassDb::needs_root) {
        worker.service.unprivileged = true;
    }
    if let Err(e) = worker.drop_privileges() {
        oxipost_log::fatal!("{e}");
    }
    // One process serves every client on its own thread (the brute-force guard must see
    // all attempts), so it is recycled on max_idle only: exiting every max_use clients
    // left callers waiting for a replacement while the old process drained.
    worker.max_use = 0;
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&active);
    oxipost_daemon::single_server(worker, move |_w, client| {
        let Client::Unix(stream) = client else {
            return;
        };
        let svc = Arc::clone(&service);
        let n = Arc::clone(&counter);
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("auth-conn".into())
            .spawn(move || {
                let mut s = stream;
                let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
                svc.serve(&mut s);
                n.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            oxipost_log::warning!("auth: cannot start a connection thread: {e}");
        }
    });
    // Let exchanges in progress finish (bounded) before the process goes.
    for _ in 0..300 {
        if active.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

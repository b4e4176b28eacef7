//! `pop3d`: oxipost's POP3 server (the role of Dovecot's pop3-login and pop3 processes).
//! master runs it for the `pop3` (110, STLS) and `pop3s` (995, implicit TLS) services;
//! one process serves many sessions on the multi-client skeleton's event loop, so a
//! thousand idle clients cost one process.
//!
//! It owns the POP3 session's decisions: logins through the authentication service
//! (never reading credentials itself), the per-address, per-user and per-connection
//! limits, opening and locking the user's mailbox (Maildir or mbox, see [`store`]), the
//! UPDATE state's removals, and Dovecot-style log lines (`Login: user=<...>` and
//! `Disconnected: Logged out top=, retr=, del=, size=`). The protocol is
//! `oxipost-pop3-proto`'s; the mailbox formats are `oxipost-mailbox`'s.
//!
//! Privileges: by default pop3d runs as `mail_owner` (master.cf's unprivileged column `-`
//! or `y`), serves many sessions per process and reads mailboxes with that user's rights
//! (the quick start, virtual users under one uid). With unprivileged `n` in a root-run
//! suite it serves one client per process, runs as `mail_owner` (effective ids) until the
//! login and then irrevocably becomes the user the authentication service names (its uid
//! and gid; a user without one, or with uid 0, stays `mail_owner`), so system users' own
//! mode-700 Maildirs are read with their rights, as Dovecot's per-user mail processes do.

use oxipost_auth_client as auth;
mod service;
mod settings;
mod store;

use service::{Pop3Service, Shared};
use settings::Settings;

const USAGE: &str = "\
usage: pop3d [-n service] [-t type] [-u] [-r] [-v] [-o name=value]...

oxipost's POP3 server (RFC 1939, CAPA, AUTH, STLS; Maildir and mbox). It is started by
master(8) with the listening socket on descriptor 5 (OXIPOST_LISTEN_FDS=1) and reads
main.cf from MAIL_CONFIG; it is not meant to be run by hand. Parameters: pop3d_* in
postconf(5); see pop3d(8).
";

fn main() {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return;
    }
    let mut worker = oxipost_daemon::Worker::start("pop3d");
    let mut settings = match Settings::from_config(&worker.config) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    // Keys are read before the privilege drop, so they may stay readable by root only.
    let tls = settings.tls.load("pop3d");
    if let Err(e) = worker.drop_privileges() {
        oxipost_log::fatal!("{e}");
    }
    if nix::unistd::geteuid().is_root() {
        per_user_mode(&mut worker, &mut settings);
    }
    raise_descriptor_limit();
    let (mechanisms, apop) = auth::offer(&settings.auth_socket, "pop3");
    // APOP (RFC 1939) only while the service has plaintext passwords to check it with;
    // the greeting then carries a timestamp naming this host.
    let apop_host = apop.then(|| {
        let h = worker.config.get("myhostname").unwrap_or_default();
        match h.trim() {
            "" => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            h => h.to_owned(),
        }
    });
    let local_ip = worker.listeners.first().and_then(|l| match l {
        oxipost_daemon::Listener::Tcp(t) => t
            .local_addr()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified()),
        _ => None,
    });
    let tls_offered = settings.tls.enabled;
    let shared = match Shared::new(settings, mechanisms, apop_host, tls_offered, local_ip) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    oxipost_daemon::multi_server(worker, Pop3Service::new(shared, tls));
}

/// Still root after the start sequence (master.cf's unprivileged column says `n`): one
/// client per process, switched to the logged-in user (`oxipost_daemon::privs::per_user_mode`).
fn per_user_mode(worker: &mut oxipost_daemon::Worker, settings: &mut Settings) {
    match oxipost_daemon::privs::per_user_mode(worker) {
        Ok(owner) => settings.per_user = Some(owner),
        Err(e) => oxipost_log::fatal!("{e}"),
    }
    settings.max_clients = 1;
}

/// Thousands of connections need thousands of descriptors: lift the soft limit to the
/// hard one, as qmgr does.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

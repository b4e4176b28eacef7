//! `imapd`: oxipost's IMAP server (the role of Dovecot's imap-login and imap processes).
//! master runs it for the `imap` (143, STARTTLS) and `imaps` (993, implicit TLS)
//! services; one process serves many sessions on the multi-client skeleton's event loop,
//! so thousands of idle (IDLE) clients cost a few processes.
//!
//! Logins go through the authentication service (imapd never reads credentials itself);
//! the user's Maildir++ (from the user database or `imapd_mail_location`) is served
//! through `oxipost-store`'s UID index. The session is a state machine over bytes
//! ([`session`]) with a hand-written command framer and parser ([`parse`]) that caps line
//! and literal sizes before allocating; FETCH's MIME work is `mail-parser`'s ([`fetch`]).
//! IDLE wakes on inotify events for the selected mailbox ([`service`]).
//!
//! Privileges: by default imapd runs as `mail_owner` and serves many clients per process
//! (virtual users under one uid). With master.cf's unprivileged column `n` in a root-run
//! suite, each process serves one client with `mail_owner`'s effective ids until the login
//! and then irrevocably becomes the user the authentication service names, before opening
//! the mailbox, so system users' own Maildirs are read with their rights (as pop3d does).

use oxipost_auth_client as auth;
mod fetch;
mod parse;
mod search;
mod service;
mod session;
mod settings;
mod utf7;

use service::{ImapService, Shared};
use settings::Settings;

const USAGE: &str = "\
usage: imapd [-n service] [-t type] [-u] [-r] [-v] [-o name=value]...

oxipost's IMAP server (IMAP4rev1 over Maildir++: LOGIN, AUTHENTICATE with SASL-IR,
STARTTLS, IDLE, UIDPLUS, MOVE, SPECIAL-USE). It is started by master(8) with the
listening socket on descriptor 5 (OXIPOST_LISTEN_FDS=1) and reads main.cf from
MAIL_CONFIG; it is not meant to be run by hand. Parameters: imapd_* in postconf(5);
see imapd(8).
";

fn main() {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return;
    }
    let mut worker = oxipost_daemon::Worker::start("imapd");
    let mut settings = match Settings::from_config(&worker.config) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    // Keys are read before the privilege drop, so they may stay readable by root only.
    let tls = settings.tls.load("imapd");
    if let Err(e) = worker.drop_privileges() {
        oxipost_log::fatal!("{e}");
    }
    if nix::unistd::geteuid().is_root() {
        // master.cf unprivileged `n`: one client per process, which becomes the user at login.
        match oxipost_daemon::privs::per_user_mode(&mut worker) {
            Ok(owner) => settings.per_user = Some(owner),
            Err(e) => oxipost_log::fatal!("{e}"),
        }
        settings.max_clients = 1;
    }
    raise_descriptor_limit();
    let mechanisms = auth::mechanisms(&settings.auth_socket, "imap");
    let tls_offered = settings.tls.enabled;
    let shared = match Shared::new(settings, mechanisms, tls_offered) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    oxipost_daemon::multi_server(worker, ImapService::new(shared, tls));
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

//! showq(8): the queue reporter behind `postqueue -p`/`-j` and `mailq`, on `public/showq`
//! (a single-client server running as `mail_owner`, so that ordinary users never read
//! queue files themselves). It also carries out `postqueue -i id` and `-s site`: as the
//! queue owner it moves the deferred messages asked for back into `incoming/` and
//! triggers qmgr (Postfix has a separate flush service for this).
//!
//! The client's uid (SO_PEERCRED) is checked against `authorized_mailq_users` for a
//! listing and `authorized_flush_users` for delivery requests; root and `mail_owner` are
//! always allowed. showq must not change a message other than by renaming it from
//! `deferred/` to `incoming/`, and never sends message content.

mod scan;

use std::io::Write;
use std::time::Duration;

use oxipost_daemon::{Client, single_server};
use oxipost_ipc::showq::{SHOWQ_PROTOCOL, SHOWQ_VERSION, ShowqReply, ShowqRequest};
use oxipost_ipc::{Hello, read_frame, write_frame};
use oxipost_postdrop::Settings;

fn main() {
    if std::env::args().any(|a| a == "--help") {
        println!("usage: showq (started by master from master.cf; see showq(8))");
        return;
    }
    let worker = oxipost_daemon::start("showq");
    let settings = match Settings::from_config(&worker.config, Default::default()) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    let layout = match settings.layout() {
        Ok(l) => l,
        Err(e) => oxipost_log::fatal!("{e}"),
    };
    single_server(worker, move |_w, client| {
        let Client::Unix(stream) = client else {
            return;
        };
        if let Err(e) = serve(&settings, &layout, stream) {
            oxipost_log::warning!("showq client: {e}");
        }
    });
}

fn peer_uid(s: &std::os::unix::net::UnixStream) -> Option<u32> {
    nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.uid())
}

fn allowed(list: &[String], uid: Option<u32>) -> bool {
    match uid {
        Some(0) => true,
        Some(u) if u == nix::unistd::geteuid().as_raw() => true,
        Some(u) => oxipost_postdrop::authorized(list, u),
        None => false,
    }
}

fn serve(
    settings: &Settings,
    layout: &oxipost_queue::Layout,
    mut s: std::os::unix::net::UnixStream,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(300)))?;
    write_frame(&mut s, &Hello::new(SHOWQ_PROTOCOL, SHOWQ_VERSION))?;
    let Some(req): Option<ShowqRequest> = read_frame(&mut s)? else {
        return Ok(());
    };
    let uid = peer_uid(&s);
    let denied = |what: &str| ShowqReply::Done {
        ok: false,
        text: format!(
            "User {} ({}) is not allowed to {what}",
            uid.map(oxipost_postdrop::user_name).unwrap_or_default(),
            uid.map(|u| u.to_string()).unwrap_or_else(|| "?".into())
        ),
    };
    match req {
        ShowqRequest::List => {
            if !allowed(&settings.authorized_mailq_users, uid) {
                return write_frame(&mut s, &denied("view the mail queue"));
            }
            let mut out = std::io::BufWriter::new(&mut s);
            for m in scan::list(layout) {
                write_frame(&mut out, &ShowqReply::Message(m))?;
            }
            write_frame(&mut out, &ShowqReply::End)?;
            out.flush()
        }
        ShowqRequest::Deliver { queue_id } => {
            if !allowed(&settings.authorized_flush_users, uid) {
                return write_frame(&mut s, &denied("flush the mail queue"));
            }
            let reply = scan::deliver_id(layout, &queue_id);
            if matches!(reply, ShowqReply::Done { ok: true, .. }) {
                oxipost_postdrop::trigger(&settings.public("qmgr"), b'I');
            }
            write_frame(&mut s, &reply)
        }
        ShowqRequest::DeliverSite { site } => {
            if !allowed(&settings.authorized_flush_users, uid) {
                return write_frame(&mut s, &denied("flush the mail queue"));
            }
            let n = scan::deliver_site(layout, &site);
            if n > 0 {
                oxipost_postdrop::trigger(&settings.public("qmgr"), b'I');
            }
            write_frame(
                &mut s,
                &ShowqReply::Done {
                    ok: true,
                    text: format!("{n} message{} scheduled", if n == 1 { "" } else { "s" }),
                },
            )
        }
    }
}

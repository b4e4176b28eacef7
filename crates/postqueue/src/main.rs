//! postqueue(1): the user's view of the queue, as Postfix's postqueue. `-p` prints the
//! Sendmail-style `mailq` listing (Postfix's long-queue-id layout, since oxipost always
//! uses long ids), `-j` one JSON object per message with Postfix 3.1's fields; both come
//! from the showq service on `public/showq`, so postqueue never reads queue files. `-f`
//! writes `F` to `public/qmgr`; `-i id` and `-s site` ask showq to move the matching
//! deferred mail back to `incoming/`, and qmgr delivers it at once. When the mail system
//! is down, listing and flushing fail with EX_UNAVAILABLE, as in Postfix.

mod format;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use oxipost_ipc::showq::{SHOWQ_PROTOCOL, SHOWQ_VERSION, ShowqReply, ShowqRequest};
use oxipost_ipc::{Hello, read_frame, write_frame};
use oxipost_postdrop::{Settings, fatal_exit, sysexits};

const USAGE: &str = "\
usage: postqueue [-c config_dir] [-v] -p | -j | -f | -i queue_id | -s site
  -p          list the mail queue (the mailq format)
  -j          list the mail queue as one JSON object per message
  -f          attempt to deliver all queued mail now
  -i id       attempt to deliver the deferred message with this queue id now
  -s site     attempt to deliver deferred mail for this domain now
  -c dir      configuration directory (also MAIL_CONFIG)";

enum Action {
    List { json: bool },
    Flush,
    Deliver(String),
    Site(String),
}

fn main() {
    oxipost_log::init_tool("postqueue");
    let mut config: Option<PathBuf> = None;
    let mut action: Option<Action> = None;
    let mut args = std::env::args().skip(1);
    let usage = |text: &str| -> ! { fatal_exit(sysexits::EX_USAGE, &format!("{text}\n{USAGE}")) };
    while let Some(a) = args.next() {
        let set = |act: Action, current: &mut Option<Action>| {
            if current.is_some() {
                usage("only one of -p, -j, -f, -i, -s may be given");
            }
            *current = Some(act);
        };
        match a.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            "-c" => {
                config = Some(PathBuf::from(
                    args.next().unwrap_or_else(|| usage("-c needs a directory")),
                ))
            }
            "-p" => set(Action::List { json: false }, &mut action),
            "-j" => set(Action::List { json: true }, &mut action),
            "-f" => set(Action::Flush, &mut action),
            "-i" => {
                let id = args.next().unwrap_or_else(|| usage("-i needs a queue id"));
                set(Action::Deliver(id), &mut action)
            }
            "-s" => {
                let site = args.next().unwrap_or_else(|| usage("-s needs a site"));
                set(Action::Site(site), &mut action)
            }
            "-v" => {}
            other => usage(&format!("invalid option {other}")),
        }
    }
    let Some(action) = action else {
        usage("no action given");
    };
    let settings =
        Settings::load(config.as_deref()).unwrap_or_else(|e| fatal_exit(sysexits::EX_CONFIG, &e));
    settings.init_tool_logging("postqueue");
    match action {
        Action::List { json } => list(&settings, json),
        Action::Flush => {
            if !oxipost_postdrop::trigger(&settings.public("qmgr"), b'F') {
                fatal_exit(
                    sysexits::EX_UNAVAILABLE,
                    "Cannot flush mail queue - mail system is down",
                );
            }
        }
        Action::Deliver(id) => request(&settings, ShowqRequest::Deliver { queue_id: id }),
        Action::Site(site) => request(&settings, ShowqRequest::DeliverSite { site }),
    }
}

fn connect(settings: &Settings, what: &str) -> UnixStream {
    let path = settings.public("showq");
    let s = UnixStream::connect(&path).unwrap_or_else(|e| {
        oxipost_log::warning!("connect to {}: {e}", path.display());
        fatal_exit(
            sysexits::EX_UNAVAILABLE,
            &format!("{what} unavailable - mail system is down"),
        )
    });
    let _ = s.set_read_timeout(Some(Duration::from_secs(300)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    s
}

fn malformed(e: std::io::Error) -> ! {
    fatal_exit(
        sysexits::EX_SOFTWARE,
        &format!("malformed showq server response: {e}"),
    )
}

fn list(settings: &Settings, json: bool) {
    let mut s = connect(settings, "Queue report");
    Hello::expect(&mut s, SHOWQ_PROTOCOL, SHOWQ_VERSION).unwrap_or_else(|e| malformed(e));
    write_frame(&mut s, &ShowqRequest::List).unwrap_or_else(|e| malformed(e));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut report = format::Report::new(json);
    loop {
        let reply: ShowqReply = match read_frame(&mut s) {
            Ok(Some(r)) => r,
            Ok(None) => malformed(std::io::ErrorKind::UnexpectedEof.into()),
            Err(e) => malformed(e),
        };
        let r = match reply {
            ShowqReply::Message(m) => report.message(&mut out, &m),
            ShowqReply::End => break,
            ShowqReply::Done { ok: false, text } => fatal_exit(sysexits::EX_NOPERM, &text),
            ShowqReply::Done { .. } => malformed(std::io::ErrorKind::InvalidData.into()),
        };
        if let Err(e) = r {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return;
            }
            fatal_exit(sysexits::EX_IOERR, &format!("output write error: {e}"));
        }
    }
    if let Err(e) = report.finish(&mut out).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        fatal_exit(sysexits::EX_IOERR, &format!("output write error: {e}"));
    }
}

fn request(settings: &Settings, req: ShowqRequest) {
    let mut s = connect(settings, "Delivery request");
    Hello::expect(&mut s, SHOWQ_PROTOCOL, SHOWQ_VERSION).unwrap_or_else(|e| malformed(e));
    write_frame(&mut s, &req).unwrap_or_else(|e| malformed(e));
    match read_frame(&mut s) {
        Ok(Some(ShowqReply::Done { ok: true, text })) => {
            if !text.is_empty() {
                oxipost_log::info!("{text}");
            }
        }
        Ok(Some(ShowqReply::Done { ok: false, text })) => {
            fatal_exit(sysexits::EX_UNAVAILABLE, &text)
        }
        Ok(_) => malformed(std::io::ErrorKind::InvalidData.into()),
        Err(e) => malformed(e),
    }
}

//! postsuper(1): the administrator's queue operations, as Postfix's postsuper. Only root
//! and `mail_owner` may run it; root switches to `mail_owner` first so that every file
//! and directory it makes belongs to the queue owner.
//!
//! Operations run in Postfix's order: `-s` (structure check: files in the wrong hash
//! directory are moved where they belong, stale temporary files removed, names that are
//! not queue ids reported), `-p` (stale temporary files only), `-d` (delete, with the
//! message's defer/bounce/trace logs), `-h` (hold), `-H` (release from hold into
//! `deferred/`, due at once), `-r` (requeue into `incoming/`). Each takes a queue id,
//! `ALL`, or `-` (ids read from standard input), optionally restricted to named queues.
//! Every change is one rename or unlink; qmgr is triggered afterwards.

mod ops;

use std::io::BufRead;
use std::path::PathBuf;

use oxipost_postdrop::{Settings, fatal_exit, sysexits};
use oxipost_queue::Queue;

const USAGE: &str = "\
usage: postsuper [-c config_dir] [-psv] [-d queue_id|ALL|-] [-h queue_id|ALL|-]
                 [-H queue_id|ALL|-] [-r queue_id|ALL|-] [queue ...]
  -d id   delete (default queues: hold incoming active deferred)
  -h id   put on hold (default: incoming active deferred)
  -H id   release from hold into deferred (default: hold)
  -r id   requeue into incoming (default: hold incoming active deferred)
  -s      check and repair the queue directory structure
  -p      purge stale temporary files
  -c dir  configuration directory (also MAIL_CONFIG)
`ALL` means every message; `-` reads queue ids from standard input.";

fn main() {
    oxipost_log::init_tool("postsuper");
    let mut config: Option<PathBuf> = None;
    let mut req = ops::Request::default();
    let mut queues: Vec<Queue> = Vec::new();
    let mut args = std::env::args().skip(1).peekable();
    let usage = |t: &str| -> ! { fatal_exit(sysexits::EX_USAGE, &format!("{t}\n{USAGE}")) };
    while let Some(a) = args.next() {
        let mut take = |what: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{what} needs a queue id")))
        };
        match a.as_str() {
            "--help" => {
                println!("{USAGE}");
                return;
            }
            "-c" => config = Some(PathBuf::from(take("-c"))),
            "-d" => req.delete.push(take("-d")),
            "-h" => req.hold.push(take("-h")),
            "-H" => req.release.push(take("-H")),
            "-r" => req.requeue.push(take("-r")),
            "-s" => req.structure = true,
            "-p" => req.purge = true,
            "-v" => {}
            s if s.starts_with('-') => usage(&format!("invalid option {s}")),
            name => match Queue::from_name(name) {
                Some(q) if Queue::MESSAGE_QUEUES.contains(&q) => queues.push(q),
                _ => usage(&format!("unknown queue: {name}")),
            },
        }
    }
    if !req.any() {
        req.structure = true;
    }
    let settings =
        Settings::load(config.as_deref()).unwrap_or_else(|e| fatal_exit(sysexits::EX_CONFIG, &e));
    settings.init_tool_logging("postsuper");
    become_owner(&settings);
    // `-` anywhere: queue ids from standard input, one per line.
    if [&req.delete, &req.hold, &req.release, &req.requeue]
        .iter()
        .any(|l| l.iter().any(|i| i == "-"))
    {
        let ids: Vec<String> = std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        for l in [
            &mut req.delete,
            &mut req.hold,
            &mut req.release,
            &mut req.requeue,
        ] {
            if l.iter().any(|i| i == "-") {
                l.retain(|i| i != "-");
                l.extend(ids.iter().cloned());
            }
        }
    }
    let layout = settings
        .layout()
        .unwrap_or_else(|e| fatal_exit(sysexits::EX_CONFIG, &e));
    let counts = ops::run(&layout, &req, &queues);
    for (n, what) in [
        (counts.fixed, "Moved to the right queue directory"),
        (counts.purged, "Removed temporary files"),
        (counts.deleted, "Deleted"),
        (counts.held, "Placed on hold"),
        (counts.released, "Released from hold"),
        (counts.requeued, "Requeued"),
    ] {
        if n > 0 {
            let noun = if what == "Removed temporary files" {
                String::new()
            } else {
                format!(" message{}", if n == 1 { "" } else { "s" })
            };
            oxipost_log::info!("{what}: {n}{noun}");
        }
    }
    if counts.released + counts.requeued > 0 {
        oxipost_postdrop::trigger(&settings.public("qmgr"), b'I');
    }
}

/// Only root and `mail_owner` may change the queue; root becomes `mail_owner`.
fn become_owner(settings: &Settings) {
    use nix::unistd::{User, getuid, setgid, setgroups, setuid};
    let owner = User::from_name(&settings.mail_owner).ok().flatten();
    let uid = getuid();
    if uid.is_root() {
        // An instance owned by root (no mail_owner account) keeps root.
        if let Some(u) = owner.filter(|u| !u.uid.is_root()) {
            let ok = setgroups(&[u.gid]).is_ok() && setgid(u.gid).is_ok() && setuid(u.uid).is_ok();
            if !ok {
                fatal_exit(
                    1,
                    &format!("cannot switch to mail_owner {}", settings.mail_owner),
                );
            }
        }
        return;
    }
    if owner.is_none_or(|u| u.uid != uid) {
        fatal_exit(1, "use of this command is reserved for the superuser");
    }
}

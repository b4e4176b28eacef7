//! postdrop(1): reads a message from sendmail's pipe (see the library's `stream` module)
//! and writes it into `maildrop/`, then wakes pickup. Installed setgid `setgid_group` in
//! production so that `maildrop/` need not be world-writable; run without that, it writes
//! with the invoking user's rights. Exit codes are sysexits: EX_TEMPFAIL when the queue
//! cannot be written, EX_NOINPUT when the stream is broken, EX_NOPERM when the user is
//! not in `authorized_submit_users`.

use oxipost_postdrop::{Settings, drop_message, stream, sysexits};
use std::path::PathBuf;

const USAGE: &str = "usage: postdrop [-c config_dir] [-r] [-v]\n\
Reads a message in sendmail's internal format from standard input and writes it into\n\
the maildrop queue. Normally run by sendmail(1), not by people.";

fn main() {
    oxipost_log::init_tool("postdrop");
    let mut config_dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            "-c" => match args.next() {
                Some(d) => config_dir = Some(PathBuf::from(d)),
                None => fail(sysexits::EX_USAGE, "-c needs a directory"),
            },
            // Postfix's -r (raw record input) is the only format here; -v is verbosity.
            "-r" | "-v" => {}
            other => fail(
                sysexits::EX_USAGE,
                &format!("unknown option {other}\n{USAGE}"),
            ),
        }
    }
    let settings =
        Settings::load(config_dir.as_deref()).unwrap_or_else(|e| fail(sysexits::EX_CONFIG, &e));
    settings.init_tool_logging("postdrop");
    let uid = nix::unistd::getuid().as_raw();
    if !oxipost_postdrop::authorized(&settings.authorized_submit_users, uid) {
        fail(
            sysexits::EX_NOPERM,
            &format!(
                "User {} ({uid}) is not allowed to submit mail",
                oxipost_postdrop::user_name(uid)
            ),
        );
    }
    let layout = settings
        .layout()
        .unwrap_or_else(|e| fail(sysexits::EX_CONFIG, &e));
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let sub = stream::read_submission(&mut input)
        .unwrap_or_else(|e| fail(sysexits::EX_NOINPUT, &format!("malformed input: {e}")));
    let mut content = stream::ChunkReader::new(input);
    match drop_message(
        &layout,
        &sub,
        &mut content,
        settings.message_size_limit,
        uid,
    ) {
        Ok(id) => {
            oxipost_postdrop::trigger(&settings.public("pickup"), b'W');
            println!("{id}");
        }
        Err(e) => fail(e.exit_code(), &e.to_string()),
    }
}

fn fail(code: i32, text: &str) -> ! {
    oxipost_postdrop::fatal_exit(code, text)
}

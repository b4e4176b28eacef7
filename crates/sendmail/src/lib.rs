//! sendmail(1), mailq(1) and newaliases(1): the Sendmail-compatible command line of
//! oxipost, as Postfix's `sendmail`. A message read from standard input (or each message
//! of an SMTP conversation on standard input and output with `-bs`) is handed to postdrop
//! (the library in-process when this user may write `maildrop/`, otherwise the `postdrop`
//! program, which production installs setgid), and `pickup` takes it into the queue.
//! `-bp`/`mailq` runs `postqueue -p`, `-q` runs `postqueue -f`, `-bi`/`newaliases` runs
//! `postalias` on `alias_database` when it is installed.
//!
//! Exit codes are sysexits: EX_USAGE for a bad command line, EX_NOINPUT when standard
//! input cannot be read, EX_TEMPFAIL when the queue cannot be written (full disk,
//! unwritable maildrop), EX_NOPERM for users outside `authorized_submit_users`. On any
//! failure nothing is queued. This crate must not write the queue except through postdrop.

pub mod args;
pub mod message;
mod smtp;

use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oxipost_postdrop::{ATTR_FULL_NAME, Settings, Submission, fatal_exit, stream, sysexits};
use oxipost_queue::QueueId;

pub use args::{Args, Mode};

/// Which name the program was started under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    Sendmail,
    Mailq,
    Newaliases,
}

const USAGE: &str = "\
usage: sendmail [options] [recipient ...]
       mailq            (= sendmail -bp)
       newaliases       (= sendmail -bi)

Reads a message from standard input and queues it for the recipients.
  -t            also take recipients from To:, Cc:, Bcc: (Bcc: is removed)
  -f sender     envelope sender (-f '' or -f '<>' for the null sender)
  -F name       full name for a From: header that the message lacks
  -i, -oi       a line with a single '.' does not end the message
  -N dsn        DSN notify: never, or success,delay,failure
  -R ret        DSN return: full or hdrs
  -V envid      DSN envelope id
  -B type       body type: 7bit or 8bitmime
  -C dir        configuration directory (also MAIL_CONFIG)
  -bm           read a message from standard input (default)
  -bs           SMTP conversation on standard input and output
  -bp           list the mail queue (mailq)
  -bi           rebuild the alias database (newaliases)
  -q            attempt delivery of all queued mail (postqueue -f)
  -v, -o x, -odb, -oem, -n, -m, -U, -X file, -L label, -h n   accepted and ignored
Exit status follows sysexits.h.";

/// Runs the program; never returns.
pub fn run(personality: Personality) -> ! {
    let program = match personality {
        Personality::Sendmail => "sendmail",
        Personality::Mailq => "mailq",
        Personality::Newaliases => "newaliases",
    };
    oxipost_log::init_tool(program);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut a = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) => fatal_exit(sysexits::EX_USAGE, &format!("{e}\n{USAGE}")),
    };
    if a.help {
        println!("{USAGE}");
        std::process::exit(0);
    }
    match personality {
        Personality::Mailq => a.mode = Mode::ListQueue,
        Personality::Newaliases => a.mode = Mode::Newaliases,
        Personality::Sendmail => {}
    }
    let config = a.config.as_ref().map(|c| {
        // -C may name main.cf itself, as with Sendmail's configuration file.
        let p = PathBuf::from(c);
        if p.file_name().is_some_and(|n| n == "main.cf") {
            p.parent().map(Path::to_path_buf).unwrap_or(p)
        } else {
            p
        }
    });
    let settings =
        Settings::load(config.as_deref()).unwrap_or_else(|e| fatal_exit(sysexits::EX_CONFIG, &e));
    settings.init_tool_logging(program);
    let code = match a.mode {
        Mode::ListQueue => exec_tool(&settings, "postqueue", &["-p"]),
        Mode::Flush => exec_tool(&settings, "postqueue", &["-f"]),
        Mode::Newaliases => newaliases(&settings),
        Mode::Smtp => {
            check_authorized(&settings);
            smtp::run(&settings)
        }
        Mode::Deliver => {
            check_authorized(&settings);
            deliver(&settings, &a)
        }
    };
    std::process::exit(code)
}

fn check_authorized(settings: &Settings) {
    let uid = nix::unistd::getuid().as_raw();
    if !oxipost_postdrop::authorized(&settings.authorized_submit_users, uid) {
        fatal_exit(
            sysexits::EX_NOPERM,
            &format!(
                "User {} ({uid}) is not allowed to submit mail",
                oxipost_postdrop::user_name(uid)
            ),
        );
    }
}

/// Runs another oxipost command from `command_directory` (falling back to this program's
/// own directory) and returns its exit status.
fn exec_tool(settings: &Settings, name: &str, args: &[&str]) -> i32 {
    let path = tool_path(settings, name);
    let mut cmd = Command::new(&path);
    cmd.arg("-c").arg(&settings.config_dir).args(args);
    match cmd.status() {
        Ok(s) => s.code().unwrap_or(sysexits::EX_SOFTWARE),
        Err(e) => fatal_exit(
            sysexits::EX_UNAVAILABLE,
            &format!("cannot run {}: {e}", path.display()),
        ),
    }
}

fn tool_path(settings: &Settings, name: &str) -> PathBuf {
    let p = settings.command_directory.join(name);
    if p.exists() {
        return p;
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or(p)
}

/// newaliases: `postalias` on every `alias_database` when it is installed; until alias
/// support lands there is nothing to rebuild, which is said and is not an error.
fn newaliases(settings: &Settings) -> i32 {
    let postalias = tool_path(settings, "postalias");
    if !postalias.exists() {
        eprintln!(
            "newaliases: alias support is not available yet (no postalias in {}); nothing to rebuild",
            settings.command_directory.display()
        );
        return sysexits::EX_OK;
    }
    let mut code = 0;
    for db in &settings.alias_database {
        let c = exec_tool(settings, "postalias", &[db.as_str()]);
        if c != 0 {
            code = c;
        }
    }
    code
}

/// The real user's login name and full name (from the password file).
fn login() -> (String, String) {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid).ok().flatten() {
        Some(u) => {
            let gecos = u.gecos.to_string_lossy().into_owned();
            let full = gecos.split(',').next().unwrap_or("").trim().to_string();
            (u.name, full)
        }
        None => (uid.as_raw().to_string(), String::new()),
    }
}

/// Adds `@myorigin` to an address without a domain (Postfix's `append_at_myorigin`).
pub fn qualify(addr: &str, myorigin: &str) -> String {
    if addr.is_empty() || addr.contains('@') {
        addr.to_string()
    } else {
        format!("{addr}@{myorigin}")
    }
}

/// Strips `<...>` around an address given on the command line.
fn unbracket(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(t)
}

/// DSN NOTIFY text to the queue format's bit mask.
fn notify_mask(text: &str) -> Result<u8, String> {
    let mut m = 0u8;
    for w in text.split(',') {
        m |= match w.trim().to_ascii_lowercase().as_str() {
            "never" => 1,
            "success" => 2,
            "failure" => 4,
            "delay" => 8,
            other => return Err(format!("bad -N option value: {other}")),
        };
    }
    if m & 1 != 0 && m != 1 {
        return Err("-N never cannot be combined with other values".into());
    }
    Ok(m)
}

fn deliver(settings: &Settings, a: &Args) -> i32 {
    let (login_name, gecos) = login();
    let sender = match &a.sender {
        Some(s) => qualify(unbracket(s), &settings.myorigin),
        None => qualify(&login_name, &settings.myorigin),
    };
    let notify = match a.notify.as_deref().map(notify_mask).transpose() {
        Ok(n) => n.unwrap_or(0),
        Err(e) => fatal_exit(sysexits::EX_USAGE, &e),
    };
    if let Some(r) = &a.ret
        && !matches!(r.to_ascii_lowercase().as_str(), "full" | "hdrs")
    {
        fatal_exit(sysexits::EX_USAGE, &format!("bad -R option value: {r}"));
    }
    let mut recipients: Vec<String> = a
        .recipients
        .iter()
        .flat_map(|r| message::parse_address_list(r))
        .collect();
    if recipients.is_empty() && !a.extract {
        fatal_exit(
            sysexits::EX_USAGE,
            "Recipient addresses must be specified on the command line or via the -t option",
        );
    }
    let stdin = raw_stdin();
    let mut input = message::Input::new(BufReader::new(&*stdin), a.ignore_dots);
    let mut header = message::read_header(&mut input, settings.header_size_limit.max(1024))
        .unwrap_or_else(|e| {
            fatal_exit(
                sysexits::EX_NOINPUT,
                &format!("error reading standard input: {e}"),
            )
        });
    if a.extract {
        recipients.extend(header.extract_recipients());
        if recipients.is_empty() {
            fatal_exit(
                sysexits::EX_USAGE,
                "No recipient addresses found in message header",
            );
        }
    }
    let full_name = a
        .full_name
        .clone()
        .or_else(|| std::env::var("NAME").ok())
        .unwrap_or(gecos);
    let full_name: String = full_name.chars().filter(|c| !c.is_control()).collect();
    if !full_name.trim().is_empty() && !sender.is_empty() && !header.has("from") {
        header
            .fields
            .push(format!("From: {} <{sender}>\n", quote_phrase(full_name.trim())).into_bytes());
        header.had_separator |= header.first_body_line.is_none();
    }
    let sub = Submission {
        sender,
        recipients: recipients
            .iter()
            .map(|r| qualify(r, &settings.myorigin))
            .collect(),
        notify,
        ret: a.ret.clone(),
        envid: a.envid.clone(),
        body: a.body.clone(),
        attributes: if full_name.trim().is_empty() {
            Vec::new()
        } else {
            vec![(ATTR_FULL_NAME.to_string(), full_name.trim().to_string())]
        },
    };
    let mut content = message::Content::new(header.to_bytes(), input);
    match submit(settings, &sub, &mut content) {
        Ok(_) => sysexits::EX_OK,
        Err((code, text)) => fatal_exit(code, &text),
    }
}

/// Standard input as a plain file, so that read errors are seen: Rust's `io::stdin()`
/// reports EBADF as end of input, which would queue an empty message. A descriptor that
/// was closed when the program started has been replaced by the runtime with `/dev/null`
/// opened read-write (a shell's `< /dev/null` opens it read-only): that is refused too.
fn raw_stdin() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::MetadataExt;
    // SAFETY: fd 0 is owned by the process for its whole life; ManuallyDrop never closes it.
    let f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(0, libc::F_GETFL) };
    let is_null = match (f.metadata(), std::fs::metadata("/dev/null")) {
        (Ok(a), Ok(b)) => a.rdev() == b.rdev() && a.file_type() == b.file_type(),
        _ => false,
    };
    if flags < 0 || (is_null && flags & libc::O_ACCMODE == libc::O_RDWR) {
        fatal_exit(sysexits::EX_NOINPUT, "standard input is closed");
    }
    f
}

/// Quotes a display name when it has RFC 5322 specials.
fn quote_phrase(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c))
    {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Hands one message to postdrop; returns its maildrop queue id, or a sysexits code and
/// the reason.
pub fn submit(
    settings: &Settings,
    sub: &Submission,
    content: &mut dyn Read,
) -> Result<Option<QueueId>, (i32, String)> {
    let maildrop = settings.queue_directory.join("maildrop");
    let direct = nix::unistd::access(
        &maildrop,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_ok();
    let postdrop = tool_path(settings, "postdrop");
    if direct || !postdrop.exists() {
        let layout = settings.layout().map_err(|e| (sysexits::EX_CONFIG, e))?;
        let uid = nix::unistd::getuid().as_raw();
        let id =
            oxipost_postdrop::drop_message(&layout, sub, content, settings.message_size_limit, uid)
                .map_err(|e| (e.exit_code(), e.to_string()))?;
        oxipost_postdrop::trigger(&settings.public("pickup"), b'W');
        return Ok(Some(id));
    }
    via_postdrop(settings, &postdrop, sub, content).map(|()| None)
}

/// Runs the (setgid) postdrop program and streams the message into it.
fn via_postdrop(
    settings: &Settings,
    postdrop: &Path,
    sub: &Submission,
    content: &mut dyn Read,
) -> Result<(), (i32, String)> {
    let mut child = Command::new(postdrop)
        .arg("-c")
        .arg(&settings.config_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            (
                sysexits::EX_TEMPFAIL,
                format!("cannot run {}: {e}", postdrop.display()),
            )
        })?;
    let mut input_error = None;
    if let Some(mut pipe) = child.stdin.take() {
        let mut buf = vec![0u8; 64 << 10];
        let r: io::Result<()> = (|| {
            stream::write_submission(&mut pipe, sub)?;
            loop {
                let n = match content.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        input_error = Some(e);
                        // Close the pipe without the end marker: postdrop queues nothing.
                        return Ok(());
                    }
                };
                stream::write_chunk(&mut pipe, &buf[..n])?;
            }
            stream::write_end(&mut pipe)?;
            pipe.flush()
        })();
        drop(pipe);
        let status = child.wait();
        if let Some(e) = input_error {
            return Err((
                sysexits::EX_NOINPUT,
                format!("error reading standard input: {e}"),
            ));
        }
        let status = status.map_err(|e| (sysexits::EX_TEMPFAIL, format!("postdrop: {e}")))?;
        if !status.success() {
            return Err((
                status.code().unwrap_or(sysexits::EX_TEMPFAIL),
                "postdrop failed; message not queued".into(),
            ));
        }
        r.map_err(|e| (sysexits::EX_TEMPFAIL, format!("write to postdrop: {e}")))?;
        Ok(())
    } else {
        let _ = child.kill();
        let _ = child.wait();
        Err((sysexits::EX_TEMPFAIL, "no pipe to postdrop".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(qualify("root", "example.com"), "root@example.com");
        assert_eq!(qualify("a@b", "example.com"), "a@b");
        assert_eq!(qualify("", "example.com"), "");
        assert_eq!(unbracket("<>"), "");
        assert_eq!(unbracket(" <a@b> "), "a@b");
        assert_eq!(notify_mask("success,DELAY"), Ok(10));
        assert!(notify_mask("never,success").is_err());
        assert_eq!(quote_phrase("Joe Q. Public"), "\"Joe Q. Public\"");
        assert_eq!(quote_phrase("Joe Public"), "Joe Public");
    }
}

//! Delivery to `mailbox_command`, as Postfix's local(8) runs it: `/bin/sh -c command` in its
//! own process group, with a clean environment (`export_environment`, `PATH=/usr/bin:/bin`,
//! then HOME, LOGNAME, USER, SHELL, SENDER, RECIPIENT, LOCAL, DOMAIN, EXTENSION,
//! ORIGINAL_RECIPIENT and the client attributes), the message on standard input after a
//! `From ` line and the prepended headers, and `command_time_limit` enforced by killing the
//! whole group. The exit status is read as sendmail's sysexits: `EX_TEMPFAIL` (75) and
//! `EX_OSERR` (71) defer, other sysexits and any other non-zero status bounce, a signal
//! defers, and so does a time-out (the whole process group is killed); up to 1 KiB of the command's output goes into the reason.
//!
//! The caller has already switched to the recipient's rights (see [`crate::privs`]).

use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use oxipost_ipc::Outcome;

/// How much command output is kept for the bounce reason.
const OUTPUT_KEEP: usize = 1024;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
}

/// What a delivery to a command came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    pub outcome: Outcome,
    pub dsn: &'static str,
    pub text: String,
}

/// Sendmail's sysexits with Postfix's DSN and text for each (`sys_exits.c`).
fn sysexit(code: i32) -> Option<(&'static str, &'static str)> {
    Some(match code {
        64 => ("5.3.0", "command line usage error"),
        65 => ("5.6.0", "data format error"),
        66 => ("5.3.0", "cannot open input"),
        67 => ("5.1.1", "user unknown"),
        68 => ("5.1.2", "host name unknown"),
        69 => ("5.3.0", "service unavailable"),
        70 => ("5.3.0", "internal software error"),
        71 => ("4.3.0", "system resource problem"),
        72 => ("5.3.0", "critical OS file missing"),
        73 => ("5.2.0", "can't create user output file"),
        74 => ("5.3.0", "input/output error"),
        75 => ("4.3.0", "temporary failure"),
        76 => ("5.5.0", "remote error in protocol"),
        77 => ("5.7.0", "permission denied"),
        78 => ("5.3.5", "local configuration error"),
        _ => return None,
    })
}

/// Maps how the command ended (and its cleaned output) to a delivery result, as Postfix's
/// `pipe_command()` does.
pub fn map_exit(exit: Exit, command: &str, output: &str) -> CommandResult {
    let out = if output.is_empty() {
        String::new()
    } else {
        format!(". Command output: {output}")
    };
    let (outcome, dsn, text) = match exit {
        Exit::Code(0) => (
            Outcome::Delivered,
            "2.0.0",
            format!("delivered to command: {command}"),
        ),
        // Postfix bounces here; oxipost defers (issue 5): a hung command is usually a
        // transient fault (a stuck lock, a slow filter), and a retry costs less than
        // returning the mail.
        Exit::TimedOut => (
            Outcome::Deferred,
            "4.3.0",
            format!("Command time limit exceeded: \"{command}\"{out}"),
        ),
        Exit::Signal(sig) => (
            Outcome::Deferred,
            "4.3.0",
            format!("Command died with signal {sig}: \"{command}\"{out}"),
        ),
        Exit::Code(code) => match sysexit(code) {
            Some((dsn, what)) => {
                let outcome = if dsn.starts_with('4') {
                    Outcome::Deferred
                } else {
                    Outcome::Bounced
                };
                (outcome, dsn, format!("{what}{out}"))
            }
            None => (
                Outcome::Bounced,
                "5.3.0",
                format!("Command died with status {code}: \"{command}\"{out}"),
            ),
        },
    };
    CommandResult { outcome, dsn, text }
}

/// Output as it goes into a reason: tabs and newlines become spaces, other non-printable
/// bytes `_`, trailing white space dropped.
pub fn clean_output(raw: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    s.trim_end().to_string()
}

/// What a command delivery needs besides the message.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: &'a str,
    /// Variables set after `PATH` (Postfix's order: exported ones, PATH, then these).
    pub env: Vec<(String, String)>,
    pub export: &'a [String],
    pub cwd: &'a Path,
    pub time_limit: Duration,
}

/// Runs the command and feeds it `prefix` (From line and headers) and then `content` with
/// CRLF turned into LF. Never blocks past the time limit.
pub fn deliver<R: Read + Send>(inv: &Invocation<'_>, prefix: &[u8], content: R) -> CommandResult {
    match run(inv, prefix, content) {
        Ok((exit, output)) => map_exit(exit, inv.command, &clean_output(&output)),
        Err(e) => CommandResult {
            outcome: Outcome::Deferred,
            dsn: "4.3.0",
            text: format!("cannot run command \"{}\": {e}", inv.command),
        },
    }
}

fn run<R: Read + Send>(
    inv: &Invocation<'_>,
    prefix: &[u8],
    content: R,
) -> io::Result<(Exit, Vec<u8>)> {
    let (out_rd, out_wr) = nix::unistd::pipe().map_err(io::Error::from)?;
    let err_wr = out_wr.try_clone()?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(inv.command)
        .env_clear()
        .current_dir(inv.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out_wr))
        .stderr(Stdio::from(err_wr))
        .process_group(0);
    for name in inv.export {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("PATH", "/usr/bin:/bin");
    for (k, v) in &inv.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn()?;
    // Our copies of the write ends went into `cmd`; drop it so EOF comes when the command ends.
    drop(cmd);
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let stdin = child.stdin.take();
    let deadline = Instant::now() + inv.time_limit;
    let mut output = Vec::new();
    let mut reader = std::fs::File::from(out_rd);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            if let Some(stdin) = stdin {
                // The command may stop reading early (EPIPE): that is not an error (Postfix).
                let _ = feed(stdin, prefix, content);
            }
        });
        let mut status: Option<ExitStatus> = None;
        let mut out_open = true;
        let mut timed_out = false;
        let mut buf = [0u8; 4096];
        loop {
            if status.is_none() {
                status = child.try_wait()?;
            }
            if status.is_some() && !out_open {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                timed_out = status.is_none();
                let _ = killpg(pgid, Signal::SIGKILL);
                if status.is_none() {
                    status = Some(child.wait()?);
                }
                break;
            }
            if out_open {
                let wait = (deadline - now).min(Duration::from_millis(50));
                let ms = u16::try_from(wait.as_millis()).unwrap_or(50).max(1);
                let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
                let ready = match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(n) => n > 0,
                    Err(nix::errno::Errno::EINTR) => false,
                    Err(e) => return Err(io::Error::from(e)),
                };
                if ready {
                    match reader.read(&mut buf) {
                        Ok(0) => out_open = false,
                        Ok(n) => {
                            let room = OUTPUT_KEEP.saturating_sub(output.len());
                            output.extend_from_slice(&buf[..n.min(room)]);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => out_open = false,
                    }
                }
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if !writer.is_finished() {
            // Something in the group still holds standard input without reading it.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let _ = writer.join();
        let st = status.ok_or_else(|| io::Error::other("no exit status"))?;
        let exit = if timed_out {
            Exit::TimedOut
        } else if let Some(sig) = st.signal() {
            Exit::Signal(sig)
        } else {
            Exit::Code(st.code().unwrap_or(-1))
        };
        Ok((exit, std::mem::take(&mut output)))
    })
}

fn feed<W: Write, R: Read>(stdin: W, prefix: &[u8], mut content: R) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(64 * 1024, stdin);
    w.write_all(prefix)?;
    copy_lf(&mut content, &mut w)?;
    w.flush()
}

/// Copies `src` to `dst` with CRLF turned into LF (a bare CR is kept) and the last line
/// completed, as mailboxes store mail.
pub fn copy_lf<R: Read, W: Write>(src: &mut R, dst: &mut W) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024 + 1);
    let mut pending_cr = false;
    let mut last = b'\n';
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        for &b in &buf[..n] {
            if pending_cr {
                pending_cr = false;
                if b != b'\n' {
                    out.push(b'\r');
                }
            }
            if b == b'\r' {
                pending_cr = true;
            } else {
                out.push(b);
            }
        }
        if let Some(&l) = out.last() {
            last = l;
        }
        dst.write_all(&out)?;
    }
    if pending_cr {
        dst.write_all(b"\r")?;
        last = b'\r';
    }
    if last != b'\n' {
        dst.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysexits_map_as_postfix() {
        let r = map_exit(Exit::Code(75), "/x", "");
        assert_eq!((r.outcome, r.dsn), (Outcome::Deferred, "4.3.0"));
        assert_eq!(r.text, "temporary failure");
        let r = map_exit(Exit::Code(67), "/x", "no such user");
        assert_eq!((r.outcome, r.dsn), (Outcome::Bounced, "5.1.1"));
        assert_eq!(r.text, "user unknown. Command output: no such user");
        let r = map_exit(Exit::Code(1), "/x", "");
        assert_eq!((r.outcome, r.dsn), (Outcome::Bounced, "5.3.0"));
        assert_eq!(r.text, "Command died with status 1: \"/x\"");
        let r = map_exit(Exit::Code(71), "/x", "");
        assert_eq!(r.outcome, Outcome::Deferred);
        let r = map_exit(Exit::Signal(9), "/x", "");
        assert_eq!((r.outcome, r.dsn), (Outcome::Deferred, "4.3.0"));
        let r = map_exit(Exit::TimedOut, "/x", "");
        assert_eq!((r.outcome, r.dsn), (Outcome::Deferred, "4.3.0"));
        let r = map_exit(Exit::Code(0), "/x", "");
        assert_eq!(r.text, "delivered to command: /x");
    }

    #[test]
    fn output_is_cleaned() {
        assert_eq!(clean_output(b"a\tb\nc\x01\n"), "a b c_");
    }

    #[test]
    fn lf_conversion() {
        let conv = |input: &[u8]| {
            let mut out = Vec::new();
            copy_lf(&mut &input[..], &mut out).expect("copy");
            out
        };
        assert_eq!(conv(b"a\r\nb\r\n"), b"a\nb\n");
        assert_eq!(conv(b"a\rb"), b"a\rb\n");
        assert_eq!(conv(b""), b"");
    }

    fn invocation<'a>(command: &'a str, limit: Duration) -> Invocation<'a> {
        Invocation {
            command,
            env: vec![("RECIPIENT".into(), "a@b".into())],
            export: &[],
            cwd: Path::new("/"),
            time_limit: limit,
        }
    }

    #[test]
    fn runs_commands_with_env_input_and_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let cmd = format!(
            "cat > {}; echo \"$RECIPIENT $PATH\" >> {}",
            out.display(),
            out.display()
        );
        let r = deliver(
            &invocation(&cmd, Duration::from_secs(10)),
            b"From x\n",
            &b"a\r\nb"[..],
        );
        assert_eq!(r.outcome, Outcome::Delivered, "{r:?}");
        let got = std::fs::read_to_string(&out).expect("read");
        assert_eq!(got, "From x\na\nb\na@b /usr/bin:/bin\n");
        let r = deliver(
            &invocation("echo busy; exit 75", Duration::from_secs(10)),
            b"",
            &b"x"[..],
        );
        assert_eq!(r.text, "temporary failure. Command output: busy");
        let started = Instant::now();
        let r = deliver(
            &invocation("sleep 30", Duration::from_millis(300)),
            b"",
            &b"x"[..],
        );
        assert_eq!(r.outcome, Outcome::Deferred, "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // A command that never reads a large input must not hang the writer.
        let big = vec![b'x'; 4 << 20];
        let r = deliver(
            &invocation("exit 0", Duration::from_secs(10)),
            b"",
            &big[..],
        );
        assert_eq!(r.outcome, Outcome::Delivered);
    }
}

//! Running the command: `argv` executed directly (no shell) in its own process group, with a
//! clean environment (`PATH=/usr/bin:/bin`, `SHELL`, `HOME`, `LOGNAME`, `USER` of the
//! `user=` account), standard input fed from a writer thread and standard output and error
//! collected (the first 1 KiB goes into the reason), and the time limit enforced by killing
//! the whole group. The exit status maps as Postfix's `pipe_command()`: 0 delivered,
//! `EX_TEMPFAIL` (75) and `EX_OSERR` (71) or a signal deferred, another sysexit with its own
//! DSN, any other status bounced (`5.3.0`), a time-out bounced (`5.3.0 Command time limit
//! exceeded`, as Postfix).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use oxipost_ipc::Outcome;

const OUTPUT_KEEP: usize = 1024;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    TimedOut,
}

/// The result of one command run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    pub outcome: Outcome,
    pub dsn: &'static str,
    pub text: String,
}

/// The account the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// `None`: stay as this process (not running as root).
    pub ids: Option<(u32, u32)>,
    pub name: String,
    pub home: String,
    pub shell: String,
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

/// Maps how the command ended (and its cleaned output) to a result. `service` names the
/// transport in the success text, as Postfix's `delivered via myfilter service`.
pub fn map_exit(exit: Exit, command: &str, output: &str, service: &str) -> CommandResult {
    let out = if output.is_empty() {
        String::new()
    } else {
        format!(". Command output: {output}")
    };
    let (outcome, dsn, text) = match exit {
        Exit::Code(0) => (
            Outcome::Delivered,
            "2.0.0",
            if output.is_empty() {
                format!("delivered via {service} service")
            } else {
                format!("delivered via {service} service ({output})")
            },
        ),
        Exit::TimedOut => (
            Outcome::Bounced,
            "5.3.0",
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

/// Output as it goes into a reason: white space becomes spaces, controls `_`.
pub fn clean_output(raw: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    s.trim().to_string()
}

/// Runs `argv`, writing `input` to its standard input through `feed` on a helper thread.
pub fn run<F>(
    argv: &[String],
    who: &RunAs,
    cwd: &str,
    limit: Duration,
    service: &str,
    feed: F,
) -> CommandResult
where
    F: FnOnce(&mut dyn Write) -> io::Result<()> + Send,
{
    let command = argv.first().cloned().unwrap_or_default();
    match spawn_and_wait(argv, who, cwd, limit, feed) {
        Ok((exit, output)) => map_exit(exit, &command, &clean_output(&output), service),
        Err(e) => CommandResult {
            outcome: Outcome::Deferred,
            dsn: "4.3.0",
            text: format!("cannot run command \"{command}\": {e}"),
        },
    }
}

fn spawn_and_wait<F>(
    argv: &[String],
    who: &RunAs,
    cwd: &str,
    limit: Duration,
    feed: F,
) -> io::Result<(Exit, Vec<u8>)>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()> + Send,
{
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::other("empty command"))?;
    let (out_rd, out_wr) = nix::unistd::pipe().map_err(io::Error::from)?;
    let err_wr = out_wr.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SHELL", &who.shell)
        .env("HOME", &who.home)
        .env("LOGNAME", &who.name)
        .env("USER", &who.name)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out_wr))
        .stderr(Stdio::from(err_wr))
        .process_group(0);
    if let Some((uid, gid)) = who.ids {
        // std drops supplementary groups when root sets a uid.
        cmd.gid(gid).uid(uid);
    }
    let mut child = cmd.spawn()?;
    drop(cmd);
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let stdin = child.stdin.take();
    let deadline = Instant::now() + limit;
    let mut output = Vec::new();
    let mut reader = std::fs::File::from(out_rd);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                // A command that stops reading early (EPIPE) is not an error (Postfix).
                let _ = feed(&mut stdin);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> RunAs {
        RunAs {
            ids: None,
            name: "me".into(),
            home: "/".into(),
            shell: "/bin/sh".into(),
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn sysexits_map_as_postfix() {
        let r = map_exit(Exit::Code(75), "/x", "", "f");
        assert_eq!((r.outcome, r.dsn), (Outcome::Deferred, "4.3.0"));
        let r = map_exit(Exit::Code(67), "/x", "who", "f");
        assert_eq!((r.outcome, r.dsn), (Outcome::Bounced, "5.1.1"));
        assert_eq!(r.text, "user unknown. Command output: who");
        let r = map_exit(Exit::Code(3), "/x", "", "f");
        assert_eq!(r.text, "Command died with status 3: \"/x\"");
        assert_eq!(
            map_exit(Exit::Signal(9), "/x", "", "f").outcome,
            Outcome::Deferred
        );
        assert_eq!(
            map_exit(Exit::TimedOut, "/x", "", "f").outcome,
            Outcome::Bounced
        );
        assert_eq!(
            map_exit(Exit::Code(0), "/x", "", "f").text,
            "delivered via f service"
        );
    }

    #[test]
    fn runs_with_input_output_and_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let script = format!("cat > {}; echo \"$USER $PATH\"", out.display());
        let r = run(
            &sh(&script),
            &me(),
            "/",
            Duration::from_secs(10),
            "f",
            |w| w.write_all(b"hello\n"),
        );
        assert_eq!(r.outcome, Outcome::Delivered, "{r:?}");
        assert_eq!(r.text, "delivered via f service (me /usr/bin:/bin)");
        assert_eq!(std::fs::read(&out).expect("read"), b"hello\n");
        let r = run(
            &sh("echo busy; exit 75"),
            &me(),
            "/",
            Duration::from_secs(10),
            "f",
            |_| Ok(()),
        );
        assert_eq!(r.text, "temporary failure. Command output: busy");
        let started = Instant::now();
        let r = run(
            &sh("sleep 30"),
            &me(),
            "/",
            Duration::from_millis(300),
            "f",
            |_| Ok(()),
        );
        assert_eq!(r.outcome, Outcome::Bounced, "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let big = vec![b'x'; 4 << 20];
        let r = run(
            &sh("exit 0"),
            &me(),
            "/",
            Duration::from_secs(10),
            "f",
            |w| w.write_all(&big),
        );
        assert_eq!(r.outcome, Outcome::Delivered);
        let r = run(
            &["/nonexistent/x".to_string()],
            &me(),
            "/",
            Duration::from_secs(1),
            "f",
            |_| Ok(()),
        );
        assert_eq!(r.outcome, Outcome::Deferred);
    }
}

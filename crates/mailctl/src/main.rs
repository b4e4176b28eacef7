//! mailctl(1): the administrator's control program, like postfix(1): validates the
//! configuration, creates the queue directories, starts master (detached or in the
//! foreground), stops, aborts and reloads it, reports its status and asks qmgr to flush;
//! `init` writes a ready-to-run unprivileged instance. It talks to master only through
//! signals, the instance lock, the pid file and master's status file (see master(8)); it
//! must not start services itself or change a running master's files.

mod control;
mod init;
mod setup;

use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use oxipost_log::{fatal, info, warning};
use std::path::PathBuf;

/// Control the oxipost mail system.
#[derive(Parser, Debug)]
#[command(name = "mailctl", version, about, long_about = None)]
struct Args {
    /// Configuration directory (default: MAIL_CONFIG, else /etc/oxipost).
    #[arg(short = 'c', value_name = "DIR", global = true)]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check the configuration, create missing queue directories, start master detached
    /// and wait until its listeners are up.
    Start,
    /// Like start, but run master in the foreground (for systemd and other supervisors).
    StartFg,
    /// Stop master and its workers gracefully (then forcefully after 10 seconds).
    Stop,
    /// Stop master and its workers at once.
    Abort,
    /// Make master re-read main.cf and master.cf.
    Reload,
    /// Whether the mail system runs: master's pid, uptime and workers per service.
    Status,
    /// Check main.cf, master.cf and the queue directories.
    Check,
    /// Ask the queue manager to retry deferred mail now.
    Flush,
    /// Write a ready-to-run unprivileged configuration and spool into DIR.
    Init {
        /// The instance directory (created if needed).
        dir: PathBuf,
        /// Shift the inet ports: smtp = N+525, submission = N+587, pop3 = N+110,
        /// imap = N+143, submissions = N+465, pop3s = N+995, imaps = N+993.
        #[arg(long, value_name = "N", default_value_t = init::DEFAULT_PORT_BASE)]
        port_base: u16,
    },
}

fn setup(args: &Args) -> setup::Setup {
    let (dir, explicit) = oxipost_config::Config::resolve_dir(args.config_dir.as_deref());
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let s = setup::load(&dir, explicit).unwrap_or_else(|e| fatal!("{e}"));
    oxipost_log::init(oxipost_log::Options {
        syslog_name: s.syslog_name.clone(),
        program: "mailctl".into(),
        facility: s.syslog_facility.clone(),
        syslog: false,
        maillog_file: s.maillog_file.clone(),
        stderr: true,
    });
    s
}

/// Messages for the person at the terminal only (not the mail log).
fn say(text: &str) {
    eprintln!("mailctl: {text}");
}

fn main() {
    oxipost_log::init_tool("mailctl");
    let args = Args::parse();
    let code = match &args.command {
        Cmd::Init { dir, port_base } => match init::init(dir, *port_base) {
            Ok(written) => {
                for p in &written {
                    println!("{}", p.display());
                }
                let etc = dir.join("etc");
                say(&format!(
                    "start it with: mailctl -c {} start",
                    etc.display()
                ));
                0
            }
            Err(e) => fatal!("{e}"),
        },
        Cmd::Check => {
            let s = setup(&args);
            for w in s.warnings.iter().chain(s.check_dirs().iter()) {
                say(&format!("warning: {w}"));
            }
            0
        }
        Cmd::Start | Cmd::StartFg => {
            let s = setup(&args);
            if !s.warnings.is_empty() {
                say(&format!(
                    "warning: {} service(s) name programs that do not exist: see mailctl check",
                    s.warnings.len()
                ));
            }
            if control::running(&s) {
                fatal!("the mail system is already running");
            }
            if let Err(e) = s.create_dirs() {
                fatal!("{e}");
            }
            if matches!(args.command, Cmd::StartFg) {
                fatal!("{}", control::start_fg(&s));
            }
            match control::start(&s) {
                Ok(pid) => {
                    info!("starting the mail system (master pid {pid})");
                    0
                }
                Err(e) => fatal!("the mail system did not start: {e}"),
            }
        }
        Cmd::Stop | Cmd::Abort => {
            let s = setup(&args);
            if !control::running(&s) {
                fatal!("the mail system is not running");
            }
            let (sig, grace, what) = match args.command {
                Cmd::Stop => (Signal::SIGTERM, control::stop_timeout(), "stopping"),
                _ => (
                    Signal::SIGINT,
                    std::time::Duration::from_secs(3),
                    "aborting",
                ),
            };
            info!("{what} the mail system");
            match control::stop(&s, sig, grace) {
                Ok(()) => 0,
                Err(e) => fatal!("{e}"),
            }
        }
        Cmd::Reload => {
            let s = setup(&args);
            if !control::running(&s) {
                fatal!("the mail system is not running");
            }
            match control::signal(&s, Signal::SIGHUP) {
                Ok(_) => {
                    info!("refreshing the mail system");
                    0
                }
                Err(e) => fatal!("{e}"),
            }
        }
        Cmd::Status => {
            let s = setup(&args);
            if !control::running(&s) {
                say("the mail system is not running");
                std::process::exit(1);
            }
            status(&s);
            0
        }
        Cmd::Flush => {
            let s = setup(&args);
            if !control::running(&s) {
                fatal!("the mail system is not running");
            }
            match control::flush(&s) {
                Ok(()) => 0,
                Err(e) => fatal!("{e}"),
            }
        }
    };
    std::process::exit(code);
}

fn status(s: &setup::Setup) {
    let pid = control::master_pid(s)
        .map(|p| p.to_string())
        .unwrap_or_else(|| "unknown".into());
    let Some(st) = control::read_status(s) else {
        warning!("no status file from master yet");
        say(&format!("the mail system is running: pid {pid}"));
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    say(&format!(
        "the mail system is running: pid {pid}, up {}",
        control::format_uptime(now.saturating_sub(st.started))
    ));
    let width = st.services.iter().map(|x| x.key.len()).max().unwrap_or(0);
    for x in &st.services {
        let limit = if x.limit == 0 {
            "unlimited".to_string()
        } else {
            x.limit.to_string()
        };
        println!(
            "{:<width$}  workers {} (idle {}), limit {limit}{}",
            x.key,
            x.total,
            x.idle,
            if x.throttled { ", throttled" } else { "" }
        );
    }
}

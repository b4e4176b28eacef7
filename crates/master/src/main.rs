//! master(8): the resident supervisor of the suite. It owns every listening endpoint of
//! master.cf (inet, unix, unix-dgram, fifo), starts each service's workers on demand with
//! the master <-> worker protocol of [`oxipost_daemon::proto`], counts idle and busy
//! workers from their status records, replaces workers that die, throttles services that
//! fail at start, sends wakeups, reloads on SIGHUP and stops everything on SIGTERM.
//! It must not speak any mail protocol, read a client's bytes, or trust a worker beyond
//! its status records; it never runs a service's code in its own process.

mod conf;
mod listen;
mod lock;
mod reload;
mod service;
mod signals;
mod spawn;
mod status;
mod supervisor;

use clap::Parser;
use oxipost_log::info;
use std::path::PathBuf;

/// The oxipost master daemon: supervises the services of master.cf.
#[derive(Parser, Debug)]
#[command(name = "master", version, about, long_about = None)]
struct Args {
    /// Configuration directory (default: MAIL_CONFIG, else /etc/oxipost).
    #[arg(short = 'c', value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Stay in the foreground (accepted for Postfix compatibility: master never detaches
    /// itself; `mailctl start` does the detaching).
    #[arg(short = 'd')]
    foreground: bool,
    /// Test mode: exit 0 when no master runs for this configuration, 1 when one does.
    #[arg(short = 't')]
    test: bool,
    /// Started by `mailctl start`: stderr is a pipe to the starter, closed (redirected to
    /// /dev/null) once every endpoint is open, which tells the starter that startup is done.
    #[arg(long, hide = true)]
    detached: bool,
}

/// (Re)initialises logging: `<syslog_name>/master` to maillog_file when set, else syslog.
pub fn init_logging(s: &conf::Settings, stderr: bool) {
    oxipost_log::init(oxipost_log::Options {
        syslog_name: s.syslog_name.clone(),
        program: "master".into(),
        facility: s.syslog_facility.clone(),
        syslog: s.maillog_file.is_empty(),
        maillog_file: s.maillog_file.clone(),
        stderr,
    });
}

fn fail(msg: &str) -> ! {
    eprintln!("master: fatal: {msg}");
    std::process::exit(1)
}

fn main() {
    let args = Args::parse();
    let (dir, explicit) = oxipost_config::Config::resolve_dir(args.config_dir.as_deref());
    // Workers run elsewhere (master changes to queue_directory): MAIL_CONFIG must be absolute.
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    // SAFETY: umask only sets the process's file creation mask.
    unsafe {
        libc::umask(0o022);
    }
    let loaded = match conf::load(&dir, explicit) {
        Ok(l) => l,
        Err(e) => fail(&e),
    };
    let settings = loaded.settings.clone();
    if args.test {
        let running = std::fs::File::open(settings.data_directory.join(lock::LOCK_NAME))
            .map(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)))
            .unwrap_or(false);
        std::process::exit(i32::from(running));
    }
    init_logging(&settings, true);
    if let Err(e) = std::fs::create_dir_all(&settings.data_directory) {
        oxipost_log::fatal!("{}: {e}", settings.data_directory.display());
    }
    let lock = match lock::InstanceLock::acquire(&settings.data_directory, &settings.pid_file) {
        Ok(l) => l,
        Err(lock::LockError::Running) => {
            oxipost_log::fatal!("the mail system is already running")
        }
        Err(lock::LockError::Io(e)) => oxipost_log::fatal!("{e}"),
    };
    if let Err(e) = std::env::set_current_dir(&settings.queue_directory) {
        lock.release();
        oxipost_log::fatal!("chdir {}: {e}", settings.queue_directory.display());
    }
    let mut opened = Vec::new();
    for sc in &loaded.services {
        let mut st = match service::ServiceState::new(sc.clone()) {
            Ok(s) => s,
            Err(e) => {
                lock.release();
                oxipost_log::fatal!("service {}: status pipe: {e}", sc.key())
            }
        };
        match listen::open(&sc.endpoint, settings.owner) {
            Ok(fds) => st.listen = fds,
            Err(e) => {
                lock.release();
                oxipost_log::fatal!("service {}: {e}", sc.key())
            }
        }
        opened.push(st);
    }
    let mut sup = match supervisor::Supervisor::new(loaded, opened, lock) {
        Ok(s) => s,
        Err(e) => oxipost_log::fatal!("event loop: {e}"),
    };
    info!(
        "daemon started -- version {}, configuration {}",
        env!("CARGO_PKG_VERSION"),
        dir.display()
    );
    sup.write_status();
    init_logging(&settings, false);
    if args.detached {
        detach_stderr();
    }
    let _ = args.foreground;
    std::process::exit(sup.run());
}

/// Points stderr at /dev/null, which closes the starter's pipe.
fn detach_stderr() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 of an open descriptor onto stderr.
        unsafe {
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

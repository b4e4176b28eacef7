//! Logging for every program of the suite, in Postfix's line format so that existing log
//! tools (pflogsumm, fail2ban, grep habits) parse it: `ident[pid]: text`, where ident is
//! `<syslog_name>/<program>` and text is `QUEUEID: key=value, ...` or `warning: ...`. Lines
//! go to syslog (facility from `syslog_facility`, over `/dev/log`, reconnecting when syslogd
//! restarts), to `maillog_file` when set (Postfix 3.4's way to log without syslog; also
//! `/dev/stdout`), and to stderr for interactive tools. It owns no configuration parsing:
//! callers pass plain values. It never logs on its own; what is logged is the caller's
//! choice — and credentials must never be passed in.

use std::fmt;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// Syslog severities used by the suite (Postfix's msg_info/warn/error/fatal/panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warning,
    Error,
    Fatal,
    Panic,
}

impl Level {
    fn prefix(self) -> &'static str {
        match self {
            Level::Info => "",
            Level::Warning => "warning: ",
            Level::Error => "error: ",
            Level::Fatal => "fatal: ",
            Level::Panic => "panic: ",
        }
    }

    fn severity(self) -> u8 {
        match self {
            Level::Info => 6,
            Level::Warning => 4,
            Level::Error => 3,
            Level::Fatal => 2,
            Level::Panic => 0,
        }
    }
}

/// Where and as whom to log.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `syslog_name` (e.g. `postfix`, `oxipost`); ident is `syslog_name/program`.
    pub syslog_name: String,
    /// The program name, e.g. `smtpd`.
    pub program: String,
    /// `syslog_facility`, e.g. `mail`.
    pub facility: String,
    /// Log to syslog through `/dev/log` when it exists.
    pub syslog: bool,
    /// `maillog_file`: empty for none.
    pub maillog_file: String,
    /// Also write `program: text` to stderr (tools run by a person).
    pub stderr: bool,
}

struct Logger {
    opts: Options,
    /// Looked up once: every log line needs it, and a system call per line is not free.
    host: String,
    ident: String,
    facility: u8,
    syslog: Option<UnixDatagram>,
    file: Option<std::fs::File>,
    /// `maillog_file` lines not yet written (see [`hold`]).
    pending: Vec<u8>,
    /// Whether file lines wait in `pending` for [`flush`].
    holding: bool,
}

/// Beyond this many held bytes a line is written at once (with everything before it).
const HOLD_LIMIT: usize = 32 << 10;

/// This process's pid, looked up once (0: not yet, or reset in a forked child); `getpid` is
/// a system call, and every line needs the pid.
static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}

/// This process's pid without a system call after the first (forked children look theirs
/// up again): for log lines and unique file names on per-message paths.
pub fn pid() -> u32 {
    let p = PID.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic; forked children (the
        // agents' per-user delivery processes) then look their own pid up again.
        unsafe {
            libc::pthread_atfork(None, None, Some(forget_pid));
        }
    });
    let p = std::process::id();
    PID.store(p, Ordering::Relaxed);
    p
}

static LOGGER: OnceLock<Mutex<Logger>> = OnceLock::new();

fn facility_code(name: &str) -> u8 {
    match name {
        "kern" => 0,
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => 2, // mail
    }
}

fn connect_syslog() -> Option<UnixDatagram> {
    let sock = UnixDatagram::unbound().ok()?;
    sock.connect("/dev/log").ok()?;
    Some(sock)
}

fn open_file(path: &str) -> Option<std::fs::File> {
    if path.is_empty() {
        return None;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()
}

/// Sets up logging for this process. Call it before chroot or privilege drops so that
/// `/dev/log` and `maillog_file` are opened while they can be (as Postfix does). Calling it
/// again (after a configuration reload) replaces the settings.
pub fn init(opts: Options) {
    let ident = if opts.syslog_name.is_empty() {
        opts.program.clone()
    } else {
        format!("{}/{}", opts.syslog_name, opts.program)
    };
    let logger = Logger {
        host: hostname(),
        facility: facility_code(&opts.facility),
        syslog: if opts.syslog { connect_syslog() } else { None },
        file: open_file(&opts.maillog_file),
        ident,
        opts,
        pending: Vec::new(),
        holding: false,
    };
    match LOGGER.get() {
        Some(m) => {
            if let Ok(mut g) = m.lock() {
                g.write_pending();
                let holding = g.holding;
                *g = logger;
                g.holding = holding;
            }
        }
        None => {
            let _ = LOGGER.set(Mutex::new(logger));
        }
    }
}

impl Logger {
    fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.file.is_none() {
            self.file = open_file(&self.opts.maillog_file);
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(&self.pending);
        }
        self.pending.clear();
    }
}

/// From now on `maillog_file` lines of this process wait in memory until [`flush`], so that
/// an event loop writes the lines of one round with one system call. The loop must call
/// [`flush`] before it sleeps; warnings and worse, a full buffer, a panic and
/// [`fatal!`] write at once (with everything held before them, in order). Syslog and stderr
/// are not held.
pub fn hold() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(m) = LOGGER.get()
                && let Ok(mut g) = m.try_lock()
            {
                g.write_pending();
            }
            previous(info);
        }));
    });
    if let Some(m) = LOGGER.get()
        && let Ok(mut g) = m.lock()
    {
        g.holding = true;
    }
}

/// Writes the held lines (see [`hold`]); cheap when there are none.
pub fn flush() {
    if let Some(m) = LOGGER.get()
        && let Ok(mut g) = m.lock()
    {
        g.write_pending();
    }
}

/// Ends [`hold`]: writes the held lines, and later lines go out one by one again (a loop
/// that is about to return, so that nothing is left behind at exit).
pub fn release() {
    if let Some(m) = LOGGER.get()
        && let Ok(mut g) = m.lock()
    {
        g.holding = false;
        g.write_pending();
    }
}

/// Initialises logging for a command-line tool: stderr plus syslog, Postfix style.
pub fn init_tool(program: &str) {
    init(Options {
        syslog_name: "oxipost".into(),
        program: program.into(),
        facility: "mail".into(),
        syslog: false,
        maillog_file: String::new(),
        stderr: true,
    });
}

/// `Mmm dd hh:mm:ss` in local time, as syslog writes it.
pub fn timestamp(now: libc::time_t) -> String {
    // SAFETY: localtime_r writes only into the tm we pass and reads the time we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if !ok {
        return "Jan  1 00:00:00".into();
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[(tm.tm_mon.clamp(0, 11)) as usize];
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        month, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let full = String::from_utf8_lossy(&buf[..end]).into_owned();
    full.split('.').next().unwrap_or("localhost").to_string()
}

/// Formats one log line as it appears in a maillog file.
pub fn format_file_line(
    now: libc::time_t,
    host: &str,
    ident: &str,
    pid: u32,
    text: &str,
) -> String {
    format!("{} {} {}[{}]: {}\n", timestamp(now), host, ident, pid, text)
}

/// Writes one event. Lines never contain newlines (a peer's bytes could forge entries).
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    let mut text = format!("{}{}", level.prefix(), args);
    if text.contains(['\n', '\r']) {
        text = text.replace(['\n', '\r'], " ");
    }
    let Some(m) = LOGGER.get() else {
        eprintln!("{text}");
        return;
    };
    let Ok(mut g) = m.lock() else {
        return;
    };
    let pid = pid();
    // SAFETY: time(NULL) only returns the clock.
    let now = unsafe { libc::time(std::ptr::null_mut()) };
    if g.opts.stderr {
        let _ = writeln!(std::io::stderr(), "{}: {}", g.opts.program, text);
    }
    if g.opts.syslog {
        let pri = g.facility * 8 + level.severity();
        let msg = format!("<{}>{} {}[{}]: {}", pri, timestamp(now), g.ident, pid, text);
        let sent = g
            .syslog
            .as_ref()
            .is_some_and(|s| s.send(msg.as_bytes()).is_ok());
        if !sent {
            // syslogd may have restarted: reconnect once and retry.
            g.syslog = connect_syslog();
            if let Some(s) = g.syslog.as_ref() {
                let _ = s.send(msg.as_bytes());
            }
        }
    }
    if !g.opts.maillog_file.is_empty() {
        if g.file.is_none() {
            g.file = open_file(&g.opts.maillog_file);
        }
        let line = format_file_line(now, &g.host, &g.ident, pid, &text);
        g.pending.extend_from_slice(line.as_bytes());
        if !g.holding || level >= Level::Warning || g.pending.len() >= HOLD_LIMIT {
            g.write_pending();
        }
    }
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log($crate::Level::Info, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warning {
    ($($arg:tt)*) => { $crate::log($crate::Level::Warning, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log($crate::Level::Error, format_args!($($arg)*)) };
}

/// Logs `fatal: ...` and exits with status 1, as Postfix's msg_fatal.
#[macro_export]
macro_rules! fatal {
    ($($arg:tt)*) => {{
        $crate::log($crate::Level::Fatal, format_args!($($arg)*));
        ::std::process::exit(1)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_line_format_matches_postfix() {
        let line = format_file_line(0, "mx", "postfix/smtpd", 42, "connect from x[1.2.3.4]");
        // "Mmm dd hh:mm:ss host ident[pid]: text"
        let parts: Vec<&str> = line.splitn(5, ' ').collect();
        assert!(
            line.ends_with(" mx postfix/smtpd[42]: connect from x[1.2.3.4]\n"),
            "{line}"
        );
        assert_eq!(parts[0].len(), 3);
    }

    #[test]
    fn writes_to_maillog_file_without_newline_injection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maillog");
        init(Options {
            syslog_name: "oxipost".into(),
            program: "test".into(),
            facility: "mail".into(),
            syslog: false,
            maillog_file: path.to_string_lossy().into_owned(),
            stderr: false,
        });
        warning!("bad thing from {}", "peer\nfake: line");
        info!("ABC123: to=<u@example.com>, status=sent");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("oxipost/test["), "{text}");
        assert!(lines[0].ends_with("]: warning: bad thing from peer fake: line"));
        assert!(lines[1].ends_with("]: ABC123: to=<u@example.com>, status=sent"));
    }
}

//! smtpd's side of the milter protocol (`smtpd_milters`): the configuration, a runner that
//! takes a finished transaction to the milters on a helper thread (milter calls block) and
//! wakes the event loop when they have decided, and the application of their verdict to the
//! queue file before it is committed and the client answered.
//!
//! While milters are configured (and `receive_override_options` does not say
//! `no_milters`), the message content of a transaction is held in memory instead of being
//! streamed to the queue file, so that header and body modifications can be applied before
//! it is written. The whole transaction — connect, HELO, MAIL, every RCPT, DATA, headers,
//! body, end of message — is replayed to each milter at end of data: a reject at any stage
//! refuses the message there (at `.`), not at the command it answered. Envelope changes
//! (add/delete recipient, change sender) rebuild the queue file with its envelope changed.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use oxipost_config::Config;
use oxipost_milter::{
    DefaultAction, Family, MilterSettings, Response, Stage, Timeouts, Transaction, Verdict,
};
use oxipost_queue::{PreparedFile, QueueError, QueueFile, QueueWriter, Recipient, WriterOptions};

/// Reads `smtpd_milters` and the `milter_*` parameters (empty list, or `no_milters` in
/// `receive_override_options`: no milters).
pub fn settings(cfg: &Config) -> Result<Arc<MilterSettings>, String> {
    let get = |n: &str| cfg.get(n).map_err(|e| format!("parameter {n}: {e}"));
    let time = |n: &str| cfg.get_time(n).map_err(|e| format!("parameter {n}: {e}"));
    let overrides = get("receive_override_options")?.to_ascii_lowercase();
    if overrides.split([' ', ',', '\t']).any(|w| w == "no_milters") {
        return Ok(Arc::new(MilterSettings::default()));
    }
    let list = get("smtpd_milters")?;
    if list.trim().is_empty() {
        return Ok(Arc::new(MilterSettings::default()));
    }
    let words = |n: &str| -> Result<Vec<String>, String> {
        Ok(get(n)?.split_whitespace().map(str::to_string).collect())
    };
    let macros = vec![
        (Stage::Connect, words("milter_connect_macros")?),
        (Stage::Helo, words("milter_helo_macros")?),
        (Stage::Mail, words("milter_mail_macros")?),
        (Stage::Rcpt, words("milter_rcpt_macros")?),
        (Stage::Data, words("milter_data_macros")?),
        (Stage::Eoh, words("milter_end_of_header_macros")?),
        (Stage::Eom, words("milter_end_of_data_macros")?),
    ];
    let timeouts = Timeouts {
        connect: time("milter_connect_timeout")?,
        command: time("milter_command_timeout")?,
        content: time("milter_content_timeout")?,
    };
    let action = DefaultAction::parse(&get("milter_default_action")?)?;
    MilterSettings::parse(&list, action, timeouts, macros)
        .map(Arc::new)
        .map_err(|e| format!("parameter smtpd_milters: {e}"))
}

/// A finished message waiting for the milters: its queue file (envelope written, content
/// not yet), the access-table actions to record, and what the log lines need.
pub struct Held {
    pub writer: QueueWriter,
    pub actions: crate::restrict::Actions,
    pub hold: bool,
    pub sender: String,
    pub rcpts: Vec<String>,
}

/// A transaction as handed to the helper thread (owned).
pub struct Input {
    pub client_name: String,
    pub client_addr: String,
    pub client_port: u16,
    pub helo: Option<String>,
    pub sender: String,
    pub rcpts: Vec<String>,
    pub message: Vec<u8>,
    pub macros: HashMap<String, String>,
}

/// What the milters said, with the warnings to log.
pub struct Decision {
    pub verdict: Verdict,
    pub warnings: Vec<String>,
    /// The message the verdict is about (to be modified and written).
    pub message: Vec<u8>,
}

type Ready = Arc<Mutex<HashMap<usize, (u64, Decision)>>>;

/// Milter conversations on helper threads, and the pipe that wakes the event loop.
pub struct Runner {
    pub settings: Arc<MilterSettings>,
    ready: Ready,
    wake_read: OwnedFd,
    wake_write: Arc<OwnedFd>,
}

impl Runner {
    pub fn new(settings: Arc<MilterSettings>) -> io::Result<Runner> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(io::Error::from)?;
        Ok(Runner {
            settings,
            ready: Arc::new(Mutex::new(HashMap::new())),
            wake_read: r,
            wake_write: Arc::new(w),
        })
    }

    /// Whether transactions go to milters at all.
    pub fn enabled(&self) -> bool {
        !self.settings.milters.is_empty()
    }

    pub fn wake_fd(&self) -> RawFd {
        self.wake_read.as_raw_fd()
    }

    /// Drains the wake pipe; the connections whose decision is ready.
    pub fn woken(&self) -> Vec<usize> {
        let mut buf = [0u8; 256];
        while matches!(nix::unistd::read(self.wake_read.as_fd(), &mut buf), Ok(n) if n > 0) {}
        self.ready
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The decision for `conn` if it is ready and is for `serial`.
    pub fn take(&self, conn: usize, serial: u64) -> Option<Decision> {
        let mut r = self.ready.lock().ok()?;
        match r.remove(&conn) {
            Some((s, d)) if s == serial => Some(d),
            _ => None,
        }
    }

    /// Forgets a closed connection's decision.
    pub fn forget(&self, conn: usize) {
        if let Ok(mut r) = self.ready.lock() {
            r.remove(&conn);
        }
    }

    /// Runs the transaction past the milters on a new thread.
    pub fn start(&self, conn: usize, serial: u64, input: Input) {
        let settings = Arc::clone(&self.settings);
        let ready = Arc::clone(&self.ready);
        let wake = Arc::clone(&self.wake_write);
        let job = move || {
            let d = decide(&settings, input);
            if let Ok(mut r) = ready.lock() {
                r.insert(conn, (serial, d));
            }
            let _ = nix::unistd::write(wake.as_fd(), &[1]);
        };
        let job = Arc::new(Mutex::new(Some(job)));
        let in_thread = Arc::clone(&job);
        let spawned = std::thread::Builder::new()
            .name("smtpd-milter".into())
            .spawn(move || {
                if let Some(j) = in_thread.lock().ok().and_then(|mut j| j.take()) {
                    j();
                }
            });
        if spawned.is_err()
            && let Some(j) = job.lock().ok().and_then(|mut j| j.take())
        {
            // No thread: run here (blocking this process, but never losing the message).
            j();
        }
    }
}

fn decide(settings: &MilterSettings, input: Input) -> Decision {
    let family = match input.client_addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => Family::Inet4 {
            port: input.client_port,
            addr: a.to_string(),
        },
        Ok(std::net::IpAddr::V6(a)) => Family::Inet6 {
            port: input.client_port,
            addr: a.to_string(),
        },
        Err(_) => Family::Unknown,
    };
    let macros = &input.macros;
    let lookup = |n: &str| macros.get(n).cloned();
    let t = Transaction {
        client_name: &input.client_name,
        family,
        helo: input.helo.as_deref(),
        mail: vec![format!("<{}>", input.sender)],
        rcpts: input.rcpts.iter().map(|r| vec![format!("<{r}>")]).collect(),
        message: &input.message,
        macros: &lookup,
    };
    let (verdict, warnings) = oxipost_milter::run(settings, &t);
    Decision {
        verdict,
        warnings,
        message: input.message,
    }
}

/// The envelope changes of an accepting verdict.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnvelopeChanges {
    pub add: Vec<String>,
    pub delete: Vec<String>,
    pub sender: Option<String>,
}

fn bare(a: &str) -> String {
    a.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// Applies the header and body modifications to `message` and collects envelope changes.
pub fn apply(mods: &[(Response, bool)], message: &[u8]) -> (Vec<u8>, EnvelopeChanges) {
    let mut out = message.to_vec();
    let mut env = EnvelopeChanges::default();
    // Consecutive modifications with the same header convention are applied together.
    let mut content: Vec<(Response, bool)> = Vec::new();
    for (m, lead) in mods {
        match m {
            Response::AddRcpt { rcpt, .. } => env.add.push(bare(rcpt)),
            Response::DelRcpt(r) => env.delete.push(bare(r)),
            Response::ChangeFrom { from, .. } => env.sender = Some(bare(from)),
            other => content.push((other.clone(), *lead)),
        }
    }
    if !content.is_empty() {
        for chunk in content.chunk_by(|a, b| a.1 == b.1) {
            let list: Vec<Response> = chunk.iter().map(|(r, _)| r.clone()).collect();
            out = oxipost_milter::edit::apply(&out, &list, chunk[0].1);
        }
    }
    (out, env)
}

/// Writes the (modified) content and the added recipients into `w`, and prepares the file.
/// With recipients deleted or the sender changed, the file is rebuilt from the prepared
/// one with its envelope changed (a new queue id).
pub fn write_and_prepare(
    mut w: QueueWriter,
    layout: &oxipost_queue::Layout,
    content: &[u8],
    env: &EnvelopeChanges,
) -> Result<PreparedFile, QueueError> {
    w.write_content(content)?;
    for a in &env.add {
        w.add_recipient(&Recipient::new(a.clone()))?;
    }
    if env.delete.is_empty() && env.sender.is_none() {
        return w.prepare();
    }
    let temp = w.temp_path().to_path_buf();
    let arrival = w.arrival();
    let first = w.prepare()?;
    let qf = QueueFile::open(&temp)?;
    let mut envelope = qf.envelope().clone();
    if let Some(s) = &env.sender {
        envelope.sender = s.clone();
    }
    for r in envelope.recipients.iter_mut() {
        if env
            .delete
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&r.address))
        {
            r.done = true;
        }
    }
    let mut nw = QueueWriter::create(
        layout,
        first.queue(),
        WriterOptions {
            arrival: Some(arrival),
            ..WriterOptions::default()
        },
    )?;
    nw.write_envelope(&envelope)?;
    let mut reader = qf.content();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = io::Read::read(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        nw.write_content(&buf[..n])?;
    }
    drop(first);
    nw.prepare()
}

/// Splits `550 5.7.1 text` into its parts (a reply without an enhanced code gets one).
pub fn split_reply(reply: &str) -> (u16, String, String) {
    let mut it = reply.splitn(2, ' ');
    let code: u16 = it
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(451);
    let rest = it.next().unwrap_or("").trim();
    let (enh, text) = match rest.split_once(' ') {
        Some((e, t)) if e.split('.').count() == 3 && e.starts_with(['4', '5']) => {
            (e.to_string(), t.to_string())
        }
        _ => (
            if code >= 500 { "5.7.1" } else { "4.7.1" }.to_string(),
            rest.to_string(),
        ),
    };
    (code, enh, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split() {
        assert_eq!(
            split_reply("550 5.7.1 go away"),
            (550, "5.7.1".into(), "go away".into())
        );
        assert_eq!(
            split_reply("451 later"),
            (451, "4.7.1".into(), "later".into())
        );
        assert_eq!(split_reply("garbage").0, 451);
    }

    #[test]
    fn modifications_split_into_content_and_envelope() {
        let mods = vec![
            (
                Response::AddHeader {
                    name: "X-A".into(),
                    value: "1".into(),
                },
                false,
            ),
            (
                Response::AddRcpt {
                    rcpt: "<new@x>".into(),
                    args: None,
                },
                false,
            ),
            (Response::DelRcpt("<old@x>".into()), false),
            (
                Response::ChangeFrom {
                    from: "<s@x>".into(),
                    args: None,
                },
                false,
            ),
        ];
        let (msg, env) = apply(&mods, b"Subject: s\r\n\r\nb\r\n");
        assert_eq!(msg, b"Subject: s\r\nX-A: 1\r\n\r\nb\r\n");
        assert_eq!(
            env,
            EnvelopeChanges {
                add: vec!["new@x".into()],
                delete: vec!["old@x".into()],
                sender: Some("s@x".into()),
            }
        );
    }
}

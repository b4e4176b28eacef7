//! The SMTP server's postmaster notices (`notify_classes`): a session that had errors of a
//! class the administrator asked for — `protocol` (unknown commands, syntax, sequence),
//! `policy` (a restriction or milter refused something), `resource` (queue file write
//! errors, tables that cannot be read: `4.3.0`), `software` (configuration errors) — ends
//! with its transcript mailed to `error_notice_recipient`, as Postfix's smtpd does:
//! `Subject: <mail_name> SMTP server: errors from name[addr]`, from
//! `double_bounce_sender`, submitted through the queue like any message.
//!
//! The transcript keeps commands and replies (at most [`MAX_LINES`] lines, each cut at
//! [`MAX_LINE`] bytes), never message content and never SASL data: an `AUTH` line keeps its
//! mechanism only, and responses within an authentication exchange are not recorded.

use std::time::SystemTime;

use oxipost_config::Config;
use oxipost_queue::{Layout, Queue, QueueWriter, Recipient, WriterOptions};

/// Lines kept per session (Postfix's `smtpd_history_flush_threshold`).
pub const MAX_LINES: usize = 100;
/// Bytes kept per line.
pub const MAX_LINE: usize = 200;

const PROTOCOL: u8 = 1;
const POLICY: u8 = 2;
const RESOURCE: u8 = 4;
const SOFTWARE: u8 = 8;

/// What the notices need, read once at start.
#[derive(Debug, Clone, Default)]
pub struct NoticeSettings {
    /// The classes of `notify_classes` smtpd reports (bit mask).
    mask: u8,
    /// `error_notice_recipient`, with `@$myorigin` when it has no domain.
    pub recipient: String,
    /// `double_bounce_sender@$myorigin`.
    pub sender: String,
    pub mail_name: String,
    pub myhostname: String,
}

/// Reads `notify_classes`, `error_notice_recipient`, `double_bounce_sender`.
pub fn settings(cfg: &Config) -> Result<NoticeSettings, String> {
    let get = |n: &str| cfg.get(n).map_err(|e| format!("parameter {n}: {e}"));
    let myorigin = get("myorigin")?.trim().to_ascii_lowercase();
    let qualify = |a: String| {
        let a = a.trim().to_string();
        if a.is_empty() || a.contains('@') {
            a
        } else {
            format!("{a}@{myorigin}")
        }
    };
    let mut mask = 0;
    for c in get("notify_classes")?.split([' ', ',', '\t']) {
        mask |= match c.to_ascii_lowercase().as_str() {
            "protocol" => PROTOCOL,
            "policy" => POLICY,
            "resource" => RESOURCE,
            "software" => SOFTWARE,
            _ => 0,
        };
    }
    Ok(NoticeSettings {
        mask,
        recipient: qualify(get("error_notice_recipient")?),
        sender: qualify(get("double_bounce_sender")?),
        mail_name: get("mail_name")?.trim().to_string(),
        myhostname: get("myhostname")?.trim().to_string(),
    })
}

impl NoticeSettings {
    /// Whether sessions need a transcript at all.
    pub fn enabled(&self) -> bool {
        self.mask != 0 && !self.recipient.is_empty()
    }
}

/// One session's transcript and the error classes it saw.
#[derive(Debug, Default)]
pub struct Transcript {
    lines: Vec<String>,
    errors: u8,
    /// A partial reply line carried to the next output chunk.
    partial: Vec<u8>,
}

fn clip(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The error class of a reply (its first line), if it is an error.
fn classify(line: &str) -> u8 {
    let code = line.get(..3).unwrap_or("");
    if !code.starts_with(['4', '5']) {
        return 0;
    }
    let enhanced = line
        .get(4..)
        .and_then(|r| r.split(' ').next())
        .unwrap_or("");
    if line.contains("configuration error") || enhanced == "4.3.5" {
        SOFTWARE
    } else if line.contains("queue file write error")
        || line.contains("lookup failure")
        || enhanced == "4.3.0"
    {
        RESOURCE
    } else if matches!(code, "500" | "501" | "502" | "503" | "504")
        || enhanced.starts_with("5.5.")
        || enhanced == "4.4.2"
    {
        PROTOCOL
    } else {
        POLICY
    }
}

impl Transcript {
    fn push(&mut self, line: String) {
        if self.lines.len() < MAX_LINES {
            self.lines.push(line);
        }
    }

    /// Client input outside message content. `secret`: an authentication exchange is in
    /// progress (nothing is recorded). Stops at `DATA`/`BDAT` (the rest is content).
    pub fn input(&mut self, data: &[u8], secret: bool) {
        if secret {
            return;
        }
        for line in data.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let text = clip(line);
            let verb = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
            if verb == "AUTH" {
                // The mechanism only: an initial response is a credential.
                let mech = text.split(' ').nth(1).unwrap_or("");
                self.push(format!("In:  AUTH {mech}"));
                return;
            }
            self.push(format!("In:  {text}"));
            if verb == "DATA" || verb == "BDAT" {
                return;
            }
        }
    }

    /// Server output: every reply line, each error reply classified.
    pub fn output(&mut self, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = clip(line);
            // A reply's last line (`250 ...`, not `250-...`) carries the verdict.
            if text.as_bytes().get(3) != Some(&b'-') {
                self.errors |= classify(&text);
            }
            self.push(format!("Out: {text}"));
        }
    }

    /// Whether this session has errors the postmaster asked to hear of.
    pub fn wanted(&self, s: &NoticeSettings) -> bool {
        s.enabled() && self.errors & s.mask != 0
    }

    /// The notice message (CRLF lines).
    pub fn message(&self, s: &NoticeSettings, namaddr: &str, now: SystemTime) -> String {
        let mut m = String::new();
        m.push_str(&format!(
            "From: {} (Mail Delivery System)\r\n",
            if s.sender.is_empty() {
                format!("MAILER-DAEMON@{}", s.myhostname)
            } else {
                s.sender.clone()
            }
        ));
        m.push_str(&format!("To: {} (Postmaster)\r\n", s.recipient));
        m.push_str(&format!(
            "Subject: {} SMTP server: errors from {namaddr}\r\n",
            s.mail_name
        ));
        m.push_str(&format!("Date: {}\r\n", oxipost_cleanup::mail_date(now)));
        m.push_str("Auto-Submitted: auto-generated\r\n");
        m.push_str("MIME-Version: 1.0\r\n");
        m.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        m.push_str("\r\nTranscript of session follows.\r\n\r\n");
        for l in &self.lines {
            m.push_str(&format!(" {l}\r\n"));
        }
        if self.lines.len() >= MAX_LINES {
            m.push_str(" (transcript truncated)\r\n");
        }
        m.push_str("\r\nFor other details, see the local mail logfile\r\n");
        m
    }
}

/// Queues the notice in `incoming/` (made durable before this returns); the queue id.
pub fn submit(
    layout: &Layout,
    s: &NoticeSettings,
    namaddr: &str,
    t: &Transcript,
) -> Result<String, String> {
    let mut w = QueueWriter::create(layout, Queue::Incoming, WriterOptions::default())
        .map_err(|e| e.to_string())?;
    let text = t.message(s, namaddr, SystemTime::now());
    let r = (|| {
        w.set_sender(&s.sender)?;
        w.add_recipient(&Recipient::new(&s.recipient))?;
        w.add_attribute("origin", "smtpd notice")?;
        w.write_content(text.as_bytes())
    })();
    if let Err(e) = r {
        w.abort();
        return Err(e.to_string());
    }
    w.finish()
        .map(|id| id.as_str().to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_redaction() {
        let mut t = Transcript::default();
        t.output(b"220 host ESMTP\r\n");
        t.input(b"AUTH PLAIN c2VjcmV0\r\n", false);
        t.input(b"c2VjcmV0\r\n", true);
        t.output(b"502 5.5.2 Error: command not recognized\r\n");
        t.input(b"DATA\r\nSubject: secret content\r\n", false);
        assert_eq!(t.errors, PROTOCOL);
        t.output(
            b"554 5.7.1 <x@y>: Relay access denied\r\n451 4.3.0 Error: queue file write error\r\n",
        );
        assert_eq!(t.errors, PROTOCOL | POLICY | RESOURCE);
        let s = NoticeSettings {
            mask: POLICY,
            recipient: "postmaster@example.org".into(),
            sender: "double-bounce@example.org".into(),
            mail_name: "oxipost".into(),
            myhostname: "mx.example.org".into(),
        };
        assert!(t.wanted(&s));
        let m = t.message(&s, "client[192.0.2.1]", SystemTime::UNIX_EPOCH);
        assert!(m.contains("Subject: oxipost SMTP server: errors from client[192.0.2.1]\r\n"));
        assert!(
            m.contains(" In:  AUTH PLAIN\r\n") && !m.contains("c2VjcmV0"),
            "{m}"
        );
        assert!(
            m.contains(" In:  DATA\r\n") && !m.contains("secret content"),
            "{m}"
        );
        assert!(m.contains(" Out: 502 5.5.2 Error: command not recognized\r\n"));
        assert_eq!(classify("250 2.0.0 Ok"), 0);
        assert_eq!(
            classify("421 4.3.5 host Server configuration error"),
            SOFTWARE
        );
    }
}

//! Forwarding: the remote addresses an alias or `.forward` expands to are queued again as
//! a new message in `incoming/`, as Postfix's local(8) hands them to cleanup. The new
//! file has the expansion's envelope sender (the `owner-` sender when the alias has an
//! owner), the forwarded recipients with the original recipient's `NOTIFY` and `ORCPT`,
//! the original `RET`/`ENVID`, and the original content after a `Delivered-To:` header
//! (`prepend_delivered_header` contains `forward` by default) that stops forwarding loops.
//! The file is durable before the recipient is reported delivered; qmgr is then woken.

use std::io::Read;
use std::path::Path;

use oxipost_queue::format::attr;
use oxipost_queue::{
    Layout, MailParams, Notify, Queue, QueueFile, QueueWriter, Recipient, WriterOptions,
};

/// The original recipient whose expansion is forwarded.
pub struct Original<'a> {
    pub address: &'a str,
    pub orcpt: Option<&'a str>,
    pub notify: Option<&'a str>,
}

/// Writes the new queue file; returns its queue id.
pub fn forward(
    layout: &Layout,
    qf: &QueueFile,
    orig: &Original<'_>,
    sender: &str,
    recipients: &[String],
    delivered_to: bool,
) -> Result<String, String> {
    let mut w = QueueWriter::create(layout, Queue::Incoming, WriterOptions::default())
        .map_err(|e| format!("cannot create queue file: {e}"))?;
    match write(&mut w, qf, orig, sender, recipients, delivered_to) {
        Ok(()) => w
            .finish()
            .map(|id| id.to_string())
            .map_err(|e| format!("cannot queue forwarded message: {e}")),
        Err(e) => {
            w.abort();
            Err(format!("cannot queue forwarded message: {e}"))
        }
    }
}

fn write(
    w: &mut QueueWriter,
    qf: &QueueFile,
    orig: &Original<'_>,
    sender: &str,
    recipients: &[String],
    delivered_to: bool,
) -> Result<(), oxipost_queue::QueueError> {
    w.set_sender(sender)?;
    let params = &qf.envelope().params;
    if *params != MailParams::default() {
        w.set_params(params)?;
    }
    w.add_attribute(attr::ORIGIN, "local")?;
    w.add_attribute(attr::PROTOCOL_NAME, "local")?;
    let notify = orig.notify.map_or(Notify::default(), parse_notify);
    let orcpt = orig
        .orcpt
        .map(str::to_string)
        .unwrap_or_else(|| format!("rfc822;{}", orig.address));
    for r in recipients {
        w.add_recipient(&Recipient {
            address: r.clone(),
            orcpt: Some(orcpt.clone()),
            notify,
            done: false,
        })?;
    }
    let mut content = qf.content();
    let mut buf = vec![0u8; 64 << 10];
    let n = read_some(&mut content, &mut buf)?;
    if delivered_to {
        let eol = match buf[..n].iter().position(|&b| b == b'\n') {
            Some(p) if p > 0 && buf[p - 1] == b'\r' => "\r\n",
            _ => "\n",
        };
        w.write_content(format!("Delivered-To: {}{eol}", orig.address).as_bytes())?;
    }
    w.write_content(&buf[..n])?;
    loop {
        let n = read_some(&mut content, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        w.write_content(&buf[..n])?;
    }
}

/// `SUCCESS,FAILURE` (as qmgr passes NOTIFY) back to the bit mask.
fn parse_notify(text: &str) -> Notify {
    let mut n = Notify::default();
    for word in text.split(',') {
        n = n | match word.trim().to_ascii_uppercase().as_str() {
            "NEVER" => Notify::NEVER,
            "SUCCESS" => Notify::SUCCESS,
            "FAILURE" => Notify::FAILURE,
            "DELAY" => Notify::DELAY,
            _ => Notify::default(),
        };
    }
    n
}

fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Wakes qmgr (`public/qmgr`, an `I` trigger) after new mail was queued.
pub fn wake_qmgr(queue_directory: &Path) {
    use std::io::Write;
    let path = queue_directory.join("public").join("qmgr");
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(mut s) => {
            let _ = s.write_all(b"I");
        }
        Err(e) => oxipost_log::warning!("trigger {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_round_trip() {
        let n = parse_notify("SUCCESS,FAILURE");
        assert!(n.contains(Notify::SUCCESS) && n.contains(Notify::FAILURE));
        assert!(!n.contains(Notify::DELAY));
        assert!(parse_notify("NEVER").contains(Notify::NEVER));
    }

    #[test]
    fn forwarded_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(oxipost_queue::QueueConfig::new(dir.path())).expect("layout");
        layout.create_all().expect("create");
        let mut w = QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default())
            .expect("writer");
        w.set_sender("a@x.org").expect("sender");
        w.add_recipient(&Recipient::new("list@example.org"))
            .expect("rcpt");
        w.write_content(b"Subject: hi\r\n\r\nbody\r\n")
            .expect("content");
        let id = w.finish().expect("finish");
        let qf = QueueFile::open(layout.path_for(Queue::Incoming, &id)).expect("open");
        let orig = Original {
            address: "list@example.org",
            orcpt: None,
            notify: Some("SUCCESS"),
        };
        let new = forward(
            &layout,
            &qf,
            &orig,
            "owner-list@example.org",
            &["x@remote.net".to_string()],
            true,
        )
        .expect("forward");
        let id = oxipost_queue::QueueId::parse(&new).expect("id");
        let f = QueueFile::open(layout.path_for(Queue::Incoming, &id)).expect("open");
        assert_eq!(f.sender(), "owner-list@example.org");
        assert_eq!(f.recipients()[0].address, "x@remote.net");
        assert_eq!(
            f.recipients()[0].orcpt.as_deref(),
            Some("rfc822;list@example.org")
        );
        assert!(f.recipients()[0].notify.contains(Notify::SUCCESS));
        let mut text = String::new();
        f.content().read_to_string(&mut text).expect("read");
        assert_eq!(
            text,
            "Delivered-To: list@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
        );
    }
}

//! One maildrop file into one incoming file.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::SystemTime;

use oxipost_cleanup::{Cleanup, CleanupOptions, CleanupSettings, Verdict, mail_date};
use oxipost_postdrop::{ATTR_UID, Settings};
use oxipost_queue::format::attr;
use oxipost_queue::{Layout, Queue, QueueError, QueueFile, QueueId, QueueWriter, WriterOptions};

/// What became of one maildrop file.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Queued under this incoming id.
    Queued(QueueId),
    /// Moved to corrupt/.
    Corrupt,
    /// Left for later (not readable yet, or a transient error).
    Skipped,
}

pub struct Picker {
    settings: Settings,
    layout: Layout,
    cleanup: Arc<CleanupSettings>,
    /// `non_smtpd_milters` (empty: none).
    milters: oxipost_milter::MilterSettings,
    /// `milter_header_checks`, for the headers those milters add or change.
    milter_header_checks: oxipost_cleanup::checks::Checks,
}

/// What writing the incoming file came to.
enum Written {
    Queued(QueueId),
    /// Header/body checks or a milter said DISCARD: nothing queued.
    Dropped,
    /// Header/body checks or a milter said REJECT (`5.7.1 text`): the message is queued
    /// to be bounced to its sender with that text, as Postfix's cleanup does for pickup.
    Bounce(String),
    /// Rewriting or checks could not answer now: try again at the next wakeup.
    Retry(String),
}

impl Picker {
    pub fn new(settings: Settings, cleanup: Arc<CleanupSettings>) -> Result<Picker, String> {
        let layout = settings.layout()?;
        Ok(Picker {
            settings,
            layout,
            cleanup,
            milters: oxipost_milter::MilterSettings::default(),
            milter_header_checks: oxipost_cleanup::checks::Checks::default(),
        })
    }

    /// Sends every message past these milters (`non_smtpd_milters`) before it is queued.
    pub fn with_milters(
        mut self,
        milters: oxipost_milter::MilterSettings,
        header_checks: oxipost_cleanup::checks::Checks,
    ) -> Picker {
        self.milters = milters;
        self.milter_header_checks = header_checks;
        self
    }

    /// Takes every maildrop file; triggers qmgr when anything was queued.
    pub fn scan(&mut self) {
        let entries = match self.layout.list(Queue::Maildrop) {
            Ok(e) => e,
            Err(e) => {
                oxipost_log::warning!("scan maildrop queue: {e}");
                return;
            }
        };
        let mut queued = 0;
        for e in entries {
            if let Outcome::Queued(_) = self.pick(&e.id) {
                queued += 1;
            }
        }
        if queued > 0 {
            oxipost_postdrop::trigger(&self.settings.public("qmgr"), b'I');
        }
    }

    fn corrupt(&self, id: &QueueId, why: &str) -> Outcome {
        oxipost_log::warning!("{id}: corrupt maildrop file: {why}; moved to corrupt/");
        match self.layout.move_to(id, Queue::Maildrop, Queue::Corrupt) {
            Ok(_) => Outcome::Corrupt,
            Err(e) => {
                oxipost_log::warning!("{id}: move to corrupt queue: {e}");
                Outcome::Skipped
            }
        }
    }

    /// Moves one maildrop file into the queue.
    pub fn pick(&self, id: &QueueId) -> Outcome {
        let path = self.layout.path_for(Queue::Maildrop, id);
        let qf = match QueueFile::open(&path) {
            Ok(q) => q,
            Err(QueueError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Outcome::Skipped;
            }
            Err(QueueError::Io(e)) => {
                if e.kind() != io::ErrorKind::PermissionDenied {
                    oxipost_log::warning!("{id}: open maildrop file: {e}");
                }
                return Outcome::Skipped;
            }
            Err(e) => return self.corrupt(id, &e.to_string()),
        };
        if qf.recipients().is_empty() {
            return self.corrupt(id, "no recipients");
        }
        let uid = qf
            .envelope()
            .attribute(ATTR_UID)
            .and_then(|u| u.parse::<u32>().ok())
            .unwrap_or_else(|| qf.file().metadata().map(|m| m.uid()).unwrap_or(0));
        match self.write_incoming(&qf, uid) {
            Ok(Written::Queued(new_id)) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    oxipost_log::warning!("{id}: remove maildrop file: {e}");
                }
                Outcome::Queued(new_id)
            }
            Ok(Written::Dropped | Written::Bounce(_)) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    oxipost_log::warning!("{id}: remove maildrop file: {e}");
                }
                Outcome::Skipped
            }
            Ok(Written::Retry(why)) => {
                oxipost_log::warning!("{id}: {why}; will try again");
                Outcome::Skipped
            }
            Err(QueueError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                self.corrupt(id, &e.to_string())
            }
            Err(e) => {
                oxipost_log::warning!("{id}: cannot queue maildrop file: {e}");
                Outcome::Skipped
            }
        }
    }

    fn qualify(&self, addr: &str) -> String {
        if addr.is_empty() || addr.contains('@') {
            addr.to_string()
        } else {
            format!("{addr}@{}", self.settings.myorigin)
        }
    }

    fn write_incoming(&self, qf: &QueueFile, uid: u32) -> Result<Written, QueueError> {
        let opts = WriterOptions {
            arrival: Some(qf.arrival()),
            ..WriterOptions::default()
        };
        let mut w = QueueWriter::create(&self.layout, Queue::Incoming, opts)?;
        let id = w.id().to_string();
        let sender = match self.cleanup.rewrite_sender(&self.qualify(qf.sender())) {
            Ok(s) => s,
            Err(e) => return Ok(Written::Retry(e.to_string())),
        };
        w.set_sender(&sender)?;
        let env = qf.envelope();
        if env.params != oxipost_queue::MailParams::default() {
            w.set_params(&env.params)?;
        }
        w.add_attribute(attr::PROTOCOL_NAME, "local")?;
        w.add_attribute(attr::ORIGIN, "pickup")?;
        if !self.cleanup.content_filter.is_empty() {
            w.add_attribute("filter", &self.cleanup.content_filter)?;
        }
        for a in &env.attributes {
            // A `filter` from maildrop (user-written) is not honoured: only ours routes.
            if a.name != attr::ORIGIN && a.name != attr::PROTOCOL_NAME && a.name != "filter" {
                w.add_attribute(&a.name, &a.value)?;
            }
        }
        let mut written: Vec<String> = Vec::new();
        for r in qf.recipients() {
            let mut r = r.clone();
            let original = self.qualify(&r.address);
            let expanded = match self.cleanup.rewrite_recipient(&original) {
                Ok(list) => list,
                Err(e) => return Ok(Written::Retry(e.to_string())),
            };
            r.done = false;
            for address in expanded {
                let mut one = r.clone();
                if !address.eq_ignore_ascii_case(&original) && one.orcpt.is_none() {
                    one.orcpt = Some(format!("rfc822;{original}"));
                }
                one.address = address;
                w.add_recipient(&one)?;
                written.push(one.address.clone());
            }
        }
        oxipost_log::info!("{id}: uid={uid} from=<{sender}>");
        // The maildrop content decides the line ending of what is added.
        let mut content = qf.content();
        let mut first = vec![0u8; 64 << 10];
        let n = read_some(&mut content, &mut first)?;
        let eol: &str = match first[..n].iter().position(|&b| b == b'\n') {
            Some(p) if p > 0 && first[p - 1] == b'\r' => "\r\n",
            Some(_) => "\n",
            None => "\n",
        };
        let received = format!(
            "Received: by {} ({}, from userid {uid}){eol}\tid {id}; {}{eol}",
            self.settings.myhostname,
            self.settings.mail_name,
            mail_date(SystemTime::now())
        );
        // With milters the content is held until they have decided.
        let mut held: Option<Vec<u8>> = (!self.milters.milters.is_empty()).then(Vec::new);
        sink(&mut held, &mut w).write_all(received.as_bytes())?;
        let mut cleanup = Cleanup::with_settings(
            CleanupOptions {
                myhostname: self.settings.myhostname.clone(),
                queue_id: id.clone(),
                arrival: w.arrival(),
                sender: sender.clone(),
                header_size_limit: self.settings.header_size_limit,
                add_missing_headers: true,
            },
            Arc::clone(&self.cleanup),
            true,
        );
        cleanup.feed(&first[..n], sink(&mut held, &mut w))?;
        let mut buf = first;
        loop {
            let n = read_some(&mut content, &mut buf)?;
            if n == 0 {
                break;
            }
            cleanup.feed(&buf[..n], sink(&mut held, &mut w))?;
        }
        let r = cleanup.finish(sink(&mut held, &mut w))?;
        if let Some(mid) = &r.message_id {
            oxipost_log::info!("{id}: message-id={}", mid.replace(['\r', '\n'], " "));
        }
        let to = qf
            .recipients()
            .first()
            .map(|r| r.address.as_str())
            .unwrap_or("");
        for e in &r.events {
            let line = format!(
                "{id}: {}: {} from local; from=<{sender}> to=<{to}>: {}",
                e.action,
                e.context.replace(['\r', '\n'], " "),
                e.text
            );
            if e.action == "warning" {
                oxipost_log::warning!("{line}");
            } else {
                oxipost_log::info!("{line}");
            }
        }
        let hold = match r.verdict {
            Verdict::Accept => false,
            Verdict::Hold(_) => true,
            // Dropping the writer removes the unfinished file.
            Verdict::Discard(_) => return Ok(Written::Dropped),
            Verdict::Reject(why) => return self.bounce(w, held.as_deref(), &why),
            Verdict::Defer(why) => return Ok(Written::Retry(why)),
        };
        let (new_id, hold) = match held {
            None => (w.finish()?, hold),
            Some(message) => match self.milter_verdict(&id, &sender, written, &message, to) {
                Err(Written::Bounce(why)) => return self.bounce(w, Some(&message), &why),
                Err(written) => return Ok(written),
                Ok((content, env, quarantine, attributes)) => {
                    for (name, value) in &attributes {
                        w.add_attribute(name, value)?;
                    }
                    let file =
                        oxipost_milter::queue::write_and_prepare(w, &self.layout, &content, &env)?;
                    if file.id().to_string() != id {
                        oxipost_log::info!("{id}: milter envelope change: queued as {}", file.id());
                    }
                    (file.commit()?, hold || quarantine)
                }
            },
        };
        if hold && let Err(e) = self.layout.move_to(&new_id, Queue::Incoming, Queue::Hold) {
            oxipost_log::warning!("{new_id}: cannot move to the hold queue: {e}");
        }
        Ok(Written::Queued(new_id))
    }
}

impl Picker {
    /// Queues a rejected message so that it is bounced to its sender with `why`
    /// (`5.7.1 text`): every recipient goes to the `error` transport (the last `filter`
    /// wins in qmgr), whose bounce is the usual RFC 3464 report with the message attached.
    /// `held`: the content when milters held it (else it is in the file already).
    fn bounce(
        &self,
        mut w: QueueWriter,
        held: Option<&[u8]>,
        why: &str,
    ) -> Result<Written, QueueError> {
        if let Some(content) = held {
            w.write_content(content)?;
        }
        let why = why.replace(['\r', '\n'], " ");
        let why = if why.trim().is_empty() {
            "5.7.1 message content rejected".to_string()
        } else {
            why
        };
        w.add_attribute("filter", &format!("error:{why}"))?;
        let id = w.finish()?;
        oxipost_log::info!("{id}: rejected, returned to the sender: {why}");
        Ok(Written::Queued(id))
    }
}

/// What the milters made of a message: its content, envelope changes, whether to hold
/// it, and attributes to record (`milter_header_checks` FILTER, REDIRECT, HOLD).
type MilterResult = (
    Vec<u8>,
    oxipost_milter::edit::EnvelopeChanges,
    bool,
    Vec<(String, String)>,
);

/// Where content goes: the held buffer when milters will see it, else the queue file.
fn sink<'a>(held: &'a mut Option<Vec<u8>>, w: &'a mut QueueWriter) -> &'a mut dyn Write {
    match held {
        Some(b) => b,
        None => w,
    }
}

impl Picker {
    /// Runs the message past `non_smtpd_milters`: the content to queue, the envelope
    /// changes and whether to quarantine it, or what to do instead (a reject bounces the
    /// message to its sender, a discard drops it, a temporary refusal leaves it in maildrop
    /// for the next pass).
    fn milter_verdict(
        &self,
        id: &str,
        sender: &str,
        rcpts: Vec<String>,
        message: &[u8],
        to: &str,
    ) -> Result<MilterResult, Written> {
        use oxipost_milter::{Family, Transaction, Verdict};
        let mut m = std::collections::HashMap::new();
        for (n, v) in &self.milters.macro_defaults {
            m.insert(n.as_str(), v.clone());
        }
        m.insert("j", self.settings.myhostname.clone());
        m.insert("{daemon_name}", self.milters.daemon_name.clone());
        m.insert("v", self.milters.v.clone());
        m.insert("_", "localhost [127.0.0.1]".to_string());
        m.insert("{client_addr}", "127.0.0.1".to_string());
        m.insert("{client_name}", "localhost".to_string());
        m.insert("i", id.to_string());
        m.insert("{mail_addr}", sender.to_string());
        let lookup = |n: &str| m.get(n).cloned();
        let t = Transaction {
            client_name: "localhost",
            family: Family::Inet4 {
                port: 0,
                addr: "127.0.0.1".into(),
            },
            helo: None,
            mail: vec![format!("<{sender}>")],
            rcpts: rcpts.iter().map(|r| vec![format!("<{r}>")]).collect(),
            message,
            macros: &lookup,
        };
        let (verdict, warnings) = oxipost_milter::run(&self.milters, &t);
        for w in warnings {
            oxipost_log::warning!("{id}: {}", w.replace(['\r', '\n'], " "));
        }
        let tail = format!("from=<{sender}> to=<{to}>");
        match verdict {
            Verdict::Refuse(reply) if reply.starts_with('4') => {
                Err(Written::Retry(format!("milter: {reply}")))
            }
            Verdict::Refuse(reply) => {
                oxipost_log::info!(
                    "{id}: milter-reject: END-OF-MESSAGE from local; {tail}: {}",
                    reply.replace(['\r', '\n'], " ")
                );
                let (_, enhanced, text) = split_reply(&reply);
                Err(Written::Bounce(format!("{enhanced} {text}")))
            }
            Verdict::Discard => {
                oxipost_log::info!(
                    "{id}: milter-discard: END-OF-MESSAGE from local: milter triggers DISCARD action; {tail}"
                );
                Err(Written::Dropped)
            }
            Verdict::Accept { mods, quarantine } => {
                if let Some(why) = &quarantine {
                    oxipost_log::info!(
                        "{id}: milter-hold: END-OF-MESSAGE from local: {}; {tail}",
                        why.replace(['\r', '\n'], " ")
                    );
                }
                // milter_header_checks on what the milters added or changed.
                let hv =
                    oxipost_cleanup::checks::check_milter_headers(&self.milter_header_checks, mods);
                for (action, header, text) in &hv.events {
                    let mut line = format!("{id}: {action}: header {header} from local; {tail}");
                    if !text.is_empty() {
                        line.push_str(&format!(": {text}"));
                    }
                    if action == "warning" {
                        oxipost_log::warning!("{line}");
                    } else {
                        oxipost_log::info!("{line}");
                    }
                }
                if let Some(e) = hv.defer {
                    return Err(Written::Retry(format!("milter_header_checks: {e}")));
                }
                if let Some(why) = hv.reject {
                    return Err(Written::Bounce(why));
                }
                if hv.discard {
                    return Err(Written::Dropped);
                }
                let mut attributes = Vec::new();
                if let Some(h) = &hv.hold {
                    attributes.push(("hold_reason".to_string(), h.clone()));
                }
                if let Some(f) = hv.filter {
                    attributes.push(("filter".to_string(), f));
                }
                if let Some(r) = hv.redirect {
                    attributes.push(("redirect".to_string(), r));
                }
                let (content, env) = oxipost_milter::edit::apply(&hv.mods, message);
                Ok((
                    content,
                    env,
                    quarantine.is_some() || hv.hold.is_some(),
                    attributes,
                ))
            }
        }
    }
}

/// `550 5.7.1 text` into its code, enhanced code and text (one without an enhanced code
/// gets `5.7.1`).
fn split_reply(reply: &str) -> (String, String, String) {
    let mut it = reply.trim().splitn(3, ' ');
    let code = it.next().unwrap_or("550").to_string();
    let second = it.next().unwrap_or("");
    let rest = it.next().unwrap_or("");
    if second.split('.').count() == 3 && second.starts_with(['4', '5']) {
        (code, second.to_string(), rest.to_string())
    } else {
        let text = format!("{second} {rest}").trim().to_string();
        (code, "5.7.1".into(), text)
    }
}

fn read_some(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxipost_postdrop::Submission;

    fn settings(dir: &std::path::Path) -> Settings {
        let main = oxipost_config::MainCf::parse(
            &dir.join("main.cf"),
            &format!(
                "queue_directory = {}\nmyhostname = host.example\nmyorigin = example.org\n",
                dir.display()
            ),
        )
        .expect("main.cf");
        let cfg = oxipost_config::Config::from_main(dir, main, true);
        Settings::from_config(&cfg, dir.to_path_buf()).expect("settings")
    }

    #[test]
    fn maildrop_to_incoming_and_corrupt() {
        let tmp = tempfile::tempdir().expect("tmp");
        let s = settings(tmp.path());
        let p = Picker::new(s, Arc::default()).expect("picker");
        p.layout.create_all().expect("create");
        let sub = Submission {
            sender: "root".into(),
            recipients: vec!["demo".into()],
            ..Submission::default()
        };
        let id = oxipost_postdrop::drop_message(
            &p.layout,
            &sub,
            &mut &b"Subject: hi\n\nbody\n"[..],
            0,
            0,
        )
        .expect("drop");
        let Outcome::Queued(new) = p.pick(&id) else {
            panic!("not queued")
        };
        assert!(!p.layout.path_for(Queue::Maildrop, &id).exists());
        let qf = QueueFile::open(p.layout.path_for(Queue::Incoming, &new)).expect("incoming");
        assert_eq!(qf.sender(), "root@example.org");
        assert_eq!(qf.recipients()[0].address, "demo@example.org");
        let mut text = String::new();
        qf.content().read_to_string(&mut text).expect("content");
        assert!(
            text.starts_with("Received: by host.example (oxipost, from userid 0)\n\tid "),
            "{text}"
        );
        assert!(text.contains("\nFrom: root@example.org\n"), "{text}");
        assert!(text.ends_with("\nbody\n"));
        // A file without end marker under an id name goes to corrupt/.
        let bad = QueueId::new_long(1_700_000_000, 5, 42);
        std::fs::write(p.layout.path_for(Queue::Maildrop, &bad), b"OXQF\0\x01\0\0").expect("write");
        assert_eq!(p.pick(&bad), Outcome::Corrupt);
        assert!(p.layout.path_for(Queue::Corrupt, &bad).exists());
    }
}

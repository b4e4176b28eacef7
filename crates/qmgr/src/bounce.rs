//! Delivery status notifications as RFC 3464 `multipart/report` messages
//! (`report-type=delivery-status`): a human-readable part, a `message/delivery-status`
//! part with one block per recipient (`Action: failed`, `delayed`, `delivered` or
//! `relayed`), and the returned message — whole (`message/rfc822`) or its header only
//! (`text/rfc822-headers`) as `RET=` asks, headers only for delay warnings and success
//! reports unless `RET=FULL`, and always headers only in postmaster copies, as Postfix.
//! Texts follow Postfix's default bounce templates. Which reports are sent, to whom, is
//! [`crate::notify`]'s decision; this module only builds and queues them.

use crate::date::rfc5322;
use oxipost_queue::{Layout, Queue, QueueFile, QueueWriter, Recipient, WriterOptions, format::Ret};
use std::io::Read;
use std::time::{Duration, SystemTime};

/// One recipient as the report describes it.
pub struct Failed {
    pub address: String,
    pub orcpt: Option<String>,
    pub status: String,
    pub text: String,
    /// RFC 3464 `Action:`: `failed`, `delayed`, `delivered`, `relayed`.
    pub action: &'static str,
}

/// What the report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Non-delivery (a bounce).
    Failure,
    /// Delivery is delayed (`delay_warning_time`).
    Delay,
    /// Delivered (`NOTIFY=SUCCESS`).
    Success,
}

/// Who reads the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The envelope sender.
    Sender,
    /// A postmaster copy (`notify_classes`): the returned message is headers only.
    Postmaster,
    /// A bounce that could not be delivered, sent to `2bounce_notice_recipient` whole.
    DoubleBounce,
}

pub struct BounceInfo<'a> {
    pub myhostname: &'a str,
    pub mail_name: &'a str,
    pub queue_id: &'a str,
    pub bounce_size_limit: u64,
    /// The `To:` header (the sender, or the postmaster address for copies).
    pub to: &'a str,
    /// The message age that triggered a delay warning, and how long it will be retried.
    pub delay: Option<(Duration, Duration)>,
}

fn subject(kind: Kind, audience: Audience) -> &'static str {
    match (kind, audience) {
        (Kind::Failure, Audience::Sender) => "Undelivered Mail Returned to Sender",
        (Kind::Failure, _) => "Postmaster Copy: Undelivered Mail",
        (Kind::Delay, Audience::Sender) => "Delayed Mail (still being retried)",
        (Kind::Delay, _) => "Postmaster Warning: Delayed Mail",
        (Kind::Success, _) => "Successful Mail Delivery Report",
    }
}

/// `2 hour(s)` / `5 day(s)` as Postfix's templates say it.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 && s.is_multiple_of(86_400) {
        format!("{} day(s)", s / 86_400)
    } else if s >= 3600 {
        format!("{} hour(s)", s / 3600)
    } else if s >= 60 {
        format!("{} minute(s)", s / 60)
    } else {
        format!("{s} second(s)")
    }
}

fn intro(info: &BounceInfo<'_>, kind: Kind, audience: Audience) -> String {
    let host = info.myhostname;
    let mut t = format!("This is the mail system at host {host}.\n\n");
    match (kind, audience) {
        (Kind::Failure, Audience::Sender) => t.push_str(&format!(
            "I'm sorry to have to inform you that your message could not\n\
             be delivered to one or more recipients. It's attached below.\n\n\
             For further assistance, please send mail to postmaster.\n\n\
             If you do so, please include this problem report. You can\n\
             delete your own text from the attached returned message.\n\n\
             \x20                  The {} program\n\n",
            info.mail_name
        )),
        (Kind::Failure, _) => t.push_str(
            "Enclosed is a copy of the message that could not be delivered,\n\
             with the reasons below. This is a postmaster copy.\n\n",
        ),
        (Kind::Delay, Audience::Sender) => {
            let (age, until) = info.delay.unwrap_or_default();
            t.push_str(&format!(
                "####################################################################\n\
                 # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n\
                 ####################################################################\n\n\
                 Your message could not be delivered for more than {}.\n\
                 It will be retried until it is {} old.\n\n\
                 For further assistance, please send mail to postmaster.\n\n\
                 If you do so, please include this problem report. You can\n\
                 delete your own text from the attached returned message.\n\n\
                 \x20                  The {} program\n\n",
                human(age),
                human(until),
                info.mail_name
            ));
        }
        (Kind::Delay, _) => t.push_str(
            "Enclosed are the headers of a message that is delayed, with the reasons\n\
             below. This is a postmaster copy.\n\n",
        ),
        (Kind::Success, _) => t.push_str(
            "Your message was successfully delivered to the destination(s)\n\
             listed below. If the message was delivered to mailbox you will\n\
             receive no further notifications. Otherwise you may still receive\n\
             notifications of mail delivery errors from other systems.\n\n\
             \x20                  The mail system\n\n",
        ),
    }
    t
}

/// Builds the notification (headers and MIME body) about `rcpts` of `msg`.
pub fn build(
    info: &BounceInfo<'_>,
    msg: &QueueFile,
    rcpts: &[Failed],
    kind: Kind,
    audience: Audience,
) -> Vec<u8> {
    let now = SystemTime::now();
    let sender = msg.sender();
    let boundary = format!(
        "{}.{}/{}",
        info.queue_id,
        now.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        info.myhostname
    );
    let mut out = String::new();
    out.push_str(&format!(
        "From: MAILER-DAEMON@{} (Mail Delivery System)\n",
        info.myhostname
    ));
    out.push_str(&format!("Subject: {}\n", subject(kind, audience)));
    out.push_str(&format!("To: {}\n", info.to));
    out.push_str("Auto-Submitted: auto-replied\n");
    out.push_str(&format!("Date: {}\n", rfc5322(now)));
    out.push_str("MIME-Version: 1.0\n");
    out.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n"
    ));
    out.push_str("Content-Transfer-Encoding: 8bit\n\n");
    out.push_str("This is a MIME-encapsulated message.\n\n");
    out.push_str(&format!("--{boundary}\n"));
    out.push_str(
        "Content-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n",
    );
    out.push_str(&intro(info, kind, audience));
    for f in rcpts {
        out.push_str(&format!("<{}>: {}\n", f.address, f.text));
    }
    out.push('\n');
    out.push_str(&format!("--{boundary}\n"));
    out.push_str("Content-Description: Delivery report\nContent-Type: message/delivery-status\n\n");
    out.push_str(&format!("Reporting-MTA: dns; {}\n", info.myhostname));
    out.push_str(&format!("X-Postfix-Queue-ID: {}\n", info.queue_id));
    out.push_str(&format!("X-Postfix-Sender: rfc822; {sender}\n"));
    if let Some(envid) = &msg.envelope().params.envid {
        out.push_str(&format!("Original-Envelope-Id: {envid}\n"));
    }
    out.push_str(&format!("Arrival-Date: {}\n", rfc5322(msg.arrival())));
    for f in rcpts {
        out.push('\n');
        out.push_str(&format!("Final-Recipient: rfc822; {}\n", f.address));
        if let Some(o) = &f.orcpt {
            out.push_str(&format!(
                "Original-Recipient: {}\n",
                o.replacen(';', "; ", 1)
            ));
        }
        out.push_str(&format!("Action: {}\n", f.action));
        out.push_str(&format!("Status: {}\n", f.status));
        out.push_str(&format!("Diagnostic-Code: X-Postfix; {}\n", f.text));
        if kind == Kind::Delay
            && let Some((_, until)) = info.delay
        {
            out.push_str(&format!(
                "Will-Retry-Until: {}\n",
                rfc5322(msg.arrival() + until)
            ));
        }
    }
    out.push('\n');
    let ret = msg.envelope().params.ret;
    let headers_only = match audience {
        Audience::Postmaster => true,
        Audience::DoubleBounce => false,
        Audience::Sender => match kind {
            Kind::Failure => ret == Some(Ret::Hdrs),
            Kind::Delay | Kind::Success => ret != Some(Ret::Full),
        },
    };
    let what = match kind {
        Kind::Failure => "Undelivered Message",
        Kind::Delay => "Delayed Message",
        Kind::Success => "Delivered Message",
    };
    out.push_str(&format!("--{boundary}\n"));
    if headers_only {
        out.push_str(&format!(
            "Content-Description: {what} Headers\nContent-Type: text/rfc822-headers\n\n"
        ));
    } else {
        out.push_str(&format!(
            "Content-Description: {what}\nContent-Type: message/rfc822\n\n"
        ));
    }
    let mut bytes = out.into_bytes();
    let mut content = Vec::new();
    let _ = msg
        .content()
        .take(info.bounce_size_limit.max(1024))
        .read_to_end(&mut content);
    let content = normalize_newlines(&content);
    if headers_only {
        let end = find_header_end(&content);
        bytes.extend_from_slice(&content[..end]);
    } else {
        bytes.extend_from_slice(&content);
    }
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    bytes
}

fn normalize_newlines(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn find_header_end(b: &[u8]) -> usize {
    if b.first() == Some(&b'\n') {
        return 0;
    }
    b.windows(2)
        .position(|w| w == b"\n\n")
        .map_or(b.len(), |p| p + 1)
}

/// Queues a notification from `sender` (empty: the null sender of bounces) to `to`;
/// returns its queue id. The caller marks the recipients done only after this succeeded,
/// so a crash in between notifies twice rather than never.
pub fn queue(layout: &Layout, sender: &str, to: &str, text: &[u8]) -> Result<String, String> {
    let mut w = QueueWriter::create(layout, Queue::Incoming, WriterOptions::default())
        .map_err(|e| e.to_string())?;
    let r = (|| {
        w.set_sender(sender)?;
        w.add_recipient(&Recipient::new(to))?;
        w.add_attribute("origin", "bounce")?;
        // Stored with CRLF like mail received over SMTP.
        let mut crlf = Vec::with_capacity(text.len() + text.len() / 40);
        for &b in text {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        w.write_content(&crlf)
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
    fn durations_in_words() {
        assert_eq!(human(Duration::from_secs(4 * 3600)), "4 hour(s)");
        assert_eq!(human(Duration::from_secs(5 * 86_400)), "5 day(s)");
        assert_eq!(human(Duration::from_secs(1)), "1 second(s)");
    }

    #[test]
    fn header_end() {
        assert_eq!(find_header_end(b"A: b\n\nbody"), 5);
        assert_eq!(find_header_end(b"\nbody"), 0);
        assert_eq!(find_header_end(b"A: b\n"), 5);
    }
}

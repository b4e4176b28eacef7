//! Non-delivery notifications: an RFC 3464 `multipart/report` to the envelope sender,
//! queued like any other message. Never sent to the null sender, so bounces cannot loop.

use crate::date::rfc5322;
use oxipost_queue::{Layout, Queue, QueueFile, QueueWriter, Recipient, WriterOptions, format::Ret};
use std::io::Read;
use std::time::SystemTime;

/// One failed recipient as the report describes it.
pub struct Failed {
    pub address: String,
    pub orcpt: Option<String>,
    pub status: String,
    pub text: String,
}

pub struct BounceInfo<'a> {
    pub myhostname: &'a str,
    pub mail_name: &'a str,
    pub queue_id: &'a str,
    pub bounce_size_limit: u64,
}

/// Builds the notification text (headers and MIME body) for `failed` recipients of `msg`.
pub fn build(info: &BounceInfo<'_>, msg: &QueueFile, failed: &[Failed]) -> Vec<u8> {
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
    out.push_str("Subject: Undelivered Mail Returned to Sender\n");
    out.push_str(&format!("To: {sender}\n"));
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
    out.push_str(&format!(
        "This is the mail system at host {}.\n\n\
         I'm sorry to have to inform you that your message could not\n\
         be delivered to one or more recipients. It's attached below.\n\n\
         For further assistance, please send mail to postmaster.\n\n\
         If you do so, please include this problem report. You can\n\
         delete your own text from the attached returned message.\n\n\
         \x20                  The {} program\n\n",
        info.myhostname, info.mail_name
    ));
    for f in failed {
        out.push_str(&format!("<{}>: {}\n", f.address, f.text));
    }
    out.push('\n');
    out.push_str(&format!("--{boundary}\n"));
    out.push_str("Content-Description: Delivery report\nContent-Type: message/delivery-status\n\n");
    out.push_str(&format!("Reporting-MTA: dns; {}\n", info.myhostname));
    out.push_str(&format!("X-Postfix-Queue-ID: {}\n", info.queue_id));
    out.push_str(&format!("X-Postfix-Sender: rfc822; {sender}\n"));
    out.push_str(&format!("Arrival-Date: {}\n", rfc5322(msg.arrival())));
    for f in failed {
        out.push('\n');
        out.push_str(&format!("Final-Recipient: rfc822; {}\n", f.address));
        if let Some(o) = &f.orcpt {
            out.push_str(&format!(
                "Original-Recipient: {}\n",
                o.replacen(';', "; ", 1)
            ));
        }
        out.push_str("Action: failed\n");
        out.push_str(&format!("Status: {}\n", f.status));
        out.push_str(&format!("Diagnostic-Code: X-Postfix; {}\n", f.text));
    }
    out.push('\n');
    let headers_only = msg.envelope().params.ret == Some(Ret::Hdrs);
    out.push_str(&format!("--{boundary}\n"));
    if headers_only {
        out.push_str("Content-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\n\n");
    } else {
        out.push_str("Content-Description: Undelivered Message\nContent-Type: message/rfc822\n\n");
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
    b.windows(2)
        .position(|w| w == b"\n\n")
        .map_or(b.len(), |p| p + 1)
}

/// Queues the notification; returns its queue id. The caller marks the recipients done
/// only after this succeeded, so a crash in between bounces twice rather than never.
pub fn queue(layout: &Layout, to: &str, text: &[u8]) -> Result<String, String> {
    let mut w = QueueWriter::create(layout, Queue::Incoming, WriterOptions::default())
        .map_err(|e| e.to_string())?;
    w.set_sender("").map_err(|e| e.to_string())?;
    w.add_recipient(&Recipient::new(to))
        .map_err(|e| e.to_string())?;
    w.add_attribute("origin", "bounce")
        .map_err(|e| e.to_string())?;
    // Stored with CRLF like mail received over SMTP.
    let mut crlf = Vec::with_capacity(text.len() + text.len() / 40);
    for &b in text {
        if b == b'\n' {
            crlf.push(b'\r');
        }
        crlf.push(b);
    }
    w.write_content(&crlf).map_err(|e| e.to_string())?;
    w.finish()
        .map(|id| id.as_str().to_string())
        .map_err(|e| e.to_string())
}

//! Reading the queue for a report, and moving deferred mail back to incoming.

use std::time::UNIX_EPOCH;

use oxipost_ipc::showq::{ShowqMessage, ShowqRecipient, ShowqReply};
use oxipost_queue::{Layout, Queue, QueueFile, QueueId};

/// The queues reported, in Postfix's showq order.
pub const REPORTED: [Queue; 5] = [
    Queue::Maildrop,
    Queue::Hold,
    Queue::Incoming,
    Queue::Active,
    Queue::Deferred,
];

/// Per-recipient reasons from a defer log (`recipient=` / `reason=` lines, one block per
/// recipient, as Postfix's bounce daemon writes them), when one exists.
fn defer_reasons(layout: &Layout, id: &QueueId) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(layout.path_for(Queue::Defer, id)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rcpt = None;
    for line in text.lines() {
        if let Some(r) = line.strip_prefix("recipient=") {
            rcpt = Some(r.to_string());
        } else if let Some(why) = line.strip_prefix("reason=")
            && let Some(r) = rcpt.take()
        {
            out.push((r, why.to_string()));
        }
    }
    out
}

/// One message as reported, or None when it cannot be read (gone, incomplete, corrupt).
pub fn describe(layout: &Layout, queue: Queue, id: &QueueId) -> Option<ShowqMessage> {
    let qf = QueueFile::open(layout.path_for(queue, id)).ok()?;
    let reasons = defer_reasons(layout, id);
    let recipients = qf
        .recipients()
        .iter()
        .filter(|r| !r.done)
        .map(|r| ShowqRecipient {
            address: r.address.clone(),
            delay_reason: reasons
                .iter()
                .rev()
                .find(|(a, _)| *a == r.address)
                .map(|(_, w)| w.clone())
                .unwrap_or_else(|| {
                    if queue == Queue::Deferred {
                        "deferred".into()
                    } else {
                        String::new()
                    }
                }),
        })
        .collect();
    let sender = match qf.sender() {
        "" => "MAILER-DAEMON".to_string(),
        s => s.to_string(),
    };
    Some(ShowqMessage {
        queue_name: queue.name().to_string(),
        queue_id: id.to_string(),
        arrival_time: qf
            .arrival()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        message_size: qf.content_len(),
        forced_expire: false,
        sender,
        recipients,
        sender_uid: None,
    })
}

/// Every reported message, queue by queue, oldest first within a queue.
pub fn list(layout: &Layout) -> Vec<ShowqMessage> {
    let mut all = Vec::new();
    for q in REPORTED {
        let Ok(entries) = layout.list(q) else {
            continue;
        };
        let mut msgs: Vec<ShowqMessage> = entries
            .iter()
            .filter_map(|e| describe(layout, q, &e.id))
            .collect();
        msgs.sort_by(|a, b| (a.arrival_time, &a.queue_id).cmp(&(b.arrival_time, &b.queue_id)));
        all.extend(msgs);
    }
    all
}

/// `postqueue -i`: a deferred message back to incoming.
pub fn deliver_id(layout: &Layout, queue_id: &str) -> ShowqReply {
    let Ok(id) = QueueId::parse(queue_id) else {
        return ShowqReply::Done {
            ok: false,
            text: format!("invalid queue id: {queue_id}"),
        };
    };
    match layout.find(&id) {
        Some((Queue::Deferred, _)) => match layout.move_to(&id, Queue::Deferred, Queue::Incoming) {
            Ok(_) => {
                oxipost_log::info!("{id}: scheduled for delivery by request");
                ShowqReply::Done {
                    ok: true,
                    text: String::new(),
                }
            }
            Err(e) => ShowqReply::Done {
                ok: false,
                text: format!("{id}: cannot schedule: {e}"),
            },
        },
        Some((Queue::Incoming | Queue::Active, _)) => ShowqReply::Done {
            ok: true,
            text: String::new(),
        },
        Some((q, _)) => ShowqReply::Done {
            ok: false,
            text: format!("{id}: message is in the {q} queue, not deferred"),
        },
        None => ShowqReply::Done {
            ok: false,
            text: format!("{id}: no such message"),
        },
    }
}

/// `postqueue -s`: every deferred message with a pending recipient in `site` back to
/// incoming. Returns how many were moved.
pub fn deliver_site(layout: &Layout, site: &str) -> usize {
    let site = site.trim_start_matches('[').trim_end_matches(']');
    let Ok(entries) = layout.list(Queue::Deferred) else {
        return 0;
    };
    let mut n = 0;
    for e in entries {
        let Ok(qf) = QueueFile::open(&e.path) else {
            continue;
        };
        let wanted = qf.recipients().iter().filter(|r| !r.done).any(|r| {
            r.address
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(site))
        });
        drop(qf);
        if wanted
            && layout
                .move_to(&e.id, Queue::Deferred, Queue::Incoming)
                .is_ok()
        {
            oxipost_log::info!("{}: scheduled for delivery by request", e.id);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxipost_queue::{QueueConfig, QueueWriter, Recipient, WriterOptions};

    #[test]
    fn list_and_schedule() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(QueueConfig::new(tmp.path())).expect("layout");
        layout.create_all().expect("create");
        let mut w =
            QueueWriter::create(&layout, Queue::Incoming, WriterOptions::default()).expect("w");
        w.set_sender("").expect("s");
        w.add_recipient(&Recipient::new("a@example.com"))
            .expect("r");
        w.add_recipient(&Recipient::new("b@example.org"))
            .expect("r");
        w.write_content(b"Subject: x\r\n\r\nbody\r\n").expect("c");
        let id = w.finish().expect("finish");
        layout
            .move_to(&id, Queue::Incoming, Queue::Deferred)
            .expect("defer");
        std::fs::write(
            layout.path_for(Queue::Defer, &id),
            "recipient=a@example.com\nreason=connect refused\n\n",
        )
        .expect("log");
        let l = list(&layout);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].queue_name, "deferred");
        assert_eq!(l[0].sender, "MAILER-DAEMON");
        assert_eq!(l[0].message_size, 20);
        assert_eq!(l[0].recipients[0].delay_reason, "connect refused");
        assert_eq!(l[0].recipients[1].delay_reason, "deferred");
        assert_eq!(deliver_site(&layout, "nowhere.example"), 0);
        assert_eq!(deliver_site(&layout, "EXAMPLE.org"), 1);
        assert!(layout.path_for(Queue::Incoming, &id).exists());
        assert!(matches!(
            deliver_id(&layout, id.as_str()),
            ShowqReply::Done { ok: true, .. }
        ));
        assert!(matches!(
            deliver_id(&layout, "nonsense"),
            ShowqReply::Done { ok: false, .. }
        ));
    }
}

//! Per-message defer logs: `defer/<hashed id>`, one record per deferred recipient with the
//! reason of its last attempt, so `mailq`/`postqueue -j` (showq) show real delay reasons.
//! Records are Postfix's bounce-log attribute lists, `name=value` lines ending with an
//! empty line (`recipient`, `offset`, `dsn_orig_rcpt`, `dsn_notify`, `status`, `action`,
//! `reason`); showq reads `recipient=` and the `reason=` after it. One extra record,
//! `delay_warning=<unix time>`, remembers that the sender was warned, so a delay warning
//! goes out once per message.
//!
//! qmgr rewrites the whole log after each delivery attempt (temporary file and rename, so
//! a reader never sees half a log) and removes it with the message.

use oxipost_queue::{Layout, Queue, QueueId};
use std::io::Write;
use std::time::SystemTime;

/// One deferred recipient.
pub struct Entry<'a> {
    pub address: &'a str,
    pub index: usize,
    pub orcpt: Option<&'a str>,
    pub notify: u8,
    pub status: &'a str,
    pub reason: &'a str,
}

/// Newlines in reasons would split records.
fn clean(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The log text for `entries` (and the delay-warning mark when given).
pub fn render(entries: &[Entry<'_>], warned: Option<u64>) -> String {
    let mut out = String::new();
    for e in entries {
        out.push_str(&format!("recipient={}\n", clean(e.address)));
        out.push_str(&format!("offset={}\n", e.index));
        out.push_str(&format!(
            "dsn_orig_rcpt={}\n",
            clean(e.orcpt.unwrap_or_default())
        ));
        out.push_str(&format!("dsn_notify={}\n", e.notify));
        out.push_str(&format!("status={}\n", clean(e.status)));
        out.push_str("action=delayed\n");
        out.push_str(&format!("reason={}\n\n", clean(e.reason)));
    }
    if let Some(t) = warned {
        out.push_str(&format!("delay_warning={t}\n\n"));
    }
    out
}

/// When the sender was warned about this message, if ever.
pub fn warned(layout: &Layout, id: &QueueId) -> Option<u64> {
    let text = std::fs::read_to_string(layout.path_for(Queue::Defer, id)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("delay_warning="))
        .and_then(|t| t.trim().parse().ok())
}

/// Replaces the message's defer log.
pub fn write(layout: &Layout, id: &QueueId, text: &str) -> std::io::Result<()> {
    let dir = layout
        .ensure_dir(Queue::Defer, id)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let path = layout.path_for(Queue::Defer, id);
    let tmp = dir.join(format!(".tmp.{}.{}", std::process::id(), id.as_str()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    drop(f);
    std::fs::rename(&tmp, &path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes the message's defer log (missing is fine).
pub fn remove(layout: &Layout, id: &QueueId) {
    let path = layout.path_for(Queue::Defer, id);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        oxipost_log::warning!("remove {}: {e}", path.display());
    }
}

/// Now in seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_showq_format() {
        let dir = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(
            oxipost_queue::QueueConfig::new(dir.path()).with_hash_queue_names("deferred, defer"),
        )
        .expect("layout");
        layout.create_all().expect("create");
        let id = QueueId::new_long(1_700_000_000, 5, 42);
        let e = Entry {
            address: "a@b.org",
            index: 0,
            orcpt: None,
            notify: 0,
            status: "4.3.0",
            reason: "mailbox busy\nreally",
        };
        write(&layout, &id, &render(&[e], Some(17))).expect("write");
        let text = std::fs::read_to_string(layout.path_for(Queue::Defer, &id)).expect("read back");
        assert!(text.starts_with("recipient=a@b.org\noffset=0\n"), "{text}");
        assert!(text.contains("\nreason=mailbox busy really\n\n"), "{text}");
        assert_eq!(warned(&layout, &id), Some(17));
        remove(&layout, &id);
        assert_eq!(warned(&layout, &id), None);
    }
}

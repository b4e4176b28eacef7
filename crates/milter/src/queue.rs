//! Applying a verdict's envelope changes to a queue file (feature `queue`, for the MTA
//! programs; the protocol core has no queue dependency).

use std::io;

use oxipost_queue::{PreparedFile, QueueError, QueueFile, QueueWriter, Recipient, WriterOptions};

use crate::edit::EnvelopeChanges;

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

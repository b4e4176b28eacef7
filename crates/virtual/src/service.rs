//! The delivery protocol, server side (as local(8)): on each connection from qmgr send the
//! [`Hello`] with the batch capability, then answer each request or batch with one result
//! per recipient, and log one Postfix line per recipient
//! (`QUEUEID: to=<...>, orig_to=<...>, relay=virtual, delay=..., dsn=..., status=...`).

use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxipost_daemon::Client;
use oxipost_ipc::{Outcome, RcptResult};

use crate::deliver;
use crate::settings::Settings;

/// Serves one qmgr connection. `idle` bounds the wait for the next request.
pub fn serve(s: &Settings, client: Client, idle: Duration) {
    let timeout = (!idle.is_zero()).then_some(idle);
    match client {
        Client::Unix(stream) => {
            let _ = stream.set_read_timeout(timeout);
            conversation(s, stream);
        }
        Client::Tcp(stream, _) => {
            let _ = stream.set_read_timeout(timeout);
            conversation(s, stream);
        }
    }
}

fn conversation<S: Read + Write>(s: &Settings, mut stream: S) {
    let served = oxipost_ipc::serve_deliveries(&mut stream, |reqs, received| {
        let all = deliver::deliver_batch(s, reqs);
        let done = SystemTime::now();
        for (req, results) in reqs.iter().zip(&all) {
            let arrival = if req.arrival == 0 {
                received
            } else {
                UNIX_EPOCH + Duration::from_secs(req.arrival)
            };
            for (rcpt, r) in req.recipients.iter().zip(results) {
                let orig = deliver::original_recipient(&rcpt.address, rcpt.orcpt.as_deref());
                oxipost_log::info!(
                    "{}",
                    log_line(
                        &req.queue_id,
                        &rcpt.address,
                        &orig,
                        [arrival, received, done],
                        r
                    )
                );
            }
        }
        all
    });
    if let Err(e) = served {
        oxipost_log::warning!("{e}");
    }
}

/// A time in seconds as Postfix prints delays (`0.18`, `1.2`, `12`).
fn delay(a: SystemTime, b: SystemTime) -> String {
    let x = b.duration_since(a).unwrap_or(Duration::ZERO).as_secs_f64();
    let s = if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The log line for one recipient; `t` is arrival, request received, delivery done.
fn log_line(queue_id: &str, to: &str, orig: &str, t: [SystemTime; 3], r: &RcptResult) -> String {
    let status = match r.outcome {
        Outcome::Delivered => "sent",
        Outcome::Deferred => "deferred",
        Outcome::Bounced => "bounced",
    };
    let orig = if !orig.is_empty() && !orig.eq_ignore_ascii_case(to) {
        format!(", orig_to=<{orig}>")
    } else {
        String::new()
    };
    format!(
        "{queue_id}: to=<{to}>{orig}, relay=virtual, delay={}, delays={}/0/0/{}, dsn={}, status={status} ({})",
        delay(t[0], t[2]),
        delay(t[0], t[1]),
        delay(t[1], t[2]),
        r.status,
        r.text
    )
}

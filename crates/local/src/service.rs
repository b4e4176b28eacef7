//! The delivery protocol, server side: on each connection from qmgr send the
//! [`Hello`], then answer each [`DeliveryRequest`] with one [`DeliveryReply`] holding a result
//! for every recipient, until qmgr closes the connection. A frame that does not parse ends the
//! connection with a warning.

use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use oxipost_daemon::Client;

use crate::deliver;
use crate::report::{self, Times};
use crate::resolve;
use crate::settings::Settings;

/// Serves one qmgr connection. `idle` bounds the wait for the next request (zero: none).
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
    // The lines of one batch go out in one write, before qmgr hears the results.
    oxipost_log::hold();
    // Looked up here once, so that each per-user delivery child inherits it.
    let _ = oxipost_mailbox::hostname();
    let served = oxipost_ipc::serve_deliveries(&mut stream, |reqs, received| {
        let all = deliver::deliver_batch(s, reqs);
        let now = SystemTime::now();
        for (req, results) in reqs.iter().zip(&all) {
            let times = Times::new(req.arrival, received, now);
            for (rcpt, r) in req.recipients.iter().zip(results) {
                let orig = resolve::original_recipient(&rcpt.address, rcpt.orcpt.as_deref());
                oxipost_log::info!(
                    "{}",
                    report::line(&req.queue_id, &rcpt.address, &orig, &times, r)
                );
            }
        }
        oxipost_log::flush();
        all
    });
    oxipost_log::release();
    if let Err(e) = served {
        oxipost_log::warning!("{e}");
    }
}

//! The delivery protocol, server side: on each connection from qmgr send the
//! [`Hello`], then answer each [`DeliveryRequest`] with one [`DeliveryReply`] holding a result
//! for every recipient, until qmgr closes the connection. A frame that does not parse ends the
//! connection with a warning.

use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use oxipost_daemon::Client;
use oxipost_ipc::{
    AgentRequest, CAP_BATCH, DELIVERY_PROTOCOL, DELIVERY_VERSION, DeliveryBatchReply,
    DeliveryReply, Hello, read_frame, write_frame,
};

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
    if let Err(e) = write_frame(
        &mut stream,
        &Hello::new(DELIVERY_PROTOCOL, DELIVERY_VERSION).with_capability(CAP_BATCH),
    ) {
        oxipost_log::warning!("sending hello: {e}");
        return;
    }
    loop {
        let req: AgentRequest = match read_frame(&mut stream) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return;
            }
            Err(e) => {
                oxipost_log::warning!("bad delivery request: {e}; closing connection");
                return;
            }
        };
        let received = SystemTime::now();
        let (reqs, batched) = match req {
            AgentRequest::Single(r) => (vec![r], false),
            AgentRequest::Batch(b) => (b.requests, true),
        };
        let all = deliver::deliver_batch(s, &reqs);
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
        let sent = if batched {
            write_frame(
                &mut stream,
                &DeliveryBatchReply {
                    replies: all
                        .into_iter()
                        .map(|results| DeliveryReply { results })
                        .collect(),
                },
            )
        } else {
            let results = all.into_iter().next().unwrap_or_default();
            write_frame(&mut stream, &DeliveryReply { results })
        };
        if let Err(e) = sent {
            oxipost_log::warning!("sending reply: {e}");
            return;
        }
    }
}

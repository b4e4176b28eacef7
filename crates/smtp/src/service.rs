//! The delivery protocol with qmgr, server side: send the [`Hello`] (with [`CAP_BATCH`]:
//! a batch is several messages for one destination, delivered over one SMTP connection),
//! then answer each request or batch, until qmgr closes the connection. While a session
//! is cached the wait for the next request is bounded by
//! `smtp_connection_cache_time_limit`; when it passes the session is closed with QUIT and
//! the wait goes on up to the idle limit.

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use oxipost_daemon::Client;
use oxipost_ipc::{
    AgentRequest, CAP_BATCH, DELIVERY_PROTOCOL, DELIVERY_VERSION, DeliveryBatchReply,
    DeliveryReply, Hello, read_frame, write_frame,
};

use crate::deliver::Agent;

/// A stream whose read timeout can change between requests.
trait Timed: Read + Write {
    fn set_wait(&self, d: Option<Duration>);
}

impl Timed for std::os::unix::net::UnixStream {
    fn set_wait(&self, d: Option<Duration>) {
        let _ = self.set_read_timeout(d);
    }
}

impl Timed for std::net::TcpStream {
    fn set_wait(&self, d: Option<Duration>) {
        let _ = self.set_read_timeout(d);
    }
}

/// Serves one qmgr connection. `idle` bounds the wait for the next request.
pub fn serve(agent: &mut Agent, client: Client, idle: Duration) {
    match client {
        Client::Unix(s) => conversation(agent, s, idle),
        Client::Tcp(s, _) => conversation(agent, s, idle),
    }
    agent.close_cached();
}

fn conversation<S: Timed>(agent: &mut Agent, mut stream: S, idle: Duration) {
    if let Err(e) = write_frame(
        &mut stream,
        &Hello::new(DELIVERY_PROTOCOL, DELIVERY_VERSION).with_capability(CAP_BATCH),
    ) {
        oxipost_log::warning!("sending hello: {e}");
        return;
    }
    let idle = (!idle.is_zero()).then_some(idle);
    loop {
        let wait = if agent.has_cached() {
            Some(agent.s.cache_time_limit.max(Duration::from_millis(100)))
        } else {
            idle
        };
        stream.set_wait(wait);
        let req: AgentRequest = match read_frame(&mut stream) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if agent.has_cached() {
                    agent.close_cached();
                    continue;
                }
                return;
            }
            Err(e) => {
                oxipost_log::warning!("bad delivery request: {e}; closing connection");
                return;
            }
        };
        agent.expire_cached();
        let sent = match req {
            AgentRequest::Single(r) => {
                let results = agent.deliver(&r);
                write_frame(&mut stream, &DeliveryReply { results })
            }
            AgentRequest::Batch(b) => {
                let replies = agent
                    .deliver_batch(&b.requests)
                    .into_iter()
                    .map(|results| DeliveryReply { results })
                    .collect();
                write_frame(&mut stream, &DeliveryBatchReply { replies })
            }
        };
        if let Err(e) = sent {
            oxipost_log::warning!("sending reply: {e}");
            return;
        }
    }
}

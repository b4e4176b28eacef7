//! `discard`: oxipost's discard(8). qmgr sends it the recipients that `transport_maps` or an
//! access rule route to `discard`; it answers each one delivered (`2.0.0`, "discarded",
//! relay `none`) and logs it as Postfix does, without reading the message.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxipost_daemon::Client;
use oxipost_ipc::{DeliveryRequest, Outcome, RcptResult};

const HELP: &str = "\
usage: discard [-n service] [-t type] [-v] [-o name=value]...

oxipost's discard delivery agent: every recipient of every request is reported delivered
(dsn=2.0.0, \"discarded\") and nothing is delivered. Started by master with its listening
socket on descriptor 5 (OXIPOST_LISTEN_FDS); configuration from MAIL_CONFIG.
";

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let worker = oxipost_daemon::start("discard");
    oxipost_daemon::single_server(worker, |_, client| match client {
        Client::Unix(s) => serve(s),
        Client::Tcp(s, _) => serve(s),
    });
    ExitCode::SUCCESS
}

fn serve<S: Read + Write>(mut stream: S) {
    let served =
        oxipost_ipc::serve_deliveries(&mut stream, |reqs, _| reqs.iter().map(discard).collect());
    if let Err(e) = served {
        oxipost_log::warning!("{e}");
    }
}

/// Every recipient of `req` delivered, logged as Postfix's discard(8) does.
fn discard(req: &DeliveryRequest) -> Vec<RcptResult> {
    req.recipients
        .iter()
        .map(|r| {
            oxipost_log::info!(
                "{}: to=<{}>, relay=none, delay={}, delays={}/0/0/0, dsn=2.0.0, status=sent (discarded)",
                req.queue_id,
                r.address,
                delay(req.arrival),
                delay(req.arrival)
            );
            RcptResult {
                index: r.index,
                outcome: Outcome::Delivered,
                status: "2.0.0".into(),
                text: "discarded".into(),
                relay: "none".into(),
            }
        })
        .collect()
}

/// Seconds since arrival, as Postfix prints delays.
fn delay(arrival: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = if arrival == 0 {
        0.0
    } else {
        now.saturating_sub(Duration::from_secs(arrival))
            .as_secs_f64()
    };
    let s = if secs >= 10.0 {
        format!("{secs:.0}")
    } else if secs >= 1.0 {
        format!("{secs:.1}")
    } else {
        format!("{secs:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxipost_ipc::{
        DELIVERY_PROTOCOL, DELIVERY_VERSION, DeliveryReply, Hello, RcptRef, read_frame, write_frame,
    };
    use std::os::unix::net::UnixStream;

    #[test]
    fn discards_every_recipient() {
        let (mut client, server) = UnixStream::pair().expect("pair");
        let t = std::thread::spawn(move || serve(server));
        Hello::expect(&mut client, DELIVERY_PROTOCOL, DELIVERY_VERSION).expect("hello");
        let req = DeliveryRequest {
            queue_id: "Q".into(),
            path: "/nonexistent".into(),
            content_offset: 0,
            content_length: 0,
            sender: "s@x".into(),
            transport: "discard".into(),
            nexthop: "x".into(),
            recipients: (0..3)
                .map(|i| RcptRef {
                    index: i,
                    address: format!("r{i}@x"),
                    orcpt: None,
                    notify: None,
                })
                .collect(),
            attributes: vec![],
            arrival: 0,
        };
        write_frame(&mut client, &req).expect("send");
        let reply: DeliveryReply = read_frame(&mut client).expect("read").expect("reply");
        assert_eq!(reply.results.len(), 3);
        assert!(reply.results.iter().all(|r| r.outcome == Outcome::Delivered
            && r.status == "2.0.0"
            && r.text == "discarded"
            && r.relay == "none"));
        drop(client);
        t.join().expect("server ends when the client closes");
    }
}

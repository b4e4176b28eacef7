//! `error`: oxipost's error(8). Recipients routed to `error:reason` are bounced with the next
//! hop as the reason (`5.0.0` unless the reason starts with its own `5.x.y` code); run as the
//! master.cf service `retry`, they are deferred instead (`4.0.0`, or a `4.x.y` code given).
//! The message itself is never read.

use std::io::{Read, Write};
use std::process::ExitCode;

use oxipost_daemon::Client;
use oxipost_ipc::{DeliveryRequest, Outcome, RcptResult};

const HELP: &str = "\
usage: error [-n service] [-t type] [-v] [-o name=value]...

oxipost's error delivery agent: every recipient is bounced (dsn=5.0.0) with the request's
next hop as the reason; as the service named `retry` every recipient is deferred
(dsn=4.0.0) instead. A reason may start with its own status code (`5.1.1 no such list`).
Started by master with its listening socket on descriptor 5 (OXIPOST_LISTEN_FDS).
";

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let worker = oxipost_daemon::start("error");
    let retry = worker.service.name == "retry";
    oxipost_daemon::single_server(worker, move |_, client| match client {
        Client::Unix(s) => serve(s, retry),
        Client::Tcp(s, _) => serve(s, retry),
    });
    ExitCode::SUCCESS
}

/// Splits a leading `X.Y.Z ` status code off `reason` (Postfix's `dsn_split`); the class is
/// forced to `class` (`'5'` for error, `'4'` for retry). Returns the code and the text.
fn split_dsn(reason: &str, class: char) -> (String, String) {
    let default = format!("{class}.0.0");
    let reason = reason.trim();
    let (word, rest) = reason.split_once(' ').unwrap_or((reason, ""));
    let parts: Vec<&str> = word.split('.').collect();
    let is_dsn = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if !is_dsn {
        let text = if reason.is_empty() {
            "mail delivery disabled"
        } else {
            reason
        };
        return (default, text.to_string());
    }
    let code = format!("{class}.{}.{}", parts[1], parts[2]);
    let text = rest.trim();
    let text = if text.is_empty() {
        "mail delivery disabled"
    } else {
        text
    };
    (code, text.to_string())
}

fn serve<S: Read + Write>(mut stream: S, retry: bool) {
    let served = oxipost_ipc::serve_deliveries(&mut stream, |reqs, _| {
        reqs.iter().map(|req| refuse(req, retry)).collect()
    });
    if let Err(e) = served {
        oxipost_log::warning!("{e}");
    }
}

/// Every recipient of `req` bounced (or, for `retry`, deferred) with the next hop's reason.
fn refuse(req: &DeliveryRequest, retry: bool) -> Vec<RcptResult> {
    let (class, outcome, status) = if retry {
        ('4', Outcome::Deferred, "deferred")
    } else {
        ('5', Outcome::Bounced, "bounced")
    };
    let (dsn, text) = split_dsn(&req.nexthop, class);
    req.recipients
        .iter()
        .map(|r| {
            oxipost_log::info!(
                "{}: to=<{}>, relay=none, dsn={dsn}, status={status} ({text})",
                req.queue_id,
                r.address
            );
            RcptResult {
                index: r.index,
                outcome,
                status: dsn.clone(),
                text: text.clone(),
                relay: "none".into(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxipost_ipc::{
        DELIVERY_PROTOCOL, DELIVERY_VERSION, DeliveryReply, Hello, RcptRef, read_frame, write_frame,
    };
    use std::os::unix::net::UnixStream;

    #[test]
    fn dsn_split() {
        assert_eq!(
            split_dsn("no such list", '5'),
            ("5.0.0".into(), "no such list".into())
        );
        assert_eq!(
            split_dsn("5.1.1 gone", '5'),
            ("5.1.1".into(), "gone".into())
        );
        assert_eq!(
            split_dsn("4.7.1 later", '5'),
            ("5.7.1".into(), "later".into())
        );
        assert_eq!(
            split_dsn("5.1.1 gone", '4'),
            ("4.1.1".into(), "gone".into())
        );
        assert_eq!(
            split_dsn("", '4'),
            ("4.0.0".into(), "mail delivery disabled".into())
        );
        assert_eq!(
            split_dsn("1.2.x y", '5'),
            ("5.0.0".into(), "1.2.x y".into())
        );
    }

    fn exchange(retry: bool) -> DeliveryReply {
        let (mut client, server) = UnixStream::pair().expect("pair");
        let t = std::thread::spawn(move || serve(server, retry));
        Hello::expect(&mut client, DELIVERY_PROTOCOL, DELIVERY_VERSION).expect("hello");
        let req = DeliveryRequest {
            queue_id: "Q".into(),
            path: "/nonexistent".into(),
            content_offset: 0,
            content_length: 0,
            sender: "s@x".into(),
            transport: "error".into(),
            nexthop: "mailbox closed".into(),
            recipients: vec![
                RcptRef {
                    index: 4,
                    address: "a@x".into(),
                    orcpt: None,
                    notify: None,
                },
                RcptRef {
                    index: 7,
                    address: "b@x".into(),
                    orcpt: None,
                    notify: None,
                },
            ],
            attributes: vec![],
            arrival: 0,
        };
        write_frame(&mut client, &req).expect("send");
        let reply: DeliveryReply = read_frame(&mut client).expect("read").expect("reply");
        drop(client);
        t.join().expect("server ends");
        reply
    }

    #[test]
    fn bounces_or_defers_every_recipient() {
        let r = exchange(false);
        assert_eq!(
            r.results.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![4, 7]
        );
        assert!(r.results.iter().all(|r| r.outcome == Outcome::Bounced
            && r.status == "5.0.0"
            && r.text == "mailbox closed"));
        let r = exchange(true);
        assert!(
            r.results
                .iter()
                .all(|r| r.outcome == Outcome::Deferred && r.status == "4.0.0")
        );
    }
}

//! `sendmail -bs`: an SMTP conversation on standard input and output, driven by the
//! sans-IO `smtp-proto` core (as Postfix runs smtpd in stand-alone mode). Each accepted
//! message goes to postdrop like any other local submission; the reply to the end of data
//! is sent only once the maildrop file is durable.

use std::io::{Read, Write};

use oxipost_postdrop::{Settings, Submission, sysexits};
use oxipost_smtp_proto::{Event, ServerConfig, Session, Step};

struct Txn {
    sender: String,
    recipients: Vec<String>,
    notify: u8,
    ret: Option<String>,
    envid: Option<String>,
    content: Vec<u8>,
}

/// Runs the conversation until QUIT or end of input; returns the exit status.
pub fn run(settings: &Settings) -> i32 {
    let mut cfg = ServerConfig::new(settings.myhostname.clone());
    cfg.banner = format!("{} ESMTP {}", settings.myhostname, settings.mail_name);
    cfg.limits.message_size_limit = settings.message_size_limit;
    cfg.forbid_unauth_pipelining = false;
    cfg.extensions.chunking = false;
    let mut s = Session::new(cfg);
    s.greet();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut txn: Option<Txn> = None;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match s.next() {
            Step::Output(bytes) => {
                if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                    return sysexits::EX_IOERR;
                }
            }
            Step::Close => return sysexits::EX_OK,
            Step::NeedInput => match input.read(&mut buf) {
                Ok(0) => return sysexits::EX_OK,
                Ok(n) => s.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return sysexits::EX_NOINPUT,
            },
            Step::Event(ev) => handle(settings, &mut s, &mut txn, ev),
        }
    }
}

fn handle(settings: &Settings, s: &mut Session, txn: &mut Option<Txn>, ev: Event) {
    let r = match ev {
        Event::Helo { .. } => {
            *txn = None;
            s.accept()
        }
        Event::Mail(m) => {
            *txn = Some(Txn {
                sender: m.sender.map(|a| a.to_string()).unwrap_or_default(),
                recipients: Vec::new(),
                notify: 0,
                ret: m.ret.map(|r| {
                    match r {
                        oxipost_smtp_proto::Ret::Full => "full",
                        oxipost_smtp_proto::Ret::Hdrs => "hdrs",
                    }
                    .to_string()
                }),
                envid: m.envid,
                content: Vec::new(),
            });
            s.accept()
        }
        Event::Rcpt(r) => {
            if let Some(t) = txn.as_mut() {
                t.recipients.push(r.recipient.to_string());
                if let Some(n) = r.notify {
                    t.notify = if !n.success && !n.failure && !n.delay {
                        1
                    } else {
                        (u8::from(n.success) * 2)
                            | (u8::from(n.failure) * 4)
                            | (u8::from(n.delay) * 8)
                    };
                }
            }
            s.accept()
        }
        Event::Data => s.accept(),
        Event::MessageData(d) => {
            if let Some(t) = txn.as_mut() {
                t.content.extend_from_slice(&d);
            }
            Ok(())
        }
        Event::MessageEnd { .. } => match txn.take() {
            Some(t) => {
                let sub = Submission {
                    sender: t.sender,
                    recipients: t.recipients,
                    notify: t.notify,
                    ret: t.ret,
                    envid: t.envid,
                    body: None,
                    attributes: Vec::new(),
                };
                match crate::submit(settings, &sub, &mut &t.content[..]) {
                    Ok(Some(id)) => s.accept_with(&format!("Ok: queued as {id}")),
                    Ok(None) => s.accept_with("Ok: queued"),
                    Err((_, why)) => {
                        oxipost_log::warning!("sendmail -bs: {why}");
                        s.reject(451, "4.3.0", "Error: queue file write error")
                    }
                }
            }
            None => s.reject(451, "4.3.0", "Error: queue file write error"),
        },
        Event::Reset => {
            *txn = None;
            Ok(())
        }
        Event::Vrfy(_) => s.reject(502, "5.5.1", "VRFY command is disabled"),
        Event::Auth { .. } | Event::AuthResponse(_) => {
            s.reject(503, "5.5.1", "Error: authentication not enabled")
        }
        Event::StartTls | Event::AuthAborted => Ok(()),
        Event::Unknown(_) => s.reject(502, "5.5.2", "Error: command not recognized"),
    };
    let _ = r;
}

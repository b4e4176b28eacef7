//! One delivery request: read the queue file, expand the command line for the request's
//! recipients, run the command once with the message on standard input (the `From ` line
//! and the `Return-Path:`/`X-Original-To:`/`Delivered-To:` headers the flags ask for, then
//! the content with `eol=` line endings and `.`/`>` quoting), and give every recipient the
//! command's result. `D` and `O` need one recipient per request
//! (`<service>_destination_recipient_limit = 1`): otherwise the request is deferred with a
//! warning, as Postfix.

use std::io::{self, Read, Write};
use std::time::SystemTime;

use oxipost_ipc::{DeliveryRequest, Outcome, RcptResult};
use oxipost_mailbox::{delivered_to_header, from_line, original_to_header, return_path_header};
use oxipost_queue::QueueFile;

use crate::command::{self, CommandResult, RunAs};
use crate::expand::{Context, Rcpt};
use crate::spec::{Flags, Settings};

fn all(
    req: &DeliveryRequest,
    outcome: Outcome,
    dsn: &str,
    text: &str,
    relay: &str,
) -> Vec<RcptResult> {
    req.recipients
        .iter()
        .map(|r| RcptResult {
            index: r.index,
            outcome,
            status: dsn.to_string(),
            text: text.to_string(),
            relay: relay.to_string(),
        })
        .collect()
}

/// The account of `user=`: switched to when this process is root (never uid 0), else the
/// command runs as this process.
pub fn run_as(s: &Settings) -> Result<RunAs, String> {
    let user = nix::unistd::User::from_name(&s.spec.user)
        .map_err(|e| format!("user {}: {e}", s.spec.user))?;
    let root = nix::unistd::geteuid().is_root();
    let Some(user) = user else {
        if root {
            return Err(format!("unknown user name: {}", s.spec.user));
        }
        return Ok(RunAs {
            ids: None,
            name: s.spec.user.clone(),
            home: "/".into(),
            shell: "/bin/sh".into(),
        });
    };
    if user.uid.is_root() {
        return Err("user= command-line attribute specifies root privileges".into());
    }
    let mut gid = user.gid.as_raw();
    if let Some(g) = &s.spec.group {
        match nix::unistd::Group::from_name(g) {
            Ok(Some(grp)) if grp.gid.as_raw() != 0 => gid = grp.gid.as_raw(),
            Ok(Some(_)) => return Err("user= command-line attribute specifies root group".into()),
            _ => return Err(format!("unknown group name: {g}")),
        }
    }
    Ok(RunAs {
        ids: root.then_some((user.uid.as_raw(), gid)),
        name: user.name.clone(),
        home: user.dir.to_string_lossy().into_owned(),
        shell: user.shell.to_string_lossy().into_owned(),
    })
}

/// The lines written before the message, each ended with `eol`.
pub fn prefix(flags: Flags, sender: &str, rcpt: Option<&Rcpt>, eol: &str) -> String {
    let mut lines = Vec::new();
    if flags.from_line {
        lines.push(from_line(sender, SystemTime::now()));
    }
    if flags.return_path {
        lines.push(return_path_header(sender));
    }
    if let Some(r) = rcpt {
        if flags.original_to {
            lines.extend(original_to_header(&r.original));
        }
        if flags.delivered_to {
            lines.push(delivered_to_header(&r.address));
        }
    }
    lines.iter().map(|l| format!("{l}{eol}")).collect()
}

/// Copies the queue content (CRLF lines) to the command: `eol` line endings, `.` and `>`
/// quoting per flags, a last line completed, and a blank line appended for `B`.
pub fn copy_content<R: Read>(
    mut src: R,
    dst: &mut dyn Write,
    flags: Flags,
    eol: &str,
) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(64 * 1024, dst);
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let emit = |w: &mut io::BufWriter<&mut dyn Write>, line: &[u8]| -> io::Result<()> {
        let body = line.strip_suffix(b"\r").unwrap_or(line);
        if flags.dot_stuff && body.starts_with(b".") {
            w.write_all(b".")?;
        }
        if flags.from_quote && body.starts_with(b"From ") {
            w.write_all(b">")?;
        }
        w.write_all(body)?;
        w.write_all(eol.as_bytes())
    };
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut chunk = &buf[..n];
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&chunk[..i]);
            emit(&mut w, &line)?;
            line.clear();
            chunk = &chunk[i + 1..];
        }
        line.extend_from_slice(chunk);
    }
    if !line.is_empty() {
        emit(&mut w, &line)?;
    }
    if flags.blank_line {
        w.write_all(eol.as_bytes())?;
    }
    w.flush()
}

/// Delivers one request; one result per recipient, in request order.
pub fn deliver(s: &Settings, req: &DeliveryRequest) -> Vec<RcptResult> {
    let relay = s.service.as_str();
    let flags = s.spec.flags;
    if (flags.delivered_to || flags.original_to) && req.recipients.len() > 1 {
        oxipost_log::warning!(
            "pipe flag `D' or `O' requires {}_destination_recipient_limit = 1",
            s.service
        );
        return all(
            req,
            Outcome::Deferred,
            "4.3.5",
            "mail system configuration error",
            relay,
        );
    }
    let who = match run_as(s) {
        Ok(w) => w,
        Err(e) => {
            oxipost_log::warning!("{}: {e}", s.service);
            return all(
                req,
                Outcome::Deferred,
                "4.3.5",
                "mail system configuration error",
                relay,
            );
        }
    };
    let qf = match QueueFile::open(&req.path) {
        Ok(q) => q,
        Err(e) => {
            let text = format!("cannot read queue file: {e}");
            return all(req, Outcome::Deferred, "4.3.0", &text, relay);
        }
    };
    if s.spec.size_limit > 0 && req.content_length > s.spec.size_limit {
        return all(
            req,
            Outcome::Bounced,
            "5.2.3",
            "message file too big",
            relay,
        );
    }
    let rcpts: Vec<Rcpt> = req
        .recipients
        .iter()
        .map(|r| Rcpt {
            address: r.address.clone(),
            original: r
                .orcpt
                .as_deref()
                .map_or_else(|| r.address.clone(), orcpt_address),
        })
        .collect();
    let ctx = Context {
        sender: &req.sender,
        nexthop: &req.nexthop,
        queue_id: &req.queue_id,
        size: req.content_length,
        attributes: &req.attributes,
        null_sender: &s.spec.null_sender,
        recipient_delimiter: &s.recipient_delimiter,
        flags,
    };
    let argv = ctx.argv(&s.spec.argv, &rcpts);
    let head = prefix(flags, &req.sender, rcpts.first(), &s.spec.eol);
    let eol = s.spec.eol.clone();
    let content = qf.content();
    let r: CommandResult = command::run(
        &argv,
        &who,
        &s.spec.directory,
        s.time_limit,
        &s.service,
        move |w| {
            w.write_all(head.as_bytes())?;
            copy_content(content, w, flags, &eol)
        },
    );
    all(req, r.outcome, r.dsn, &r.text, relay)
}

/// The address of an ORCPT value (`rfc822;addr`), or the value itself.
fn orcpt_address(orcpt: &str) -> String {
    match orcpt.split_once(';') {
        Some((t, a)) if t.eq_ignore_ascii_case("rfc822") => a.to_string(),
        _ => orcpt.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_transforms() {
        let conv = |input: &[u8], flags: &str, eol: &str| {
            let mut out = Vec::new();
            copy_content(input, &mut out, Flags::parse(flags).expect("flags"), eol).expect("copy");
            String::from_utf8(out).expect("utf8")
        };
        let msg = b"Subject: x\r\n\r\n.dot\r\nFrom me\r\nend";
        assert_eq!(conv(msg, "", "\n"), "Subject: x\n\n.dot\nFrom me\nend\n");
        assert_eq!(
            conv(msg, ".>B", "\r\n"),
            "Subject: x\r\n\r\n..dot\r\n>From me\r\nend\r\n\r\n"
        );
    }

    #[test]
    fn prefix_lines_in_postfix_order() {
        let r = Rcpt {
            address: "a@b".into(),
            original: "o@b".into(),
        };
        let p = prefix(Flags::parse("ROD").expect("flags"), "s@x", Some(&r), "\n");
        assert_eq!(
            p,
            "Return-Path: <s@x>\nX-Original-To: o@b\nDelivered-To: a@b\n"
        );
        let p = prefix(Flags::parse("F").expect("flags"), "", None, "\n");
        assert!(p.starts_with("From MAILER-DAEMON "), "{p}");
    }
}

//! One SMTP connection: the [`Connection`] adapter between the skeleton's socket loop and
//! the sans-IO [`Session`], plus the mail transaction it builds: the queue file is created
//! at the first accepted RCPT (so that its id exists for `Received:` and the log), content
//! streams through [`Cleanup`] into it, and at end of data the finished file goes to the
//! process's group committer. The connection reads nothing more until the commit round that
//! covers its file is over; only then is `250 2.0.0 Ok: queued as ID` sent.
//!
//! TLS is the skeleton's: `STARTTLS` becomes [`Flow::StartTls`], and the handshake's
//! result comes back through [`Connection::tls_established`] (logged as Postfix does).
//! SMTP AUTH steps go to the authentication service through [`crate::sasl`]; input waits
//! while a step is out, as it does for a commit.
//!
//! Peer input never panics or errs here: every protocol error is the session's reply, and
//! every local failure (queue file, disk) becomes `451 4.3.0 Error: queue file write error`.

use std::rc::Rc;
use std::time::Duration;

use oxipost_cleanup::{Cleanup, CleanupOptions, ReceivedInfo, protocol_name, received_header};
use oxipost_daemon::{Connection, Flow, TlsInfo};
use oxipost_ipc::auth::{AuthReply, AuthRequest};
use oxipost_queue::format::attr;
use oxipost_queue::{
    BodyType, MailParams, Notify, Queue, QueueError, QueueWriter, Recipient, Ret, WriterOptions,
};
use oxipost_smtp_proto::{self as proto, Event, MailFrom, RcptTo, Session, Step};

use crate::log::{Client, RejectContext, clean, reject};
use crate::policy::{Verdict, check_rcpt, in_mynetworks, is_local_domain};
use crate::sasl::{self, Exchange};
use crate::service::Shared;

const WRITE_ERROR: &str = "Error: queue file write error";

/// The mail transaction in progress.
struct Txn {
    mail: MailFrom,
    /// The envelope sender as stored (empty for `<>`).
    sender: String,
    /// Accepted recipients, for `Received:`.
    rcpts: Vec<String>,
    writer: Option<QueueWriter>,
    /// Set once content has started (`Received:` written).
    cleanup: Option<Cleanup>,
    /// Why the message cannot be queued, once something failed.
    failed: Option<String>,
}

/// One client connection.
pub struct SmtpConn {
    shared: Rc<Shared>,
    id: usize,
    client: Client,
    session: Session,
    /// Over `smtpd_client_connection_count_limit`: this client's connection count; say
    /// 421 and close.
    refused: Option<usize>,
    esmtp: bool,
    txn: Option<Txn>,
    /// A finished message is with the committer; input waits until it is durable.
    waiting: bool,
    /// The session asked for STARTTLS: the next return to the skeleton says so.
    starttls: bool,
    /// The TLS session, once established.
    tls: Option<TlsInfo>,
    /// The SASL exchange in progress, and whether a step is out with the service.
    auth: Option<Exchange>,
    auth_mechanism: String,
    auth_waiting: bool,
    /// A success whose final server message (SCRAM) was sent as a 334 challenge: the
    /// client's empty response completes it.
    auth_final: Option<String>,
    /// The login name after a successful AUTH, and its mechanism.
    sasl_user: Option<(String, String)>,
}

impl SmtpConn {
    pub fn new(shared: Rc<Shared>, id: usize, client: Client, refused: Option<usize>) -> SmtpConn {
        let session = Session::new(shared.settings.server.clone());
        SmtpConn {
            shared,
            id,
            client,
            session,
            refused,
            esmtp: false,
            txn: None,
            waiting: false,
            starttls: false,
            tls: None,
            auth: None,
            auth_mechanism: String::new(),
            auth_waiting: false,
            auth_final: None,
            sasl_user: None,
        }
    }

    fn protocol(&self) -> String {
        let utf8 = self.txn.as_ref().is_some_and(|t| t.mail.smtputf8);
        protocol_name(
            self.esmtp,
            utf8,
            self.session.is_tls(),
            self.session.is_authenticated(),
        )
    }

    fn queue_id(&self) -> Option<String> {
        let t = self.txn.as_ref()?;
        Some(t.writer.as_ref()?.id().to_string())
    }

    /// Runs the session until it needs input, waits for a commit, or closes.
    fn drive(&mut self, out: &mut Vec<u8>) -> Flow {
        loop {
            match self.session.next() {
                Step::Output(bytes) => out.extend_from_slice(&bytes),
                Step::Event(ev) => self.event(ev),
                Step::NeedInput if self.starttls => {
                    self.starttls = false;
                    return Flow::StartTls;
                }
                Step::NeedInput => return Flow::Continue,
                Step::Close => return Flow::Close,
            }
        }
    }

    fn event(&mut self, ev: Event) {
        // A driver bug (answering with nothing pending) must not take the process down;
        // the session state stays consistent either way.
        let _ = match ev {
            Event::Helo { extended, .. } => {
                self.esmtp = extended;
                self.session.accept()
            }
            Event::Mail(m) if self.shared.settings.tls.required && !self.session.is_tls() => {
                let _ = m;
                self.session
                    .reject(530, "5.7.0", "Must issue a STARTTLS command first")
            }
            Event::Mail(m) => {
                let sender = m
                    .sender
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                self.txn = Some(Txn {
                    mail: m,
                    sender,
                    rcpts: Vec::new(),
                    writer: None,
                    cleanup: None,
                    failed: None,
                });
                self.session.accept()
            }
            Event::Rcpt(r) => self.rcpt(r),
            Event::Data => self.session.accept(),
            Event::MessageData(chunk) => {
                self.content(&chunk);
                Ok(())
            }
            Event::MessageEnd { .. } => self.message_end(),
            Event::Reset => {
                // Dropping the writer removes its temporary file.
                self.txn = None;
                Ok(())
            }
            Event::Vrfy(arg) => self.vrfy(&arg),
            Event::Auth {
                mechanism,
                initial_response,
            } => self.auth_start(mechanism, initial_response),
            Event::AuthResponse(line) => self.auth_continue(line),
            Event::AuthAborted => {
                self.auth = None;
                self.auth_final = None;
                Ok(())
            }
            Event::StartTls => {
                self.starttls = true;
                Ok(())
            }
        };
    }

    fn rcpt(&mut self, r: RcptTo) -> Result<(), proto::NoPendingDecision> {
        let rcpt = r.recipient.to_string();
        let settings = &self.shared.settings;
        let authenticated = self.session.is_authenticated();
        if !sasl::client_permitted(
            &settings.sasl.client_restrictions,
            in_mynetworks(settings, self.client.ip),
            authenticated,
        ) {
            // smtpd_client_restrictions, evaluated at RCPT (smtpd_delay_reject = yes).
            let text = format!(
                "<{}>: Client host rejected: Access denied",
                self.client.namaddr()
            );
            self.log_reject("RCPT", 554, "5.7.1", &text, Some(&rcpt));
            return self.session.reject(554, "5.7.1", &text);
        }
        // permit_sasl_authenticated in the relay restrictions: an authenticated client may
        // relay; the local recipient check still applies to local domains.
        let sasl_relay = authenticated
            && settings.sasl.relay_if_authenticated
            && !is_local_domain(settings, &r.recipient.domain);
        let verdict = if sasl_relay {
            Verdict::Accept
        } else {
            check_rcpt(settings, self.client.ip, &r.recipient)
        };
        if let Verdict::Reject {
            code,
            enhanced,
            text,
        } = verdict
        {
            self.log_reject("RCPT", code, enhanced, &text, Some(&rcpt));
            return self.session.reject(code, enhanced, &text);
        }
        if let Err(e) = self.open_queue_file() {
            oxipost_log::warning!("{}: queue file create: {e}", self.client.namaddr());
            self.log_reject("RCPT", 451, "4.3.0", WRITE_ERROR, Some(&rcpt));
            return self.session.reject(451, "4.3.0", WRITE_ERROR);
        }
        let recipient = Recipient {
            address: rcpt.clone(),
            orcpt: r
                .orcpt
                .as_ref()
                .map(|o| format!("{};{}", o.addr_type, xtext(&o.address))),
            notify: r.notify.map_or(Notify::default(), |n| {
                let mut v = Notify::default();
                if n.success {
                    v = v | Notify::SUCCESS;
                }
                if n.failure {
                    v = v | Notify::FAILURE;
                }
                if n.delay {
                    v = v | Notify::DELAY;
                }
                if v.is_unspecified() { Notify::NEVER } else { v }
            }),
            done: false,
        };
        let Some(txn) = self.txn.as_mut() else {
            return self
                .session
                .reject(503, "5.5.1", "Error: need MAIL command");
        };
        let written = match txn.writer.as_mut() {
            Some(w) => w.add_recipient(&recipient),
            None => Err(QueueError::State("no queue file")),
        };
        if let Err(e) = written {
            oxipost_log::warning!("{}: queue file write: {e}", self.client.namaddr());
            // The file is broken: start over with a new one at the next RCPT.
            txn.writer = None;
            txn.rcpts.clear();
            return self.session.reject(451, "4.3.0", WRITE_ERROR);
        }
        txn.rcpts.push(rcpt);
        self.session.accept()
    }

    /// VRFY answers as RCPT would (relay and local recipient rules); known is `252`.
    fn vrfy(&mut self, arg: &str) -> Result<(), proto::NoPendingDecision> {
        let bare = arg.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = match bare.rsplit_once('@') {
            Some((l, d)) => (l, d),
            None => (bare, self.shared.settings.myhostname.as_str()),
        };
        let addr = proto::Address {
            local: local.to_owned(),
            domain: domain.to_owned(),
        };
        match check_rcpt(&self.shared.settings, self.client.ip, &addr) {
            Verdict::Accept => self.session.accept(),
            Verdict::Reject {
                code,
                enhanced,
                text,
            } => {
                self.log_reject("VRFY", code, enhanced, &text, Some(bare));
                self.session.reject(code, enhanced, &text)
            }
        }
    }

    /// Creates the queue file at the first accepted recipient and writes the envelope.
    fn open_queue_file(&mut self) -> Result<(), QueueError> {
        let protocol = self.protocol();
        let helo = self.session.helo_name().map(str::to_owned);
        let Some(txn) = self.txn.as_mut() else {
            return Err(QueueError::State("no transaction"));
        };
        if txn.writer.is_some() {
            return Ok(());
        }
        let mut w = QueueWriter::create(
            &self.shared.layout,
            Queue::Incoming,
            WriterOptions::default(),
        )?;
        w.set_sender(&txn.sender)?;
        let params = mail_params(&txn.mail);
        if params != MailParams::default() {
            w.set_params(&params)?;
        }
        w.add_attribute(attr::CLIENT_NAME, &self.client.name)?;
        w.add_attribute(attr::CLIENT_ADDRESS, &self.client.addr)?;
        w.add_attribute(attr::CLIENT_PORT, &self.client.port.to_string())?;
        if let Some(h) = &helo {
            w.add_attribute(attr::HELO_NAME, h)?;
        }
        w.add_attribute(attr::PROTOCOL_NAME, &protocol)?;
        w.add_attribute(attr::ORIGIN, "smtpd")?;
        let mut sasl_log = String::new();
        if let Some((user, method)) = &self.sasl_user {
            w.add_attribute("sasl_method", method)?;
            w.add_attribute("sasl_username", user)?;
            sasl_log = format!(", sasl_method={method}, sasl_username={}", clean(user));
            if let Some(sender) = txn
                .mail
                .auth
                .as_deref()
                .filter(|a| *a != "<>")
                .and_then(sasl::xtext_decode)
            {
                w.add_attribute("sasl_sender", &sender)?;
                sasl_log.push_str(&format!(", sasl_sender={}", clean(&sender)));
            }
        }
        oxipost_log::info!("{}: client={}{sasl_log}", w.id(), self.client.namaddr());
        txn.writer = Some(w);
        Ok(())
    }

    /// Starts the content once: the `Received:` header, then the cleanup filter.
    fn start_content(&mut self) {
        let protocol = self.protocol();
        let settings = &self.shared.settings;
        let helo = self.session.helo_name().map(str::to_owned);
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        if txn.cleanup.is_some() || txn.failed.is_some() {
            return;
        }
        let Some(w) = txn.writer.as_mut() else {
            txn.failed = Some("no queue file".into());
            return;
        };
        let queue_id = w.id().to_string();
        let arrival = w.arrival();
        let mut received = received_header(&ReceivedInfo {
            helo: helo.as_deref(),
            client_name: &self.client.name,
            client_addr: &self.client.rfc_addr,
            myhostname: &settings.myhostname,
            mail_name: &settings.mail_name,
            protocol: &protocol,
            queue_id: &queue_id,
            single_recipient: match txn.rcpts.as_slice() {
                [one] => Some(one.as_str()),
                _ => None,
            },
            arrival,
        });
        // Postfix's extra comment lines go after the `from` line.
        let mut extra = String::new();
        if let Some(info) = self.tls.as_ref().filter(|_| settings.tls.received_header) {
            extra.push_str(&format!(
                "\t(using {})\r\n\t(No client certificate requested)\r\n",
                info.summary()
            ));
        }
        if let Some((user, _)) = self
            .sasl_user
            .as_ref()
            .filter(|_| settings.sasl.authenticated_header)
        {
            extra.push_str(&format!("\t(Authenticated sender: {})\r\n", clean(user)));
        }
        if let Some(i) = received.find("\r\n") {
            received.insert_str(i + 2, &extra);
        }
        if let Err(e) = w.write_content(received.as_bytes()) {
            txn.failed = Some(e.to_string());
            return;
        }
        txn.cleanup = Some(Cleanup::new(CleanupOptions {
            myhostname: settings.myhostname.clone(),
            queue_id,
            arrival,
            sender: txn.sender.clone(),
            header_size_limit: settings.header_size_limit,
            add_missing_headers: true,
        }));
    }

    fn content(&mut self, chunk: &[u8]) {
        self.start_content();
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        if txn.failed.is_some() {
            return;
        }
        if let (Some(c), Some(w)) = (txn.cleanup.as_mut(), txn.writer.as_mut())
            && let Err(e) = c.feed(chunk, w)
        {
            txn.failed = Some(e.to_string());
        }
    }

    /// End of data: finish the file and hand it to the committer; the reply waits for it.
    fn message_end(&mut self) -> Result<(), proto::NoPendingDecision> {
        self.start_content();
        let Some(mut txn) = self.txn.take() else {
            return self.session.reject(451, "4.3.0", WRITE_ERROR);
        };
        let prepared = match (txn.failed.take(), txn.writer.take(), txn.cleanup.take()) {
            (None, Some(mut w), Some(c)) => {
                let id = w.id().to_string();
                match c.finish(&mut w) {
                    Ok(r) => {
                        if let Some(mid) = &r.message_id {
                            oxipost_log::info!("{id}: message-id={}", clean(mid));
                        }
                        if r.header_truncated {
                            oxipost_log::warning!(
                                "{id}: header longer than header_size_limit, excess discarded"
                            );
                        }
                        w.prepare().map_err(|e| (id, e.to_string()))
                    }
                    Err(e) => Err((id, e.to_string())),
                }
            }
            (why, w, _) => Err((
                w.map(|w| w.id().to_string()).unwrap_or("NOQUEUE".into()),
                why.unwrap_or_else(|| "no queue file".into()),
            )),
        };
        let submitted = prepared.and_then(|file| {
            let id = file.id().to_string();
            self.shared
                .submit(file, self.id)
                .map_err(|e| (id, e.to_string()))
        });
        match submitted {
            Ok(()) => {
                self.waiting = true;
                Ok(())
            }
            Err((id, why)) => {
                oxipost_log::warning!("{id}: queue file write error: {why}");
                self.session.reject(451, "4.3.0", WRITE_ERROR)
            }
        }
    }

    /// `AUTH mechanism [initial-response]`: the first step goes to the service.
    fn auth_start(
        &mut self,
        mechanism: String,
        initial: Option<String>,
    ) -> Result<(), proto::NoPendingDecision> {
        let client_address = self.client.addr.clone();
        let secured = self.session.is_tls();
        let mech = mechanism.clone();
        // `=` is an empty initial response (RFC 4954); the service gets it as "".
        let initial = initial.map(|i| if i == "=" { String::new() } else { i });
        self.auth = Some(self.shared.auth_start(self.id, |id| AuthRequest::Start {
            id,
            service: "smtp".into(),
            mechanism: mech,
            initial,
            client_address,
            secured,
            channel_binding: None,
        }));
        self.auth_mechanism = mechanism;
        self.auth_waiting = true;
        Ok(())
    }

    /// A response line after a 334 challenge.
    fn auth_continue(&mut self, line: String) -> Result<(), proto::NoPendingDecision> {
        if let Some(user) = self.auth_final.take() {
            // The client acknowledged the server's final message.
            return self.auth_succeeded(user);
        }
        let sent = self.auth.as_ref().is_some_and(|x| {
            x.send(AuthRequest::Continue {
                id: x.serial,
                response: line,
            })
        });
        if sent {
            self.auth_waiting = true;
            Ok(())
        } else {
            self.auth = None;
            self.auth_temporary("authentication exchange lost")
        }
    }

    fn auth_succeeded(&mut self, user: String) -> Result<(), proto::NoPendingDecision> {
        self.auth = None;
        self.sasl_user = Some((user, self.auth_mechanism.clone()));
        self.session.accept()
    }

    fn auth_temporary(&mut self, why: &str) -> Result<(), proto::NoPendingDecision> {
        oxipost_log::warning!(
            "{}: SASL {} authentication aborted: {}",
            self.client.namaddr(),
            self.auth_mechanism,
            clean(why)
        );
        self.auth = None;
        self.session
            .reject(454, "4.7.0", "Temporary authentication failure")
    }

    /// The service answered a step.
    fn auth_reply(&mut self, result: sasl::StepResult) -> Result<(), proto::NoPendingDecision> {
        match result {
            Ok(AuthReply::Challenge { data, .. }) => self.session.auth_challenge(&data),
            Ok(AuthReply::Success { user, data, .. }) => match data {
                Some(d) if !d.is_empty() => {
                    self.auth_final = Some(user.user);
                    self.session.auth_challenge(&d)
                }
                _ => self.auth_succeeded(user.user),
            },
            Ok(AuthReply::Failure {
                temporary: true,
                reason,
                ..
            }) => self.auth_temporary(&reason),
            Ok(AuthReply::Failure { reason, .. }) => {
                self.auth = None;
                // Postfix's line, which fail2ban-style tools match; never the credentials.
                oxipost_log::warning!(
                    "{}: SASL {} authentication failed: {}",
                    self.client.namaddr(),
                    self.auth_mechanism,
                    clean(&reason)
                );
                self.session.reject(
                    535,
                    "5.7.8",
                    &format!("Error: authentication failed: {}", clean(&reason)),
                )
            }
            Ok(_) => self.auth_temporary("unexpected reply from the authentication service"),
            Err(e) => {
                oxipost_log::warning!("SASL: {}", clean(&e));
                self.auth_temporary("authentication service unavailable")
            }
        }
    }

    fn log_reject(&self, stage: &str, code: u16, enhanced: &str, text: &str, to: Option<&str>) {
        let proto = self.protocol();
        let queue_id = self.queue_id();
        let from = self.txn.as_ref().map(|t| t.sender.as_str());
        reject(
            &self.client,
            code,
            enhanced,
            text,
            RejectContext {
                queue_id: queue_id.as_deref(),
                stage,
                from,
                to,
                proto: &proto,
                helo: self.session.helo_name(),
            },
        );
    }
}

impl Connection for SmtpConn {
    fn start(&mut self, out: &mut Vec<u8>) -> Flow {
        oxipost_log::info!("connect from {}", self.client.namaddr());
        if let Some(count) = self.refused {
            let text = format!(
                "{} Error: too many connections from {}",
                self.shared.settings.myhostname, self.client.addr
            );
            oxipost_log::warning!(
                "Connection concurrency limit exceeded: {count} from {} for service {}",
                self.client.namaddr(),
                self.shared.settings.service_name
            );
            self.log_reject("CONNECT", 421, "4.7.0", &text, None);
            self.session.shutdown(421, "4.7.0", &text);
            return self.drive(out);
        }
        if let Some(why) = &self.shared.settings.unsupported {
            oxipost_log::warning!("{why}: refusing mail service until it is supported");
            let text = format!(
                "{} Server configuration error",
                self.shared.settings.myhostname
            );
            self.session.shutdown(421, "4.3.5", &text);
            return self.drive(out);
        }
        self.session.greet();
        self.drive(out)
    }

    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) -> Flow {
        self.session.feed(data);
        self.drive(out)
    }

    fn timeout(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.waiting || self.auth_waiting {
            // The disk is slow, not the client.
            return Flow::Continue;
        }
        oxipost_log::info!(
            "timeout after {} from {}",
            self.session.stats().last_command(),
            self.client.namaddr()
        );
        self.session.timeout();
        self.drive(out)
    }

    fn timeout_after(&self) -> Duration {
        self.shared.settings.timeout
    }

    fn wake(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.auth_waiting
            && let Some((serial, result)) = self.shared.take_auth(self.id)
            && self.auth.as_ref().is_some_and(|x| x.serial == serial)
        {
            self.auth_waiting = false;
            let _ = self.auth_reply(result);
            return self.drive(out);
        }
        if !self.waiting {
            return Flow::Continue;
        }
        let Some(result) = self.shared.take_result(self.id) else {
            return Flow::Continue;
        };
        self.waiting = false;
        let _ = match result {
            Ok(id) => self.session.accept_with(&format!("Ok: queued as {id}")),
            Err(e) => {
                oxipost_log::warning!("{}: queue file commit: {e}", self.client.namaddr());
                self.session.reject(451, "4.3.0", WRITE_ERROR)
            }
        };
        self.drive(out)
    }

    fn wants_input(&self) -> bool {
        !self.waiting && !self.auth_waiting && self.session.wants_read()
    }

    fn tls_established(&mut self, info: &TlsInfo, out: &mut Vec<u8>) -> Flow {
        oxipost_log::info!(
            "Anonymous TLS connection established from {}: {}",
            self.client.namaddr(),
            info.summary()
        );
        self.tls = Some(info.clone());
        // Forgets HELO and everything read before the handshake (CVE-2011-0411).
        self.session.tls_established();
        self.drive(out)
    }

    fn tls_failed(&mut self, why: &str) {
        oxipost_log::info!(
            "SSL_accept error from {}: {}",
            self.client.namaddr(),
            clean(why)
        );
        oxipost_log::info!(
            "lost connection after {} from {}",
            self.session.stats().last_command(),
            self.client.namaddr()
        );
    }

    fn lost(&mut self, _why: &str) {
        oxipost_log::info!(
            "lost connection after {} from {}",
            self.session.stats().last_command(),
            self.client.namaddr()
        );
    }
}

impl Drop for SmtpConn {
    fn drop(&mut self) {
        // Any unfinished queue file is removed by dropping its writer (with self.txn).
        self.txn = None;
        oxipost_log::info!(
            "disconnect from {} {}",
            self.client.namaddr(),
            self.session.stats().summary()
        );
        self.shared.leave(self.client.ip);
    }
}

fn mail_params(m: &MailFrom) -> MailParams {
    MailParams {
        size: m.size,
        body: m.body.map(|b| match b {
            proto::Body::SevenBit => BodyType::SevenBit,
            proto::Body::EightBitMime => BodyType::EightBitMime,
            proto::Body::BinaryMime => BodyType::BinaryMime,
        }),
        smtputf8: m.smtputf8,
        ret: m.ret.map(|r| match r {
            proto::Ret::Full => Ret::Full,
            proto::Ret::Hdrs => Ret::Hdrs,
        }),
        envid: m.envid.as_deref().map(xtext),
    }
}

/// RFC 3461 xtext: the queue file keeps DSN strings as received on the wire.
fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::xtext;

    #[test]
    fn xtext_encodes() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
    }
}

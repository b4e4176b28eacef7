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
//!
//! Cleanup's envelope work happens here, where the envelope is written: the sender is
//! rewritten (canonical, masquerading) before it is stored, and each accepted RCPT becomes
//! the recipients its rewriting and virtual alias expansion give (each expanded one keeps the
//! original as its ORCPT). An expansion that fails (a loop, a table down) is answered at end
//! of data, as Postfix does (`451 4.6.0 Alias expansion error`). At end of data the content
//! checks' verdict decides: `REJECT` is `550 5.7.1 text` and nothing is queued, `DISCARD` is
//! the usual `250` with nothing queued, `HOLD` queues into `hold/`.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use oxipost_cleanup::{
    CheckEvent, Cleanup, CleanupOptions, ReceivedInfo, RewriteError, protocol_name, received_header,
};
use oxipost_daemon::{Connection, Flow, TlsInfo};
use oxipost_ipc::auth::{AuthReply, AuthRequest};
use oxipost_queue::format::attr;
use oxipost_queue::{
    BodyType, MailParams, Notify, Queue, QueueError, QueueWriter, Recipient, Ret, WriterOptions,
};
use oxipost_smtp_proto::{self as proto, Event, MailFrom, RcptTo, Session, Step};

use crate::log::{Client, RejectContext, clean, reject};
use crate::recipients::RcptStatus;
use crate::restrict::jobs::JobResult;
use crate::restrict::{self, Actions, Context, Outcome, PeerStatus, Stage};
use crate::sasl::{self, Exchange};
use crate::service::Shared;

const WRITE_ERROR: &str = "Error: queue file write error";

/// The mail transaction in progress.
struct Txn {
    mail: MailFrom,
    /// The envelope sender as received (empty for `<>`).
    sender: String,
    /// The envelope sender as queued (after canonical mapping and masquerading).
    queued_sender: String,
    /// Address rewriting failed: the end-of-data reply (`4.6.0 Alias expansion error`).
    defer: Option<String>,
    /// Accepted recipients, for `Received:`.
    rcpts: Vec<String>,
    writer: Option<QueueWriter>,
    /// Set once content has started (`Received:` written).
    cleanup: Option<Cleanup>,
    /// Why the message cannot be queued, once something failed.
    failed: Option<String>,
    /// With milters ([`crate::milter`]): the content, held until they have decided.
    milter_buf: Option<Vec<u8>>,
    /// HOLD, DISCARD, FILTER, REDIRECT and PREPEND from access tables (crate::restrict).
    actions: Actions,
}

/// A decision that waits for the restriction check of its stage ([`crate::restrict`]).
enum Pending {
    Connect,
    Helo {
        name: String,
        extended: bool,
    },
    Mail,
    Rcpt(RcptTo),
    Vrfy,
    Data,
    Eod,
    /// The milters are deciding about a finished message ([`crate::milter`]).
    Milter,
    /// The milters are answering an SMTP event ([`crate::milter`]).
    MilterEvent(MilterStage),
}

/// An SMTP event the milters are asked about, with what its acceptance needs.
enum MilterStage {
    Connect,
    Helo { extended: bool },
    Mail,
    Rcpt(RcptTo),
    Data,
    Unknown,
}

impl MilterStage {
    /// The stage as Postfix's `milter-reject: STAGE from ...` names it.
    fn name(&self) -> &'static str {
        match self {
            MilterStage::Connect => "CONNECT",
            MilterStage::Helo { extended: true } => "EHLO",
            MilterStage::Helo { extended: false } => "HELO",
            MilterStage::Mail => "MAIL",
            MilterStage::Rcpt(_) => "RCPT",
            MilterStage::Data => "DATA",
            MilterStage::Unknown => "UNKNOWN",
        }
    }
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
    /// A restriction check (or the client name lookup) is out on a helper thread: input
    /// waits; results carry `check_serial`.
    check: Option<Pending>,
    resolving: bool,
    check_serial: u64,
    /// Client name lookup results: name status, PTR name, PTR status.
    peer: (PeerStatus, String, PeerStatus),
    /// The client pipelined where it may not (`reject_unauth_pipelining`).
    ill_pipelining: bool,
    /// Message content is being read (no command pipelining scan).
    in_data: bool,
    /// A finished message waiting for the milters' verdict (`check` is `Pending::Milter`).
    milter_held: Option<crate::milter::Held>,
    /// This connection's milter conversation ([`crate::milter`]), once connected.
    milter: Option<crate::milter::Handle>,
    /// A milter refused the connection: every command but QUIT gets this reply.
    milter_denied: Option<String>,
    /// The session transcript when `notify_classes` wants notices ([`crate::notice`]).
    transcript: Option<crate::notice::Transcript>,
}

impl SmtpConn {
    pub fn new(shared: Rc<Shared>, id: usize, client: Client, refused: Option<usize>) -> SmtpConn {
        let mut server = shared.settings.server.clone();
        // Milters see unknown commands (SMFIC_UNKNOWN) and may answer them.
        server.unknown_command_events = shared.milters.enabled();
        let session = Session::new(server);
        let transcript = shared
            .settings
            .notices
            .enabled()
            .then(crate::notice::Transcript::default);
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
            check: None,
            resolving: false,
            check_serial: 0,
            peer: (PeerStatus::Perm, "unknown".into(), PeerStatus::Perm),
            ill_pipelining: false,
            in_data: false,
            milter_held: None,
            milter: None,
            milter_denied: None,
            transcript,
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
                Step::Output(bytes) => {
                    if let Some(t) = self.transcript.as_mut() {
                        t.output(&bytes);
                    }
                    out.extend_from_slice(&bytes);
                }
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
        // A milter's temporary refusal at CONNECT persists (HELO/EHLO excepted, as Postfix).
        if let Some(reply) = self.milter_denied.clone() {
            let what = match &ev {
                Event::Mail(_) => Some("MAIL"),
                Event::Rcpt(_) => Some("RCPT"),
                Event::Data => Some("DATA"),
                Event::Vrfy(_) => Some("VRFY"),
                Event::Auth { .. } => Some("AUTH"),
                Event::Unknown(_) => Some("UNKNOWN"),
                _ => None,
            };
            if let Some(what) = what {
                let (code, enhanced, text) = crate::milter::split_reply(&reply);
                oxipost_log::info!(
                    "NOQUEUE: milter-reject: {what} from {}: {code} {enhanced} {};{}",
                    self.client.namaddr(),
                    clean(&text),
                    self.milter_log_tail(None)
                );
                if matches!(ev, Event::Mail(_)) {
                    self.milter_abort();
                }
                let _ = self.session.reject(code, &enhanced, &text);
                return;
            }
        }
        let _ = match ev {
            Event::Helo { name, extended } => self.helo(name, extended),
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
                let (queued_sender, defer) = match self.shared.cleanup.rewrite_sender(&sender) {
                    Ok(s) => (s, None),
                    Err(e) => (sender.clone(), Some(self.rewrite_failed(&e))),
                };
                self.txn = Some(Txn {
                    mail: m,
                    sender,
                    queued_sender,
                    defer,
                    rcpts: Vec::new(),
                    writer: None,
                    cleanup: None,
                    failed: None,
                    milter_buf: None,
                    actions: Actions::default(),
                });
                let r = &self.shared.settings.restrictions;
                if !r.delay_reject && !r.sender.is_empty() {
                    let cx = self.context(Stage::Mail, None, None);
                    self.run_check(Stage::Mail, Pending::Mail, cx)
                } else {
                    self.milter_event(MilterStage::Mail)
                }
            }
            Event::Rcpt(r) => self.rcpt(r),
            Event::Data => {
                self.in_data = true;
                if self.shared.settings.restrictions.data.is_empty() {
                    self.milter_event(MilterStage::Data)
                } else {
                    let cx = self.context(Stage::Data, None, None);
                    self.run_check(Stage::Data, Pending::Data, cx)
                }
            }
            Event::MessageData(chunk) => {
                self.in_data = true;
                self.content(&chunk);
                Ok(())
            }
            Event::MessageEnd { size } => {
                self.in_data = false;
                if self.shared.settings.restrictions.eod.is_empty() {
                    self.message_end()
                } else {
                    let mut cx = self.context(Stage::Eod, None, None);
                    cx.size = size;
                    self.run_check(Stage::Eod, Pending::Eod, cx)
                }
            }
            Event::Reset => {
                self.in_data = false;
                // Dropping the writer removes its temporary file.
                self.txn = None;
                self.milter_abort();
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
            Event::Unknown(line) => self.milter_unknown(line),
        };
    }

    /// RCPT: the restrictions decide ([`crate::restrict`]), then [`Self::rcpt_accepted`].
    fn rcpt(&mut self, r: RcptTo) -> Result<(), proto::NoPendingDecision> {
        let cx = self.context(Stage::Rcpt, None, Some(r.recipient.to_string()));
        self.run_check(Stage::Rcpt, Pending::Rcpt(r), cx)
    }

    /// A recipient the restrictions accepted: validity in virtual and relay domains, then
    /// the queue file.
    fn rcpt_accepted(&mut self, r: RcptTo) -> Result<(), proto::NoPendingDecision> {
        let rcpt = r.recipient.to_string();
        // After the restrictions, as Postfix's smtpd_reject_unlisted_recipient: unknown
        // recipients of virtual alias, virtual mailbox and relay domains (crate::recipients).
        // receive_override_options=no_unknown_recipient_checks: mail back from a filter.
        let status = (!self.shared.cleanup.no_unknown_recipient_checks)
            .then(|| self.shared.recipients.check(&rcpt));
        match status.unwrap_or(RcptStatus::Accept(oxipost_cleanup::AddressClass::Default)) {
            RcptStatus::Reject {
                code,
                enhanced,
                text,
            } => {
                self.log_reject("RCPT", code, enhanced, &text, Some(&rcpt));
                return self.session.reject(code, enhanced, &text);
            }
            RcptStatus::Defer { text } => {
                self.log_reject("RCPT", 451, "4.3.0", &text, Some(&rcpt));
                return self.session.reject(451, "4.3.0", &text);
            }
            RcptStatus::Accept(_) | RcptStatus::Other(_) => {}
        }
        self.milter_event(MilterStage::Rcpt(r))
    }

    /// A recipient everyone accepted: into the queue file.
    fn rcpt_queue(&mut self, r: RcptTo) -> Result<(), proto::NoPendingDecision> {
        let rcpt = r.recipient.to_string();
        if let Err(e) = self.open_queue_file() {
            oxipost_log::warning!("{}: queue file create: {e}", self.client.namaddr());
            self.log_reject("RCPT", 451, "4.3.0", WRITE_ERROR, Some(&rcpt));
            return self.session.reject(451, "4.3.0", WRITE_ERROR);
        }
        let expanded = match self.shared.cleanup.rewrite_recipient(&rcpt) {
            Ok(list) => list,
            Err(e) => {
                let why = self.rewrite_failed(&e);
                if let Some(txn) = self.txn.as_mut() {
                    txn.defer.get_or_insert(why);
                }
                Vec::new()
            }
        };
        let orcpt = r
            .orcpt
            .as_ref()
            .map(|o| format!("{};{}", o.addr_type, xtext(&o.address)));
        let recipient = Recipient {
            address: rcpt.clone(),
            orcpt: orcpt.clone(),
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
            Some(w) => expanded.iter().try_for_each(|address| {
                let mut one = recipient.clone();
                if !address.eq_ignore_ascii_case(&rcpt) {
                    // The original recipient travels as ORCPT (X-Original-To:, DSNs).
                    one.orcpt = orcpt
                        .clone()
                        .or_else(|| Some(format!("rfc822;{}", xtext(&rcpt))));
                }
                one.address = address.clone();
                w.add_recipient(&one)
            }),
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

    /// VRFY answers as RCPT would (the recipient restrictions); known is `252`.
    fn vrfy(&mut self, arg: &str) -> Result<(), proto::NoPendingDecision> {
        let bare = arg.trim().trim_start_matches('<').trim_end_matches('>');
        let addr = if bare.contains('@') || bare.eq_ignore_ascii_case("postmaster") {
            bare.to_string()
        } else {
            format!("{bare}@{}", self.shared.settings.myhostname)
        };
        let cx = self.context(Stage::Vrfy, None, Some(addr));
        self.run_check(Stage::Vrfy, Pending::Vrfy, cx)
    }

    /// HELO/EHLO: with `smtpd_delay_reject = no` the HELO restrictions decide now.
    fn helo(&mut self, name: String, extended: bool) -> Result<(), proto::NoPendingDecision> {
        let r = &self.shared.settings.restrictions;
        if r.delay_reject || r.helo.is_empty() {
            return self.milter_helo(name, extended);
        }
        let mut cx = self.context(Stage::Helo, Some(name.clone()), None);
        cx.extended = extended;
        self.run_check(Stage::Helo, Pending::Helo { name, extended }, cx)
    }

    /// What the restrictions see of this session.
    fn context(&self, stage: Stage, helo: Option<String>, recipient: Option<String>) -> Context {
        let txn = self.txn.as_ref();
        let sasl = self
            .sasl_user
            .as_ref()
            .filter(|_| self.session.is_authenticated());
        Context {
            stage: Some(stage),
            extended: self.esmtp,
            ip: Some(self.client.ip),
            addr: self.client.addr.clone(),
            port: self.client.port,
            name: self.client.name.clone(),
            name_status: self.peer.0,
            reverse_name: self.peer.1.clone(),
            reverse_status: self.peer.2,
            helo: helo.or_else(|| self.session.helo_name().map(str::to_owned)),
            sender: txn.map(|t| t.sender.clone()),
            recipient,
            rcpt_count: txn.map_or(0, |t| t.rcpts.len()),
            protocol: self.protocol(),
            queue_id: self.queue_id(),
            sasl_method: sasl.map(|(_, m)| m.clone()),
            sasl_username: sasl.map(|(u, _)| u.clone()),
            sasl_sender: txn.and_then(|t| t.mail.auth.clone()),
            tls: self
                .tls
                .as_ref()
                .map(|i| (i.protocol.clone(), i.cipher.clone(), u32::from(i.bits))),
            ill_pipelining: self.ill_pipelining,
            smtputf8: txn.is_some_and(|t| t.mail.smtputf8),
            size: txn.and_then(|t| t.mail.size).unwrap_or(0),
            instance: format!(
                "{:x}.{:x}.{:x}",
                oxipost_log::pid(),
                self.id,
                self.check_serial
            ),
        }
    }

    /// Runs the restrictions of `stage`: here when they need no network, else on a helper
    /// thread (input waits; [`Connection::wake`] brings the result).
    fn run_check(
        &mut self,
        stage: Stage,
        pending: Pending,
        cx: Context,
    ) -> Result<(), proto::NoPendingDecision> {
        let r = Arc::clone(&self.shared.settings.restrictions);
        let actions = self
            .txn
            .as_ref()
            .map(|t| t.actions.clone())
            .unwrap_or_default();
        if r.needs_io(stage) {
            self.check_serial = self.check_serial.wrapping_add(1);
            self.check = Some(pending);
            self.shared.jobs.spawn(self.id, self.check_serial, move || {
                JobResult::Check(restrict::check(&r, &cx, stage, actions))
            });
            return Ok(());
        }
        let out = restrict::check(&r, &cx, stage, actions);
        self.check_done(pending, out)
    }

    /// Answers the decision a check was for.
    fn check_done(
        &mut self,
        pending: Pending,
        out: Outcome,
    ) -> Result<(), proto::NoPendingDecision> {
        if let Some(t) = self.txn.as_mut() {
            t.actions = out.actions;
        }
        if let Some(rep) = out.reject {
            return match pending {
                Pending::Connect => {
                    let who = self.client.namaddr();
                    self.session
                        .deny_access(rep.code, &rep.dsn, &rep.text, &who);
                    Ok(())
                }
                Pending::Mail | Pending::Eod => {
                    // Dropping the transaction removes any queue file.
                    self.txn = None;
                    self.session.reject(rep.code, &rep.dsn, &rep.text)
                }
                Pending::Data => {
                    self.in_data = false;
                    self.session.reject(rep.code, &rep.dsn, &rep.text)
                }
                _ => self.session.reject(rep.code, &rep.dsn, &rep.text),
            };
        }
        match pending {
            Pending::Connect => self.milter_event(MilterStage::Connect),
            Pending::Helo { name, extended } => self.milter_helo(name, extended),
            Pending::Mail => self.milter_event(MilterStage::Mail),
            Pending::Data => self.milter_event(MilterStage::Data),
            Pending::Vrfy => self.session.accept(),
            Pending::Rcpt(r) => self.rcpt_accepted(r),
            Pending::Eod => self.message_end(),
            Pending::Milter | Pending::MilterEvent(_) => {
                self.session.reject(451, "4.3.0", WRITE_ERROR)
            }
        }
    }

    /// Notes command pipelining that PIPELINING does not allow (Postfix's
    /// `SMTPD_FLAG_ILL_PIPELINING`): more input after a command that must end a group, or
    /// any pipelining by a client that did not say EHLO.
    fn scan_pipelining(&mut self, data: &[u8]) {
        if self.ill_pipelining || self.in_data {
            return;
        }
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let line = &rest[..i];
            rest = &rest[i + 1..];
            if rest.is_empty() {
                break;
            }
            let word = line.split(|&b| b == b' ').next().unwrap_or(b"");
            let verb = String::from_utf8_lossy(word).trim().to_ascii_uppercase();
            let last = matches!(
                verb.as_str(),
                "EHLO" | "HELO" | "DATA" | "NOOP" | "VRFY" | "EXPN" | "STARTTLS" | "AUTH" | "QUIT"
            );
            if !self.esmtp || last {
                self.ill_pipelining = true;
                let next = String::from_utf8_lossy(&rest[..rest.len().min(100)]).into_owned();
                oxipost_log::info!(
                    "improper command pipelining after {} from {}: {}",
                    clean(&verb),
                    self.client.namaddr(),
                    clean(next.trim_end())
                );
                return;
            }
            if verb == "BDAT" {
                return;
            }
        }
    }

    /// After the client name lookup: log, apply the client restrictions now when
    /// `smtpd_delay_reject = no`, greet.
    fn connected(&mut self, out: &mut Vec<u8>) -> Flow {
        oxipost_log::info!("connect from {}", self.client.namaddr());
        let r = &self.shared.settings.restrictions;
        if !r.delay_reject && !r.client.is_empty() {
            let cx = self.context(Stage::Connect, None, None);
            let _ = self.run_check(Stage::Connect, Pending::Connect, cx);
            return self.drive(out);
        }
        let _ = self.milter_event(MilterStage::Connect);
        self.drive(out)
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
        w.set_sender(&txn.queued_sender)?;
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
        // content_filter first: an access-table FILTER action recorded later wins (qmgr
        // takes the last `filter`), as in Postfix.
        if !self.shared.cleanup.content_filter.is_empty() {
            w.add_attribute("filter", &self.shared.cleanup.content_filter)?;
        }
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
        // PREPEND actions of access tables come first, as Postfix's smtpd writes them.
        for h in txn.actions.prepend.iter().rev() {
            received.insert_str(0, &format!("{}\r\n", h.replace(['\r', '\n'], " ")));
        }
        if self.milter.is_some() {
            txn.milter_buf = Some(received.into_bytes());
        } else if let Err(e) = w.write_content(received.as_bytes()) {
            txn.failed = Some(e.to_string());
            return;
        }
        txn.cleanup = Some(Cleanup::with_settings(
            CleanupOptions {
                myhostname: settings.myhostname.clone(),
                queue_id,
                arrival,
                sender: txn.queued_sender.clone(),
                header_size_limit: settings.header_size_limit,
                add_missing_headers: true,
            },
            Arc::clone(&self.shared.cleanup),
            is_interface_address(self.client.ip),
        ));
    }

    fn content(&mut self, chunk: &[u8]) {
        self.start_content();
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        if txn.failed.is_some() {
            return;
        }
        if let (Some(c), Some(b)) = (txn.cleanup.as_mut(), txn.milter_buf.as_mut()) {
            let _ = c.feed(chunk, b);
        } else if let (Some(c), Some(w)) = (txn.cleanup.as_mut(), txn.writer.as_mut())
            && let Err(e) = c.feed(chunk, w)
        {
            txn.failed = Some(e.to_string());
        }
    }

    /// End of data: finish the file, act on the content checks' verdict, and hand the file
    /// to the committer; the reply waits for it.
    fn message_end(&mut self) -> Result<(), proto::NoPendingDecision> {
        let r = self.message_end_inner();
        if !matches!(self.check, Some(Pending::Milter)) {
            // Ended without the milters seeing the content (refused, discarded): they
            // hear ABORT, so that they take the next MAIL.
            self.milter_abort();
        }
        r
    }

    fn message_end_inner(&mut self) -> Result<(), proto::NoPendingDecision> {
        self.start_content();
        let Some(mut txn) = self.txn.take() else {
            return self.session.reject(451, "4.3.0", WRITE_ERROR);
        };
        let (mut w, c) = match (txn.failed.take(), txn.writer.take(), txn.cleanup.take()) {
            (None, Some(w), Some(c)) => (w, c),
            (why, w, _) => {
                let id = w.map(|w| w.id().to_string()).unwrap_or("NOQUEUE".into());
                let why = why.unwrap_or_else(|| "no queue file".into());
                oxipost_log::warning!("{id}: queue file write error: {why}");
                return self.session.reject(451, "4.3.0", WRITE_ERROR);
            }
        };
        let id = w.id().to_string();
        let mut milter_buf = txn.milter_buf.take();
        let finished = match milter_buf.as_mut() {
            Some(b) => c.finish(b),
            None => c.finish(&mut w),
        };
        let r = match finished {
            Ok(r) => r,
            Err(e) => {
                oxipost_log::warning!("{id}: queue file write error: {e}");
                return self.session.reject(451, "4.3.0", WRITE_ERROR);
            }
        };
        if let Some(mid) = &r.message_id {
            oxipost_log::info!("{id}: message-id={}", clean(mid));
        }
        if r.header_truncated {
            oxipost_log::warning!("{id}: header longer than header_size_limit, excess discarded");
        }
        self.log_events(&id, &txn, &r.events);
        // Dropping `w` below removes the unfinished file: nothing is queued.
        if let Some(why) = txn.defer.take() {
            let (enhanced, text) = why.split_once(' ').unwrap_or(("4.3.0", WRITE_ERROR));
            return self.session.reject(451, enhanced, text);
        }
        use oxipost_cleanup::Verdict as Content;
        let hold = match r.verdict {
            Content::Accept => false,
            Content::Hold(_) => true,
            Content::Reject(why) => {
                let (enhanced, text) = why.split_once(' ').unwrap_or((why.as_str(), ""));
                let code = if enhanced.starts_with('4') { 451 } else { 550 };
                return self.session.reject(code, enhanced, text);
            }
            Content::Discard(_) => {
                return self.session.accept_with(&format!("Ok: queued as {id}"));
            }
            Content::Defer(why) => {
                oxipost_log::warning!("{id}: {}", clean(&why));
                return self.session.reject(451, "4.3.0", WRITE_ERROR);
            }
        };
        // Access-table actions (crate::restrict): DISCARD drops the message after the
        // usual 250, HOLD queues into hold/, FILTER and REDIRECT are recorded for qmgr.
        if txn.actions.discard.is_some() {
            return self.session.accept_with(&format!("Ok: queued as {id}"));
        }
        let hold = hold || txn.actions.hold.is_some();
        if let Some(message) = milter_buf
            && let Some(h) = self.milter.as_ref()
        {
            // The milters decide on the connection's thread; input waits
            // ([`Self::milter_done`]).
            self.check_serial = self.check_serial.wrapping_add(1);
            let macros = self.milter_macros(Some(&id));
            let sent = h.send(self.check_serial, move |c| {
                c.macros.extend(macros);
                let (verdict, warnings) = c.message(&message);
                crate::milter::Done::Message(crate::milter::Decision {
                    verdict,
                    warnings,
                    message,
                })
            });
            if !sent {
                oxipost_log::warning!("{id}: milter conversation lost");
                return self.session.reject(451, "4.3.0", WRITE_ERROR);
            }
            self.check = Some(Pending::Milter);
            self.milter_held = Some(crate::milter::Held {
                writer: w,
                actions: txn.actions.clone(),
                hold,
                sender: txn.sender.clone(),
                rcpts: txn.rcpts.clone(),
            });
            return Ok(());
        }
        self.queue_message(w, &txn.actions, hold, &id)
    }

    /// The macros of this session so far, with Postfix's names; `id` is `i`.
    fn milter_macros(&self, id: Option<&str>) -> Vec<(String, String)> {
        let st = &self.shared.milters.settings;
        let c = &self.client;
        let mut m = vec![
            ("j".to_string(), self.shared.settings.myhostname.clone()),
            ("{daemon_name}".into(), st.daemon_name.clone()),
            ("v".into(), st.v.clone()),
            ("_".into(), format!("{} [{}]", c.name, c.addr)),
            ("{client_addr}".into(), c.addr.clone()),
            ("{client_name}".into(), c.name.clone()),
            ("{client_ptr}".into(), self.peer.1.clone()),
            ("{client_port}".into(), c.port.to_string()),
        ];
        if let Some(d) = c.daemon {
            let ip = crate::policy::canonical(d.ip());
            m.push(("{daemon_addr}".into(), ip.to_string()));
            m.push(("{daemon_port}".into(), d.port().to_string()));
        }
        if let Some(t) = &self.tls {
            m.push(("{tls_version}".into(), t.protocol.clone()));
            m.push(("{cipher}".into(), t.cipher.clone()));
            m.push(("{cipher_bits}".into(), t.bits.to_string()));
        }
        if let Some(id) = id {
            m.push(("i".into(), id.to_string()));
        }
        if let Some((user, method)) = self
            .sasl_user
            .as_ref()
            .filter(|_| self.session.is_authenticated())
        {
            m.push(("{auth_authen}".into(), user.clone()));
            m.push(("{auth_type}".into(), method.clone()));
        }
        if let Some(t) = &self.txn {
            let (mailer, host) = self.route(&t.sender);
            m.push(("{mail_addr}".into(), t.sender.clone()));
            m.push(("{mail_host}".into(), host));
            m.push(("{mail_mailer}".into(), mailer));
            if let Some(a) = t
                .mail
                .auth
                .as_deref()
                .filter(|a| *a != "<>")
                .and_then(sasl::xtext_decode)
            {
                m.push(("{auth_author}".into(), a));
            }
        }
        m
    }

    /// Where an address would go, as the `{mail_mailer}`/`{mail_host}` and
    /// `{rcpt_mailer}`/`{rcpt_host}` macros say it: (transport, next hop).
    fn route(&self, addr: &str) -> (String, String) {
        use oxipost_cleanup::AddressClass;
        let me = &self.shared.settings.myhostname;
        let domain = addr.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        let Some(domain) = domain.filter(|d| !d.is_empty()) else {
            return ("local".into(), me.clone());
        };
        match self.shared.cleanup.classes.classify(&domain) {
            Ok(AddressClass::Local) => ("local".into(), me.clone()),
            Ok(AddressClass::VirtualMailbox) => ("virtual".into(), domain),
            Ok(AddressClass::Relay) => ("relay".into(), domain),
            Ok(AddressClass::VirtualAlias) => ("error".into(), domain),
            Ok(AddressClass::Default) | Err(_) => ("smtp".into(), domain),
        }
    }

    /// HELO/EHLO the restrictions allowed: to the milters.
    fn milter_helo(
        &mut self,
        name: String,
        extended: bool,
    ) -> Result<(), proto::NoPendingDecision> {
        // After a temporary refusal at CONNECT, HELO is not refused (Postfix).
        if self.milter.is_some() && self.milter_denied.is_none() {
            self.milter_send(MilterStage::Helo { extended }, move |c| c.helo(&name))
        } else {
            self.milter_continue(MilterStage::Helo { extended })
        }
    }

    /// An unknown command: to the milters (only they see these).
    fn milter_unknown(&mut self, line: String) -> Result<(), proto::NoPendingDecision> {
        if self.milter.is_some() {
            self.milter_send(MilterStage::Unknown, move |c| c.unknown(&line))
        } else {
            self.milter_continue(MilterStage::Unknown)
        }
    }

    /// An SMTP event the restrictions allowed: to the milters when there are any (input
    /// waits for their answer, [`Self::milter_answer`]), else accepted now.
    fn milter_event(&mut self, stage: MilterStage) -> Result<(), proto::NoPendingDecision> {
        if matches!(stage, MilterStage::Connect) && self.shared.milters.enabled() {
            self.milter = self.shared.milters.open(self.id);
            if self.milter.is_none() {
                oxipost_log::warning!(
                    "{}: cannot start the milter conversation",
                    self.client.namaddr()
                );
                self.milter_denied = Some(oxipost_milter::conversation::TEMPFAIL.into());
            }
        }
        if self.milter.is_none() {
            return self.milter_continue(stage);
        }
        match &stage {
            MilterStage::Connect => {
                let name = self.client.name.clone();
                let family = crate::milter::family(&self.client.addr, self.client.port);
                self.milter_send(stage, move |c| c.connect(&name, family))
            }
            MilterStage::Helo { .. } => self.milter_continue(stage),
            MilterStage::Mail => {
                // Postfix has the queue id from MAIL on (its `i` macro).
                if let Err(e) = self.open_queue_file() {
                    oxipost_log::warning!("{}: queue file create: {e}", self.client.namaddr());
                    self.txn = None;
                    return self.session.reject(451, "4.3.0", WRITE_ERROR);
                }
                let args = self
                    .txn
                    .as_ref()
                    .map(|t| mail_args(&t.mail))
                    .unwrap_or_default();
                self.milter_send(stage, move |c| c.mail(&args))
            }
            MilterStage::Rcpt(r) => {
                let rcpt = r.recipient.to_string();
                let (mailer, host) = self.route(&rcpt);
                let args = rcpt_args(r);
                self.milter_send(stage, move |c| {
                    c.macros.insert("{rcpt_addr}".into(), rcpt);
                    c.macros.insert("{rcpt_host}".into(), host);
                    c.macros.insert("{rcpt_mailer}".into(), mailer);
                    c.rcpt(&args)
                })
            }
            MilterStage::Data => self.milter_send(stage, |c| c.data()),
            MilterStage::Unknown => self.milter_continue(stage),
        }
    }

    /// Sends one event to the conversation thread with the current macros.
    fn milter_send(
        &mut self,
        stage: MilterStage,
        f: impl FnOnce(&mut oxipost_milter::Conversation) -> oxipost_milter::Answer + Send + 'static,
    ) -> Result<(), proto::NoPendingDecision> {
        let id = self.queue_id();
        let macros = self.milter_macros(id.as_deref());
        self.check_serial = self.check_serial.wrapping_add(1);
        let sent = self.milter.as_ref().is_some_and(|h| {
            h.send(self.check_serial, move |c| {
                c.macros.extend(macros);
                let a = f(c);
                crate::milter::Done::Event(a, c.take_warnings())
            })
        });
        if !sent {
            // The thread is gone (it cannot panic on milter input; be safe anyway).
            self.milter = None;
            return self.milter_answer(
                stage,
                oxipost_milter::Answer::Reply(oxipost_milter::conversation::TEMPFAIL.into()),
                Vec::new(),
            );
        }
        self.check = Some(Pending::MilterEvent(stage));
        Ok(())
    }

    /// The milters answered an SMTP event.
    fn milter_answer(
        &mut self,
        stage: MilterStage,
        answer: oxipost_milter::Answer,
        warnings: Vec<String>,
    ) -> Result<(), proto::NoPendingDecision> {
        use oxipost_milter::Answer;
        let id = self.queue_id().unwrap_or_else(|| "NOQUEUE".into());
        for w in &warnings {
            oxipost_log::warning!("{id}: {}", clean(w));
        }
        let to = match &stage {
            MilterStage::Rcpt(r) => Some(r.recipient.to_string()),
            _ => None,
        };
        let tail = self.milter_log_tail(to.as_deref());
        let from = self.client.namaddr();
        let what = stage.name();
        match answer {
            Answer::Continue => self.milter_continue(stage),
            Answer::Discard => {
                oxipost_log::info!(
                    "{id}: milter-discard: {what} from {from}: milter triggers DISCARD action;{tail}"
                );
                if let Some(t) = self.txn.as_mut() {
                    t.actions.discard = Some("milter triggers DISCARD action".into());
                }
                self.milter_continue(stage)
            }
            Answer::Reply(reply) => {
                let (code, enhanced, text) = crate::milter::split_reply(&reply);
                oxipost_log::info!(
                    "{id}: milter-reject: {what} from {from}: {code} {enhanced} {};{tail}",
                    clean(&text)
                );
                match stage {
                    MilterStage::Connect if code == 421 => {
                        let text = format!(
                            "{} Service unavailable - try again later",
                            self.shared.settings.myhostname
                        );
                        self.session.shutdown(421, "4.7.0", &text);
                        Ok(())
                    }
                    MilterStage::Connect if code >= 500 => {
                        // As Postfix: 554 instead of the greeting, then `503 5.7.0 Error:
                        // access denied` to every command but QUIT (RFC 5321 3.1).
                        let text = format!(
                            "{} ESMTP not accepting connections",
                            self.shared.settings.myhostname
                        );
                        let who = self.client.namaddr();
                        self.session.deny_access(554, "5.7.1", &text, &who);
                        Ok(())
                    }
                    MilterStage::Connect => {
                        // A temporary refusal: greet; MAIL, RCPT, DATA, VRFY, AUTH get it.
                        self.milter_denied = Some(reply);
                        self.session.greet();
                        Ok(())
                    }
                    MilterStage::Mail => {
                        self.txn = None;
                        self.milter_abort();
                        self.session.reject(code, &enhanced, &text)
                    }
                    MilterStage::Data => {
                        self.in_data = false;
                        self.session.reject(code, &enhanced, &text)
                    }
                    MilterStage::Helo { .. } | MilterStage::Rcpt(_) | MilterStage::Unknown => {
                        self.session.reject(code, &enhanced, &text)
                    }
                }
            }
        }
    }

    /// ` from=<s> to=<r> proto=P helo=<h>` for milter log lines.
    fn milter_log_tail(&self, to: Option<&str>) -> String {
        let mut t = String::new();
        if let Some(txn) = &self.txn {
            t.push_str(&format!(" from=<{}>", clean(&txn.sender)));
        }
        if let Some(to) = to {
            t.push_str(&format!(" to=<{}>", clean(to)));
        }
        t.push_str(&format!(" proto={}", self.protocol()));
        if let Some(h) = self.session.helo_name() {
            t.push_str(&format!(" helo=<{}>", clean(h)));
        }
        t
    }

    /// An event everyone accepted.
    fn milter_continue(&mut self, stage: MilterStage) -> Result<(), proto::NoPendingDecision> {
        match stage {
            MilterStage::Connect => {
                self.session.greet();
                Ok(())
            }
            MilterStage::Helo { extended } => {
                self.esmtp = extended;
                self.session.accept()
            }
            // An unknown command accepted by everyone is still not recognized (502).
            MilterStage::Mail | MilterStage::Data | MilterStage::Unknown => self.session.accept(),
            MilterStage::Rcpt(r) => self.rcpt_queue(r),
        }
    }

    /// The transaction is gone: ABORT to the milters (nobody waits for it).
    fn milter_abort(&mut self) {
        if let Some(h) = &self.milter {
            h.post(|c| c.abort());
        }
    }

    /// The milters' verdict on the held message: refuse, discard, or apply their
    /// modifications and queue it (held for a quarantine).
    fn milter_done(&mut self, d: crate::milter::Decision) -> Result<(), proto::NoPendingDecision> {
        use oxipost_milter::Verdict;
        let Some(held) = self.milter_held.take() else {
            return self.session.reject(451, "4.3.0", WRITE_ERROR);
        };
        let id = held.writer.id().to_string();
        for w in &d.warnings {
            oxipost_log::warning!("{id}: {}", clean(w));
        }
        let tail = format!(
            "from=<{}> to=<{}> proto={} helo=<{}>",
            clean(&held.sender),
            held.rcpts.first().map(|r| clean(r)).unwrap_or_default(),
            self.protocol(),
            clean(self.session.helo_name().unwrap_or(""))
        );
        let from = self.client.namaddr();
        match d.verdict {
            Verdict::Refuse(reply) => {
                let (code, enhanced, text) = crate::milter::split_reply(&reply);
                oxipost_log::info!(
                    "{id}: milter-reject: END-OF-MESSAGE from {from}: {enhanced} {}; {tail}",
                    clean(&text)
                );
                self.session.reject(code, &enhanced, &text)
            }
            Verdict::Discard => {
                oxipost_log::info!(
                    "{id}: milter-discard: END-OF-MESSAGE from {from}: milter triggers DISCARD action; {tail}"
                );
                self.session.accept_with(&format!("Ok: queued as {id}"))
            }
            Verdict::Accept { mods, quarantine } => {
                if let Some(why) = &quarantine {
                    oxipost_log::info!(
                        "{id}: milter-hold: END-OF-MESSAGE from {from}: {}; {tail}",
                        clean(why)
                    );
                }
                // milter_header_checks on what the milters added or changed.
                let hv = oxipost_cleanup::checks::check_milter_headers(
                    &self.shared.settings.milter_header_checks,
                    mods,
                );
                for (action, header, text) in &hv.events {
                    let mut line = format!(
                        "{id}: {action}: header {} from {from}; {tail}",
                        clean(header)
                    );
                    if !text.is_empty() {
                        line.push_str(&format!(": {}", clean(text)));
                    }
                    if action == "warning" {
                        oxipost_log::warning!("{line}");
                    } else {
                        oxipost_log::info!("{line}");
                    }
                }
                if let Some(e) = &hv.defer {
                    oxipost_log::warning!("{id}: milter_header_checks lookup error: {}", clean(e));
                    return self.session.reject(451, "4.3.0", WRITE_ERROR);
                }
                if let Some(why) = &hv.reject {
                    let (enhanced, text) = why.split_once(' ').unwrap_or((why.as_str(), ""));
                    let code = if enhanced.starts_with('4') { 451 } else { 550 };
                    return self.session.reject(code, enhanced, text);
                }
                if hv.discard {
                    return self.session.accept_with(&format!("Ok: queued as {id}"));
                }
                let mut actions = held.actions.clone();
                if hv.filter.is_some() {
                    actions.filter = hv.filter.clone();
                }
                if hv.redirect.is_some() {
                    actions.redirect = hv.redirect.clone();
                }
                if hv.hold.is_some() {
                    actions.hold = actions.hold.or(hv.hold.clone());
                }
                let hold = held.hold || hv.hold.is_some();
                let (content, env) = crate::milter::apply(&hv.mods, &d.message);
                let mut w = held.writer;
                let prepared = record_actions(&mut w, &actions)
                    .and_then(|()| {
                        crate::milter::write_and_prepare(w, &self.shared.layout, &content, &env)
                    })
                    .map_err(|e| e.to_string())
                    .and_then(|file| {
                        if file.id().to_string() != id {
                            oxipost_log::info!(
                                "{id}: milter envelope change: queued as {}",
                                file.id()
                            );
                        }
                        self.shared
                            .submit(file, self.id, hold || quarantine.is_some())
                            .map_err(|e| e.to_string())
                    });
                match prepared {
                    Ok(()) => {
                        self.waiting = true;
                        Ok(())
                    }
                    Err(why) => {
                        oxipost_log::warning!("{id}: queue file write error: {why}");
                        self.session.reject(451, "4.3.0", WRITE_ERROR)
                    }
                }
            }
        }
    }

    /// Records access-table actions, prepares the file and hands it to the committer.
    fn queue_message(
        &mut self,
        mut w: QueueWriter,
        actions: &Actions,
        hold: bool,
        id: &str,
    ) -> Result<(), proto::NoPendingDecision> {
        if let Err(e) = record_actions(&mut w, actions) {
            oxipost_log::warning!("{id}: queue file write error: {e}");
            return self.session.reject(451, "4.3.0", WRITE_ERROR);
        }
        let submitted = w.prepare().map_err(|e| e.to_string()).and_then(|file| {
            self.shared
                .submit(file, self.id, hold)
                .map_err(|e| e.to_string())
        });
        match submitted {
            Ok(()) => {
                self.waiting = true;
                Ok(())
            }
            Err(why) => {
                oxipost_log::warning!("{id}: queue file write error: {why}");
                self.session.reject(451, "4.3.0", WRITE_ERROR)
            }
        }
    }

    /// Logs what header/body checks did, in Postfix's form:
    /// `ID: reject: header Subject: x from host[addr]; from=<s> to=<r> proto=ESMTP helo=<h>: text`.
    fn log_events(&self, id: &str, txn: &Txn, events: &[CheckEvent]) {
        for e in events {
            let to = txn.rcpts.first().map(String::as_str).unwrap_or("");
            let mut line = format!(
                "{id}: {}: {} from {}; from=<{}> to=<{}> proto={}",
                e.action,
                clean(&e.context),
                self.client.namaddr(),
                clean(&txn.sender),
                clean(to),
                self.protocol(),
            );
            if let Some(h) = self.session.helo_name() {
                line.push_str(&format!(" helo=<{}>", clean(h)));
            }
            if !e.text.is_empty() {
                line.push_str(&format!(": {}", clean(&e.text)));
            }
            if e.action == "warning" {
                oxipost_log::warning!("{line}");
            } else {
                oxipost_log::info!("{line}");
            }
        }
    }

    /// Logs a failed envelope rewrite; returns the end-of-data reply text (with its code).
    fn rewrite_failed(&self, e: &RewriteError) -> String {
        let id = self.queue_id().unwrap_or_else(|| "NOQUEUE".into());
        oxipost_log::warning!("{id}: {}", clean(&e.to_string()));
        match e {
            RewriteError::Expansion(_) => "4.6.0 Alias expansion error".into(),
            RewriteError::Table(_) => format!("4.3.0 {WRITE_ERROR}"),
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
        if let Some(count) = self.refused {
            oxipost_log::info!("connect from {}", self.client.namaddr());
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
            oxipost_log::info!("connect from {}", self.client.namaddr());
            oxipost_log::warning!("{why}: refusing mail service until it is supported");
            let text = format!(
                "{} Server configuration error",
                self.shared.settings.myhostname
            );
            self.session.shutdown(421, "4.3.5", &text);
            return self.drive(out);
        }
        // The client's name from the DNS (PTR, confirmed by a forward lookup), on a helper
        // thread; the greeting waits for it. Local (unix-socket) clients are not looked up.
        let resolver = self.shared.settings.restrictions.resolver.clone();
        if let Some(res) =
            resolver.filter(|_| self.shared.settings.peername_lookup && self.client.port != 0)
        {
            let ip = self.client.ip;
            // Answered from /etc/hosts (loopback, local networks): no network, so no
            // thread — under load a thread per connection costs more than the mail.
            if res.hosts_knows(ip) {
                let (name, ns, reverse, rs) = restrict::dns::peer_names(&res, ip);
                self.client.name = name;
                self.peer = (ns, reverse, rs);
                return self.connected(out);
            }
            self.resolving = true;
            self.check_serial = self.check_serial.wrapping_add(1);
            self.shared.jobs.spawn(self.id, self.check_serial, move || {
                let (n, ns, rn, rs) = restrict::dns::peer_names(&res, ip);
                JobResult::Peer(n, ns, rn, rs)
            });
            return Flow::Continue;
        }
        self.connected(out)
    }

    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) -> Flow {
        if let Some(t) = self.transcript.as_mut() {
            // Never message content, never SASL responses.
            if !self.in_data {
                let secret = self.auth.is_some() || self.auth_final.is_some();
                t.input(data, secret);
            }
        }
        self.scan_pipelining(data);
        self.session.feed(data);
        self.drive(out)
    }

    fn timeout(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.waiting || self.auth_waiting || self.check.is_some() || self.resolving {
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
        if (self.resolving || self.check.is_some())
            && let Some((serial, result)) = self.shared.take_job(self.id)
            && serial == self.check_serial
        {
            match result {
                JobResult::Peer(name, ns, reverse, rs) if self.resolving => {
                    self.resolving = false;
                    self.client.name = name;
                    self.peer = (ns, reverse, rs);
                    return self.connected(out);
                }
                JobResult::Check(outcome) => {
                    if let Some(p) = self.check.take() {
                        let _ = self.check_done(p, outcome);
                        return self.drive(out);
                    }
                }
                JobResult::Peer(..) => {}
            }
        }
        if matches!(self.check, Some(Pending::Milter | Pending::MilterEvent(_)))
            && let Some(done) = self.shared.milters.take(self.id, self.check_serial)
        {
            let pending = self.check.take();
            let _ = match (pending, done) {
                (Some(Pending::Milter), crate::milter::Done::Message(d)) => self.milter_done(d),
                (Some(Pending::MilterEvent(stage)), crate::milter::Done::Event(a, w)) => {
                    self.milter_answer(stage, a, w)
                }
                _ => self.session.reject(451, "4.3.0", WRITE_ERROR),
            };
            return self.drive(out);
        }
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
        !self.waiting
            && !self.auth_waiting
            && self.check.is_none()
            && !self.resolving
            && self.session.wants_read()
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
        if let Some(t) = self.transcript.take()
            && t.wanted(&self.shared.settings.notices)
        {
            let namaddr = self.client.namaddr();
            match crate::notice::submit(
                &self.shared.layout,
                &self.shared.settings.notices,
                &namaddr,
                &t,
            ) {
                Ok(id) => {
                    oxipost_log::info!("{id}: postmaster notice of errors from {namaddr}");
                    crate::service::trigger(
                        &self.shared.settings.qmgr_trigger,
                        oxipost_daemon::proto::TRIGGER_SCAN_INCOMING,
                    );
                }
                Err(e) => oxipost_log::warning!("cannot queue postmaster notice: {e}"),
            }
        }
        oxipost_log::info!(
            "disconnect from {} {}",
            self.client.namaddr(),
            self.session.stats().summary()
        );
        self.shared.leave(self.client.ip);
    }
}

/// The MAIL FROM arguments as milters get them: `<sender>`, then the ESMTP parameters.
fn mail_args(m: &MailFrom) -> Vec<String> {
    let mut a = vec![format!(
        "<{}>",
        m.sender
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    )];
    if let Some(n) = m.size {
        a.push(format!("SIZE={n}"));
    }
    if let Some(b) = &m.body {
        a.push(format!("BODY={}", format!("{b:?}").to_ascii_uppercase()));
    }
    if m.smtputf8 {
        a.push("SMTPUTF8".into());
    }
    if let Some(e) = &m.envid {
        a.push(format!("ENVID={}", xtext(e)));
    }
    if let Some(auth) = &m.auth {
        a.push(format!("AUTH={auth}"));
    }
    a
}

/// The RCPT TO arguments as milters get them.
fn rcpt_args(r: &RcptTo) -> Vec<String> {
    let mut a = vec![format!("<{}>", r.recipient)];
    if let Some(o) = &r.orcpt {
        a.push(format!("ORCPT={};{}", o.addr_type, xtext(&o.address)));
    }
    a
}

/// Whether `ip` is an address of this host (Postfix's `permit_inet_interfaces`, the
/// default `local_header_rewrite_clients`): only such clients get their header addresses
/// rewritten. Binding a socket to the address answers it exactly.
fn is_interface_address(ip: std::net::IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Records what qmgr must honour for access-table actions, as queue-file attributes:
/// `hold_reason` (the file itself goes to `hold/`), `filter` (transport:destination for
/// every recipient) and `redirect` (one address replacing every recipient).
fn record_actions(w: &mut QueueWriter, a: &Actions) -> Result<(), QueueError> {
    if let Some(why) = &a.hold {
        w.add_attribute("hold_reason", why)?;
    }
    if let Some(f) = &a.filter {
        w.add_attribute("filter", f)?;
    }
    if let Some(r) = &a.redirect {
        w.add_attribute("redirect", r)?;
    }
    Ok(())
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

//! The SMTP server session state machine.
//!
//! Input is fed with [`Session::feed`]; [`Session::next`] does as much work
//! as it can and returns one [`Step`]. Replies are appended to one output
//! buffer in command order and handed out only when the session cannot go
//! on (input exhausted, decision pending, closing, STARTTLS), which batches
//! the replies to a pipelined group into one write (RFC 2920) without ever
//! reordering them.

use std::collections::VecDeque;
use std::fmt;

use crate::command::{self, Verb};
use crate::config::{BareNewline, ServerConfig};
use crate::data::{Decoded, DotDecoder};
use crate::event::{Body, Event, Step};
use crate::reply::{Reply, fix_reject, render, sanitize_text};
use crate::stats::CommandStats;

mod verbs;

/// The driver answered although no decision was pending (a driver bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoPendingDecision;

impl fmt::Display for NoPendingDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no matching SMTP decision is pending")
    }
}

impl std::error::Error for NoPendingDecision {}

/// A mail transaction, from accepted MAIL to end of message or reset.
#[derive(Debug)]
struct Txn {
    smtputf8: bool,
    body: Option<Body>,
    rcpts: usize,
    /// Content bytes received so far (DATA, or all BDAT chunks).
    size: u64,
    too_big: bool,
    /// A BDAT chunk was seen: DATA is no longer allowed.
    bdat: bool,
}

/// What the session is reading.
#[derive(Debug)]
enum Phase {
    Command,
    /// A SASL response line after a `334` challenge.
    AuthLine,
    Data(DotDecoder),
    /// Reading a BDAT chunk. With `error` set the chunk is discarded and the
    /// error sent once it has been consumed; `abort` then ends the transaction.
    Bdat {
        remaining: u64,
        announced: u64,
        last: bool,
        error: Option<Reply>,
        abort: bool,
    },
    /// `220 Ready to start TLS` sent; waiting for the driver's handshake.
    Tls {
        announced: bool,
    },
    /// Flush output, then close.
    Closing,
    Closed,
}

/// The decision the driver owes us.
#[derive(Debug)]
enum Pending {
    Helo { name: String, extended: bool },
    Mail { smtputf8: bool, body: Option<Body> },
    Rcpt,
    Data,
    MessageEnd,
    Vrfy(String),
    Auth,
    Unknown,
}

/// A line taken from the input buffer.
enum Line {
    Incomplete,
    TooLong,
    Got { line: Vec<u8>, bare_lf: bool },
}

/// One SMTP server conversation. See the crate docs for the driving loop.
#[derive(Debug)]
pub struct Session {
    cfg: ServerConfig,
    inbuf: Vec<u8>,
    /// Read position in `inbuf`; consumed bytes are compacted away lazily.
    pos: usize,
    out: Vec<u8>,
    events: VecDeque<Event>,
    phase: Phase,
    pending: Option<Pending>,
    greeted: bool,
    /// Discarding the rest of an overlong line.
    skipping: bool,
    helo: Option<String>,
    esmtp: bool,
    /// PIPELINING was announced in this (TLS) session.
    pipelining: bool,
    tls: bool,
    authenticated: bool,
    txn: Option<Txn>,
    errors: u32,
    /// Over-limit RCPTs answered in this transaction.
    overshoot: usize,
    /// Message content not yet handed out, at most `data_chunk_size` (+2).
    chunk: Vec<u8>,
    stats: CommandStats,
    /// Set by [`Session::deny_access`]: every command but QUIT gets this `503` text.
    access_denied: Option<String>,
}

impl Session {
    /// A new session; nothing is sent until [`greet`](Self::greet).
    pub fn new(cfg: ServerConfig) -> Self {
        let tls = cfg.tls_active;
        Session {
            cfg,
            inbuf: Vec::new(),
            pos: 0,
            out: Vec::new(),
            events: VecDeque::new(),
            phase: Phase::Command,
            pending: None,
            greeted: false,
            skipping: false,
            helo: None,
            esmtp: false,
            pipelining: false,
            tls,
            authenticated: false,
            txn: None,
            errors: 0,
            overshoot: 0,
            chunk: Vec::new(),
            stats: CommandStats::new(),
            access_denied: None,
        }
    }

    /// The client restrictions refused the client at connect (`smtpd_delay_reject =
    /// no`): as Postfix, the rejection replaces the greeting, the session stays open,
    /// and every command but QUIT is answered `503 5.7.0 Error: access denied for
    /// <who>`. A `421` rejection closes the session instead.
    pub fn deny_access(&mut self, code: u16, enhanced: &str, text: &str, who: &str) {
        if code == 421 {
            self.greeted = true;
            self.shutdown(code, enhanced, text);
            return;
        }
        if self.greeted || self.is_closing() {
            return;
        }
        self.greeted = true;
        self.errors = self.errors.saturating_add(1);
        let (code, enhanced) = fix_reject(code, enhanced);
        self.send(code, &enhanced, &sanitize_text(text));
        self.access_denied = Some(sanitize_text(&format!("Error: access denied for {who}")));
    }

    /// Queues the `220` greeting. Input fed before this call is "pregreet"
    /// traffic: with `forbid_unauth_pipelining` the session answers
    /// `554 5.5.0 Error: SMTP protocol synchronization` instead and closes.
    pub fn greet(&mut self) {
        if self.greeted || self.is_closing() {
            return;
        }
        self.greeted = true;
        if self.cfg.forbid_unauth_pipelining && self.pos < self.inbuf.len() {
            self.sync_error();
            return;
        }
        let banner = sanitize_text(&self.cfg.banner);
        render(&mut self.out, 220, "", &banner, false);
    }

    /// Enqueues bytes read from the client. Bytes fed while a STARTTLS
    /// handshake is due, or after close, are dropped. Queuing more than
    /// four times `input_buffer_limit` unprocessed bytes (ignoring
    /// [`wants_read`](Self::wants_read)) ends the session with a 421.
    pub fn feed(&mut self, data: &[u8]) {
        if matches!(
            self.phase,
            Phase::Tls { .. } | Phase::Closing | Phase::Closed
        ) {
            return;
        }
        if self.pos == self.inbuf.len() {
            self.inbuf.clear();
            self.pos = 0;
        } else if self.pos >= 4096 && self.pos * 2 >= self.inbuf.len() {
            self.inbuf.drain(..self.pos);
            self.pos = 0;
        }
        // A driver that ignores wants_read() must not make us buffer without
        // bound: past four times the soft limit the session gives up.
        let queued = self.inbuf.len() - self.pos;
        let hard_cap = self.cfg.limits.input_buffer_limit.saturating_mul(4);
        if queued.saturating_add(data.len()) > hard_cap {
            let text = format!("{} Error: too much pipelined input", self.cfg.hostname);
            self.shutdown(421, "4.7.0", &text);
            return;
        }
        self.inbuf.extend_from_slice(data);
    }

    /// Advances the session and returns the next thing for the driver.
    #[expect(
        clippy::should_implement_trait,
        reason = "sans-IO convention (rustls, imap-next): NeedInput is not the end of a sequence"
    )]
    pub fn next(&mut self) -> Step {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Step::Event(ev);
            }
            match &mut self.phase {
                Phase::Closing => {
                    if !self.out.is_empty() {
                        return Step::Output(std::mem::take(&mut self.out));
                    }
                    self.phase = Phase::Closed;
                    return Step::Close;
                }
                Phase::Closed => return Step::Close,
                Phase::Tls { announced } => {
                    if !self.out.is_empty() {
                        return Step::Output(std::mem::take(&mut self.out));
                    }
                    if !*announced {
                        *announced = true;
                        return Step::Event(Event::StartTls);
                    }
                    return Step::NeedInput;
                }
                _ => {}
            }
            if self.pending.is_some() || !self.greeted || !self.advance() {
                if self.out.is_empty() {
                    return Step::NeedInput;
                }
                return Step::Output(std::mem::take(&mut self.out));
            }
        }
    }

    /// Accepts the pending decision with the default success reply.
    pub fn accept(&mut self) -> Result<(), NoPendingDecision> {
        self.accept_inner(None)
    }

    /// Accepts the pending decision with `text` after the success code,
    /// e.g. `accept_with("Ok: queued as 4Xyz")` for [`Event::MessageEnd`].
    /// For EHLO/HELO the text replaces the hostname in the first line.
    pub fn accept_with(&mut self, text: &str) -> Result<(), NoPendingDecision> {
        self.accept_inner(Some(sanitize_text(text)))
    }

    /// Rejects the pending decision with `code enhanced text`. The code is
    /// forced into 4xx/5xx and the enhanced code's class made to match. A
    /// 421 closes the session after the reply, as in Postfix.
    pub fn reject(
        &mut self,
        code: u16,
        enhanced: &str,
        text: &str,
    ) -> Result<(), NoPendingDecision> {
        let pending = self.take_pending()?;
        if let Pending::MessageEnd = pending {
            self.txn = None;
            self.chunk.clear();
        }
        let (code, enhanced) = fix_reject(code, enhanced);
        self.error(Reply::new(code, &enhanced, sanitize_text(text)));
        if code == 421 {
            self.phase = Phase::Closing;
        }
        Ok(())
    }

    /// Answers a pending [`Event::Auth`]/[`Event::AuthResponse`] with a
    /// `334 <challenge>` (base64 text, may be empty) and reads the client's
    /// next response line.
    pub fn auth_challenge(&mut self, challenge: &str) -> Result<(), NoPendingDecision> {
        match self.take_pending()? {
            Pending::Auth => {
                let text = sanitize_text(challenge);
                render(&mut self.out, 334, "", &text, false);
                self.phase = Phase::AuthLine;
                Ok(())
            }
            other => {
                self.pending = Some(other);
                Err(NoPendingDecision)
            }
        }
    }

    /// Call after the TLS handshake that followed [`Event::StartTls`].
    /// Discards every byte received before it (CVE-2011-0411 command
    /// injection) and forgets HELO, AUTH and PIPELINING, as RFC 3207 asks.
    pub fn tls_established(&mut self) {
        if !matches!(self.phase, Phase::Tls { .. }) {
            return;
        }
        self.inbuf.clear();
        self.pos = 0;
        self.skipping = false;
        self.helo = None;
        self.esmtp = false;
        self.pipelining = false;
        self.authenticated = false;
        self.txn = None;
        self.chunk.clear();
        self.tls = true;
        self.phase = Phase::Command;
    }

    /// The driver's read timer fired: `421 4.4.2 <host> Error: timeout
    /// exceeded`, then close.
    pub fn timeout(&mut self) {
        let text = format!("{} Error: timeout exceeded", self.cfg.hostname);
        self.shutdown(421, "4.4.2", &text);
    }

    /// Ends the session with one final reply (e.g. `421 4.3.2 Service
    /// shutting down`), abandoning any transaction and pending decision.
    pub fn shutdown(&mut self, code: u16, enhanced: &str, text: &str) {
        if self.is_closing() {
            return;
        }
        if self.txn.take().is_some() {
            self.events.push_back(Event::Reset);
        }
        self.pending = None;
        self.chunk.clear();
        let (code, enhanced) = fix_reject(code, enhanced);
        self.send(code, &enhanced, &sanitize_text(text));
        self.phase = Phase::Closing;
    }

    /// Whether the driver should read more from the socket now: false
    /// while closing, during the STARTTLS handoff, or when
    /// `input_buffer_limit` unprocessed bytes are queued (back-pressure).
    pub fn wants_read(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Tls { .. } | Phase::Closing | Phase::Closed
        ) && self.inbuf.len() - self.pos < self.cfg.limits.input_buffer_limit
    }

    /// True once a closing reply is queued or the session has closed.
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing | Phase::Closed)
    }

    /// True when the decision event has been returned by `next()` and
    /// awaits the driver's answer.
    pub fn decision_pending(&self) -> bool {
        self.pending.is_some() && self.events.is_empty()
    }

    /// Errors so far (reset by a delivered message, as in Postfix).
    pub fn error_count(&self) -> u32 {
        self.errors
    }

    /// True once `soft_error_limit` is reached: Postfix then sleeps
    /// `smtpd_error_sleep_time` before each reply; the driver owns the clock.
    pub fn error_sleep_due(&self) -> bool {
        self.errors >= self.cfg.limits.soft_error_limit
    }

    /// The HELO/EHLO name the driver accepted, if any.
    pub fn helo_name(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// True inside TLS (after [`tls_established`](Self::tls_established) or
    /// with `tls_active`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// True after an accepted AUTH.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// Per-command counters and the last command, for the driver's log lines.
    pub fn stats(&self) -> &CommandStats {
        &self.stats
    }

    /// True while a MAIL transaction is open.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    // ---- internals -------------------------------------------------------

    fn esc(&self) -> bool {
        self.cfg.extensions.enhanced_status_codes
    }

    fn send(&mut self, code: u16, enhanced: &str, text: &str) {
        let esc = self.esc();
        render(&mut self.out, code, enhanced, text, esc);
    }

    /// Sends an error reply and enforces the hard error limit.
    fn error(&mut self, r: Reply) {
        self.stats.failed();
        self.errors = self.errors.saturating_add(1);
        self.send(r.code, &r.enhanced, &r.text);
        if self.errors >= self.cfg.limits.hard_error_limit && !self.is_closing() {
            let text = format!("{} Error: too many errors", self.cfg.hostname);
            self.send(421, "4.7.0", &text);
            self.close_now();
        }
    }

    fn err(&mut self, code: u16, enhanced: &str, text: &str) {
        self.error(Reply::new(code, enhanced, text));
    }

    /// Abandons the transaction and input, and closes after the output.
    fn close_now(&mut self) {
        if self.txn.take().is_some() {
            self.events.push_back(Event::Reset);
        }
        self.pending = None;
        self.chunk.clear();
        self.phase = Phase::Closing;
    }

    fn sync_error(&mut self) {
        self.send(554, "5.5.0", "Error: SMTP protocol synchronization");
        self.close_now();
    }

    fn bare_lf_close(&mut self) {
        let text = format!("{} Error: bare <LF> received", self.cfg.hostname);
        let (code, _) = fix_reject(self.cfg.bare_newline_reject_code, "");
        self.send(code, "5.5.2", &text);
        self.close_now();
    }

    /// The pending decision, if its event (always the last queued one)
    /// has been delivered: answering before seeing the event is a bug.
    fn take_pending(&mut self) -> Result<Pending, NoPendingDecision> {
        if !self.events.is_empty() {
            return Err(NoPendingDecision);
        }
        self.pending.take().ok_or(NoPendingDecision)
    }

    fn decide(&mut self, pending: Pending, event: Event) {
        self.pending = Some(pending);
        self.events.push_back(event);
    }

    fn reset_txn(&mut self) {
        if self.txn.take().is_some() {
            self.events.push_back(Event::Reset);
        }
        self.chunk.clear();
    }

    fn flush_chunk(&mut self) {
        if !self.chunk.is_empty() {
            let chunk = std::mem::take(&mut self.chunk);
            self.events.push_back(Event::MessageData(chunk));
        }
    }

    /// Does one unit of work; false when nothing could be done.
    fn advance(&mut self) -> bool {
        match self.phase {
            Phase::Command => self.command_phase(),
            Phase::AuthLine => self.auth_line(),
            Phase::Data(_) => self.data_phase(),
            Phase::Bdat { .. } => self.bdat_phase(),
            _ => false,
        }
    }

    /// Takes one LF-terminated line of at most `limit` bytes (without the
    /// line ending), never buffering more than `limit + 2` bytes of it.
    fn take_line(&mut self, limit: usize) -> Line {
        if self.skipping {
            let avail = &self.inbuf[self.pos..];
            return match avail.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pos += i + 1;
                    self.skipping = false;
                    Line::TooLong
                }
                None => {
                    self.pos = self.inbuf.len();
                    Line::Incomplete
                }
            };
        }
        let avail = &self.inbuf[self.pos..];
        let window = &avail[..avail.len().min(limit.saturating_add(2))];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let bare_lf = i == 0 || avail[i - 1] != b'\r';
                let end = if bare_lf { i } else { i - 1 };
                if end > limit {
                    self.pos += i + 1;
                    return Line::TooLong;
                }
                let line = avail[..end].to_vec();
                self.pos += i + 1;
                Line::Got { line, bare_lf }
            }
            None if window.len() > limit.saturating_add(1) => {
                self.pos += window.len();
                self.skipping = true;
                self.take_line(limit)
            }
            None => Line::Incomplete,
        }
    }

    fn command_phase(&mut self) -> bool {
        let taken = self.take_line(self.cfg.limits.line_length_limit);
        if !matches!(taken, Line::Incomplete) {
            self.stats.line();
        }
        let (line, bare_lf) = match taken {
            Line::Incomplete => return false,
            Line::TooLong => {
                self.err(500, "5.5.2", "Error: line too long");
                return true;
            }
            Line::Got { line, bare_lf } => (line, bare_lf),
        };
        if bare_lf && self.cfg.bare_newline == BareNewline::Reject {
            self.bare_lf_close();
            return true;
        }
        if line.contains(&0) {
            self.err(500, "5.5.2", "Error: bad syntax");
            return true;
        }
        let Ok(line) = String::from_utf8(line) else {
            self.err(500, "5.5.2", "Error: bad UTF-8 syntax");
            return true;
        };
        if line.trim_matches(' ').is_empty() {
            self.err(500, "5.5.2", "Error: bad syntax");
            return true;
        }
        let (verb, args) = command::split(&line);
        // RFC 2920: without PIPELINING nothing may follow a command, and
        // these commands must end a group even with it. Data after DATA or
        // STARTTLS is how smuggling and CVE-2011-0411 injection look.
        let must_be_last = matches!(verb, Verb::Ehlo | Verb::Helo | Verb::StartTls | Verb::Data);
        if self.cfg.forbid_unauth_pipelining
            && self.pos < self.inbuf.len()
            && !matches!(verb, Verb::Quit | Verb::Bdat)
            && (!self.pipelining || must_be_last)
        {
            self.sync_error();
            return true;
        }
        let args = args.to_owned();
        self.stats.command(verb);
        if verb != Verb::Quit
            && let Some(text) = self.access_denied.clone()
        {
            self.err(503, "5.7.0", &text);
            return true;
        }
        if verb == Verb::Unknown && self.cfg.unknown_command_events {
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            self.decide(Pending::Unknown, Event::Unknown(line));
            return true;
        }
        self.dispatch(verb, &args);
        true
    }

    fn bdat_phase(&mut self) -> bool {
        let Phase::Bdat {
            ref mut remaining,
            ref error,
            ..
        } = self.phase
        else {
            return false;
        };
        if *remaining == 0 {
            self.finish_bdat();
            return true;
        }
        let avail = self.inbuf.len() - self.pos;
        if avail == 0 {
            return false;
        }
        let discard = error.is_some();
        let room = if discard {
            avail
        } else {
            // The chunk is flushed whenever it fills, so there is room.
            let cap = self.cfg.limits.data_chunk_size.max(1);
            cap.saturating_sub(self.chunk.len()).max(1)
        };
        let n = usize::try_from(*remaining)
            .unwrap_or(usize::MAX)
            .min(avail)
            .min(room);
        *remaining -= n as u64;
        if !discard {
            self.chunk
                .extend_from_slice(&self.inbuf[self.pos..self.pos + n]);
            if let Some(t) = self.txn.as_mut() {
                t.size += n as u64;
            }
        }
        self.pos += n;
        if self.chunk.len() >= self.cfg.limits.data_chunk_size {
            self.flush_chunk();
        }
        true
    }

    fn finish_bdat(&mut self) {
        let phase = std::mem::replace(&mut self.phase, Phase::Command);
        let Phase::Bdat {
            announced,
            last,
            error,
            abort,
            ..
        } = phase
        else {
            return;
        };
        if let Some(r) = error {
            if abort {
                self.reset_txn();
            }
            return self.error(r);
        }
        self.flush_chunk();
        if last {
            self.stats.end_of_message();
            let size = self.txn.as_ref().map_or(0, |t| t.size);
            self.decide(Pending::MessageEnd, Event::MessageEnd { size });
        } else {
            self.send(250, "2.0.0", &format!("Ok: {announced} bytes"));
        }
    }

    fn data_phase(&mut self) -> bool {
        let Phase::Data(mut dec) = self.phase else {
            return false;
        };
        if self.pos == self.inbuf.len() {
            return false;
        }
        let cap = self.cfg.limits.data_chunk_size.max(1);
        let before = self.chunk.len();
        let (n, status) = dec.decode(&self.inbuf[self.pos..], &mut self.chunk, cap);
        self.pos += n;
        self.phase = Phase::Data(dec);
        let grown = (self.chunk.len() - before) as u64;
        let limit = self.cfg.limits.message_size_limit;
        let mut too_big = false;
        if let Some(t) = self.txn.as_mut() {
            t.size = t.size.saturating_add(grown);
            t.too_big |= limit > 0 && t.size > limit;
            too_big = t.too_big;
        }
        if too_big {
            // Swallow the rest: nothing more reaches the driver.
            self.chunk.clear();
        } else if self.chunk.len() >= cap {
            self.flush_chunk();
        }
        match status {
            Decoded::More => {}
            Decoded::End => self.finish_data(too_big),
            Decoded::BareLf => self.bare_lf_close(),
        }
        true
    }

    fn finish_data(&mut self, too_big: bool) {
        self.phase = Phase::Command;
        if too_big {
            self.reset_txn();
            return self.err(552, "5.3.4", "Message size exceeds fixed limit");
        }
        self.flush_chunk();
        self.stats.end_of_message();
        let size = self.txn.as_ref().map_or(0, |t| t.size);
        self.decide(Pending::MessageEnd, Event::MessageEnd { size });
    }

    fn accept_inner(&mut self, text: Option<String>) -> Result<(), NoPendingDecision> {
        let pending = self.take_pending()?;
        let text = |default: &str| text.clone().unwrap_or_else(|| default.to_owned());
        match pending {
            Pending::Helo { name, extended } => {
                self.reset_txn();
                self.helo = Some(name);
                self.esmtp = extended;
                let first = text(&self.cfg.hostname);
                if extended {
                    self.pipelining = self.cfg.extensions.pipelining;
                    self.ehlo_reply(&first);
                } else {
                    render(&mut self.out, 250, "", &first, false);
                }
            }
            Pending::Mail { smtputf8, body } => {
                self.overshoot = 0;
                self.txn = Some(Txn {
                    smtputf8,
                    body,
                    rcpts: 0,
                    size: 0,
                    too_big: false,
                    bdat: false,
                });
                self.send(250, "2.1.0", &text("Ok"));
            }
            Pending::Rcpt => {
                if let Some(t) = self.txn.as_mut() {
                    t.rcpts += 1;
                }
                self.send(250, "2.1.5", &text("Ok"));
            }
            Pending::Data => {
                self.phase = Phase::Data(DotDecoder::new(self.cfg.bare_newline));
                render(
                    &mut self.out,
                    354,
                    "",
                    &text("End data with <CR><LF>.<CR><LF>"),
                    false,
                );
            }
            Pending::MessageEnd => {
                self.txn = None;
                self.errors = 0;
                self.send(250, "2.0.0", &text("Ok"));
            }
            Pending::Vrfy(arg) => self.send(252, "2.0.0", &text(&arg)),
            Pending::Auth => {
                self.authenticated = true;
                self.send(235, "2.7.0", &text("Authentication successful"));
            }
            // Accepting an unknown command still refuses it: nobody implements it.
            Pending::Unknown => self.error(Reply::new(
                502,
                "5.5.2",
                "Error: command not recognized".to_string(),
            )),
        }
        Ok(())
    }
}

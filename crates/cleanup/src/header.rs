//! The streaming header filter: message content goes in as it arrives, cleaned content goes
//! out to the queue writer, and at most one logical header (bounded by `header_size_limit`)
//! and, with `body_checks`, one body line are held in memory.
//!
//! Rules, as Postfix's cleanup:
//! - The header ends at the first empty line, or at the first line that is neither a header
//!   field (`name:`) nor a continuation (starts with space or tab). In the second case an
//!   empty line is inserted so that the body stays a body.
//! - At the end of the header, `Message-Id:`, `Date:` and `From:` are added when missing
//!   (with [`CleanupOptions::add_missing_headers`]), in that order, in Postfix's forms:
//!   `Message-Id: <YYYYMMDDhhmmss.QUEUEID@myhostname>` (UTC stamp), `Date:` of the arrival
//!   time, `From: <envelope sender>` or `From: MAILER-DAEMON` for the null sender.
//! - One logical header (a field with its continuation lines) longer than
//!   `header_size_limit` is cut there and the excess discarded (Postfix: "If a header is
//!   larger, the excess is discarded"); [`CleanupResult::header_truncated`] says so.
//! - Added lines use the message's own line ending (that of its first line; CRLF when
//!   there is none). The body passes through untouched, byte for byte.
//!
//! - With [`CleanupSettings`] ([`Cleanup::with_settings`]), each complete logical header goes
//!   through `header_checks` (see [`crate::checks`]) and then, when the entry point allows
//!   header rewriting, canonical mapping and masquerading of the addresses in sender and
//!   recipient headers (`From:`, `To:`, ...; see [`crate::rewrite`]), each address replaced
//!   in place. Body lines go through `body_checks` up to `body_checks_size_limit`. What the
//!   checks decide about the whole message is [`CleanupResult::verdict`]; what they want
//!   logged is [`CleanupResult::events`] (cleanup itself never logs).
//! - MIME, as Postfix's cleanup (unless `disable_mime_input_processing`): the body is
//!   followed through `multipart/*` boundaries and `message/rfc822` attachments. MIME
//!   headers (`Content-*`, `MIME-Version`) of the message and every header of a MIME part
//!   go through `mime_header_checks` instead of `header_checks`; the other headers of an
//!   attached message go through `nested_header_checks`; `body_checks` see the body lines
//!   of every part (boundary lines included) but no MIME or nested header. (Without MIME
//!   processing the message's own MIME headers still go to `mime_header_checks`.) Parts nest at
//!   most [`MIME_NESTING_LIMIT`] deep (Postfix's `mime_nesting_limit`); deeper structure is
//!   body text.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::SystemTime;

use crate::address::{quote_address, rewrite_address_list, unquote_address};
use crate::checks::Action;
use crate::date::{mail_date, message_id_stamp};
use crate::rewrite::Role;
use crate::settings::CleanupSettings;

/// What header or body checks decided about the whole message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Verdict {
    /// Queue it as usual.
    #[default]
    Accept,
    /// `HOLD`: queue it in `hold/` (the text is for the log).
    Hold(String),
    /// `DISCARD`: answer as if queued, then throw it away.
    Discard(String),
    /// `REJECT`: refuse it; the reply text with its DSN code (`5.7.1 ...`; a `4.x.x`
    /// code means a temporary refusal, `451`).
    Reject(String),
    /// A table could not answer: `451 4.3.0`; the text is for the log.
    Defer(String),
}

impl Verdict {
    fn rank(&self) -> u8 {
        match self {
            Verdict::Accept => 0,
            Verdict::Hold(_) => 1,
            Verdict::Discard(_) => 2,
            Verdict::Reject(_) | Verdict::Defer(_) => 3,
        }
    }

    /// True when no further checks matter.
    fn is_final(&self) -> bool {
        matches!(
            self,
            Verdict::Discard(_) | Verdict::Reject(_) | Verdict::Defer(_)
        )
    }
}

/// One thing header or body checks want logged, as Postfix's
/// `QUEUEID: ACTION: CONTEXT from CLIENT; from=<...> to=<...>: TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckEvent {
    /// `reject`, `warning`, `hold`, `discard`, `info`, `replace`.
    pub action: &'static str,
    /// `header Subject: x` or `body some text` (bounded, one line).
    pub context: String,
    /// The action's text.
    pub text: String,
}

/// At most this many events are kept per message.
const MAX_EVENTS: usize = 50;
/// Longest logged context.
const MAX_CONTEXT: usize = 200;
/// Body lines longer than this are checked in pieces (Postfix's `line_length_limit`).
const BODY_LINE_MAX: usize = 2048;
/// Postfix's `mime_nesting_limit` default.
pub const MIME_NESTING_LIMIT: usize = 100;

/// Where the body parser is (MIME processing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// Body text of some part (or preamble/epilogue).
    Text,
    /// The header of a MIME part; `nested` for the header of an attached message.
    Header { nested: bool },
}

/// The MIME structure seen so far.
#[derive(Debug)]
struct Mime {
    state: BodyState,
    /// Open multipart boundaries, outermost first, each with "is multipart/digest".
    stack: Vec<(Vec<u8>, bool)>,
    /// The Content-Type of the header block being read: (type/subtype, boundary).
    ctype: Option<(String, Option<String>)>,
    /// The logical header of a part being collected, with its line ends.
    field: Vec<u8>,
    /// Attached messages opened (bounded with the multipart depth).
    depth: usize,
}

impl Mime {
    fn new() -> Mime {
        Mime {
            state: BodyState::Text,
            stack: Vec::new(),
            ctype: None,
            field: Vec::new(),
            depth: 0,
        }
    }
}

/// What cleanup needs to know about the message; filled by the entry point.
#[derive(Debug, Clone)]
pub struct CleanupOptions {
    /// `myhostname`, for `Message-Id:`.
    pub myhostname: String,
    /// The message's queue id, for `Message-Id:`.
    pub queue_id: String,
    /// Arrival time, for `Message-Id:` and `Date:`.
    pub arrival: SystemTime,
    /// Envelope sender (empty for `<>`), for `From:`.
    pub sender: String,
    /// `header_size_limit`: the largest logical header kept whole.
    pub header_size_limit: usize,
    /// Add missing `Message-Id:`, `Date:`, `From:` (Postfix's `always_add_missing_headers`,
    /// or a client in `local_header_rewrite_clients`).
    pub add_missing_headers: bool,
}

/// What cleanup learned about a finished message (for the entry point's log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupResult {
    /// The message's `Message-Id:` value, found or added.
    pub message_id: Option<String>,
    /// Some header was longer than `header_size_limit` and was cut.
    pub header_truncated: bool,
    /// Bytes of header, as written.
    pub header_size: u64,
    /// What header and body checks decided.
    pub verdict: Verdict,
    /// What the checks want logged.
    pub events: Vec<CheckEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Body,
}

/// Longest message id kept for the log.
const MAX_LOGGED_ID: usize = 256;

/// The filter for one message. Feed content with [`feed`](Self::feed), then call
/// [`finish`](Self::finish) once.
#[derive(Debug)]
pub struct Cleanup {
    opts: CleanupOptions,
    phase: Phase,
    /// The physical header line being collected (bounded).
    line: Vec<u8>,
    /// Discarding the rest of an over-long physical line.
    skipping: bool,
    /// A field has started, so space-led lines continue it.
    in_field: bool,
    /// Size of the current logical header so far.
    field_len: usize,
    /// The current field is being cut.
    field_cut: bool,
    /// The current field is `Message-Id:` and its value is still to be captured.
    capture_id: bool,
    seen_message_id: bool,
    seen_date: bool,
    seen_from: bool,
    eol: Option<&'static [u8]>,
    result: CleanupResult,
    /// Tables for rewriting and checks (none: the plain filter).
    settings: Option<Arc<CleanupSettings>>,
    /// The entry point allows header address rewriting for this client.
    rewrite_headers: bool,
    /// The current logical header, complete with line ends, until the next one starts.
    field: Vec<u8>,
    /// The body line being collected for body_checks.
    body_line: Vec<u8>,
    /// Body bytes seen by body_checks so far.
    body_checked: u64,
    mime: Mime,
}

impl Cleanup {
    pub fn new(opts: CleanupOptions) -> Self {
        Cleanup {
            opts,
            phase: Phase::Header,
            line: Vec::new(),
            skipping: false,
            in_field: false,
            field_len: 0,
            field_cut: false,
            capture_id: false,
            seen_message_id: false,
            seen_date: false,
            seen_from: false,
            eol: None,
            result: CleanupResult::default(),
            settings: None,
            rewrite_headers: false,
            field: Vec::new(),
            body_line: Vec::new(),
            body_checked: 0,
            mime: Mime::new(),
        }
    }

    /// A filter that also applies header/body checks and (when `rewrite_headers`, which
    /// the entry point decides per client as `local_header_rewrite_clients` does) header
    /// address rewriting.
    pub fn with_settings(
        opts: CleanupOptions,
        settings: Arc<CleanupSettings>,
        rewrite_headers: bool,
    ) -> Self {
        let mut c = Cleanup::new(opts);
        c.rewrite_headers = rewrite_headers && settings.rewrites_headers();
        c.settings = Some(settings);
        c
    }

    fn limit(&self) -> usize {
        self.opts.header_size_limit.max(80)
    }

    /// Passes the next piece of content (any bytes, any split) through to `out`.
    pub fn feed<W: Write + ?Sized>(&mut self, mut data: &[u8], out: &mut W) -> io::Result<()> {
        while self.phase == Phase::Header && !data.is_empty() {
            let lf = data.iter().position(|&b| b == b'\n');
            if self.skipping {
                match lf {
                    Some(i) => {
                        self.skipping = false;
                        data = &data[i + 1..];
                    }
                    None => return Ok(()),
                }
                continue;
            }
            match lf {
                Some(i) => {
                    self.line.extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.header_line(&line, out)?;
                    self.line = line;
                    self.line.clear();
                }
                None => {
                    let room = self.limit() + 2 - self.line.len().min(self.limit() + 2);
                    let take = room.min(data.len());
                    self.line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if !data.is_empty() {
                        // A physical line longer than the limit: handle what we have.
                        let line = std::mem::take(&mut self.line);
                        self.overlong_line(&line, out)?;
                    }
                }
            }
        }
        if self.phase == Phase::Body && !data.is_empty() {
            self.body_feed(data, out)?;
        }
        Ok(())
    }

    /// Ends the message: a last header line without line end is completed, missing headers
    /// are added if the header never ended.
    pub fn finish<W: Write + ?Sized>(mut self, out: &mut W) -> io::Result<CleanupResult> {
        if self.phase == Phase::Header {
            let line = std::mem::take(&mut self.line);
            if !line.is_empty() && !self.skipping {
                let is_header = self.classify(&line) != LineKind::Other;
                self.header_line(&line, out)?;
                if is_header && self.phase == Phase::Header && !self.field_cut {
                    let eol = self.eol();
                    self.field.extend_from_slice(eol);
                }
            }
            if self.phase == Phase::Header {
                self.add_missing(out)?;
            }
        } else if !self.body_line.is_empty() {
            let line = std::mem::take(&mut self.body_line);
            self.check_body_line(&line, out)?;
        }
        if !self.mime.field.is_empty() {
            let nested = matches!(self.mime.state, BodyState::Header { nested: true });
            self.flush_part_field(nested, out)?;
        }
        Ok(self.result)
    }

    fn eol(&self) -> &'static [u8] {
        self.eol.unwrap_or(b"\r\n")
    }

    fn classify(&self, line: &[u8]) -> LineKind {
        let content = strip_eol(line);
        if content.is_empty() {
            LineKind::Empty
        } else if matches!(content[0], b' ' | b'\t') && self.in_field {
            LineKind::Continuation
        } else if field_name(content).is_some() {
            LineKind::Field
        } else {
            LineKind::Other
        }
    }

    /// One complete physical line (with its line end) in the header phase.
    fn header_line<W: Write + ?Sized>(&mut self, line: &[u8], out: &mut W) -> io::Result<()> {
        if self.eol.is_none() {
            self.eol = Some(if line.ends_with(b"\r\n") || !line.ends_with(b"\n") {
                b"\r\n"
            } else {
                b"\n"
            });
        }
        match self.classify(line) {
            LineKind::Empty => {
                self.add_missing(out)?;
                out.write_all(line)?;
                self.enter_body();
            }
            LineKind::Other => {
                self.add_missing(out)?;
                out.write_all(self.eol())?;
                self.enter_body();
                self.body_feed(line, out)?;
            }
            LineKind::Continuation => {
                self.field_len = self.field_len.saturating_add(line.len());
                if self.capture_id {
                    self.capture_message_id(strip_eol(line));
                }
                if !self.field_cut && self.field_len > self.limit() {
                    self.field_cut = true;
                    self.result.header_truncated = true;
                }
                if !self.field_cut {
                    self.write_header(line, out)?;
                }
            }
            LineKind::Field => {
                self.flush_field(out)?;
                self.field_start(line);
                self.field_len = line.len();
                self.field_cut = false;
                if line.len() > self.limit() {
                    self.field_cut = true;
                    self.result.header_truncated = true;
                    let keep = &strip_eol(line)[..self.limit().min(strip_eol(line).len())];
                    self.write_header(keep, out)?;
                    let eol = self.eol();
                    self.write_header(eol, out)?;
                } else {
                    self.write_header(line, out)?;
                }
            }
        }
        Ok(())
    }

    /// A physical line that reached the limit before its line end.
    fn overlong_line<W: Write + ?Sized>(&mut self, line: &[u8], out: &mut W) -> io::Result<()> {
        match self.classify(line) {
            LineKind::Other | LineKind::Empty => {
                // The body starts here; the rest of the line follows as body bytes.
                self.add_missing(out)?;
                out.write_all(self.eol())?;
                self.enter_body();
                self.body_feed(line, out)?;
            }
            LineKind::Field | LineKind::Continuation => {
                let mut cut = line.to_vec();
                cut.truncate(self.limit());
                cut.extend_from_slice(self.eol());
                self.header_line(&cut, out)?;
                self.field_cut = true;
                self.result.header_truncated = true;
                self.skipping = true;
            }
        }
        Ok(())
    }

    /// Adds to the current logical header (written when it is complete).
    fn write_header<W: Write + ?Sized>(&mut self, bytes: &[u8], _out: &mut W) -> io::Result<()> {
        self.field.extend_from_slice(bytes);
        Ok(())
    }

    fn emit<W: Write + ?Sized>(&mut self, bytes: &[u8], out: &mut W) -> io::Result<()> {
        self.result.header_size += bytes.len() as u64;
        out.write_all(bytes)
    }

    fn set_verdict(&mut self, v: Verdict) {
        if v.rank() > self.result.verdict.rank() {
            self.result.verdict = v;
        }
    }

    fn event(&mut self, action: &'static str, kind: &str, line: &str, text: &str) {
        if self.result.events.len() >= MAX_EVENTS {
            return;
        }
        let mut context = format!("{kind} {}", line.replace(['\r', '\n', '\t'], " "));
        if context.len() > MAX_CONTEXT {
            let mut cut = MAX_CONTEXT;
            while !context.is_char_boundary(cut) {
                cut -= 1;
            }
            context.truncate(cut);
        }
        self.result.events.push(CheckEvent {
            action,
            context,
            text: text.to_string(),
        });
    }

    /// Acts on a check result that does not change the line; returns the line edit.
    fn act(&mut self, action: Action, kind: &str, line: &str) -> Action {
        match action {
            Action::Reject(text) => {
                self.event("reject", kind, line, &text);
                self.set_verdict(Verdict::Reject(text));
                Action::Dunno
            }
            Action::Hold(text) => {
                self.event("hold", kind, line, &text);
                self.set_verdict(Verdict::Hold(text));
                Action::Dunno
            }
            Action::Discard(text) => {
                self.event("discard", kind, line, &text);
                self.set_verdict(Verdict::Discard(text));
                Action::Dunno
            }
            Action::Warn(text) => {
                self.event("warning", kind, line, &text);
                Action::Dunno
            }
            Action::Info(text) => {
                self.event("info", kind, line, &text);
                Action::Dunno
            }
            Action::Unsupported(text) => {
                self.event("warning", kind, line, &text);
                Action::Dunno
            }
            Action::Replace(text) => {
                self.event("replace", kind, line, &text);
                Action::Replace(text)
            }
            other => other,
        }
    }

    /// The check tables, unless switched off or already decided.
    fn checking(&self) -> Option<Arc<CleanupSettings>> {
        self.settings
            .as_ref()
            .filter(|s| !s.no_header_body_checks && !self.result.verdict.is_final())
            .cloned()
    }

    /// A logical header is complete: checks, rewriting, then out.
    fn flush_field<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<()> {
        if self.field.is_empty() {
            return Ok(());
        }
        let mut field = std::mem::take(&mut self.field);
        let eol_len = field.len() - strip_eol(&field).len();
        // MIME headers go to mime_header_checks even without MIME processing, as Postfix.
        let is_mime = self.settings.is_some() && is_mime_header(&field);
        if is_mime && self.mime_enabled() {
            self.note_content_type(&field);
        }
        let table = |s: &CleanupSettings| -> bool {
            let c = if is_mime {
                &s.mime_header_checks
            } else {
                &s.header_checks
            };
            !c.is_empty()
        };
        if let Some(s) = self.checking().filter(|s| table(s)) {
            let text = String::from_utf8_lossy(strip_eol(&field)).replace("\r\n", "\n");
            let checks = if is_mime {
                &s.mime_header_checks
            } else {
                &s.header_checks
            };
            match checks.check(&text) {
                Err(e) => {
                    self.event("warning", "header", &text, &e);
                    self.set_verdict(Verdict::Defer(e));
                }
                Ok(None) => {}
                Ok(Some(action)) => match self.act(action, "header", &text) {
                    Action::Ignore => return Ok(()),
                    Action::Replace(new) => {
                        let eol = field[field.len() - eol_len..].to_vec();
                        field = new.into_bytes();
                        field.extend_from_slice(if eol.is_empty() { self.eol() } else { &eol });
                    }
                    Action::Prepend(new) => {
                        let mut line = new.into_bytes();
                        line.extend_from_slice(self.eol());
                        self.emit(&line, out)?;
                    }
                    _ => {}
                },
            }
        }
        if self.rewrite_headers
            && let Some(new) = self.rewrite_field(&field)
        {
            field = new;
        }
        self.emit(&field, out)
    }

    /// Canonical mapping and masquerading of the addresses in a sender or recipient
    /// header; `None` when nothing changes (or the header is not UTF-8).
    fn rewrite_field(&mut self, field: &[u8]) -> Option<Vec<u8>> {
        let settings = self.settings.clone()?;
        let s = std::str::from_utf8(field).ok()?;
        let colon = s.find(':')?;
        let role = header_role(s[..colon].trim_end())?;
        let end = s.len() - (s.len() - strip_eol(field).len());
        let value = &s[colon + 1..end];
        let r = rewrite_address_list(value, |a| {
            let internal = unquote_address(a);
            if internal.is_empty() {
                return Ok(None);
            }
            let new = settings
                .rewriter
                .canonicalize(&settings.classes, &internal, role)?;
            Ok((new != internal).then(|| quote_address(&new)))
        });
        match r {
            Ok(Some(v)) => Some(format!("{}{v}{}", &s[..=colon], &s[end..]).into_bytes()),
            Ok(None) => None,
            Err(e) => {
                let e: oxipost_maps::MapError = e;
                self.set_verdict(Verdict::Defer(e.message));
                None
            }
        }
    }

    /// Body content: through body_checks line by line while they apply, else straight out.
    fn body_feed<W: Write + ?Sized>(&mut self, mut data: &[u8], out: &mut W) -> io::Result<()> {
        while !data.is_empty() {
            let active = self.checking().is_some_and(|s| {
                (!s.body_checks.is_empty() && self.body_checked < s.body_checks_size_limit)
                    || (!s.disable_mime
                        && (!s.mime_header_checks.is_empty() || !s.nested_header_checks.is_empty()))
            });
            if !active {
                if !self.body_line.is_empty() {
                    let line = std::mem::take(&mut self.body_line);
                    out.write_all(&line)?;
                }
                return out.write_all(data);
            }
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.body_line.extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    let line = std::mem::take(&mut self.body_line);
                    self.check_body_line(&line, out)?;
                }
                None => {
                    let room = BODY_LINE_MAX.saturating_sub(self.body_line.len());
                    let take = room.min(data.len());
                    self.body_line.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.body_line.len() >= BODY_LINE_MAX {
                        let line = std::mem::take(&mut self.body_line);
                        self.check_body_line(&line, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// One body line (with its line end, if any): a MIME part header line, or body text
    /// (boundary lines included) for body_checks.
    fn check_body_line<W: Write + ?Sized>(&mut self, line: &[u8], out: &mut W) -> io::Result<()> {
        if self.mime_enabled() {
            if let BodyState::Header { nested } = self.mime.state {
                return self.part_header_line(line, nested, out);
            }
            self.boundary(strip_eol(line));
        }
        self.body_text_line(line, out)
    }

    /// One line of body text through body_checks (within `body_checks_size_limit`).
    fn body_text_line<W: Write + ?Sized>(&mut self, line: &[u8], out: &mut W) -> io::Result<()> {
        let Some(s) = self
            .checking()
            .filter(|s| !s.body_checks.is_empty() && self.body_checked < s.body_checks_size_limit)
        else {
            return out.write_all(line);
        };
        self.body_checked = self.body_checked.saturating_add(line.len() as u64);
        let content = strip_eol(line);
        let eol = &line[content.len()..];
        let text = String::from_utf8_lossy(content).into_owned();
        match s.body_checks.check(&text) {
            Err(e) => {
                self.event("warning", "body", &text, &e);
                self.set_verdict(Verdict::Defer(e));
                out.write_all(line)
            }
            Ok(None) => out.write_all(line),
            Ok(Some(action)) => match self.act(action, "body", &text) {
                Action::Ignore => Ok(()),
                Action::Replace(new) => {
                    out.write_all(new.as_bytes())?;
                    out.write_all(eol)
                }
                Action::Prepend(new) => {
                    out.write_all(new.as_bytes())?;
                    out.write_all(self.eol())?;
                    out.write_all(line)
                }
                _ => out.write_all(line),
            },
        }
    }

    /// MIME processing applies (settings present and not switched off).
    fn mime_enabled(&self) -> bool {
        self.settings.as_ref().is_some_and(|s| !s.disable_mime)
    }

    /// The primary header is complete: the body starts, as its Content-Type says.
    fn enter_body(&mut self) {
        self.phase = Phase::Body;
        if self.mime_enabled() {
            self.end_of_mime_header(false);
        }
    }

    /// Records the Content-Type of the header block being read.
    fn note_content_type(&mut self, field: &[u8]) {
        let text = String::from_utf8_lossy(strip_eol(field));
        if let Some((name, value)) = text.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-type")
        {
            self.mime.ctype = Some(parse_content_type(value));
        }
    }

    /// A header block (primary, part or nested) ended: what follows is a multipart
    /// preamble (its boundary opens), an attached message's header, or text.
    fn end_of_mime_header(&mut self, in_part: bool) {
        let digest = in_part && self.mime.stack.last().is_some_and(|(_, d)| *d);
        let ctype = self.mime.ctype.take();
        let (kind, boundary) = match ctype {
            Some((k, b)) => (k, b),
            None if digest => ("message/rfc822".to_string(), None),
            None => ("text/plain".to_string(), None),
        };
        let room = self.mime.stack.len() + self.mime.depth < MIME_NESTING_LIMIT;
        self.mime.state = BodyState::Text;
        if !room {
            return;
        }
        if kind.starts_with("multipart/") {
            if let Some(b) = boundary.filter(|b| !b.is_empty()) {
                let digest = kind == "multipart/digest";
                self.mime.stack.push((b.into_bytes(), digest));
            }
        } else if kind == "message/rfc822" || kind == "message/global" {
            self.mime.depth += 1;
            self.mime.state = BodyState::Header { nested: true };
        }
    }

    /// A body text line that may be a boundary of an open multipart: `--b` starts a part
    /// header, `--b--` closes that multipart (and any inside it).
    fn boundary(&mut self, content: &[u8]) {
        let Some(rest) = content.strip_prefix(b"--") else {
            return;
        };
        let rest = rest.trim_ascii_end();
        for level in (0..self.mime.stack.len()).rev() {
            let b = &self.mime.stack[level].0;
            let Some(after) = rest.strip_prefix(b.as_slice()) else {
                continue;
            };
            if after == b"--" {
                self.mime.stack.truncate(level);
                self.mime.state = BodyState::Text;
                return;
            }
            if after.is_empty() {
                self.mime.stack.truncate(level + 1);
                self.mime.ctype = None;
                self.mime.state = BodyState::Header { nested: false };
                return;
            }
        }
    }

    /// One line of a MIME part's (or attached message's) header.
    fn part_header_line<W: Write + ?Sized>(
        &mut self,
        line: &[u8],
        nested: bool,
        out: &mut W,
    ) -> io::Result<()> {
        let content = strip_eol(line);
        if content.is_empty() {
            self.flush_part_field(nested, out)?;
            out.write_all(line)?;
            self.end_of_mime_header(true);
            return Ok(());
        }
        if matches!(content[0], b' ' | b'\t') && !self.mime.field.is_empty() {
            if self.mime.field.len() + line.len() <= self.limit() {
                self.mime.field.extend_from_slice(line);
            }
            return Ok(());
        }
        self.flush_part_field(nested, out)?;
        if field_name(content).is_some() {
            let keep = line.len().min(self.limit());
            self.mime.field.extend_from_slice(&line[..keep]);
            return Ok(());
        }
        // Not a header line: the part's header ends here and this is its first text line.
        self.end_of_mime_header(true);
        self.check_body_line(line, out)
    }

    /// A complete part header through mime_header_checks (MIME headers, any header of a
    /// multipart part) or nested_header_checks (other headers of an attached message).
    fn flush_part_field<W: Write + ?Sized>(&mut self, nested: bool, out: &mut W) -> io::Result<()> {
        if self.mime.field.is_empty() {
            return Ok(());
        }
        let mut field = std::mem::take(&mut self.mime.field);
        let is_mime = is_mime_header(&field);
        if is_mime {
            self.note_content_type(&field);
        }
        let nested_table = nested && !is_mime;
        let Some(s) = self.checking() else {
            return out.write_all(&field);
        };
        let checks = if nested_table {
            &s.nested_header_checks
        } else {
            &s.mime_header_checks
        };
        if checks.is_empty() {
            return out.write_all(&field);
        }
        let content_len = strip_eol(&field).len();
        let text = String::from_utf8_lossy(&field[..content_len]).replace("\r\n", "\n");
        match checks.check(&text) {
            Err(e) => {
                self.event("warning", "header", &text, &e);
                self.set_verdict(Verdict::Defer(e));
            }
            Ok(None) => {}
            Ok(Some(action)) => match self.act(action, "header", &text) {
                Action::Ignore => return Ok(()),
                Action::Replace(new) => {
                    let eol = field[content_len..].to_vec();
                    field = new.into_bytes();
                    field.extend_from_slice(if eol.is_empty() { self.eol() } else { &eol });
                }
                Action::Prepend(new) => {
                    out.write_all(new.as_bytes())?;
                    out.write_all(self.eol())?;
                }
                _ => {}
            },
        }
        out.write_all(&field)
    }

    /// A new header field begins: note the fields cleanup cares about. (Hook point for
    /// header rewriting and header_checks.)
    fn field_start(&mut self, line: &[u8]) {
        self.in_field = true;
        self.capture_id = false;
        let content = strip_eol(line);
        let Some((name, value)) = field_name(content) else {
            return;
        };
        if name.eq_ignore_ascii_case(b"message-id") {
            if !self.seen_message_id {
                self.capture_id = true;
                self.capture_message_id(value);
            }
            self.seen_message_id = true;
        } else if name.eq_ignore_ascii_case(b"date") {
            self.seen_date = true;
        } else if name.eq_ignore_ascii_case(b"from") {
            self.seen_from = true;
        }
    }

    fn capture_message_id(&mut self, value: &[u8]) {
        let v = String::from_utf8_lossy(value);
        let v = v.trim();
        if v.is_empty() {
            return;
        }
        let mut v: String = v.chars().filter(|c| !c.is_control()).collect();
        if v.len() > MAX_LOGGED_ID {
            let mut cut = MAX_LOGGED_ID;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            v.truncate(cut);
        }
        self.result.message_id = Some(v);
        self.capture_id = false;
    }

    fn add_missing<W: Write + ?Sized>(&mut self, out: &mut W) -> io::Result<()> {
        self.flush_field(out)?;
        self.in_field = false;
        if !self.opts.add_missing_headers {
            return Ok(());
        }
        let eol = String::from_utf8_lossy(self.eol()).into_owned();
        let mut added = String::new();
        if !self.seen_message_id {
            let id = format!(
                "<{}.{}@{}>",
                message_id_stamp(self.opts.arrival),
                self.opts.queue_id,
                self.opts.myhostname
            );
            added.push_str(&format!("Message-Id: {id}{eol}"));
            self.result.message_id = Some(id);
            self.seen_message_id = true;
        }
        if !self.seen_date {
            added.push_str(&format!("Date: {}{eol}", mail_date(self.opts.arrival)));
            self.seen_date = true;
        }
        if !self.seen_from {
            let from = if self.opts.sender.is_empty() {
                "MAILER-DAEMON"
            } else {
                self.opts.sender.as_str()
            };
            let from: String = from.chars().filter(|c| !c.is_control()).collect();
            added.push_str(&format!("From: {from}{eol}"));
            self.seen_from = true;
        }
        self.emit(added.as_bytes(), out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    Empty,
    Field,
    Continuation,
    Other,
}

/// Whether a header carries sender or recipient addresses (for the address classes).
fn header_role(name: &str) -> Option<Role> {
    const SENDER: [&str; 10] = [
        "from",
        "sender",
        "reply-to",
        "errors-to",
        "return-receipt-to",
        "return-path",
        "resent-from",
        "resent-sender",
        "resent-reply-to",
        "disposition-notification-to",
    ];
    const RECIPIENT: [&str; 7] = [
        "to",
        "cc",
        "bcc",
        "apparently-to",
        "resent-to",
        "resent-cc",
        "resent-bcc",
    ];
    let n = name.to_ascii_lowercase();
    if SENDER.contains(&n.as_str()) {
        Some(Role::HeaderSender)
    } else if RECIPIENT.contains(&n.as_str()) {
        Some(Role::HeaderRecipient)
    } else {
        None
    }
}

/// A MIME header (Postfix's `HDR_OPT_MIME` headers).
fn is_mime_header(field: &[u8]) -> bool {
    const MIME: [&[u8]; 6] = [
        b"content-description",
        b"content-disposition",
        b"content-id",
        b"content-transfer-encoding",
        b"content-type",
        b"mime-version",
    ];
    field_name(strip_eol(field))
        .is_some_and(|(n, _)| MIME.iter().any(|m| n.eq_ignore_ascii_case(m)))
}

/// `type/subtype` (lower case) and the `boundary` parameter of a Content-Type value.
fn parse_content_type(value: &str) -> (String, Option<String>) {
    let value = value.replace(['\r', '\n'], " ");
    let mut parts = value.split(';');
    let kind = parts
        .next()
        .unwrap_or("")
        .split('(')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut boundary = None;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("boundary") {
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(q) => q.split('"').next().unwrap_or(""),
                None => v.split_whitespace().next().unwrap_or(""),
            };
            boundary = Some(v.to_string());
        }
    }
    (kind, boundary)
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `name:value` when the line starts a header field: a name of printable ASCII other than
/// `:`, optional white space, then `:` (Postfix's `is_header()`).
fn field_name(content: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = content
        .iter()
        .position(|&b| !(33..=126).contains(&b) || b == b':')?;
    if end == 0 {
        return None;
    }
    let mut i = end;
    while matches!(content.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    (content.get(i) == Some(&b':')).then(|| (&content[..end], &content[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CleanupOptions {
        CleanupOptions {
            myhostname: "mx.example".into(),
            queue_id: "4QID".into(),
            arrival: SystemTime::now(),
            sender: "a@example.org".into(),
            header_size_limit: 102_400,
            add_missing_headers: true,
        }
    }

    fn run(input: &[u8], o: CleanupOptions, split: usize) -> (Vec<u8>, CleanupResult) {
        let mut c = Cleanup::new(o);
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            c.feed(piece, &mut out).expect("vec write");
        }
        let r = c.finish(&mut out).expect("vec write");
        (out, r)
    }

    #[test]
    fn complete_message_passes_unchanged() {
        let m = b"From: a@b\r\nDate: x\r\nMessage-ID: <1@b>\r\nSubject: s\r\n\r\nbody\r\n.x\r\n";
        for split in [1, 3, 1000] {
            let (out, r) = run(m, opts(), split);
            assert_eq!(out, m);
            assert_eq!(r.message_id.as_deref(), Some("<1@b>"));
        }
    }

    #[test]
    fn adds_missing_headers_before_the_blank_line() {
        let (out, r) = run(b"Subject: s\r\n\r\nbody\r\n", opts(), 5);
        let s = String::from_utf8(out).expect("utf8");
        let (head, body) = s.split_once("\r\n\r\n").expect("boundary");
        assert_eq!(body, "body\r\n");
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "Subject: s");
        assert!(lines[1].starts_with("Message-Id: <") && lines[1].ends_with(".4QID@mx.example>"));
        assert!(lines[2].starts_with("Date: "));
        assert_eq!(lines[3], "From: a@example.org");
        assert!(
            r.message_id
                .is_some_and(|m| m.ends_with(".4QID@mx.example>"))
        );
    }

    #[test]
    fn null_sender_and_no_header_at_all() {
        let mut o = opts();
        o.sender.clear();
        let (out, _) = run(b"just text\nmore\n", o, 4);
        let s = String::from_utf8(out).expect("utf8");
        assert!(
            s.contains("\nFrom: MAILER-DAEMON\n\njust text\nmore\n"),
            "{s:?}"
        );
        assert!(s.starts_with("Message-Id: "));
    }

    #[test]
    fn continuation_and_case() {
        let m = b"message-id:\r\n <x@y>\r\nDATE: d\r\nfrom : f\r\n\r\n";
        let (out, r) = run(m, opts(), 2);
        assert_eq!(out, m);
        assert_eq!(r.message_id.as_deref(), Some("<x@y>"));
    }

    #[test]
    fn oversized_header_is_cut() {
        let mut o = opts();
        o.header_size_limit = 100;
        let mut m = b"X-Big: ".to_vec();
        m.extend(std::iter::repeat_n(b'a', 500));
        m.extend_from_slice(b"\r\n\tmore\r\nFrom: f\r\nDate: d\r\nMessage-Id: <i>\r\n\r\nbody");
        for split in [7, 1000] {
            let (out, r) = run(&m, o.clone(), split);
            assert!(r.header_truncated);
            let s = String::from_utf8(out).expect("utf8");
            assert!(
                s.starts_with(&format!("X-Big: {}\r\nFrom: f\r\n", "a".repeat(93))),
                "{s}"
            );
            assert!(s.ends_with("\r\n\r\nbody"));
            assert!(!s.contains("more"));
        }
    }

    #[test]
    fn headers_only_message() {
        let (out, _) = run(b"Subject: s", opts(), 3);
        let s = String::from_utf8(out).expect("utf8");
        assert!(s.starts_with("Subject: s\r\nMessage-Id: "), "{s}");
        assert!(s.ends_with("From: a@example.org\r\n"));
    }

    #[test]
    fn off_switch_and_binary_body() {
        let mut o = opts();
        o.add_missing_headers = false;
        let m = b"Subject: s\r\n\r\n\0\xff\r.\r\n.\n";
        let (out, _) = run(m, o, 3);
        assert_eq!(out, m);
    }

    fn checked(header: &str, body: &str, msg: &[u8]) -> (String, CleanupResult) {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = dir.path().join("h");
        let b = dir.path().join("b");
        std::fs::write(&h, header).expect("write");
        std::fs::write(&b, body).expect("write");
        let mc = oxipost_maps::MapConfig::default();
        let mut s = CleanupSettings::default();
        s.header_checks.maps =
            oxipost_maps::Maps::open(&format!("regexp:{}", h.display()), &mc).expect("h");
        s.body_checks.maps =
            oxipost_maps::Maps::open(&format!("regexp:{}", b.display()), &mc).expect("b");
        s.body_checks_size_limit = 51200;
        s.rewriter.masquerade_domains = vec!["example.com".into()];
        s.rewriter.masquerade_classes.header_sender = true;
        let mut c = Cleanup::with_settings(opts(), Arc::new(s), true);
        let mut out = Vec::new();
        for piece in msg.chunks(7) {
            c.feed(piece, &mut out).expect("vec write");
        }
        let r = c.finish(&mut out).expect("vec write");
        (String::from_utf8(out).expect("utf8"), r)
    }

    #[test]
    fn header_and_body_checks_edit_and_decide() {
        let (out, r) = checked(
            "/^X-Drop:/ IGNORE\n/^X-Old: (.*)/ REPLACE X-New: $1\n/^Subject: .*tag/ PREPEND X-Tagged: yes\n/^X-Warn/ WARN look\n",
            "/^secret/ REPLACE [removed]\n/^hold me/ HOLD held\n",
            b"From: Joe <joe@mail.example.com>\r\nX-Drop: a\r\n b\r\nX-Old: v\r\nSubject: a tag\r\nX-Warn: 1\r\nDate: d\r\nMessage-Id: <i>\r\n\r\nsecret stuff\r\nhold me\r\nend",
        );
        assert_eq!(
            out,
            "From: Joe <joe@example.com>\r\nX-New: v\r\nX-Tagged: yes\r\nSubject: a tag\r\nX-Warn: 1\r\nDate: d\r\nMessage-Id: <i>\r\n\r\n[removed]\r\nhold me\r\nend"
        );
        assert_eq!(r.verdict, Verdict::Hold("held".into()));
        let actions: Vec<&str> = r.events.iter().map(|e| e.action).collect();
        assert_eq!(actions, vec!["replace", "warning", "replace", "hold"]);
        assert_eq!(r.events[1].context, "header X-Warn: 1");
    }

    #[test]
    fn reject_is_final() {
        let (_, r) = checked(
            "/^Subject: spam/ REJECT no spam here\n/^X-Later/ DISCARD\n",
            "/x/ DISCARD\n",
            b"Subject: spam\nX-Later: 1\n\nx\n",
        );
        assert_eq!(r.verdict, Verdict::Reject("5.7.1 no spam here".into()));
        assert_eq!(r.events.len(), 1);
    }

    fn mime_run(disable: bool) -> (String, CleanupResult) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mc = oxipost_maps::MapConfig::default();
        let table = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            oxipost_maps::Maps::open(&format!("regexp:{}", p.display()), &mc).expect("map")
        };
        let mut s = CleanupSettings::default();
        s.header_checks.maps = table(
            "h",
            "/^Subject: top/ WARN top\n/^X-Part/ REJECT part header in header_checks\n",
        );
        s.mime_header_checks.maps = table(
            "m",
            "/^Content-Type: text\\/plain/ PREPEND X-Mime-Seen: 1\n/^X-Part/ IGNORE\n",
        );
        s.nested_header_checks.maps = table(
            "n",
            "/^Subject: inner/ REPLACE Subject: [inner]\n/^Content-Type/ REJECT nested ct\n",
        );
        s.body_checks.maps = table(
            "b",
            "/^inner body/ WARN inner-body\n/forbidden/ WARN forbidden\n/^Content-Type/ REJECT mime header in body_checks\n/^Subject: inner/ REJECT nested header in body_checks\n",
        );
        s.body_checks_size_limit = 51200;
        s.disable_mime = disable;
        let msg = b"From: a@b\nSubject: top\nMIME-Version: 1.0\nContent-Type: multipart/mixed;\n boundary=\"XX\"\nDate: d\nMessage-Id: <i>\n\npreamble\n--XX\nContent-Type: text/plain\nX-Part: p\n\nhello forbidden body\n--XX\nContent-Type: message/rfc822\n\nSubject: inner secret\nX-Inner: yes\n\ninner body line\n--XX--\nepilogue\n";
        let mut c = Cleanup::with_settings(opts(), Arc::new(s), false);
        let mut out = Vec::new();
        for piece in msg.chunks(5) {
            c.feed(piece, &mut out).expect("vec write");
        }
        let r = c.finish(&mut out).expect("vec write");
        (String::from_utf8(out).expect("utf8"), r)
    }

    #[test]
    fn mime_header_nested_and_body_checks() {
        let (out, r) = mime_run(false);
        assert_eq!(r.verdict, Verdict::Accept, "{:?}", r.events);
        assert!(
            out.contains("\n--XX\nX-Mime-Seen: 1\nContent-Type: text/plain\n\nhello"),
            "{out}"
        );
        assert!(!out.contains("X-Part"), "{out}");
        assert!(
            out.contains("\nSubject: [inner]\nX-Inner: yes\n\ninner body line\n--XX--\n"),
            "{out}"
        );
        let seen: Vec<(&str, &str)> = r
            .events
            .iter()
            .map(|e| (e.action, e.text.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("warning", "top"),
                ("warning", "forbidden"),
                ("replace", "Subject: [inner]"),
                ("warning", "inner-body")
            ]
        );
    }

    #[test]
    fn mime_processing_off() {
        // Everything after the primary header is body: body_checks see the part headers.
        let (out, r) = mime_run(true);
        assert_eq!(
            r.verdict,
            Verdict::Reject("5.7.1 mime header in body_checks".into())
        );
        assert!(out.contains("X-Part: p"));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            parse_content_type(" Multipart/Mixed; charset=x;\n\tboundary=\"a b\""),
            ("multipart/mixed".into(), Some("a b".into()))
        );
        assert_eq!(
            parse_content_type("message/rfc822"),
            ("message/rfc822".into(), None)
        );
        assert_eq!(
            parse_content_type("multipart/alternative; boundary=abc (c)"),
            ("multipart/alternative".into(), Some("abc".into()))
        );
    }
}

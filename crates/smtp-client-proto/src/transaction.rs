//! One mail transaction (`MAIL`, `RCPT`…, `DATA` or `BDAT`, the content, the final
//! reply or — in LMTP — one final reply per accepted recipient) as a state machine.
//!
//! The driver takes [`Output`]s with [`Transaction::poll_output`] and writes them, reads
//! replies and hands each to [`Transaction::on_reply`], until
//! [`Transaction::is_done`]. With `PIPELINING` the whole group `MAIL`, `RCPT`…, `DATA` (or
//! `BDAT … LAST` with the content) goes out at once, as RFC 2920 allows; without it, one
//! command per reply. [`Transaction::awaiting`] names the [`Stage`] whose reply is due, so
//! the driver applies that stage's timeout and writes Postfix's "in reply to X command".

use std::collections::VecDeque;

use crate::command::{self, clean};
use crate::ext::Extensions;
use crate::reply::Reply;

/// What the client is waiting for; each has its own timeout in Postfix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connecting (TCP) — no reply yet.
    Connect,
    /// The `220` greeting.
    Greeting,
    /// `EHLO`/`LHLO` reply.
    Ehlo,
    /// `HELO` reply.
    Helo,
    /// `STARTTLS` reply and the handshake.
    StartTls,
    /// `AUTH` exchange.
    Auth,
    /// `RSET` reply.
    Rset,
    /// `MAIL FROM` reply.
    Mail,
    /// `RCPT TO` reply.
    Rcpt,
    /// `DATA` reply (`354`).
    Data,
    /// Sending the content.
    Content,
    /// The reply to the end of the content (`.` or `BDAT … LAST`).
    DataDone,
    /// `QUIT` reply.
    Quit,
}

impl Stage {
    /// Postfix's `(in reply to X command)` name of the command a reply answers.
    pub fn command_name(self) -> &'static str {
        match self {
            Stage::Connect | Stage::Greeting => "initial greeting",
            Stage::Ehlo => "EHLO",
            Stage::Helo => "HELO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Rset => "RSET",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Content | Stage::DataDone => "end of DATA",
            Stage::Quit => "QUIT",
        }
    }

    /// `in reply to RCPT TO command` / `in reply to initial greeting`.
    pub fn in_reply_to(self) -> String {
        match self {
            Stage::Connect | Stage::Greeting => "in reply to initial greeting".into(),
            _ => format!("in reply to {} command", self.command_name()),
        }
    }

    /// What the client was doing, for `lost connection ... while X` and timeouts.
    pub fn doing(self) -> &'static str {
        match self {
            Stage::Connect => "connecting",
            Stage::Greeting => "receiving the initial server greeting",
            Stage::Ehlo | Stage::Helo => "performing the EHLO handshake",
            Stage::StartTls => "performing the STARTTLS handshake",
            Stage::Auth => "authenticating",
            Stage::Rset => "sending RSET",
            Stage::Mail => "sending MAIL FROM",
            Stage::Rcpt => "sending RCPT TO",
            Stage::Data => "sending DATA command",
            Stage::Content => "sending message body",
            Stage::DataDone => "sending end of data -- message may be sent more than once",
            Stage::Quit => "sending QUIT",
        }
    }
}

/// The `BODY=` of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    /// Not given by the sender: sent without `BODY=`, or as `8BITMIME` when the content
    /// has 8-bit bytes and the server offers it (Postfix's behaviour).
    #[default]
    Unspecified,
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
}

/// The envelope sender and the `MAIL FROM` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailSpec {
    /// Empty for the null sender.
    pub sender: String,
    /// Size of the content as it will be sent (for `SIZE=`).
    pub size: u64,
    pub body: Body,
    /// The sender asked for `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=FULL`/`HDRS`, as received.
    pub ret: Option<String>,
    /// `ENVID=`, xtext as received.
    pub envid: Option<String>,
}

/// One recipient and its DSN parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptSpec {
    pub address: String,
    /// `NOTIFY=` as received (`SUCCESS,FAILURE`, `NEVER`).
    pub notify: Option<String>,
    /// `ORCPT=` as received (`rfc822;user@example.org`).
    pub orcpt: Option<String>,
}

/// How the content travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// `DATA`, `354`, dot-stuffed content and `.`.
    Data,
    /// One `BDAT n LAST` with the content unstuffed (RFC 3030).
    Bdat,
}

/// What the client may use of what the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOptions {
    /// LMTP: one final reply per accepted recipient.
    pub lmtp: bool,
    /// Use `PIPELINING` when offered.
    pub pipelining: bool,
    /// Use `CHUNKING` when offered.
    pub chunking: bool,
    /// Start the group with `RSET` (a reused connection).
    pub rset_first: bool,
}

impl Default for TxOptions {
    fn default() -> TxOptions {
        TxOptions {
            lmtp: false,
            pipelining: true,
            chunking: true,
            rset_first: false,
        }
    }
}

/// Something for the driver to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Command bytes.
    Command(Vec<u8>),
    /// The content: for [`ContentMode::Data`] dot-stuffed with the final `.`, for
    /// [`ContentMode::Bdat`] preceded by `BDAT n LAST` — the driver writes what
    /// [`Transaction::content_mode`] says.
    Content,
    /// Only the `.` line: the server said `354` although no recipient was accepted.
    EmptyDataEnd,
}

/// The final word for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    /// The reply that decided (2xx delivered, 4xx deferred, 5xx bounced).
    pub reply: Reply,
    /// The command it answered.
    pub stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    DummyEnd,
    End(Option<usize>),
}

/// One transaction in progress.
#[derive(Debug)]
pub struct Transaction {
    mail: Vec<u8>,
    rcpts: Vec<Vec<u8>>,
    mode: ContentMode,
    pipelined: bool,
    lmtp: bool,
    out: VecDeque<Output>,
    expect: VecDeque<Expect>,
    results: Vec<Option<RcptResult>>,
    accepted: Vec<usize>,
    /// Failure of MAIL FROM or RSET: every recipient gets it.
    failed: Option<RcptResult>,
    /// Next RCPT to send without pipelining.
    next_rcpt: usize,
    /// Commands still to be sent one by one (no pipelining).
    stepwise: bool,
    rset_broken: bool,
}

impl Transaction {
    /// Plans a transaction for the server's `ext`. `eight_bit` says the content as sent
    /// has 8-bit bytes (it adds `BODY=8BITMIME` when the server offers it).
    pub fn new(
        mail: &MailSpec,
        rcpts: &[RcptSpec],
        ext: &Extensions,
        opts: TxOptions,
        eight_bit: bool,
    ) -> Transaction {
        let mut m = format!("MAIL FROM:<{}>", clean(&mail.sender));
        if ext.size.is_some() && mail.size > 0 {
            m.push_str(&format!(" SIZE={}", mail.size));
        }
        if ext.eightbitmime {
            match mail.body {
                Body::EightBitMime => m.push_str(" BODY=8BITMIME"),
                Body::SevenBit if !eight_bit => m.push_str(" BODY=7BIT"),
                _ if eight_bit => m.push_str(" BODY=8BITMIME"),
                _ => {}
            }
        }
        if mail.smtputf8 && ext.smtputf8 {
            m.push_str(" SMTPUTF8");
        }
        if ext.dsn {
            if let Some(r) = &mail.ret {
                m.push_str(&format!(" RET={}", clean(r)));
            }
            if let Some(e) = &mail.envid {
                m.push_str(&format!(" ENVID={}", command::xtext(e)));
            }
        }
        m.push_str("\r\n");
        let rcpt_cmds = rcpts
            .iter()
            .map(|r| {
                let mut c = format!("RCPT TO:<{}>", clean(&r.address));
                if ext.dsn {
                    if let Some(n) = &r.notify {
                        c.push_str(&format!(" NOTIFY={}", clean(n)));
                    }
                    if let Some(o) = &r.orcpt {
                        c.push_str(&format!(" ORCPT={}", command::orcpt(o)));
                    }
                }
                c.push_str("\r\n");
                c.into_bytes()
            })
            .collect();
        let mode = if opts.chunking && ext.chunking {
            ContentMode::Bdat
        } else {
            ContentMode::Data
        };
        let pipelined = opts.pipelining && ext.pipelining;
        let mut tx = Transaction {
            mail: m.into_bytes(),
            rcpts: rcpt_cmds,
            mode,
            pipelined,
            lmtp: opts.lmtp,
            out: VecDeque::new(),
            expect: VecDeque::new(),
            results: vec![None; rcpts.len()],
            accepted: Vec::new(),
            failed: None,
            next_rcpt: 0,
            stepwise: !pipelined,
            rset_broken: false,
        };
        tx.plan(opts.rset_first);
        tx
    }

    fn plan(&mut self, rset_first: bool) {
        if rset_first {
            self.out.push_back(Output::Command(command::rset()));
            self.expect.push_back(Expect::Rset);
            if !self.pipelined {
                return;
            }
        }
        self.out.push_back(Output::Command(self.mail.clone()));
        self.expect.push_back(Expect::Mail);
        if !self.pipelined {
            return;
        }
        for (i, c) in self.rcpts.iter().enumerate() {
            self.out.push_back(Output::Command(c.clone()));
            self.expect.push_back(Expect::Rcpt(i));
        }
        self.next_rcpt = self.rcpts.len();
        match self.mode {
            ContentMode::Data => {
                self.out.push_back(Output::Command(command::data()));
                self.expect.push_back(Expect::Data);
            }
            ContentMode::Bdat => {
                // RFC 3030: BDAT may be pipelined after the RCPTs; a server that refused
                // every recipient answers it with an error. The end replies are planned
                // once the RCPT replies tell how many recipients were accepted.
                self.out.push_back(Output::Content);
                self.expect.push_back(Expect::End(None));
            }
        }
    }

    /// How the content is to be written when [`Output::Content`] comes.
    pub fn content_mode(&self) -> ContentMode {
        self.mode
    }

    /// The next thing to write, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The stage whose reply is due next (`None` when done).
    pub fn awaiting(&self) -> Option<Stage> {
        self.expect.front().map(|e| match e {
            Expect::Rset => Stage::Rset,
            Expect::Mail => Stage::Mail,
            Expect::Rcpt(_) => Stage::Rcpt,
            Expect::Data => Stage::Data,
            Expect::DummyEnd | Expect::End(_) => Stage::DataDone,
        })
    }

    /// True when every reply is in; [`results`](Self::results) is then final.
    pub fn is_done(&self) -> bool {
        self.expect.is_empty() && self.out.is_empty()
    }

    /// True when the server refused `RSET`: the connection is not fit for more mail.
    pub fn rset_failed(&self) -> bool {
        self.rset_broken
    }

    /// Takes one reply.
    pub fn on_reply(&mut self, r: Reply) {
        let Some(e) = self.expect.pop_front() else {
            return;
        };
        match e {
            Expect::Rset => {
                if !r.is_positive() {
                    self.rset_broken = true;
                    self.fail_all(r, Stage::Rset);
                } else if self.stepwise {
                    self.out.push_back(Output::Command(self.mail.clone()));
                    self.expect.push_back(Expect::Mail);
                }
            }
            Expect::Mail => {
                if !r.is_positive() {
                    self.fail_all(r, Stage::Mail);
                } else if self.stepwise {
                    self.send_next_rcpt();
                }
            }
            Expect::Rcpt(i) => {
                if self.failed.is_none() {
                    if r.is_positive() {
                        self.accepted.push(i);
                    } else if let Some(slot) = self.results.get_mut(i) {
                        *slot = Some(RcptResult {
                            reply: r,
                            stage: Stage::Rcpt,
                        });
                    }
                }
                if self.stepwise {
                    self.send_next_rcpt();
                }
                if self.pipelined && self.mode == ContentMode::Bdat && self.expect_rcpts_done() {
                    self.plan_end_replies();
                }
            }
            Expect::Data => {
                if r.code == 354 {
                    if self.failed.is_some() || self.accepted.is_empty() {
                        self.out.push_back(Output::EmptyDataEnd);
                        self.expect.push_back(Expect::DummyEnd);
                    } else {
                        self.out.push_back(Output::Content);
                        self.expect.push_back(Expect::End(None));
                        self.plan_end_replies();
                    }
                } else if self.failed.is_none() {
                    for &i in &self.accepted {
                        self.results[i] = Some(RcptResult {
                            reply: r.clone(),
                            stage: Stage::Data,
                        });
                    }
                }
            }
            Expect::DummyEnd => {}
            Expect::End(which) => {
                if self.failed.is_some() {
                    return;
                }
                match which {
                    Some(i) => {
                        self.results[i] = Some(RcptResult {
                            reply: r,
                            stage: Stage::DataDone,
                        })
                    }
                    None => {
                        for &i in &self.accepted {
                            self.results[i] = Some(RcptResult {
                                reply: r.clone(),
                                stage: Stage::DataDone,
                            });
                        }
                        if self.lmtp && self.accepted.is_empty() {
                            // Nothing was accepted: the server's single error reply
                            // ends the BDAT.
                        }
                    }
                }
            }
        }
    }

    fn expect_rcpts_done(&self) -> bool {
        !self.expect.iter().any(|e| matches!(e, Expect::Rcpt(_)))
    }

    /// In LMTP the end of the content gets one reply per accepted recipient (one reply
    /// when none was accepted); in SMTP one reply for all.
    fn plan_end_replies(&mut self) {
        if !self.lmtp || self.accepted.is_empty() || self.failed.is_some() {
            return;
        }
        // Replace the placeholder End(None) with one End(Some(i)) per accepted recipient.
        if let Some(pos) = self.expect.iter().position(|e| *e == Expect::End(None)) {
            self.expect.remove(pos);
            for (k, &i) in self.accepted.iter().enumerate() {
                self.expect.insert(pos + k, Expect::End(Some(i)));
            }
        }
    }

    fn send_next_rcpt(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Some(c) = self.rcpts.get(self.next_rcpt) {
            self.out.push_back(Output::Command(c.clone()));
            self.expect.push_back(Expect::Rcpt(self.next_rcpt));
            self.next_rcpt += 1;
            return;
        }
        if self.accepted.is_empty() {
            // Nothing to send: the transaction ends; the driver resets the session.
            return;
        }
        match self.mode {
            ContentMode::Data => {
                self.out.push_back(Output::Command(command::data()));
                self.expect.push_back(Expect::Data);
            }
            ContentMode::Bdat => {
                self.out.push_back(Output::Content);
                self.expect.push_back(Expect::End(None));
                self.plan_end_replies();
            }
        }
    }

    fn fail_all(&mut self, r: Reply, stage: Stage) {
        self.failed = Some(RcptResult { reply: r, stage });
        // Without pipelining nothing more is sent; with it, the replies to what was
        // already sent are still read (and ignored).
        if self.stepwise {
            self.expect.clear();
            self.out.clear();
        }
    }

    /// True when the transaction ended without the server taking the message (the driver
    /// should `RSET` before reusing the connection).
    pub fn needs_reset(&self) -> bool {
        self.failed.is_some() || self.accepted.is_empty()
    }

    /// One result per recipient, in the order given. Recipients without a final reply (the
    /// transaction was cut short) get `None`.
    pub fn results(&self) -> Vec<Option<RcptResult>> {
        match &self.failed {
            Some(f) => vec![Some(f.clone()); self.results.len()],
            None => self.results.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(pipelining: bool, chunking: bool) -> Extensions {
        Extensions {
            pipelining,
            chunking,
            size: Some(0),
            dsn: true,
            eightbitmime: true,
            ..Extensions::default()
        }
    }

    fn rcpts(n: usize) -> Vec<RcptSpec> {
        (0..n)
            .map(|i| RcptSpec {
                address: format!("r{i}@x"),
                notify: (i == 0).then(|| "SUCCESS,FAILURE".into()),
                orcpt: None,
            })
            .collect()
    }

    fn mail() -> MailSpec {
        MailSpec {
            sender: "s@x".into(),
            size: 10,
            envid: Some("abc".into()),
            ret: Some("HDRS".into()),
            ..MailSpec::default()
        }
    }

    fn drain(tx: &mut Transaction) -> Vec<Output> {
        std::iter::from_fn(|| tx.poll_output()).collect()
    }

    fn cmd(o: &Output) -> String {
        match o {
            Output::Command(c) => String::from_utf8_lossy(c).into_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn pipelined_data_with_one_refused() {
        let mut tx = Transaction::new(
            &mail(),
            &rcpts(3),
            &ext(true, false),
            TxOptions::default(),
            false,
        );
        let out = drain(&mut tx);
        assert_eq!(out.len(), 5);
        assert_eq!(
            cmd(&out[0]),
            "MAIL FROM:<s@x> SIZE=10 RET=HDRS ENVID=abc\r\n"
        );
        assert_eq!(cmd(&out[1]), "RCPT TO:<r0@x> NOTIFY=SUCCESS,FAILURE\r\n");
        assert_eq!(cmd(&out[4]), "DATA\r\n");
        assert_eq!(tx.awaiting(), Some(Stage::Mail));
        tx.on_reply(Reply::new(250, "ok"));
        tx.on_reply(Reply::new(250, "ok"));
        tx.on_reply(Reply::new(550, "5.1.1 no such user"));
        tx.on_reply(Reply::new(450, "4.2.0 later"));
        assert!(!tx.is_done());
        tx.on_reply(Reply::new(354, "go"));
        assert_eq!(drain(&mut tx), vec![Output::Content]);
        assert_eq!(tx.awaiting(), Some(Stage::DataDone));
        tx.on_reply(Reply::new(250, "2.0.0 Ok: queued as X"));
        assert!(tx.is_done());
        let r = tx.results();
        let r: Vec<_> = r
            .iter()
            .map(|r| r.as_ref().map(|r| (r.reply.code, r.stage)))
            .collect();
        assert_eq!(
            r,
            vec![
                Some((250, Stage::DataDone)),
                Some((550, Stage::Rcpt)),
                Some((450, Stage::Rcpt))
            ]
        );
    }

    #[test]
    fn no_pipelining_is_stepwise() {
        let mut tx = Transaction::new(
            &mail(),
            &rcpts(2),
            &ext(false, false),
            TxOptions::default(),
            false,
        );
        assert_eq!(drain(&mut tx).len(), 1);
        tx.on_reply(Reply::new(250, "ok"));
        assert!(cmd(&drain(&mut tx)[0]).starts_with("RCPT TO:<r0@x>"));
        tx.on_reply(Reply::new(550, "no"));
        assert!(cmd(&drain(&mut tx)[0]).starts_with("RCPT TO:<r1@x>"));
        tx.on_reply(Reply::new(250, "ok"));
        assert_eq!(cmd(&drain(&mut tx)[0]), "DATA\r\n");
        tx.on_reply(Reply::new(354, "go"));
        assert_eq!(drain(&mut tx), vec![Output::Content]);
        tx.on_reply(Reply::new(250, "ok"));
        assert!(tx.is_done());
    }

    #[test]
    fn mail_refused_fails_everyone() {
        let mut tx = Transaction::new(
            &mail(),
            &rcpts(2),
            &ext(true, false),
            TxOptions::default(),
            false,
        );
        drain(&mut tx);
        tx.on_reply(Reply::new(452, "4.3.1 full"));
        tx.on_reply(Reply::new(503, "5.5.1 need MAIL"));
        tx.on_reply(Reply::new(503, "5.5.1 need MAIL"));
        tx.on_reply(Reply::new(354, "odd but go"));
        assert_eq!(drain(&mut tx), vec![Output::EmptyDataEnd]);
        tx.on_reply(Reply::new(250, "whatever"));
        assert!(tx.is_done() && tx.needs_reset());
        assert!(
            tx.results()
                .iter()
                .all(|r| r.as_ref().map(|r| (r.reply.code, r.stage)) == Some((452, Stage::Mail)))
        );
    }

    #[test]
    fn all_refused_stepwise_sends_no_data() {
        let mut tx = Transaction::new(
            &mail(),
            &rcpts(1),
            &ext(false, false),
            TxOptions::default(),
            false,
        );
        drain(&mut tx);
        tx.on_reply(Reply::new(250, "ok"));
        drain(&mut tx);
        tx.on_reply(Reply::new(550, "no"));
        assert!(drain(&mut tx).is_empty());
        assert!(tx.is_done() && tx.needs_reset());
    }

    #[test]
    fn bdat_pipelined_and_lmtp_replies() {
        let opts = TxOptions {
            lmtp: true,
            rset_first: true,
            ..TxOptions::default()
        };
        let mut tx = Transaction::new(&mail(), &rcpts(3), &ext(true, true), opts, true);
        let out = drain(&mut tx);
        assert_eq!(cmd(&out[0]), "RSET\r\n");
        assert!(cmd(&out[1]).contains("BODY=8BITMIME"));
        assert_eq!(out.last(), Some(&Output::Content));
        assert_eq!(tx.content_mode(), ContentMode::Bdat);
        tx.on_reply(Reply::new(250, "reset"));
        tx.on_reply(Reply::new(250, "ok"));
        tx.on_reply(Reply::new(250, "ok"));
        tx.on_reply(Reply::new(550, "no"));
        tx.on_reply(Reply::new(250, "ok"));
        tx.on_reply(Reply::new(250, "2.0.0 r0 delivered"));
        assert!(!tx.is_done());
        tx.on_reply(Reply::new(452, "4.2.2 r2 over quota"));
        assert!(tx.is_done());
        let codes: Vec<_> = tx
            .results()
            .iter()
            .map(|r| r.as_ref().map(|r| r.reply.code))
            .collect();
        assert_eq!(codes, vec![Some(250), Some(550), Some(452)]);
    }

    #[test]
    fn lmtp_data_replies_per_recipient() {
        let opts = TxOptions {
            lmtp: true,
            ..TxOptions::default()
        };
        let mut tx = Transaction::new(&mail(), &rcpts(2), &ext(true, false), opts, false);
        drain(&mut tx);
        for _ in 0..3 {
            tx.on_reply(Reply::new(250, "ok"));
        }
        tx.on_reply(Reply::new(354, "go"));
        assert_eq!(drain(&mut tx), vec![Output::Content]);
        tx.on_reply(Reply::new(250, "a"));
        assert!(!tx.is_done());
        tx.on_reply(Reply::new(550, "b"));
        assert!(tx.is_done());
    }

    #[test]
    fn data_refused_after_rcpts() {
        let mut tx = Transaction::new(
            &mail(),
            &rcpts(1),
            &ext(true, false),
            TxOptions::default(),
            false,
        );
        drain(&mut tx);
        tx.on_reply(Reply::new(250, "ok"));
        tx.on_reply(Reply::new(250, "ok"));
        tx.on_reply(Reply::new(554, "5.5.1 no"));
        assert!(tx.is_done());
        assert_eq!(tx.results()[0].as_ref().map(|r| r.stage), Some(Stage::Data));
    }
}

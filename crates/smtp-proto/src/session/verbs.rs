//! Per-command handlers: syntax and state checks for each verb (Postfix's
//! `*_cmd` functions, OpenSMTPD's `check_<verb>`). Acting on a command is
//! either an immediate reply or a decision handed to the driver.

use super::{Line, Pending, Phase, Session};
use crate::command::{self, Verb};
use crate::config::BareNewline;
use crate::event::{Body, Event};
use crate::reply::{Reply, render_line};

impl Session {
    pub(super) fn dispatch(&mut self, verb: Verb, args: &str) {
        match verb {
            Verb::Ehlo | Verb::Helo => {
                let extended = verb == Verb::Ehlo;
                if args.is_empty() {
                    let which = if extended { "EHLO" } else { "HELO" };
                    self.err(501, "5.5.4", &format!("Syntax: {which} hostname"));
                } else {
                    let name = args.to_owned();
                    self.decide(
                        Pending::Helo {
                            name: name.clone(),
                            extended,
                        },
                        Event::Helo { name, extended },
                    );
                }
            }
            Verb::Mail => self.mail(args),
            Verb::Rcpt => self.rcpt(args),
            Verb::Data => self.data(args),
            Verb::Bdat => self.bdat(args),
            Verb::Rset => {
                if !args.is_empty() {
                    self.err(501, "5.5.4", "Syntax: RSET");
                } else {
                    self.reset_txn();
                    self.send(250, "2.0.0", "Ok");
                }
            }
            Verb::Noop => self.send(250, "2.0.0", "Ok"),
            Verb::Quit => {
                self.send(221, "2.0.0", "Bye");
                self.close_now();
            }
            Verb::Vrfy => {
                if !self.cfg.vrfy_enabled {
                    self.err(502, "5.5.1", "VRFY command is disabled");
                } else if args.is_empty() {
                    self.err(501, "5.5.4", "Syntax: VRFY address");
                } else {
                    self.decide(Pending::Vrfy(args.to_owned()), Event::Vrfy(args.to_owned()));
                }
            }
            Verb::Help => self.send(
                214,
                "2.0.0",
                "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS AUTH",
            ),
            Verb::StartTls => self.starttls(args),
            Verb::Auth => self.auth(args),
            Verb::Forbidden => {
                self.send(221, "2.7.0", "Error: I can break rules, too. Goodbye.");
                self.close_now();
            }
            Verb::Unknown => self.err(502, "5.5.2", "Error: command not recognized"),
        }
    }

    fn mail(&mut self, args: &str) {
        if self.txn.is_some() {
            return self.err(503, "5.5.1", "Error: nested MAIL command");
        }
        if self.cfg.helo_required && self.helo.is_none() {
            return self.err(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        match command::parse_mail(args, &self.cfg) {
            Ok(m) => self.decide(
                Pending::Mail {
                    smtputf8: m.smtputf8,
                    body: m.body,
                },
                Event::Mail(m),
            ),
            Err(r) => self.error(r),
        }
    }

    fn rcpt(&mut self, args: &str) {
        let Some(txn) = &self.txn else {
            return self.err(503, "5.5.1", "Error: need MAIL command");
        };
        if txn.bdat {
            return self.err(503, "5.5.1", "Error: RCPT after BDAT");
        }
        if txn.rcpts >= self.cfg.limits.recipient_limit {
            // Postfix lets a client overshoot a while before it counts as
            // an error, so that a big legitimate list is not cut off.
            if self.overshoot < self.cfg.limits.recipient_overshoot_limit {
                self.overshoot += 1;
                self.send(452, "4.5.3", "Error: too many recipients");
                return;
            }
            return self.err(452, "4.5.3", "Error: too many recipients");
        }
        match command::parse_rcpt(args, &self.cfg, txn.smtputf8) {
            Ok(r) => self.decide(Pending::Rcpt, Event::Rcpt(r)),
            Err(r) => self.error(r),
        }
    }

    fn data(&mut self, args: &str) {
        if !args.is_empty() {
            return self.err(501, "5.5.4", "Syntax: DATA");
        }
        match &self.txn {
            Some(t) if t.rcpts > 0 => {
                if t.bdat {
                    self.err(503, "5.5.1", "Error: DATA after BDAT");
                } else if t.body == Some(Body::BinaryMime) {
                    self.err(503, "5.5.1", "Error: BINARYMIME requires BDAT");
                } else {
                    self.decide(Pending::Data, Event::Data);
                }
            }
            _ => self.err(503, "5.5.1", "Error: need RCPT command"),
        }
    }

    fn bdat(&mut self, args: &str) {
        if !self.cfg.extensions.chunking {
            return self.err(502, "5.5.2", "Error: command not recognized");
        }
        let Some((size, last)) = command::parse_bdat(args) else {
            // The chunk size is unknown, so its bytes cannot be skipped;
            // they will be read as (bad) commands and count as errors.
            return self.err(501, "5.5.4", "Syntax: BDAT count [LAST]");
        };
        let limit = self.cfg.limits.message_size_limit;
        let (error, abort) = match self.txn.as_mut() {
            None => (
                Some(Reply::new(503, "5.5.1", "Error: need MAIL command")),
                false,
            ),
            Some(t) if t.rcpts == 0 => (
                Some(Reply::new(503, "5.5.1", "Error: need RCPT command")),
                false,
            ),
            Some(t) if limit > 0 && t.size.saturating_add(size) > limit => {
                t.too_big = true;
                let r = Reply::new(552, "5.3.4", "Message size exceeds fixed limit");
                (Some(r), true)
            }
            Some(t) => {
                t.bdat = true;
                (None, false)
            }
        };
        self.phase = Phase::Bdat {
            remaining: size,
            announced: size,
            last,
            error,
            abort,
        };
    }

    fn starttls(&mut self, args: &str) {
        if !self.cfg.starttls {
            self.err(502, "5.5.1", "Error: command not implemented");
        } else if self.tls {
            self.err(554, "5.5.1", "Error: TLS already active");
        } else if !args.is_empty() {
            self.err(501, "5.5.4", "Syntax: STARTTLS");
        } else {
            self.reset_txn();
            self.send(220, "2.0.0", "Ready to start TLS");
            self.phase = Phase::Tls { announced: false };
        }
    }

    pub(super) fn auth_offered(&self) -> bool {
        !self.cfg.auth_mechanisms.is_empty() && (self.tls || !self.cfg.auth_only_with_tls)
    }

    fn auth(&mut self, args: &str) {
        if !self.cfg.auth_mechanisms.is_empty() && self.cfg.auth_only_with_tls && !self.tls {
            // Postfix's answer with smtpd_tls_auth_only (RFC 4954 section 6).
            return self.err(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            );
        }
        if !self.auth_offered() {
            return self.err(503, "5.5.1", "Error: authentication not enabled");
        }
        if !self.esmtp {
            return self.err(503, "5.5.1", "Error: send HELO/EHLO first");
        }
        if self.authenticated {
            return self.err(503, "5.5.1", "Error: already authenticated");
        }
        if self.txn.is_some() {
            return self.err(503, "5.5.1", "Error: MAIL transaction in progress");
        }
        let mut words = args.split(' ').filter(|w| !w.is_empty());
        let (Some(mech), ir, None) = (words.next(), words.next(), words.next()) else {
            return self.err(501, "5.5.4", "Syntax: AUTH mechanism");
        };
        let Some(mechanism) = self
            .cfg
            .auth_mechanisms
            .iter()
            .find(|m| m.eq_ignore_ascii_case(mech))
            .cloned()
        else {
            // Postfix's wording: its SASL back end reports the failure.
            return self.err(
                535,
                "5.7.8",
                "Error: authentication failed: Invalid authentication mechanism",
            );
        };
        if ir.is_some_and(|r| r != "=" && !command::is_base64(r)) {
            return self.err(501, "5.5.2", "Cannot decode response");
        }
        self.decide(
            Pending::Auth,
            Event::Auth {
                mechanism,
                initial_response: ir.map(str::to_owned),
            },
        );
    }

    pub(super) fn auth_line(&mut self) -> bool {
        let (line, bare_lf) = match self.take_line(self.cfg.limits.sasl_line_limit) {
            Line::Incomplete => return false,
            Line::TooLong => {
                self.phase = Phase::Command;
                self.events.push_back(Event::AuthAborted);
                self.err(500, "5.5.6", "Authentication exchange line is too long");
                return true;
            }
            Line::Got { line, bare_lf } => (line, bare_lf),
        };
        if bare_lf && self.cfg.bare_newline == BareNewline::Reject {
            self.bare_lf_close();
            return true;
        }
        self.phase = Phase::Command;
        match String::from_utf8(line) {
            Ok(l) if l == "*" => {
                self.events.push_back(Event::AuthAborted);
                self.err(501, "5.7.0", "Authentication aborted");
            }
            Ok(l) if command::is_base64(&l) => {
                self.decide(Pending::Auth, Event::AuthResponse(l));
            }
            _ => {
                self.events.push_back(Event::AuthAborted);
                self.err(501, "5.5.2", "Cannot decode response");
            }
        }
        true
    }

    /// The multi-line EHLO reply, in Postfix's keyword order.
    pub(super) fn ehlo_reply(&mut self, first: &str) {
        let ext = &self.cfg.extensions;
        let mut lines = vec![first.to_owned()];
        if ext.pipelining {
            lines.push("PIPELINING".into());
        }
        if ext.size {
            match self.cfg.limits.message_size_limit {
                0 => lines.push("SIZE".into()),
                n => lines.push(format!("SIZE {n}")),
            }
        }
        if self.cfg.vrfy_enabled {
            lines.push("VRFY".into());
        }
        if self.cfg.starttls && !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push(format!("AUTH {}", self.cfg.auth_mechanisms.join(" ")));
        }
        if ext.enhanced_status_codes {
            lines.push("ENHANCEDSTATUSCODES".into());
        }
        if ext.eightbitmime {
            lines.push("8BITMIME".into());
        }
        if ext.dsn {
            lines.push("DSN".into());
        }
        if ext.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        if ext.chunking {
            lines.push("CHUNKING".into());
        }
        let n = lines.len();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            render_line(&mut self.out, 250, sep, "", l, false);
        }
    }
}

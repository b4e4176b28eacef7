//! Per-command counters for Postfix's `disconnect from ... ehlo=1 mail=1 ... commands=5`
//! log line, and the name of the last command for `lost connection after DATA`.

use crate::command::Verb;

/// Command names in Postfix's order (its smtpd command table), then `unknown`.
const NAMES: [&str; 14] = [
    "helo", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop", "vrfy",
    "help", "quit", "unknown",
];
const UNKNOWN: usize = NAMES.len() - 1;

/// How many of each command the client sent, and how many succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats {
    /// (succeeded, total) per entry of `NAMES`.
    counts: [(u32, u32); NAMES.len()],
    /// The command whose reply is still to come, and whether it already failed.
    current: Option<(usize, bool)>,
    /// Postfix's "where": the last command verb, or `CONNECT`/`END-OF-MESSAGE`.
    last: &'static str,
}

fn index(verb: Verb) -> usize {
    match verb {
        Verb::Helo => 0,
        Verb::Ehlo => 1,
        Verb::StartTls => 2,
        Verb::Auth => 3,
        Verb::Mail => 4,
        Verb::Rcpt => 5,
        Verb::Data => 6,
        Verb::Bdat => 7,
        Verb::Rset => 8,
        Verb::Noop => 9,
        Verb::Vrfy => 10,
        Verb::Help => 11,
        Verb::Quit => 12,
        Verb::Forbidden | Verb::Unknown => UNKNOWN,
    }
}

impl CommandStats {
    pub(crate) fn new() -> Self {
        CommandStats {
            last: "CONNECT",
            ..CommandStats::default()
        }
    }

    /// A new command line arrived (before it is recognised).
    pub(crate) fn line(&mut self) {
        self.current = None;
    }

    /// A recognised command is being handled; it counts as a success until it fails.
    pub(crate) fn command(&mut self, verb: Verb) {
        let i = index(verb);
        let c = &mut self.counts[i];
        c.0 = c.0.saturating_add(1);
        c.1 = c.1.saturating_add(1);
        self.current = Some((i, false));
        self.last = match verb {
            Verb::Helo => "HELO",
            Verb::Ehlo => "EHLO",
            Verb::StartTls => "STARTTLS",
            Verb::Auth => "AUTH",
            Verb::Mail => "MAIL",
            Verb::Rcpt => "RCPT",
            Verb::Data => "DATA",
            Verb::Bdat => "BDAT",
            Verb::Rset => "RSET",
            Verb::Noop => "NOOP",
            Verb::Vrfy => "VRFY",
            Verb::Help => "HELP",
            Verb::Quit => "QUIT",
            Verb::Forbidden | Verb::Unknown => "UNKNOWN",
        };
    }

    /// The end of message content was reached.
    pub(crate) fn end_of_message(&mut self) {
        self.last = "END-OF-MESSAGE";
    }

    /// An error reply was sent: the current command failed (or, before any command was
    /// recognised, an unrecognisable line counts as `unknown`).
    pub(crate) fn failed(&mut self) {
        match &mut self.current {
            Some((i, failed)) => {
                if !*failed {
                    *failed = true;
                    let c = &mut self.counts[*i];
                    c.0 = c.0.saturating_sub(1);
                }
            }
            None => {
                let c = &mut self.counts[UNKNOWN];
                c.1 = c.1.saturating_add(1);
                self.current = Some((UNKNOWN, true));
            }
        }
    }

    /// Postfix's name of where the session is: the last command (`DATA`, `RCPT`, ...),
    /// `END-OF-MESSAGE`, or `CONNECT` before any command.
    pub fn last_command(&self) -> &'static str {
        self.last
    }

    /// `(name, succeeded, total)` for every command sent at least once, in Postfix's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u32, u32)> + '_ {
        NAMES
            .iter()
            .zip(self.counts.iter())
            .filter(|(_, c)| c.1 > 0)
            .map(|(n, c)| (*n, c.0, c.1))
    }

    /// The text Postfix appends to `disconnect from NAME[ADDR]`:
    /// `ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4` (`ok/total` only where some failed).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let (mut ok, mut total) = (0u32, 0u32);
        for (name, o, t) in self.iter() {
            ok = ok.saturating_add(o);
            total = total.saturating_add(t);
            push_count(&mut s, name, o, t);
        }
        push_count(&mut s, "commands", ok, total);
        s
    }
}

fn push_count(s: &mut String, name: &str, ok: u32, total: u32) {
    if !s.is_empty() {
        s.push(' ');
    }
    if ok == total {
        s.push_str(&format!("{name}={total}"));
    } else {
        s.push_str(&format!("{name}={ok}/{total}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_postfix() {
        let mut s = CommandStats::new();
        assert_eq!(s.last_command(), "CONNECT");
        for v in [Verb::Ehlo, Verb::Mail, Verb::Rcpt] {
            s.line();
            s.command(v);
        }
        s.failed();
        s.failed();
        s.line();
        s.failed();
        s.line();
        s.command(Verb::Quit);
        assert_eq!(
            s.summary(),
            "ehlo=1 mail=1 rcpt=0/1 quit=1 unknown=0/1 commands=3/5"
        );
        assert_eq!(s.last_command(), "QUIT");
    }
}

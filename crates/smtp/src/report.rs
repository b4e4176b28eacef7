//! Log lines in Postfix's format, one per recipient:
//! `QUEUEID: to=<rcpt>, relay=host[addr]:port, conn_use=2, delay=0.52,
//! delays=0.01/0/0.3/0.21, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)`.
//! The four delays are: before this agent had the request, in the queue manager (0 here),
//! connection set-up (DNS, greeting, EHLO, TLS, AUTH), and the transmission.

use std::time::Duration;

use oxipost_ipc::Outcome;

/// A time in seconds as Postfix prints delays: two significant digits, at most two
/// decimals, no trailing zeros (`0.18`, `1.2`, `12`, `0`).
pub fn format_delay(d: Duration) -> String {
    let x = d.as_secs_f64();
    let s = if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The parts of one recipient's log line.
pub struct Line<'a> {
    pub queue_id: &'a str,
    pub to: &'a str,
    pub orig_to: Option<&'a str>,
    pub relay: &'a str,
    /// Transactions on this connection so far, when more than one.
    pub conn_use: u32,
    /// Before the agent, connection set-up, transmission.
    pub delays: [Duration; 3],
    pub dsn: &'a str,
    pub outcome: Outcome,
    pub text: &'a str,
}

impl Line<'_> {
    /// The formatted line.
    pub fn render(&self) -> String {
        let status = match self.outcome {
            Outcome::Delivered => "sent",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
        };
        let orig = match self.orig_to {
            Some(o) if !o.is_empty() && !o.eq_ignore_ascii_case(self.to) => {
                format!(", orig_to=<{o}>")
            }
            _ => String::new(),
        };
        let conn_use = if self.conn_use > 1 {
            format!(", conn_use={}", self.conn_use)
        } else {
            String::new()
        };
        let [a, c, d] = self.delays;
        format!(
            "{}: to=<{}>{orig}, relay={}{conn_use}, delay={}, delays={}/0/{}/{}, dsn={}, status={status} ({})",
            self.queue_id,
            self.to,
            self.relay,
            format_delay(a + c + d),
            format_delay(a),
            format_delay(c),
            format_delay(d),
            self.dsn,
            self.text
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_layout() {
        let ms = Duration::from_millis;
        let l = Line {
            queue_id: "4Q",
            to: "a@b.example",
            orig_to: Some("a@b.example"),
            relay: "127.0.0.1[127.0.0.1]:2525",
            conn_use: 2,
            delays: [ms(10), ms(300), ms(210)],
            dsn: "2.0.0",
            outcome: Outcome::Delivered,
            text: "250 2.0.0 Ok: queued as X",
        };
        assert_eq!(
            l.render(),
            "4Q: to=<a@b.example>, relay=127.0.0.1[127.0.0.1]:2525, conn_use=2, delay=0.52, \
             delays=0.01/0/0.3/0.21, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)"
        );
        assert_eq!(format_delay(ms(12345)), "12");
    }
}

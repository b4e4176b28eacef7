//! Log lines in Postfix's format, one per recipient:
//! `QUEUEID: to=<rcpt>, orig_to=<orig>, relay=local, delay=0.12, delays=0.1/0/0/0.02,
//! dsn=2.0.0, status=sent (delivered to maildir)`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oxipost_ipc::{Outcome, RcptResult};

/// A time in seconds as Postfix prints delays: two significant digits, at most two decimals,
/// no trailing zeros (`0.18`, `1.2`, `12`, `0`).
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

/// Timestamps of one delivery: message arrival, request received, delivery done.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub arrival: SystemTime,
    pub received: SystemTime,
    pub done: SystemTime,
}

impl Times {
    /// `arrival` in seconds since the epoch, as the request carries it (0: unknown).
    pub fn new(arrival_secs: u64, received: SystemTime, done: SystemTime) -> Times {
        let arrival = if arrival_secs == 0 {
            received
        } else {
            UNIX_EPOCH + Duration::from_secs(arrival_secs)
        };
        Times {
            arrival,
            received,
            done,
        }
    }
}

fn between(a: SystemTime, b: SystemTime) -> Duration {
    b.duration_since(a).unwrap_or(Duration::ZERO)
}

/// The log line for one recipient's result.
pub fn line(queue_id: &str, to: &str, orig_to: &str, t: &Times, r: &RcptResult) -> String {
    let status = match r.outcome {
        Outcome::Delivered => "sent",
        Outcome::Deferred => "deferred",
        Outcome::Bounced => "bounced",
    };
    let orig = if !orig_to.is_empty() && !orig_to.eq_ignore_ascii_case(to) {
        format!(", orig_to=<{orig_to}>")
    } else {
        String::new()
    };
    let relay = if r.relay.is_empty() { "none" } else { &r.relay };
    format!(
        "{queue_id}: to=<{to}>{orig}, relay={relay}, delay={}, delays={}/0/0/{}, dsn={}, status={status} ({})",
        format_delay(between(t.arrival, t.done)),
        format_delay(between(t.arrival, t.received)),
        format_delay(between(t.received, t.done)),
        r.status,
        r.text
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_as_postfix() {
        let ms = Duration::from_millis;
        assert_eq!(format_delay(ms(180)), "0.18");
        assert_eq!(format_delay(ms(100)), "0.1");
        assert_eq!(format_delay(ms(3)), "0");
        assert_eq!(format_delay(ms(1234)), "1.2");
        assert_eq!(format_delay(ms(2000)), "2");
        assert_eq!(format_delay(ms(12345)), "12");
    }

    #[test]
    fn line_format() {
        let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t = Times::new(
            1_700_000_000,
            base + Duration::from_millis(100),
            base + Duration::from_millis(180),
        );
        let r = RcptResult {
            index: 0,
            outcome: Outcome::Delivered,
            status: "2.0.0".into(),
            text: "delivered to maildir".into(),
            relay: "local".into(),
        };
        assert_eq!(
            line("4Xyz", "alice@example.org", "Alice@Example.org", &t, &r),
            "4Xyz: to=<alice@example.org>, relay=local, delay=0.18, delays=0.1/0/0/0.08, \
             dsn=2.0.0, status=sent (delivered to maildir)"
        );
        assert!(line("q", "a@b", "c@d", &t, &r).contains("to=<a@b>, orig_to=<c@d>, relay=local"));
    }
}

//! The two listing formats, byte for byte as Postfix's postqueue prints them
//! (`showq_compat.c` with long queue ids, and `showq_json.c`).

use std::io::{self, Write};

use oxipost_ipc::showq::ShowqMessage;

/// Accumulates the summary while messages are printed.
pub struct Report {
    json: bool,
    count: u64,
    bytes: u64,
}

/// `asctime()` of a time in local time, without the newline: `Thu Jul 14 09:02:11 2022`.
pub fn asctime(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = libc::time_t::try_from(secs).unwrap_or(0);
    // SAFETY: localtime_r writes only into the tm it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return "Thu Jan  1 00:00:00 1970".into();
    }
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS.get(tm.tm_wday as usize).unwrap_or(&"???"),
        MONTHS.get(tm.tm_mon as usize).unwrap_or(&"???"),
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        i64::from(tm.tm_year) + 1900
    )
}

/// Control characters become `?`, as Postfix's `printable()`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(&printable(s)).unwrap_or_else(|_| "\"\"".into())
}

impl Report {
    pub fn new(json: bool) -> Report {
        Report {
            json,
            count: 0,
            bytes: 0,
        }
    }

    /// Prints one message.
    pub fn message(&mut self, out: &mut dyn Write, m: &ShowqMessage) -> io::Result<()> {
        if self.json {
            self.count += 1;
            return write_json(out, m);
        }
        if self.count > 0 {
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{:<17} {:>8} {:<19} --Sender/Recipient------",
                "----Queue ID-----", "--Size--", "---Arrival Time----"
            )?;
        }
        self.count += 1;
        self.bytes += m.message_size;
        let mut id = m.queue_id.clone();
        match m.queue_name.as_str() {
            "active" => id.push('*'),
            "hold" => id.push('!'),
            _ => {}
        }
        if m.forced_expire {
            id.push('#');
        }
        let when: String = asctime(m.arrival_time).chars().take(19).collect();
        writeln!(
            out,
            "{:<17} {:>8} {:<19} {}",
            id,
            m.message_size,
            when,
            printable(&m.sender)
        )?;
        let mut saved = String::new();
        for r in &m.recipients {
            if r.delay_reason != saved {
                saved = r.delay_reason.clone();
                let show = if saved.is_empty() {
                    "reason unavailable".to_string()
                } else {
                    printable(&saved)
                };
                let pad = 76usize.saturating_sub(show.chars().count());
                writeln!(out, "{:pad$}({show})", "")?;
            }
            writeln!(
                out,
                "{:<17} {:>8} {:<19} {}",
                "",
                "",
                "",
                printable(&r.address)
            )?;
        }
        Ok(())
    }

    /// Prints the summary (`-p` only).
    pub fn finish(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        if self.count == 0 {
            writeln!(out, "Mail queue is empty")
        } else {
            write!(
                out,
                "\n-- {} Kbytes in {} Request{}.\n",
                self.bytes / 1024,
                self.count,
                if self.count == 1 { "" } else { "s" }
            )
        }
    }
}

fn write_json(out: &mut dyn Write, m: &ShowqMessage) -> io::Result<()> {
    let mut s = String::from("{");
    s.push_str(&format!("\"queue_name\": {}, ", json_str(&m.queue_name)));
    s.push_str(&format!("\"queue_id\": {}, ", json_str(&m.queue_id)));
    s.push_str(&format!("\"arrival_time\": {}, ", m.arrival_time));
    s.push_str(&format!("\"message_size\": {}, ", m.message_size));
    s.push_str(&format!("\"forced_expire\": {}, ", m.forced_expire));
    s.push_str(&format!("\"sender\": {}, ", json_str(&m.sender)));
    s.push_str("\"recipients\": [");
    for (i, r) in m.recipients.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{{\"address\": {}", json_str(&r.address)));
        if !r.delay_reason.is_empty() {
            s.push_str(&format!(
                ", \"delay_reason\": {}",
                json_str(&r.delay_reason)
            ));
        }
        s.push('}');
    }
    s.push_str("]}\n");
    out.write_all(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxipost_ipc::showq::ShowqRecipient;

    fn msg(queue: &str, reasons: &[&str]) -> ShowqMessage {
        ShowqMessage {
            queue_name: queue.into(),
            queue_id: "4jc3lQ2KCGz1SdC5".into(),
            arrival_time: 1_700_000_000,
            message_size: 2048,
            forced_expire: false,
            sender: "s@example.com".into(),
            recipients: reasons
                .iter()
                .enumerate()
                .map(|(i, r)| ShowqRecipient {
                    address: format!("r{i}@example.org"),
                    delay_reason: r.to_string(),
                })
                .collect(),
            sender_uid: None,
        }
    }

    #[test]
    fn mailq_layout() {
        // SAFETY: setting TZ before any other thread exists in this test binary's test.
        unsafe { std::env::set_var("TZ", "UTC") };
        let mut out = Vec::new();
        let mut r = Report::new(false);
        r.message(&mut out, &msg("active", &["", ""])).expect("w");
        r.message(&mut out, &msg("deferred", &["timeout", "timeout", ""]))
            .expect("w");
        r.finish(&mut out).expect("w");
        let text = String::from_utf8(out).expect("utf8");
        let pad47 = " ".repeat(47);
        let expected = format!(
            "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n\
             4jc3lQ2KCGz1SdC5*     2048 Tue Nov 14 22:13:20 s@example.com\n\
             {pad47}r0@example.org\n\
             {pad47}r1@example.org\n\
             \n\
             4jc3lQ2KCGz1SdC5      2048 Tue Nov 14 22:13:20 s@example.com\n\
             {}(timeout)\n\
             {pad47}r0@example.org\n\
             {pad47}r1@example.org\n\
             {}(reason unavailable)\n\
             {pad47}r2@example.org\n\
             \n\
             -- 4 Kbytes in 2 Requests.\n",
            " ".repeat(69),
            " ".repeat(58)
        );
        assert_eq!(text, expected);
        let mut out = Vec::new();
        Report::new(false).finish(&mut out).expect("w");
        assert_eq!(out, b"Mail queue is empty\n");
    }

    #[test]
    fn json_layout() {
        let mut out = Vec::new();
        Report::new(true)
            .message(&mut out, &msg("hold", &["", "x \"y\""]))
            .expect("w");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "{\"queue_name\": \"hold\", \"queue_id\": \"4jc3lQ2KCGz1SdC5\", \"arrival_time\": 1700000000, \
             \"message_size\": 2048, \"forced_expire\": false, \"sender\": \"s@example.com\", \
             \"recipients\": [{\"address\": \"r0@example.org\"}, {\"address\": \"r1@example.org\", \
             \"delay_reason\": \"x \\\"y\\\"\"}]}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(v["recipients"][1]["delay_reason"], "x \"y\"");
    }
}

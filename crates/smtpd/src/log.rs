//! smtpd's log lines, in Postfix's words so that log tools keep working:
//!
//! ```text
//! connect from unknown[192.0.2.1]
//! 4Xyz...: client=unknown[192.0.2.1]
//! 4Xyz...: message-id=<...>
//! NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 <u@x>: Relay access denied; from=<a@b> to=<u@x> proto=ESMTP helo=<h>
//! lost connection after DATA from unknown[192.0.2.1]
//! timeout after RCPT from unknown[192.0.2.1]
//! disconnect from unknown[192.0.2.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
//! ```

use std::net::IpAddr;

/// Who the client is, in the forms Postfix prints.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: IpAddr,
    pub port: u16,
    /// Host name; `unknown` until reverse DNS exists.
    pub name: String,
    /// The address as logged (`192.0.2.1`, `2001:db8::1`).
    pub addr: String,
    /// The address as in `Received:` (`192.0.2.1`, `IPv6:2001:db8::1`).
    pub rfc_addr: String,
    /// The server side of the connection (milter `{daemon_addr}`/`{daemon_port}`); read
    /// only when milters need it.
    pub daemon: Option<std::net::SocketAddr>,
}

impl Client {
    pub fn new(ip: IpAddr, port: u16) -> Client {
        let ip = crate::policy::canonical(ip);
        let addr = ip.to_string();
        let rfc_addr = match ip {
            IpAddr::V4(_) => addr.clone(),
            IpAddr::V6(_) => format!("IPv6:{addr}"),
        };
        Client {
            ip,
            port,
            name: "unknown".to_owned(),
            addr,
            rfc_addr,
            daemon: None,
        }
    }

    /// `name[addr]`.
    pub fn namaddr(&self) -> String {
        format!("{}[{}]", self.name, self.addr)
    }
}

/// Log-safe text: peer-supplied strings never carry control characters into a log line.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(500)
        .collect()
}

/// What a reject line says about the transaction.
#[derive(Debug, Clone, Copy)]
pub struct RejectContext<'a> {
    pub queue_id: Option<&'a str>,
    pub stage: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub proto: &'a str,
    pub helo: Option<&'a str>,
}

/// `QUEUEID|NOQUEUE: reject: STAGE from NAME[ADDR]: CODE DSN TEXT; from=<> to=<> proto= helo=<>`.
pub fn reject(client: &Client, code: u16, enhanced: &str, text: &str, cx: RejectContext<'_>) {
    let mut line = format!(
        "{}: reject: {} from {}: {code} {enhanced} {}",
        cx.queue_id.unwrap_or("NOQUEUE"),
        cx.stage,
        client.namaddr(),
        clean(text)
    );
    line.push(';');
    if let Some(f) = cx.from {
        line.push_str(&format!(" from=<{}>", clean(f)));
    }
    if let Some(t) = cx.to {
        line.push_str(&format!(" to=<{}>", clean(t)));
    }
    line.push_str(&format!(" proto={}", cx.proto));
    if let Some(h) = cx.helo {
        line.push_str(&format!(" helo=<{}>", clean(h)));
    }
    oxipost_log::info!("{line}");
}

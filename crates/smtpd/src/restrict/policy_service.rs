//! `check_policy_service`: Postfix's policy delegation protocol (SMTPD_POLICY_README).
//! smtpd sends `name=value` lines ending with an empty line (`request=smtpd_access_policy`,
//! `protocol_state`, `client_address`, `sender`, `recipient`, ...) over `inet:host:port` or
//! `unix:path` (relative to the queue directory); the server answers `action=...` and an
//! empty line. The action is an access-table action (`DUNNO`, `REJECT text`, `OK`,
//! `DEFER_IF_PERMIT`, `PREPEND`, ...).
//!
//! One connection per request, bounded by `smtpd_policy_service_timeout` (or a per-entry
//! `{ inet:host:port, timeout=10s, default_action=DUNNO, policy_context=x }`). A server
//! that is down, slow or answers garbage yields `smtpd_policy_service_default_action`
//! (`451 4.3.5 Server configuration problem`). This runs on a helper thread, never on the
//! event loop.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::{Eval, PolicyEndpoint, Status};

/// Parses one `check_policy_service` argument.
pub fn parse_endpoint(
    word: &str,
    timeout: Duration,
    default_action: &str,
    context: &str,
) -> Result<PolicyEndpoint, String> {
    let mut ep = PolicyEndpoint {
        endpoint: word.to_string(),
        timeout,
        default_action: default_action.to_string(),
        context: context.to_string(),
    };
    if let Some(inner) = word
        .trim()
        .strip_prefix('{')
        .and_then(|w| w.strip_suffix('}'))
    {
        let mut parts = oxipost_maps::split_list(inner).into_iter();
        let Some(first) = parts.next() else {
            return Err(format!("empty policy service: \"{word}\""));
        };
        ep.endpoint = first;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                return Err(format!("policy service syntax error: {p}"));
            };
            match k.trim() {
                "timeout" => ep.timeout = parse_time(v.trim()).ok_or(format!("bad timeout {v}"))?,
                "default_action" => ep.default_action = v.trim().to_string(),
                "policy_context" => ep.context = v.trim().to_string(),
                // Connection reuse knobs do not apply: one connection per request.
                "max_idle" | "max_ttl" | "request_limit" | "try_limit" | "retry_delay" => {}
                other => return Err(format!("policy service: unknown attribute {other}")),
            }
        }
    }
    if !(ep.endpoint.starts_with("inet:") || ep.endpoint.starts_with("unix:")) {
        return Err(format!(
            "check_policy_service {}: need inet:host:port or unix:path",
            ep.endpoint
        ));
    }
    Ok(ep)
}

fn parse_time(v: &str) -> Option<Duration> {
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs.max(1)))
}

/// A stream to a policy server.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

fn connect(ep: &PolicyEndpoint, queue_directory: &std::path::Path) -> std::io::Result<Conn> {
    if let Some(hp) = ep.endpoint.strip_prefix("inet:") {
        let addr = hp
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let s = TcpStream::connect_timeout(&addr, ep.timeout)?;
        s.set_read_timeout(Some(ep.timeout))?;
        s.set_write_timeout(Some(ep.timeout))?;
        Ok(Conn::Tcp(s))
    } else {
        let path = ep.endpoint.strip_prefix("unix:").unwrap_or(&ep.endpoint);
        let s = UnixStream::connect(queue_directory.join(path))?;
        s.set_read_timeout(Some(ep.timeout))?;
        s.set_write_timeout(Some(ep.timeout))?;
        Ok(Conn::Unix(s))
    }
}

/// Sends one request and reads the `action=` of the reply.
fn ask(
    ep: &PolicyEndpoint,
    queue_directory: &std::path::Path,
    request: &str,
) -> Result<String, String> {
    let conn = connect(ep, queue_directory).map_err(|e| format!("connect: {e}"))?;
    let (mut w, r): (Box<dyn Write>, Box<dyn std::io::Read>) = match conn {
        Conn::Tcp(s) => {
            let r = s.try_clone().map_err(|e| e.to_string())?;
            (Box::new(s), Box::new(r))
        }
        Conn::Unix(s) => {
            let r = s.try_clone().map_err(|e| e.to_string())?;
            (Box::new(s), Box::new(r))
        }
    };
    w.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    w.flush().map_err(|e| format!("write: {e}"))?;
    let mut reader = BufReader::new(std::io::Read::take(r, 64 * 1024));
    let mut action = None;
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("premature end of reply".into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("action=") {
            action = Some(v.to_string());
        }
    }
    action.ok_or_else(|| "reply without action attribute".to_string())
}

/// Attribute values never carry line breaks.
fn attr(out: &mut String, name: &str, value: &str) {
    let v: String = value
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    out.push_str(name);
    out.push('=');
    out.push_str(&v);
    out.push('\n');
}

impl Eval<'_> {
    /// The request attributes of SMTPD_POLICY_README.
    fn policy_request(&self, ep: &PolicyEndpoint) -> String {
        let cx = self.cx;
        let mut s = String::new();
        attr(&mut s, "request", "smtpd_access_policy");
        let state = cx.stage.map_or("CONNECT", |st| st.name(cx.extended));
        attr(&mut s, "protocol_state", state);
        attr(&mut s, "protocol_name", &cx.protocol);
        attr(&mut s, "client_address", &cx.addr);
        attr(&mut s, "client_name", &cx.name);
        attr(&mut s, "client_port", &cx.port.to_string());
        attr(&mut s, "reverse_client_name", &cx.reverse_name);
        attr(&mut s, "server_address", "");
        attr(&mut s, "server_port", "");
        attr(&mut s, "helo_name", cx.helo.as_deref().unwrap_or(""));
        attr(&mut s, "sender", self.sender.as_deref().unwrap_or(""));
        attr(&mut s, "recipient", self.recipient.as_deref().unwrap_or(""));
        let count = if matches!(cx.stage, Some(super::Stage::Data | super::Stage::Eod)) {
            cx.rcpt_count
        } else {
            0
        };
        attr(&mut s, "recipient_count", &count.to_string());
        attr(&mut s, "queue_id", cx.queue_id.as_deref().unwrap_or(""));
        attr(&mut s, "instance", &cx.instance);
        attr(&mut s, "size", &cx.size.to_string());
        attr(&mut s, "etrn_domain", "");
        attr(&mut s, "stress", "");
        attr(
            &mut s,
            "sasl_method",
            cx.sasl_method.as_deref().unwrap_or(""),
        );
        attr(
            &mut s,
            "sasl_username",
            cx.sasl_username.as_deref().unwrap_or(""),
        );
        attr(
            &mut s,
            "sasl_sender",
            cx.sasl_sender.as_deref().unwrap_or(""),
        );
        attr(&mut s, "ccert_subject", "");
        attr(&mut s, "ccert_issuer", "");
        attr(&mut s, "ccert_fingerprint", "");
        attr(&mut s, "ccert_pubkey_fingerprint", "");
        let (proto, cipher, bits) = cx
            .tls
            .clone()
            .map_or((String::new(), String::new(), 0), |t| t);
        attr(&mut s, "encryption_protocol", &proto);
        attr(&mut s, "encryption_cipher", &cipher);
        attr(&mut s, "encryption_keysize", &bits.to_string());
        attr(&mut s, "policy_context", &ep.context);
        attr(&mut s, "compatibility_level", &self.r.compatibility_level);
        attr(&mut s, "mail_version", &self.r.mail_version);
        s.push('\n');
        s
    }

    /// `check_policy_service endpoint`.
    pub(super) fn policy(
        &mut self,
        server: &str,
        reply_name: &str,
        reply_class: &str,
        def_acl: Option<&str>,
    ) -> Status {
        let Some(ep) = self.r.policies.get(server).cloned() else {
            oxipost_log::warning!("check_policy_service: no client endpoint for server {server}");
            return self.server_error();
        };
        let request = self.policy_request(&ep);
        let action = match ask(&ep, &self.r.queue_directory, &request) {
            Ok(a) if !a.trim().is_empty() => a,
            Ok(_) => {
                oxipost_log::warning!("{}: empty action from policy server", ep.endpoint);
                ep.default_action.clone()
            }
            Err(e) => {
                oxipost_log::warning!("problem talking to server {}: {e}", ep.endpoint);
                ep.default_action.clone()
            }
        };
        self.table_result(
            server,
            &action,
            "policy query",
            reply_name,
            reply_class,
            def_acl,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let t = Duration::from_secs(100);
        let ep = parse_endpoint("inet:127.0.0.1:9998", t, "DUNNO", "").ok();
        assert_eq!(
            ep.map(|e| e.endpoint),
            Some("inet:127.0.0.1:9998".to_string())
        );
        let ep = parse_endpoint(
            "{ unix:private/policy, timeout=10s, default_action=DUNNO }",
            t,
            "451 4.3.5 x",
            "",
        )
        .ok();
        assert_eq!(
            ep.map(|e| (e.endpoint, e.timeout, e.default_action)),
            Some((
                "unix:private/policy".into(),
                Duration::from_secs(10),
                "DUNNO".into()
            ))
        );
        assert!(parse_endpoint("tcp:x", t, "", "").is_err());
    }
}

//! `smtp_generic_maps` / `lmtp_generic_maps` (Postfix generic(5)): outgoing address
//! rewriting, typically to turn local names (`user@localhost.localdomain`) into valid
//! Internet addresses. It applies to the envelope (MAIL FROM, RCPT TO) and to the
//! addresses of the message's own header (From, To, Cc, Reply-To, Sender, Resent-*, ...),
//! never to the queue file: only this delivery sees the new addresses, and logs keep the
//! queued ones, as Postfix's.
//!
//! Lookups are generic(5)'s: `user@domain`, `user@domain` without the address
//! extension (the extension is then kept), `user` for a local domain (`$myhostname`,
//! `$myorigin`, `$mydestination`), then `@domain`. A value `@domain` keeps the user part.

use oxipost_cleanup::address::{quote_address, rewrite_address_list, unquote_address};
use oxipost_maps::Maps;
use oxipost_maps::addr::AddrQuery;

pub struct Generic {
    maps: Maps,
    delimiter: String,
    local_domains: Vec<String>,
}

/// Headers whose value is a list of addresses (Postfix's `HDR_OPT_MAILBOX` set).
const ADDRESS_HEADERS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
    "resent-to",
    "resent-cc",
    "resent-bcc",
    "return-receipt-to",
    "errors-to",
    "disposition-notification-to",
    "mail-followup-to",
    "mail-reply-to",
];

impl Generic {
    pub fn new(maps: Maps, delimiter: &str, local_domains: Vec<String>) -> Generic {
        Generic {
            maps,
            delimiter: delimiter.to_string(),
            local_domains: local_domains
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
        }
    }

    /// The rewritten address, or `Err` with the table's error (the delivery is then
    /// deferred: sending the unrewritten address could leak a private name).
    pub fn map(&self, address: &str) -> Result<String, String> {
        if address.is_empty() {
            return Ok(String::new());
        }
        let is_local = |d: &str| self.local_domains.iter().any(|l| l.eq_ignore_ascii_case(d));
        let q = AddrQuery {
            delimiter: &self.delimiter,
            is_local: Some(&is_local),
            at_domain: true,
        };
        let external = quote_address(address);
        let m = match self.maps.lookup_addr(&external, &q) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(address.to_string()),
            Err(e) => return Err(e.to_string()),
        };
        let value = m
            .value
            .split(|c: char| c == ',' || c.is_whitespace())
            .find(|w| !w.is_empty())
            .unwrap_or("")
            .to_string();
        if value.is_empty() {
            return Ok(address.to_string());
        }
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        let ext = m.unmatched_extension.as_deref().and_then(|e| {
            let at = local.len().checked_sub(e.len() + 1)?;
            local.get(at..)
        });
        let out = if value.starts_with('@') {
            let user = match ext {
                Some(x) => &local[..local.len() - x.len()],
                None => local,
            };
            format!("{user}{value}")
        } else if let Some(x) = ext {
            match value.rfind('@') {
                Some(i) => format!("{}{x}{}", &value[..i], &value[i..]),
                None => format!("{value}{x}"),
            }
        } else {
            value
        };
        Ok(unquote_address(&out))
    }

    /// The message with the addresses of its primary header rewritten; `None` when
    /// nothing changed. The body and MIME part headers are left alone.
    pub fn rewrite_headers(&self, content: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let end = header_end(content);
        let mut out = Vec::with_capacity(content.len() + 64);
        let mut changed = false;
        let mut i = 0;
        while i < end {
            // One header field: its first line and the folded lines after it.
            let mut j = i;
            loop {
                match content[j..end].iter().position(|&b| b == b'\n') {
                    Some(n) => j += n + 1,
                    None => {
                        j = end;
                        break;
                    }
                }
                if j >= end || !matches!(content[j], b' ' | b'\t') {
                    break;
                }
            }
            let field = &content[i..j];
            match self.rewrite_field(field)? {
                Some(new) => {
                    out.extend_from_slice(&new);
                    changed = true;
                }
                None => out.extend_from_slice(field),
            }
            i = j;
        }
        if !changed {
            return Ok(None);
        }
        out.extend_from_slice(&content[end..]);
        Ok(Some(out))
    }

    fn rewrite_field(&self, field: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            return Ok(None);
        };
        let Ok(name) = std::str::from_utf8(&field[..colon]) else {
            return Ok(None);
        };
        if !ADDRESS_HEADERS.contains(&name.trim().to_ascii_lowercase().as_str()) {
            return Ok(None);
        }
        let Ok(value) = std::str::from_utf8(&field[colon + 1..]) else {
            return Ok(None);
        };
        let new = rewrite_address_list(value, |a| {
            let inner = unquote_address(a);
            let mapped = self.map(&inner)?;
            Ok::<_, String>((mapped != inner).then(|| quote_address(&mapped)))
        })?;
        Ok(new.map(|v| {
            let mut f = field[..=colon].to_vec();
            f.extend_from_slice(v.as_bytes());
            f
        }))
    }
}

/// Where the primary header ends (the start of the empty line, or the end).
fn header_end(content: &[u8]) -> usize {
    let mut i = 0;
    while i < content.len() {
        if content[i] == b'\n' {
            return i;
        }
        if content[i] == b'\r' && content.get(i + 1) == Some(&b'\n') {
            return i;
        }
        match content[i..].iter().position(|&b| b == b'\n') {
            Some(n) => i += n + 1,
            None => return content.len(),
        }
    }
    content.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxipost_maps::MapConfig;

    fn generic(spec: &str) -> Generic {
        let maps = Maps::open(spec, &MapConfig::default()).expect("maps");
        Generic::new(maps, "+", vec!["localhost".into()])
    }

    #[test]
    fn envelope_lookups_in_generic_order() {
        let g = generic(
            "inline:{ joe@localhost=joe.smith@example.com, @local.test=@example.com, ann=ann@example.org }",
        );
        assert_eq!(g.map("joe@localhost").expect("ok"), "joe.smith@example.com");
        assert_eq!(
            g.map("joe+x@localhost").expect("ok"),
            "joe.smith+x@example.com"
        );
        assert_eq!(g.map("bob@local.test").expect("ok"), "bob@example.com");
        assert_eq!(g.map("ann@localhost").expect("ok"), "ann@example.org");
        assert_eq!(
            g.map("ann@elsewhere.test").expect("ok"),
            "ann@elsewhere.test"
        );
        assert_eq!(g.map("").expect("ok"), "");
    }

    #[test]
    fn headers_rewritten_in_place_body_untouched() {
        let g = generic("inline:{ joe@localhost=joe.smith@example.com }");
        let msg = b"From: Joe <joe@localhost>\nTo: a@b.test,\n joe@localhost (me)\nSubject: joe@localhost\n\nFrom: joe@localhost\n";
        let out = g.rewrite_headers(msg).expect("ok").expect("ok");
        let text = String::from_utf8(out).expect("ok");
        assert_eq!(
            text,
            "From: Joe <joe.smith@example.com>\nTo: a@b.test,\n joe.smith@example.com (me)\nSubject: joe@localhost\n\nFrom: joe@localhost\n"
        );
        assert!(
            g.rewrite_headers(b"Subject: x\r\n\r\nbody")
                .expect("ok")
                .is_none()
        );
    }
}

//! DNS-based restrictions (`reject_rbl_client`, `permit_dnswl_client`,
//! `reject_rhsbl_{client,reverse_client,helo,sender,recipient}`, `permit_rhswl_client`,
//! `reject_unknown_{helo_hostname,sender_domain,recipient_domain}`) and the client name
//! lookup (PTR, then a forward lookup that must lead back to the address), all through
//! the one resolver ([`oxipost_dns`]). These run on a helper thread
//! ([`super::jobs`]); the resolver bounds every query in time.
//!
//! RBL replies use `default_rbl_reply` (or `rbl_reply_maps`) with Postfix's `$rbl_code`,
//! `$rbl_class`, `$rbl_what`, `$rbl_domain`, `$rbl_reason`/`$rbl_txt` and
//! `${rbl_reason?text}` forms; a `domain=127.0.0.2` suffix limits the listing codes that
//! count (`127.0.0.[2..5]` ranges are accepted too).

use std::net::{IpAddr, Ipv4Addr};

use oxipost_dns::{DnsError, Resolver};

use super::{
    ErrClass, Eval, PeerStatus, SENDER, Status, TableRef, dsn_fix, dsn_split, valid_hostname,
};

/// A DNS list lookup: listed (with its TXT text), not listed, or unknown (DNS failed).
enum Listed {
    Yes(String),
    No,
    Soft,
}

impl Eval<'_> {
    fn resolver(&self) -> Option<&Resolver> {
        self.r.resolver.as_ref()
    }

    /// Queries `query` (with an optional `=pattern` suffix) in a DNS list.
    fn dnsxl(&self, query: &str) -> Listed {
        let (name, pattern) = match query.split_once('=') {
            Some((n, p)) => (n, Some(p)),
            None => (query, None),
        };
        let Some(res) = self.resolver() else {
            return Listed::Soft;
        };
        let addrs = match res.a(name) {
            Ok(a) if !a.is_empty() => a,
            Ok(_) | Err(DnsError::NotFound) | Err(DnsError::BadName(_)) => return Listed::No,
            Err(e) => {
                oxipost_log::warning!("{name}: RBL lookup error: {e}");
                return Listed::Soft;
            }
        };
        if let Some(p) = pattern
            && !addrs.iter().any(|a| ip_pattern_matches(p, *a))
        {
            return Listed::No;
        }
        let txt = res
            .txt(name)
            .map(|t| {
                let mut s = t.join(" / ");
                s.truncate(500);
                s
            })
            .unwrap_or_default();
        Listed::Yes(txt)
    }

    /// The reply for a listed client or domain.
    fn rbl_reject_reply(&mut self, rbl_domain: &str, what: &str, class: &str, txt: &str) -> Status {
        let bare_domain = rbl_domain.split('=').next().unwrap_or(rbl_domain);
        let mut template = None;
        if let Some(t) = &self.r.rbl_reply_maps {
            match t {
                TableRef::Open(m) => {
                    let found = m.lookup(rbl_domain).and_then(|v| match v {
                        Some(v) => Ok(Some(v)),
                        None if bare_domain != rbl_domain => m.lookup(bare_domain),
                        None => Ok(None),
                    });
                    match found {
                        Ok(v) => template = v,
                        Err(e) => {
                            oxipost_log::warning!("{e}");
                            return self.server_error();
                        }
                    }
                }
                TableRef::Broken(_) => return self.server_error(),
            }
        }
        let template = template.unwrap_or_else(|| self.r.default_rbl_reply.clone());
        let code = self.r.codes.rbl.to_string();
        let text = expand_rbl(&template, &|n: &str| match n {
            "rbl_code" => Some(code.clone()),
            "rbl_domain" => Some(bare_domain.to_string()),
            "rbl_reason" | "rbl_txt" => Some(txt.to_string()),
            "rbl_what" => Some(what.to_string()),
            "rbl_class" => Some(class.to_string()),
            "client_address" => Some(self.cx.addr.clone()),
            "client_name" => Some(self.cx.name.clone()),
            "helo_name" => self.cx.helo.clone(),
            "sender" => self.sender.clone(),
            "recipient" => self.recipient.clone(),
            _ => None,
        });
        let b = text.as_bytes();
        if b.len() < 4
            || !(b[0] == b'4' || b[0] == b'5')
            || !b[1].is_ascii_digit()
            || !b[2].is_ascii_digit()
            || b[3] != b' '
        {
            oxipost_log::warning!("rbl response code configuration error: {text}");
            return self.reject(ErrClass::Policy, 450, "4.7.1", "Service unavailable".into());
        }
        let code: u16 = text[..3].parse().unwrap_or(450);
        let (dsn, t) = dsn_split("4.7.1", &text[4..]);
        let t = if t.is_empty() {
            "Service unavailable".to_string()
        } else {
            t
        };
        self.reject(ErrClass::Policy, code, &dsn_fix(&dsn, class), t)
    }

    pub(super) fn reject_rbl_addr(&mut self, rbl_domain: &str, class: &str) -> Status {
        let Some(ip) = self.cx.ip else {
            return Status::Dunno;
        };
        let query = format!("{}.{rbl_domain}", oxipost_dns::dnsbl_prefix(ip));
        match self.dnsxl(&query) {
            Listed::Yes(txt) => {
                let addr = self.cx.addr.clone();
                self.rbl_reject_reply(rbl_domain, &addr, class, &txt)
            }
            _ => Status::Dunno,
        }
    }

    pub(super) fn permit_dnswl_addr(&mut self, dnswl_domain: &str, class: &str) -> Status {
        if let Some(rc) = self.recipient.clone()
            && matches!(self.cx.stage, Some(super::Stage::Rcpt))
            && !self.permit_auth_destination(&rc)
        {
            return Status::Dunno;
        }
        let Some(ip) = self.cx.ip else {
            return Status::Dunno;
        };
        let query = format!("{}.{dnswl_domain}", oxipost_dns::dnsbl_prefix(ip));
        match self.dnsxl(&query) {
            Listed::Yes(_) => Status::Ok,
            Listed::No => Status::Dunno,
            Listed::Soft => {
                let addr = self.cx.addr.clone();
                Self::defer_if(
                    &mut self.defer_if_reject,
                    ErrClass::Policy,
                    450,
                    "4.7.1",
                    format!("<{addr}>: {class} rejected: Service unavailable"),
                );
                Status::Dunno
            }
        }
    }

    /// The DNS list query for a domain (or the domain of an address), if it is one.
    fn dnsxl_domain_query(what: &str, rbl_domain: &str) -> Option<String> {
        let domain = match what.rsplit_once('@') {
            Some((_, d)) if d.starts_with('[') => return None,
            Some((_, d)) => d,
            None => what,
        };
        let domain = domain.trim_end_matches('.');
        if domain.is_empty() {
            return None;
        }
        let suffix = domain.rsplit('.').next().unwrap_or(domain);
        if suffix.bytes().all(|b| b.is_ascii_digit()) || !valid_hostname(domain) {
            return None;
        }
        Some(format!("{domain}.{rbl_domain}"))
    }

    pub(super) fn reject_rbl_domain(
        &mut self,
        rbl_domain: &str,
        what: &str,
        class: &str,
    ) -> Status {
        let Some(query) = Self::dnsxl_domain_query(what, rbl_domain) else {
            return Status::Dunno;
        };
        match self.dnsxl(&query) {
            Listed::Yes(txt) => self.rbl_reject_reply(rbl_domain, what, class, &txt),
            _ => Status::Dunno,
        }
    }

    pub(super) fn permit_dnswl_domain(
        &mut self,
        dnswl_domain: &str,
        what: &str,
        class: &str,
    ) -> Status {
        if let Some(rc) = self.recipient.clone()
            && matches!(self.cx.stage, Some(super::Stage::Rcpt))
            && !self.permit_auth_destination(&rc)
        {
            return Status::Dunno;
        }
        let Some(query) = Self::dnsxl_domain_query(what, dnswl_domain) else {
            return Status::Dunno;
        };
        match self.dnsxl(&query) {
            Listed::Yes(_) => Status::Ok,
            Listed::No => Status::Dunno,
            Listed::Soft => {
                Self::defer_if(
                    &mut self.defer_if_reject,
                    ErrClass::Policy,
                    450,
                    "4.7.1",
                    format!("<{what}>: {class} rejected: Service unavailable"),
                );
                Status::Dunno
            }
        }
    }

    /// `reject_unknown_helo_hostname`: no A, AAAA or MX record.
    pub(super) fn reject_unknown_hostname(&mut self, name: &str, class: &str) -> Status {
        let Some(res) = self.resolver().cloned() else {
            return Status::Dunno;
        };
        let n = name.trim_end_matches('.');
        let found = match res.addresses(n) {
            Ok(a) if !a.is_empty() => Ok(true),
            Ok(_) | Err(DnsError::NotFound) => match res.mx(n) {
                Ok(m) => Ok(!m.is_empty()),
                Err(DnsError::NotFound) => Ok(false),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match found {
            Ok(true) => Status::Dunno,
            Ok(false) | Err(DnsError::BadName(_)) => {
                let code = self.r.codes.unknown_hostname;
                self.reject(
                    ErrClass::Policy,
                    code,
                    "4.7.1",
                    format!("<{name}>: {class} rejected: Host not found"),
                )
            }
            Err(DnsError::Malformed(_)) => {
                let code = self.r.codes.unknown_hostname;
                self.reject(
                    ErrClass::Policy,
                    code,
                    "4.7.1",
                    format!("<{name}>: {class} rejected: Malformed DNS server reply"),
                )
            }
            Err(_) => {
                let allowed = self.r.unknown_name_defer_if_permit;
                self.defer_if_permit(
                    allowed,
                    450,
                    "4.7.1",
                    format!("<{name}>: {class} rejected: Host not found"),
                )
            }
        }
    }

    /// `reject_unknown_{sender,recipient}_domain`: no MX, A or AAAA record (a null MX is
    /// refused as such). Local destinations and address literals are skipped.
    pub(super) fn reject_unknown_address(&mut self, addr: &str, class: &str) -> Status {
        let res = self.r.resolve(addr);
        if !res.address.contains('@') || res.class != super::AddrClass::Default {
            return Status::Dunno;
        }
        if res.domain.starts_with('[') && res.domain.ends_with(']') {
            return Status::Dunno;
        }
        let Some(resolver) = self.resolver().cloned() else {
            return Status::Dunno;
        };
        let sender = class == SENDER;
        let dsn = if sender { "4.1.8" } else { "4.1.2" };
        let mx = resolver.mx(&res.domain);
        let found = match mx {
            Ok(m) if m.len() == 1 && m[0].exchange.is_empty() => {
                let (code, ndsn) = if sender {
                    (550, "4.7.27")
                } else {
                    (556, "4.1.10")
                };
                return self.reject(
                    ErrClass::Policy,
                    code,
                    ndsn,
                    format!(
                        "<{addr}>: {class} rejected: Domain {} does not accept mail (nullMX)",
                        res.domain
                    ),
                );
            }
            Ok(m) if !m.is_empty() => Ok(true),
            Ok(_) | Err(DnsError::NotFound) => match resolver.addresses(&res.domain) {
                Ok(a) => Ok(!a.is_empty()),
                Err(DnsError::NotFound) => Ok(false),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match found {
            Ok(true) => Status::Dunno,
            Ok(false) | Err(DnsError::BadName(_)) => {
                let code = self.r.codes.unknown_address;
                self.reject(
                    ErrClass::Policy,
                    code,
                    dsn,
                    format!("<{addr}>: {class} rejected: Domain not found"),
                )
            }
            Err(DnsError::Malformed(_)) => {
                let code = self.r.codes.unknown_address;
                self.reject(
                    ErrClass::Policy,
                    code,
                    dsn,
                    format!("<{addr}>: {class} rejected: Malformed DNS server reply"),
                )
            }
            Err(_) => {
                let allowed = self.r.unknown_addr_defer_if_permit;
                self.defer_if_permit(
                    allowed,
                    450,
                    dsn,
                    format!("<{addr}>: {class} rejected: Domain not found"),
                )
            }
        }
    }
}

/// Postfix's `ip_match`: `127.0.0.2`, or octets with `[2..4]`/`[2;4]` alternatives.
fn ip_pattern_matches(pattern: &str, a: Ipv4Addr) -> bool {
    let octets = a.octets();
    let mut parts: Vec<&str> = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in pattern.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                parts.push(&pattern[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&pattern[start..]);
    if parts.len() != 4 {
        return false;
    }
    parts.iter().zip(octets).all(|(p, o)| {
        let p = p.trim_start_matches('[').trim_end_matches(']');
        p.split(';').any(|alt| match alt.split_once("..") {
            Some((lo, hi)) => match (lo.parse::<u8>(), hi.parse::<u8>()) {
                (Ok(lo), Ok(hi)) => (lo..=hi).contains(&o),
                _ => false,
            },
            None => alt.parse::<u8>() == Ok(o),
        })
    })
}

/// `$name`, `${name}`, `${name?text}` and `${name:text}` in an RBL reply template.
fn expand_rbl(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('{') {
            let Some(end) = matching_brace(r) else {
                out.push_str("${");
                rest = r;
                continue;
            };
            let inner = &r[..end];
            rest = &r[end + 1..];
            let (name, op) = match inner.find(['?', ':']) {
                Some(j) => (&inner[..j], Some((&inner[j..j + 1], &inner[j + 1..]))),
                None => (inner, None),
            };
            let v = lookup(name).filter(|v| !v.is_empty());
            match op {
                None => out.push_str(&v.unwrap_or_default()),
                Some(("?", text)) if v.is_some() => out.push_str(&expand_rbl(text, lookup)),
                Some((":", text)) if v.is_none() => out.push_str(&expand_rbl(text, lookup)),
                _ => {}
            }
        } else if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push_str(&lookup(&rest[..end]).unwrap_or_default());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The client's names: (verified name, its status, PTR name, its status), as Postfix's
/// `smtpd_peer`: the name is used only when one of its addresses is the client's.
pub fn peer_names(res: &Resolver, ip: IpAddr) -> (String, PeerStatus, String, PeerStatus) {
    let unknown = || "unknown".to_string();
    let ptrs = match res.ptr(ip) {
        Ok(p) if !p.is_empty() => p,
        Ok(_) | Err(DnsError::NotFound) | Err(DnsError::BadName(_)) => {
            return (unknown(), PeerStatus::Perm, unknown(), PeerStatus::Perm);
        }
        Err(_) => return (unknown(), PeerStatus::Temp, unknown(), PeerStatus::Temp),
    };
    let reverse = ptrs[0].clone();
    if !valid_hostname(&reverse) {
        return (unknown(), PeerStatus::Perm, unknown(), PeerStatus::Perm);
    }
    let mut status = PeerStatus::Perm;
    for name in &ptrs {
        match res.addresses(name) {
            Ok(addrs) if addrs.contains(&ip) => {
                return (name.clone(), PeerStatus::Ok, reverse, PeerStatus::Ok);
            }
            Ok(_) | Err(DnsError::NotFound) => {}
            Err(_) => status = PeerStatus::Temp,
        }
    }
    if status == PeerStatus::Perm {
        oxipost_log::warning!("hostname {reverse} does not resolve to address {ip}");
    }
    (unknown(), status, reverse, PeerStatus::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let a = Ipv4Addr::new(127, 0, 0, 2);
        assert!(ip_pattern_matches("127.0.0.2", a));
        assert!(!ip_pattern_matches("127.0.0.3", a));
        assert!(ip_pattern_matches("127.0.0.[2..4]", a));
        assert!(ip_pattern_matches("127.0.0.[1;2]", a));
    }

    #[test]
    fn templates() {
        let look = |n: &str| match n {
            "rbl_code" => Some("554".to_string()),
            "rbl_class" => Some("Client host".to_string()),
            "rbl_what" => Some("127.0.0.2".to_string()),
            "rbl_domain" => Some("rbl.test".to_string()),
            "rbl_reason" => Some(String::new()),
            _ => None,
        };
        let t = "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}";
        assert_eq!(
            expand_rbl(t, &look),
            "554 Service unavailable; Client host [127.0.0.2] blocked using rbl.test"
        );
        let look2 = |n: &str| {
            if n == "rbl_reason" {
                Some("listed".to_string())
            } else {
                look(n)
            }
        };
        assert!(expand_rbl(t, &look2).ends_with("rbl.test; listed"));
    }
}

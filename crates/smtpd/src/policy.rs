//! The interim RCPT policy, until the restriction language (smtpd_*_restrictions) and the
//! lookup tables arrive:
//!
//! 1. **Relay control** (Postfix's default `permit_mynetworks, reject_unauth_destination`):
//!    a recipient in a `mydestination` domain (case-insensitive, trailing dot ignored, the
//!    bare `<postmaster>` included) is accepted from anyone; any other domain only from a
//!    client in `mynetworks`; else `554 5.7.1 <addr>: Relay access denied` (`454 4.7.1`
//!    when `smtpd_relay_restrictions` says `defer_unauth_destination`, Postfix's default
//!    from compatibility level 1). Restriction lists naming anything beyond this built-in
//!    policy make smtpd fail closed (see `Settings::unsupported`).
//! 2. **Unknown local recipients** (`reject_unlisted_recipient`): when
//!    `local_recipient_maps` is non-empty, a local-domain recipient is known when its local
//!    part, lower-cased and cut at the first `recipient_delimiter` character, is a system
//!    user (`getpwnam`), a name in `local_users`, or `postmaster`, `root` or `mailer-daemon`
//!    (which every aliases file defines). The real maps (passwd.byname, `$alias_maps`) replace
//!    this rule when lookup tables exist. Unknown ones get
//!    `550 5.1.1 <addr>: Recipient address rejected: User unknown in local recipient table`.

use std::net::IpAddr;

use oxipost_smtp_proto::Address;

use crate::settings::Settings;

/// One `mynetworks` entry: an address with a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `192.0.2.0/24`, `192.0.2.1`, `[::1]/128`, `[2001:db8::]/32`, `::1`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let addr: IpAddr = addr.parse().map_err(|_| format!("bad address in {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?}"))?,
        };
        Ok(Cidr {
            addr: canonical(addr),
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) compare as IPv4, as the client is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses a `mynetworks` value. Table and file entries (`type:name`, `/file`) are not
/// supported yet and are an error, so that a configuration is never silently more open or
/// closed than written.
pub fn parse_mynetworks(value: &str) -> Result<Vec<Cidr>, String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with('/') || (s.contains(':') && !looks_like_ip(s)) {
                Err(format!("{s}: tables and files are not supported yet"))
            } else {
                Cidr::parse(s)
            }
        })
        .collect()
}

fn looks_like_ip(s: &str) -> bool {
    let a = s.split('/').next().unwrap_or(s);
    let a = a.trim_start_matches('[').trim_end_matches(']');
    a.parse::<IpAddr>().is_ok()
}

/// The answer to one RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject {
        code: u16,
        enhanced: &'static str,
        text: String,
    },
}

/// True when the client may relay.
pub fn in_mynetworks(settings: &Settings, ip: IpAddr) -> bool {
    settings.mynetworks.iter().any(|n| n.contains(ip))
}

/// True for a `mydestination` domain (or the bare `<postmaster>`).
pub fn is_local_domain(settings: &Settings, domain: &str) -> bool {
    if domain.is_empty() {
        return true;
    }
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    settings.mydestination.contains(&d)
}

/// Checks one recipient from `client`.
pub fn check_rcpt(settings: &Settings, client: IpAddr, rcpt: &Address) -> Verdict {
    let local = is_local_domain(settings, &rcpt.domain);
    if !local && !in_mynetworks(settings, client) {
        let (code, enhanced) = settings.relay_reject;
        return Verdict::Reject {
            code,
            enhanced,
            text: format!("<{rcpt}>: Relay access denied"),
        };
    }
    if local && settings.check_local_recipients && !is_known_local(settings, &rcpt.local) {
        return Verdict::Reject {
            code: settings.unknown_local_code,
            enhanced: "5.1.1",
            text: format!(
                "<{rcpt}>: Recipient address rejected: User unknown in local recipient table"
            ),
        };
    }
    Verdict::Accept
}

/// The interim local recipient table (see the module documentation).
fn is_known_local(settings: &Settings, local: &str) -> bool {
    let unquoted = local
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or(local);
    let lower = unquoted.to_ascii_lowercase();
    let base = match lower.find(|c: char| settings.recipient_delimiter.contains(c)) {
        Some(i) if !settings.recipient_delimiter.is_empty() && i > 0 => &lower[..i],
        _ => lower.as_str(),
    };
    if matches!(base, "postmaster" | "root" | "mailer-daemon") {
        return true;
    }
    if settings.local_users.contains(base) {
        return true;
    }
    // getpwnam: a NUL or odd bytes simply find nobody.
    matches!(nix::unistd::User::from_name(base), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidr_forms() {
        let nets =
            parse_mynetworks("127.0.0.0/8, [::1]/128 192.0.2.7 [2001:db8::]/32").expect("parses");
        let any = |a: &str| nets.iter().any(|n| n.contains(ip(a)));
        assert!(any("127.1.2.3"));
        assert!(any("::1"));
        assert!(any("::ffff:127.0.0.1"));
        assert!(any("192.0.2.7"));
        assert!(!any("192.0.2.8"));
        assert!(any("2001:db8:1::5"));
        assert!(!any("2001:db9::5"));
        assert!(parse_mynetworks("hash:/etc/x").is_err());
        assert!(parse_mynetworks("10.0.0.0/33").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("8.8.8.8"))
        );
    }
}

//! Small policy helpers shared by the restriction engine ([`crate::restrict`]) and the
//! session: `mynetworks` CIDR entries, the canonical form of IPv4-mapped client addresses,
//! and the built-in local recipient rule.
//!
//! **Local recipients** (`reject_unlisted_recipient` with the default
//! `local_recipient_maps`): a local-domain recipient is known when its local part,
//! lower-cased and cut at the first `recipient_delimiter` character, is a system user
//! (`getpwnam`), a name in `local_users`, or `postmaster`, `root` or `mailer-daemon`
//! (which every aliases file defines). An explicit `local_recipient_maps` setting is
//! looked up table by table instead (see [`crate::restrict`]). Unknown ones get
//! `550 5.1.1 <addr>: Recipient address rejected: User unknown in local recipient table`.

use std::net::IpAddr;

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

/// True when the client may relay: `mynetworks` (tables and names included).
pub fn in_mynetworks(settings: &Settings, ip: IpAddr) -> bool {
    settings.restrictions.mynetworks.contains_ip(ip)
}

/// The built-in local recipient table (see the module documentation); `local` may be
/// quoted.
pub fn is_known_local_user(
    local_users: &std::collections::HashSet<String>,
    delimiter: &str,
    local: &str,
) -> bool {
    let unquoted = local
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or(local);
    let lower = unquoted.to_ascii_lowercase();
    let base = match lower.find(|c: char| delimiter.contains(c)) {
        Some(i) if !delimiter.is_empty() && i > 0 => &lower[..i],
        _ => lower.as_str(),
    };
    if matches!(base, "postmaster" | "root" | "mailer-daemon") {
        return true;
    }
    if local_users.contains(base) {
        return true;
    }
    known_account(base)
}

/// getpwnam, with accounts found in the last second remembered: a lookup reads all of
/// `/etc/passwd` (six system calls), once per RCPT. Only positive answers are kept, so a new
/// account is never refused; a deleted one is accepted for at most a second (and bounced by
/// local, as mail queued just before the deletion would be).
fn known_account(name: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static FOUND: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);
    const KEEP: Duration = Duration::from_secs(1);
    if let Ok(g) = FOUND.lock()
        && let Some(at) = g.as_ref().and_then(|m| m.get(name))
        && at.elapsed() < KEEP
    {
        return true;
    }
    // getpwnam: a NUL or odd bytes simply find nobody.
    let found = matches!(nix::unistd::User::from_name(name), Ok(Some(_)));
    if found && let Ok(mut g) = FOUND.lock() {
        let m = g.get_or_insert_with(HashMap::new);
        if m.len() >= 1024 {
            m.retain(|_, at| at.elapsed() < KEEP);
            if m.len() >= 1024 {
                m.clear();
            }
        }
        m.insert(name.to_string(), Instant::now());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidr_forms() {
        let nets: Vec<Cidr> = ["127.0.0.0/8", "[::1]/128", "192.0.2.7", "[2001:db8::]/32"]
            .iter()
            .filter_map(|s| Cidr::parse(s).ok())
            .collect();
        let any = |a: &str| nets.iter().any(|n| n.contains(ip(a)));
        assert!(any("127.1.2.3"));
        assert!(any("::1"));
        assert!(any("::ffff:127.0.0.1"));
        assert!(any("192.0.2.7"));
        assert!(!any("192.0.2.8"));
        assert!(any("2001:db8:1::5"));
        assert!(!any("2001:db9::5"));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("8.8.8.8"))
        );
    }
}

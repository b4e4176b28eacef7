//! Defaults that come from the host, computed as Postfix computes them.

use std::net::IpAddr;

/// `myhostname`: the system's host name; without a dot, `.localdomain` is appended
/// (Postfix does the same so that $mydomain is never empty).
pub fn myhostname() -> String {
    let name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    if name.contains('.') {
        name
    } else {
        format!("{name}.localdomain")
    }
}

/// `mydomain`: `$myhostname` without its first label, or `localdomain`.
pub fn mydomain(myhostname: &str) -> String {
    match myhostname.split_once('.') {
        Some((_, rest)) if rest.contains('.') || !rest.is_empty() => rest.to_string(),
        _ => "localdomain".to_string(),
    }
}

/// `mynetworks` per `mynetworks_style`: `host` lists this host's own addresses, `subnet`
/// the networks of its interfaces, `class` their class A/B/C networks. IPv6 networks are
/// written in brackets, as Postfix writes them.
pub fn mynetworks(style: &str) -> String {
    let mut nets: Vec<String> = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return "127.0.0.0/8 [::1]/128".to_string();
    };
    for ifa in addrs {
        let (Some(addr), mask) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (ip, prefix) = if let Some(v4) = addr.as_sockaddr_in() {
            let m = mask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map_or(32, |m| u32::from(m.ip()).count_ones());
            (IpAddr::V4(v4.ip()), m)
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let m = mask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in6())
                .map_or(128, |m| u128::from(m.ip()).count_ones());
            (IpAddr::V6(v6.ip()), m)
        } else {
            continue;
        };
        let prefix = match (style, ip) {
            ("host", IpAddr::V4(_)) => 32,
            ("host", IpAddr::V6(_)) => 128,
            ("class", IpAddr::V4(v4)) => match v4.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            },
            _ => prefix,
        };
        let s = match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4) & mask32(prefix);
                format!("{}/{}", std::net::Ipv4Addr::from(bits), prefix)
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & mask128(prefix);
                format!("[{}]/{}", std::net::Ipv6Addr::from(bits), prefix)
            }
        };
        if !nets.contains(&s) {
            nets.push(s);
        }
    }
    nets.join(" ")
}

fn mask32(prefix: u32) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    }
}

fn mask128(prefix: u32) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix.min(128))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_from_hostname() {
        assert_eq!(mydomain("mail.example.com"), "example.com");
        assert_eq!(mydomain("vm.localdomain"), "localdomain");
        assert_eq!(mydomain("localhost"), "localdomain");
    }

    #[test]
    fn host_style_includes_loopback() {
        let n = mynetworks("host");
        assert!(n.contains("127.0.0.1/32"), "{n}");
    }
}

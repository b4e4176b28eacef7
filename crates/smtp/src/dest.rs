//! From a next hop to the servers to try, in order (RFC 5321 §5.1, Postfix's
//! `smtp_connect.c`): `[host]:port` and `[host]` connect to the host itself; a bare
//! domain is looked up as MX (preference order, then the host's addresses), falling back
//! to the domain's own addresses when it has no MX; a null MX (RFC 7505) is a permanent
//! failure. LMTP next hops are `unix:/path`, `inet:host:port`, `[host]:port` or
//! `host:port` and never use MX. Lookups go through the [`Lookup`] trait so that tests
//! can answer them; the agent uses `oxipost-dns`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use oxipost_dns::{DnsError, Mx, Resolver};

use crate::settings::{Families, Settings};

/// Name service lookups the agent needs.
pub trait Lookup {
    /// MX records, sorted by preference.
    fn mx(&self, name: &str) -> Result<Vec<Mx>, DnsError>;
    /// A and AAAA records.
    fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, DnsError>;
}

impl Lookup for Resolver {
    fn mx(&self, name: &str) -> Result<Vec<Mx>, DnsError> {
        Resolver::mx(self, name)
    }
    fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        Resolver::addresses(self, name)
    }
}

/// A parsed next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nexthop {
    /// A TCP destination: `host` with `mx` lookups unless bracketed.
    Inet { host: String, port: u16, mx: bool },
    /// An LMTP server on a UNIX-domain socket.
    Unix(PathBuf),
}

impl Nexthop {
    /// Parses Postfix's next-hop syntax. `default_port` is 25 (smtp) or 24 (lmtp); LMTP
    /// hosts are never MX-resolved.
    pub fn parse(text: &str, default_port: u16, lmtp: bool) -> Result<Nexthop, String> {
        let t = text.trim();
        if let Some(p) = t.strip_prefix("unix:") {
            return Ok(Nexthop::Unix(PathBuf::from(p)));
        }
        let t = t.strip_prefix("inet:").unwrap_or(t);
        if t.is_empty() {
            return Err("empty next-hop destination".into());
        }
        let (host, port, bracket) = if let Some(rest) = t.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text}: missing ']'"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{text}: garbage after ']'")),
            };
            (h.to_string(), port, true)
        } else if t.matches(':').count() == 1 {
            let (h, p) = t.split_once(':').unwrap_or((t, ""));
            (h.to_string(), parse_port(p)?, false)
        } else {
            (t.to_string(), default_port, false)
        };
        let host = host
            .strip_prefix("ipv6:")
            .or_else(|| host.strip_prefix("IPv6:"))
            .unwrap_or(&host)
            .to_string();
        let is_ip = host.parse::<IpAddr>().is_ok();
        Ok(Nexthop::Inet {
            mx: !bracket && !lmtp && !is_ip,
            host,
            port,
        })
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    if let Ok(n) = p.parse::<u16>() {
        return Ok(n);
    }
    match p {
        "smtp" => Ok(25),
        "submission" => Ok(587),
        "submissions" | "smtps" => Ok(465),
        "lmtp" => Ok(24),
        _ => Err(format!("bad port: {p}")),
    }
}

/// One server to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The host name (the MX exchange, or the next hop), for logs and TLS names.
    pub name: String,
    pub addr: SocketAddr,
}

/// Why there is no server to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestError {
    /// Permanent (bounce) or temporary (defer).
    pub permanent: bool,
    pub dsn: String,
    pub text: String,
}

impl DestError {
    fn temp(dsn: &str, text: String) -> DestError {
        DestError {
            permanent: false,
            dsn: dsn.into(),
            text,
        }
    }
    fn perm(dsn: &str, text: String) -> DestError {
        DestError {
            permanent: true,
            dsn: dsn.into(),
            text,
        }
    }
}

/// The servers for an Inet next hop, in the order to try them.
pub fn candidates(
    host: &str,
    port: u16,
    mx: bool,
    s: &Settings,
    dns: &dyn Lookup,
) -> Result<Vec<Candidate>, DestError> {
    candidates_with(
        host,
        port,
        mx,
        s.families,
        s.mx_address_limit,
        &s.host_lookup,
        dns,
    )
}

fn candidates_with(
    host: &str,
    port: u16,
    mx: bool,
    fam: Families,
    address_limit: usize,
    host_lookup: &[String],
    dns: &dyn Lookup,
) -> Result<Vec<Candidate>, DestError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !fam.allows(&ip) {
            return Err(DestError::temp(
                "4.4.4",
                format!("unable to look up host {host}: address family disabled by inet_protocols"),
            ));
        }
        return Ok(vec![Candidate {
            name: host.to_string(),
            addr: SocketAddr::new(ip, port),
        }]);
    }
    if !mx {
        let addrs =
            host_addresses(host, dns, host_lookup).map_err(|e| lookup_error(host, "A", &e))?;
        let v = filtered(host, port, addrs, fam, 0);
        if v.is_empty() {
            return Err(DestError::temp(
                "4.4.4",
                format!(
                    "Host or domain name not found. Name service error for name={host} type=A: Host found but no data record of requested type"
                ),
            ));
        }
        return Ok(v);
    }
    let records = dns.mx(host).map_err(|e| lookup_error(host, "MX", &e))?;
    if records.len() == 1 && matches!(records[0].exchange.as_str(), "" | ".") {
        return Err(DestError::perm(
            "5.1.10",
            format!("Domain {host} does not accept mail (nullMX)"),
        ));
    }
    if records.is_empty() {
        let addrs =
            host_addresses(host, dns, host_lookup).map_err(|e| lookup_error(host, "A", &e))?;
        let v = filtered(host, port, addrs, fam, 0);
        if v.is_empty() {
            return Err(DestError::perm(
                "5.4.4",
                format!(
                    "Host or domain name not found. Name service error for name={host} type=AAAA: Host found but no data record of requested type"
                ),
            ));
        }
        return Ok(v);
    }
    let mut out = Vec::new();
    let mut last_err = None;
    for m in &records {
        if m.exchange.is_empty() || m.exchange == "." {
            continue;
        }
        match host_addresses(&m.exchange, dns, host_lookup) {
            Ok(a) => out.extend(filtered(&m.exchange, port, a, fam, 0)),
            Err(e) => last_err = Some(lookup_error(&m.exchange, "A", &e)),
        }
        if address_limit > 0 && out.len() >= address_limit {
            out.truncate(address_limit);
            break;
        }
    }
    if out.is_empty() {
        return Err(last_err.unwrap_or_else(|| {
            DestError::temp(
                "4.4.4",
                format!("Host or domain name not found. Name service error for name={host} type=MX: no usable MX host address"),
            )
        }));
    }
    Ok(out)
}

fn filtered(
    name: &str,
    port: u16,
    addrs: Vec<IpAddr>,
    fam: Families,
    _pref: u16,
) -> Vec<Candidate> {
    let mut seen = Vec::new();
    addrs
        .into_iter()
        .filter(|a| fam.allows(a))
        .filter(|a| {
            let new = !seen.contains(a);
            seen.push(*a);
            new
        })
        .map(|a| Candidate {
            name: name.to_string(),
            addr: SocketAddr::new(a, port),
        })
        .collect()
}

/// Addresses of a host by `smtp_host_lookup` (`dns`, `native` or both, in order).
fn host_addresses(host: &str, dns: &dyn Lookup, how: &[String]) -> Result<Vec<IpAddr>, DnsError> {
    let mut last = DnsError::NotFound;
    for method in how {
        let r = match method.as_str() {
            "native" => (host, 0)
                .to_socket_addrs()
                .map(|it| it.map(|sa| sa.ip()).collect::<Vec<_>>())
                .map_err(|_| DnsError::NotFound),
            _ => dns.addresses(host),
        };
        match r {
            Ok(v) if !v.is_empty() => return Ok(v),
            Ok(_) => last = DnsError::NotFound,
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn lookup_error(name: &str, rtype: &str, e: &DnsError) -> DestError {
    let text = format!(
        "Host or domain name not found. Name service error for name={name} type={rtype}: {e}"
    );
    if e.is_temporary() {
        DestError::temp("4.4.3", text)
    } else {
        DestError::perm("5.4.4", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn nexthop_forms() {
        let inet = |h: &str, p: u16, mx: bool| Nexthop::Inet {
            host: h.into(),
            port: p,
            mx,
        };
        assert_eq!(
            Nexthop::parse("[127.0.0.1]:2525", 25, false),
            Ok(inet("127.0.0.1", 2525, false))
        );
        assert_eq!(
            Nexthop::parse("[mx.example]", 25, false),
            Ok(inet("mx.example", 25, false))
        );
        assert_eq!(
            Nexthop::parse("example.org", 25, false),
            Ok(inet("example.org", 25, true))
        );
        assert_eq!(
            Nexthop::parse("example.org:587", 25, false),
            Ok(inet("example.org", 587, true))
        );
        assert_eq!(
            Nexthop::parse("[ipv6:::1]:25", 25, false),
            Ok(inet("::1", 25, false))
        );
        assert_eq!(
            Nexthop::parse("inet:127.0.0.1:24", 24, true),
            Ok(inet("127.0.0.1", 24, false))
        );
        assert_eq!(
            Nexthop::parse("host", 24, true),
            Ok(inet("host", 24, false))
        );
        assert_eq!(
            Nexthop::parse("unix:/run/lmtp", 24, true),
            Ok(Nexthop::Unix("/run/lmtp".into()))
        );
        assert!(Nexthop::parse("[x", 25, false).is_err());
        assert!(Nexthop::parse("x:bad", 25, false).is_err());
    }

    struct Fake {
        mx: HashMap<&'static str, Result<Vec<Mx>, DnsError>>,
        a: HashMap<&'static str, Vec<IpAddr>>,
    }

    impl Lookup for Fake {
        fn mx(&self, name: &str) -> Result<Vec<Mx>, DnsError> {
            self.mx
                .get(name)
                .cloned()
                .unwrap_or(Err(DnsError::NotFound))
        }
        fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
            self.a.get(name).cloned().ok_or(DnsError::NotFound)
        }
    }

    fn mx(p: u16, e: &str) -> Mx {
        Mx {
            preference: p,
            exchange: e.into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn mx_order_fallback_and_null_mx() {
        let f = Fake {
            mx: HashMap::from([
                (
                    "a.test",
                    Ok(vec![mx(10, "mx1.a.test"), mx(20, "mx2.a.test")]),
                ),
                ("b.test", Ok(vec![])),
                ("null.test", Ok(vec![mx(0, "")])),
                ("tmp.test", Err(DnsError::Temporary("timeout".into()))),
            ]),
            a: HashMap::from([
                ("mx1.a.test", vec![ip("127.0.0.2"), ip("::1")]),
                ("mx2.a.test", vec![ip("127.0.0.3")]),
                ("b.test", vec![ip("127.0.0.4")]),
            ]),
        };
        let all = Families { v4: true, v6: true };
        let dns = vec!["dns".to_string()];
        let c = candidates_with("a.test", 25, true, all, 5, &dns, &f).expect("ok");
        let names: Vec<_> = c
            .iter()
            .map(|c| (c.name.as_str(), c.addr.to_string()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("mx1.a.test", "127.0.0.2:25".to_string()),
                ("mx1.a.test", "[::1]:25".to_string()),
                ("mx2.a.test", "127.0.0.3:25".to_string())
            ]
        );
        let v4 = Families {
            v4: true,
            v6: false,
        };
        assert_eq!(
            candidates_with("a.test", 25, true, v4, 5, &dns, &f)
                .expect("ok")
                .len(),
            2
        );
        assert_eq!(
            candidates_with("a.test", 25, true, all, 1, &dns, &f)
                .expect("ok")
                .len(),
            1
        );
        let c = candidates_with("b.test", 25, true, all, 5, &dns, &f).expect("ok");
        assert_eq!(c[0].addr.to_string(), "127.0.0.4:25");
        let e = candidates_with("null.test", 25, true, all, 5, &dns, &f).expect_err("null");
        assert!(e.permanent && e.dsn == "5.1.10", "{e:?}");
        let e = candidates_with("tmp.test", 25, true, all, 5, &dns, &f).expect_err("tmp");
        assert!(!e.permanent);
        let e = candidates_with("nx.test", 25, true, all, 5, &dns, &f).expect_err("nx");
        assert!(e.permanent && e.dsn == "5.4.4");
        let c = candidates_with("127.0.0.9", 2525, false, all, 5, &dns, &f).expect("ip");
        assert_eq!(c[0].addr.to_string(), "127.0.0.9:2525");
    }
}

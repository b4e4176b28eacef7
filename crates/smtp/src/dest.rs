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
    /// A host of the best preference in the (truncated) list: a loop found at EHLO is
    /// then permanent, as in Postfix (`SMTP_FEATURE_BEST_MX`).
    pub best: bool,
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

/// This host's own addresses (`inet_interfaces`, `proxy_interfaces`): an MX host or a
/// next hop at one of them is this mail system (Postfix's `own_inet_addr_list`).
#[derive(Debug, Clone, Default)]
pub struct OwnAddrs {
    /// `inet_interfaces = all`: any address of a local interface.
    pub all: bool,
    /// `loopback-only` (or `localhost`): the loopback addresses.
    pub loopback: bool,
    pub listed: Vec<IpAddr>,
}

impl OwnAddrs {
    /// From the two parameter values; host names other than `localhost` are not
    /// resolved (give addresses), as in smtpd's `permit_mx_backup`.
    pub fn parse(inet_interfaces: &str, proxy_interfaces: &str) -> OwnAddrs {
        let mut own = OwnAddrs::default();
        for w in crate::settings::split(inet_interfaces)
            .into_iter()
            .chain(crate::settings::split(proxy_interfaces))
        {
            let w = w.trim_start_matches('[').trim_end_matches(']');
            match w.to_ascii_lowercase().as_str() {
                "all" => own.all = true,
                "loopback-only" | "localhost" => own.loopback = true,
                other => match other.parse::<IpAddr>() {
                    Ok(ip) => own.listed.push(ip),
                    Err(_) => oxipost_log::warning!(
                        "loop detection: cannot use interface name {other:?}: give an address"
                    ),
                },
            }
        }
        own
    }

    /// True when `ip` is ours. With `all`, an address is ours when a socket can be bound
    /// to it, which only the addresses of local interfaces can (nothing is sent).
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.listed.contains(&ip) || (self.loopback && ip.is_loopback()) {
            return true;
        }
        self.all && (ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok())
    }
}

/// The servers of a next hop.
#[derive(Debug, Clone, Default)]
pub struct Servers {
    pub list: Vec<Candidate>,
    /// This host is one of the domain's MX hosts: the list holds only better ones, and
    /// fallback relays are not used (they could send the mail back here).
    pub i_am_mx: bool,
}

/// The servers for an Inet next hop, in the order to try them. `own` is `Some` when
/// loop detection applies (an SMTP next hop on a port this system receives mail on):
/// MX hosts as good as or worse than this host are dropped (RFC 5321 §5.1), and a
/// next hop that is this host is a loop, as in Postfix's smtp(8).
pub fn candidates(
    host: &str,
    port: u16,
    mx: bool,
    s: &Settings,
    own: Option<&OwnAddrs>,
    dns: &dyn Lookup,
) -> Result<Servers, DestError> {
    candidates_with(
        host,
        port,
        mx,
        s.families,
        s.mx_address_limit,
        &s.host_lookup,
        own,
        dns,
    )
}

fn loops(host: &str) -> DestError {
    DestError::perm("5.4.6", format!("mail for {host} loops back to myself"))
}

/// A host looked up directly (a bracketed next hop, an address, or a domain without
/// MX): one of our own addresses among its addresses is a loop.
fn direct(
    host: &str,
    port: u16,
    addrs: Vec<IpAddr>,
    fam: Families,
    address_limit: usize,
    own: Option<&OwnAddrs>,
) -> Result<Vec<Candidate>, DestError> {
    let mut v = filtered(host, port, addrs, fam, 0);
    if let Some(own) = own
        && v.iter().any(|c| own.contains(c.addr.ip()))
    {
        return Err(loops(host));
    }
    if address_limit > 0 {
        v.truncate(address_limit);
    }
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
fn candidates_with(
    host: &str,
    port: u16,
    mx: bool,
    fam: Families,
    address_limit: usize,
    host_lookup: &[String],
    own: Option<&OwnAddrs>,
    dns: &dyn Lookup,
) -> Result<Servers, DestError> {
    let servers = |list| Servers {
        list,
        i_am_mx: false,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !fam.allows(&ip) {
            return Err(DestError::temp(
                "4.4.4",
                format!("unable to look up host {host}: address family disabled by inet_protocols"),
            ));
        }
        return direct(host, port, vec![ip], fam, address_limit, own).map(servers);
    }
    if !mx {
        let addrs =
            host_addresses(host, dns, host_lookup).map_err(|e| lookup_error(host, "A", &e))?;
        let v = direct(host, port, addrs, fam, address_limit, own)?;
        if v.is_empty() {
            return Err(DestError::temp(
                "4.4.4",
                format!(
                    "Host or domain name not found. Name service error for name={host} type=A: Host found but no data record of requested type"
                ),
            ));
        }
        return Ok(servers(v));
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
        let v = direct(host, port, addrs, fam, address_limit, own)?;
        if v.is_empty() {
            return Err(DestError::perm(
                "5.4.4",
                format!(
                    "Host or domain name not found. Name service error for name={host} type=AAAA: Host found but no data record of requested type"
                ),
            ));
        }
        return Ok(servers(v));
    }
    // Every MX host's addresses with their preference; the address limit applies after
    // the hosts as good as this one are dropped.
    let mut all: Vec<(u16, Candidate)> = Vec::new();
    let mut last_err = None;
    let best_pref = records
        .iter()
        .filter(|m| !m.exchange.is_empty() && m.exchange != ".")
        .map(|m| m.preference)
        .min();
    for m in &records {
        if m.exchange.is_empty() || m.exchange == "." {
            continue;
        }
        match host_addresses(&m.exchange, dns, host_lookup) {
            Ok(a) => {
                for c in filtered(&m.exchange, port, a, fam, m.preference) {
                    if !all.iter().any(|(_, o)| o.addr == c.addr) {
                        all.push((m.preference, c));
                    }
                }
            }
            Err(e) => last_err = Some(lookup_error(&m.exchange, "A", &e)),
        }
    }
    if all.is_empty() {
        return Err(last_err.unwrap_or_else(|| {
            DestError::temp(
                "4.4.4",
                format!("Host or domain name not found. Name service error for name={host} type=MX: no usable MX host address"),
            )
        }));
    }
    all.sort_by_key(|(p, _)| *p);
    let best_found = all.first().map(|(p, _)| *p);
    let mut i_am_mx = false;
    if let Some(own) = own
        && let Some(mine) = all
            .iter()
            .filter(|(_, c)| own.contains(c.addr.ip()))
            .map(|(p, _)| *p)
            .min()
    {
        i_am_mx = true;
        all.retain(|(p, _)| *p < mine);
        if all.is_empty() {
            return Err(if best_pref != best_found {
                // The better MX hosts have no address: not a loop, they are missing.
                DestError::temp("4.4.4", format!("unable to find primary relay for {host}"))
            } else {
                loops(host)
            });
        }
    }
    let top = all.first().map(|(p, _)| *p);
    let mut list: Vec<Candidate> = all
        .into_iter()
        .map(|(p, mut c)| {
            c.best = Some(p) == top;
            c
        })
        .collect();
    if address_limit > 0 {
        list.truncate(address_limit);
    }
    Ok(Servers { list, i_am_mx })
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
            best: true,
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
        let c = candidates_with("a.test", 25, true, all, 5, &dns, None, &f).expect("ok");
        let names: Vec<_> = c
            .list
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
            candidates_with("a.test", 25, true, v4, 5, &dns, None, &f)
                .expect("ok")
                .list
                .len(),
            2
        );
        assert_eq!(
            candidates_with("a.test", 25, true, all, 1, &dns, None, &f)
                .expect("ok")
                .list
                .len(),
            1
        );
        let c = candidates_with("b.test", 25, true, all, 5, &dns, None, &f).expect("ok");
        assert_eq!(c.list[0].addr.to_string(), "127.0.0.4:25");
        let e = candidates_with("null.test", 25, true, all, 5, &dns, None, &f).expect_err("null");
        assert!(e.permanent && e.dsn == "5.1.10", "{e:?}");
        let e = candidates_with("tmp.test", 25, true, all, 5, &dns, None, &f).expect_err("tmp");
        assert!(!e.permanent);
        let e = candidates_with("nx.test", 25, true, all, 5, &dns, None, &f).expect_err("nx");
        assert!(e.permanent && e.dsn == "5.4.4");
        let c = candidates_with("127.0.0.9", 2525, false, all, 5, &dns, None, &f).expect("ip");
        assert_eq!(c.list[0].addr.to_string(), "127.0.0.9:2525");
    }

    #[test]
    fn own_mx_host_truncates_or_loops() {
        let f = Fake {
            mx: HashMap::from([
                (
                    "backup.test",
                    Ok(vec![
                        mx(10, "primary.test"),
                        mx(20, "me.test"),
                        mx(20, "peer.test"),
                        mx(30, "worse.test"),
                    ]),
                ),
                (
                    "best.test",
                    Ok(vec![mx(5, "me.test"), mx(10, "primary.test")]),
                ),
                (
                    "gone.test",
                    Ok(vec![mx(5, "nowhere.test"), mx(10, "me.test")]),
                ),
                ("plain.test", Ok(vec![])),
            ]),
            a: HashMap::from([
                ("primary.test", vec![ip("192.0.2.1")]),
                ("me.test", vec![ip("192.0.2.9")]),
                ("peer.test", vec![ip("192.0.2.2")]),
                ("worse.test", vec![ip("192.0.2.3")]),
                ("plain.test", vec![ip("192.0.2.9")]),
            ]),
        };
        let own = OwnAddrs {
            listed: vec![ip("192.0.2.9")],
            ..OwnAddrs::default()
        };
        let all = Families { v4: true, v6: true };
        let dns = vec!["dns".to_string()];
        let run = |h: &str, mx: bool, own: Option<&OwnAddrs>| {
            candidates_with(h, 25, mx, all, 5, &dns, own, &f)
        };
        // Equal and worse preferences are dropped; only the better host is left.
        let c = run("backup.test", true, Some(&own)).expect("ok");
        assert!(c.i_am_mx);
        let names: Vec<_> = c.list.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["primary.test"]);
        assert!(c.list[0].best);
        // Without loop detection the whole list stays.
        let c = run("backup.test", true, None).expect("ok");
        assert_eq!(c.list.len(), 4);
        assert!(c.list[0].best && !c.list[1].best);
        // Best MX: a loop, permanent.
        let e = run("best.test", true, Some(&own)).expect_err("loop");
        assert_eq!(
            (e.permanent, e.dsn.as_str(), e.text.as_str()),
            (true, "5.4.6", "mail for best.test loops back to myself")
        );
        // The better host has no address: not a loop, the primary is missing.
        let e = run("gone.test", true, Some(&own)).expect_err("primary");
        assert_eq!(
            (e.permanent, e.dsn.as_str(), e.text.as_str()),
            (false, "4.4.4", "unable to find primary relay for gone.test")
        );
        // A host looked up directly (no MX, or [host]) that is us.
        let e = run("plain.test", true, Some(&own)).expect_err("loop");
        assert_eq!(e.dsn, "5.4.6");
        let e = run("me.test", false, Some(&own)).expect_err("loop");
        assert_eq!(e.text, "mail for me.test loops back to myself");
        let e = run("192.0.2.9", false, Some(&own)).expect_err("loop");
        assert_eq!(e.dsn, "5.4.6");
        let own_lo = OwnAddrs::parse("loopback-only", "198.51.100.7");
        assert!(own_lo.contains(ip("127.0.0.1")) && own_lo.contains(ip("198.51.100.7")));
        assert!(!own_lo.contains(ip("192.0.2.9")));
    }
}

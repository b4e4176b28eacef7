//! oxipost's DNS stub resolver: one blocking resolver for every program of the suite
//! (smtpd's restrictions and client name lookup, the SMTP client's MX lookups).
//!
//! It asks the recursive servers of `/etc/resolv.conf` (or the servers given to it, e.g.
//! from `oxipost_dns_servers = 127.0.0.1:5353` for tests) over UDP, and again over TCP
//! when an answer comes back truncated. The wire format is `hickory-proto`'s; the
//! transport, retries and time limits are ours, so every call is bounded by
//! [`Resolver::time_limit`] and never hangs a caller.
//!
//! # Use
//!
//! ```no_run
//! use oxipost_dns::{DnsError, Resolver};
//! let r = Resolver::system()?; // /etc/resolv.conf
//! match r.mx("example.org") {
//!     Ok(hosts) => {
//!         for mx in hosts {
//!             println!("{} {}", mx.preference, mx.exchange);
//!         }
//!     }
//!     Err(DnsError::NotFound) => println!("no such domain"),
//!     Err(e) if e.is_temporary() => println!("try again later: {e}"),
//!     Err(e) => println!("{e}"),
//! }
//! # Ok::<(), DnsError>(())
//! ```
//!
//! Results follow Postfix's `dns_lookup()` classes: `Ok(records)` (possibly empty when the
//! name exists without records of the type, "no data"), [`DnsError::NotFound`] for
//! NXDOMAIN, and temporary errors (timeouts, SERVFAIL, unreachable servers) for which the
//! caller defers. Names are returned without the trailing dot. CNAME chains are followed by
//! the recursive server; this resolver keeps the answer records of the asked type.
//!
//! Architecture Invariant: no caching, no logging, no configuration files beyond
//! `resolv.conf`; callers that must not block (smtpd's event loop) run lookups on a helper
//! thread.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// Why a lookup has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN): a permanent answer.
    NotFound,
    /// The name is not a valid domain name: permanent.
    BadName(String),
    /// No server answered in time, a server failed (SERVFAIL, REFUSED) or the network is
    /// down: try again later.
    Temporary(String),
    /// A server answered with something that is not a DNS reply for our question.
    Malformed(String),
}

impl DnsError {
    /// True when the caller should defer rather than decide.
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::Temporary(_) | DnsError::Malformed(_))
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NotFound => f.write_str("Host not found"),
            DnsError::BadName(n) => write!(f, "invalid domain name: {n}"),
            DnsError::Temporary(why) => write!(f, "Host not found, try again: {why}"),
            DnsError::Malformed(why) => write!(f, "Malformed DNS server reply: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mx {
    pub preference: u16,
    /// The exchange host name, lower-cased, without the trailing dot.
    pub exchange: String,
}

/// The answer records of one query, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx(Mx),
    /// The character strings of one TXT record, concatenated.
    Txt(String),
    Ptr(String),
    /// A name server host name, lower-cased, without the trailing dot.
    Ns(String),
}

/// The default time one server gets to answer one try.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default number of rounds over the server list.
pub const DEFAULT_ATTEMPTS: u32 = 2;

/// A blocking stub resolver. Cheap to clone; safe to share between threads.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
    /// `/etc/hosts` entries, consulted before DNS for A, AAAA and PTR as the system
    /// resolver does ("files dns"); empty for a resolver pointed at explicit servers.
    hosts: Vec<(IpAddr, Vec<String>)>,
}

/// Parses hosts(5) text: address, canonical name, aliases; `#` comments.
pub fn parse_hosts(text: &str) -> Vec<(IpAddr, Vec<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        let names: Vec<String> = words
            .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        if !names.is_empty() {
            out.push((ip, names));
        }
    }
    out
}

static NEXT_ID: AtomicU16 = AtomicU16::new(0);

/// A query id that an off-path attacker cannot guess from the previous one.
fn query_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u16(NEXT_ID.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() & 0xffff) as u16
}

impl Resolver {
    /// A resolver asking `servers` in order (port 53 when a server has none).
    pub fn with_servers(servers: Vec<SocketAddr>) -> Resolver {
        Resolver {
            servers,
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            hosts: Vec::new(),
        }
    }

    /// Consults these hosts(5) entries before DNS (see [`parse_hosts`]).
    pub fn set_hosts(&mut self, hosts: Vec<(IpAddr, Vec<String>)>) -> &mut Self {
        self.hosts = hosts;
        self
    }

    /// True when /etc/hosts has a name for `ip`, so that [`Resolver::ptr`] and the
    /// forward check of that name are answered without any network traffic.
    pub fn hosts_knows(&self, ip: IpAddr) -> bool {
        self.hosts.iter().any(|(a, names)| {
            *a == ip
                && names
                    .first()
                    .is_some_and(|n| self.hosts_addresses(n).is_some())
        })
    }

    /// Addresses that /etc/hosts gives `name`, if it lists the name at all.
    fn hosts_addresses(&self, name: &str) -> Option<Vec<IpAddr>> {
        let want = name.trim_end_matches('.').to_ascii_lowercase();
        let found: Vec<IpAddr> = self
            .hosts
            .iter()
            .filter(|(_, names)| names.contains(&want))
            .map(|(ip, _)| *ip)
            .collect();
        (!found.is_empty()).then_some(found)
    }

    /// The servers, time-out and attempts of `/etc/resolv.conf` (`nameserver`,
    /// `options timeout:N attempts:N`). No server listed means `127.0.0.1`, as libc.
    pub fn system() -> Result<Resolver, DnsError> {
        let mut r = Resolver::from_resolv_conf(Path::new("/etc/resolv.conf"))?;
        // A client on 127.0.0.1 must not wait for an unreachable name server.
        if let Ok(text) = std::fs::read_to_string("/etc/hosts") {
            r.set_hosts(parse_hosts(&text));
        }
        Ok(r)
    }

    /// As [`Resolver::system`], from another file.
    pub fn from_resolv_conf(path: &Path) -> Result<Resolver, DnsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(DnsError::Temporary(format!("{}: {e}", path.display())));
            }
        };
        Ok(Resolver::parse_resolv_conf(&text))
    }

    /// Parses resolv.conf text (see [`Resolver::system`]).
    pub fn parse_resolv_conf(text: &str) -> Resolver {
        let mut r = Resolver::with_servers(Vec::new());
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| {
                        // Scoped IPv6 (fe80::1%eth0) is not supported: skip it.
                        w.parse::<IpAddr>().ok()
                    }) {
                        r.servers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("options") => {
                    for opt in words {
                        if let Some(n) = opt
                            .strip_prefix("timeout:")
                            .and_then(|n| n.parse::<u64>().ok())
                        {
                            r.timeout = Duration::from_secs(n.clamp(1, 30));
                        } else if let Some(n) = opt
                            .strip_prefix("attempts:")
                            .and_then(|n| n.parse::<u32>().ok())
                        {
                            r.attempts = u32::clamp(n, 1, 5);
                        }
                    }
                }
                _ => {}
            }
        }
        if r.servers.is_empty() {
            r.servers
                .push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
        }
        r
    }

    /// The resolver a parameter value asks for: empty means `/etc/resolv.conf`; else a
    /// list of `address`, `address:port` or `[ipv6]:port` separated by commas or spaces.
    pub fn from_param(value: &str) -> Result<Resolver, DnsError> {
        let words: Vec<&str> = value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            return Resolver::system();
        }
        let mut servers = Vec::new();
        for w in words {
            let addr = if let Ok(sa) = w.parse::<SocketAddr>() {
                sa
            } else if let Ok(ip) = w.trim_matches(['[', ']']).parse::<IpAddr>() {
                SocketAddr::new(ip, 53)
            } else {
                return Err(DnsError::BadName(format!(
                    "{w}: not an address or address:port"
                )));
            };
            servers.push(addr);
        }
        Ok(Resolver::with_servers(servers))
    }

    /// Sets how long one server gets for one try.
    pub fn set_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Sets how many rounds over the server list one query makes.
    pub fn set_attempts(&mut self, attempts: u32) -> &mut Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The servers asked, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The longest one query can take (every try timing out).
    pub fn time_limit(&self) -> Duration {
        let tries = u32::try_from(self.servers.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(self.attempts);
        self.timeout.saturating_mul(tries)
    }

    /// IPv4 addresses of `name`.
    pub fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, DnsError> {
        if let Some(ips) = self.hosts_addresses(name) {
            return Ok(ips
                .into_iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .collect());
        }
        Ok(self
            .query(name, RecordType::A)?
            .into_iter()
            .filter_map(|a| match a {
                Answer::A(ip) => Some(ip),
                _ => None,
            })
            .collect())
    }

    /// IPv6 addresses of `name`.
    pub fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, DnsError> {
        if let Some(ips) = self.hosts_addresses(name) {
            return Ok(ips
                .into_iter()
                .filter_map(|ip| match ip {
                    IpAddr::V6(v6) => Some(v6),
                    IpAddr::V4(_) => None,
                })
                .collect());
        }
        Ok(self
            .query(name, RecordType::AAAA)?
            .into_iter()
            .filter_map(|a| match a {
                Answer::Aaaa(ip) => Some(ip),
                _ => None,
            })
            .collect())
    }

    /// Every address of `name` (A then AAAA). NotFound only when both say so; a
    /// temporary failure of either is temporary unless the other found addresses.
    pub fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let v4 = self
            .a(name)
            .map(|v| v.into_iter().map(IpAddr::V4).collect::<Vec<_>>());
        let v6 = self
            .aaaa(name)
            .map(|v| v.into_iter().map(IpAddr::V6).collect::<Vec<_>>());
        match (v4, v6) {
            (Ok(mut a), Ok(b)) => {
                a.extend(b);
                Ok(a)
            }
            (Ok(a), Err(e)) | (Err(e), Ok(a)) => {
                if a.is_empty() && e != DnsError::NotFound {
                    Err(e)
                } else {
                    Ok(a)
                }
            }
            (Err(DnsError::NotFound), Err(e)) | (Err(e), Err(_)) => Err(e),
        }
    }

    /// MX records of `name`, sorted by preference (ties keep server order).
    pub fn mx(&self, name: &str) -> Result<Vec<Mx>, DnsError> {
        let mut v: Vec<Mx> = self
            .query(name, RecordType::MX)?
            .into_iter()
            .filter_map(|a| match a {
                Answer::Mx(m) => Some(m),
                _ => None,
            })
            .collect();
        v.sort_by_key(|m| m.preference);
        Ok(v)
    }

    /// NS records of `name` (name server host names, in server order). An existing name
    /// without NS records is `Ok(vec![])`, a missing one [`DnsError::NotFound`].
    pub fn ns(&self, name: &str) -> Result<Vec<String>, DnsError> {
        Ok(self
            .query(name, RecordType::NS)?
            .into_iter()
            .filter_map(|a| match a {
                Answer::Ns(n) => Some(n),
                _ => None,
            })
            .collect())
    }

    /// TXT records of `name`, each record's strings concatenated (lossy UTF-8).
    pub fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        Ok(self
            .query(name, RecordType::TXT)?
            .into_iter()
            .filter_map(|a| match a {
                Answer::Txt(t) => Some(t),
                _ => None,
            })
            .collect())
    }

    /// PTR names of an address (`in-addr.arpa` / `ip6.arpa`).
    pub fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let listed: Vec<String> = self
            .hosts
            .iter()
            .filter(|(a, _)| *a == ip)
            .flat_map(|(_, names)| names.iter().cloned())
            .collect();
        if !listed.is_empty() {
            return Ok(listed);
        }
        Ok(self
            .query(&reverse_name(ip), RecordType::PTR)?
            .into_iter()
            .filter_map(|a| match a {
                Answer::Ptr(t) => Some(t),
                _ => None,
            })
            .collect())
    }

    /// One query: the answer records of type `rtype` (in any order the server gave).
    pub fn query(&self, name: &str, rtype: RecordType) -> Result<Vec<Answer>, DnsError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let qname =
            Name::from_ascii(&fqdn).map_err(|e| DnsError::BadName(format!("{name}: {e}")))?;
        let mut last = DnsError::Temporary("no DNS server configured".into());
        for _ in 0..self.attempts {
            for server in &self.servers {
                match self.ask(*server, &qname, rtype) {
                    Ok(reply) => return answers(&reply, rtype),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    /// One try against one server: UDP, then TCP when truncated. Returns a reply whose
    /// response code is final (NoError or NXDomain); other codes are errors.
    fn ask(
        &self,
        server: SocketAddr,
        qname: &Name,
        rtype: RecordType,
    ) -> Result<Message, DnsError> {
        let id = query_id();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(qname.clone(), rtype));
        let wire = msg
            .to_vec()
            .map_err(|e| DnsError::BadName(format!("{qname}: {e}")))?;
        let reply = udp_exchange(server, &wire, id, qname, rtype, self.timeout)?;
        let reply = if reply.metadata.truncation {
            tcp_exchange(server, &wire, id, qname, rtype, self.timeout)?
        } else {
            reply
        };
        match reply.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(reply),
            other => Err(DnsError::Temporary(format!("{server}: {other}"))),
        }
    }
}

fn temp(server: SocketAddr, e: io::Error) -> DnsError {
    DnsError::Temporary(format!("{server}: {e}"))
}

/// True when `reply` answers our question (id, question section).
fn matches(reply: &Message, id: u16, qname: &Name, rtype: RecordType) -> bool {
    reply.metadata.id == id
        && reply.metadata.message_type == MessageType::Response
        && reply
            .queries
            .first()
            .is_some_and(|q| q.query_type == rtype && q.name == *qname)
}

fn udp_exchange(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
    qname: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind).map_err(|e| temp(server, e))?;
    sock.connect(server).map_err(|e| temp(server, e))?;
    sock.send(wire).map_err(|e| temp(server, e))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DnsError::Temporary(format!("{server}: timed out")));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| temp(server, e))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(DnsError::Temporary(format!("{server}: timed out")));
            }
            Err(e) => return Err(temp(server, e)),
        };
        // Anything that is not the reply to our question is ignored (spoofing, stale
        // replies); the deadline still holds.
        if let Ok(reply) = Message::from_vec(&buf[..n])
            && matches(&reply, id, qname, rtype)
        {
            return Ok(reply);
        }
    }
}

fn tcp_exchange(
    server: SocketAddr,
    wire: &[u8],
    id: u16,
    qname: &Name,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let mut s = TcpStream::connect_timeout(&server, timeout).map_err(|e| temp(server, e))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| temp(server, e))?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| temp(server, e))?;
    let len = u16::try_from(wire.len()).map_err(|_| DnsError::BadName("query too long".into()))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(wire);
    s.write_all(&framed).map_err(|e| temp(server, e))?;
    let mut lenbuf = [0u8; 2];
    s.read_exact(&mut lenbuf).map_err(|e| temp(server, e))?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lenbuf))];
    s.read_exact(&mut buf).map_err(|e| temp(server, e))?;
    let reply =
        Message::from_vec(&buf).map_err(|e| DnsError::Malformed(format!("{server}: {e}")))?;
    if !matches(&reply, id, qname, rtype) {
        return Err(DnsError::Malformed(format!(
            "{server}: reply does not match the query"
        )));
    }
    Ok(reply)
}

/// A host name as text: lower case, no trailing dot.
fn host(name: &Name) -> String {
    let s = name.to_ascii();
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// The answer records of `rtype` in a final reply.
fn answers(reply: &Message, rtype: RecordType) -> Result<Vec<Answer>, DnsError> {
    if reply.metadata.response_code == ResponseCode::NXDomain {
        return Err(DnsError::NotFound);
    }
    let mut out = Vec::new();
    for rec in &reply.answers {
        if rec.record_type() != rtype {
            continue;
        }
        let a = match &rec.data {
            RData::A(a) => Answer::A(a.0),
            RData::AAAA(a) => Answer::Aaaa(a.0),
            RData::MX(mx) => Answer::Mx(Mx {
                preference: mx.preference,
                exchange: host(&mx.exchange),
            }),
            RData::TXT(t) => Answer::Txt(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            RData::PTR(p) => Answer::Ptr(host(&p.0)),
            RData::NS(n) => Answer::Ns(host(&n.0)),
            _ => continue,
        };
        out.push(a);
    }
    Ok(out)
}

/// The reverse-lookup name of an address: `4.3.2.1.in-addr.arpa` or the 32 nibbles of
/// `ip6.arpa`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The DNSBL query prefix of an address: `2.0.0.127` or the reversed nibbles of IPv6
/// (without the trailing dot), as Postfix builds `reject_rbl_client` queries.
pub fn dnsbl_prefix(ip: IpAddr) -> String {
    let r = reverse_name(ip);
    r.trim_end_matches(".in-addr.arpa")
        .trim_end_matches(".ip6.arpa")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_answers_before_dns() {
        // An unroutable server: a query would time out, so answers must come from hosts.
        let mut r = Resolver::with_servers(vec!["192.0.2.1:53".parse().expect("addr")]);
        r.set_timeout(Duration::from_millis(50)).set_attempts(1);
        r.set_hosts(parse_hosts(
            "127.0.0.1 localhost # loop\n::1 localhost ip6-localhost\n10.1.2.3 Mx.Example.test mx\n",
        ));
        assert_eq!(
            r.ptr("127.0.0.1".parse().expect("ip")),
            Ok(vec!["localhost".to_string()])
        );
        assert_eq!(r.a("LOCALHOST."), Ok(vec![Ipv4Addr::LOCALHOST]));
        assert_eq!(r.aaaa("localhost"), Ok(vec![Ipv6Addr::LOCALHOST]));
        assert_eq!(r.a("mx"), Ok(vec![Ipv4Addr::new(10, 1, 2, 3)]));
    }

    #[test]
    fn resolv_conf() {
        let r = Resolver::parse_resolv_conf(
            "# c\nnameserver 10.0.0.1\nnameserver ::1 # x\nsearch a b\noptions timeout:1 attempts:3\n",
        );
        assert_eq!(r.servers().len(), 2);
        assert_eq!(r.timeout, Duration::from_secs(1));
        assert_eq!(r.attempts, 3);
        assert_eq!(r.time_limit(), Duration::from_secs(6));
        let d = Resolver::parse_resolv_conf("");
        assert_eq!(d.servers()[0].to_string(), "127.0.0.1:53");
    }

    #[test]
    fn params() {
        let r = Resolver::from_param("127.0.0.1:5353, [::1]:53 10.1.1.1").ok();
        let s: Vec<String> = r
            .map(|r| r.servers().iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        assert_eq!(s, vec!["127.0.0.1:5353", "[::1]:53", "10.1.1.1:53"]);
        assert!(Resolver::from_param("nonsense").is_err());
    }

    #[test]
    fn reverse_names() {
        let v4: IpAddr = Ipv4Addr::new(127, 0, 0, 2).into();
        assert_eq!(reverse_name(v4), "2.0.0.127.in-addr.arpa");
        assert_eq!(dnsbl_prefix(v4), "2.0.0.127");
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(v4);
        assert!(reverse_name(v6).starts_with("1.0.0.0.0.0.0.0"));
        assert!(reverse_name(v6).ends_with("8.b.d.0.1.0.0.2.ip6.arpa"));
    }

    #[test]
    fn unanswered_server_times_out_within_limit() {
        // A bound UDP socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").ok();
        let Some(addr) = silent.as_ref().and_then(|s| s.local_addr().ok()) else {
            return;
        };
        let mut r = Resolver::with_servers(vec![addr]);
        r.set_timeout(Duration::from_millis(100)).set_attempts(2);
        let t = Instant::now();
        let e = r.a("example.test");
        assert!(matches!(e, Err(DnsError::Temporary(_))));
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}

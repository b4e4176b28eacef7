//! Restrictions that look at a name's DNS servers (Postfix's `check_server_access` and
//! `permit_mx_backup`): `check_{client,helo,sender,recipient}_{mx,ns,a}_access` search an
//! access table for the MX hosts, the name servers, or the addresses of a host name or an
//! address's domain, then for the addresses of each MX/NS host; `permit_mx_backup`
//! permits a recipient whose domain lists this host as a backup (not primary) MX.
//!
//! As Postfix: a domain without MX records is its own MX host; a name without NS records
//! takes its parent domain's; an address literal is its own MX host (and has no NS); a DNS
//! failure is a warning and no opinion (`DUNNO`); a table answer of `OK` is refused
//! (`451 4.3.5`), since the name servers of a domain are not the client's to choose.
//! `permit_mx_backup` permits what `permit_auth_destination` permits, and otherwise
//! only when some backup MX host (but no primary) is this host and, with
//! `permit_mx_backup_networks` set, a primary MX host's address is in those networks; a
//! temporary DNS failure is a `defer_if_reject` (`450 4.4.4`).

use std::net::{IpAddr, UdpSocket};

use oxipost_dns::{DnsError, Mx};

use super::{
    AddrClass, CLIENT, ErrClass, Eval, HELO, RECIPIENT, REV_CLIENT, SENDER, Status, valid_hostname,
};

/// Which servers of a name to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Mx,
    Ns,
    /// The name's own addresses (`check_*_a_access`).
    A,
}

impl ServerKind {
    fn label(self) -> &'static str {
        match self {
            ServerKind::Mx => "MX",
            ServerKind::Ns => "NS",
            ServerKind::A => "A",
        }
    }
}

/// Whether `name` is one of [`SERVER_ACCESS`].
pub fn is_server_access(name: &str) -> bool {
    SERVER_ACCESS.iter().any(|(n, _, _)| *n == name)
}

/// The restriction names of this module: (name, kind, whose name it checks).
pub const SERVER_ACCESS: &[(&str, ServerKind, Whose)] = &[
    ("check_client_mx_access", ServerKind::Mx, Whose::Client),
    ("check_client_ns_access", ServerKind::Ns, Whose::Client),
    ("check_client_a_access", ServerKind::A, Whose::Client),
    (
        "check_reverse_client_mx_access",
        ServerKind::Mx,
        Whose::ReverseClient,
    ),
    (
        "check_reverse_client_ns_access",
        ServerKind::Ns,
        Whose::ReverseClient,
    ),
    (
        "check_reverse_client_a_access",
        ServerKind::A,
        Whose::ReverseClient,
    ),
    ("check_helo_mx_access", ServerKind::Mx, Whose::Helo),
    ("check_helo_ns_access", ServerKind::Ns, Whose::Helo),
    ("check_helo_a_access", ServerKind::A, Whose::Helo),
    ("check_sender_mx_access", ServerKind::Mx, Whose::Sender),
    ("check_sender_ns_access", ServerKind::Ns, Whose::Sender),
    ("check_sender_a_access", ServerKind::A, Whose::Sender),
    (
        "check_recipient_mx_access",
        ServerKind::Mx,
        Whose::Recipient,
    ),
    (
        "check_recipient_ns_access",
        ServerKind::Ns,
        Whose::Recipient,
    ),
    ("check_recipient_a_access", ServerKind::A, Whose::Recipient),
];

/// Whose name a server check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    Client,
    ReverseClient,
    Helo,
    Sender,
    Recipient,
}

/// The addresses this host receives mail on (`inet_interfaces`, `proxy_interfaces`), for
/// "is this MX host me".
#[derive(Debug, Clone, Default)]
pub struct OwnAddresses {
    /// `inet_interfaces = all`: any address of a local interface.
    pub all: bool,
    pub loopback: bool,
    pub listed: Vec<IpAddr>,
}

impl OwnAddresses {
    /// From `inet_interfaces` and `proxy_interfaces` values (host names other than
    /// `localhost` are not resolved: give addresses).
    pub fn parse(inet_interfaces: &str, proxy_interfaces: &str) -> OwnAddresses {
        let mut own = OwnAddresses::default();
        for w in oxipost_maps::split_list(inet_interfaces)
            .into_iter()
            .chain(oxipost_maps::split_list(proxy_interfaces))
        {
            let w = w.trim_start_matches('[').trim_end_matches(']');
            match w.to_ascii_lowercase().as_str() {
                "all" => own.all = true,
                "loopback-only" | "localhost" => own.loopback = true,
                other => {
                    if let Ok(ip) = other.parse::<IpAddr>() {
                        own.listed.push(ip);
                    } else {
                        oxipost_log::warning!(
                            "permit_mx_backup: cannot use interface name {other:?}: give an address"
                        );
                    }
                }
            }
        }
        own
    }

    /// True when `ip` is one of ours. With `all`, an address is ours when a socket can be
    /// bound to it: only addresses of local interfaces can be (nothing is sent).
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.listed.contains(&ip) || (self.loopback && ip.is_loopback()) {
            return true;
        }
        self.all && (ip.is_loopback() || UdpSocket::bind((ip, 0)).is_ok())
    }
}

impl Eval<'_> {
    /// `check_*_{mx,ns,a}_access` (Postfix's `check_server_access`).
    pub(super) fn check_server_restriction(
        &mut self,
        name: &str,
        table: &str,
        def_acl: Option<&str>,
    ) -> Status {
        let Some(&(_, kind, whose)) = SERVER_ACCESS.iter().find(|(n, _, _)| *n == name) else {
            return Status::Dunno;
        };
        let cx = self.cx;
        let (target, reply_name) = match whose {
            Whose::Client => (cx.name.clone(), cx.namaddr()),
            Whose::ReverseClient => (cx.reverse_name.clone(), cx.reverse_name.clone()),
            Whose::Helo => match cx.helo.clone() {
                Some(h) => (h.clone(), h),
                None => return Status::Dunno,
            },
            Whose::Sender => match self.sender.clone() {
                Some(s) if !s.is_empty() => (s.clone(), s),
                _ => return Status::Dunno,
            },
            Whose::Recipient => match self.recipient.clone() {
                Some(r) => (r.clone(), r),
                None => return Status::Dunno,
            },
        };
        let class = match whose {
            Whose::Client => CLIENT,
            Whose::ReverseClient => REV_CLIENT,
            Whose::Helo => HELO,
            Whose::Sender => SENDER,
            Whose::Recipient => RECIPIENT,
        };
        let status = self.check_server_access(table, &target, kind, &reply_name, class, def_acl);
        self.forbid_allowlist(name, status, &target)
    }

    fn check_server_access(
        &mut self,
        table: &str,
        name: &str,
        kind: ServerKind,
        reply_name: &str,
        reply_class: &str,
        def_acl: Option<&str>,
    ) -> Status {
        let domain = name.rsplit_once('@').map_or(name, |(_, d)| d);
        let domain = domain.trim_end_matches('.');
        // An address literal is its own MX (and A) host; it has no name server.
        if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            if kind == ServerKind::Ns {
                return Status::Dunno;
            }
            let lit = lit.strip_prefix("IPv6:").unwrap_or(lit);
            return self
                .check_addr_access(table, lit, reply_name, reply_class, def_acl)
                .0;
        }
        if domain.is_empty() {
            return Status::Dunno;
        }
        let Some(res) = self.r.resolver.clone() else {
            return Status::Dunno;
        };
        let lookup_failed = |e: &DnsError, what: &str| {
            oxipost_log::warning!("Unable to look up {} host for {what}: {e}", kind.label());
        };
        if kind == ServerKind::A {
            let addrs = match res.addresses(domain) {
                Ok(a) => a,
                Err(e) => {
                    lookup_failed(&e, domain);
                    return Status::Dunno;
                }
            };
            for ip in addrs {
                let (st, found) = self.check_addr_access(
                    table,
                    &ip.to_string(),
                    reply_name,
                    reply_class,
                    def_acl,
                );
                if st != Status::Dunno || found {
                    return st;
                }
            }
            return Status::Dunno;
        }
        let servers: Vec<String> = if kind == ServerKind::Mx {
            match res.mx(domain) {
                Ok(v) if v.is_empty() => vec![domain.to_ascii_lowercase()],
                Ok(v) => v.into_iter().map(|m| m.exchange).collect(),
                Err(e) => {
                    lookup_failed(&e, domain);
                    return Status::Dunno;
                }
            }
        } else {
            // No NS records (but the name exists): the parent domain's.
            let mut d = domain;
            loop {
                match res.ns(d) {
                    Ok(v) if v.is_empty() => match d.split_once('.') {
                        Some((_, parent)) if !parent.is_empty() => d = parent,
                        _ => {
                            oxipost_log::warning!(
                                "Unable to look up NS host for {domain}: No address associated with hostname"
                            );
                            return Status::Dunno;
                        }
                    },
                    Ok(v) => break v,
                    Err(e) => {
                        lookup_failed(&e, d);
                        return Status::Dunno;
                    }
                }
            }
        };
        for server in servers {
            // A null MX (".") and junk names are skipped.
            if !valid_hostname(&server) {
                if !server.is_empty() {
                    oxipost_log::warning!("Bad {} host name {server:?} for {domain}", kind.label());
                }
                continue;
            }
            let (st, found) =
                self.check_domain_access(table, &server, reply_name, reply_class, def_acl);
            if st != Status::Dunno || found {
                return st;
            }
            let addrs = match res.addresses(&server) {
                Ok(a) => a,
                Err(e) => {
                    oxipost_log::warning!(
                        "Unable to look up {} host {server} for {reply_class} {reply_name}: {e}",
                        kind.label()
                    );
                    continue;
                }
            };
            for ip in addrs {
                let (st, found) = self.check_addr_access(
                    table,
                    &ip.to_string(),
                    reply_name,
                    reply_class,
                    def_acl,
                );
                if st != Status::Dunno || found {
                    return st;
                }
            }
        }
        Status::Dunno
    }

    /// `permit_mx_backup` (see the module documentation).
    pub(super) fn permit_mx_backup(
        &mut self,
        rcpt: &str,
        reply_name: &str,
        reply_class: &str,
    ) -> Status {
        let res = self.r.resolve(rcpt);
        if !res.address.contains('@') {
            return Status::Ok;
        }
        if !self.r.allow_untrusted_routing && res.routed {
            return Status::Dunno;
        }
        if res.class != AddrClass::Default {
            return Status::Ok;
        }
        let domain = res.domain.clone();
        if domain.starts_with('[') {
            return Status::Dunno;
        }
        let Some(resolver) = self.r.resolver.clone() else {
            return Status::Dunno;
        };
        let mut mx: Vec<Mx> = match resolver.mx(&domain) {
            Ok(v) if v.is_empty() => return Status::Dunno,
            Ok(v) => v,
            Err(DnsError::NotFound) | Err(DnsError::BadName(_)) => return Status::Dunno,
            Err(e) => {
                Self::defer_if(
                    &mut self.defer_if_reject,
                    ErrClass::Policy,
                    450,
                    "4.4.4",
                    format!(
                        "<{reply_name}>: {reply_class} rejected: Unable to look up mail exchanger information: {e}"
                    ),
                );
                return Status::Dunno;
            }
        };
        mx.sort_by_key(|m| m.preference);
        let best = mx[0].preference;
        let (primaries, backups): (Vec<Mx>, Vec<Mx>) =
            mx.into_iter().partition(|m| m.preference == best);
        // Postfix 2.3: never when this host is a primary MX.
        match self.i_am_mx(&primaries, reply_name, reply_class) {
            Some(true) | None => return Status::Dunno,
            Some(false) => {}
        }
        if backups.is_empty() {
            return Status::Dunno;
        }
        match self.i_am_mx(&backups, reply_name, reply_class) {
            Some(true) => {}
            Some(false) | None => return Status::Dunno,
        }
        if !self.r.mx_backup_networks_set {
            return Status::Ok;
        }
        // permit_mx_backup_networks: a primary MX host must be in those networks.
        for m in &primaries {
            let Ok(addrs) = resolver.addresses(&m.exchange) else {
                continue;
            };
            for ip in addrs {
                if self.r.mx_backup_networks.contains_ip(ip) {
                    return Status::Ok;
                }
            }
        }
        Status::Dunno
    }

    /// Whether any of these MX hosts is this host: `Some(true)` or `Some(false)`, `None`
    /// after a temporary lookup failure (remembered as a `defer_if_reject`).
    fn i_am_mx(&mut self, hosts: &[Mx], reply_name: &str, reply_class: &str) -> Option<bool> {
        let resolver = self.r.resolver.clone()?;
        let mut failed = false;
        for m in hosts {
            if m.exchange.eq_ignore_ascii_case(&self.r.myhostname) {
                return Some(true);
            }
            match resolver.addresses(&m.exchange) {
                Ok(addrs) => {
                    if addrs
                        .into_iter()
                        .any(|ip| self.r.own_addresses.contains(ip))
                    {
                        return Some(true);
                    }
                }
                Err(DnsError::NotFound) | Err(DnsError::BadName(_)) => {}
                Err(e) => {
                    failed = true;
                    Self::defer_if(
                        &mut self.defer_if_reject,
                        ErrClass::Policy,
                        450,
                        "4.4.4",
                        format!(
                            "<{reply_name}>: {reply_class} rejected: Unable to look up host {} as mail exchanger: {e}",
                            m.exchange
                        ),
                    );
                }
            }
        }
        if failed { None } else { Some(false) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses() {
        let o = OwnAddresses::parse("127.0.0.1, [::1]", "192.0.2.7");
        assert!(o.contains("127.0.0.1".parse().expect("ip")));
        assert!(o.contains("192.0.2.7".parse().expect("ip")));
        assert!(!o.contains("127.0.0.2".parse().expect("ip")));
        let lo = OwnAddresses::parse("loopback-only", "");
        assert!(lo.contains("127.0.0.5".parse().expect("ip")));
        let all = OwnAddresses::parse("all", "");
        assert!(all.contains("127.0.0.1".parse().expect("ip")));
        // Documentation range: not a local interface address.
        assert!(!all.contains("198.51.100.77".parse().expect("ip")));
    }
}

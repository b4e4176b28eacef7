//! Which transport and next hop a recipient goes to, as Postfix's trivial-rewrite resolves
//! it: local (`mydestination`), virtual (`virtual_mailbox_domains`), relay
//! (`relay_domains`), or the default transport (`relayhost` or the domain itself).
//! transport_maps will come with the lookup tables.

use crate::settings::Settings;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub transport: String,
    pub nexthop: String,
}

/// Splits `transport:nexthop` (the nexthop may be empty).
fn split_transport(spec: &str, default_nexthop: &str) -> Route {
    match spec.split_once(':') {
        Some((t, n)) if !n.is_empty() => Route {
            transport: t.to_string(),
            nexthop: n.to_string(),
        },
        Some((t, _)) => Route {
            transport: t.to_string(),
            nexthop: default_nexthop.to_string(),
        },
        None => Route {
            transport: spec.to_string(),
            nexthop: default_nexthop.to_string(),
        },
    }
}

pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

pub fn resolve(s: &Settings, address: &str) -> Route {
    let domain = domain_of(address)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let is_local = domain.is_empty() || s.mydestination.contains(&domain) || domain == s.myhostname;
    if is_local {
        return split_transport(&s.local_transport, &s.myhostname);
    }
    if s.virtual_mailbox_domains.contains(&domain) {
        return split_transport(&s.virtual_transport, &domain);
    }
    let nexthop = if s.relayhost.is_empty() {
        domain.clone()
    } else {
        s.relayhost.clone()
    };
    if s.relay_domains.contains(&domain) {
        return split_transport(&s.relay_transport, &nexthop);
    }
    split_transport(&s.default_transport, &nexthop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_specs() {
        assert_eq!(
            split_transport("local:$x", "h"),
            Route {
                transport: "local".into(),
                nexthop: "$x".into()
            }
        );
        assert_eq!(split_transport("smtp", "d").nexthop, "d");
        assert_eq!(split_transport("relay:", "d").nexthop, "d");
        assert_eq!(domain_of("a@b.c"), "b.c");
        assert_eq!(domain_of("postmaster"), "");
    }
}

//! Which transport and next hop a recipient goes to, as Postfix's trivial-rewrite resolves
//! it. First the address class of the domain ([`oxipost_cleanup::AddressClasses`], shared
//! with smtpd and cleanup): local (`mydestination`, `myhostname`) → `local_transport`;
//! virtual alias domain (an address cleanup did not expand) → `error:5.1.1 User unknown in
//! virtual alias table`; virtual mailbox domain → `virtual_transport`; relay domain →
//! `relay_transport`; anything else → `default_transport`, with `relayhost` as next hop
//! when set.
//!
//! Then `transport_maps` may override the result, looked up as transport(5) says: the full
//! address (every table, patterns included), the address without its extension, the
//! domain, each parent domain as `.parent` (or as `parent` when
//! `parent_domain_matches_subdomains` names `transport_maps`), then `*` — partial keys in
//! exact-key tables only. A value is `transport:nexthop`; an empty transport keeps the
//! class's, an empty next hop becomes the recipient domain (nothing for `error`/`retry`).
//! A table that cannot answer sends the recipient to `retry:4.3.0 transport_maps lookup
//! failure`, so it is deferred and tried again, never misrouted.

use oxipost_cleanup::AddressClass;
use oxipost_maps::{MapError, MatchKind};

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

/// The address a recipient is delivered to, and its DSN original recipient, when the
/// message carries an access-table `REDIRECT user@domain` (the `redirect` attribute):
/// as Postfix's qmgr, every recipient is replaced by the redirect address, and the
/// original recipient travels as `ORCPT` (so agents log it as `orig_to=`).
pub fn redirected(
    address: &str,
    orcpt: Option<&str>,
    redirect: Option<&str>,
) -> (String, Option<String>) {
    match redirect.map(str::trim).filter(|r| r.contains('@')) {
        Some(r) => {
            let orcpt = orcpt
                .map(str::to_string)
                .unwrap_or_else(|| format!("rfc822;{}", xtext(address)));
            (r.to_string(), Some(orcpt))
        }
        None => (address.to_string(), orcpt.map(str::to_string)),
    }
}

/// RFC 3461 xtext: `+`, `=`, controls and non-ASCII as `+XX`.
fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// The route of a recipient (see the module documentation).
pub fn resolve(s: &Settings, address: &str) -> Route {
    let domain = domain_of(address)
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let route = match class_route(s, &domain) {
        Ok(r) => r,
        Err(e) => return lookup_failure(address, "address class", &e),
    };
    match transport_lookup(s, address, &domain) {
        Ok(Some(value)) => apply_transport(route, &value, &domain),
        Ok(None) => route,
        Err(e) => lookup_failure(address, "transport_maps", &e),
    }
}

/// The route of a recipient of a message that carries `filter` attributes (`content_filter`
/// or an access-table `FILTER`, recorded at receive time): the last one wins and sends every
/// recipient to that transport, as Postfix's qmgr does, bypassing normal routing. Its next
/// hop is the `[host]:port` after the first `:`; empty, the recipient's domain. A malformed
/// value (no transport) is logged and ignored.
pub fn resolve_filtered(s: &Settings, address: &str, filter: Option<&str>) -> Route {
    if let Some(f) = filter.map(str::trim).filter(|f| !f.is_empty()) {
        if f.starts_with(':') {
            oxipost_log::warning!("ignoring bad content filter \"{f}\" for {address}");
        } else {
            let domain = domain_of(address)
                .trim_end_matches('.')
                .to_ascii_lowercase();
            return split_transport(f, &domain);
        }
    }
    resolve(s, address)
}

/// A table that could not answer: defer through the `retry` service.
fn lookup_failure(address: &str, what: &str, e: &MapError) -> Route {
    oxipost_log::warning!("{what} lookup for {address}: {}", e.message);
    Route {
        transport: "retry".into(),
        nexthop: format!("4.3.0 {what} lookup failure"),
    }
}

/// The route by address class alone.
fn class_route(s: &Settings, domain: &str) -> Result<Route, MapError> {
    if domain.is_empty() || domain == s.myhostname {
        return Ok(split_transport(&s.local_transport, &s.myhostname));
    }
    let nexthop = if s.relayhost.is_empty() {
        domain.to_string()
    } else {
        s.relayhost.clone()
    };
    Ok(match s.classes.classify(domain)? {
        AddressClass::Local => split_transport(&s.local_transport, &s.myhostname),
        AddressClass::VirtualAlias => Route {
            transport: "error".into(),
            nexthop: "5.1.1 User unknown in virtual alias table".into(),
        },
        AddressClass::VirtualMailbox => split_transport(&s.virtual_transport, domain),
        AddressClass::Relay => split_transport(&s.relay_transport, &nexthop),
        AddressClass::Default => split_transport(&s.default_transport, &nexthop),
    })
}

/// The `transport_maps` value for an address, in transport(5)'s order.
fn transport_lookup(s: &Settings, address: &str, domain: &str) -> Result<Option<String>, MapError> {
    let maps = &s.transport_maps;
    if maps.is_empty() {
        return Ok(None);
    }
    if let Some(v) = maps.lookup(address)? {
        return Ok(Some(v));
    }
    let partial = Some(MatchKind::Fixed);
    if let Some((local, dom)) = address.rsplit_once('@')
        && !s.recipient_delimiter.is_empty()
        && let Some(i) = local.find(|c: char| s.recipient_delimiter.contains(c))
        && i > 0
        && let Some(v) = maps.lookup_kind(&format!("{}@{dom}", &local[..i]), partial)?
    {
        return Ok(Some(v));
    }
    if !domain.is_empty() {
        if let Some(v) = maps.lookup_kind(domain, partial)? {
            return Ok(Some(v));
        }
        let mut rest = domain;
        while let Some(i) = rest.find('.') {
            let parent = &rest[i..];
            let key = if s.transport_parent_matches {
                &parent[1..]
            } else {
                parent
            };
            if !key.is_empty()
                && let Some(v) = maps.lookup_kind(key, partial)?
            {
                return Ok(Some(v));
            }
            rest = &rest[i + 1..];
        }
    }
    maps.lookup_kind("*", partial)
}

/// Applies a `transport:nexthop` table value to the class's route (Postfix's
/// `update_entry`).
fn apply_transport(route: Route, value: &str, domain: &str) -> Route {
    let value = value.trim();
    let (t, n) = match value.split_once(':') {
        Some((t, n)) => (t.trim(), n.trim()),
        None => (value, ""),
    };
    if t.is_empty() {
        return Route {
            nexthop: if n.is_empty() {
                route.nexthop
            } else {
                n.to_string()
            },
            transport: route.transport,
        };
    }
    let nexthop = if !n.is_empty() {
        n.to_string()
    } else if t == "error" || t == "retry" {
        String::new()
    } else {
        domain.to_string()
    };
    Route {
        transport: t.to_string(),
        nexthop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_replaces_recipients() {
        assert_eq!(
            redirected("a+x@example.com", None, Some("r@example.org")),
            (
                "r@example.org".into(),
                Some("rfc822;a+2Bx@example.com".into())
            )
        );
        assert_eq!(
            redirected("a@example.com", Some("rfc822;o@x"), Some("r@example.org")).1,
            Some("rfc822;o@x".into())
        );
        assert_eq!(
            redirected("a@example.com", None, None),
            ("a@example.com".into(), None)
        );
    }

    #[test]
    fn content_filter_overrides_routing() {
        let s = crate::settings::tests::settings("mydestination = example.com\n");
        let r = resolve_filtered(&s, "joe@example.com", Some("smtp-amavis:[127.0.0.1]:10024"));
        assert_eq!(
            (r.transport.as_str(), r.nexthop.as_str()),
            ("smtp-amavis", "[127.0.0.1]:10024")
        );
        let r = resolve_filtered(&s, "joe@Other.Example", Some("myfilter:"));
        assert_eq!(
            (r.transport.as_str(), r.nexthop.as_str()),
            ("myfilter", "other.example")
        );
        let plain = resolve(&s, "joe@example.com");
        assert_eq!(resolve_filtered(&s, "joe@example.com", None), plain);
        assert_eq!(resolve_filtered(&s, "joe@example.com", Some(":x")), plain);
    }

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

    #[test]
    fn table_values() {
        let r = || Route {
            transport: "smtp".into(),
            nexthop: "relay.example".into(),
        };
        let t = |tr: &str, n: &str| Route {
            transport: tr.into(),
            nexthop: n.into(),
        };
        assert_eq!(
            apply_transport(r(), "discard:", "d.example"),
            t("discard", "d.example")
        );
        assert_eq!(
            apply_transport(r(), "error:5.1.1 go away", "d.example"),
            t("error", "5.1.1 go away")
        );
        assert_eq!(apply_transport(r(), "error", "d.example"), t("error", ""));
        assert_eq!(
            apply_transport(r(), ":[gw.example]", "d"),
            t("smtp", "[gw.example]")
        );
        assert_eq!(apply_transport(r(), "relay", "d"), t("relay", "d"));
    }

    #[test]
    fn lookup_order() {
        let mut s = crate::settings::tests::settings(
            "transport_maps = inline:{ {a+x@d.example=t1:}, b@d.example=t2:, d.example=t3:, .sub.example=t4:, *=t5: }\n\
             recipient_delimiter = +\nmydestination = localhost\n",
        );
        let tr = |s: &Settings, a: &str| resolve(s, a).transport;
        assert_eq!(tr(&s, "a+x@d.example"), "t1");
        assert_eq!(tr(&s, "b+y@d.example"), "t2");
        assert_eq!(tr(&s, "c@d.example"), "t3");
        assert_eq!(tr(&s, "c@x.sub.example"), "t4");
        assert_eq!(tr(&s, "c@sub.example"), "t5");
        assert_eq!(tr(&s, "c@other.example"), "t5");
        s.transport_maps = std::sync::Arc::new(
            oxipost_maps::Maps::open("fail:x", &oxipost_maps::MapConfig::default()).expect("fail"),
        );
        assert_eq!(tr(&s, "c@other.example"), "retry");
    }
}

//! Host and domain lists as Postfix's `namadr_list`/`domain_list` read them:
//! `mynetworks` (`192.0.2.0/24`, `[2001:db8::]/32`, `!192.0.2.7`, `/file/name`,
//! `type:table` keyed by address or host name, host names and `.domain` patterns) and the
//! domain lists (`mydestination`, `relay_domains`, `virtual_*_domains`).

use std::net::IpAddr;
use std::sync::Arc;

use oxipost_maps::{MapConfig, Maps};

use crate::policy::Cidr;

/// One list entry.
#[derive(Debug, Clone)]
enum Entry {
    Net(Cidr),
    /// A host name or `.domain` pattern.
    Name(String),
    Table(Arc<Maps>),
    /// A table that could not be opened: matching fails (temporary).
    Broken(String),
}

/// `mynetworks`.
#[derive(Debug, Clone, Default)]
pub struct NetList {
    entries: Vec<(bool, Entry)>,
}

/// Splits a list on commas and white space, expanding `/file` entries (their words).
fn words(value: &str, depth: usize) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for w in oxipost_maps::split_list(value) {
        let bare = w.strip_prefix('!').unwrap_or(&w);
        if bare.starts_with('/') && depth < 5 {
            let text = std::fs::read_to_string(bare).map_err(|e| format!("{bare}: {e}"))?;
            let inner: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join(" ");
            let neg = w.starts_with('!');
            for i in words(&inner, depth + 1)? {
                out.push(if neg { format!("!{i}") } else { i });
            }
        } else {
            out.push(w);
        }
    }
    Ok(out)
}

fn looks_like_net(s: &str) -> bool {
    let a = s.split('/').next().unwrap_or(s);
    let a = a.trim_start_matches('[').trim_end_matches(']');
    a.parse::<IpAddr>().is_ok()
}

impl NetList {
    /// Parses a `mynetworks` value.
    pub fn parse(value: &str) -> Result<NetList, String> {
        let mut entries = Vec::new();
        for w in words(value, 0)? {
            let (neg, bare) = match w.strip_prefix('!') {
                Some(b) => (true, b.to_string()),
                None => (false, w.clone()),
            };
            let e = if looks_like_net(&bare) {
                Entry::Net(Cidr::parse(&bare)?)
            } else if bare.contains(':') || bare.starts_with('{') {
                match Maps::open(&bare, &MapConfig::default()) {
                    Ok(m) => Entry::Table(Arc::new(m)),
                    Err(e) => {
                        oxipost_log::warning!("{bare} is unavailable: {e}");
                        Entry::Broken(e.to_string())
                    }
                }
            } else {
                Entry::Name(bare.to_ascii_lowercase())
            };
            entries.push((!neg, e));
        }
        Ok(NetList { entries })
    }

    /// Whether the client matches; `Err` when a table could not answer.
    pub fn matches(&self, ip: Option<IpAddr>, name: &str, addr: &str) -> Result<bool, String> {
        let name = name.to_ascii_lowercase();
        for (positive, e) in &self.entries {
            let hit = match e {
                Entry::Net(c) => ip.is_some_and(|ip| c.contains(ip)),
                Entry::Name(pat) => name_matches(pat, &name, true),
                Entry::Table(m) => {
                    let mut hit = m.lookup(addr).map_err(|e| e.to_string())?.is_some();
                    if !hit && name != "unknown" {
                        for key in parents(&name) {
                            if m.lookup(&key).map_err(|e| e.to_string())?.is_some() {
                                hit = true;
                                break;
                            }
                        }
                    }
                    hit
                }
                Entry::Broken(why) => return Err(why.clone()),
            };
            if hit {
                return Ok(*positive);
            }
        }
        Ok(false)
    }

    /// True for an address in a plain network entry (no table, no name): the fast check
    /// used for connection limits.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        self.matches(Some(ip), "unknown", &ip.to_string())
            .unwrap_or(false)
    }
}

/// A name and its parent domains (parent style).
fn parents(name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    let mut rest = name;
    while let Some(i) = rest.find('.') {
        rest = &rest[i + 1..];
        if rest.is_empty() {
            break;
        }
        out.push(rest.to_string());
    }
    out
}

/// `pattern` matches `name` exactly, or as a parent domain (`.example.com` always;
/// `example.com` with parent-style matching).
fn name_matches(pattern: &str, name: &str, parent_style: bool) -> bool {
    if let Some(suffix) = pattern.strip_prefix('.') {
        return name.len() > suffix.len()
            && name.ends_with(suffix)
            && name.as_bytes()[name.len() - suffix.len() - 1] == b'.';
    }
    name == pattern
        || (parent_style
            && name.len() > pattern.len()
            && name.ends_with(pattern)
            && name.as_bytes()[name.len() - pattern.len() - 1] == b'.')
}

/// A domain list (`mydestination`, `relay_domains`, ...).
#[derive(Debug, Clone, Default)]
pub struct DomainList {
    entries: Vec<(bool, Entry)>,
    parent_style: bool,
}

impl DomainList {
    /// Parses a list value; `parent_style` when the parameter is in
    /// `parent_domain_matches_subdomains` (relay_domains by default). A `/file` that cannot
    /// be read is skipped with a warning.
    pub fn parse(value: &str, parent_style: bool) -> DomainList {
        let ws = match words(value, 0) {
            Ok(w) => w,
            Err(e) => {
                oxipost_log::warning!("{e}");
                oxipost_maps::split_list(value)
            }
        };
        let mut entries = Vec::new();
        for w in ws {
            let (neg, bare) = match w.strip_prefix('!') {
                Some(b) => (true, b.to_string()),
                None => (false, w.clone()),
            };
            let e = if bare.contains(':') || bare.starts_with('{') {
                match Maps::open(&bare, &MapConfig::default()) {
                    Ok(m) => Entry::Table(Arc::new(m)),
                    Err(e) => {
                        oxipost_log::warning!("{bare} is unavailable: {e}");
                        Entry::Broken(e.to_string())
                    }
                }
            } else {
                let d = bare.trim_end_matches('.').to_ascii_lowercase();
                if d.is_empty() {
                    continue;
                }
                Entry::Name(d)
            };
            entries.push((!neg, e));
        }
        DomainList {
            entries,
            parent_style,
        }
    }

    /// Whether `domain` (lower case, no trailing dot) is listed. A table that cannot
    /// answer is logged and counts as not listed.
    pub fn matches(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        for (positive, e) in &self.entries {
            let hit = match e {
                Entry::Name(p) => name_matches(p, &domain, self.parent_style),
                Entry::Table(m) => {
                    let keys = if self.parent_style {
                        parents(&domain)
                    } else {
                        vec![domain.clone()]
                    };
                    let mut hit = false;
                    for k in keys {
                        match m.lookup(&k) {
                            Ok(Some(_)) => {
                                hit = true;
                                break;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                oxipost_log::warning!("{e}");
                                break;
                            }
                        }
                    }
                    hit
                }
                Entry::Broken(_) | Entry::Net(_) => false,
            };
            if hit {
                return *positive;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn mynetworks_forms() {
        let n = NetList::parse("!192.0.2.7 192.0.2.0/24, [2001:db8::]/32 .trusted.example")
            .ok()
            .unwrap_or_default();
        assert_eq!(n.matches(ip("192.0.2.1"), "unknown", "192.0.2.1"), Ok(true));
        assert_eq!(
            n.matches(ip("192.0.2.7"), "unknown", "192.0.2.7"),
            Ok(false)
        );
        assert_eq!(
            n.matches(ip("2001:db8::5"), "unknown", "2001:db8::5"),
            Ok(true)
        );
        assert_eq!(
            n.matches(ip("10.0.0.1"), "a.trusted.example", "10.0.0.1"),
            Ok(true)
        );
        assert_eq!(n.matches(ip("10.0.0.1"), "unknown", "10.0.0.1"), Ok(false));
        let t = NetList::parse("inline:{ 10.1.2.3=ok }")
            .ok()
            .unwrap_or_default();
        assert_eq!(t.matches(ip("10.1.2.3"), "unknown", "10.1.2.3"), Ok(true));
        let b = NetList::parse("hash:/nonexistent/file")
            .ok()
            .unwrap_or_default();
        assert!(b.matches(ip("10.1.2.3"), "unknown", "10.1.2.3").is_err());
    }

    #[test]
    fn domains() {
        let d = DomainList::parse("example.com, .sub.test !no.example.org example.org", false);
        assert!(d.matches("EXAMPLE.com."));
        assert!(!d.matches("a.example.com"));
        assert!(d.matches("x.sub.test"));
        assert!(!d.matches("no.example.org"));
        let p = DomainList::parse("example.com", true);
        assert!(p.matches("a.example.com"));
        assert!(!p.matches("badexample.com"));
    }
}

//! Domain lists and address classes, as Postfix's `domain_list` and trivial-rewrite's
//! resolver see them.
//!
//! A [`DomainList`] is a parameter value such as `relay_domains = example.com,
//! .example.net, !bad.example.org, hash:/etc/oxipost/relay, /etc/oxipost/domains`: names
//! (case-insensitive, a trailing dot ignored), `.domain` for every subdomain, `!pattern`
//! to stop with "no match", `type:table` (the domain is a key of the table; the value is
//! ignored) and `/file` (one more list, read once at start). Entries are tried in order and
//! the first that matches decides. When the parameter is named in
//! `parent_domain_matches_subdomains` a plain name also matches its subdomains, and a
//! table is also asked for each parent domain.
//!
//! [`AddressClasses`] puts the four lists together in Postfix's order — local
//! (`mydestination`), virtual alias, virtual mailbox, relay — so smtpd (which recipients
//! to check at RCPT), cleanup and qmgr (where a recipient goes) classify a domain the same
//! way. A table that cannot answer is `Err`: callers answer `451 4.3.0` or defer.

use oxipost_maps::{MapConfig, MapError, Maps, split_list};

/// One entry of a domain list.
#[derive(Debug)]
enum Entry {
    /// A domain name, lower case, no trailing dot.
    Name(String),
    /// `.domain`: every subdomain of `domain` (stored without the dot).
    Subdomains(String),
    /// A lookup table.
    Table(Maps),
}

/// A Postfix domain list (see the module documentation).
#[derive(Debug, Default)]
pub struct DomainList {
    /// (negated, entry), in list order.
    entries: Vec<(bool, Entry)>,
    /// A plain name also matches its subdomains.
    parent_matches: bool,
}

/// Lower case, without a trailing dot.
pub fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl DomainList {
    /// Parses a list (already `$name`-expanded). `parent_matches`: the parameter is named in
    /// `parent_domain_matches_subdomains`. Tables are opened now; a table or file that
    /// cannot be opened is an error naming it.
    pub fn parse(value: &str, parent_matches: bool, cfg: &MapConfig) -> Result<DomainList, String> {
        let mut list = DomainList {
            entries: Vec::new(),
            parent_matches,
        };
        list.add(value, cfg, 0)?;
        Ok(list)
    }

    fn add(&mut self, value: &str, cfg: &MapConfig, depth: usize) -> Result<(), String> {
        for item in split_list(value) {
            let (negated, item) = match item.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, item.as_str()),
            };
            if item.is_empty() {
                continue;
            }
            if item.starts_with('/') {
                if depth > 4 {
                    return Err(format!("{item}: domain list files nested too deeply"));
                }
                let text =
                    std::fs::read_to_string(item).map_err(|e| format!("open {item}: {e}"))?;
                let body: String = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.add(&body, cfg, depth + 1)?;
                continue;
            }
            let entry = if oxipost_maps::split_spec(item).is_ok() && item.contains(':') {
                Entry::Table(Maps::open(item, cfg).map_err(|e| format!("{item}: {}", e.message))?)
            } else if let Some(sub) = item.strip_prefix('.') {
                Entry::Subdomains(normalize_domain(sub))
            } else {
                Entry::Name(normalize_domain(item))
            };
            self.entries.push((negated, entry));
        }
        Ok(())
    }

    /// True when the list names nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `domain` is in the list. `Err`: a table could not answer.
    pub fn matches(&self, domain: &str) -> Result<bool, MapError> {
        let d = normalize_domain(domain);
        if d.is_empty() {
            return Ok(false);
        }
        for (negated, entry) in &self.entries {
            if self.entry_matches(entry, &d)? {
                return Ok(!negated);
            }
        }
        Ok(false)
    }

    fn entry_matches(&self, entry: &Entry, d: &str) -> Result<bool, MapError> {
        let is_sub = |parent: &str| {
            d.len() > parent.len() && d.ends_with(parent) && {
                d.as_bytes()[d.len() - parent.len() - 1] == b'.'
            }
        };
        Ok(match entry {
            Entry::Name(n) => n == d || (self.parent_matches && is_sub(n)),
            Entry::Subdomains(n) => is_sub(n),
            Entry::Table(maps) => {
                if maps.lookup(d)?.is_some() {
                    return Ok(true);
                }
                // Parent domains: `example.com` (parent matching) or `.example.com`.
                let mut rest = d;
                while let Some(i) = rest.find('.') {
                    let parent = &rest[i..];
                    let key = if self.parent_matches {
                        &parent[1..]
                    } else {
                        parent
                    };
                    if !key.is_empty() && maps.lookup(key)?.is_some() {
                        return Ok(true);
                    }
                    rest = &rest[i + 1..];
                }
                false
            }
        })
    }
}

/// Where a recipient domain belongs, in Postfix's order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// `mydestination` (or the bare local part): local(8).
    Local,
    /// `virtual_alias_domains`: every address must be aliased elsewhere.
    VirtualAlias,
    /// `virtual_mailbox_domains`: the virtual(8) agent.
    VirtualMailbox,
    /// `relay_domains`: relayed, recipients checked against `relay_recipient_maps`.
    Relay,
    /// Anything else: the default transport.
    Default,
}

/// The four domain classes (see the module documentation).
#[derive(Debug, Default)]
pub struct AddressClasses {
    /// `mydestination` (its plain names; tables too).
    pub local: DomainList,
    pub virtual_alias: DomainList,
    pub virtual_mailbox: DomainList,
    pub relay: DomainList,
}

impl AddressClasses {
    /// The class of a recipient domain (empty: the bare local part, which is local).
    pub fn classify(&self, domain: &str) -> Result<AddressClass, MapError> {
        if normalize_domain(domain).is_empty() || self.local.matches(domain)? {
            Ok(AddressClass::Local)
        } else if self.virtual_alias.matches(domain)? {
            Ok(AddressClass::VirtualAlias)
        } else if self.virtual_mailbox.matches(domain)? {
            Ok(AddressClass::VirtualMailbox)
        } else if self.relay.matches(domain)? {
            Ok(AddressClass::Relay)
        } else {
            Ok(AddressClass::Default)
        }
    }

    /// Reads the four lists from main.cf: `mydestination`, `virtual_alias_domains`,
    /// `virtual_mailbox_domains`, `relay_domains`, with `parent_domain_matches_subdomains`.
    pub fn from_config(cfg: &oxipost_config::Config) -> Result<AddressClasses, String> {
        let parents: Vec<String> = cfg
            .get_list("parent_domain_matches_subdomains")
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|p| p.to_ascii_lowercase())
            .collect();
        let mc = MapConfig::default();
        let list = |name: &str| -> Result<DomainList, String> {
            let v = cfg.get(name).map_err(|e| e.to_string())?;
            DomainList::parse(&v, parents.iter().any(|p| p == name), &mc)
                .map_err(|e| format!("parameter {name}: {e}"))
        };
        Ok(AddressClasses {
            local: list("mydestination")?,
            virtual_alias: list("virtual_alias_domains")?,
            virtual_mailbox: list("virtual_mailbox_domains")?,
            relay: list("relay_domains")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &str, parent: bool) -> DomainList {
        DomainList::parse(v, parent, &MapConfig::default()).expect("parses")
    }

    #[test]
    fn names_subdomains_negation() {
        let l = list(
            "Example.COM., .sub.example.net !bad.example.org .example.org",
            false,
        );
        assert_eq!(l.matches("example.com").ok(), Some(true));
        assert_eq!(l.matches("a.example.com").ok(), Some(false));
        assert_eq!(l.matches("x.sub.example.net").ok(), Some(true));
        assert_eq!(l.matches("sub.example.net").ok(), Some(false));
        assert_eq!(l.matches("bad.example.org").ok(), Some(false));
        assert_eq!(l.matches("good.example.org").ok(), Some(true));
        let p = list("example.com", true);
        assert_eq!(p.matches("a.b.example.com").ok(), Some(true));
        assert_eq!(p.matches("xexample.com").ok(), Some(false));
    }

    #[test]
    fn tables_and_parents() {
        let l = list("inline:{ example.com=x, .example.net=y }", false);
        assert_eq!(l.matches("EXAMPLE.com").ok(), Some(true));
        assert_eq!(l.matches("a.example.com").ok(), Some(false));
        assert_eq!(l.matches("a.example.net").ok(), Some(true));
        let p = list("inline:{ example.com=x }", true);
        assert_eq!(p.matches("a.example.com").ok(), Some(true));
        let f = list("fail:x", false);
        assert!(f.matches("a").is_err());
    }

    #[test]
    fn classes_in_order() {
        let mc = MapConfig::default();
        let c = AddressClasses {
            local: DomainList::parse("localhost", false, &mc).expect("l"),
            virtual_alias: DomainList::parse("va.example", false, &mc).expect("va"),
            virtual_mailbox: DomainList::parse("vm.example va.example", false, &mc).expect("vm"),
            relay: DomainList::parse("relay.example", true, &mc).expect("r"),
        };
        assert_eq!(c.classify("").ok(), Some(AddressClass::Local));
        assert_eq!(c.classify("LOCALHOST.").ok(), Some(AddressClass::Local));
        assert_eq!(
            c.classify("va.example").ok(),
            Some(AddressClass::VirtualAlias)
        );
        assert_eq!(
            c.classify("vm.example").ok(),
            Some(AddressClass::VirtualMailbox)
        );
        assert_eq!(
            c.classify("x.relay.example").ok(),
            Some(AddressClass::Relay)
        );
        assert_eq!(
            c.classify("other.example").ok(),
            Some(AddressClass::Default)
        );
    }
}

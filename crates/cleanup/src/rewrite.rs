//! Address rewriting as Postfix's cleanup does it: canonical mapping
//! (`sender_canonical_maps`, `recipient_canonical_maps`, then `canonical_maps`, each for
//! the address classes its `*_classes` parameter names), address masquerading
//! (`masquerade_domains`, `masquerade_exceptions`, `masquerade_classes`) and virtual alias
//! expansion of envelope recipients (`virtual_alias_maps`, recursive, with
//! `virtual_alias_recursion_limit` and `virtual_alias_expansion_limit`).
//!
//! Lookups use Postfix's address order (`user+ext@domain`, `user@domain`, `user+ext` and
//! `user` for local domains, `@domain`); a value `@otherdomain` keeps the user part; an
//! extension that the matching key did not name is carried into the result when
//! `propagate_unmatched_extensions` says so. Canonical mapping repeats on its result up to
//! ten times (stopping when an address maps to itself), as Postfix. Virtual alias expansion
//! works through a growing list: each address is expanded until it is not found, or
//! expands into itself (allowed once); more than `virtual_alias_recursion_limit` steps for
//! one address (a loop) or more than `virtual_alias_expansion_limit` addresses make the
//! whole message deferred with `4.6.0 Alias expansion error`.

use oxipost_maps::{AddrQuery, MapError, Maps};

use crate::address::{quote_address, unquote_address};
use crate::domains::AddressClasses;

/// Which addresses a mapping applies to (Postfix's `*_classes` words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Classes {
    pub envelope_sender: bool,
    pub envelope_recipient: bool,
    pub header_sender: bool,
    pub header_recipient: bool,
}

impl Classes {
    /// Parses `envelope_sender, header_recipient, ...`; an unknown word is an error.
    pub fn parse(words: &[String]) -> Result<Classes, String> {
        let mut c = Classes::default();
        for w in words {
            match w.to_ascii_lowercase().as_str() {
                "envelope_sender" => c.envelope_sender = true,
                "envelope_recipient" => c.envelope_recipient = true,
                "header_sender" => c.header_sender = true,
                "header_recipient" => c.header_recipient = true,
                other => return Err(format!("unknown address class {other:?}")),
            }
        }
        Ok(c)
    }
}

/// Why an address could not be rewritten now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteError {
    /// A table could not answer (`451 4.3.0`); the text names the table.
    Table(String),
    /// Virtual alias expansion went too deep or too wide: the message is deferred with
    /// `451 4.6.0 Alias expansion error`; the text is the warning to log.
    Expansion(String),
}

impl From<MapError> for RewriteError {
    fn from(e: MapError) -> RewriteError {
        RewriteError::Table(e.message)
    }
}

impl std::fmt::Display for RewriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RewriteError::Table(t) | RewriteError::Expansion(t) => f.write_str(t),
        }
    }
}

/// A canonical table with the classes it applies to.
#[derive(Debug, Default)]
pub struct Canonical {
    pub maps: Maps,
    pub classes: Classes,
}

/// Everything address rewriting needs, built once at process start.
#[derive(Debug, Default)]
pub struct Rewriter {
    /// `recipient_delimiter`.
    pub delimiter: String,
    /// `myorigin` (lower case): a local domain for lookups of `user` keys.
    pub myorigin: String,
    pub sender_canonical: Canonical,
    pub recipient_canonical: Canonical,
    pub canonical: Canonical,
    /// `masquerade_domains` in order, `!`-prefixed entries kept as written (lower case).
    pub masquerade_domains: Vec<String>,
    /// `masquerade_exceptions` (lower case user names).
    pub masquerade_exceptions: Vec<String>,
    pub masquerade_classes: Classes,
    pub virtual_alias: Maps,
    pub recursion_limit: usize,
    pub expansion_limit: usize,
    /// `propagate_unmatched_extensions` contains `canonical` / `virtual`.
    pub propagate_canonical: bool,
    pub propagate_virtual: bool,
}

/// Postfix's limit on repeated canonical mapping.
const MAX_CANONICAL_ROUNDS: usize = 10;

/// Where an address appears, for the classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    EnvelopeSender,
    EnvelopeRecipient,
    HeaderSender,
    HeaderRecipient,
}

impl Classes {
    fn has(&self, role: Role) -> bool {
        match role {
            Role::EnvelopeSender => self.envelope_sender,
            Role::EnvelopeRecipient => self.envelope_recipient,
            Role::HeaderSender => self.header_sender,
            Role::HeaderRecipient => self.header_recipient,
        }
    }
}

fn split_at(address: &str) -> (&str, Option<&str>) {
    match address.rfind('@') {
        Some(i) => (&address[..i], Some(&address[i + 1..])),
        None => (address, None),
    }
}

/// Splits a table value into addresses (commas and white space outside quotes), as
/// Postfix's `mail_addr_crunch`.
fn crunch(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' | ' ' | '\t' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out.into_iter()
        .map(|a| {
            let a = a.trim_start_matches('<').trim_end_matches('>');
            a.to_string()
        })
        .filter(|a| !a.is_empty())
        .collect()
}

impl Rewriter {
    /// One table lookup in Postfix's address order: the addresses it maps to (internal
    /// form), or `None`.
    fn map(
        &self,
        maps: &Maps,
        classes: &AddressClasses,
        address: &str,
        propagate: bool,
    ) -> Result<Option<Vec<String>>, MapError> {
        if maps.is_empty() || address.is_empty() {
            return Ok(None);
        }
        let is_local = |d: &str| {
            let d = crate::domains::normalize_domain(d);
            d == self.myorigin || classes.local.matches(&d).unwrap_or(false)
        };
        let q = AddrQuery {
            delimiter: &self.delimiter,
            is_local: Some(&is_local),
            at_domain: true,
        };
        let external = quote_address(address);
        let Some(m) = maps.lookup_addr(&external, &q)? else {
            return Ok(None);
        };
        let (local, _) = split_at(address);
        // The extension with its delimiter character, as it appears in the address.
        let ext = m.unmatched_extension.as_deref().and_then(|e| {
            let at = local.len().checked_sub(e.len() + 1)?;
            local.get(at..)
        });
        let mut out = Vec::new();
        for mut a in crunch(&m.value) {
            if a.starts_with('@') {
                // `@otherdomain`: the user part stays, without the extension.
                let user = match ext {
                    Some(x) => &local[..local.len() - x.len()],
                    None => local,
                };
                a = format!("{user}{a}");
            } else if propagate && let Some(x) = ext {
                a = match a.rfind('@') {
                    Some(i) => format!("{}{x}{}", &a[..i], &a[i..]),
                    None => format!("{a}{x}"),
                };
            }
            out.push(unquote_address(&a));
        }
        Ok(Some(out))
    }

    /// Canonical mapping through one table, repeated as Postfix's `cleanup_map11`.
    fn map11(
        &self,
        maps: &Maps,
        classes: &AddressClasses,
        address: &mut String,
    ) -> Result<(), MapError> {
        for _ in 0..MAX_CANONICAL_ROUNDS {
            let Some(new) = self.map(maps, classes, address, self.propagate_canonical)? else {
                return Ok(());
            };
            let Some(first) = new.into_iter().next() else {
                return Ok(());
            };
            let same = first.eq_ignore_ascii_case(address);
            *address = first;
            if same {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Hides subdomains as `masquerade_domains` says (Postfix's `masquerade`).
    pub fn masquerade(&self, address: &str) -> String {
        let (local, Some(domain)) = split_at(address) else {
            return address.to_string();
        };
        if self.masquerade_domains.is_empty() {
            return address.to_string();
        }
        let lower_local = local.to_ascii_lowercase();
        if self.masquerade_exceptions.contains(&lower_local) {
            return address.to_string();
        }
        let d = domain.to_ascii_lowercase();
        for m in &self.masquerade_domains {
            let (keep, name) = match m.strip_prefix('!') {
                Some(n) => (false, n),
                None => (true, m.as_str()),
            };
            if name.is_empty() {
                continue;
            }
            if name == d {
                break;
            }
            if d.len() > name.len()
                && d.ends_with(name)
                && d.as_bytes()[d.len() - name.len() - 1] == b'.'
            {
                if keep {
                    return format!("{local}@{name}");
                }
                break;
            }
        }
        address.to_string()
    }

    /// Canonical mapping and masquerading of one address in `role`.
    pub fn canonicalize(
        &self,
        classes: &AddressClasses,
        address: &str,
        role: Role,
    ) -> Result<String, MapError> {
        let mut a = address.to_string();
        if a.is_empty() {
            return Ok(a);
        }
        let first = match role {
            Role::EnvelopeSender | Role::HeaderSender => &self.sender_canonical,
            Role::EnvelopeRecipient | Role::HeaderRecipient => &self.recipient_canonical,
        };
        for c in [first, &self.canonical] {
            if c.classes.has(role) {
                self.map11(&c.maps, classes, &mut a)?;
            }
        }
        if self.masquerade_classes.has(role) {
            a = self.masquerade(&a);
        }
        Ok(a)
    }

    /// trivial-rewrite's first steps for an envelope address: trailing dots of the domain
    /// go (`user@example.com.`), an unqualified address gets `@$myorigin`
    /// (`append_at_myorigin`, the default). The null sender stays empty.
    pub fn qualify(&self, address: &str) -> String {
        if address.is_empty() {
            return String::new();
        }
        match address.rsplit_once('@') {
            Some((local, domain)) if !domain.is_empty() && !domain.starts_with('[') => {
                let d = domain.trim_end_matches('.');
                if d.is_empty() {
                    address.to_string()
                } else {
                    format!("{local}@{d}")
                }
            }
            Some(_) => address.to_string(),
            None if self.myorigin.is_empty() => address.to_string(),
            None => format!("{address}@{}", self.myorigin),
        }
    }

    /// The envelope sender after canonical mapping and masquerading.
    pub fn sender(&self, classes: &AddressClasses, sender: &str) -> Result<String, RewriteError> {
        let sender = self.qualify(sender);
        Ok(self.canonicalize(classes, &sender, Role::EnvelopeSender)?)
    }

    /// One envelope recipient: canonical mapping, masquerading, then virtual alias
    /// expansion. The result has at least one address unless the aliases expanded to
    /// nothing.
    pub fn recipient(
        &self,
        classes: &AddressClasses,
        rcpt: &str,
    ) -> Result<Vec<String>, RewriteError> {
        let rcpt = self.qualify(rcpt);
        let a = self.canonicalize(classes, &rcpt, Role::EnvelopeRecipient)?;
        self.expand_virtual(classes, &a)
    }

    /// Virtual alias expansion (see the module documentation).
    pub fn expand_virtual(
        &self,
        classes: &AddressClasses,
        address: &str,
    ) -> Result<Vec<String>, RewriteError> {
        let mut list = vec![address.to_string()];
        if self.virtual_alias.is_empty() {
            return Ok(list);
        }
        let mut been_here: Vec<String> = Vec::new();
        let mut arg = 0;
        while arg < list.len() {
            if list.len() > self.expansion_limit.max(1) {
                return Err(RewriteError::Expansion(format!(
                    "unreasonable virtual_alias_maps map expansion size for {address} -- message not accepted"
                )));
            }
            let mut count = 0;
            loop {
                let cur = list[arg].to_ascii_lowercase();
                if been_here.contains(&cur) {
                    break;
                }
                if count >= self.recursion_limit.max(1) {
                    return Err(RewriteError::Expansion(format!(
                        "unreasonable virtual_alias_maps map nesting for {address} -- message not accepted"
                    )));
                }
                count += 1;
                let Some(found) = self.map(
                    &self.virtual_alias,
                    classes,
                    &list[arg],
                    self.propagate_virtual,
                )?
                else {
                    break;
                };
                if found.is_empty() {
                    break;
                }
                let lhs = cur;
                for (i, a) in found.into_iter().enumerate() {
                    if a.eq_ignore_ascii_case(&lhs) {
                        // An address may expand into itself once.
                        been_here.push(lhs.clone());
                    }
                    if i == 0 {
                        list[arg] = a;
                    } else {
                        list.push(a);
                    }
                }
            }
            arg += 1;
        }
        // Postfix drops duplicates when writing recipients (cleanup's been-here check).
        let mut seen: Vec<String> = Vec::new();
        list.retain(|a| {
            let k = a.to_ascii_lowercase();
            if seen.contains(&k) {
                false
            } else {
                seen.push(k);
                true
            }
        });
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domains::DomainList;
    use oxipost_maps::MapConfig;

    fn maps(spec: &str) -> Maps {
        Maps::open(spec, &MapConfig::default()).expect("maps")
    }

    fn classes() -> AddressClasses {
        AddressClasses {
            local: DomainList::parse("localhost", false, &MapConfig::default()).expect("l"),
            ..AddressClasses::default()
        }
    }

    fn rewriter() -> Rewriter {
        Rewriter {
            delimiter: "+".into(),
            myorigin: "host.example".into(),
            recursion_limit: 1000,
            expansion_limit: 1000,
            propagate_canonical: true,
            propagate_virtual: true,
            ..Rewriter::default()
        }
    }

    #[test]
    fn qualifies_envelope_addresses() {
        let r = rewriter();
        assert_eq!(r.qualify("demo"), "demo@host.example");
        assert_eq!(r.qualify("u@example.com."), "u@example.com");
        assert_eq!(r.qualify("u@[192.0.2.1]"), "u@[192.0.2.1]");
        assert_eq!(r.qualify(""), "");
        let c = classes();
        assert_eq!(r.sender(&c, "demo").expect("s"), "demo@host.example");
        assert_eq!(
            r.recipient(&c, "x@example.com.").expect("r"),
            vec!["x@example.com".to_string()]
        );
    }

    #[test]
    fn virtual_expansion_recursive_and_self() {
        let mut r = rewriter();
        r.virtual_alias = maps(
            "inline:{ {a@v.example=b@v.example, c@v.example}, b@v.example=demo@localhost, \
             {self@v.example=self@v.example, other@x.example}, @w.example=@localhost }",
        );
        let c = classes();
        assert_eq!(
            r.expand_virtual(&c, "a@v.example"),
            Ok(vec!["demo@localhost".into(), "c@v.example".into()])
        );
        assert_eq!(
            r.expand_virtual(&c, "self@v.example"),
            Ok(vec!["self@v.example".into(), "other@x.example".into()])
        );
        assert_eq!(
            r.expand_virtual(&c, "joe+x@w.example"),
            Ok(vec!["joe@localhost".into()])
        );
        assert_eq!(
            r.expand_virtual(&c, "nobody@v.example"),
            Ok(vec!["nobody@v.example".into()])
        );
    }

    #[test]
    fn virtual_loop_and_width_limits() {
        let mut r = rewriter();
        r.virtual_alias = maps("inline:{ x@v=y@v, y@v=x@v, {w@v=1@t,2@t,3@t} }");
        r.recursion_limit = 20;
        let c = classes();
        assert!(matches!(
            r.expand_virtual(&c, "x@v"),
            Err(RewriteError::Expansion(_))
        ));
        r.expansion_limit = 2;
        assert!(matches!(
            r.expand_virtual(&c, "w@v"),
            Err(RewriteError::Expansion(_))
        ));
        let mut f = rewriter();
        f.virtual_alias = maps("fail:x");
        assert!(matches!(
            f.expand_virtual(&c, "a@b"),
            Err(RewriteError::Table(_))
        ));
    }

    #[test]
    fn canonical_extension_and_masquerade() {
        let mut r = rewriter();
        r.canonical = Canonical {
            maps: maps("inline:{ joe@localhost=Joe.User@example.com, @old.example=@new.example }"),
            classes: Classes::parse(&["envelope_sender".into(), "envelope_recipient".into()])
                .expect("classes"),
        };
        r.masquerade_domains = vec!["!keep.example.com".into(), "example.com".into()];
        r.masquerade_exceptions = vec!["root".into()];
        r.masquerade_classes = Classes {
            envelope_sender: true,
            ..Classes::default()
        };
        let c = classes();
        assert_eq!(
            r.canonicalize(&c, "joe+list@localhost", Role::EnvelopeRecipient),
            Ok("Joe.User+list@example.com".into())
        );
        assert_eq!(
            r.canonicalize(&c, "a+b@old.example", Role::EnvelopeSender),
            Ok("a@new.example".into())
        );
        assert_eq!(r.masquerade("u@a.b.example.com"), "u@example.com");
        assert_eq!(r.masquerade("u@x.keep.example.com"), "u@x.keep.example.com");
        assert_eq!(r.masquerade("root@a.example.com"), "root@a.example.com");
        assert_eq!(r.masquerade("u@example.com"), "u@example.com");
        assert_eq!(
            r.canonicalize(&c, "u@mail.example.com", Role::EnvelopeSender),
            Ok("u@example.com".into())
        );
        assert_eq!(
            r.canonicalize(&c, "u@mail.example.com", Role::EnvelopeRecipient),
            Ok("u@mail.example.com".into())
        );
    }
}

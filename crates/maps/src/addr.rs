//! Address lookups in Postfix's order (`mail_addr_find()`), for alias, virtual, canonical,
//! access and relocated tables.
//!
//! For `user+ext@domain` (with `recipient_delimiter = +`) the keys are tried in order,
//! each against every table of the list before the next key:
//!
//! 1. `user+ext@domain` — every table, patterns included;
//! 2. `user@domain` — only when there is an extension;
//! 3. `user+ext`, then `user` — only when the domain is local ([`AddrQuery::is_local`]),
//!    or the address has no domain;
//! 4. `@domain`.
//!
//! Keys 2–4 are partial keys: `regexp:`, `pcre:` and `cidr:` tables see only the full
//! address, as in Postfix. Case folding is each table's (see the crate documentation).
//! The extension is split at the first delimiter character in the local part; Postfix's
//! special case for `owner-`/`-request` local parts is not implemented.

use crate::{MapError, Maps, MatchKind};

/// How to look an address up.
pub struct AddrQuery<'a> {
    /// `recipient_delimiter`: each character separates user and extension ("" = none).
    pub delimiter: &'a str,
    /// Try the local part alone (`user+ext`, `user`) when this says the domain is local
    /// (`mydestination` and the like). `None`: never (e.g. `virtual_alias_maps` asks
    /// `|_| false`; Postfix's local aliases ask the local part only, see
    /// [`Maps::lookup_local`]).
    pub is_local: Option<&'a dyn Fn(&str) -> bool>,
    /// Try `@domain` last (true for virtual and canonical tables).
    pub at_domain: bool,
}

impl Default for AddrQuery<'_> {
    fn default() -> Self {
        AddrQuery {
            delimiter: "",
            is_local: None,
            at_domain: true,
        }
    }
}

/// A successful address lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrMatch {
    /// The table's value.
    pub value: String,
    /// The key that matched (`user@domain`, `@domain`, ...).
    pub key: String,
    /// The address extension (without the delimiter) when the match was on a key without
    /// it, so the caller can propagate it (`propagate_unmatched_extensions`).
    pub unmatched_extension: Option<String>,
}

/// Splits `local` into (user, extension) at the first delimiter character.
pub fn split_extension<'a>(local: &'a str, delimiter: &str) -> (&'a str, Option<&'a str>) {
    if delimiter.is_empty() {
        return (local, None);
    }
    match local.find(|c: char| delimiter.contains(c)) {
        Some(i) if i > 0 => (&local[..i], Some(&local[i + 1..])),
        _ => (local, None),
    }
}

impl Maps {
    /// Looks an address up in Postfix's order (see the module documentation).
    pub fn lookup_addr(
        &self,
        addr: &str,
        q: &AddrQuery<'_>,
    ) -> Result<Option<AddrMatch>, MapError> {
        let found = |value: String, key: &str, ext: Option<&str>| {
            Some(AddrMatch {
                value,
                key: key.to_string(),
                unmatched_extension: ext.map(str::to_string),
            })
        };
        if let Some(v) = self.lookup(addr)? {
            return Ok(found(v, addr, None));
        }
        let (local, domain) = match addr.rfind('@') {
            Some(i) => (&addr[..i], Some(&addr[i + 1..])),
            None => (addr, None),
        };
        let (user, ext) = split_extension(local, q.delimiter);
        let partial = Some(MatchKind::Fixed);
        if let (Some(d), Some(_)) = (domain, ext) {
            let k = format!("{user}@{d}");
            if let Some(v) = self.lookup_kind(&k, partial)? {
                return Ok(found(v, &k, ext));
            }
        }
        let local_ok = match (domain, q.is_local) {
            (None, _) => true,
            (Some(d), Some(f)) => f(d),
            (Some(_), None) => false,
        };
        if local_ok {
            if domain.is_some()
                && let Some(v) = self.lookup_kind(local, partial)?
            {
                return Ok(found(v, local, None));
            }
            if ext.is_some()
                && let Some(v) = self.lookup_kind(user, partial)?
            {
                return Ok(found(v, user, ext));
            }
        }
        if let (true, Some(d)) = (q.at_domain, domain) {
            let k = format!("@{d}");
            if let Some(v) = self.lookup_kind(&k, partial)? {
                return Ok(found(v, &k, ext));
            }
        }
        Ok(None)
    }

    /// Local-part lookup as local(8) does for aliases: `user+ext`, then `user`.
    pub fn lookup_local(
        &self,
        local: &str,
        delimiter: &str,
    ) -> Result<Option<AddrMatch>, MapError> {
        self.lookup_addr(
            local,
            &AddrQuery {
                delimiter,
                is_local: None,
                at_domain: false,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MapConfig;

    #[test]
    fn order_of_keys() {
        let m = Maps::open(
            "inline:{ {a+x@d.example=full}, {b@d.example=noext}, c=local, @e.example=dom }",
            &MapConfig::default(),
        )
        .expect("open");
        let local = |d: &str| d == "d.example";
        let q = AddrQuery {
            delimiter: "+",
            is_local: Some(&local),
            at_domain: true,
        };
        let v = |a: &str| m.lookup_addr(a, &q).ok().flatten();
        assert_eq!(v("A+X@D.example").map(|m| m.value).as_deref(), Some("full"));
        let b = v("b+y@d.example");
        assert_eq!(b.as_ref().map(|m| m.value.as_str()), Some("noext"));
        assert_eq!(b.and_then(|m| m.unmatched_extension).as_deref(), Some("y"));
        assert_eq!(
            v("c+z@d.example").map(|m| m.value).as_deref(),
            Some("local")
        );
        assert_eq!(v("c@other.example"), None);
        assert_eq!(v("q+r@e.example").map(|m| m.value).as_deref(), Some("dom"));
        assert_eq!(v("c+z").map(|m| m.key).as_deref(), Some("c"));
    }

    #[test]
    fn patterns_see_full_address_only() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("r");
        assert!(std::fs::write(&p, "/^user@/ re\n").is_ok());
        let m =
            Maps::open(&format!("regexp:{}", p.display()), &MapConfig::default()).expect("open");
        let q = AddrQuery {
            delimiter: "+",
            is_local: None,
            at_domain: true,
        };
        assert_eq!(m.lookup_addr("user+x@d", &q).ok().flatten(), None);
        assert!(m.lookup_addr("user@d", &q).ok().flatten().is_some());
    }
}

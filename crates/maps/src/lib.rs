//! Lookup tables: Postfix's `type:name` maps, as one library for every program of the
//! suite (smtpd access checks, local aliases, virtual domains, transport maps, postmap).
//!
//! It owns the table formats — the indexed file that `postmap` builds for `hash:`,
//! `btree:`, `lmdb:` and `cdb:` (see [`indexed`]), the text formats (`texthash:`,
//! `inline:`, `static:`, `regexp:`, `pcre:`, `cidr:`), the system tables (`unix:`,
//! `environ:`, `fail:`), and the SQL client tables (`sqlite:`, `pgsql:`, `mysql:`; one
//! configuration form and pluggable backends in [`sql`], MySQL's in [`mysql`]) — plus
//! Postfix's lookup semantics on top of them: case folding, map lists searched in order,
//! and the address lookup order of `mail_addr_find()` (see [`addr`]).
//!
//! It must not log, read main.cf, or decide policy: it returns values and typed errors,
//! and collects warnings about skipped table lines for the caller to log. A table that
//! cannot answer now returns `Err` ([`MapError::is_temporary`]): callers answer
//! `451 4.3.0` and never guess. Tables are `Send + Sync` and may be held for the life of a
//! daemon; an indexed file is reopened when `postmap` replaces it.
//!
//! # Use
//!
//! ```no_run
//! use oxipost_maps::{MapConfig, Maps};
//! let cfg = MapConfig::default();
//! // The value of a parameter such as `alias_maps`, after `$name` expansion.
//! let maps = Maps::open("hash:/etc/aliases, regexp:/etc/oxipost/aliases.re", &cfg)?;
//! match maps.lookup("postmaster")? {
//!     Some(value) => println!("{value}"),
//!     None => println!("not found"),
//! }
//! # Ok::<(), oxipost_maps::MapError>(())
//! ```
//!
//! Keys are folded to lower case (ASCII only, as Postfix) for every table type except
//! `regexp:`, `pcre:`, `cidr:` and `static:`, which see the key as given; set
//! [`MapConfig::fold_case`] to `false` to keep case everywhere (`postmap -f`).
//! `proxy:type:name` is accepted and opens `type:name` in-process (there is no proxymap).

pub mod addr;
pub mod cidr;
pub mod error;
pub mod indexed;
pub mod inline;
pub mod mysql;
pub mod regexp;
pub mod simple;
pub mod sql;
pub mod text;
pub mod texthash;
pub mod unix;

pub use addr::{AddrMatch, AddrQuery};
pub use error::{ErrorKind, MapError};

use std::time::Duration;

/// The table types this build implements, as `postconf -m` lists them.
pub const MAP_TYPES: &[&str] = &[
    "btree", "cdb", "cidr", "environ", "fail", "hash", "inline", "lmdb", "mysql", "pcre", "pgsql",
    "proxy", "regexp", "sqlite", "static", "texthash", "unix",
];

/// Options that apply to every table opened with them.
#[derive(Debug, Clone)]
pub struct MapConfig {
    /// Fold keys to lower case before looking them up in tables that fold
    /// (Postfix's `DICT_FLAG_FOLD_FIX`; `postmap -f` clears it). Default: true.
    pub fold_case: bool,
    /// How often, at most, an indexed table checks whether its file was replaced.
    /// Default: one second.
    pub reopen_check: Duration,
}

impl Default for MapConfig {
    fn default() -> MapConfig {
        MapConfig {
            fold_case: true,
            reopen_check: Duration::from_secs(1),
        }
    }
}

/// Whether a table matches keys exactly or by pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// Exact keys (hash, texthash, sql...): also asked for the partial keys of an
    /// address lookup (`user@domain`, `user`, `@domain`).
    Fixed,
    /// Patterns (regexp, pcre, cidr): asked for the full key only, as Postfix does.
    Pattern,
}

/// One table type. Implementations fold nothing themselves: [`Table`] folds the key
/// when both the table ([`Map::folds_case`]) and the configuration want it.
pub trait Map: Send + Sync {
    /// Looks `key` up: `Ok(None)` when not found, `Err` when the table cannot answer.
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError>;

    /// Exact-key or pattern table.
    fn match_kind(&self) -> MatchKind {
        MatchKind::Fixed
    }

    /// Whether keys are folded to lower case before lookup (when configured).
    fn folds_case(&self) -> bool {
        true
    }

    /// Warnings about table lines that were skipped when the table was loaded, each
    /// `file, line N: what is wrong` as Postfix words them. Callers log them.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Every entry in table order (`postmap -s`); not every type supports it.
    fn dump(&self) -> Result<Vec<(String, String)>, MapError> {
        Err(MapError::unsupported("sequence operation is not supported"))
    }
}

/// One opened table, `type:name`.
pub struct Table {
    spec: String,
    map: Box<dyn Map>,
    fold: bool,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("spec", &self.spec).finish()
    }
}

/// Splits `type:name`, dropping `proxy:`/`proxywrite:` prefixes and the outer braces of
/// `inline:{...}` / `static:{...}` names.
pub fn split_spec(spec: &str) -> Result<(&str, &str), MapError> {
    let mut s = spec.trim();
    loop {
        let Some((t, rest)) = s.split_once(':') else {
            return Err(MapError::spec(format!(
                "need dictionary type:name, found \"{spec}\""
            )));
        };
        if t == "proxy" || t == "proxywrite" {
            s = rest;
            continue;
        }
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(MapError::spec(format!(
                "need dictionary type:name, found \"{spec}\""
            )));
        }
        return Ok((t, rest));
    }
}

/// Strips one pair of outer braces and the white space inside them.
pub(crate) fn strip_braces(name: &str) -> Option<&str> {
    let n = name.trim();
    n.strip_prefix('{')
        .and_then(|n| n.strip_suffix('}'))
        .map(|n| n.trim())
}

impl Table {
    /// Opens one table from its `type:name` specification.
    pub fn open(spec: &str, cfg: &MapConfig) -> Result<Table, MapError> {
        let (kind, name) = split_spec(spec)?;
        let map: Box<dyn Map> = match kind {
            "hash" | "btree" | "lmdb" | "cdb" => {
                Box::new(indexed::IndexedMap::open(kind, name, cfg)?)
            }
            "texthash" => Box::new(texthash::TextHash::open(name, cfg)?),
            "inline" => Box::new(inline::Inline::open(spec, name, cfg)?),
            "static" => Box::new(simple::Static::open(name)),
            "fail" => Box::new(simple::Fail::open(spec)),
            "environ" => Box::new(simple::Environ),
            "regexp" => Box::new(regexp::RegexpMap::open(name, regexp::Dialect::Posix)?),
            "pcre" => Box::new(regexp::RegexpMap::open(name, regexp::Dialect::Pcre)?),
            "cidr" => Box::new(cidr::CidrMap::open(name)?),
            "unix" => Box::new(unix::UnixMap::open(name)?),
            "sqlite" | "pgsql" | "mysql" => sql::open(kind, name)?,
            _ => {
                return Err(MapError::spec(format!(
                    "unsupported dictionary type: {kind}"
                )));
            }
        };
        let fold = cfg.fold_case && map.folds_case();
        Ok(Table {
            spec: spec.trim().to_string(),
            map,
            fold,
        })
    }

    /// The specification the table was opened with.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Looks `key` up (folded to lower case when the table folds). `Err` is a temporary
    /// failure; the message names the table.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        let r = if self.fold && key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.map.lookup(&key.to_ascii_lowercase())
        } else {
            self.map.lookup(key)
        };
        r.map_err(|e| MapError::new(e.kind, format!("table {}: {}", self.spec, e.message)))
    }

    /// Exact-key or pattern table.
    pub fn match_kind(&self) -> MatchKind {
        self.map.match_kind()
    }

    /// Warnings about skipped lines, for the caller to log.
    pub fn warnings(&self) -> Vec<String> {
        self.map.warnings()
    }

    /// Every entry (`postmap -s`).
    pub fn dump(&self) -> Result<Vec<(String, String)>, MapError> {
        self.map.dump()
    }
}

/// Splits a map list (a parameter value such as `hash:/a, regexp:/b inline:{ a=b, c=d }`)
/// on commas and white space outside braces.
pub fn split_list(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in list.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth = depth.saturating_sub(1);
                cur.push(c);
            }
            c if depth == 0 && (c == ',' || c.is_ascii_whitespace()) => {
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
    out
}

/// A list of tables searched in order, as a main.cf parameter value names them.
#[derive(Debug, Default)]
pub struct Maps {
    tables: Vec<Table>,
}

impl Maps {
    /// Opens every table of a map list (already `$name`-expanded). Fails on the first
    /// table that cannot be opened; an empty list gives empty `Maps` (never found).
    pub fn open(list: &str, cfg: &MapConfig) -> Result<Maps, MapError> {
        let tables = split_list(list)
            .iter()
            .map(|s| Table::open(s, cfg))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Maps { tables })
    }

    /// Builds a list from tables opened one by one.
    pub fn from_tables(tables: Vec<Table>) -> Maps {
        Maps { tables }
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The first table's answer for `key`. A table that fails stops the search with
    /// `Err` (Postfix's `maps_find()`): a later table must not answer for a broken one.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        self.lookup_kind(key, None)
    }

    /// As [`Maps::lookup`], asking only tables of `only` kind when given (partial address
    /// keys are asked of exact-key tables only).
    pub fn lookup_kind(
        &self,
        key: &str,
        only: Option<MatchKind>,
    ) -> Result<Option<String>, MapError> {
        for t in &self.tables {
            if only.is_some_and(|k| k != t.match_kind()) {
                continue;
            }
            if let Some(v) = t.lookup(key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Every table's warnings.
    pub fn warnings(&self) -> Vec<String> {
        self.tables.iter().flat_map(|t| t.warnings()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_splitting() {
        assert_eq!(
            split_list("hash:/a, regexp:/b\tinline:{ a=b, {c = d} },static:{ x y }"),
            vec![
                "hash:/a",
                "regexp:/b",
                "inline:{ a=b, {c = d} }",
                "static:{ x y }"
            ]
        );
    }

    #[test]
    fn spec_splitting() {
        assert_eq!(
            split_spec("proxy:unix:passwd.byname"),
            Ok(("unix", "passwd.byname"))
        );
        assert!(split_spec("/etc/aliases").is_err());
    }

    #[test]
    fn unknown_type() {
        let e = Table::open("bogus:x", &MapConfig::default()).err();
        assert_eq!(e.map(|e| e.kind), Some(ErrorKind::BadSpec));
    }

    #[test]
    fn list_order_and_failure() {
        let cfg = MapConfig::default();
        let m = Maps::open("inline:{a=1} static:dflt", &cfg).ok();
        let m = m.as_ref();
        assert_eq!(
            m.and_then(|m| m.lookup("A").ok().flatten()).as_deref(),
            Some("1")
        );
        assert_eq!(
            m.and_then(|m| m.lookup("b").ok().flatten()).as_deref(),
            Some("dflt")
        );
        let f = Maps::open("fail:x static:y", &cfg).ok();
        assert!(f.is_some_and(|f| f.lookup("k").is_err()));
    }
}

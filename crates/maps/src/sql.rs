//! SQL tables: `sqlite:/path.cf` (sqlite_table(5)); the configuration form, query
//! expansion and result formatting are shared so `pgsql:` and `mysql:` clients can plug
//! in (they are not part of this build yet: opening one is a configuration error).
//!
//! The `.cf` file holds `name = value` lines (main.cf syntax: `#` comments, indented
//! continuation lines):
//!
//! - `dbpath` (sqlite): the database file, opened read-only;
//! - `query`: the SELECT, with `%%`, `%s` (the key), `%u` (its local part, or the whole
//!   key without `@`), `%d` (its domain), `%1`..`%9` (domain labels, `%1` the rightmost).
//!   Values are quoted for SQL (`'` doubled). When the key lacks a part the query uses
//!   (`%d` without a domain, `%u` with an empty local part, `%3` of a two-label domain),
//!   nothing is queried and the key is not found, as in Postfix;
//! - `result_format` (default `%s`): each non-NULL, non-empty column 1 value formatted
//!   with `%s %u %d` (parts of the value) and `%S %U %D %1..%9` (parts of the key);
//!   several rows are joined with `,`;
//! - `domain`: a list of domains; when set, only `user@domain` keys with a listed domain
//!   are queried;
//! - `expansion_limit`: more results than this is a temporary failure (0: no limit);
//! - legacy `table`, `select_field`, `where_field`, `additional_conditions` build the
//!   query when `query` is absent.
//!
//! A database that cannot be opened or queried is a temporary failure; the connection is
//! retried at the next lookup.

use crate::text::LogicalLines;
use crate::{Map, MapError};
use std::collections::HashMap;
use std::io::BufReader;
use std::sync::Mutex;

/// A parsed `.cf` file.
#[derive(Debug, Clone, Default)]
pub struct SqlConfig {
    pub params: HashMap<String, String>,
    pub query: String,
    pub result_format: String,
    pub domains: Vec<String>,
    pub expansion_limit: usize,
}

impl SqlConfig {
    /// Reads and checks a `.cf` file.
    pub fn load(path: &str) -> Result<SqlConfig, MapError> {
        let f =
            std::fs::File::open(path).map_err(|e| MapError::temp(format!("open {path}: {e}")))?;
        let mut params = HashMap::new();
        for l in LogicalLines::new(BufReader::new(f)) {
            let l = l.map_err(|e| MapError::temp(format!("read {path}: {e}")))?;
            let Some((k, v)) = l.text.split_once('=') else {
                return Err(MapError::syntax(format!(
                    "{path}:{}: missing '=' after parameter name",
                    l.line
                )));
            };
            params.insert(k.trim().to_string(), v.trim().to_string());
        }
        Self::from_params(path, params)
    }

    fn from_params(path: &str, params: HashMap<String, String>) -> Result<SqlConfig, MapError> {
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        let mut query = get("query");
        if query.is_empty() {
            let (t, s, w) = (get("table"), get("select_field"), get("where_field"));
            if t.is_empty() || s.is_empty() || w.is_empty() {
                return Err(MapError::syntax(format!(
                    "{path}: missing \"query\" (or table, select_field and where_field)"
                )));
            }
            query = format!(
                "SELECT {s} FROM {t} WHERE {w} = '%s' {}",
                get("additional_conditions")
            );
            query = query.trim_end().to_string();
        }
        check_template(&query, false).map_err(|e| {
            MapError::syntax(format!("{path}: invalid query template: {e}: {query}"))
        })?;
        let mut result_format = get("result_format");
        if result_format.is_empty() {
            result_format = "%s".into();
        }
        check_template(&result_format, true).map_err(|e| {
            MapError::syntax(format!(
                "{path}: invalid result_format template: {e}: {result_format}"
            ))
        })?;
        let domains = get("domain")
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|d| !d.is_empty())
            .map(|d| d.to_ascii_lowercase())
            .collect();
        let limit = get("expansion_limit");
        let expansion_limit = if limit.is_empty() {
            0
        } else {
            limit
                .parse()
                .map_err(|_| MapError::syntax(format!("{path}: bad expansion_limit: {limit}")))?
        };
        Ok(SqlConfig {
            params,
            query,
            result_format,
            domains,
            expansion_limit,
        })
    }

    /// A parameter of the file ("" when absent).
    pub fn get(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }

    /// Whether the key may be queried at all (`domain` restriction).
    pub fn key_allowed(&self, key: &str) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        match key.rsplit_once('@') {
            Some((_, d)) => self.domains.iter().any(|x| x.eq_ignore_ascii_case(d)),
            None => false,
        }
    }
}

fn check_template(t: &str, result: bool) -> Result<(), String> {
    let mut it = t.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            continue;
        }
        match it.next() {
            Some('%' | 's' | 'u' | 'd' | '1'..='9') => {}
            Some('S' | 'U' | 'D') if result => {}
            Some(x) => return Err(format!("unknown \"%{x}\"")),
            None => return Err("'%' at the end".into()),
        }
    }
    Ok(())
}

/// The parts of an address: (whole, local, domain).
fn parts(s: &str) -> (&str, &str, Option<&str>) {
    match s.rsplit_once('@') {
        Some((l, d)) => (s, l, Some(d)),
        None => (s, s, None),
    }
}

/// Expands a template. `value` is the result value for result_format (lower-case
/// escapes), `key` the lookup key (upper-case escapes and digits; lower-case in queries).
/// `None`: a part the template needs is missing (no query / no result).
pub fn expand(
    template: &str,
    key: &str,
    value: Option<&str>,
    quote: &dyn Fn(&str) -> String,
) -> Option<String> {
    let (ks, ku, kd) = parts(key);
    let vparts = value.map(parts);
    let label = |n: usize| -> Option<&str> {
        let d = kd?;
        d.rsplit('.').nth(n - 1).filter(|l| !l.is_empty())
    };
    let mut out = String::with_capacity(template.len() + key.len());
    let mut it = template.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let x = it.next()?;
        let piece: String = match (x, vparts) {
            ('%', _) => "%".into(),
            ('s', None) => quote(ks),
            ('u', None) if !ku.is_empty() => quote(ku),
            ('d', None) => quote(kd.filter(|d| !d.is_empty())?),
            ('s', Some((vs, _, _))) => vs.to_string(),
            ('u', Some((_, vu, _))) if !vu.is_empty() => vu.to_string(),
            ('d', Some((_, _, vd))) => vd.filter(|d| !d.is_empty())?.to_string(),
            ('S', _) => ks.to_string(),
            ('U', _) if !ku.is_empty() => ku.to_string(),
            ('D', _) => kd.filter(|d| !d.is_empty())?.to_string(),
            (d @ '1'..='9', v) => {
                let l = label(d as usize - '0' as usize)?;
                if v.is_none() { quote(l) } else { l.to_string() }
            }
            _ => return None,
        };
        out.push_str(&piece);
    }
    Some(out)
}

/// Formats the rows of a query: each value through result_format, joined with `,`.
pub fn format_results(
    cfg: &SqlConfig,
    key: &str,
    rows: &[String],
) -> Result<Option<String>, MapError> {
    let mut out: Vec<String> = Vec::new();
    for v in rows {
        if v.is_empty() {
            continue;
        }
        if let Some(r) = expand(&cfg.result_format, key, Some(v), &|s| s.to_string()) {
            out.push(r);
        }
        if cfg.expansion_limit > 0 && out.len() > cfg.expansion_limit {
            return Err(MapError::temp(format!(
                "number of results exceeds expansion_limit {}",
                cfg.expansion_limit
            )));
        }
    }
    Ok(if out.is_empty() {
        None
    } else {
        Some(out.join(","))
    })
}

/// SQLite quoting: `'` doubled.
pub fn quote_sqlite(s: &str) -> String {
    s.replace('\'', "''")
}

/// `sqlite:/path.cf`.
pub struct SqliteMap {
    cfg: SqlConfig,
    conn: Mutex<Option<rusqlite::Connection>>,
}

impl SqliteMap {
    pub fn open(path: &str) -> Result<SqliteMap, MapError> {
        let cfg = SqlConfig::load(path)?;
        if cfg.get("dbpath").is_empty() {
            return Err(MapError::syntax(format!("{path}: missing \"dbpath\"")));
        }
        Ok(SqliteMap {
            cfg,
            conn: Mutex::new(None),
        })
    }

    fn query(&self, sql: &str) -> Result<Vec<String>, MapError> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| MapError::temp("connection lock poisoned"))?;
        if guard.is_none() {
            let c = rusqlite::Connection::open_with_flags(
                self.cfg.get("dbpath"),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| {
                MapError::temp(format!("open database {}: {e}", self.cfg.get("dbpath")))
            })?;
            let _ = c.busy_timeout(std::time::Duration::from_secs(5));
            *guard = Some(c);
        }
        let Some(conn) = guard.as_ref() else {
            return Err(MapError::temp("no connection"));
        };
        let run = || -> rusqlite::Result<Vec<String>> {
            let mut st = conn.prepare_cached(sql)?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                use rusqlite::types::ValueRef;
                let v = match r.get_ref(0)? {
                    ValueRef::Null => continue,
                    ValueRef::Integer(i) => i.to_string(),
                    ValueRef::Real(f) => f.to_string(),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                };
                out.push(v);
            }
            Ok(out)
        };
        run().map_err(|e| {
            // A broken connection (file replaced, locked) is retried next time.
            *guard = None;
            MapError::temp(format!("query failed: {e}"))
        })
    }
}

impl Map for SqliteMap {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        if !self.cfg.key_allowed(key) {
            return Ok(None);
        }
        let Some(sql) = expand(&self.cfg.query, key, None, &quote_sqlite) else {
            return Ok(None);
        };
        let rows = self.query(&sql)?;
        format_results(&self.cfg, key, &rows)
    }
}

/// Opens an SQL table of `kind`.
pub fn open(kind: &str, name: &str) -> Result<Box<dyn Map>, MapError> {
    match kind {
        "sqlite" => Ok(Box::new(SqliteMap::open(name)?)),
        _ => Err(MapError::spec(format!(
            "unsupported dictionary type: {kind} (not in this build of oxipost)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MapConfig, Table};

    #[test]
    fn expansion() {
        let q = &quote_sqlite;
        assert_eq!(
            expand("%s|%u|%d|%1|%2|%%", "O'Neil@Mail.Example.com", None, q).as_deref(),
            Some("O''Neil@Mail.Example.com|O''Neil|Mail.Example.com|com|Example|%")
        );
        assert_eq!(expand("%d", "nodomain", None, q), None);
        assert_eq!(expand("%u", "@d.example", None, q), None);
        assert_eq!(expand("%4", "a@b.c", None, q), None);
        assert_eq!(
            expand("%u at %d for %U", "x@y", Some("box@store"), q).as_deref(),
            Some("box at store for x")
        );
    }

    #[test]
    fn sqlite_lookups() {
        let d = tempfile::tempdir().expect("tempdir");
        let db = d.path().join("m.sqlite");
        let c = rusqlite::Connection::open(&db).expect("create");
        c.execute_batch(
            "CREATE TABLE alias(addr TEXT, goto TEXT);
             INSERT INTO alias VALUES('joe@example.com','joe@store');
             INSERT INTO alias VALUES('list@example.com','a@x');
             INSERT INTO alias VALUES('list@example.com','b@x');
             INSERT INTO alias VALUES('o''neil@example.com','quote');
             INSERT INTO alias VALUES('null@example.com',NULL);",
        )
        .expect("fill");
        drop(c);
        let cf = d.path().join("a.cf");
        let text = format!(
            "dbpath = {}\nquery = SELECT goto FROM alias\n  WHERE addr='%s'\nresult_format = <%s>\ndomain = example.com\nexpansion_limit = 2\n",
            db.display()
        );
        assert!(std::fs::write(&cf, text).is_ok());
        let t =
            Table::open(&format!("sqlite:{}", cf.display()), &MapConfig::default()).expect("open");
        let q = |k: &str| t.lookup(k);
        assert_eq!(
            q("Joe@Example.com").ok().flatten().as_deref(),
            Some("<joe@store>")
        );
        assert_eq!(
            q("list@example.com").ok().flatten().as_deref(),
            Some("<a@x>,<b@x>")
        );
        assert_eq!(
            q("o'neil@example.com").ok().flatten().as_deref(),
            Some("<quote>")
        );
        assert_eq!(q("null@example.com").ok().flatten(), None);
        assert_eq!(q("joe@other.example").ok().flatten(), None);
        assert_eq!(q("joe").ok().flatten(), None);
        // A database that cannot be opened is a temporary failure, not "not found".
        let cf2 = d.path().join("missing.cf");
        let text = format!(
            "dbpath = {}/nonexistent/x.sqlite\nquery = SELECT 1 WHERE '%s'<>''\n",
            d.path().display()
        );
        assert!(std::fs::write(&cf2, text).is_ok());
        let t2 =
            Table::open(&format!("sqlite:{}", cf2.display()), &MapConfig::default()).expect("open");
        assert!(
            t2.lookup("joe@example.com")
                .is_err_and(|e| e.is_temporary())
        );
    }

    #[test]
    fn bad_templates() {
        let d = tempfile::tempdir().expect("tempdir");
        let cf = d.path().join("b.cf");
        assert!(std::fs::write(&cf, "dbpath = /x\nquery = SELECT %x\n").is_ok());
        assert!(Table::open(&format!("sqlite:{}", cf.display()), &MapConfig::default()).is_err());
        assert!(Table::open("pgsql:/nonexistent.cf", &MapConfig::default()).is_err());
    }
}

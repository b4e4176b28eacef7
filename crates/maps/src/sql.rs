//! SQL tables: `sqlite:/path.cf` (sqlite_table(5)) and `pgsql:/path.cf` (pgsql_table(5)).
//! The configuration form, query expansion and result formatting are shared; each database
//! client is an [`SqlBackend`] behind the one [`SqlMap`].
//!
//! **Adding a backend** (as `mysql:` in [`crate::mysql`]): write a type implementing [`SqlBackend`]
//! (`connect` opens lazily and keeps the connection, `quote` escapes a value for inside
//! `'...'` in that dialect or refuses it, `query` returns text rows and drops a broken
//! connection so the next lookup reconnects), build it from the [`SqlConfig`] in
//! [`open`], and add one arm there. Nothing else changes: the lookup logic is
//! [`SqlMap::lookup`].
//!
//! The `.cf` file holds `name = value` lines (main.cf syntax: `#` comments, indented
//! continuation lines):
//!
//! - `dbpath` (sqlite): the database file, opened read-only;
//! - `hosts` (pgsql, default `localhost`): servers as `host`, `host:port`,
//!   `inet:host:port`, `unix:/directory` (holding `.s.PGSQL.5432`) or `unix:/socket`;
//!   several are tried in random order until one answers, as Postfix does (a host that
//!   failed is tried after the others for 60 seconds);
//! - `user`, `password`, `dbname` (pgsql): the login (trust, password, md5 or
//!   SCRAM-SHA-256 authentication);
//! - `connect_timeout` (pgsql, oxipost, default 5) and `query_timeout` (pgsql, oxipost,
//!   default 10): seconds;
//! - `query`: the SELECT, with `%%`, `%s` (the key), `%u` (its local part, or the whole
//!   key without `@`), `%d` (its domain), `%1`..`%9` (domain labels, `%1` the rightmost).
//!   Values are quoted for SQL (`'` doubled; for PostgreSQL a backslash is doubled too when
//!   the server has `standard_conforming_strings` off). A key holding NUL is not found.
//!   When the key lacks a part the query uses (`%d` without a domain, `%u` with an empty
//!   local part, `%3` of a two-label domain), nothing is queried and the key is not
//!   found, as in Postfix;
//! - `result_format` (default `%s`): each non-NULL, non-empty column 1 value formatted
//!   with `%s %u %d` (parts of the value) and `%S %U %D %1..%9` (parts of the key);
//!   several rows are joined with `,`;
//! - `domain`: a list of domains; when set, only `user@domain` keys with a listed domain
//!   are queried;
//! - `expansion_limit`: more results than this is a temporary failure (0: no limit);
//! - legacy `table`, `select_field`, `where_field`, `additional_conditions` build the
//!   query when `query` is absent.
//!
//! A database that cannot be opened, reached or queried is a temporary failure (callers
//! answer `451 4.3.0`); the connection is opened again at the next lookup (PostgreSQL: a
//! connection found broken when reused is reopened once at once, so a server restart
//! costs no failed lookup).

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
        Self::load_with_query(path, "query")
    }

    /// Reads a `.cf` file whose SELECT is the parameter `query_param` (the pgsql passdb's
    /// `password_query`); the legacy `table`... form applies to `query` only.
    pub fn load_with_query(path: &str, query_param: &str) -> Result<SqlConfig, MapError> {
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
        Self::from_params(path, params, query_param)
    }

    fn from_params(
        path: &str,
        params: HashMap<String, String>,
        query_param: &str,
    ) -> Result<SqlConfig, MapError> {
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        let mut query = get(query_param);
        if query.is_empty() && query_param != "query" {
            return Err(MapError::syntax(format!(
                "{path}: missing \"{query_param}\""
            )));
        }
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
            // An empty local part (`@domain`) is not queried either, as in Postfix.
            Some((l, d)) if !l.is_empty() => self.domains.iter().any(|x| x.eq_ignore_ascii_case(d)),
            _ => false,
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
    quote: &dyn Fn(&str) -> Option<String>,
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
            ('s', None) => quote(ks)?,
            ('u', None) if !ku.is_empty() => quote(ku)?,
            ('d', None) => quote(kd.filter(|d| !d.is_empty())?)?,
            ('s', Some((vs, _, _))) => vs.to_string(),
            ('u', Some((_, vu, _))) if !vu.is_empty() => vu.to_string(),
            ('d', Some((_, _, vd))) => vd.filter(|d| !d.is_empty())?.to_string(),
            ('S', _) => ks.to_string(),
            ('U', _) if !ku.is_empty() => ku.to_string(),
            ('D', _) => kd.filter(|d| !d.is_empty())?.to_string(),
            (d @ '1'..='9', v) => {
                let l = label(d as usize - '0' as usize)?;
                if v.is_none() {
                    quote(l)?
                } else {
                    l.to_string()
                }
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
        if let Some(r) = expand(&cfg.result_format, key, Some(v), &|s| Some(s.to_string())) {
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

/// Rows of text columns (`None` = NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// One database client behind an [`SqlMap`]. Calls are serialised by the map's mutex.
pub trait SqlBackend: Send {
    /// Opens the connection unless one is open. An error is a temporary failure.
    fn connect(&mut self) -> Result<(), MapError>;
    /// `s` escaped for inside a `'...'` literal of this database (after [`connect`], so
    /// server settings are known); `None`: the value cannot be asked for (not found).
    ///
    /// [`connect`]: SqlBackend::connect
    fn quote(&self, s: &str) -> Option<String>;
    /// Runs one query and returns its rows as text (`None` = NULL). On failure the
    /// backend drops a connection that may be broken.
    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, MapError>;
    /// The column names of the last successful query, when the client knows them (the
    /// pgsql passdb picks `password`, `uid`... by name; without names, by position).
    fn last_columns(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An SQL table: the shared `.cf` logic over one backend.
pub struct SqlMap<B: SqlBackend> {
    cfg: SqlConfig,
    backend: Mutex<B>,
}

impl<B: SqlBackend> SqlMap<B> {
    pub fn new(cfg: SqlConfig, backend: B) -> SqlMap<B> {
        SqlMap {
            cfg,
            backend: Mutex::new(backend),
        }
    }

    /// Expands `template` for `key` and runs it; `Ok(None)` when the key cannot be asked
    /// for (a part missing, a NUL, outside `domain`). For callers that want every column
    /// (the pgsql passdb).
    pub fn query_rows(
        &self,
        template: &str,
        key: &str,
    ) -> Result<Option<Vec<Vec<Option<String>>>>, MapError> {
        Ok(self.query_table(template, key)?.map(|(_, rows)| rows))
    }

    /// [`SqlMap::query_rows`] with the column names (empty when the backend does not
    /// report them).
    pub fn query_table(
        &self,
        template: &str,
        key: &str,
    ) -> Result<Option<(Vec<String>, Rows)>, MapError> {
        // Postfix never queries for an empty key ("empty lookup key value").
        if key.is_empty() || key.contains('\0') || !self.cfg.key_allowed(key) {
            return Ok(None);
        }
        let mut b = self
            .backend
            .lock()
            .map_err(|_| MapError::temp("connection lock poisoned"))?;
        b.connect()?;
        let Some(sql) = expand(template, key, None, &|s| b.quote(s)) else {
            return Ok(None);
        };
        let rows = b.query(&sql)?;
        Ok(Some((b.last_columns(), rows)))
    }

    pub fn config(&self) -> &SqlConfig {
        &self.cfg
    }
}

impl<B: SqlBackend> Map for SqlMap<B> {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        let Some(rows) = self.query_rows(&self.cfg.query, key)? else {
            return Ok(None);
        };
        let values: Vec<String> = rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        format_results(&self.cfg, key, &values)
    }
}

/// SQLite quoting: `'` doubled; a NUL cannot be asked for.
pub fn quote_sqlite(s: &str) -> Option<String> {
    (!s.contains('\0')).then(|| s.replace('\'', "''"))
}

/// `sqlite:/path.cf`: rusqlite, the file opened read-only.
pub struct Sqlite {
    dbpath: String,
    conn: Option<rusqlite::Connection>,
}

impl Sqlite {
    pub fn new(cfg: &SqlConfig, path: &str) -> Result<Sqlite, MapError> {
        if cfg.get("dbpath").is_empty() {
            return Err(MapError::syntax(format!("{path}: missing \"dbpath\"")));
        }
        Ok(Sqlite {
            dbpath: cfg.get("dbpath").to_string(),
            conn: None,
        })
    }
}

impl SqlBackend for Sqlite {
    fn connect(&mut self) -> Result<(), MapError> {
        if self.conn.is_none() {
            let c = rusqlite::Connection::open_with_flags(
                &self.dbpath,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| MapError::temp(format!("open database {}: {e}", self.dbpath)))?;
            let _ = c.busy_timeout(std::time::Duration::from_secs(5));
            self.conn = Some(c);
        }
        Ok(())
    }

    fn quote(&self, s: &str) -> Option<String> {
        quote_sqlite(s)
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, MapError> {
        let Some(conn) = self.conn.as_ref() else {
            return Err(MapError::temp("no connection"));
        };
        let run = || -> rusqlite::Result<Vec<Vec<Option<String>>>> {
            let mut st = conn.prepare_cached(sql)?;
            let n = st.column_count();
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                use rusqlite::types::ValueRef;
                let mut row = Vec::with_capacity(n);
                for i in 0..n {
                    row.push(match r.get_ref(i)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(i) => Some(i.to_string()),
                        ValueRef::Real(f) => Some(f.to_string()),
                        ValueRef::Text(t) | ValueRef::Blob(t) => {
                            Some(String::from_utf8_lossy(t).into_owned())
                        }
                    });
                }
                out.push(row);
            }
            Ok(out)
        };
        run().map_err(|e| {
            // A broken connection (file replaced, locked) is reopened next time.
            self.conn = None;
            MapError::temp(format!("query failed: {e}"))
        })
    }
}

/// `pgsql:/path.cf`: oxipost-pgwire.
pub struct Pgsql {
    endpoints: Vec<oxipost_pgwire::Endpoint>,
    params: oxipost_pgwire::Params,
    conn: Option<oxipost_pgwire::Connection>,
    /// Whether `conn` was used before (a failure on it may just be a stale connection).
    reused: bool,
    columns: Vec<String>,
    /// When each host last failed to connect.
    failed: Vec<Option<std::time::Instant>>,
}

fn seconds(cfg: &SqlConfig, path: &str, name: &str, default: u64) -> Result<u64, MapError> {
    let v = cfg.get(name).trim_end_matches('s');
    if v.is_empty() {
        return Ok(default);
    }
    v.parse()
        .map_err(|_| MapError::syntax(format!("{path}: bad {name}: {}", cfg.get(name))))
}

impl Pgsql {
    pub fn new(cfg: &SqlConfig, path: &str) -> Result<Pgsql, MapError> {
        let hosts = match cfg.get("hosts") {
            "" => "localhost",
            h => h,
        };
        let endpoints = hosts
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|h| !h.is_empty())
            .map(oxipost_pgwire::Endpoint::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MapError::syntax(format!("{path}: hosts: {e}")))?;
        let secs = std::time::Duration::from_secs;
        let params = oxipost_pgwire::Params {
            user: cfg.get("user").to_string(),
            password: cfg.get("password").to_string(),
            dbname: cfg.get("dbname").to_string(),
            connect_timeout: secs(seconds(cfg, path, "connect_timeout", 5)?),
            io_timeout: secs(seconds(cfg, path, "query_timeout", 10)?),
        };
        if params.dbname.is_empty() {
            return Err(MapError::syntax(format!("{path}: missing \"dbname\"")));
        }
        Ok(Pgsql {
            failed: vec![None; endpoints.len()],
            endpoints,
            params,
            conn: None,
            reused: false,
            columns: Vec::new(),
        })
    }

    /// Indexes of the hosts in random order (Postfix spreads its clients over the
    /// servers), those that failed within [`HOST_RETRY`] last.
    fn order(&self) -> Vec<usize> {
        use std::hash::{BuildHasher, Hasher};
        let mut v: Vec<usize> = (0..self.endpoints.len()).collect();
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let mut x = h.finish() | 1;
        for i in (1..v.len()).rev() {
            // xorshift: plenty for spreading load.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let recently_down = |i: &usize| {
            self.failed
                .get(*i)
                .copied()
                .flatten()
                .is_some_and(|t| t.elapsed() < HOST_RETRY)
        };
        v.sort_by_key(recently_down); // stable: random order within each group
        v
    }
}

/// How long a host that failed is tried only after the others (Postfix's pgsql client
/// waits 60 seconds before it retries a host that failed).
const HOST_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

impl SqlBackend for Pgsql {
    fn connect(&mut self) -> Result<(), MapError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut errors = Vec::new();
        for i in self.order() {
            let ep = &self.endpoints[i];
            match oxipost_pgwire::Connection::connect(ep, &self.params) {
                Ok(c) => {
                    self.conn = Some(c);
                    self.reused = false;
                    self.failed[i] = None;
                    return Ok(());
                }
                Err(e) => {
                    errors.push(e.to_string());
                    self.failed[i] = Some(std::time::Instant::now());
                }
            }
        }
        Err(MapError::temp(format!(
            "cannot connect to any PostgreSQL server: {}",
            errors.join("; ")
        )))
    }

    fn quote(&self, s: &str) -> Option<String> {
        let scs = self
            .conn
            .as_ref()
            .is_none_or(|c| c.standard_conforming_strings());
        oxipost_pgwire::quote_literal_body(s, scs)
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, MapError> {
        for attempt in 0..2 {
            let Some(conn) = self.conn.as_mut() else {
                return Err(MapError::temp("no connection"));
            };
            match conn.simple_query(sql) {
                Ok(r) => {
                    self.reused = true;
                    self.columns = r.columns;
                    return Ok(r.rows);
                }
                Err(e) => {
                    // A reused connection may have been closed since (the socket shut, or
                    // the server's "terminating connection" FATAL waiting in it).
                    let stale = self.reused && e.is_fatal();
                    if e.is_fatal() {
                        self.conn = None;
                    }
                    if stale && attempt == 0 {
                        // The server restarted since the last lookup: one fresh try.
                        self.connect()?;
                        continue;
                    }
                    return Err(MapError::temp(format!("query failed: {e}")));
                }
            }
        }
        Err(MapError::temp("query failed"))
    }

    fn last_columns(&self) -> Vec<String> {
        self.columns.clone()
    }
}

/// Opens an SQL table of `kind`.
pub fn open(kind: &str, name: &str) -> Result<Box<dyn Map>, MapError> {
    match kind {
        "sqlite" => {
            let cfg = SqlConfig::load(name)?;
            let b = Sqlite::new(&cfg, name)?;
            Ok(Box::new(SqlMap::new(cfg, b)))
        }
        "pgsql" => {
            let cfg = SqlConfig::load(name)?;
            let b = Pgsql::new(&cfg, name)?;
            Ok(Box::new(SqlMap::new(cfg, b)))
        }
        "mysql" => {
            let cfg = SqlConfig::load(name)?;
            let b = crate::mysql::Mysql::new(&cfg, name)?;
            Ok(Box::new(SqlMap::new(cfg, b)))
        }
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
        assert_eq!(q("joe\0@example.com").ok().flatten(), None);
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
        assert!(Table::open("mysql:/nonexistent.cf", &MapConfig::default()).is_err());
        assert!(std::fs::write(&cf, "hosts = h:x\ndbname = d\nquery = SELECT 1\n").is_ok());
        assert!(Table::open(&format!("pgsql:{}", cf.display()), &MapConfig::default()).is_err());
    }

    #[test]
    fn pgsql_server_down_is_temporary() {
        let d = tempfile::tempdir().expect("tempdir");
        let cf = d.path().join("p.cf");
        let text = "hosts = 127.0.0.1:1 unix:/nonexistent/dir\nuser = u\npassword = secret\n\
                    dbname = mail\nconnect_timeout = 2\nquery = SELECT goto FROM a WHERE k='%s'\n";
        assert!(std::fs::write(&cf, text).is_ok());
        let t =
            Table::open(&format!("pgsql:{}", cf.display()), &MapConfig::default()).expect("open");
        let e = t.lookup("joe@example.com").expect_err("an error");
        assert!(e.is_temporary(), "{e:?}");
        assert!(!e.message.contains("secret"));
        // A key that cannot be asked for is not found without touching the server.
        assert_eq!(t.lookup("a\0b").ok().flatten(), None);
    }

    #[test]
    fn pgsql_hosts_random_order_failed_last() {
        let d = tempfile::tempdir().expect("tempdir");
        let cf = d.path().join("h.cf");
        let text = "hosts = a:1, b:2 inet:c:3\ndbname = mail\nquery = SELECT '%s'\n";
        assert!(std::fs::write(&cf, text).is_ok());
        let path = cf.display().to_string();
        let cfg = SqlConfig::load(&path).expect("cf");
        let mut p = Pgsql::new(&cfg, &path).expect("pgsql");
        assert_eq!(p.endpoints.len(), 3);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..64 {
            let o = p.order();
            assert_eq!(o.len(), 3);
            firsts.insert(o[0]);
        }
        assert!(firsts.len() > 1, "always the same first host");
        p.failed[1] = Some(std::time::Instant::now());
        for _ in 0..16 {
            assert_eq!(p.order().last(), Some(&1));
        }
    }
}

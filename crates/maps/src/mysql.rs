//! `mysql:/path.cf` (mysql_table(5)): the [`SqlBackend`] over `oxipost-mysqlwire`. The
//! `.cf` form, query expansion and result formatting are [`crate::sql`]'s; this file adds
//! the MySQL parameters:
//!
//! - `hosts` (default `localhost`): `host`, `host:port`, `inet:host:port`, `[v6]:port`,
//!   `unix:/path/to/mysqld.sock`; `localhost` is the server's socket
//!   `/run/mysqld/mysqld.sock`, as with libmysqlclient (use `127.0.0.1` for TCP). Unix sockets are tried first, then TCP hosts, each group
//!   in random order (Postfix's order); a host that failed is skipped for
//!   `retry_interval` seconds (default 60) while another host is left to try — when all
//!   have failed, all are tried again at once, so a single server is back at the next
//!   lookup after it restarts;
//! - `user`, `password`, `dbname`: the login (`mysql_native_password`,
//!   `caching_sha2_password`; the default database);
//! - `connect_timeout` (oxipost, default 5) and `query_timeout` (oxipost, default 10):
//!   seconds.
//!
//! Values in queries are escaped as `mysql_real_escape_string` does (`\`, `'`, `"`, NUL,
//! LF, CR, ^Z get a backslash; only `'` is doubled under `NO_BACKSLASH_ESCAPES`); a key
//! holding NUL is not found. A connection found broken when reused (server restarted,
//! `wait_timeout` passed) is reopened once at once; a server that cannot be reached or
//! that refuses the query is a temporary failure. Not supported: `tls_*`, `option_file`,
//! `option_group`, `idle_interval`, `require_result_set`.

use crate::MapError;
use crate::sql::{SqlBackend, SqlConfig};
use oxipost_mysqlwire::{Conn, Endpoint, Opts};
use std::time::{Duration, Instant};

/// The backend of one `mysql:` table (one connection, to one of the hosts).
pub struct Mysql {
    hosts: Vec<Host>,
    opts: Opts,
    retry_interval: Duration,
    conn: Option<Conn>,
    /// Whether `conn` answered a query before (a failure may just mean a stale connection).
    reused: bool,
    /// The column names of the last result (the mysql passdb picks columns by name).
    columns: Vec<String>,
}

struct Host {
    endpoint: Endpoint,
    /// Not tried again before this (after a failure).
    down_until: Option<Instant>,
}

fn seconds(cfg: &SqlConfig, path: &str, name: &str, default: u64) -> Result<u64, MapError> {
    let v = cfg.get(name).trim_end_matches('s');
    if v.is_empty() {
        return Ok(default);
    }
    v.parse()
        .map_err(|_| MapError::syntax(format!("{path}: bad {name}: {}", cfg.get(name))))
}

/// A small xorshift seeded from the process id and the hasher's random keys: enough to
/// spread clients over servers.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() | 1
}

fn shuffle<T>(v: &mut [T], x: &mut u64) {
    for i in (1..v.len()).rev() {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        v.swap(i, (*x % (i as u64 + 1)) as usize);
    }
}

impl Mysql {
    pub fn new(cfg: &SqlConfig, path: &str) -> Result<Mysql, MapError> {
        let hosts = match cfg.get("hosts") {
            "" => "localhost",
            h => h,
        };
        let hosts = hosts
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|h| !h.is_empty())
            .map(|h| {
                Endpoint::parse(h).map(|endpoint| Host {
                    endpoint,
                    down_until: None,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MapError::syntax(format!("{path}: hosts: {e}")))?;
        if hosts.is_empty() {
            return Err(MapError::syntax(format!("{path}: empty \"hosts\"")));
        }
        if cfg.get("dbname").is_empty() {
            return Err(MapError::syntax(format!("{path}: missing \"dbname\"")));
        }
        // The endpoint is set for each connection attempt (see `connect`).
        let mut opts = Opts::new(
            Endpoint::Unix("/".into()),
            cfg.get("user"),
            cfg.get("password"),
            cfg.get("dbname"),
        );
        opts.connect_timeout = Duration::from_secs(seconds(cfg, path, "connect_timeout", 5)?);
        opts.read_timeout = Duration::from_secs(seconds(cfg, path, "query_timeout", 10)?);
        Ok(Mysql {
            hosts,
            opts,
            retry_interval: Duration::from_secs(seconds(cfg, path, "retry_interval", 60)?),
            conn: None,
            reused: false,
            columns: Vec::new(),
        })
    }

    /// The order to try hosts in: Unix sockets, then TCP, random within each; hosts
    /// marked down last (and only when nothing else is left).
    fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let up = |h: &Host| h.down_until.is_none_or(|t| t <= now);
        let mut x = seed();
        let mut out = Vec::with_capacity(self.hosts.len());
        for want_up in [true, false] {
            for unix in [true, false] {
                let mut group: Vec<usize> = (0..self.hosts.len())
                    .filter(|&i| {
                        let h = &self.hosts[i];
                        up(h) == want_up && matches!(h.endpoint, Endpoint::Unix(_)) == unix
                    })
                    .collect();
                shuffle(&mut group, &mut x);
                out.extend(group);
            }
            if !out.is_empty() {
                break;
            }
        }
        out
    }
}

impl SqlBackend for Mysql {
    fn connect(&mut self) -> Result<(), MapError> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut errors = Vec::new();
        for i in self.order() {
            self.opts.endpoint = self.hosts[i].endpoint.clone();
            match Conn::connect(&self.opts) {
                Ok(c) => {
                    self.hosts[i].down_until = None;
                    self.conn = Some(c);
                    self.reused = false;
                    return Ok(());
                }
                Err(e) => {
                    self.hosts[i].down_until = Some(Instant::now() + self.retry_interval);
                    errors.push(format!("{}: {e}", self.hosts[i].endpoint));
                }
            }
        }
        Err(MapError::temp(format!(
            "cannot connect to any MySQL server: {}",
            errors.join("; ")
        )))
    }

    fn quote(&self, s: &str) -> Option<String> {
        if s.contains('\0') {
            return None;
        }
        Some(match &self.conn {
            Some(c) => c.escape(s),
            None => oxipost_mysqlwire::escape(s, false),
        })
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, MapError> {
        for attempt in 0..2 {
            let Some(conn) = self.conn.as_mut() else {
                return Err(MapError::temp("no connection"));
            };
            match conn.query(sql) {
                Ok(rs) => {
                    self.reused = true;
                    self.columns = rs.columns.into_iter().map(|c| c.name).collect();
                    return Ok(rs
                        .rows
                        .into_iter()
                        .map(|r| {
                            r.into_iter()
                                .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                                .collect()
                        })
                        .collect());
                }
                Err(e) => {
                    let broken = e.is_broken();
                    if broken {
                        self.conn = None;
                    }
                    if broken && self.reused && attempt == 0 {
                        // The server restarted or dropped the idle connection since the
                        // last lookup: one fresh try. The query is read-only.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MapConfig, Table};

    fn cf(dir: &std::path::Path, text: &str) -> String {
        let p = dir.join("m.cf");
        assert!(std::fs::write(&p, text).is_ok());
        format!("mysql:{}", p.display())
    }

    #[test]
    fn configuration() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = MapConfig::default();
        // dbname is required; hosts must parse.
        assert!(Table::open(&cf(d.path(), "query = SELECT 1\n"), &c).is_err());
        assert!(
            Table::open(
                &cf(d.path(), "dbname = x\nhosts = ,\nquery = SELECT 1\n"),
                &c
            )
            .is_err()
        );
        assert!(
            Table::open(
                &cf(
                    d.path(),
                    "dbname = x\nhosts = unix:rel\nquery = SELECT '%s'\n"
                ),
                &c
            )
            .is_err()
        );
        let cfg = SqlConfig {
            params: [
                ("dbname", "m"),
                ("hosts", "inet:db1:3307 unix:/s1, db2 unix:/s2"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
            ..SqlConfig::default()
        };
        let mut m = Mysql::new(&cfg, "t.cf").expect("new");
        let o = m.order();
        assert_eq!(o.len(), 4);
        // Unix sockets first.
        assert!(o[..2].iter().all(|&i| i == 1 || i == 3), "{o:?}");
        // A host marked down is left out while others are up; all down: all tried.
        m.hosts[1].down_until = Some(Instant::now() + Duration::from_secs(60));
        assert_eq!(m.order().len(), 3);
        assert!(!m.order().contains(&1));
        for h in &mut m.hosts {
            h.down_until = Some(Instant::now() + Duration::from_secs(60));
        }
        assert_eq!(m.order().len(), 4);
        // Quoting before a connection: backslash escapes; NUL is not asked.
        assert_eq!(m.quote("o'n\\e").as_deref(), Some("o\\'n\\\\e"));
        assert_eq!(m.quote("a\0b"), None);
    }

    #[test]
    fn server_down_is_temporary() {
        let d = tempfile::tempdir().expect("tempdir");
        let sock = d.path().join("nothing.sock");
        let spec = cf(
            d.path(),
            &format!(
                "hosts = unix:{} inet:127.0.0.1:1\nuser = u\npassword = secret-pw\ndbname = m\nquery = SELECT v FROM t WHERE k='%s'\n",
                sock.display()
            ),
        );
        let t = Table::open(&spec, &MapConfig::default()).expect("open");
        let e = t.lookup("joe@example.com").expect_err("down");
        assert!(e.is_temporary());
        assert!(!e.message.contains("secret-pw"), "{}", e.message);
        // A key with NUL is not asked for at all.
        assert_eq!(t.lookup("a\0b").ok(), Some(None));
    }
}

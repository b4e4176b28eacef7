//! SQLite virtual users, the embedded default user database: one file with a `domains`
//! table and a `users` table (domain, user, password hash, mailbox path, quota, enabled).
//! The `oxipost-user` tool writes it; the auth service only reads it.
//!
//! ```sql
//! CREATE TABLE domains (domain TEXT PRIMARY KEY, enabled INTEGER NOT NULL DEFAULT 1);
//! CREATE TABLE users (domain TEXT NOT NULL, user TEXT NOT NULL, password TEXT NOT NULL,
//!     mailbox TEXT NOT NULL, quota INTEGER NOT NULL DEFAULT 0,
//!     enabled INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (domain, user));
//! ```
//! Passwords are stored with a Dovecot scheme prefix (`{SHA512-CRYPT}$6$...`), mailboxes
//! as paths relative to the virtual mailbox base (`example.test/alice/`).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS domains (
    domain TEXT PRIMARY KEY,
    enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS users (
    domain TEXT NOT NULL,
    user TEXT NOT NULL,
    password TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    quota INTEGER NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (domain, user)
);
";

/// One user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub user: String,
    pub domain: String,
    pub password: String,
    pub mailbox: String,
    pub quota: i64,
    /// The user and its domain are both enabled.
    pub enabled: bool,
}

impl UserRow {
    pub fn login(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }
}

/// Splits `user@domain` (lower-cased domain); None for a login without a domain.
pub fn split_login(login: &str) -> Option<(String, String)> {
    let (u, d) = login.rsplit_once('@')?;
    if u.is_empty() || d.is_empty() || login.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    Some((u.to_owned(), d.to_ascii_lowercase()))
}

pub struct UserDb {
    conn: Connection,
}

fn e(err: rusqlite::Error) -> String {
    err.to_string()
}

impl UserDb {
    /// Opens (creating if needed) a database for changes.
    pub fn open_rw(path: &Path) -> Result<UserDb, String> {
        let conn = Connection::open(path).map_err(|x| format!("{}: {x}", path.display()))?;
        conn.execute_batch(SCHEMA)
            .map_err(|x| format!("{}: {x}", path.display()))?;
        Ok(UserDb { conn })
    }

    /// Opens an existing database read-only (the auth service).
    pub fn open_ro(path: &Path) -> Result<UserDb, String> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|x| format!("{}: {x}", path.display()))?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        Ok(UserDb { conn })
    }

    pub fn add_domain(&self, domain: &str) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO domains (domain) VALUES (?1)",
                params![domain.to_ascii_lowercase()],
            )
            .map(|_| ())
            .map_err(e)
    }

    /// Removes a domain and its users; false when it did not exist.
    pub fn del_domain(&self, domain: &str) -> Result<bool, String> {
        let d = domain.to_ascii_lowercase();
        self.conn
            .execute("DELETE FROM users WHERE domain = ?1", params![d])
            .map_err(e)?;
        let n = self
            .conn
            .execute("DELETE FROM domains WHERE domain = ?1", params![d])
            .map_err(e)?;
        Ok(n > 0)
    }

    pub fn domains(&self) -> Result<Vec<(String, bool)>, String> {
        let mut st = self
            .conn
            .prepare("SELECT domain, enabled FROM domains ORDER BY domain")
            .map_err(e)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    /// Adds a user (and its domain); an existing user is an error.
    pub fn add_user(
        &self,
        login: &str,
        hash: &str,
        mailbox: &str,
        quota: i64,
    ) -> Result<(), String> {
        let (u, d) = split_login(login).ok_or_else(|| format!("{login}: not user@domain"))?;
        self.add_domain(&d)?;
        self.conn
            .execute(
                "INSERT INTO users (domain, user, password, mailbox, quota) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d, u, hash, mailbox, quota],
            )
            .map(|_| ())
            .map_err(|x| match x {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    format!("{login}: user exists")
                }
                other => other.to_string(),
            })
    }

    /// Changes a password; false when there is no such user.
    pub fn set_password(&self, login: &str, hash: &str) -> Result<bool, String> {
        let (u, d) = split_login(login).ok_or_else(|| format!("{login}: not user@domain"))?;
        let n = self
            .conn
            .execute(
                "UPDATE users SET password = ?3 WHERE domain = ?1 AND user = ?2",
                params![d, u, hash],
            )
            .map_err(e)?;
        Ok(n > 0)
    }

    /// Enables or disables a user; false when there is no such user.
    pub fn set_enabled(&self, login: &str, enabled: bool) -> Result<bool, String> {
        let (u, d) = split_login(login).ok_or_else(|| format!("{login}: not user@domain"))?;
        let n = self
            .conn
            .execute(
                "UPDATE users SET enabled = ?3 WHERE domain = ?1 AND user = ?2",
                params![d, u, i64::from(enabled)],
            )
            .map_err(e)?;
        Ok(n > 0)
    }

    pub fn del_user(&self, login: &str) -> Result<bool, String> {
        let (u, d) = split_login(login).ok_or_else(|| format!("{login}: not user@domain"))?;
        let n = self
            .conn
            .execute(
                "DELETE FROM users WHERE domain = ?1 AND user = ?2",
                params![d, u],
            )
            .map_err(e)?;
        Ok(n > 0)
    }

    const SELECT: &str = "SELECT u.user, u.domain, u.password, u.mailbox, u.quota,
            u.enabled AND COALESCE(d.enabled, 1)
        FROM users u LEFT JOIN domains d ON d.domain = u.domain";

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
        Ok(UserRow {
            user: r.get(0)?,
            domain: r.get(1)?,
            password: r.get(2)?,
            mailbox: r.get(3)?,
            quota: r.get(4)?,
            enabled: r.get::<_, i64>(5)? != 0,
        })
    }

    pub fn find(&self, login: &str) -> Result<Option<UserRow>, String> {
        let Some((u, d)) = split_login(login) else {
            return Ok(None);
        };
        self.conn
            .query_row(
                &format!("{} WHERE u.domain = ?1 AND u.user = ?2", Self::SELECT),
                params![d, u],
                Self::row,
            )
            .optional()
            .map_err(e)
    }

    /// The password schemes in use by enabled users (`{SCHEME}` prefixes, upper-case;
    /// `CRYPT` without one, as [`crate::scheme::split`]).
    pub fn schemes(&self) -> Result<Vec<String>, String> {
        let mut st = self
            .conn
            .prepare(
                "SELECT DISTINCT CASE WHEN password LIKE '{%}%'
                    THEN upper(substr(password, 2, instr(password, '}') - 2)) ELSE 'CRYPT' END
                 FROM users WHERE enabled",
            )
            .map_err(e)?;
        let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    pub fn users(&self, domain: Option<&str>) -> Result<Vec<UserRow>, String> {
        let d = domain.map(str::to_ascii_lowercase);
        let mut st = self
            .conn
            .prepare(&format!(
                "{} WHERE ?1 IS NULL OR u.domain = ?1 ORDER BY u.domain, u.user",
                Self::SELECT
            ))
            .map_err(e)?;
        let rows = st.query_map(params![d], Self::row).map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_domains() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("users.db");
        let db = UserDb::open_rw(&p).expect("open");
        db.add_user("alice@Example.TEST", "{PLAIN}pw", "example.test/alice/", 0)
            .expect("add");
        assert!(
            db.add_user("alice@example.test", "{PLAIN}x", "m", 0)
                .is_err()
        );
        let ro = UserDb::open_ro(&p).expect("ro");
        let r = ro.find("alice@example.test").expect("find").expect("row");
        assert_eq!(r.password, "{PLAIN}pw");
        assert_eq!(ro.schemes().expect("schemes"), vec!["PLAIN".to_string()]);
        assert!(r.enabled);
        assert!(
            db.set_password("alice@example.test", "{PLAIN}new")
                .expect("pw")
        );
        assert!(
            db.set_enabled("alice@example.test", false)
                .expect("disable")
        );
        assert!(
            !ro.find("alice@example.test")
                .expect("f")
                .expect("r")
                .enabled
        );
        assert_eq!(db.users(None).expect("list").len(), 1);
        assert!(db.del_user("alice@example.test").expect("del"));
        assert!(ro.find("alice@example.test").expect("find").is_none());
        assert_eq!(
            db.domains().expect("d"),
            vec![("example.test".into(), true)]
        );
    }
}

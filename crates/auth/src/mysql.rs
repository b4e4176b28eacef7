//! The `mysql:/path/to/file.cf` password database: users in MySQL or MariaDB, asked
//! through the same `.cf` form as the `mysql:` lookup table (mysql_table(5): `hosts`,
//! `user`, `password`, `dbname`, `connect_timeout`, `query_timeout`, `retry_interval`,
//! `domain`), with the SELECT in `password_query`, exactly as the `pgsql:` passdb
//! ([`crate::pgsql`]) does: `%s` the login, `%u` its local part, `%d` its domain,
//! `%1`..`%9` domain labels, `%%`; values escaped as `mysql_real_escape_string` does. For
//! example
//!
//! ```text
//! password_query = SELECT password, CONCAT('maildir:/srv/vmail/', maildir) AS mail
//!     FROM users WHERE local_part = '%u' AND domain = '%d' AND active = 1
//! ```
//!
//! Columns are taken by name, as for pgsql: `password` (`{SCHEME}hash`; NULL or empty:
//! the user may not log in), optional `uid`, `gid`, `home`, `mail`/`userdb_mail`, `user`.
//! No row: no such user; several rows, or a server that is down or fails the query: a
//! temporary failure, never an accept. One connection per `.cf` file per auth process,
//! opened at the first login and reopened after a loss; the file is read once, as
//! `mail_owner`.

use std::path::Path;

use oxipost_maps::mysql::Mysql;

use crate::sqldb::{Opened, Row};

static OPEN: Opened<Mysql> = Opened::new();

/// Looks `login` up. `Err` is a temporary failure (its text names the file, never the
/// database password).
pub fn find(path: &Path, login: &str) -> Result<Option<Row>, String> {
    OPEN.find("mysql", path, login, Mysql::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_password_query_and_server_down() {
        let d = tempfile::tempdir().expect("tmp");
        let cf = d.path().join("m.cf");
        std::fs::write(
            &cf,
            "hosts = 127.0.0.1:1\ndbname = mail\nquery = SELECT 1\n",
        )
        .expect("write");
        assert!(find(&cf, "a@b").is_err_and(|e| e.contains("password_query")));
        let cf2 = d.path().join("n.cf");
        std::fs::write(
            &cf2,
            "hosts = 127.0.0.1:1\nuser = u\npassword = s3cret\ndbname = mail\n\
             password_query = SELECT password FROM users WHERE email = '%s'\n",
        )
        .expect("write");
        let e = find(&cf2, "a@b").expect_err("down");
        assert!(e.contains("cannot connect") && !e.contains("s3cret"), "{e}");
        assert!(e.starts_with("mysql:"), "{e}");
        // A login with a NUL is never asked for.
        assert_eq!(find(&cf2, "a\0b"), Ok(None));
    }
}

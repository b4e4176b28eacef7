//! The `pgsql:/path/to/file.cf` password database: users in PostgreSQL, asked through the
//! same `.cf` form as the `pgsql:` lookup table (pgsql_table(5): `hosts`, `user`,
//! `password`, `dbname`, `connect_timeout`, `query_timeout`, `domain`), with the SELECT in
//! `password_query` (Dovecot's name) and the table's escapes: `%s` the login, `%u` its
//! local part, `%d` its domain, `%1`..`%9` domain labels, `%%`; values quoted the
//! PostgreSQL way. For example
//!
//! ```text
//! password_query = SELECT password, home, 'maildir:' || maildir AS mail
//!     FROM users WHERE email = '%s' AND active
//! ```
//!
//! Columns are taken by name (Dovecot's): `password` (`{SCHEME}hash` as in the other
//! passdbs; NULL or empty: the user may not log in), and optional `uid`, `gid` (default
//! `mail_owner`'s), `home`, `mail` or `userdb_mail` (default `maildir:~/Maildir`), `user`
//! (the canonical login name; default the login as given). No row: no such user; several
//! rows, or a server that is down or fails the query: a temporary failure, never an accept.
//!
//! One connection per `.cf` file per auth process, opened at the first login and reopened
//! after a loss. The file is read once, as `mail_owner` (the auth service drops to it), so
//! it must be readable by that user; keep it mode 0600 since it holds a password.

use std::path::Path;

use oxipost_maps::sql::Pgsql;

use crate::sqldb::{Opened, Row};

static OPEN: Opened<Pgsql> = Opened::new();

/// Looks `login` up. `Err` is a temporary failure (its text names the file, never the
/// database password).
pub fn find(path: &Path, login: &str) -> Result<Option<Row>, String> {
    OPEN.find("pgsql", path, login, Pgsql::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_password_query_and_server_down() {
        let d = tempfile::tempdir().expect("tmp");
        let cf = d.path().join("p.cf");
        std::fs::write(
            &cf,
            "hosts = 127.0.0.1:1\ndbname = mail\nquery = SELECT 1\n",
        )
        .expect("write");
        assert!(find(&cf, "a@b").is_err_and(|e| e.contains("password_query")));
        let cf2 = d.path().join("q.cf");
        std::fs::write(
            &cf2,
            "hosts = 127.0.0.1:1\nuser = u\npassword = s3cret\ndbname = mail\n\
             password_query = SELECT password FROM users WHERE email = '%s'\n",
        )
        .expect("write");
        let e = find(&cf2, "a@b").expect_err("down");
        assert!(e.contains("cannot connect") && !e.contains("s3cret"), "{e}");
        // A login with a NUL is never asked for.
        assert_eq!(find(&cf2, "a\0b"), Ok(None));
    }
}

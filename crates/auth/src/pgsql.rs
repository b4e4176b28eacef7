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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oxipost_maps::sql::{Pgsql, SqlConfig, SqlMap};

/// What the database says about a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub user: Option<String>,
    pub password: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub home: Option<String>,
    pub mail: Option<String>,
}

type Db = Arc<SqlMap<Pgsql>>;

/// Opened databases by `.cf` path (a handful per process, found by a linear scan).
static OPEN: Mutex<Vec<(PathBuf, Db)>> = Mutex::new(Vec::new());

fn open(path: &Path) -> Result<Db, String> {
    let mut open = OPEN.lock().map_err(|_| "pgsql passdb: lock poisoned")?;
    if let Some((_, db)) = open.iter().find(|(p, _)| p == path) {
        return Ok(Arc::clone(db));
    }
    let name = path.display().to_string();
    let cfg = SqlConfig::load_with_query(&name, "password_query").map_err(|e| e.message)?;
    let backend = Pgsql::new(&cfg, &name).map_err(|e| e.message)?;
    let db = Arc::new(SqlMap::new(cfg, backend));
    open.push((path.to_path_buf(), Arc::clone(&db)));
    Ok(db)
}

/// Looks `login` up. `Err` is a temporary failure (its text names the file, never the
/// database password).
pub fn find(path: &Path, login: &str) -> Result<Option<Row>, String> {
    let db = open(path)?;
    let template = db.config().query.clone();
    let fail = |e: String| format!("pgsql:{}: {e}", path.display());
    let Some((columns, rows)) = db
        .query_table(&template, login)
        .map_err(|e| fail(e.message))?
    else {
        return Ok(None);
    };
    match rows.len() {
        0 => Ok(None),
        1 => row_from(&columns, rows.into_iter().next().unwrap_or_default())
            .map(Some)
            .map_err(fail),
        n => Err(fail(format!(
            "password_query returned {n} rows for one user"
        ))),
    }
}

/// Names the values of one row: by column name, or by position (`password, uid, gid,
/// home, mail`) when the client reports no names.
pub(crate) fn row_from(columns: &[String], row: Vec<Option<String>>) -> Result<Row, String> {
    const POSITIONAL: [&str; 5] = ["password", "uid", "gid", "home", "mail"];
    let mut out = Row::default();
    for (i, v) in row.into_iter().enumerate() {
        let name = match columns.get(i) {
            Some(c) => c.to_ascii_lowercase(),
            None => POSITIONAL
                .get(i)
                .map_or_else(String::new, |s| (*s).to_owned()),
        };
        let Some(v) = v.filter(|v| !v.is_empty()) else {
            continue;
        };
        let num = |v: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("column {name}: not a number: {v:?}"))
        };
        match name.as_str() {
            "password" => out.password = Some(v),
            "uid" => out.uid = Some(num(&v)?),
            "gid" => out.gid = Some(num(&v)?),
            "home" => out.home = Some(v),
            "mail" | "userdb_mail" => out.mail = Some(v),
            "user" | "username" => out.user = Some(v),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_by_name_and_position() {
        let cols: Vec<String> = ["Password", "home", "userdb_mail", "uid", "extra"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let r = row_from(
            &cols,
            vec![
                Some("{PLAIN}pw".into()),
                Some("/h".into()),
                Some("maildir:/m".into()),
                None,
                Some("x".into()),
            ],
        )
        .expect("row");
        assert_eq!(
            r,
            Row {
                password: Some("{PLAIN}pw".into()),
                home: Some("/h".into()),
                mail: Some("maildir:/m".into()),
                ..Row::default()
            }
        );
        let r = row_from(&[], vec![Some("{PLAIN}x".into()), Some("1001".into())]).expect("row");
        assert_eq!(
            (r.password.as_deref(), r.uid),
            (Some("{PLAIN}x"), Some(1001))
        );
        assert!(row_from(&["uid".into()], vec![Some("-1".into())]).is_err());
    }

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

//! What the SQL password databases (`pgsql:` in [`crate::pgsql`], `mysql:` in
//! [`crate::mysql`]) share: one open table per `.cf` file per process, the
//! `password_query` run for a login, and its row read by column name. The backends differ
//! only in their client and their quoting, which `oxipost_maps::sql` provides.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oxipost_maps::MapError;
use oxipost_maps::sql::{SqlBackend, SqlConfig, SqlMap};

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

/// The tables a process has opened, by `.cf` path (a handful, found by a linear scan).
pub struct Opened<B: SqlBackend>(Mutex<Vec<(PathBuf, Arc<SqlMap<B>>)>>);

impl<B: SqlBackend> Default for Opened<B> {
    fn default() -> Opened<B> {
        Opened::new()
    }
}

impl<B: SqlBackend> Opened<B> {
    pub const fn new() -> Opened<B> {
        Opened(Mutex::new(Vec::new()))
    }

    fn open(
        &self,
        kind: &str,
        path: &Path,
        connect: fn(&SqlConfig, &str) -> Result<B, MapError>,
    ) -> Result<Arc<SqlMap<B>>, String> {
        let mut open = self
            .0
            .lock()
            .map_err(|_| format!("{kind} passdb: lock poisoned"))?;
        if let Some((_, db)) = open.iter().find(|(p, _)| p == path) {
            return Ok(Arc::clone(db));
        }
        let name = path.display().to_string();
        let cfg = SqlConfig::load_with_query(&name, "password_query").map_err(|e| e.message)?;
        let backend = connect(&cfg, &name).map_err(|e| e.message)?;
        let db = Arc::new(SqlMap::new(cfg, backend));
        open.push((path.to_path_buf(), Arc::clone(&db)));
        Ok(db)
    }

    /// Looks `login` up in the `kind:path` passdb. `Err` is a temporary failure (its text
    /// names the file, never the database password).
    pub fn find(
        &self,
        kind: &str,
        path: &Path,
        login: &str,
        connect: fn(&SqlConfig, &str) -> Result<B, MapError>,
    ) -> Result<Option<Row>, String> {
        let db = self.open(kind, path, connect)?;
        let template = db.config().query.clone();
        let fail = |e: String| format!("{kind}:{}: {e}", path.display());
        let Some((columns, rows)) = db
            .query_table(&template, login)
            .map_err(|e| fail(e.message))?
        else {
            return Ok(None);
        };
        let mut rows = rows.into_iter();
        match (rows.next(), rows.len()) {
            (None, _) => Ok(None),
            (Some(row), 0) => row_from(&columns, row).map(Some).map_err(fail),
            (Some(_), n) => Err(fail(format!(
                "password_query returned {} rows for one user",
                n + 1
            ))),
        }
    }
}

/// Names the values of one row: by column name, or by position (`password, uid, gid,
/// home, mail`) when the client reports no names.
fn row_from(columns: &[String], row: Vec<Option<String>>) -> Result<Row, String> {
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
}

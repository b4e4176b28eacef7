//! Password databases, chosen by `auth_passdb` (a list, tried in order; the first that
//! knows the user decides):
//!
//! - `shadow`: system users; the hash from `/etc/shadow` checked with the host's crypt(3)
//!   (yescrypt included), uid/gid/home from the passwd database. Needs root.
//! - `passwd-file:/path`: Dovecot's format, `user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`
//!   (empty uid/gid mean `mail_owner`'s; `userdb_mail=`/`mail=` in the extra fields sets
//!   the mail location). Re-read at every lookup, so edits apply at once.
//! - `sqlite:/path/users.db`: virtual users (see [`crate::sqlite`]).
//! - `pgsql:/path/file.cf`: users in PostgreSQL, the `pgsql:` table's `.cf` form with a
//!   `password_query` (see [`crate::pgsql`]).
//! - `mysql:/path/file.cf`: users in MySQL/MariaDB, the `mysql:` table's `.cf` form with
//!   a `password_query`, columns as for pgsql (see [`crate::mysql`]).

use std::path::{Path, PathBuf};

use oxipost_ipc::auth::UserInfo;

use crate::scheme;
use crate::sqlite::UserDb;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassDb {
    Shadow,
    PasswdFile(PathBuf),
    Sqlite(PathBuf),
    Pgsql(PathBuf),
    Mysql(PathBuf),
}

/// Answers for users without their own ids (virtual users): `mail_owner`'s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Defaults {
    pub uid: u32,
    pub gid: u32,
}

/// The outcome of a password check.
#[derive(Debug)]
pub enum Verdict {
    Ok(UserInfo),
    Mismatch,
    NoUser,
    /// The database could not be asked (a temporary failure, never an accept).
    Unavailable(String),
}

/// A stored password and the user it belongs to.
struct Found {
    stored: String,
    info: UserInfo,
    enabled: bool,
}

impl PassDb {
    /// Parses `shadow`, `passwd-file:/path`, `sqlite:/path`.
    pub fn parse(spec: &str) -> Result<PassDb, String> {
        match spec.split_once(':') {
            None if spec.eq_ignore_ascii_case("shadow") => Ok(PassDb::Shadow),
            Some(("passwd-file", p)) if p.starts_with('/') => Ok(PassDb::PasswdFile(p.into())),
            Some(("sqlite", p)) if p.starts_with('/') => Ok(PassDb::Sqlite(p.into())),
            Some(("pgsql", p)) if p.starts_with('/') => Ok(PassDb::Pgsql(p.into())),
            Some(("mysql", p)) if p.starts_with('/') => Ok(PassDb::Mysql(p.into())),
            _ => Err(format!(
                "auth_passdb: {spec:?}: expected shadow, passwd-file:/path, sqlite:/path, \
                 pgsql:/path.cf or mysql:/path.cf"
            )),
        }
    }

    pub fn needs_root(&self) -> bool {
        matches!(self, PassDb::Shadow)
    }

    fn find(&self, user: &str, defaults: Defaults) -> Result<Option<Found>, String> {
        if user.is_empty() || user.contains([':', '\n', '\0']) {
            return Ok(None);
        }
        match self {
            PassDb::Shadow => shadow_find(Path::new("/etc/shadow"), user),
            PassDb::PasswdFile(p) => passwd_file_find(p, user, defaults),
            PassDb::Sqlite(p) => {
                let db = UserDb::open_ro(p)?;
                Ok(db.find(user)?.map(|r| Found {
                    info: UserInfo {
                        user: r.login(),
                        uid: defaults.uid,
                        gid: defaults.gid,
                        home: r.mailbox.clone(),
                        mail: format!("maildir:{}", r.mailbox),
                    },
                    stored: r.password,
                    enabled: r.enabled,
                }))
            }
            PassDb::Pgsql(p) => {
                Ok(crate::pgsql::find(p, user)?.map(|r| sql_found(r, user, defaults)))
            }
            PassDb::Mysql(p) => {
                Ok(crate::mysql::find(p, user)?.map(|r| sql_found(r, user, defaults)))
            }
        }
    }
}

/// A user row of an SQL passdb (pgsql, mysql) with the defaults filled in.
fn sql_found(r: crate::sqldb::Row, user: &str, defaults: Defaults) -> Found {
    Found {
        info: UserInfo {
            user: r.user.unwrap_or_else(|| user.to_owned()),
            uid: r.uid.unwrap_or(defaults.uid),
            gid: r.gid.unwrap_or(defaults.gid),
            mail: r.mail.unwrap_or_else(|| "maildir:~/Maildir".into()),
            home: r.home.unwrap_or_default(),
        },
        enabled: r.password.is_some(),
        stored: r.password.unwrap_or_default(),
    }
}

/// Checks `user`/`password` against the databases in order.
pub fn verify(dbs: &[PassDb], user: &str, password: &str, defaults: Defaults) -> Verdict {
    let mut trouble = None;
    for db in dbs {
        match db.find(user, defaults) {
            Ok(Some(f)) => {
                return match scheme::verify(password, &f.stored) {
                    Ok(true) if f.enabled => Verdict::Ok(f.info),
                    Ok(_) => Verdict::Mismatch,
                    Err(scheme::UnknownScheme(s)) => {
                        Verdict::Unavailable(format!("user {user}: unknown password scheme {s}"))
                    }
                };
            }
            Ok(None) => {}
            Err(e) => trouble = Some(e),
        }
    }
    match trouble {
        Some(e) => Verdict::Unavailable(e),
        None => Verdict::NoUser,
    }
}

/// A user database lookup (no password check).
pub fn lookup(dbs: &[PassDb], user: &str, defaults: Defaults) -> Result<Option<UserInfo>, String> {
    for db in dbs {
        if let Some(f) = db.find(user, defaults)?
            && f.enabled
        {
            return Ok(Some(f.info));
        }
    }
    Ok(None)
}

/// A user's stored password entry, for mechanisms that check a proof themselves
/// (CRAM-MD5, APOP, SCRAM): the `{SCHEME}data` string and the user it belongs to.
#[derive(Debug)]
pub enum Credentials {
    /// `enabled` false: the user exists but may not log in.
    Found {
        stored: String,
        info: UserInfo,
        enabled: bool,
    },
    NoUser,
    Unavailable(String),
}

/// The stored entry of `user` in the first database that knows it.
pub fn credentials(dbs: &[PassDb], user: &str, defaults: Defaults) -> Credentials {
    let mut trouble = None;
    for db in dbs {
        match db.find(user, defaults) {
            Ok(Some(f)) => {
                return Credentials::Found {
                    stored: f.stored,
                    info: f.info,
                    enabled: f.enabled,
                };
            }
            Ok(None) => {}
            Err(e) => trouble = Some(e),
        }
    }
    match trouble {
        Some(e) => Credentials::Unavailable(e),
        None => Credentials::NoUser,
    }
}

/// The password schemes the databases hold (upper-case, e.g. `PLAIN`, `SHA512-CRYPT`), to
/// decide which mechanisms can be offered. `shadow` holds `CRYPT` only.
pub fn stored_schemes(dbs: &[PassDb]) -> Result<std::collections::BTreeSet<String>, String> {
    let mut out = std::collections::BTreeSet::new();
    for db in dbs {
        match db {
            PassDb::Shadow => {
                out.insert("CRYPT".to_owned());
            }
            PassDb::PasswdFile(p) => {
                for line in read(p)?.lines() {
                    if line.trim().is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let pw = line.split(':').nth(1).unwrap_or("");
                    if !pw.is_empty() {
                        out.insert(scheme::split(pw).0);
                    }
                }
            }
            PassDb::Sqlite(p) => out.extend(UserDb::open_ro(p)?.schemes()?),
            // Not enumerable without a query of its own: only mechanisms that take the
            // password itself are offered for its users.
            PassDb::Pgsql(_) | PassDb::Mysql(_) => {}
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn shadow_find(path: &Path, user: &str) -> Result<Option<Found>, String> {
    let text = read(path)?;
    let Some(hash) = text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(user)).then(|| f.next().unwrap_or("").to_owned())
    }) else {
        return Ok(None);
    };
    let Ok(Some(pw)) = nix::unistd::User::from_name(user) else {
        return Ok(None);
    };
    let home = pw.dir.display().to_string();
    Ok(Some(Found {
        // Shadow hashes are crypt(3) strings; never read as another scheme.
        stored: format!("{{CRYPT}}{hash}"),
        info: UserInfo {
            user: user.to_owned(),
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            mail: "maildir:~/Maildir".into(),
            home,
        },
        enabled: true,
    }))
}

fn passwd_file_find(path: &Path, user: &str, d: Defaults) -> Result<Option<Found>, String> {
    let text = read(path)?;
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.splitn(8, ':').collect();
        if f.first() != Some(&user) {
            continue;
        }
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let num = |s: &str, def: u32| s.trim().parse().unwrap_or(def);
        let home = field(5).to_owned();
        let mail = field(7)
            .split_whitespace()
            .find_map(|kv| {
                kv.strip_prefix("userdb_mail=")
                    .or_else(|| kv.strip_prefix("mail="))
            })
            .map_or_else(|| "maildir:~/Maildir".to_owned(), str::to_owned);
        return Ok(Some(Found {
            stored: field(1).to_owned(),
            info: UserInfo {
                user: user.to_owned(),
                uid: num(field(2), d.uid),
                gid: num(field(3), d.gid),
                home,
                mail,
            },
            enabled: !field(1).is_empty(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("users");
        std::fs::write(
            &p,
            "# users\nalice:{PLAIN}pw:1000:1000::/home/alice::userdb_mail=mbox:~/mail\nbob:{PLAIN}x::::/h\n",
        )
        .expect("write");
        let dbs = vec![PassDb::PasswdFile(p)];
        let d = Defaults { uid: 7, gid: 8 };
        match verify(&dbs, "alice", "pw", d) {
            Verdict::Ok(u) => {
                assert_eq!(
                    (u.uid, u.home.as_str(), u.mail.as_str()),
                    (1000, "/home/alice", "mbox:~/mail")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(verify(&dbs, "alice", "px", d), Verdict::Mismatch));
        assert!(matches!(verify(&dbs, "carol", "pw", d), Verdict::NoUser));
        let bob = lookup(&dbs, "bob", d).expect("ok").expect("bob");
        assert_eq!((bob.uid, bob.gid), (7, 8));
        let gone = vec![PassDb::PasswdFile(dir.path().join("missing"))];
        assert!(matches!(
            verify(&gone, "alice", "pw", d),
            Verdict::Unavailable(_)
        ));
        assert!(PassDb::parse("ldap:/x").is_err());
        assert_eq!(PassDb::parse("shadow"), Ok(PassDb::Shadow));
    }
}

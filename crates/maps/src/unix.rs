//! `unix:passwd.byname` and `unix:group.byname` — the system's user and group databases.
//!
//! Values are the `passwd(5)`/`group(5)` lines, as Postfix's dict_unix returns them.

use crate::{Map, MapError};
use nix::unistd::{Group, User};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Passwd,
    Group,
}

/// A `unix:` table.
pub struct UnixMap {
    which: Which,
}

impl UnixMap {
    pub fn open(name: &str) -> Result<UnixMap, MapError> {
        let which = match name {
            "passwd.byname" => Which::Passwd,
            "group.byname" => Which::Group,
            _ => {
                return Err(MapError::spec(format!("unknown table: unix:{name}")));
            }
        };
        Ok(UnixMap { which })
    }
}

impl Map for UnixMap {
    fn lookup(&self, key: &str) -> Result<Option<String>, MapError> {
        if key.is_empty() || key.contains('\0') {
            return Ok(None);
        }
        match self.which {
            Which::Passwd => match User::from_name(key) {
                Ok(Some(u)) => Ok(Some(format!(
                    "{}:{}:{}:{}:{}:{}:{}",
                    u.name,
                    u.passwd.to_string_lossy(),
                    u.uid,
                    u.gid,
                    u.gecos.to_string_lossy(),
                    u.dir.display(),
                    u.shell.display()
                ))),
                Ok(None) => Ok(None),
                Err(e) => Err(MapError::temp(format!("getpwnam {key}: {e}"))),
            },
            Which::Group => match Group::from_name(key) {
                Ok(Some(g)) => Ok(Some(format!(
                    "{}:{}:{}:{}",
                    g.name,
                    g.passwd.to_string_lossy(),
                    g.gid,
                    g.mem.join(",")
                ))),
                Ok(None) => Ok(None),
                Err(e) => Err(MapError::temp(format!("getgrnam {key}: {e}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{MapConfig, Table};

    #[test]
    fn root_exists() {
        let t = Table::open("unix:passwd.byname", &MapConfig::default()).expect("open");
        let v = t.lookup("ROOT").ok().flatten().unwrap_or_default();
        assert!(v.starts_with("root:"), "{v}");
        assert_eq!(t.lookup("no-such-user-xyz").ok().flatten(), None);
        assert!(Table::open("unix:shadow", &MapConfig::default()).is_err());
    }
}

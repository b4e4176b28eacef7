//! `alias_maps` as local(8) holds it: opened on first use (so a process that delivers no
//! local mail never touches the tables), kept for the life of the process, and reopened by
//! the maps library when `newaliases`/`postalias` replaces an index. A table that cannot
//! be opened is a temporary failure (the recipient is deferred with the reason, as Postfix
//! defers when its alias database is unusable); the open is retried at the next lookup.

use std::sync::Mutex;

use oxipost_maps::{MapConfig, Maps};

use crate::resolve::{self, UserInfo};

/// The alias tables of `alias_maps`.
pub struct AliasDb {
    spec: String,
    maps: Mutex<Option<Maps>>,
}

impl std::fmt::Debug for AliasDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliasDb").field("spec", &self.spec).finish()
    }
}

impl AliasDb {
    /// Tables for `alias_maps` (already `$name`-expanded); nothing is opened yet.
    pub fn new(spec: &str) -> AliasDb {
        AliasDb {
            spec: spec.trim().to_string(),
            maps: Mutex::new(None),
        }
    }

    /// Looks `name` up; `Err` is a temporary failure.
    pub fn lookup(&self, name: &str) -> Result<Option<String>, String> {
        if self.spec.is_empty() {
            return Ok(None);
        }
        let mut guard = self
            .maps
            .lock()
            .map_err(|_| "alias table lock poisoned".to_string())?;
        if guard.is_none() {
            let maps = Maps::open(&self.spec, &MapConfig::default()).map_err(|e| {
                oxipost_log::warning!("alias_maps: {e}");
                e.to_string()
            })?;
            for w in maps.warnings() {
                oxipost_log::warning!("alias_maps: {w}");
            }
            *guard = Some(maps);
        }
        match guard.as_ref() {
            Some(m) => m.lookup(name).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// The rights commands and files named in aliases run with: as root, the owner of the
    /// first indexed alias table when that is not root, else `default_privs` (Postfix's
    /// rule); not as root, this process's own user.
    pub fn rights(&self, default_privs: &str) -> Result<UserInfo, String> {
        if !crate::privs::privileged() {
            return current_user();
        }
        use std::os::unix::fs::MetadataExt;
        for spec in oxipost_maps::split_list(&self.spec) {
            let Ok((kind, name)) = oxipost_maps::split_spec(&spec) else {
                continue;
            };
            if !matches!(kind, "hash" | "btree" | "lmdb" | "cdb") {
                continue;
            }
            let index = oxipost_maps::indexed::index_path(kind, name);
            if let Ok(md) = std::fs::metadata(&index)
                && md.uid() != 0
                && let Ok(Some(u)) =
                    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(md.uid()))
            {
                return resolve::system_user(&u.name)?
                    .ok_or_else(|| format!("alias table owner {} vanished", u.name));
            }
            break;
        }
        resolve::system_user(default_privs)?
            .ok_or_else(|| format!("default_privs user {default_privs} does not exist"))
    }
}

/// The user this process runs as (the unprivileged quick start).
pub fn current_user() -> Result<UserInfo, String> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => Ok(UserInfo {
            name: u.name,
            home: u.dir,
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            shell: u.shell.to_string_lossy().into_owned(),
            listed: false,
        }),
        Ok(None) => Ok(UserInfo {
            name: uid.to_string(),
            home: "/".into(),
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            shell: "/bin/sh".into(),
            listed: false,
        }),
        Err(e) => Err(format!("user lookup of uid {uid}: {e}")),
    }
}

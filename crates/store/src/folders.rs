//! A user's mailboxes: the INBOX is the Maildir root, every other mailbox a Maildir++
//! folder `<root>/.<name>` with `.` as the hierarchy separator; subscriptions are the
//! lines of `<root>/subscriptions` (Dovecot's Maildir++ file).

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// The special-use folders created for a new user (RFC 6154 attribute, name).
pub const SPECIAL: [(&str, &str); 5] = [
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
];

/// The hierarchy separator.
pub const SEPARATOR: char = '.';

/// One user's folder tree.
#[derive(Debug, Clone)]
pub struct Folders {
    root: PathBuf,
}

impl Folders {
    pub fn new(root: impl Into<PathBuf>) -> Folders {
        Folders { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A user new to IMAP (no `subscriptions` file yet, whether or not mail has been
    /// delivered): creates the INBOX and the missing special-use folders, all subscribed.
    pub fn ensure_defaults(&self) -> Result<()> {
        if self.root.join("subscriptions").exists() {
            return Ok(());
        }
        make_maildir(&self.root)?;
        for (name, _) in SPECIAL {
            make_maildir(&self.root.join(format!(".{name}")))?;
        }
        let tmp = self.root.join("subscriptions.tmp");
        fs::write(
            &tmp,
            SPECIAL
                .iter()
                .map(|(n, _)| format!("{n}\n"))
                .collect::<String>(),
        )?;
        fs::rename(tmp, self.root.join("subscriptions"))?;
        Ok(())
    }

    /// The directory of mailbox `name` (INBOX in any case is the root).
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Ok(self.root.clone());
        }
        valid(name)?;
        Ok(self.root.join(format!(".{name}")))
    }

    /// Whether mailbox `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.dir(name).is_ok_and(|d| d.join("cur").is_dir())
    }

    /// Every mailbox, INBOX first, then the folders sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut v = Vec::new();
        match fs::read_dir(&self.root) {
            Ok(rd) => {
                for e in rd.flatten() {
                    if let Some(n) = e.file_name().to_str()
                        && let Some(name) = n.strip_prefix('.')
                        && valid(name).is_ok()
                        && e.path().join("cur").is_dir()
                    {
                        v.push(name.to_owned());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        v.sort();
        v.insert(0, "INBOX".to_owned());
        Ok(v)
    }

    pub fn create(&self, name: &str) -> Result<()> {
        if name.eq_ignore_ascii_case("INBOX") || self.exists(name) {
            return Err(StoreError::Exists);
        }
        make_maildir(&self.dir(name)?)
    }

    /// Deletes a folder and its messages (not the INBOX; not a folder with children).
    pub fn delete(&self, name: &str) -> Result<()> {
        if name.eq_ignore_ascii_case("INBOX") {
            return Err(StoreError::NotAllowed("INBOX can't be deleted."));
        }
        if !self.exists(name) {
            return Err(StoreError::NotFound);
        }
        let prefix = format!("{name}{SEPARATOR}");
        if self.list()?.iter().any(|n| n.starts_with(&prefix)) {
            return Err(StoreError::NotAllowed(
                "Mailbox has children, delete them first",
            ));
        }
        fs::remove_dir_all(self.dir(name)?)?;
        Ok(())
    }

    /// Renames a folder and its children. Renaming the INBOX moves its messages into a
    /// new folder and leaves the INBOX empty (RFC 3501).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        if to.eq_ignore_ascii_case("INBOX") || self.exists(to) {
            return Err(StoreError::Exists);
        }
        let dest = self.dir(to)?;
        if from.eq_ignore_ascii_case("INBOX") {
            make_maildir(&dest)?;
            for sub in ["cur", "new"] {
                for e in fs::read_dir(self.root.join(sub))?.flatten() {
                    fs::rename(e.path(), dest.join(sub).join(e.file_name()))?;
                }
            }
            let _ = fs::remove_file(self.root.join("oxipost-index"));
            return Ok(());
        }
        if !self.exists(from) {
            return Err(StoreError::NotFound);
        }
        let prefix = format!("{from}{SEPARATOR}");
        let children: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        fs::rename(self.dir(from)?, &dest)?;
        for c in children {
            let new = format!("{to}{}", &c[from.len()..]);
            fs::rename(self.dir(&c)?, self.dir(&new)?)?;
        }
        Ok(())
    }

    /// The subscribed names.
    pub fn subscriptions(&self) -> Vec<String> {
        fs::read_to_string(self.root.join("subscriptions"))
            .map(|s| {
                s.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds (`on`) or removes a subscription (temp file, then rename).
    pub fn subscribe(&self, name: &str, on: bool) -> Result<()> {
        let mut subs = self.subscriptions();
        subs.retain(|s| s != name);
        if on {
            subs.push(name.to_owned());
        }
        fs::create_dir_all(&self.root)?;
        let tmp = self.root.join("subscriptions.tmp");
        fs::write(
            &tmp,
            subs.iter().map(|s| format!("{s}\n")).collect::<String>(),
        )?;
        fs::rename(tmp, self.root.join("subscriptions"))?;
        Ok(())
    }

    /// The special-use attribute of a folder.
    pub fn special_use(name: &str) -> Option<&'static str> {
        SPECIAL.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }
}

fn make_maildir(dir: &Path) -> Result<()> {
    for d in ["cur", "new", "tmp"] {
        fs::create_dir_all(dir.join(d))?;
    }
    // Maildir++ marks folders (not the root) with an empty `maildirfolder` file.
    Ok(())
}

/// A folder name: printable, no `/`, no empty hierarchy level, not too long.
fn valid(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.contains('/')
        && !name.chars().any(char::is_control)
        && name
            .split(SEPARATOR)
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if ok { Ok(()) } else { Err(StoreError::BadName) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders() -> Result<()> {
        let t = tempfile::tempdir()?;
        let f = Folders::new(t.path().join("Maildir"));
        f.ensure_defaults()?;
        assert_eq!(
            f.list()?,
            vec!["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
        );
        assert_eq!(f.subscriptions().len(), 5);
        f.create("a")?;
        f.create("a.b")?;
        assert!(matches!(f.create("a"), Err(StoreError::Exists)));
        assert!(matches!(f.create("x/y"), Err(StoreError::BadName)));
        assert!(matches!(f.create("x..y"), Err(StoreError::BadName)));
        assert!(matches!(f.delete("a"), Err(StoreError::NotAllowed(_))));
        f.rename("a", "c")?;
        assert!(f.exists("c.b") && !f.exists("a.b"));
        assert!(matches!(f.delete("INBOX"), Err(StoreError::NotAllowed(_))));
        f.delete("c.b")?;
        assert!(!f.exists("c.b"));
        Ok(())
    }
}

//! Who a recipient is: the address split as local(8) splits it (local part lowercased,
//! extension cut at `recipient_delimiter`), the domain check against `mydestination`, and the
//! user lookup (a system account through `getpwnam`, else an entry of `local_users`).
//!
//! Aliases and `.forward` files are consulted around the user lookup by [`crate::expand`].

use std::path::PathBuf;

use crate::settings::Settings;

/// A recipient address taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// As qmgr sent it (used for `Delivered-To:` and `RECIPIENT`).
    pub address: String,
    /// Local part, lowercased, extension included (`LOCAL`).
    pub local: String,
    /// Local part without the extension: the user name.
    pub user: String,
    /// What followed the delimiter (`EXTENSION`), if anything.
    pub extension: Option<String>,
    /// The domain as given, without `@`; `None` for a bare local part.
    pub domain: Option<String>,
}

impl Address {
    /// Splits `address` as Postfix's local(8) does.
    pub fn parse(address: &str, s: &Settings) -> Address {
        let (local, domain) = match address.rfind('@') {
            Some(at) => (&address[..at], Some(address[at + 1..].to_string())),
            None => (address, None),
        };
        let local = unquote(local).to_lowercase();
        let (user, extension) = match split_extension(&local, s) {
            Some((user, ext)) if !ext.contains('/') => (user.to_string(), Some(ext.to_string())),
            Some((_, ext)) => {
                oxipost_log::warning!("address with illegal extension: {address}: {ext}");
                (local.clone(), None)
            }
            None => (local.clone(), None),
        };
        Address {
            address: address.to_string(),
            local,
            user,
            extension,
            domain,
        }
    }
}

/// `"john smith"` → `john smith`: the quoted form of a local part names the same mailbox.
fn unquote(local: &str) -> String {
    let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return local.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Postfix's `split_addr()`: splits at the first delimiter character, except for the
/// addresses that are never split (postmaster, MAILER-DAEMON, the double-bounce sender, and
/// with `-` as delimiter and `owner_request_special`, `owner-x` and `x-request`), and except
/// when the user part or the extension would be empty.
pub fn split_extension<'a>(local: &'a str, s: &Settings) -> Option<(&'a str, &'a str)> {
    let delims = &s.recipient_delimiter;
    if delims.is_empty() {
        return None;
    }
    for special in [
        "postmaster",
        "mailer-daemon",
        s.double_bounce_sender.as_str(),
    ] {
        if local.eq_ignore_ascii_case(special) {
            return None;
        }
    }
    if s.owner_request_special && delims.contains('-') {
        let lower = local.to_ascii_lowercase();
        if lower.starts_with("owner-") || lower.ends_with("-request") {
            return None;
        }
    }
    let at = local.find(|c: char| delims.contains(c))?;
    let (user, rest) = local.split_at(at);
    let ext = rest.get(rest.chars().next().map_or(0, char::len_utf8)..)?;
    (!user.is_empty()).then_some((user, ext))
}

/// A recipient account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub home: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub shell: String,
    /// From `local_users` rather than the system's accounts.
    pub listed: bool,
}

/// Looks up `name` through `getpw` (a system account), then `local_users`. `Err` is a
/// lookup failure that may clear (defer), `Ok(None)` an unknown user (bounce).
pub fn lookup_user(
    name: &str,
    s: &Settings,
    getpw: impl Fn(&str) -> Result<Option<UserInfo>, String>,
) -> Result<Option<UserInfo>, String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Ok(None);
    }
    if let Some(u) = getpw(name)? {
        return Ok(Some(u));
    }
    let Some(listed) = s.local_users.iter().find(|u| u.name == name) else {
        return Ok(None);
    };
    let home = listed
        .home
        .clone()
        .unwrap_or_else(|| s.local_home_base.join(&listed.name));
    let (uid, gid) = listed_owner(&home);
    Ok(Some(UserInfo {
        name: listed.name.clone(),
        home,
        uid,
        gid,
        shell: "/bin/sh".to_string(),
        listed: true,
    }))
}

/// The rights a `local_users` recipient is delivered with: the current user's, except that
/// local running as root takes the owner of the home directory (or of its parent, normally
/// `local_home_base`) rather than writing as root.
fn listed_owner(home: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let me = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if me.0 != 0 {
        return me;
    }
    [Some(home), home.parent()]
        .into_iter()
        .flatten()
        .find_map(|p| std::fs::metadata(p).ok())
        .map_or(me, |md| (md.uid(), md.gid()))
}

/// `getpwnam()` through nix.
pub fn system_user(name: &str) -> Result<Option<UserInfo>, String> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Ok(Some(UserInfo {
            name: u.name,
            home: u.dir,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            shell: u.shell.to_string_lossy().into_owned(),
            listed: false,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("user lookup of {name}: {e}")),
    }
}

/// The original recipient for `X-Original-To:` and `orig_to=`: the DSN `ORCPT` when it is an
/// `rfc822;` address (xtext decoded), else the address itself.
pub fn original_recipient(address: &str, orcpt: Option<&str>) -> String {
    let Some(o) = orcpt else {
        return address.to_string();
    };
    match o.split_once(';') {
        Some((kind, value)) if kind.trim().eq_ignore_ascii_case("rfc822") => {
            let decoded = xtext_decode(value.trim());
            if decoded.is_empty() {
                address.to_string()
            } else {
                decoded
            }
        }
        Some(_) => address.to_string(),
        None if o.trim().is_empty() => address.to_string(),
        None => o.trim().to_string(),
    }
}

/// RFC 3461 xtext: `+XX` is the byte with hex value XX.
fn xtext_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn settings() -> Settings {
        let main = oxipost_config::MainCf::parse(
            std::path::Path::new("main.cf"),
            "mydestination = example.org, localhost\nrecipient_delimiter = +-\n\
             local_users = alice, bob:/srv/bob\nlocal_home_base = /home/base\n",
        )
        .expect("parses");
        let cfg = oxipost_config::Config::from_main(std::path::Path::new("/x"), main, false);
        Settings::from_config(&cfg).expect("settings")
    }

    fn no_system(_: &str) -> Result<Option<UserInfo>, String> {
        Ok(None)
    }

    #[test]
    fn extension_split() {
        let s = settings();
        let a = Address::parse("Alice+Lists@Example.org", &s);
        assert_eq!(a.local, "alice+lists");
        assert_eq!(a.user, "alice");
        assert_eq!(a.extension.as_deref(), Some("lists"));
        assert_eq!(a.domain.as_deref(), Some("Example.org"));
        let a = Address::parse("alice-x-y@example.org", &s);
        assert_eq!(
            (a.user.as_str(), a.extension.as_deref()),
            ("alice", Some("x-y"))
        );
        for never in [
            "owner-list",
            "list-request",
            "postmaster",
            "MAILER-DAEMON",
            "+x",
        ] {
            let a = Address::parse(&format!("{never}@example.org"), &s);
            assert_eq!(a.extension, None, "{never}");
        }
        assert_eq!(Address::parse("a+b/c@example.org", &s).extension, None);
        // As Postfix's split_addr(): a trailing delimiter gives an empty extension.
        assert_eq!(
            Address::parse("a+@example.org", &s).extension.as_deref(),
            Some("")
        );
        let a = Address::parse("\"Odd Name\"@example.org", &s);
        assert_eq!(a.user, "odd name");
    }

    #[test]
    fn user_lookup_order() {
        let s = settings();
        let u = lookup_user("alice", &s, no_system)
            .expect("ok")
            .expect("found");
        assert_eq!(u.home, PathBuf::from("/home/base/alice"));
        assert!(u.listed);
        let u = lookup_user("bob", &s, no_system)
            .expect("ok")
            .expect("found");
        assert_eq!(u.home, PathBuf::from("/srv/bob"));
        assert_eq!(lookup_user("carol", &s, no_system), Ok(None));
        assert_eq!(lookup_user("..", &s, no_system), Ok(None));
        let system = |n: &str| {
            Ok((n == "alice").then(|| UserInfo {
                name: "alice".into(),
                home: "/home/alice".into(),
                uid: 1000,
                gid: 1000,
                shell: "/bin/bash".into(),
                listed: false,
            }))
        };
        let u = lookup_user("alice", &s, system)
            .expect("ok")
            .expect("found");
        assert!(!u.listed, "a system account wins over local_users");
        assert!(system_user("root").expect("getpwnam").is_some());
    }

    #[test]
    fn original_recipient_from_orcpt() {
        assert_eq!(original_recipient("a@b", None), "a@b");
        assert_eq!(original_recipient("a@b", Some("rfc822;X+2BY@b")), "X+Y@b");
        assert_eq!(original_recipient("a@b", Some("x400;whatever")), "a@b");
        assert_eq!(original_recipient("a@b", Some("c@d")), "c@d");
    }
}

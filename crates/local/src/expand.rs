//! Recursive expansion of one local recipient into the deliveries it stands for, in
//! Postfix's local(8) order: `alias_maps` (the full local part, then without the address
//! extension), then the user's `.forward` file (`forward_path`), then the user's mailbox.
//! Alias and `.forward` entries expand further: `|command`, `/file`, `:include:/file`,
//! `\user`, local names (recursively) and remote addresses (forwarded: re-injected into
//! the queue).
//!
//! Rules, as Postfix's:
//! - a name that lists itself (`root: root, admin`, or `alice` in alice's `.forward`) means
//!   that user's mailbox, with no further alias or `.forward` expansion;
//! - each destination is delivered at most once per recipient (duplicate elimination);
//! - an alias or `.forward` that comes back to itself through others (`a: b`, `b: a`)
//!   bounces with the chain in the reason, as does nesting deeper than [`MAX_DEPTH`];
//! - an `owner-NAME` alias makes `owner-NAME@$myorigin` the envelope sender of what `NAME`
//!   expands to (`expand_owner_alias = yes`: the owner alias's own value), so errors about
//!   a list go to its owner;
//! - `|command` and `/file` destinations are allowed only from the classes listed in
//!   `allow_mail_to_commands` / `allow_mail_to_files` (`alias`, `forward`, `include`);
//! - `mailer-daemon` without an alias or account means `postmaster`, and `postmaster`
//!   without one means `root` (RFC 5321 requires a postmaster mailbox); mail to the
//!   `double_bounce_sender` is discarded.
//!
//! The module does no IO of its own: aliases, accounts and files are read through
//! [`Sources`], so the caller decides with which rights `.forward` and include files are
//! read.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::alias::{self, Token};
use crate::resolve::{self, Address, UserInfo};
use crate::settings::Settings;

/// Deepest nesting of aliases, includes and `.forward` files before it is called a loop.
pub const MAX_DEPTH: usize = 100;

/// Where a destination came from; decides whether commands and files are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Alias,
    Forward,
    Include,
}

impl Class {
    /// The word used in `allow_mail_to_commands` / `allow_mail_to_files`.
    pub fn name(self) -> &'static str {
        match self {
            Class::Alias => "alias",
            Class::Forward => "forward",
            Class::Include => "include",
        }
    }
}

/// One delivery the recipient expands to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafKind {
    /// The user's own mailbox (`home_mailbox`, `mail_spool_directory`, `mailbox_command`).
    Mailbox(UserInfo),
    /// A `|command`, run with `rights`.
    Command { command: String, rights: UserInfo },
    /// A `/file`, written with `rights`.
    File { path: PathBuf, rights: UserInfo },
    /// A non-local address: the message is queued again for it.
    Forward(String),
    /// Discarded on purpose (mail to the double-bounce address).
    Discard(String),
    /// This part of the expansion failed.
    Failed {
        temporary: bool,
        dsn: &'static str,
        text: String,
    },
}

/// A leaf with the envelope sender it is delivered with (changed by `owner-` aliases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub sender: String,
    pub kind: LeafKind,
}

/// The answer of a file read: its text, `None` when the file does not exist.
pub type FileText = Result<Option<String>, String>;

/// Everything the expansion reads.
pub struct Sources<'a> {
    /// Looks a name up in `alias_maps`; `Err` is a temporary failure.
    pub alias: &'a dyn Fn(&str) -> Result<Option<String>, String>,
    /// Looks a user up (system account, then `local_users`).
    pub user: &'a dyn Fn(&str) -> Result<Option<UserInfo>, String>,
    /// Reads a `.forward` or `:include:` file with the rights of the given user:
    /// `Ok(None)` when there is no such file.
    pub read: &'a dyn Fn(&Path, &UserInfo) -> FileText,
    /// The rights commands and files listed in aliases run with.
    pub alias_rights: &'a dyn Fn() -> Result<UserInfo, String>,
}

#[derive(Clone)]
struct Frame {
    sender: String,
    /// Alias, `.forward` and include names being expanded, outermost first.
    chain: Vec<String>,
    /// The name whose expansion this is (a self-reference means the mailbox).
    exp_from: Option<String>,
}

struct Expander<'a> {
    s: &'a Settings,
    src: &'a Sources<'a>,
    seen: HashSet<String>,
    leaves: Vec<Leaf>,
}

/// Expands the recipient `rcpt` (whose domain is local) of a message from `sender`.
pub fn expand(s: &Settings, src: &Sources<'_>, rcpt: &Address, sender: &str) -> Vec<Leaf> {
    let mut e = Expander {
        s,
        src,
        seen: HashSet::new(),
        leaves: Vec::new(),
    };
    let frame = Frame {
        sender: sender.to_string(),
        chain: Vec::new(),
        exp_from: None,
    };
    if !s.double_bounce_sender.is_empty()
        && rcpt.local.eq_ignore_ascii_case(&s.double_bounce_sender)
    {
        e.push(
            &frame,
            LeafKind::Discard(format!("discarded mail to {}", rcpt.address)),
        );
        return e.leaves;
    }
    e.local(&rcpt.local, false, &frame);
    e.leaves
}

/// The chain as a reason shows it: `a -> b -> a`.
fn show_chain(chain: &[String], again: &str) -> String {
    let mut parts: Vec<&str> = chain.iter().map(String::as_str).collect();
    parts.push(again);
    parts.join(" -> ")
}

impl Expander<'_> {
    fn push(&mut self, frame: &Frame, kind: LeafKind) {
        self.leaves.push(Leaf {
            sender: frame.sender.clone(),
            kind,
        });
    }

    fn fail(&mut self, frame: &Frame, temporary: bool, dsn: &'static str, text: String) {
        self.push(
            frame,
            LeafKind::Failed {
                temporary,
                dsn,
                text,
            },
        );
    }

    fn too_deep(&mut self, frame: &Frame, name: &str) -> bool {
        if frame.chain.len() < MAX_DEPTH {
            return false;
        }
        self.fail(
            frame,
            false,
            "5.4.6",
            format!(
                "mail forwarding loop for {name}: expansion nested more than {MAX_DEPTH} levels"
            ),
        );
        true
    }

    /// A local name (lowercased local part, extension included).
    fn local(&mut self, local: &str, no_alias: bool, frame: &Frame) {
        if self.too_deep(frame, local) {
            return;
        }
        let user_part = resolve::split_extension(local, self.s)
            .map(|(u, _)| u.to_string())
            .unwrap_or_else(|| local.to_string());
        let self_ref = frame
            .exp_from
            .as_deref()
            .is_some_and(|f| f == local || f == user_part);
        if !no_alias && !self_ref {
            let mut keys = vec![local.to_string()];
            if user_part != local {
                keys.push(user_part.clone());
            }
            for key in keys {
                match (self.src.alias)(&key) {
                    Ok(Some(value)) => {
                        self.alias(&key, &value, frame);
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.fail(
                            frame,
                            true,
                            "4.3.0",
                            format!("alias database unavailable: {e}"),
                        );
                        return;
                    }
                }
            }
        }
        match (self.src.user)(&user_part) {
            Ok(Some(user)) => {
                if !self_ref && !no_alias && self.forward(&user, local, frame) {
                    return;
                }
                if self.seen.insert(format!("mailbox\0{}", user.name)) {
                    self.push(frame, LeafKind::Mailbox(user));
                }
            }
            Ok(None) if user_part == "mailer-daemon" => self.local("postmaster", false, frame),
            Ok(None) if user_part == "postmaster" => self.local("root", false, frame),
            Ok(None) => self.fail(frame, false, "5.1.1", format!("unknown user: \"{local}\"")),
            Err(e) => self.fail(frame, true, "4.3.0", e),
        }
    }

    /// Expands alias `name` with `value`.
    fn alias(&mut self, name: &str, value: &str, frame: &Frame) {
        let key = format!("alias:{name}");
        if frame.chain.contains(&key) {
            let names: Vec<String> = frame
                .chain
                .iter()
                .map(|c| c.split_once(':').map_or(c.as_str(), |(_, n)| n).to_string())
                .collect();
            self.fail(
                frame,
                false,
                "5.4.6",
                format!(
                    "mail forwarding loop for {name}: alias loop {}",
                    show_chain(&names, name)
                ),
            );
            return;
        }
        if !self.seen.insert(key.clone()) {
            return;
        }
        let rights = match (self.src.alias_rights)() {
            Ok(r) => r,
            Err(e) => {
                self.fail(frame, true, "4.3.0", e);
                return;
            }
        };
        let mut inner = frame.clone();
        inner.chain.push(key);
        inner.exp_from = Some(name.to_string());
        // Lists are conventionally `name` with an `owner-name` alias for errors.
        if !name.starts_with("owner-") {
            match (self.src.alias)(&format!("owner-{name}")) {
                Ok(Some(owner)) => {
                    inner.sender = self.owner_sender(name, &owner);
                }
                Ok(None) => {}
                Err(e) => {
                    self.fail(
                        frame,
                        true,
                        "4.3.0",
                        format!("alias database unavailable: {e}"),
                    );
                    return;
                }
            }
        }
        for token in alias::parse(value) {
            self.token(token, Class::Alias, &rights, &inner);
        }
    }

    fn owner_sender(&self, name: &str, owner_value: &str) -> String {
        if self.s.expand_owner_alias
            && let Some(Token::Address { address, .. }) = alias::parse(owner_value).first()
        {
            return self.qualify(address);
        }
        format!("owner-{name}@{}", self.s.myorigin)
    }

    fn qualify(&self, address: &str) -> String {
        if address.contains('@') {
            address.to_string()
        } else {
            format!("{address}@{}", self.s.myorigin)
        }
    }

    /// The user's `.forward`, when there is one: true when it decided the delivery.
    fn forward(&mut self, user: &UserInfo, local: &str, frame: &Frame) -> bool {
        let rcpt = Address::parse(local, self.s);
        let mut candidates = forward_path(self.s, user, Some(&rcpt));
        candidates.dedup();
        for path in candidates {
            let text = match (self.src.read)(&path, user) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    self.fail(frame, true, "4.3.0", e);
                    return true;
                }
            };
            let tokens = alias::parse(&text);
            if tokens.is_empty() {
                // An empty .forward is ignored, as Postfix does.
                continue;
            }
            let key = format!("forward:{}", user.name);
            if frame.chain.contains(&key) {
                let names: Vec<String> = frame
                    .chain
                    .iter()
                    .map(|c| c.split_once(':').map_or(c.as_str(), |(_, n)| n).to_string())
                    .collect();
                self.fail(
                    frame,
                    false,
                    "5.4.6",
                    format!(
                        "mail forwarding loop for {}: .forward loop {}",
                        user.name,
                        show_chain(&names, &user.name)
                    ),
                );
                return true;
            }
            if !self.seen.insert(key.clone()) {
                return true;
            }
            let mut inner = frame.clone();
            inner.chain.push(key);
            inner.exp_from = Some(user.name.clone());
            for token in tokens {
                self.token(token, Class::Forward, user, &inner);
            }
            return true;
        }
        false
    }

    fn token(&mut self, token: Token, class: Class, rights: &UserInfo, frame: &Frame) {
        match token {
            Token::Command(command) => {
                if !self.s.commands_allowed(class.name()) {
                    self.fail(
                        frame,
                        false,
                        "5.7.1",
                        format!("mail to command is restricted: \"|{command}\""),
                    );
                } else if command.is_empty() {
                    self.fail(frame, false, "5.3.5", "empty command".to_string());
                } else if self
                    .seen
                    .insert(format!("command\0{}\0{command}", rights.uid))
                {
                    self.push(
                        frame,
                        LeafKind::Command {
                            command,
                            rights: rights.clone(),
                        },
                    );
                }
            }
            Token::File(path) => {
                if !self.s.files_allowed(class.name()) {
                    self.fail(
                        frame,
                        false,
                        "5.7.1",
                        format!("mail to file is restricted: {}", path.display()),
                    );
                } else if self
                    .seen
                    .insert(format!("file\0{}\0{}", rights.uid, path.display()))
                {
                    self.push(
                        frame,
                        LeafKind::File {
                            path,
                            rights: rights.clone(),
                        },
                    );
                }
            }
            Token::Include(path) => self.include(&path, rights, frame),
            Token::Address { address, no_alias } => self.address(&address, no_alias, frame),
        }
    }

    fn include(&mut self, path: &Path, rights: &UserInfo, frame: &Frame) {
        let shown = path.display().to_string();
        if !path.is_absolute() {
            self.fail(
                frame,
                false,
                "5.3.5",
                format!(":include: file name is not absolute: {shown}"),
            );
            return;
        }
        let key = format!("include:{shown}");
        if frame.chain.contains(&key) {
            self.fail(
                frame,
                false,
                "5.4.6",
                format!("mail forwarding loop: {shown} includes itself"),
            );
            return;
        }
        if !self.seen.insert(key.clone()) || self.too_deep(frame, &shown) {
            return;
        }
        let text = match (self.src.read)(path, rights) {
            Ok(Some(t)) => t,
            Ok(None) => {
                self.fail(
                    frame,
                    false,
                    "5.3.5",
                    format!("cannot open include file {shown}: No such file or directory"),
                );
                return;
            }
            Err(e) => {
                self.fail(frame, true, "4.3.0", e);
                return;
            }
        };
        let mut inner = frame.clone();
        inner.chain.push(key);
        for token in alias::parse(&text) {
            self.token(token, Class::Include, rights, &inner);
        }
    }

    fn address(&mut self, address: &str, no_alias: bool, frame: &Frame) {
        let a = Address::parse(address, self.s);
        match a.domain.as_deref() {
            Some(d) if !self.s.is_local_domain(d) => {
                if a.local.is_empty() {
                    self.fail(
                        frame,
                        false,
                        "5.1.3",
                        format!("bad address syntax: {address}"),
                    );
                } else if self
                    .seen
                    .insert(format!("forward\0{}", address.to_lowercase()))
                {
                    self.push(frame, LeafKind::Forward(address.to_string()));
                }
            }
            _ if a.local.is_empty() => {
                self.fail(
                    frame,
                    false,
                    "5.1.3",
                    format!("bad address syntax: {address}"),
                );
            }
            _ => self.local(&a.local, no_alias, frame),
        }
    }
}

/// The `.forward` candidates for `user`: `forward_path` with `$user`, `$home`, `$shell`,
/// `$recipient`, `$local`, `$domain`, `$extension` and `$recipient_delimiter` (and the
/// `${name?text}` / `${name:text}` forms) replaced from the user and the local name being
/// expanded; only absolute paths without `..` are used.
pub fn forward_path(s: &Settings, user: &UserInfo, rcpt: Option<&Address>) -> Vec<PathBuf> {
    // Defined only when the address has an extension: the delimiter actually found.
    let delim = rcpt
        .filter(|r| r.extension.is_some())
        .and_then(|r| r.local.get(r.user.len()..))
        .and_then(|rest| rest.chars().next())
        .map(String::from)
        .unwrap_or_default();
    let home = user.home.to_string_lossy().into_owned();
    let lookup = |name: &str| -> Option<String> {
        let v = match name {
            "user" => user.name.clone(),
            "home" => home.clone(),
            "shell" => user.shell.clone(),
            "recipient_delimiter" => delim.clone(),
            "extension" => rcpt.and_then(|r| r.extension.clone())?,
            "local" => rcpt.map(|r| r.local.clone())?,
            "domain" => rcpt.and_then(|r| r.domain.clone())?,
            "recipient" => rcpt.map(|r| r.address.clone())?,
            _ => return None,
        };
        (!v.is_empty()).then_some(v)
    };
    oxipost_config::value::split_list(&s.forward_path)
        .iter()
        .map(|item| local_expand(item, &lookup))
        .filter(|p| p.starts_with('/') && !p.contains("/../") && !p.ends_with("/.."))
        .map(PathBuf::from)
        .collect()
}

/// Postfix's `local_expand()`: `$name`, `${name}`, `${name?text}` (text when name is
/// set), `${name:text}` (text when it is not); values are inserted literally, never
/// expanded again.
pub fn local_expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            let Some(close) = inner.find('}') else {
                out.push_str(&rest[at..]);
                return out;
            };
            let body = &inner[..close];
            rest = &inner[close + 1..];
            let (name, op) = match body.find(['?', ':']) {
                Some(i) => (&body[..i], Some((&body[i..i + 1], &body[i + 1..]))),
                None => (body, None),
            };
            let value = lookup(name.trim());
            match op {
                None => out.push_str(value.as_deref().unwrap_or("")),
                Some(("?", t)) if value.is_some() => out.push_str(&local_expand(t, lookup)),
                Some((":", t)) if value.is_none() => out.push_str(&local_expand(t, lookup)),
                Some(_) => {}
            }
        } else if let Some(d) = after.strip_prefix('$') {
            out.push('$');
            rest = d;
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            out.push_str(lookup(&after[..end]).as_deref().unwrap_or(""));
            rest = &after[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::tests::settings;
    use std::collections::HashMap;

    fn user(name: &str) -> UserInfo {
        UserInfo {
            name: name.into(),
            home: format!("/home/{name}").into(),
            uid: 1000,
            gid: 1000,
            shell: "/bin/sh".into(),
            listed: true,
        }
    }

    struct World {
        aliases: HashMap<&'static str, &'static str>,
        users: Vec<&'static str>,
        files: HashMap<&'static str, &'static str>,
    }

    impl World {
        fn run(&self, rcpt: &str) -> Vec<Leaf> {
            let mut s = settings();
            s.myorigin = "example.org".into();
            let alias = |k: &str| Ok(self.aliases.get(k).map(|v| v.to_string()));
            let users = |n: &str| Ok(self.users.contains(&n).then(|| user(n)));
            let read = |p: &Path, _: &UserInfo| {
                Ok(self
                    .files
                    .get(p.to_str().unwrap_or(""))
                    .map(|t| t.to_string()))
            };
            let rights = || Ok(user("nobody"));
            let src = Sources {
                alias: &alias,
                user: &users,
                read: &read,
                alias_rights: &rights,
            };
            expand(&s, &src, &Address::parse(rcpt, &s), "sender@x.org")
        }
    }

    fn kinds(leaves: &[Leaf]) -> Vec<String> {
        leaves
            .iter()
            .map(|l| match &l.kind {
                LeafKind::Mailbox(u) => format!("mailbox {}", u.name),
                LeafKind::Command { command, .. } => format!("command {command}"),
                LeafKind::File { path, .. } => format!("file {}", path.display()),
                LeafKind::Forward(a) => format!("forward {a} from {}", l.sender),
                LeafKind::Discard(_) => "discard".into(),
                LeafKind::Failed { dsn, text, .. } => format!("{dsn} {text}"),
            })
            .collect()
    }

    fn world() -> World {
        World {
            aliases: HashMap::from([
                (
                    "list",
                    "alice, bob, |/bin/cat, /tmp/f, :include:/etc/inc, x@remote.net, alice",
                ),
                ("owner-list", "bob"),
                ("root", "root, alice"),
                ("a", "b"),
                ("b", "c, a"),
                ("self", "\\bob"),
            ]),
            users: vec!["alice", "bob", "root", "c"],
            files: HashMap::from([
                ("/etc/inc", "carol@remote.net\nbob\n|/bin/no"),
                ("/home/bob/.forward", "bob, y@remote.net"),
                ("/home/c/.forward", "a"),
            ]),
        }
    }

    #[test]
    fn every_destination_kind_once() {
        let w = world();
        assert_eq!(
            kinds(&w.run("list@example.org")),
            vec![
                "mailbox alice",
                "mailbox bob",
                "forward y@remote.net from owner-list@example.org",
                "command /bin/cat",
                "file /tmp/f",
                "forward carol@remote.net from owner-list@example.org",
                "5.7.1 mail to command is restricted: \"|/bin/no\"",
                "forward x@remote.net from owner-list@example.org",
            ]
        );
    }

    #[test]
    fn self_reference_means_the_mailbox() {
        let w = world();
        assert_eq!(kinds(&w.run("root")), vec!["mailbox root", "mailbox alice"]);
        assert_eq!(kinds(&w.run("self")), vec!["mailbox bob"]);
        assert_eq!(
            kinds(&w.run("bob+ext@example.org")),
            vec!["mailbox bob", "forward y@remote.net from sender@x.org"]
        );
    }

    #[test]
    fn loops_bounce_with_the_chain() {
        let w = world();
        let k = kinds(&w.run("a@example.org"));
        assert_eq!(
            k,
            vec![
                "5.4.6 mail forwarding loop for a: alias loop a -> b -> c -> a",
                "5.4.6 mail forwarding loop for a: alias loop a -> b -> a",
            ]
        );
        let k = kinds(&w.run("nobody-here"));
        assert_eq!(k, vec!["5.1.1 unknown user: \"nobody-here\""]);
    }

    #[test]
    fn postmaster_conventions() {
        let w = World {
            aliases: HashMap::new(),
            users: vec!["root"],
            files: HashMap::new(),
        };
        assert_eq!(
            kinds(&w.run("MAILER-DAEMON@example.org")),
            vec!["mailbox root"]
        );
        assert_eq!(kinds(&w.run("double-bounce@example.org")), vec!["discard"]);
    }

    #[test]
    fn forward_path_expansion() {
        let s = settings();
        let a = Address::parse("alice+lists@example.org", &s);
        let p = forward_path(&s, &user("alice"), Some(&a));
        assert_eq!(
            p,
            vec![
                PathBuf::from("/home/alice/.forward+lists"),
                PathBuf::from("/home/alice/.forward")
            ]
        );
        let p = forward_path(&s, &user("alice"), None);
        assert_eq!(
            p,
            vec![
                PathBuf::from("/home/alice/.forward"),
                PathBuf::from("/home/alice/.forward")
            ]
        );
        let look = |n: &str| (n == "x").then(|| "$y".to_string());
        assert_eq!(local_expand("a${x?[$x]}${z:none}$$", &look), "a[$y]none$");
    }
}

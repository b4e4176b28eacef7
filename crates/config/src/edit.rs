//! In-place editing of main.cf and master.cf for `postconf -e/-X/-#` and `-Me/-MX/-M#`,
//! keeping comments, blank lines and order as Postfix does. Files are replaced atomically
//! (temporary file, fsync, rename), so an error never leaves a half-written file.

use crate::lines::{LineKind, classify};
use crate::maincf::split_nameval;
use std::io::Write;
use std::path::Path;

/// What to do with the matching main.cf entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MainEdit {
    /// `-e`: replace every definition of each name with `name = value`, appending names not
    /// yet defined at the end.
    Set(Vec<(String, String)>),
    /// `-X`: remove every definition (continuation lines too).
    Remove(Vec<String>),
    /// `-#`: comment out every definition by putting `#` before each of its lines.
    CommentOut(Vec<String>),
}

/// Physical lines as `(content, whole line with its terminator)`: lines that are kept are
/// copied byte for byte, CRLF included.
fn pieces(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_inclusive('\n').map(|piece| {
        let content = piece.strip_suffix('\n').unwrap_or(piece);
        let content = content.strip_suffix('\r').unwrap_or(content);
        (content, piece)
    })
}

/// Pushes a kept line exactly as it was, terminator included.
fn keep(out: &mut String, piece: &str) {
    out.push_str(piece);
}

/// Makes sure appended lines start on a line of their own.
fn end_line(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

/// Applies an edit to main.cf text, returning the new text.
pub fn edit_main(text: &str, edit: &MainEdit) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut found: Vec<&str> = Vec::new();
    // Whether the current logical line is one being edited (its continuations follow it).
    let mut current: Option<String> = None;
    for (line, piece) in pieces(text) {
        match classify(line) {
            LineKind::Ignored => keep(&mut out, piece),
            LineKind::Continuation => match (&current, edit) {
                (Some(_), MainEdit::CommentOut(_)) => {
                    out.push('#');
                    keep(&mut out, piece);
                }
                (Some(_), _) => {}
                (None, _) => keep(&mut out, piece),
            },
            LineKind::Start => {
                let name = split_nameval(line).map(|(n, _)| n).ok();
                let hit = name.and_then(|n| match edit {
                    MainEdit::Set(pairs) => pairs
                        .iter()
                        .rev()
                        .find(|(k, _)| k == n)
                        .map(|(k, v)| format!("{k} = {v}")),
                    MainEdit::Remove(names) | MainEdit::CommentOut(names) => {
                        names.iter().any(|k| k == n).then(String::new)
                    }
                });
                match hit {
                    Some(replacement) => {
                        if let Some(n) = name {
                            found.push(n);
                        }
                        match edit {
                            MainEdit::Set(_) => {
                                out.push_str(&replacement);
                                out.push('\n');
                            }
                            MainEdit::Remove(_) => {}
                            MainEdit::CommentOut(_) => {
                                out.push('#');
                                keep(&mut out, piece);
                            }
                        }
                        current = Some(replacement);
                    }
                    None => {
                        current = None;
                        keep(&mut out, piece);
                    }
                }
            }
        }
    }
    if let MainEdit::Set(pairs) = edit {
        let mut appended: Vec<&str> = Vec::new();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if found.contains(&k.as_str()) || appended.contains(&k.as_str()) {
                continue;
            }
            // The last of several `-e` values for one name wins, in first-mention order.
            let v = &pairs[i..]
                .iter()
                .rev()
                .find(|(k2, _)| k2 == k)
                .map_or("", |(_, v)| v.as_str());
            end_line(&mut out);
            out.push_str(&format!("{k} = {v}\n"));
            appended.push(k);
        }
    }
    out
}

/// Parses a `name=value` argument of `postconf -e` (white space around `=` allowed).
pub fn parse_assignment(arg: &str) -> Result<(String, String), String> {
    let arg = arg.trim_start();
    split_nameval(arg)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .map_err(|m| format!("{m}: \"{arg}\""))
}

/// What to do with master.cf entries, addressed as `service/type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterEdit {
    /// `-Me service/type='entry'`: replace the entry, or append it when absent.
    Set(Vec<(String, String)>),
    Remove(Vec<String>),
    CommentOut(Vec<String>),
}

fn master_key(line: &str) -> Option<String> {
    let mut w = line.split_whitespace();
    let (name, kind) = (w.next()?, w.next()?);
    Some(format!("{name}/{kind}"))
}

pub fn edit_master(text: &str, edit: &MasterEdit) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut found: Vec<String> = Vec::new();
    let mut editing = false;
    for (line, piece) in pieces(text) {
        match classify(line) {
            LineKind::Ignored => keep(&mut out, piece),
            LineKind::Continuation => {
                if !editing {
                    keep(&mut out, piece);
                } else if matches!(edit, MasterEdit::CommentOut(_)) {
                    out.push('#');
                    keep(&mut out, piece);
                }
            }
            LineKind::Start => {
                let key = master_key(line).unwrap_or_default();
                editing = false;
                match edit {
                    MasterEdit::Set(pairs) => {
                        if let Some((_, entry)) = pairs.iter().rev().find(|(k, _)| *k == key) {
                            out.push_str(entry.trim());
                            out.push('\n');
                            editing = true;
                        }
                    }
                    MasterEdit::Remove(keys) => editing = keys.contains(&key),
                    MasterEdit::CommentOut(keys) => {
                        if keys.contains(&key) {
                            out.push('#');
                            keep(&mut out, piece);
                            editing = true;
                        }
                    }
                }
                if editing {
                    found.push(key);
                } else {
                    keep(&mut out, piece);
                }
            }
        }
    }
    if let MasterEdit::Set(pairs) = edit {
        for (k, entry) in pairs {
            if !found.contains(k) {
                end_line(&mut out);
                out.push_str(entry.trim());
                out.push('\n');
                found.push(k.clone());
            }
        }
    }
    out
}

/// Replaces `path` with `text` atomically, keeping the file's permissions.
pub fn write_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "main.cf".into());
    let tmp = dir.join(format!(".{}.tmp.{}", file_name, std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# top\nmyhostname = a.b\nmydestination = x,\n    y\n# mid\n  z\nrelayhost = r1\n\nrelayhost=r2\nmyorigin = o\n";

    #[test]
    fn set_keeps_layout() {
        let e = MainEdit::Set(vec![
            ("mydestination".into(), "new  value".into()),
            ("relayhost".into(), "rr".into()),
            ("mynetworks".into(), "127.0.0.1".into()),
        ]);
        assert_eq!(
            edit_main(SAMPLE, &e),
            "# top\nmyhostname = a.b\nmydestination = new  value\n# mid\nrelayhost = rr\n\nrelayhost = rr\nmyorigin = o\nmynetworks = 127.0.0.1\n"
        );
    }

    #[test]
    fn comment_out_and_remove() {
        let names = vec!["mydestination".to_string(), "relayhost".to_string()];
        assert_eq!(
            edit_main(SAMPLE, &MainEdit::CommentOut(names.clone())),
            "# top\nmyhostname = a.b\n#mydestination = x,\n#    y\n# mid\n#  z\n#relayhost = r1\n\n#relayhost=r2\nmyorigin = o\n"
        );
        assert_eq!(
            edit_main(SAMPLE, &MainEdit::Remove(names)),
            "# top\nmyhostname = a.b\n# mid\n\nmyorigin = o\n"
        );
    }

    #[test]
    fn crlf_lines_and_missing_final_newline_are_kept() {
        let t = "a = 1\r\nb = 2\r\n# c\r\nd = 4";
        let e = MainEdit::Set(vec![("b".into(), "x".into()), ("n".into(), "new".into())]);
        assert_eq!(edit_main(t, &e), "a = 1\r\nb = x\n# c\r\nd = 4\nn = new\n");
        let e = MainEdit::Set(vec![("a".into(), "x".into())]);
        assert_eq!(edit_main(t, &e), "a = x\nb = 2\r\n# c\r\nd = 4");
    }

    #[test]
    fn assignment_parsing() {
        assert_eq!(
            parse_assignment(" a =  b c "),
            Ok(("a".into(), "b c".into()))
        );
        assert!(parse_assignment("novalue").is_err());
    }

    #[test]
    fn master_edits() {
        let m = "smtp inet n - n - - smtpd\n  -o a=b\npickup unix n - n 60 1 pickup\n";
        let set = MasterEdit::Set(vec![
            ("smtp/inet".into(), "smtp inet n - n - 2 smtpd".into()),
            ("qmgr/unix".into(), "qmgr unix n - n 300 1 qmgr".into()),
        ]);
        assert_eq!(
            edit_master(m, &set),
            "smtp inet n - n - 2 smtpd\npickup unix n - n 60 1 pickup\nqmgr unix n - n 300 1 qmgr\n"
        );
        assert_eq!(
            edit_master(m, &MasterEdit::Remove(vec!["smtp/inet".into()])),
            "pickup unix n - n 60 1 pickup\n"
        );
        assert_eq!(
            edit_master(m, &MasterEdit::CommentOut(vec!["pickup/unix".into()])),
            "smtp inet n - n - - smtpd\n  -o a=b\n#pickup unix n - n 60 1 pickup\n"
        );
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("main.cf");
        std::fs::write(&p, "a = 1\n").expect("write");
        write_atomically(&p, b"a = 2\n").expect("replace");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "a = 2\n");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}

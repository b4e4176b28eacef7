//! The right-hand side of aliases(5) entries, `.forward` files and `:include:` files:
//! a list of destinations separated by commas (and, in files, new lines), each one of
//! `|command`, `/file/path`, `:include:/file/path`, `\user` (deliver to the user's mailbox
//! without alias or `.forward` expansion) or an address. Double quotes protect commas and
//! white space (`"|/usr/bin/vacation alice"`); a backslash inside quotes escapes the next
//! character. Lines that start with `#` are comments.

use std::path::PathBuf;

/// One destination of an expansion list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// `|command`: run through `/bin/sh -c`.
    Command(String),
    /// `/path`: append to a file (mbox format; a trailing `/` means a Maildir).
    File(PathBuf),
    /// `:include:/path`: read more destinations from a file.
    Include(PathBuf),
    /// An address or local name; `no_alias` for `\name`.
    Address { address: String, no_alias: bool },
}

/// Splits a list into its destinations (comments dropped, empty items skipped).
pub fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut at_line_start = true;
    let mut in_comment = false;
    for c in text.chars() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
                at_line_start = true;
            }
            continue;
        }
        if at_line_start && !quoted && c == '#' {
            in_comment = true;
            continue;
        }
        at_line_start = c == '\n' && !quoted;
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' | '\n' | '\r' if !quoted => {
                push_item(&mut out, &mut cur);
            }
            c => cur.push(c),
        }
    }
    push_item(&mut out, &mut cur);
    out
}

fn push_item(out: &mut Vec<String>, cur: &mut String) {
    let t = cur.trim();
    if !t.is_empty() {
        out.push(t.to_string());
    }
    cur.clear();
}

/// Removes double quotes (anywhere in the item, as RFC 822 quoting allows) and the
/// backslash escapes inside them.
fn unquote(item: &str) -> String {
    let mut out = String::with_capacity(item.len());
    let mut quoted = false;
    let mut chars = item.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Classifies one item of [`split`].
pub fn classify(item: &str) -> Token {
    // A quoted local part keeps its quotes in an address (`"odd name"@example.org`): only
    // a whole quoted item, or one that is a command, file or include, is unquoted.
    let plain = unquote(item);
    let p = plain.trim();
    if let Some(cmd) = p.strip_prefix('|') {
        return Token::Command(cmd.trim().to_string());
    }
    if let Some(rest) = p.get(..9).filter(|h| h.eq_ignore_ascii_case(":include:")) {
        let _ = rest;
        return Token::Include(PathBuf::from(p[9..].trim()));
    }
    if p.starts_with('/') {
        return Token::File(PathBuf::from(p));
    }
    if let Some(name) = p.strip_prefix('\\') {
        return Token::Address {
            address: name.trim().to_string(),
            no_alias: true,
        };
    }
    let whole_quoted = item.starts_with('"') && item.ends_with('"') && item.len() >= 2;
    Token::Address {
        address: if whole_quoted {
            p.to_string()
        } else {
            item.trim().to_string()
        },
        no_alias: false,
    }
}

/// [`split`] then [`classify`].
pub fn parse(text: &str) -> Vec<Token> {
    split(text).iter().map(|i| classify(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind() {
        let v = parse(
            "b, \"|/bin/cat > /tmp/x, y\", /tmp/file,\n :include:/etc/list, \"\\\\root\", \
             bob@remote.example, \"odd name\"@example.org",
        );
        assert_eq!(
            v,
            vec![
                Token::Address {
                    address: "b".into(),
                    no_alias: false
                },
                Token::Command("/bin/cat > /tmp/x, y".into()),
                Token::File("/tmp/file".into()),
                Token::Include("/etc/list".into()),
                Token::Address {
                    address: "root".into(),
                    no_alias: true
                },
                Token::Address {
                    address: "bob@remote.example".into(),
                    no_alias: false
                },
                Token::Address {
                    address: "\"odd name\"@example.org".into(),
                    no_alias: false
                },
            ]
        );
    }

    #[test]
    fn forward_file_layout() {
        let v = split("# my forward\nalice\n\n|/usr/bin/vacation alice\n  # indented is not\n");
        assert_eq!(
            v,
            vec!["alice", "|/usr/bin/vacation alice", "# indented is not"]
        );
        assert_eq!(
            classify("\\alice"),
            Token::Address {
                address: "alice".into(),
                no_alias: true
            }
        );
        assert_eq!(classify(":INCLUDE: /x"), Token::Include("/x".into()));
    }
}

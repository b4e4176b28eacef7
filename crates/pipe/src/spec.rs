//! The master.cf command line of a pipe service: `flags=`, `user=`, `argv=` and the other
//! `name=value` attributes of Postfix's pipe(8), parsed once at start. `argv=` must come
//! last: every word after it is the command and its arguments (macros unexpanded).

use std::time::Duration;

/// Postfix's pipe(8) `flags=` letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// `B`: append a blank line at the end.
    pub blank_line: bool,
    /// `D`: prepend `Delivered-To: recipient` (one recipient per delivery only).
    pub delivered_to: bool,
    /// `F`: prepend a `From sender time_stamp` line.
    pub from_line: bool,
    /// `O`: prepend `X-Original-To: recipient` (one recipient per delivery only).
    pub original_to: bool,
    /// `R`: prepend `Return-Path: <sender>`.
    pub return_path: bool,
    /// `X`: this is the final delivery (DSN action `delivered`, not `relayed`).
    pub final_delivery: bool,
    /// `h`: fold the domain of addresses in command arguments to lower case.
    pub fold_host: bool,
    /// `q`: quote the local part of addresses in command arguments (RFC 822 style).
    pub quote: bool,
    /// `u`: fold the local part of addresses in command arguments to lower case.
    pub fold_user: bool,
    /// `.`: prepend `.` to lines starting with `.`.
    pub dot_stuff: bool,
    /// `>`: prepend `>` to lines starting with `From `.
    pub from_quote: bool,
}

impl Flags {
    /// Parses the letters of `flags=`; an unknown letter is an error, as Postfix.
    pub fn parse(s: &str) -> Result<Flags, String> {
        let mut f = Flags::default();
        for c in s.chars() {
            match c {
                'B' => f.blank_line = true,
                'D' => f.delivered_to = true,
                'F' => f.from_line = true,
                'O' => f.original_to = true,
                'R' => f.return_path = true,
                'X' => f.final_delivery = true,
                'h' => f.fold_host = true,
                'q' => f.quote = true,
                'u' => f.fold_user = true,
                '.' => f.dot_stuff = true,
                '>' => f.from_quote = true,
                other => return Err(format!("unknown flag: {other}")),
            }
        }
        Ok(f)
    }
}

/// Everything the service's master.cf arguments say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub flags: Flags,
    /// `user=name` (`:group` optional); never root.
    pub user: String,
    pub group: Option<String>,
    /// `argv=`: the program and its arguments, macros unexpanded.
    pub argv: Vec<String>,
    /// `null_sender=` (default `MAILER-DAEMON`): what `${sender}` is for the null sender.
    pub null_sender: String,
    /// `directory=` (default `/`): the working directory of the command.
    pub directory: String,
    /// `eol=` (default `\n`): the line ending written to the command.
    pub eol: String,
    /// `size=`: a larger message is bounced (0: no limit).
    pub size_limit: u64,
}

/// Decodes `eol=`'s C escapes (`\r\n`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

impl Spec {
    /// Parses the service arguments (what master.cf has after `pipe`, `-o` removed).
    pub fn parse(args: &[String]) -> Result<Spec, String> {
        let mut spec = Spec {
            flags: Flags::default(),
            user: String::new(),
            group: None,
            argv: Vec::new(),
            null_sender: "MAILER-DAEMON".into(),
            directory: "/".into(),
            eol: "\n".into(),
            size_limit: 0,
        };
        let mut it = args.iter();
        while let Some(w) = it.next() {
            let (name, value) = w
                .split_once('=')
                .ok_or_else(|| format!("unknown attribute: {w}"))?;
            match name {
                "flags" => spec.flags = Flags::parse(value)?,
                "user" => match value.split_once(':') {
                    Some((u, g)) => {
                        spec.user = u.to_string();
                        spec.group = Some(g.to_string());
                    }
                    None => spec.user = value.to_string(),
                },
                "null_sender" => spec.null_sender = value.to_string(),
                "directory" => spec.directory = value.to_string(),
                "eol" => spec.eol = unescape(value),
                "size" => {
                    spec.size_limit = value
                        .parse()
                        .map_err(|_| format!("size={value}: not a number"))?
                }
                "argv" => {
                    if !value.is_empty() {
                        spec.argv.push(value.to_string());
                    }
                    spec.argv.extend(it.by_ref().cloned());
                }
                // Accepted and not acted upon.
                "quote_rules" => {}
                _ => return Err(format!("unknown attribute name: {name}")),
            }
        }
        if spec.argv.is_empty() {
            return Err("missing argv= command".into());
        }
        if spec.user.is_empty() {
            return Err("missing user= command-line attribute".into());
        }
        if spec.user == "root" || spec.user == "0" {
            return Err("user= command-line attribute specifies root privileges".into());
        }
        Ok(spec)
    }
}

/// The settings a pipe process works from, besides its [`Spec`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub spec: Spec,
    /// `<service>_time_limit` (default `command_time_limit`).
    pub time_limit: Duration,
    pub recipient_delimiter: String,
    pub service: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_postfix_examples() {
        let s = Spec::parse(&v(&[
            "flags=DRhu.>",
            "user=vmail:mail",
            "argv=/usr/bin/maildrop",
            "-d",
            "${recipient}",
        ]))
        .expect("parses");
        assert!(s.flags.delivered_to && s.flags.return_path && s.flags.fold_host);
        assert!(s.flags.fold_user && s.flags.dot_stuff && s.flags.from_quote);
        assert!(!s.flags.final_delivery && !s.flags.quote);
        assert_eq!(
            (s.user.as_str(), s.group.as_deref()),
            ("vmail", Some("mail"))
        );
        assert_eq!(s.argv, v(&["/usr/bin/maildrop", "-d", "${recipient}"]));
        let s = Spec::parse(&v(&["user=x", "eol=\\r\\n", "size=100", "argv=/bin/cat"]))
            .expect("parses");
        assert_eq!((s.eol.as_str(), s.size_limit), ("\r\n", 100));
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(Spec::parse(&v(&["user=root", "argv=/bin/cat"])).is_err());
        assert!(Spec::parse(&v(&["argv=/bin/cat"])).is_err());
        assert!(Spec::parse(&v(&["user=x"])).is_err());
        assert!(Spec::parse(&v(&["user=x", "flags=Z", "argv=/bin/cat"])).is_err());
        assert!(Spec::parse(&v(&["user=x", "bogus", "argv=/bin/cat"])).is_err());
    }
}

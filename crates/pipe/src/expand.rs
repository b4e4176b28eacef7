//! Command-line macros, as Postfix's pipe(8) expands them: `${sender}`, `${recipient}`,
//! `${nexthop}`, `${user}`, `${extension}`, `${domain}`, `${mailbox}`,
//! `${original_recipient}`, `${queue_id}`, `${size}`, `${client_address}`,
//! `${client_hostname}`, `${client_helo}`, `${client_port}`, `${client_protocol}`,
//! `${sasl_method}`, `${sasl_sender}`, `${sasl_username}` (also written `$name`). An
//! argument that names a per-recipient macro is repeated once per recipient, so one command
//! gets every recipient of the request; an unknown macro is kept as written. Expansion
//! produces arguments directly: no shell ever sees them.

use crate::spec::Flags;

/// One recipient as the macros see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    pub address: String,
    pub original: String,
}

/// What the macros expand from, for one request.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub sender: &'a str,
    pub nexthop: &'a str,
    pub queue_id: &'a str,
    pub size: u64,
    pub attributes: &'a [(String, String)],
    pub null_sender: &'a str,
    pub recipient_delimiter: &'a str,
    pub flags: Flags,
}

const PER_RECIPIENT: &[&str] = &[
    "recipient",
    "user",
    "extension",
    "domain",
    "mailbox",
    "original_recipient",
];

/// The macro names used in `arg`.
fn names(arg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = arg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            if b.get(i + 1) == Some(&b'{') {
                if let Some(end) = arg[i + 2..].find('}') {
                    out.push(arg[i + 2..i + 2 + end].to_string());
                    i += end + 3;
                    continue;
                }
            } else {
                let n: String = arg[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !n.is_empty() {
                    i += n.len() + 1;
                    out.push(n);
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// Replaces the macros of `arg` with `value(name)` (`None`: kept as written).
fn substitute(arg: &str, value: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        match (name.is_empty(), value(name)) {
            (false, Some(v)) => out.push_str(&v),
            _ => out.push_str(&rest[pos..pos + 1 + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// An address with the `h`, `u` and `q` flags applied.
fn address_form(addr: &str, flags: Flags) -> String {
    let (local, domain) = match addr.rsplit_once('@') {
        Some((l, d)) => (l.to_string(), Some(d.to_string())),
        None => (addr.to_string(), None),
    };
    let local = if flags.fold_user {
        local.to_lowercase()
    } else {
        local
    };
    let domain = domain.map(|d| if flags.fold_host { d.to_lowercase() } else { d });
    let joined = match domain {
        Some(d) => format!("{local}@{d}"),
        None => local,
    };
    if flags.quote {
        oxipost_mailbox::quote_822_local(&joined)
    } else {
        joined
    }
}

impl Context<'_> {
    fn attribute(&self, name: &str) -> Option<String> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn global(&self, name: &str) -> Option<String> {
        Some(match name {
            "sender" => {
                if self.sender.is_empty() {
                    self.null_sender.to_string()
                } else {
                    // `h` and `u` fold recipients only; `q` quotes the sender too.
                    let only_quote = Flags {
                        fold_host: false,
                        fold_user: false,
                        ..self.flags
                    };
                    address_form(self.sender, only_quote)
                }
            }
            "nexthop" => {
                if self.flags.fold_host {
                    self.nexthop.to_lowercase()
                } else {
                    self.nexthop.to_string()
                }
            }
            "queue_id" => self.queue_id.to_string(),
            "size" => self.size.to_string(),
            "client_address" => self.attribute("client_address").unwrap_or_default(),
            "client_hostname" => self.attribute("client_name").unwrap_or_default(),
            "client_helo" => self.attribute("helo_name").unwrap_or_default(),
            "client_port" => self.attribute("client_port").unwrap_or_default(),
            "client_protocol" => self.attribute("protocol_name").unwrap_or_default(),
            "sasl_method" => self.attribute("sasl_method").unwrap_or_default(),
            "sasl_sender" => self.attribute("sasl_sender").unwrap_or_default(),
            "sasl_username" => self.attribute("sasl_username").unwrap_or_default(),
            _ => return None,
        })
    }

    fn per_recipient(&self, name: &str, r: &Rcpt) -> Option<String> {
        let (local, domain) = match r.address.rsplit_once('@') {
            Some((l, d)) => (l, d),
            None => (r.address.as_str(), ""),
        };
        let split = (!self.recipient_delimiter.is_empty())
            .then(|| local.find(|c| self.recipient_delimiter.contains(c)))
            .flatten();
        let fold_user = |s: &str| {
            if self.flags.fold_user {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        Some(match name {
            "recipient" => address_form(&r.address, self.flags),
            "original_recipient" => address_form(&r.original, self.flags),
            "mailbox" => fold_user(local),
            "user" => fold_user(split.map_or(local, |i| &local[..i])),
            "extension" => fold_user(split.map_or("", |i| &local[i + 1..])),
            "domain" => {
                if self.flags.fold_host {
                    domain.to_lowercase()
                } else {
                    domain.to_string()
                }
            }
            _ => return self.global(name),
        })
    }

    /// The command's argument vector for these recipients.
    pub fn argv(&self, template: &[String], rcpts: &[Rcpt]) -> Vec<String> {
        let mut out = Vec::new();
        for arg in template {
            let per = names(arg)
                .iter()
                .any(|n| PER_RECIPIENT.contains(&n.as_str()));
            if per {
                for r in rcpts {
                    out.push(substitute(arg, &|n| self.per_recipient(n, r)));
                }
            } else {
                out.push(substitute(arg, &|n| self.global(n)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(attrs: &[(String, String)], flags: Flags) -> Context<'_> {
        Context {
            sender: "Bob@Example.ORG",
            nexthop: "Dummy",
            queue_id: "ABC",
            size: 42,
            attributes: attrs,
            null_sender: "MAILER-DAEMON",
            recipient_delimiter: "+",
            flags,
        }
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn expands_every_macro() {
        let attrs = vec![("client_address".to_string(), "127.0.0.1".to_string())];
        let c = ctx(&attrs, Flags::default());
        let rcpts = vec![
            Rcpt {
                address: "Joe+Ext@Dom.Example".into(),
                original: "joe@x".into(),
            },
            Rcpt {
                address: "ann@dom".into(),
                original: "ann@dom".into(),
            },
        ];
        let got = c.argv(
            &v(&[
                "/bin/x",
                "-f",
                "${sender}",
                "--",
                "${recipient}",
                "u=${user} e=$extension d=${domain} m=${mailbox}",
                "${nexthop}:${queue_id}:${size}:${client_address}:${unknown}:$",
            ]),
            &rcpts,
        );
        assert_eq!(
            got,
            v(&[
                "/bin/x",
                "-f",
                "Bob@Example.ORG",
                "--",
                "Joe+Ext@Dom.Example",
                "ann@dom",
                "u=Joe e=Ext d=Dom.Example m=Joe+Ext",
                "u=ann e= d=dom m=ann",
                "Dummy:ABC:42:127.0.0.1:${unknown}:$",
            ])
        );
    }

    #[test]
    fn flags_fold_and_quote() {
        let flags = Flags::parse("hqu").expect("flags");
        let c = ctx(&[], flags);
        let rcpts = vec![Rcpt {
            address: "Joe Smith@Dom.Example".into(),
            original: String::new(),
        }];
        let got = c.argv(&v(&["${recipient}", "${sender}", "${nexthop}"]), &rcpts);
        assert_eq!(
            got,
            v(&["\"joe smith\"@dom.example", "Bob@Example.ORG", "dummy"])
        );
        let mut c = ctx(&[], Flags::default());
        c.sender = "";
        assert_eq!(c.argv(&v(&["${sender}"]), &rcpts), v(&["MAILER-DAEMON"]));
    }
}
